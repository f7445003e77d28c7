//! `job.toml`: the job's description, parsed, checked and resolved.
//!
//! The file is TOML; every key is documented in `docs/config.md`. `--config
//! key=value` overrides any key by its dotted path (quote segments that contain
//! dots: `systems.log.streams."a.b".partitions=4`). A file that is wrong fails
//! before anything starts, with the key (and line, where the parser knows it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use samza_state::{EngineKind, StoreOptions};
use samza_task_api::{Config, SerdeName, SystemStream, COMMON_SYSTEM_KEYS};
use serde::Deserialize;

/// Why a job configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read job config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid job config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid --config override {arg:?}: {message}")]
    Override { arg: String, message: String },
    #[error("invalid job config {path}: {key}: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    job: JobSection,
    package: Option<PackageSection>,
    task: TaskSection,
    #[serde(default)]
    systems: BTreeMap<String, SystemSection>,
    #[serde(default)]
    stores: BTreeMap<String, StoreSection>,
    #[serde(default)]
    cluster: ClusterConfig,
    #[serde(default)]
    metrics: MetricsSection,
    /// Free-form settings for the job's own code, visible to tasks as `params.*`.
    #[serde(default)]
    #[allow(dead_code)] // read through `JobConfig::flat`
    params: toml::Table,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct JobSection {
    name: String,
    #[serde(default = "one")]
    container_count: u32,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default = "default_shutdown_ms")]
    shutdown_timeout_ms: u64,
    /// Dotted keys whose values are credentials, never shown (besides the
    /// keys every job's are: see [`is_secret_key`]). Declared so the file
    /// checks; `redact` reads it from the file's text.
    #[serde(default)]
    #[allow(dead_code)]
    secret_keys: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MetricsSection {
    #[serde(default)]
    snapshot_stream: Option<String>,
    #[serde(default)]
    snapshot_interval_ms: Option<u64>,
}

/// `[metrics]`: a stream that receives every container's metrics snapshot
/// periodically (Samza's snapshot reporter), as JSON keyed by `job/container`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub snapshot_stream: SystemStream,
    pub snapshot_interval_ms: u64,
}

/// `[cluster]`: how the job runs on a cluster (`samza-rm` and `samza-nm`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ClusterConfig {
    /// The resource manager's URL; when set, `samza-run job.toml` submits there.
    pub rm: Option<String>,
    /// Memory of each container, in MB: its share of a node, and the resident
    /// size beyond which its node manager kills it.
    pub container_memory_mb: u64,
    pub container_vcores: u32,
    /// Memory of the job coordinator's container, in MB.
    pub coordinator_memory_mb: u64,
    /// Failed containers are restarted until this many failures happen
    /// within `retry-window-ms`; then the job fails. Losses of a node do not count.
    pub retry_count: u32,
    pub retry_window_ms: u64,
    /// How long a restarted container waits for room on its last node
    /// (host affinity: its local state is there) before taking any node.
    pub host_affinity_timeout_ms: u64,
    /// A container that has not sent its coordinator a heartbeat (every
    /// second) for this long is hung: it is stopped and counts as a failure.
    pub container_heartbeat_timeout_ms: u64,
    /// A container owns its tasks for this long after its last heartbeat
    /// the coordinator answered; then it stops processing and exits. Its
    /// successor starts only once the last lease granted has run out (or the
    /// container is known to have ended). Well under the node-loss timeout.
    pub container_lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            rm: None,
            container_memory_mb: 1024,
            container_vcores: 1,
            coordinator_memory_mb: 256,
            retry_count: 8,
            retry_window_ms: 300_000,
            host_affinity_timeout_ms: 5_000,
            container_heartbeat_timeout_ms: 30_000,
            container_lease_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PackageSection {
    #[serde(default)]
    binary: Option<PathBuf>,
    #[serde(default)]
    cargo_bin: Option<String>,
    #[serde(default)]
    manifest: Option<PathBuf>,
    #[serde(default)]
    profile: Option<String>,
}

/// A job binary built by Cargo, found where Cargo put it (`package.cargo-bin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CargoBin {
    /// The binary target's name.
    pub name: String,
    /// The crate's `Cargo.toml` (default: Cargo's search from the job file's directory).
    pub manifest: Option<PathBuf>,
    /// `release` (default) or `debug`, or a custom profile's name.
    pub profile: String,
}

impl CargoBin {
    /// `<target directory>/<profile>/<name>`, the target directory as Cargo
    /// reports it (`CARGO_TARGET_DIR` and `.cargo/config.toml` honoured).
    pub fn locate(&self, base_dir: &Path) -> Result<PathBuf, String> {
        let mut cmd = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        // A job file named without a directory (`samza-run job.toml`) has an empty one.
        let dir = if base_dir.as_os_str().is_empty() { Path::new(".") } else { base_dir };
        cmd.args(["metadata", "--format-version", "1", "--no-deps"]).current_dir(dir);
        if let Some(m) = &self.manifest {
            cmd.arg("--manifest-path").arg(m);
        }
        let out =
            cmd.output().map_err(|e| format!("package.cargo-bin needs cargo to find the binary: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
        let target = meta["target_directory"].as_str().ok_or("cargo metadata names no target directory")?;
        // Cargo calls the dev profile's directory `debug`.
        let dir = if self.profile == "dev" { "debug" } else { &self.profile };
        Ok(Path::new(target).join(dir).join(&self.name))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TaskSection {
    class: String,
    inputs: Vec<String>,
    #[serde(default)]
    window_ms: u64,
    #[serde(default = "default_commit_ms")]
    commit_ms: u64,
    #[serde(default)]
    grouper: Grouper,
    #[serde(default)]
    checkpoint_system: Option<String>,
    #[serde(default = "default_poll_batch")]
    poll_batch: usize,
    #[serde(default)]
    checkpoint_read_timeout_ms: Option<u64>,
    #[serde(default)]
    processing_guarantee: Option<Guarantee>,
}

/// The keys of `[systems.<name>]` the runtime owns (`COMMON_SYSTEM_KEYS`);
/// the rest of the section belongs to the system type's factory, which
/// deserializes and checks it (`systems.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SystemSection {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    default_offset: Option<DefaultOffset>,
    #[serde(default)]
    reset_offset: Option<bool>,
    #[serde(default)]
    key_serde: Option<SerdeName>,
    #[serde(default)]
    msg_serde: Option<SerdeName>,
    #[serde(default)]
    streams: BTreeMap<String, StreamSection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StreamSection {
    #[serde(default)]
    partitions: Option<u32>,
    #[serde(default)]
    compacted: bool,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    bootstrap: bool,
    #[serde(default)]
    bounded: bool,
    #[serde(default)]
    default_offset: Option<DefaultOffset>,
    #[serde(default)]
    reset_offset: Option<bool>,
    #[serde(default)]
    key_serde: Option<SerdeName>,
    #[serde(default)]
    msg_serde: Option<SerdeName>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StoreSection {
    engine: EngineKind,
    #[serde(default)]
    changelog: Option<String>,
    #[serde(default)]
    cache_entries: Option<usize>,
    #[serde(default)]
    write_batch_entries: Option<usize>,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    write_back_ms: Option<u64>,
    /// A restore that has not read its changelog to the end by then fails.
    #[serde(default)]
    restore_timeout_ms: Option<u64>,
    #[serde(default)]
    key_serde: Option<SerdeName>,
    #[serde(default)]
    msg_serde: Option<SerdeName>,
}

/// A task store declared under `[stores.<name>]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub name: String,
    pub engine: EngineKind,
    /// The compacted stream backing the store, one partition per task.
    pub changelog: Option<SystemStream>,
    pub options: StoreOptions,
    /// How tools and queries encode a key given as text (default: UTF-8).
    pub key_serde: SerdeName,
    /// How tools and queries show a value (default: bytes, as UTF-8 text when it is).
    pub msg_serde: SerdeName,
    /// How long a restore waits for the changelog's end (default 10 min).
    pub restore_timeout_ms: u64,
}

fn one() -> u32 {
    1
}
fn default_shutdown_ms() -> u64 {
    10_000
}
fn default_commit_ms() -> u64 {
    1_000
}
fn default_poll_batch() -> usize {
    10_000
}

/// How input partitions are grouped into tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grouper {
    /// One task per partition number across all inputs (co-partitioned streams meet).
    #[default]
    Partition,
    /// One task per input partition.
    Ssp,
}

/// What a job promises about each input message's effect on its state and
/// outputs (`task.processing-guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// Each input is reflected exactly once, through any crash: a commit
    /// makes outputs, changelog writes and input offsets visible at once
    /// (the default where the job's system writes transactions).
    ExactlyOnce,
    /// No input is skipped; after a crash some are processed again.
    AtLeastOnce,
}

impl std::fmt::Display for Guarantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Guarantee::ExactlyOnce => "exactly-once",
            Guarantee::AtLeastOnce => "at-least-once",
        })
    }
}

/// Where a partition without a checkpoint starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultOffset {
    /// From the oldest message still stored.
    #[default]
    Oldest,
    /// Only messages appended after the job starts.
    Upcoming,
}

/// A configured system: its type and the part of its section that belongs
/// to the type (resolved by the type's factory: `SystemRegistry::resolve`).
#[derive(Debug, Clone)]
pub struct SystemConfig {
    pub name: String,
    /// The type a factory is registered for (`embedded-log`, `kafka`, or one
    /// the job binary registered).
    pub kind: String,
    /// The section's own keys, after `--config` overrides.
    pub section: toml::Table,
}

/// Settings of one stream, after system-level defaults are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub stream: SystemStream,
    /// Create the stream with this many partitions when it is missing.
    pub partitions: Option<u32>,
    pub compacted: bool,
    pub priority: i32,
    pub bootstrap: bool,
    /// The stream ends at the offset it had when the job started.
    pub bounded: bool,
    pub default_offset: DefaultOffset,
    pub reset_offset: bool,
    pub key_serde: Option<SerdeName>,
    pub msg_serde: Option<SerdeName>,
}

/// A checked, resolved job configuration.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub path: PathBuf,
    /// The file as written (system factories read their sections from it,
    /// so that their errors name the line).
    pub text: String,
    /// The directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    pub name: String,
    pub container_count: u32,
    pub state_dir: PathBuf,
    pub shutdown_timeout_ms: u64,
    pub binary: Option<PathBuf>,
    /// `package.cargo-bin`: the binary is found through Cargo instead.
    pub cargo_bin: Option<CargoBin>,
    pub task_class: String,
    pub inputs: Vec<SystemStream>,
    pub window_ms: u64,
    pub commit_ms: u64,
    pub grouper: Grouper,
    pub checkpoint_system: String,
    pub poll_batch: usize,
    /// How long reading the checkpoints at start waits for a slow checkpoint
    /// system before the container fails (default 5 min).
    pub checkpoint_read_timeout_ms: u64,
    /// `task.processing-guarantee` as written; the one a run keeps is
    /// decided with the systems' types (`Systems::guarantee`).
    pub processing_guarantee: Option<Guarantee>,
    pub systems: BTreeMap<String, SystemConfig>,
    /// Per-stream settings of every stream named under `[systems.*.streams]` and every input.
    pub streams: BTreeMap<SystemStream, StreamConfig>,
    /// Stores every task instance gets, by name.
    pub stores: BTreeMap<String, StoreConfig>,
    /// The whole file, flattened to dotted keys, as tasks see it.
    pub flat: Config,
    /// The override arguments applied, to pass on to containers.
    pub overrides: Vec<String>,
    pub cluster: ClusterConfig,
    pub metrics: Option<MetricsConfig>,
}

impl JobConfig {
    /// Reads `path` and applies `overrides` (`key=value`).
    pub fn load(path: &Path, overrides: &[String]) -> Result<JobConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path, overrides)
    }

    /// Parses `text` as the contents of `path`.
    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<JobConfig, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse { path: path.to_path_buf(), message };
        // First the file as written, so errors carry its line numbers (and
        // the dotted key, where the error is about a value).
        let _: File = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| parse_err(keyed(&e.path().to_string(), e.inner())))?;
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        for arg in overrides {
            apply_override(&mut table, arg)?;
        }
        let file = serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            parse_err(format!("after --config overrides: {}", keyed(&e.path().to_string(), e.inner())))
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut sections = BTreeMap::new();
        if let Some(toml::Value::Table(systems)) = table.get("systems") {
            for (name, section) in systems {
                let mut own = section.as_table().cloned().unwrap_or_default();
                own.retain(|k, _| !COMMON_SYSTEM_KEYS.iter().any(|c| *c == k));
                sections.insert(name.clone(), own);
            }
        }
        let mut flat = BTreeMap::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        let mut cfg = resolve(file, path, &base, Config::new(flat), overrides.to_vec(), sections)?;
        cfg.text = text.to_string();
        Ok(cfg)
    }

    /// Settings of `stream` (system defaults when the stream has no section).
    pub fn stream(&self, stream: &SystemStream) -> StreamConfig {
        self.streams
            .get(stream)
            .cloned()
            .unwrap_or_else(|| stream_config(stream, None, &StreamSection::default()))
    }

    /// The job binary: `package.binary`, or where Cargo put `package.cargo-bin`;
    /// an error naming the file and the key when it is unset or not built.
    pub fn job_binary(&self) -> Result<PathBuf, String> {
        let job = self.path.display();
        let (path, key) = match (&self.binary, &self.cargo_bin) {
            (Some(b), _) => (b.clone(), "package.binary"),
            (None, Some(c)) => (c.locate(&self.base_dir).map_err(|e| format!("{job}: {e}"))?, "package.cargo-bin"),
            (None, None) => {
                return Err(format!(
                    "{job}: package.binary is not set; it names the job binary to run (or package.cargo-bin, a Cargo binary)"
                ))
            }
        };
        if !path.is_file() {
            let hint = match &self.cargo_bin {
                Some(c) if self.binary.is_none() => match c.profile.as_str() {
                    "release" => format!("cargo build --release --bin {}", c.name),
                    "debug" | "dev" => format!("cargo build --bin {}", c.name),
                    other => format!("cargo build --profile {other} --bin {}", c.name),
                },
                _ => "build the job first".into(),
            };
            return Err(format!("{job}: {key} {} does not exist ({hint})", path.display()));
        }
        Ok(path)
    }

    /// Name of the stream holding this job's checkpoints.
    pub fn checkpoint_stream(&self) -> SystemStream {
        SystemStream::new(self.checkpoint_system.clone(), format!("__samza_checkpoint_{}", self.name))
    }
}

/// A deserializer's error, prefixed with the dotted key it is about
/// (`serde_path_to_error`'s path; `.` when the error is about the file).
pub(crate) fn keyed(key: &str, e: &impl std::fmt::Display) -> String {
    let message = e.to_string();
    let message = message.trim_end();
    if key.is_empty() || key == "." {
        message.to_string()
    } else {
        format!("{key}: {message}")
    }
}

fn invalid(path: &Path, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.to_path_buf(), key: key.into(), message: message.into() }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn resolve(
    f: File,
    path: &Path,
    base: &Path,
    flat: Config,
    overrides: Vec<String>,
    sections: BTreeMap<String, toml::Table>,
) -> Result<JobConfig, ConfigError> {
    check_job(&f, path)?;
    let metrics = resolve_metrics(&f, path)?;
    check_task(&f, path)?;
    check_package(&f, path)?;
    let (systems, mut streams) = resolve_systems(&f, path, sections)?;
    let inputs = resolve_inputs(&f, path, &mut streams)?;
    let checkpoint_system = resolve_checkpoint_system(&f, path)?;
    let stores = resolve_stores(&f, path, &inputs)?;
    let state_dir = base.join(f.job.state_dir.clone().unwrap_or_else(|| PathBuf::from("samza-data/state")));
    if state_dir.exists() && !state_dir.is_dir() {
        return Err(invalid(
            path,
            "job.state-dir",
            format!("{} exists and is not a directory", state_dir.display()),
        ));
    }
    Ok(JobConfig {
        path: path.to_path_buf(),
        text: String::new(),
        base_dir: base.to_path_buf(),
        name: f.job.name,
        container_count: f.job.container_count,
        state_dir,
        shutdown_timeout_ms: f.job.shutdown_timeout_ms,
        binary: f.package.as_ref().and_then(|p| p.binary.as_ref()).map(|b| base.join(b)),
        cargo_bin: f.package.as_ref().and_then(|p| {
            p.cargo_bin.as_ref().map(|name| CargoBin {
                name: name.clone(),
                manifest: p.manifest.as_ref().map(|m| base.join(m)),
                profile: p.profile.clone().unwrap_or_else(|| "release".into()),
            })
        }),
        task_class: f.task.class,
        inputs,
        window_ms: f.task.window_ms,
        commit_ms: f.task.commit_ms,
        grouper: f.task.grouper,
        checkpoint_system,
        poll_batch: f.task.poll_batch,
        checkpoint_read_timeout_ms: f
            .task
            .checkpoint_read_timeout_ms
            .unwrap_or(crate::checkpoint::READ_TIMEOUT.as_millis() as u64),
        processing_guarantee: f.task.processing_guarantee,
        systems,
        streams,
        stores,
        flat,
        overrides,
        cluster: f.cluster,
        metrics,
    })
}

/// `[job]` and `[cluster]`: names, counts and durations.
fn check_job(f: &File, path: &Path) -> Result<(), ConfigError> {
    if !valid_name(&f.job.name) {
        return Err(invalid(
            path,
            "job.name",
            format!("{:?} may only contain letters, digits, '.', '_' and '-'", f.job.name),
        ));
    }
    for (key, v) in [
        ("cluster.container-memory-mb", f.cluster.container_memory_mb),
        ("cluster.coordinator-memory-mb", f.cluster.coordinator_memory_mb),
        ("cluster.container-vcores", f.cluster.container_vcores.into()),
        ("cluster.container-lease-ms", f.cluster.container_lease_ms),
        ("cluster.container-heartbeat-timeout-ms", f.cluster.container_heartbeat_timeout_ms),
        ("job.shutdown-timeout-ms", f.job.shutdown_timeout_ms),
    ] {
        if v == 0 {
            return Err(invalid(path, key, "must be positive"));
        }
    }
    if let Some(rm) = &f.cluster.rm {
        if !(rm.starts_with("http://") || rm.starts_with("https://")) {
            return Err(invalid(path, "cluster.rm", format!("{rm:?} is not an http:// or https:// URL")));
        }
    }
    if f.job.container_count == 0 {
        return Err(invalid(path, "job.container-count", "must be at least 1"));
    }
    Ok(())
}

/// `[metrics]`: the snapshot stream, when there is one.
fn resolve_metrics(f: &File, path: &Path) -> Result<Option<MetricsConfig>, ConfigError> {
    Ok(match &f.metrics.snapshot_stream {
        None => None,
        Some(s) => {
            let key = "metrics.snapshot-stream";
            let stream: SystemStream = s.parse().map_err(|e| invalid(path, key, format!("{e}")))?;
            let system = &*stream.system;
            if !f.systems.contains_key(system) {
                return Err(invalid(path, key, format!("system {system:?} is not defined under [systems]")));
            }
            let interval = f.metrics.snapshot_interval_ms.unwrap_or(60_000);
            if interval == 0 {
                return Err(invalid(path, "metrics.snapshot-interval-ms", "must be positive"));
            }
            Some(MetricsConfig { snapshot_stream: stream, snapshot_interval_ms: interval })
        }
    })
}

/// `[task]`'s own keys.
fn check_package(f: &File, path: &Path) -> Result<(), ConfigError> {
    let Some(p) = &f.package else { return Ok(()) };
    match (&p.binary, &p.cargo_bin) {
        (Some(_), Some(_)) => Err(invalid(path, "package", "set binary or cargo-bin, not both")),
        (None, None) => {
            Err(invalid(path, "package", "set binary (a path) or cargo-bin (a Cargo binary's name)"))
        }
        (Some(_), None) if p.manifest.is_some() || p.profile.is_some() => {
            Err(invalid(path, "package", "manifest and profile go with cargo-bin, not binary"))
        }
        _ => Ok(()),
    }
}

fn check_task(f: &File, path: &Path) -> Result<(), ConfigError> {
    if f.task.class.is_empty() {
        return Err(invalid(path, "task.class", "must name a registered task"));
    }
    if f.task.commit_ms == 0 {
        return Err(invalid(path, "task.commit-ms", "must be positive"));
    }
    if f.task.poll_batch == 0 {
        return Err(invalid(path, "task.poll-batch", "must be positive"));
    }
    if f.task.checkpoint_read_timeout_ms == Some(0) {
        return Err(invalid(path, "task.checkpoint-read-timeout-ms", "must be positive"));
    }
    if f.task.inputs.is_empty() {
        return Err(invalid(path, "task.inputs", "must name at least one input stream as \"system.stream\""));
    }
    Ok(())
}

/// The systems (their own sections kept for their factories) and the
/// settings of every stream declared under them.
#[allow(clippy::type_complexity)]
fn resolve_systems(
    f: &File,
    path: &Path,
    mut sections: BTreeMap<String, toml::Table>,
) -> Result<(BTreeMap<String, SystemConfig>, BTreeMap<SystemStream, StreamConfig>), ConfigError> {
    if f.systems.is_empty() {
        return Err(invalid(
            path,
            "systems",
            "at least one system must be defined, e.g. [systems.log] type = \"embedded-log\"",
        ));
    }
    let mut systems = BTreeMap::new();
    let mut streams = BTreeMap::new();
    for (name, s) in &f.systems {
        if !valid_name(name) {
            return Err(invalid(
                path,
                format!("systems.{name}"),
                "system names may only contain letters, digits, '.', '_' and '-'",
            ));
        }
        systems.insert(
            name.clone(),
            SystemConfig {
                name: name.clone(),
                kind: s.kind.clone(),
                section: sections.remove(name).unwrap_or_default(),
            },
        );
        for (stream, st) in &s.streams {
            if st.partitions == Some(0) {
                return Err(invalid(
                    path,
                    format!("systems.{name}.streams.{stream}.partitions"),
                    "must be at least 1",
                ));
            }
            let ss = SystemStream::new(name.clone(), stream.clone());
            streams.insert(ss.clone(), stream_config(&ss, Some(s), st));
        }
    }
    Ok((systems, streams))
}

/// `task.inputs`, each with stream settings (its system's defaults when the
/// stream has no section).
fn resolve_inputs(
    f: &File,
    path: &Path,
    streams: &mut BTreeMap<SystemStream, StreamConfig>,
) -> Result<Vec<SystemStream>, ConfigError> {
    let mut inputs = Vec::new();
    for (i, input) in f.task.inputs.iter().enumerate() {
        let key = format!("task.inputs[{i}]");
        let ss: SystemStream = input.parse().map_err(|e| invalid(path, &key, format!("{e}")))?;
        let system = &*ss.system;
        let Some(sys) = f.systems.get(system) else {
            return Err(invalid(path, &key, format!("system {system:?} is not defined under [systems]")));
        };
        if inputs.contains(&ss) {
            return Err(invalid(path, &key, format!("{input:?} is listed twice")));
        }
        streams.entry(ss.clone()).or_insert_with(|| stream_config(&ss, Some(sys), &StreamSection::default()));
        inputs.push(ss);
    }
    Ok(inputs)
}

/// `task.checkpoint-system`, or the only system.
fn resolve_checkpoint_system(f: &File, path: &Path) -> Result<String, ConfigError> {
    Ok(match &f.task.checkpoint_system {
        Some(s) if f.systems.contains_key(s) => s.clone(),
        Some(s) => {
            return Err(invalid(
                path,
                "task.checkpoint-system",
                format!("system {s:?} is not defined under [systems]"),
            ))
        }
        None if f.systems.len() == 1 => f.systems.keys().next().unwrap().clone(),
        None => {
            return Err(invalid(
                path,
                "task.checkpoint-system",
                "must be set when more than one system is defined",
            ))
        }
    })
}

/// `[stores]`: engines, changelogs (one store's each, never an input) and cache settings.
fn resolve_stores(
    f: &File,
    path: &Path,
    inputs: &[SystemStream],
) -> Result<BTreeMap<String, StoreConfig>, ConfigError> {
    let mut stores = BTreeMap::new();
    for (name, st) in &f.stores {
        if !valid_name(name) {
            return Err(invalid(
                path,
                format!("stores.{name}"),
                "store names may only contain letters, digits, '.', '_' and '-'",
            ));
        }
        let changelog = match &st.changelog {
            None => None,
            Some(c) => {
                let key = format!("stores.{name}.changelog");
                let cl: SystemStream = c.parse().map_err(|e| invalid(path, &key, format!("{e}")))?;
                let system = &*cl.system;
                if !f.systems.contains_key(system) {
                    return Err(invalid(
                        path,
                        &key,
                        format!("system {system:?} is not defined under [systems]"),
                    ));
                }
                // A changelog holds one store's entries; an input read back
                // as a changelog, or a changelog read as input, corrupts both.
                let shared =
                    stores.iter().find(|(_, s): &(&String, &StoreConfig)| s.changelog.as_ref() == Some(&cl));
                if let Some((other, _)) = shared {
                    return Err(invalid(
                        path,
                        &key,
                        format!(
                            "{c:?} is already the changelog of store {other:?}: each store needs its own"
                        ),
                    ));
                }
                if inputs.contains(&cl) {
                    return Err(invalid(
                        path,
                        &key,
                        format!("{c:?} is also an input of the job (task.inputs)"),
                    ));
                }
                Some(cl)
            }
        };
        let mut options = StoreOptions::default();
        if let Some(n) = st.cache_entries {
            if n == 0 {
                return Err(invalid(path, format!("stores.{name}.cache-entries"), "must be positive"));
            }
            options.cache_entries = n;
        }
        if let Some(n) = st.write_batch_entries {
            if n == 0 {
                return Err(invalid(path, format!("stores.{name}.write-batch-entries"), "must be positive"));
            }
            options.write_batch_entries = n;
        }
        options.ttl_ms = st.ttl_ms;
        if let Some(ms) = st.write_back_ms {
            options.write_back_ms = ms;
        }
        stores.insert(
            name.clone(),
            StoreConfig {
                name: name.clone(),
                engine: st.engine,
                changelog,
                options,
                key_serde: st.key_serde.unwrap_or(SerdeName::String),
                msg_serde: st.msg_serde.unwrap_or(SerdeName::Bytes),
                restore_timeout_ms: st.restore_timeout_ms.unwrap_or(600_000),
            },
        );
    }
    Ok(stores)
}

/// Settings of `stream`: its own section's, else its system's defaults, else the global ones.
fn stream_config(stream: &SystemStream, sys: Option<&SystemSection>, st: &StreamSection) -> StreamConfig {
    StreamConfig {
        stream: stream.clone(),
        partitions: st.partitions,
        compacted: st.compacted,
        priority: st.priority,
        bootstrap: st.bootstrap,
        bounded: st.bounded,
        default_offset: st.default_offset.or(sys.and_then(|s| s.default_offset)).unwrap_or_default(),
        reset_offset: st.reset_offset.or(sys.and_then(|s| s.reset_offset)).unwrap_or(false),
        key_serde: st.key_serde.or(sys.and_then(|s| s.key_serde)),
        msg_serde: st.msg_serde.or(sys.and_then(|s| s.msg_serde)),
    }
}

/// Splits a dotted key path, honouring double-quoted segments.
fn split_path(key: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    for c in key.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '.' if !quoted => {
                if cur.is_empty() && !was_quoted {
                    return None;
                }
                parts.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            c => cur.push(c),
        }
    }
    if quoted || (cur.is_empty() && !was_quoted) {
        return None;
    }
    parts.push(cur);
    Some(parts)
}

fn apply_override(table: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let err = |message: &str| ConfigError::Override { arg: arg.to_string(), message: message.to_string() };
    let (key, raw) = arg.split_once('=').ok_or_else(|| err("expected key=value"))?;
    let path = split_path(key.trim()).ok_or_else(|| err("malformed key path"))?;
    // A TOML literal (number, bool, array, quoted string) or else plain text.
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut cur = table;
    for (i, seg) in path.iter().enumerate() {
        if i + 1 == path.len() {
            cur.insert(seg.clone(), value);
            return Ok(());
        }
        let next = cur.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = next.as_table_mut().ok_or_else(|| err(&format!("{seg} is not a table")))?;
    }
    Ok(())
}

/// What shown values of secret settings read instead.
pub const REDACTED: &str = "<redacted>";

/// Whether the setting at dotted `key` holds a credential whatever the job
/// says: its last part names a password, a secret, a token or a JAAS config
/// (Kafka's `sasl.password`, `ssl.key.password`, `sasl.jaas.config`, ...).
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit_once('.').map_or(key, |(_, l)| l).to_ascii_lowercase();
    let whole = key.to_ascii_lowercase();
    ["password", "secret", "token", "credential"].iter().any(|w| last.contains(w))
        || whole.ends_with("jaas.config")
        || whole.ends_with("ssl.key.pem")
}

/// A job file and its `--config` overrides as they may be shown (by the
/// resource manager's API, `samza-run status`, the dashboard): the values of
/// secret settings ([`is_secret_key`], and the file's `job.secret-keys`)
/// replaced by [`REDACTED`]. A file that does not parse is not shown at all.
pub fn redact(text: &str, overrides: &[String]) -> (String, Vec<String>) {
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return (
            format!("# {REDACTED}: the file does not parse"),
            overrides.iter().map(|_| REDACTED.into()).collect(),
        );
    };
    let listed: Vec<String> = table
        .get("job")
        .and_then(|j| j.get("secret-keys"))
        .and_then(|k| k.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let secret =
        |key: &str| key != "job.secret-keys" && (is_secret_key(key) || listed.iter().any(|l| l == key));
    fn walk(prefix: &str, v: &mut toml::Value, secret: &dyn Fn(&str) -> bool) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t.iter_mut() {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if !v.is_table() && secret(&key) {
                    *v = toml::Value::String(REDACTED.into());
                } else {
                    walk(&key, v, secret);
                }
            }
        }
    }
    let mut root = toml::Value::Table(std::mem::take(&mut table));
    walk("", &mut root, &secret);
    let shown = toml::to_string(&root).unwrap_or_default();
    let overrides = overrides
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k, _)) if secret(k.trim()) => format!("{}={REDACTED}", k.trim()),
            _ => o.clone(),
        })
        .collect();
    (shown, overrides)
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[job]
name = "pass-through"
container-count = 2

[package]
binary = "bin/job"

[task]
class = "pass"
inputs = ["log.in", "log.side"]
window-ms = 500

[systems.log]
type = "embedded-log"
dir = "data/log"
msg-serde = "json"

[systems.log.streams.side]
bootstrap = true
priority = 2
msg-serde = "string"

[systems.log.streams.out]
partitions = 4

[params]
threshold = 3
"#;

    fn parse(text: &str, overrides: &[&str]) -> Result<JobConfig, ConfigError> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        JobConfig::parse(text, Path::new("/jobs/job.toml"), &o)
    }

    #[test]
    fn good_file_resolves() {
        let c = parse(GOOD, &[]).unwrap();
        assert_eq!(c.name, "pass-through");
        assert_eq!(c.container_count, 2);
        assert_eq!(c.binary.as_deref(), Some(Path::new("/jobs/bin/job")));
        assert_eq!(c.systems["log"].kind, "embedded-log");
        assert_eq!(c.systems["log"].section.get("dir").and_then(|d| d.as_str()), Some("data/log"));
        assert_eq!(c.inputs, vec![SystemStream::new("log", "in"), SystemStream::new("log", "side")]);
        let side = c.stream(&SystemStream::new("log", "side"));
        assert!(side.bootstrap);
        assert_eq!(side.msg_serde, Some(SerdeName::String));
        assert_eq!(c.stream(&SystemStream::new("log", "in")).msg_serde, Some(SerdeName::Json));
        assert_eq!(c.checkpoint_system, "log");
        assert_eq!(c.commit_ms, 1000);
        assert_eq!(c.flat.get("params.threshold"), Some("3"));
        assert_eq!(c.flat.get("task.class"), Some("pass"));
    }

    #[test]
    fn overrides_change_any_key() {
        let c = parse(
            GOOD,
            &["job.container-count=3", "systems.log.streams.\"in\".bounded=true", "params.mode=fast"],
        )
        .unwrap();
        assert_eq!(c.container_count, 3);
        assert!(c.stream(&SystemStream::new("log", "in")).bounded);
        assert_eq!(c.flat.get("params.mode"), Some("fast"));
        let e = parse(GOOD, &["job.container-count=zero"]).unwrap_err().to_string();
        assert!(e.contains("after --config overrides") && e.contains("container-count"), "{e}");
        let e = parse(GOOD, &["nokey"]).unwrap_err().to_string();
        assert!(e.contains("expected key=value"), "{e}");
    }

    #[test]
    fn zero_timeouts_and_caches_and_a_state_dir_that_is_a_file_are_refused() {
        for (from, to, key) in [
            (
                "container-count = 2",
                "container-count = 2\nshutdown-timeout-ms = 0",
                "job.shutdown-timeout-ms",
            ),
            (
                "[params]",
                "[cluster]\ncontainer-heartbeat-timeout-ms = 0\n[params]",
                "cluster.container-heartbeat-timeout-ms",
            ),
            ("[params]", "[cluster]\ncontainer-lease-ms = 0\n[params]", "cluster.container-lease-ms"),
            (
                "window-ms = 500",
                "window-ms = 500\ncheckpoint-read-timeout-ms = 0",
                "task.checkpoint-read-timeout-ms",
            ),
            (
                "[params]",
                "[stores.s]\nengine = \"in-memory\"\ncache-entries = 0\n[params]",
                "stores.s.cache-entries",
            ),
        ] {
            let e = parse(&GOOD.replacen(from, to, 1), &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("{key}: must be positive")), "{key}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state"), "").unwrap();
        let text = GOOD.replacen("container-count = 2", "container-count = 2\nstate-dir = \"state\"", 1);
        let e = JobConfig::parse(&text, &dir.path().join("job.toml"), &[]).unwrap_err().to_string();
        assert!(e.contains("job.state-dir:") && e.contains("exists and is not a directory"), "{e}");
    }

    #[test]
    fn a_changelog_shared_by_two_stores_or_read_as_an_input_is_refused() {
        let two = format!(
            "{GOOD}\n[stores.a]\nengine = \"in-memory\"\nchangelog = \"log.cl\"\n[stores.b]\nengine = \"in-memory\"\nchangelog = \"log.cl\"\n"
        );
        let e = parse(&two, &[]).unwrap_err().to_string();
        assert!(
            e.contains("stores.b.changelog: \"log.cl\" is already the changelog of store \"a\": each store needs its own"),
            "{e}"
        );
        let input = format!("{GOOD}\n[stores.a]\nengine = \"in-memory\"\nchangelog = \"log.in\"\n");
        let e = parse(&input, &[]).unwrap_err().to_string();
        assert!(
            e.contains("stores.a.changelog: \"log.in\" is also an input of the job (task.inputs)"),
            "{e}"
        );
        let empty = format!("{GOOD}\n[stores.a]\nengine = \"in-memory\"\nchangelog = \"log.\"\n");
        let e = parse(&empty, &[]).unwrap_err().to_string();
        assert!(e.contains("stores.a.changelog: \"log.\" is not \"system.stream\""), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = parse(&GOOD.replace("container-count", "contaner-count"), &[]).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("contaner-count"), "{e}");
        let e = parse(&GOOD.replace("container-count = 2", "container-count = \"2\""), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("job.container-count: TOML parse error at line 4") && e.contains("expected u32"),
            "{e}"
        );
        let e = parse(GOOD, &["task.window-ms=soon"]).unwrap_err().to_string();
        assert!(e.contains("after --config overrides: task.window-ms: invalid type: string \"soon\""), "{e}");
        let e = parse(&GOOD.replace("log.side", "kafka.side"), &[]).unwrap_err().to_string();
        assert!(e.contains("task.inputs[1]: system \"kafka\" is not defined"), "{e}");
        let e = parse(&GOOD.replace("\"json\"", "\"yaml\""), &[]).unwrap_err().to_string();
        assert!(e.contains("line 17") && e.contains("yaml"), "{e}");
        let e =
            parse(&GOOD.replace("container-count = 2", "container-count = 0"), &[]).unwrap_err().to_string();
        assert!(e.contains("job.container-count: must be at least 1"), "{e}");
        let e = parse("[job]\nname = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("missing field `task`"), "{e}");
        let e = parse(&format!("{GOOD}\n[metrics]\nsnapshot-stream = \"kafka.m\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.snapshot-stream: system \"kafka\" is not defined"), "{e}");
        let e = parse(&format!("{GOOD}\n[metrics]\nsnapshot-stream = \"metrics\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.snapshot-stream: \"metrics\" is not \"system.stream\""), "{e}");
        let c = parse(&format!("{GOOD}\n[metrics]\nsnapshot-stream = \"log.m\"\n"), &[]).unwrap();
        assert_eq!(c.metrics.unwrap().snapshot_interval_ms, 60_000);
    }

    #[test]
    fn secret_settings_are_redacted_wherever_the_config_is_shown() {
        let text = r#"[job]
name = "j"
secret-keys = ["params.note"]
[task]
class = "c"
inputs = ["kafka.in"]
[systems.kafka]
type = "kafka"
bootstrap-servers = "b:9092"
[systems.kafka.consumer-settings]
"sasl.password" = "hunter2"
"sasl.jaas.config" = "org.apache.kafka... password=\"hunter2\";"
"ssl.key.password" = "hunter2"
"session.timeout.ms" = "6000"
[params]
note = "hunter2"
api-token = "hunter2"
page = "/home"
"#;
        let (shown, overrides) =
            redact(text, &["params.db-password=hunter2".into(), "params.page=/about".into()]);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(shown.matches(REDACTED).count(), 5, "{shown}");
        assert!(
            shown.contains("session.timeout.ms") && shown.contains("6000") && shown.contains("/home"),
            "{shown}"
        );
        assert_eq!(overrides, ["params.db-password=<redacted>", "params.page=/about"]);
        // Still the same settings: the file parses, with the secrets' keys in place.
        let t: toml::Table = toml::from_str(&shown).unwrap();
        assert_eq!(t["systems"]["kafka"]["consumer-settings"]["sasl.password"].as_str(), Some(REDACTED));
        assert!(
            JobConfig::parse(text, Path::new("/j/job.toml"), &[]).is_ok(),
            "job.secret-keys is a key of the file"
        );
    }

    #[test]
    fn the_package_is_a_path_or_a_cargo_binary() {
        let c = parse(
            &GOOD.replace("binary = \"bin/job\"", "cargo-bin = \"job\"\nmanifest = \"crate/Cargo.toml\""),
            &[],
        )
        .unwrap();
        assert_eq!(
            c.cargo_bin,
            Some(CargoBin {
                name: "job".into(),
                manifest: Some("/jobs/crate/Cargo.toml".into()),
                profile: "release".into()
            })
        );
        assert_eq!(c.binary, None);
        let both = GOOD.replace("binary = \"bin/job\"", "binary = \"bin/job\"\ncargo-bin = \"job\"");
        assert!(parse(&both, &[])
            .unwrap_err()
            .to_string()
            .ends_with("package: set binary or cargo-bin, not both"));
        let none = GOOD.replace("binary = \"bin/job\"", "");
        assert!(parse(&none, &[])
            .unwrap_err()
            .to_string()
            .contains("package: set binary (a path) or cargo-bin"));
        let stray = GOOD.replace("binary = \"bin/job\"", "binary = \"bin/job\"\nprofile = \"debug\"");
        assert!(parse(&stray, &[])
            .unwrap_err()
            .to_string()
            .contains("manifest and profile go with cargo-bin"));
    }
}
