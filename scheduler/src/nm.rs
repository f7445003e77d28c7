//! The node manager (`samza-nm`): launches and watches containers on one node.
//!
//! It registers with the resource manager and heartbeats its containers'
//! states; it runs only application packages downloaded from the resource
//! manager into its cache (`<dir>/packages/<sha256>`) and checked against
//! their SHA-256. Each container gets a working directory
//! (`<dir>/containers/<id>/`) with its `stdout` and `stderr`, an environment
//! naming it (`SAMZA_CONTAINER_ID`, `SAMZA_APP_ID`, `SAMZA_RM_URL`,
//! `SAMZA_TOKEN`, `SAMZA_NODE`, `SAMZA_NODE_STATE_DIR`), its own process
//! group, and a memory limit: a container whose resident memory exceeds its
//! size is killed and reported with that reason. Stop is SIGTERM, then
//! SIGKILL after the grace period. The container table is kept in
//! `<dir>/containers.json`, so a restarted node manager re-adopts the
//! containers still alive (same pid and start time) and reports the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use samza_container::env;
use samza_task_api::MetricsRegistry;

use crate::auth::{self, error, is_sha256, safe_name};
use crate::layout;
use crate::proto::*;

#[derive(Clone, Debug)]
pub struct NmConfig {
    pub node: String,
    pub dir: PathBuf,
    pub rm_url: String,
    pub capacity: Resources,
    pub heartbeat: Duration,
    /// How long ended containers are still reported (the resource manager
    /// records them at the first report).
    pub keep_ended: Duration,
    /// How long the directory of a container that ended (its stdout, stderr
    /// and exit code, for `samza-run logs`) is kept after its last write.
    pub container_retention: Duration,
    /// Run each job's processes as an OS user of its own, taken from these
    /// user ids (the node manager runs as root); `None`: as the node
    /// manager's user.
    pub container_uids: Option<std::ops::RangeInclusive<u32>>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Ctr {
    info: NodeContainer,
    /// Kernel start time of the process (clock ticks since boot), to tell a
    /// re-adopted process from a new one with the same pid.
    start_ticks: Option<u64>,
    stop_requested: bool,
    /// SIGKILL this long after SIGTERM.
    #[serde(default)]
    stop_grace_ms: u64,
    #[serde(skip)]
    ended_at: Option<Instant>,
    /// SHA-256 of its application's token: that token may read its logs.
    #[serde(default)]
    token_sha256: String,
}

pub struct Nm {
    cfg: NmConfig,
    /// The URL other hosts reach this node manager at.
    url: String,
    /// Its host part: containers and coordinators bind their servers there.
    host: String,
    /// This node's credential (`crate::auth`).
    token: Arc<str>,
    /// Checks the RM's grant of every launch (a key derived from the credential).
    grants: crate::grant::GrantKey,
    /// SHA-256 of the operator's token, from the resource manager's answer
    /// to a registration or heartbeat: requests with that token are the
    /// operator's (none are before the first answer).
    operator_sha256: std::sync::RwLock<Option<String>>,
    /// Applications the resource manager said have ended, and when it first
    /// did: their launch tokens no longer work. Forgotten once every grant
    /// they could hold has expired (`crate::grant::GRANT_TTL_MS`).
    ended_apps: Mutex<BTreeMap<String, Instant>>,
    /// Whether the resource manager answered since this node manager
    /// started: until it has, the node knows no ended application and
    /// launches nothing.
    heard_rm: std::sync::atomic::AtomicBool,
    /// Containers launched here, and when: a grant launches once, so a
    /// replayed launch is refused even after the table forgot its container
    /// (kept while a grant could still be valid).
    launched: Mutex<BTreeMap<String, Instant>>,
    containers: Mutex<BTreeMap<String, Ctr>>,
    http: reqwest::Client,
    /// Held while a package is checked or fetched (one at a time); the
    /// identity of each cached package file last checked against its hash.
    downloads: tokio::sync::Mutex<BTreeMap<String, FileId>>,
    metrics: MetricsRegistry,
    /// Job -> the user id its processes run as (`NmConfig::container_uids`),
    /// kept in `<dir>/uids.json` so that a job keeps its user, and its
    /// stores, on this node.
    uids: Mutex<BTreeMap<String, u32>>,
}

/// What of the node manager's environment a job's process gets when it runs
/// as a user of its own (`NmConfig::container_uids`), with every `LC_*` and
/// `RUST_*`.
const PASSED_ENV: [&str; 5] = ["PATH", "LANG", "TZ", "SAMZA_LOG", "SAMZA_LOG_FORMAT"];

/// A container's record in its directory (its entry of the table).
const PROCESS_FILE: &str = "process.json";

/// Files of a container's directory that the node manager writes or reads.
const RESERVED_FILES: [&str; 4] = ["stdout", "stderr", PROCESS_FILE, "exit-code"];

/// The refusal of a launch of container `id` made here before.
fn launched_before(id: &str) -> (StatusCode, String) {
    (StatusCode::CONFLICT, format!("container {id} was launched on this node before; a grant launches once"))
}

/// Whether process `pid` runs: it exists and is not a zombie waiting to be
/// reaped (a stopped process runs, as far as this says).
pub fn process_running(pid: u32) -> bool {
    proc_start_ticks(pid).is_some()
}

fn proc_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state (3rd) ... start time (22nd).
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None; // exited, not reaped yet (its parent is not us)
    }
    fields.nth(18)?.parse().ok()
}

fn resident_mb(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(pages * page / (1 << 20))
}

fn signal_group(pid: u32, sig: i32) {
    // SAFETY: kill with a negative pid signals that process group; no memory is touched.
    unsafe {
        libc::kill(-(pid as i32), sig);
    }
}

/// What tells one file from another at the same path: its inode, size and
/// change time (which every write and rename sets, and no user can set back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    ino: u64,
    len: u64,
    ctime: (i64, i64),
}

impl FileId {
    fn of(path: &std::path::Path) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(FileId { ino: m.ino(), len: m.len(), ctime: (m.ctime(), m.ctime_nsec()) })
    }
}

impl Nm {
    pub fn new(cfg: NmConfig, url: String, token: &str) -> anyhow::Result<Arc<Nm>> {
        for d in [layout::packages(&cfg.dir), layout::containers(&cfg.dir), layout::node_state(&cfg.dir)] {
            std::fs::create_dir_all(d)?;
        }
        let uids = match &cfg.container_uids {
            Some(range) => users::prepare(&cfg.dir, range)?,
            None => BTreeMap::new(),
        };
        let host = host_of(&url).to_string();
        let nm = Arc::new(Nm {
            cfg,
            url,
            host,
            token: token.into(),
            grants: crate::grant::GrantKey::from_secret(token),
            operator_sha256: std::sync::RwLock::new(None),
            ended_apps: Mutex::new(BTreeMap::new()),
            heard_rm: std::sync::atomic::AtomicBool::new(false),
            launched: Mutex::new(BTreeMap::new()),
            containers: Mutex::new(BTreeMap::new()),
            http: reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?,
            downloads: tokio::sync::Mutex::new(BTreeMap::new()),
            metrics: MetricsRegistry::new(),
            uids: Mutex::new(uids),
        });
        nm.readopt()?;
        Ok(nm)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Ctr>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn table_path(&self) -> PathBuf {
        layout::container_table(&self.cfg.dir)
    }

    fn persist(&self, table: &BTreeMap<String, Ctr>) {
        let r = serde_json::to_vec(table)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::durable::write_atomic(&self.table_path(), &b));
        if let Err(e) = r {
            tracing::error!("cannot persist the container table in {}: {e}", self.table_path().display());
        }
    }

    /// After a restart: containers still alive are watched again; the others
    /// ended while nobody watched.
    fn readopt(self: &Arc<Self>) -> anyhow::Result<()> {
        let path = self.table_path();
        let table: BTreeMap<String, Ctr> = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(t) => t,
                Err(e) => {
                    // Never refuse to start over it: set it aside, and
                    // re-adopt from what each container's directory records.
                    let aside = path.with_extension("json.unreadable");
                    tracing::error!(table = %path.display(), error = %e, aside = %aside.display(), "the container table is unreadable; re-adopting from the container directories");
                    std::fs::rename(&path, &aside)?;
                    self.records_in_container_dirs()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut mine = self.lock();
        for (id, mut c) in table {
            if c.info.state == ContainerState::Running {
                let alive = c
                    .info
                    .pid
                    .is_some_and(|pid| proc_start_ticks(pid) == c.start_ticks && c.start_ticks.is_some());
                if alive {
                    tracing::info!(container = %id, pid = ?c.info.pid, "re-adopted a running container");
                    let nm = self.clone();
                    let (id2, pid) = (id.clone(), c.info.pid.unwrap());
                    spawn(async move { nm.watch_adopted(id2, pid).await });
                } else {
                    // Its exit code is in the file it left, when it exited on its own.
                    c.info.state = ContainerState::Exited;
                    c.info.exit_code = self.exit_code_file(&id);
                    if c.info.exit_code.is_none() {
                        c.info.reason =
                            Some("ended while the node manager was down (exit code unknown)".into());
                    }
                    c.ended_at = Some(Instant::now());
                }
            } else {
                c.ended_at = Some(Instant::now());
            }
            mine.insert(id, c);
        }
        self.persist(&mine);
        Ok(())
    }

    /// The exit code a container left in its directory's `exit-code`.
    fn exit_code_file(&self, id: &str) -> Option<i32> {
        use std::io::Read;
        let file = layout::exit_code(&layout::container(&self.cfg.dir, id));
        let mut text = String::new();
        crate::durable::open_regular_nofollow(&file).ok()?.take(32).read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }

    /// The containers' own records (`containers/<id>/process.json`, written
    /// at launch): the table again, when `containers.json` is unreadable.
    /// Only records this node manager wrote count: the directory may be a
    /// job's user's (with --container-uids), and a record planted there
    /// must not make the node manager watch, and later signal, a process of
    /// its choosing.
    fn records_in_container_dirs(&self) -> BTreeMap<String, Ctr> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let mut out = BTreeMap::new();
        let Ok(dirs) = std::fs::read_dir(layout::containers(&self.cfg.dir)) else { return out };
        for d in dirs.filter_map(|d| d.ok()) {
            let file = d.path().join(PROCESS_FILE);
            let read = crate::durable::open_regular_nofollow(&file).and_then(|f| {
                if f.metadata()?.uid() != me {
                    return Err(std::io::Error::other(format!("not written by user {me}")));
                }
                let mut b = Vec::new();
                f.take(1 << 20).read_to_end(&mut b)?;
                serde_json::from_slice::<Ctr>(&b).map_err(std::io::Error::other)
            });
            match read {
                Ok(c) if d.file_name() == c.info.id.as_str() => {
                    out.insert(c.info.id.clone(), c);
                }
                Ok(c) => {
                    tracing::warn!(file = %file.display(), names = %c.info.id, "a process record of another container; ignored")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "unusable process record; ignored")
                }
            }
        }
        out
    }

    fn reports(&self) -> Vec<NodeContainer> {
        let mut mine = self.lock();
        let keep = self.cfg.keep_ended;
        let before = mine.len();
        mine.retain(|_, c| c.ended_at.is_none_or(|t| t.elapsed() < keep));
        if mine.len() != before {
            self.persist(&mine);
        }
        mine.values().map(|c| c.info.clone()).collect()
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let api = Router::new()
            .route("/v1/containers", post(launch).get(list))
            .route("/v1/containers/{id}/stop", post(stop))
            .route("/v1/containers/{id}/logs/{stream}", get(logs))
            .route("/metrics", get(prometheus))
            .with_state(self.clone());
        let refusals: auth::RefusalCounter = (self.metrics.clone(), "nm.requests-refused");
        samza_container::http::limit_bodies(api, samza_container::http::JSON_BODY_LIMIT)
            .route_layer(axum::middleware::from_fn_with_state(self.clone(), authorize))
            .route_layer(axum::middleware::from_fn_with_state(refusals, auth::count_refusals))
            .layer(axum::middleware::from_fn_with_state(tracing::Span::current(), in_span))
    }

    /// Removes, every minute, the directories of containers this node manager
    /// no longer lists whose files were last written longer ago than the
    /// retention.
    pub async fn run_sweeps(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60).min(self.cfg.container_retention));
        loop {
            tick.tick().await;
            let nm = self.clone();
            let _ = tokio::task::spawn_blocking(move || nm.sweep()).await;
        }
    }

    /// One sweep (see [`Nm::run_sweeps`]); returns the containers removed.
    fn sweep(&self) -> Vec<String> {
        let listed: std::collections::BTreeSet<String> = self.lock().keys().cloned().collect();
        let Ok(dirs) = std::fs::read_dir(layout::containers(&self.cfg.dir)) else { return Vec::new() };
        let mut removed = Vec::new();
        for d in dirs.flatten() {
            let id = d.file_name().to_string_lossy().into_owned();
            if listed.contains(&id) || !d.path().is_dir() {
                continue;
            }
            let last_write = std::fs::read_dir(d.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| f.metadata().and_then(|m| m.modified()).ok())
                .max();
            // Never before a grant for it expired: the directory is what
            // refuses a replayed launch after a restart (`Nm::prepare`).
            let keep = self.cfg.container_retention.max(crate::grant::GRANT_TTL);
            let old = last_write.is_some_and(|t| t.elapsed().unwrap_or_default() > keep);
            if old {
                match std::fs::remove_dir_all(d.path()) {
                    Ok(()) => {
                        tracing::info!(container = %id, "removed the directory of an ended container (retention)");
                        removed.push(id);
                    }
                    Err(e) => tracing::warn!(container = %id, "cannot remove {}: {e}", d.path().display()),
                }
            }
        }
        removed
    }

    /// Registers, then heartbeats forever; registers again when the resource
    /// manager does not know this node (it restarted, or declared it lost).
    pub async fn run_heartbeats(self: Arc<Self>) {
        let mut registered = false;
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let containers = self.reports();
            let r = if registered {
                let hb = NodeHeartbeat { containers };
                self.post::<_, HeartbeatReply>(&format!("/v1/nodes/{}/heartbeat", self.cfg.node), &hb).await
            } else {
                let reg = RegisterNode {
                    node: self.cfg.node.clone(),
                    url: self.url.clone(),
                    capacity: self.cfg.capacity,
                    containers,
                };
                self.post::<_, HeartbeatReply>("/v1/nodes", &reg).await
            };
            match r {
                Ok(reply) => {
                    if let Some(h) = reply.operator_sha256.filter(|h| is_sha256(h)) {
                        *self.operator_sha256.write().unwrap_or_else(|p| p.into_inner()) = Some(h);
                    }
                    if reply.known {
                        self.applications_ended(reply.ended_apps);
                    }
                    if !registered && reply.known {
                        tracing::info!(node = %self.cfg.node, rm = %self.cfg.rm_url, "registered");
                    }
                    registered = reply.known;
                    for id in reply.stop {
                        tracing::info!(container = %id, "the resource manager asks to stop it");
                        self.stop_container(&id, None);
                    }
                    for id in reply.kill {
                        tracing::warn!(container = %id, "no longer this node's container at the resource manager; SIGKILL");
                        self.kill_container(&id);
                    }
                }
                Err(e) => {
                    tracing::warn!("heartbeat to {} failed: {e:#}", self.cfg.rm_url);
                    registered = false;
                }
            }
        }
    }

    async fn post<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let r = self
            .http
            .post(format!("{}{path}", self.cfg.rm_url))
            .bearer_auth(&*self.token)
            .timeout(Duration::from_secs(5))
            .json(body)
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            anyhow::bail!("{path}: {status}: {}", r.text().await.unwrap_or_default());
        }
        Ok(r.json().await?)
    }

    /// The package binary, from the cache or downloaded and checked.
    async fn package(&self, sha: &str) -> Result<PathBuf, String> {
        let path = layout::package(&self.cfg.dir, sha);
        let mut verified = self.downloads.lock().await;
        if let Some(id) = FileId::of(&path) {
            // A file replaced or rewritten in the cache since it was last
            // checked (a new inode or change time) is hashed again before it
            // runs, and fetched again when it does not match.
            if verified.get(sha) == Some(&id) {
                return Ok(path);
            }
            let file = path.clone();
            let hashed =
                tokio::task::spawn_blocking(move || std::fs::read(&file).map(|b| auth::sha256_hex(&b)))
                    .await
                    .map_err(|e| format!("cannot check package {}: {e}", path.display()))?;
            match hashed {
                Ok(got) if got == sha => {
                    verified.insert(sha.to_string(), id);
                    return Ok(path);
                }
                Ok(got) => {
                    tracing::warn!(package = sha, hashes_to = %got, "cached package changed on disk; fetching it again");
                    self.metrics.counter("nm.package-cache-mismatches").inc();
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(format!("cannot read package {}: {e}", path.display())),
            }
        }
        let url = format!("{}/v1/packages/{sha}", self.cfg.rm_url);
        let r = self
            .http
            .get(&url)
            .bearer_auth(&*self.token)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("GET {url}: {}", r.status()));
        }
        let bytes = r.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
        self.metrics.counter("nm.package-downloads").inc();
        self.metrics.counter("nm.package-download-bytes").add(bytes.len() as i64);
        // The owner's to read and run (and jobs' users', when jobs run as
        // users of their own), nobody's to change.
        let mode = if self.cfg.container_uids.is_some() { 0o555 } else { 0o500 };
        // Hashing and storing a package (often over 100 MB) takes seconds:
        // off the runtime, whose workers also send this node's heartbeats.
        let (sha_owned, file) = (sha.to_string(), path.clone());
        tokio::task::spawn_blocking(move || {
            let got = auth::sha256_hex(&bytes);
            if got != sha_owned {
                return Err(format!(
                    "package hash mismatch: expected {sha_owned}, downloaded bytes hash to {got}; not run"
                ));
            }
            crate::durable::write_atomic_mode(&file, &bytes, Some(mode))
                .map_err(|e| format!("cannot store package {}: {e}", file.display()))
        })
        .await
        .map_err(|e| format!("cannot store package {}: {e}", path.display()))??;
        if let Some(id) = FileId::of(&path) {
            verified.insert(sha.to_string(), id);
        }
        Ok(path)
    }

    /// The user id job `job`'s processes run as on this node: `None` when
    /// they run as the node manager's user; a job new here gets the lowest
    /// free id of the range.
    fn uid_of(&self, job: &str) -> Result<Option<u32>, String> {
        let Some(range) = &self.cfg.container_uids else { return Ok(None) };
        if !safe_name(job) {
            return Err(format!("the grant names no job ({job:?}) to run as a user of its own"));
        }
        let mut uids = self.uids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(uid) = uids.get(job) {
            return Ok(Some(*uid));
        }
        let taken: std::collections::BTreeSet<u32> = uids.values().copied().collect();
        let uid = range
            .clone()
            .find(|u| !taken.contains(u))
            .ok_or_else(|| format!("no user id left in {}-{} for job {job}", range.start(), range.end()))?;
        uids.insert(job.to_string(), uid);
        users::save(&self.cfg.dir, &uids).map_err(|e| format!("cannot record job {job}'s user: {e}"))?;
        tracing::info!(job, uid, "job runs as a user of its own on this node");
        Ok(Some(uid))
    }

    /// Notes the applications the resource manager says have ended.
    fn applications_ended(&self, apps: Vec<String>) {
        let now = Instant::now();
        let ttl = crate::grant::GRANT_TTL;
        let mut ended = self.ended_apps.lock().unwrap_or_else(|p| p.into_inner());
        ended.retain(|_, told| now.duration_since(*told) < ttl);
        for app in apps {
            ended.entry(app).or_insert(now);
        }
        self.heard_rm.store(true, std::sync::atomic::Ordering::Release);
    }

    fn has_ended(&self, app: &str) -> bool {
        self.ended_apps.lock().unwrap_or_else(|p| p.into_inner()).contains_key(app)
    }

    fn operator_sha256(&self) -> Option<String> {
        self.operator_sha256.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Claims container `id` for a launch: a grant launches once.
    fn reserve(&self, id: &str) -> Result<(), (StatusCode, String)> {
        let now = Instant::now();
        let ttl = crate::grant::GRANT_TTL;
        let mut launched = self.launched.lock().unwrap_or_else(|p| p.into_inner());
        launched.retain(|_, at| now.duration_since(*at) < ttl);
        if launched.contains_key(id) {
            return Err(launched_before(id));
        }
        launched.insert(id.to_string(), now);
        Ok(())
    }

    /// The package, and the container's new working directory `work` with
    /// its files and stdout and stderr, handed to the job's user `uid` if
    /// any. Creates, never opens, whatever is in the directory: with `uid`
    /// it is the job's, and a link a job put there must not make the node
    /// manager write through it.
    async fn prepare(
        &self,
        l: &Launch,
        work: &Path,
        uid: Option<u32>,
        job: &str,
    ) -> Result<(PathBuf, std::fs::File, std::fs::File), (StatusCode, String)> {
        let binary = self.package(&l.package_sha256).await.map_err(|e| (StatusCode::BAD_GATEWAY, e))?;
        if let Some(parent) = work.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        match std::fs::create_dir(work) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(launched_before(&l.container))
            }
            Err(e) => {
                let why = format!("cannot create {}: {e}", work.display());
                return Err((StatusCode::INTERNAL_SERVER_ERROR, why));
            }
        }
        let io = |e: std::io::Error| {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot prepare {}: {e}", work.display()))
        };
        let create = |name: &str| crate::durable::create_new(&work.join(name), 0o600);
        for (name, text) in &l.files {
            create(name.as_str())
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                .map_err(io)?;
        }
        let stdout = create("stdout").map_err(io)?;
        let stderr = create("stderr").map_err(io)?;
        if let Some(uid) = uid {
            let state = layout::node_state(&self.cfg.dir).join(job);
            users::hand_over(uid, work, l.files.keys(), &state).map_err(|e| {
                let why = format!("cannot prepare {} for user {uid}: {e}", work.display());
                (StatusCode::INTERNAL_SERVER_ERROR, why)
            })?;
        }
        Ok((binary, stdout, stderr))
    }

    /// Launches `l`, whose process is given the application token the
    /// launch carries (the grant names its SHA-256).
    async fn start(self: &Arc<Self>, l: Launch) -> Result<NodeContainer, (StatusCode, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, m);
        if !safe_name(&l.container) || !safe_name(&l.app) {
            return Err(bad(format!("invalid container or application id {:?} / {:?}", l.container, l.app)));
        }
        if auth::app_of_token(&l.app_token).as_deref() != Some(l.app.as_str()) {
            return Err(bad(format!(
                "the launch of {} carries no token of application {}",
                l.container, l.app
            )));
        }
        let token_sha256 = auth::sha256_hex(l.app_token.as_bytes());
        if !is_sha256(&l.package_sha256) {
            return Err(bad(format!("{:?} is not a lowercase hex SHA-256", l.package_sha256)));
        }
        if let Some(f) = l.files.keys().find(|f| RESERVED_FILES.contains(&f.as_str())) {
            return Err(bad(format!("file name {f:?} is the node manager's own in a container's directory")));
        }
        if let Some(f) = l.files.keys().find(|f| !safe_name(f)) {
            return Err(bad(format!("invalid file name {f:?}: no directories, no leading '.'")));
        }
        if let Err(e) = self.grants.check(&l, &self.cfg.node, &token_sha256, crate::now_ms()) {
            return Err((StatusCode::FORBIDDEN, e.to_string()));
        }
        let job = l.grant.as_ref().map(|g| g.job.clone()).unwrap_or_default();
        let uid = self.uid_of(&job).map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?;
        if self.lock().contains_key(&l.container) {
            return Err(launched_before(&l.container));
        }
        self.reserve(&l.container)?;
        let work = layout::container(&self.cfg.dir, &l.container);
        let (binary, stdout, stderr) = match self.prepare(&l, &work, uid, &job).await {
            Ok(p) => p,
            Err(e) => {
                if !work.exists() {
                    // Nothing of it exists here: the same grant may be tried again.
                    self.launched.lock().unwrap_or_else(|p| p.into_inner()).remove(&l.container);
                }
                return Err(e);
            }
        };
        let mut cmd = tokio::process::Command::new(&binary);
        if uid.is_some() {
            // Another user's process gets nothing of the node manager's
            // environment but what locates and formats things.
            cmd.env_clear();
            for (k, v) in std::env::vars_os() {
                let k_str = k.to_string_lossy();
                if PASSED_ENV.contains(&&*k_str) || k_str.starts_with("LC_") || k_str.starts_with("RUST_") {
                    cmd.env(&k, v);
                }
            }
        }
        cmd.args(&l.args)
            .current_dir(&work)
            .envs(&l.env)
            .env(env::CONTAINER_ID, &l.container)
            .env(env::APP_ID, &l.app)
            .env(env::RM_URL, &self.cfg.rm_url)
            .env(env::TOKEN, &l.app_token)
            .env_remove(env::TOKEN_FILE)
            .env_remove(env::OPERATOR_SHA256)
            .env(env::NODE, &self.cfg.node)
            .env(env::NODE_STATE_DIR, layout::node_state(&self.cfg.dir))
            .env(env::BIND, &self.host)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(false);
        // SAFETY: setsid is async-signal-safe, and the closure allocates nothing.
        unsafe {
            // A session of its own: its process group is its pid (stopping
            // it signals the group), and it has no controlling terminal.
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if let Some(uid) = uid {
            // No supplementary groups either (std drops them when root sets a uid).
            cmd.uid(uid).gid(uid);
        }
        if let Some(h) = self.operator_sha256() {
            cmd.env(env::OPERATOR_SHA256, h);
        }
        let mut child = cmd.spawn().map_err(|e| {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot start {}: {e}", binary.display()))
        })?;
        let pid = child.id().unwrap_or(0);
        let info = NodeContainer {
            id: l.container.clone(),
            app: l.app.clone(),
            state: ContainerState::Running,
            pid: Some(pid),
            exit_code: None,
            reason: None,
            resources: l.resources,
        };
        {
            let mut mine = self.lock();
            let c = Ctr {
                info: info.clone(),
                start_ticks: proc_start_ticks(pid),
                stop_requested: false,
                stop_grace_ms: l.stop_grace_ms,
                ended_at: None,
                token_sha256,
            };
            // The container's own record, should the table be lost.
            let record = serde_json::to_vec(&c).map_err(std::io::Error::other);
            if let Err(e) = record.and_then(|b| crate::durable::write_atomic(&work.join(PROCESS_FILE), &b)) {
                tracing::warn!(container = %l.container, error = %e, "cannot write the process record");
            }
            mine.insert(l.container.clone(), c);
            self.persist(&mine);
        }
        tracing::info!(container = %l.container, app = %l.app, pid, "container started");
        let nm = self.clone();
        let id = l.container.clone();
        spawn(async move {
            let status = child.wait().await;
            let (code, why) = match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (s.code(), s.signal()) {
                        (Some(c), _) => (Some(c), None),
                        (None, Some(sig)) => (None, Some(format!("killed by signal {sig}"))),
                        _ => (None, None),
                    }
                }
                Err(e) => (None, Some(format!("cannot wait for it: {e}"))),
            };
            nm.ended(&id, code, why);
        });
        let nm = self.clone();
        let id = l.container.clone();
        spawn(async move { nm.watch_memory(id, pid, l.resources.memory_mb).await });
        Ok(info)
    }

    fn ended(&self, id: &str, code: Option<i32>, why: Option<String>) {
        let mut mine = self.lock();
        if let Some(c) = mine.get_mut(id) {
            if c.info.state.is_done() {
                return;
            }
            c.info.state = ContainerState::Exited;
            c.info.exit_code = code;
            // A reason set earlier (memory limit, stop request) explains the signal.
            if c.info.reason.is_none() {
                c.info.reason = why;
            }
            c.ended_at = Some(Instant::now());
            tracing::info!(container = id, ?code, reason = ?c.info.reason, "container ended");
        }
        self.persist(&mine);
    }

    async fn watch_adopted(self: Arc<Self>, id: String, pid: u32) {
        let start = proc_start_ticks(pid);
        let limit = self.lock().get(&id).map_or(0, |c| c.info.resources.memory_mb);
        let nm = self.clone();
        let id2 = id.clone();
        spawn(async move { nm.watch_memory(id2, pid, limit).await });
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if proc_start_ticks(pid) != start {
                // Not our child: its exit code is in the file the job binary
                // leaves in its working directory, when it exited on its own.
                match self.exit_code_file(&id) {
                    Some(code) => self.ended(&id, Some(code), None),
                    None => self.ended(
                        &id,
                        None,
                        Some("ended after the node manager restarted, without an exit code (killed?)".into()),
                    ),
                }
                return;
            }
        }
    }

    async fn watch_memory(self: Arc<Self>, id: String, pid: u32, limit_mb: u64) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let running = self.lock().get(&id).is_some_and(|c| c.info.state == ContainerState::Running);
            if !running {
                return;
            }
            let Some(rss) = resident_mb(pid) else { continue };
            if limit_mb > 0 && rss > limit_mb {
                let mut mine = self.lock();
                if let Some(c) = mine.get_mut(&id) {
                    c.info.reason = Some(format!(
                        "killed by the node manager: resident memory {rss} MB exceeds the container's {limit_mb} MB"
                    ));
                }
                drop(mine);
                tracing::warn!(container = %id, rss, limit_mb, "over its memory limit; killing");
                self.metrics.counter("nm.memory-limit-kills").inc();
                signal_group(pid, libc::SIGKILL);
                return;
            }
        }
    }

    /// SIGKILL now (and SIGCONT, should it be stopped): no final commit.
    fn kill_container(&self, id: &str) {
        let pid = {
            let mut mine = self.lock();
            let Some(c) = mine.get_mut(id) else { return };
            if c.info.state != ContainerState::Running {
                return;
            }
            c.stop_requested = true;
            c.info.reason = Some(
                "killed by its node manager: the resource manager no longer counts it as this node's".into(),
            );
            c.info.pid
        };
        if let Some(pid) = pid {
            signal_group(pid, libc::SIGKILL);
            signal_group(pid, libc::SIGCONT);
        }
    }

    /// SIGTERM now, SIGKILL after the grace period if still running.
    fn stop_container(self: &Arc<Self>, id: &str, grace: Option<Duration>) -> bool {
        let pid = {
            let mut mine = self.lock();
            let Some(c) = mine.get_mut(id) else { return false };
            if c.info.state != ContainerState::Running {
                return true;
            }
            if !c.stop_requested {
                c.stop_requested = true;
                if c.info.reason.is_none() {
                    c.info.reason = Some("stopped on request".into());
                }
            }
            (c.info.pid, c.stop_grace_ms)
        };
        let (Some(pid), default_grace) = pid else { return true };
        signal_group(pid, libc::SIGTERM);
        // A stopped (SIGSTOP) process handles SIGTERM only once continued.
        signal_group(pid, libc::SIGCONT);
        let grace =
            grace.unwrap_or(Duration::from_millis(if default_grace > 0 { default_grace } else { 10_000 }));
        let nm = self.clone();
        let id = id.to_string();
        spawn(async move {
            tokio::time::sleep(grace).await;
            let still = nm.lock().get(&id).is_some_and(|c| c.info.state == ContainerState::Running);
            if still {
                tracing::warn!(container = %id, "still running after the grace period; SIGKILL");
                signal_group(pid, libc::SIGKILL);
            }
        });
        true
    }
}

type Shared = State<Arc<Nm>>;

/// Runs a request's handler in the node manager's span (its lines name the node).
async fn in_span(
    State(span): State<tracing::Span>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    tracing::Instrument::instrument(next.run(req), span).await
}

/// `tokio::spawn` in the current span, so the task's lines name the node.
fn spawn<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(f))
}

/// Who calls a node manager: the operator (by the hash of its token), an
/// application's coordinator with this node's launch token for the
/// application (from the RM's allocation), or an application's process
/// with its token, which a container's record must name.
#[derive(Clone)]
enum NmCaller {
    Operator,
    /// A launch token of this node: the application it is for.
    Launcher(String),
    /// The SHA-256 of an application's token (what container records name).
    App(String),
}

/// Launches take this node's launch token of an application (and are then
/// judged by their grant); a container's logs also its own application's
/// token; everything else is the operator's. An application's token never
/// reaches the launch route: its containers hold it.
async fn authorize(
    State(nm): Shared,
    route: axum::extract::MatchedPath,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = auth::bearer(req.headers()) else {
        return error(StatusCode::UNAUTHORIZED, "no token (Authorization: Bearer ...)");
    };
    let sha256 = auth::sha256_hex(token.as_bytes());
    let caller = if nm.operator_sha256().is_some_and(|h| auth::same(sha256.as_bytes(), h.as_bytes())) {
        NmCaller::Operator
    } else if let Some(app) = nm.grants.launcher_of(token) {
        if nm.has_ended(&app) {
            let why = format!("application {app} has ended: its launch token no longer works");
            return error(StatusCode::UNAUTHORIZED, why);
        }
        NmCaller::Launcher(app)
    } else if let Some(app) = auth::app_of_token(token)
        .filter(|_| nm.lock().values().any(|c| auth::same(c.token_sha256.as_bytes(), sha256.as_bytes())))
    {
        // An application's token is known here by the containers launched
        // with it, until the application ends.
        if nm.has_ended(&app) {
            return error(
                StatusCode::UNAUTHORIZED,
                format!("application {app} has ended: its token no longer works"),
            );
        }
        NmCaller::App(sha256)
    } else {
        return error(StatusCode::UNAUTHORIZED, "not a token this node manager accepts");
    };
    let launch = route.as_str() == "/v1/containers" && req.method() == axum::http::Method::POST;
    let allowed = match &caller {
        NmCaller::Operator => !launch,
        NmCaller::Launcher(_) => launch,
        NmCaller::App(_) => route.as_str() == "/v1/containers/{id}/logs/{stream}",
    };
    if !allowed {
        let what = format!("{} {}", req.method(), req.uri().path());
        let why = match caller {
            _ if launch => {
                "a launch takes this node's launch token, which the resource manager gives an \
                 application's coordinator with its allocations here"
            }
            NmCaller::Launcher(_) => "a launch token only launches",
            _ => "only the operator's token may",
        };
        return error(StatusCode::FORBIDDEN, format!("{what}: {why}"));
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

async fn launch(
    State(nm): Shared,
    axum::extract::Extension(caller): axum::extract::Extension<NmCaller>,
    Json(l): Json<Launch>,
) -> Response {
    let NmCaller::Launcher(app) = caller else {
        return error(StatusCode::FORBIDDEN, "a launch takes this node's launch token");
    };
    if l.app != app {
        let why = format!("the launch token is application {app}'s; the launch is for {:?}", l.app);
        return error(StatusCode::FORBIDDEN, why);
    }
    if !nm.heard_rm.load(std::sync::atomic::Ordering::Acquire) {
        let why = "this node manager has not heard from the resource manager since it started; try again";
        return error(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    match nm.start(l).await {
        Ok(info) => {
            nm.metrics.counter("nm.launches").inc();
            (StatusCode::CREATED, Json(info)).into_response()
        }
        Err((status, message)) => {
            tracing::warn!("launch refused: {message}");
            error(status, message)
        }
    }
}

/// Prometheus text: launches, package downloads, memory-limit kills, and
/// the containers by state.
async fn prometheus(State(nm): Shared) -> Response {
    let mut states: BTreeMap<String, i64> = BTreeMap::new();
    for c in nm.lock().values() {
        *states.entry(format!("{:?}", c.info.state).to_lowercase()).or_default() += 1;
    }
    for (state, n) in states {
        nm.metrics.gauge_with("nm.containers", &[("state", &state)]).set(n);
    }
    let text = nm.metrics.to_prometheus(&[("node", &nm.cfg.node)]);
    ([(axum::http::header::CONTENT_TYPE, samza_container::http::PROMETHEUS_TEXT)], text).into_response()
}

async fn list(State(nm): Shared) -> Response {
    Json(nm.lock().values().map(|c| c.info.clone()).collect::<Vec<_>>()).into_response()
}

#[derive(Deserialize)]
struct StopQuery {
    grace_ms: Option<u64>,
}

async fn stop(State(nm): Shared, UrlPath(id): UrlPath<String>, Query(q): Query<StopQuery>) -> Response {
    if nm.stop_container(&id, q.grace_ms.map(Duration::from_millis)) {
        Json(serde_json::json!({"stopping": id})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no container {id:?} on this node"))
    }
}

#[derive(Deserialize)]
struct LogQuery {
    /// Only the last this many bytes (default 1 MiB, at most 16 MiB).
    tail: Option<u64>,
}

async fn logs(
    State(nm): Shared,
    axum::extract::Extension(caller): axum::extract::Extension<NmCaller>,
    UrlPath((id, stream)): UrlPath<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    if !safe_name(&id) || !matches!(stream.as_str(), "stdout" | "stderr") {
        return error(StatusCode::BAD_REQUEST, "logs are /v1/containers/<id>/logs/stdout or .../stderr");
    }
    if let NmCaller::App(sha256) = &caller {
        let own =
            nm.lock().get(&id).is_some_and(|c| auth::same(c.token_sha256.as_bytes(), sha256.as_bytes()));
        if !own {
            return error(
                StatusCode::FORBIDDEN,
                format!("the token is not that of container {id}'s application"),
            );
        }
    }
    let path = layout::container(&nm.cfg.dir, &id).join(&stream);
    let tail = q.tail.unwrap_or(1 << 20).min(16 << 20);
    let r = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        // The container's directory is its job's (with --container-uids):
        // a link there must not make this route read the node's files.
        let mut f = crate::durable::open_regular_nofollow(&path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(tail)))?;
        let mut out = Vec::new();
        // A log still growing is read up to `tail` bytes, not to its end.
        f.take(tail).read_to_end(&mut out)?;
        Ok(out)
    })
    .await;
    match r {
        Ok(Ok(b)) => b.into_response(),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            error(StatusCode::NOT_FOUND, format!("no {stream} for container {id:?} on this node"))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
            error(StatusCode::FORBIDDEN, format!("{stream} of container {id:?} is not a log file: {e}"))
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The process groups of the containers a node manager with directory `dir`
/// started that are still alive (pid and kernel start time as in its
/// table), whether or not the node manager itself still runs.
pub fn running_pids(dir: &std::path::Path) -> Vec<u32> {
    let Ok(bytes) = std::fs::read(layout::container_table(dir)) else { return Vec::new() };
    let Ok(table) = serde_json::from_slice::<BTreeMap<String, Ctr>>(&bytes) else { return Vec::new() };
    table
        .values()
        .filter(|c| c.info.state == ContainerState::Running)
        .filter_map(|c| {
            c.info.pid.filter(|p| c.start_ticks.is_some() && proc_start_ticks(*p) == c.start_ticks)
        })
        .collect()
}

/// The host of `http://host:port` (brackets kept for IPv6).
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rfind(':') {
        Some(i) if !hostport[i..].contains(']') => &hostport[..i],
        _ => hostport,
    }
}

/// The URL a server bound to `bound` advertises: `advertise` (a host, or a
/// host:port, or a URL) when given, with the bound port when it names none;
/// the bound address otherwise, which must then not be a wildcard.
pub fn advertised_url(bound: std::net::SocketAddr, advertise: Option<&str>) -> anyhow::Result<String> {
    match advertise {
        None if bound.ip().is_unspecified() => anyhow::bail!(
            "bound to the wildcard address {bound}: say which address other hosts reach this server at with --advertise"
        ),
        None => Ok(format!("http://{bound}")),
        Some(a) => {
            let a = a.trim_end_matches('/');
            let a = a.strip_prefix("http://").unwrap_or(a);
            let has_port = a.rsplit_once(':').is_some_and(|(h, p)| !h.ends_with('[') && !p.contains(']') && p.parse::<u16>().is_ok());
            let url = if has_port { format!("http://{a}") } else { format!("http://{a}:{}", bound.port()) };
            Ok(url)
        }
    }
}

/// Runs a node manager until the process ends; writes its URL to `<dir>/nm.url`.
pub async fn serve(cfg: NmConfig, bind: &str, advertise: Option<&str>, token: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    let url = advertised_url(listener.local_addr()?, advertise)?;
    std::fs::create_dir_all(&cfg.dir)?;
    let nm = Nm::new(cfg.clone(), url.clone(), token)?;
    crate::durable::write_atomic(&layout::nm_url(&cfg.dir), url.as_bytes())?;
    tracing::info!(node = %cfg.node, %url, rm = %cfg.rm_url, "node manager listening");
    spawn(nm.clone().run_heartbeats());
    spawn(nm.clone().run_sweeps());
    axum::serve(listener, nm.router()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node manager over `dir` that talks to no resource manager.
    fn test_nm(dir: &Path) -> Arc<Nm> {
        let cfg = NmConfig {
            node: "n1".into(),
            dir: dir.to_path_buf(),
            rm_url: "http://127.0.0.1:9".into(),
            capacity: Resources { memory_mb: 1024, vcores: 1 },
            heartbeat: Duration::from_secs(1),
            keep_ended: Duration::from_secs(60),
            container_retention: Duration::from_secs(3600),
            container_uids: None,
        };
        Nm::new(cfg, "http://127.0.0.1:1".into(), "t").unwrap()
    }

    #[test]
    fn a_grant_launches_once_also_after_the_table_forgot_its_container() {
        let dir = tempfile::tempdir().unwrap();
        let nm = test_nm(dir.path());
        nm.reserve("app-1-c1").unwrap();
        assert!(nm.lock().is_empty(), "the table knows no container");
        let (status, why) = nm.reserve("app-1-c1").unwrap_err();
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(why.contains("a grant launches once"), "{why}");
        nm.reserve("app-1-c2").unwrap();
        // Forgotten once no grant for it can still be valid.
        let long_ago = Instant::now().checked_sub(crate::grant::GRANT_TTL + Duration::from_secs(1));
        if let Some(t) = long_ago {
            nm.launched.lock().unwrap().insert("app-1-c1".into(), t);
            nm.reserve("app-1-c3").unwrap();
            assert!(!nm.launched.lock().unwrap().contains_key("app-1-c1"));
        }
    }

    #[test]
    fn directories_of_ended_containers_go_after_the_retention_and_listed_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let nm = test_nm(dir.path());
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        for (id, old) in [("app-1-c1", true), ("app-1-c2", false), ("app-1-c3", true)] {
            let d = layout::container(dir.path(), id);
            std::fs::create_dir_all(&d).unwrap();
            for f in ["stdout", "stderr", "exit-code"] {
                let file = std::fs::File::create(d.join(f)).unwrap();
                if old {
                    file.set_modified(two_hours_ago).unwrap();
                }
            }
        }
        // app-1-c3 is still listed (running, or ended within keep-ended).
        let info = NodeContainer {
            id: "app-1-c3".into(),
            app: "app-1".into(),
            state: ContainerState::Running,
            pid: None,
            exit_code: None,
            reason: None,
            resources: Resources::default(),
        };
        let ctr = Ctr {
            info,
            start_ticks: None,
            stop_requested: false,
            stop_grace_ms: 0,
            ended_at: None,
            token_sha256: String::new(),
        };
        nm.lock().insert("app-1-c3".into(), ctr);
        assert_eq!(nm.sweep(), ["app-1-c1"]);
        assert!(!layout::container(dir.path(), "app-1-c1").exists());
        assert!(layout::container(dir.path(), "app-1-c2").join("stderr").is_file(), "written recently");
        assert!(layout::container(dir.path(), "app-1-c3").is_dir(), "listed");
    }

    #[test]
    fn only_records_the_node_manager_wrote_under_their_own_container_are_re_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let nm = test_nm(dir.path());
        let record = |id: &str| Ctr {
            info: NodeContainer {
                id: id.into(),
                app: "app-1".into(),
                state: ContainerState::Running,
                pid: Some(1),
                exit_code: None,
                reason: None,
                resources: Resources::default(),
            },
            start_ticks: proc_start_ticks(1),
            stop_requested: false,
            stop_grace_ms: 0,
            ended_at: None,
            token_sha256: String::new(),
        };
        let write = |dir_id: &str, c: &Ctr| {
            let d = layout::container(dir.path(), dir_id);
            std::fs::create_dir_all(&d).unwrap();
            crate::durable::write_atomic(&d.join(PROCESS_FILE), &serde_json::to_vec(c).unwrap()).unwrap();
            d.join(PROCESS_FILE)
        };
        write("app-1-c1", &record("app-1-c1"));
        // A record naming another container than its directory's.
        write("app-1-c2", &record("app-1-c9"));
        // A link to a good record outside the containers' directories.
        let elsewhere = dir.path().join("elsewhere.json");
        crate::durable::write_atomic(&elsewhere, &serde_json::to_vec(&record("app-1-c4")).unwrap()).unwrap();
        let d4 = layout::container(dir.path(), "app-1-c4");
        std::fs::create_dir_all(&d4).unwrap();
        std::os::unix::fs::symlink(&elsewhere, d4.join(PROCESS_FILE)).unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            // A record another user wrote (a job's, in its own directory).
            let f = write("app-1-c5", &record("app-1-c5"));
            std::os::unix::fs::lchown(&f, Some(20_000), Some(20_000)).unwrap();
        }
        let found: Vec<String> = nm.records_in_container_dirs().into_keys().collect();
        assert_eq!(found, ["app-1-c1"]);
    }

    #[test]
    fn a_server_advertises_what_it_is_told_or_its_bound_address_never_a_wildcard() {
        let bound: std::net::SocketAddr = "10.0.0.2:8042".parse().unwrap();
        assert_eq!(advertised_url(bound, None).unwrap(), "http://10.0.0.2:8042");
        let any: std::net::SocketAddr = "0.0.0.0:8042".parse().unwrap();
        let e = advertised_url(any, None).unwrap_err().to_string();
        assert!(e.contains("wildcard address 0.0.0.0:8042") && e.contains("--advertise"), "{e}");
        assert_eq!(advertised_url(any, Some("m2.example")).unwrap(), "http://m2.example:8042");
        assert_eq!(advertised_url(any, Some("10.0.0.2:9000")).unwrap(), "http://10.0.0.2:9000");
        assert_eq!(advertised_url(any, Some("http://10.0.0.2:9000/")).unwrap(), "http://10.0.0.2:9000");
        assert_eq!(advertised_url(any, Some("[fd00::2]")).unwrap(), "http://[fd00::2]:8042");
        assert_eq!(host_of("http://10.0.0.2:8042"), "10.0.0.2");
        assert_eq!(host_of("http://[fd00::2]:8042"), "[fd00::2]");
        assert_eq!(host_of("http://m2.example:8042/v1"), "m2.example");
    }
}

/// Each job as an OS user of its own (`NmConfig::container_uids`): what the
/// node manager, as root, prepares so that a job's processes can run as
/// that user and reach nothing of the node's or of other jobs'.
mod users {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn uids_file(dir: &Path) -> std::path::PathBuf {
        dir.join("uids.json")
    }

    fn mode(path: &Path, mode: u32) -> std::io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    /// Checks the node manager may change users, opens the directories a
    /// job's user must pass through (not list: 0711), and reads the jobs'
    /// users.
    pub(super) fn prepare(
        dir: &Path,
        range: &std::ops::RangeInclusive<u32>,
    ) -> anyhow::Result<BTreeMap<String, u32>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            anyhow::bail!(
                "--container-uids needs the node manager to run as root (to start processes as other users)"
            );
        }
        if range.is_empty() || *range.start() == 0 {
            anyhow::bail!("--container-uids {}-{}: a range of user ids above 0", range.start(), range.end());
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let packages = crate::layout::packages(dir);
        for d in [
            dir.to_path_buf(),
            crate::layout::containers(dir),
            crate::layout::node_state(dir),
            packages.clone(),
        ] {
            // The node's own directories: a job's user must not own one
            // (it could swap what is in it for links).
            // (The node directory itself may be a link the operator made.)
            let owner = if d == dir { std::fs::metadata(&d) } else { std::fs::symlink_metadata(&d) }
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", d.display()))?;
            if !owner.is_dir() || owner.uid() != me {
                anyhow::bail!(
                    "{} must be a directory of the node manager's user (uid {me}), not {} of uid {}",
                    d.display(),
                    if owner.is_dir() { "a directory" } else { "a link or file" },
                    owner.uid()
                );
            }
            mode(&d, 0o711)?;
        }
        // Packages cached before: jobs' users run them too.
        for entry in std::fs::read_dir(&packages)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_file() && meta.permissions().mode() & 0o777 != 0o555 {
                mode(&path, 0o555)?;
            }
        }
        match std::fs::read(uids_file(dir)) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", uids_file(dir).display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", uids_file(dir).display())),
        }
    }

    pub(super) fn save(dir: &Path, uids: &BTreeMap<String, u32>) -> std::io::Result<()> {
        let b = serde_json::to_vec(uids).map_err(std::io::Error::other)?;
        crate::durable::write_atomic(&uids_file(dir), &b)
    }

    /// Gives user `uid` its container's working directory and files, and
    /// its job's state directory (`state`, with everything in it when it
    /// was another user's: a job that ran before as the node manager's).
    pub(super) fn hand_over<'a>(
        uid: u32,
        work: &Path,
        files: impl Iterator<Item = &'a String>,
        state: &Path,
    ) -> std::io::Result<()> {
        let own = |p: &Path| std::os::unix::fs::lchown(p, Some(uid), Some(uid));
        // Its files before the directory: until the directory is the job's,
        // nothing of the job's can be in it.
        for f in files {
            own(&work.join(f))?;
        }
        own(work)?;
        std::fs::create_dir_all(state)?;
        // One takeover at a time, the owner checked again inside: a launch
        // of the job that finished one first has started processes of its
        // user, which must find nothing still being walked.
        static TAKEOVER: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = TAKEOVER.lock().unwrap_or_else(|p| p.into_inner());
        let before = std::fs::symlink_metadata(state)?;
        if !before.is_dir() {
            return Err(std::io::Error::other(format!("{} is not a directory", state.display())));
        }
        if before.uid() != uid {
            // Closed to everyone but the node manager while it changes hands;
            // the directory itself last, so that a walk cut short is done
            // again at the next launch.
            mode(state, 0o700)?;
            let top = open_dir(libc::AT_FDCWD, state)?;
            own_all(&top, before.uid(), uid)?;
            fchown(&top, uid)?;
        }
        mode(state, 0o700)
    }

    fn cstr(p: &Path) -> std::io::Result<std::ffi::CString> {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other)
    }

    /// Opens directory `name` (relative to `at`), refusing a link.
    fn open_dir(at: std::os::fd::RawFd, name: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        let c = cstr(name)?;
        // SAFETY: a valid NUL-terminated path; the descriptor returned is ours.
        let fd = unsafe {
            libc::openat(
                at,
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    fn fchown(fd: &std::os::fd::OwnedFd, uid: u32) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor.
        if unsafe { libc::fchown(fd.as_raw_fd(), uid, uid) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// `chown -R uid:uid` of what user `from` owns in directory `dir`, by
    /// descriptor: no link is followed (a link itself changes hands), no
    /// directory of another owner is entered, each directory after what is
    /// in it.
    fn own_all(dir: &std::os::fd::OwnedFd, from: u32, uid: u32) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let at = dir.as_raw_fd();
        let names: Vec<std::ffi::OsString> = std::fs::read_dir(format!("/proc/self/fd/{at}"))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        for name in names {
            let c = cstr(Path::new(&name))?;
            // SAFETY: a zeroed stat is a valid out-parameter.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid descriptor, path and out-parameter.
            if unsafe { libc::fstatat(at, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if st.st_uid != from {
                continue;
            }
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let sub = open_dir(at, Path::new(&name))?;
                own_all(&sub, from, uid)?;
                fchown(&sub, uid)?;
            } else {
                // SAFETY: valid descriptor and path.
                if unsafe { libc::fchownat(at, c.as_ptr(), uid, uid, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use std::os::unix::fs::MetadataExt;

        #[test]
        fn a_state_directory_changes_hands_without_following_links_or_taking_others_files() {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: changing owners needs root");
                return;
            }
            let root = tempfile::tempdir().unwrap();
            let outside = root.path().join("outside");
            std::fs::write(&outside, b"the node's").unwrap();
            let state = root.path().join("state/job");
            std::fs::create_dir_all(state.join("store/sub")).unwrap();
            std::fs::write(state.join("store/sub/sst"), b"x").unwrap();
            std::os::unix::fs::symlink(&outside, state.join("store/link")).unwrap();
            std::os::unix::fs::symlink(root.path(), state.join("dirlink")).unwrap();
            let others = state.join("others");
            std::fs::write(&others, b"y").unwrap();
            std::os::unix::fs::lchown(&others, Some(30001), Some(30001)).unwrap();
            let work = root.path().join("work");
            std::fs::create_dir(&work).unwrap();
            super::hand_over(30000, &work, std::iter::empty(), &state).unwrap();
            let owner = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().uid();
            for p in ["", "store", "store/sub", "store/sub/sst", "store/link", "dirlink"] {
                assert_eq!(owner(&state.join(p)), 30000, "{p}");
            }
            assert_eq!(owner(&others), 30001, "another user's file stays its");
            assert_eq!(owner(&outside), 0, "a link's target is not taken");
            assert_eq!(owner(root.path()), 0, "a directory link's target is not taken");
            assert_eq!(owner(&work), 30000);
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        }
    }
}
