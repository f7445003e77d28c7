//! `samza-run`'s cluster side: submit a job and follow it, show status, kill,
//! read container logs, and start a local cluster to try it all.
//!
//! The resource manager is `--rm URL`, else `SAMZA_RM_URL`, else the URL a
//! local cluster wrote to `<cluster-dir>/rm/rm.url` (`SAMZA_CLUSTER_DIR`,
//! default `samza-data/cluster`). The token: see [`crate::auth::find_token`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use samza_container::config::JobConfig;
use samza_container::env;
use samza_container::systems::SystemRegistry;
use samza_container::tools;

use crate::auth;
use crate::client::{encode, Client, HttpError};
use crate::layout;
use crate::now_ms;
use crate::proto::*;
use crate::rm::state_word;

/// The resource manager to talk to (see the module docs).
pub fn rm_url(explicit: Option<&str>) -> anyhow::Result<String> {
    if let Some(u) = explicit {
        return Ok(u.to_string());
    }
    if let Ok(u) = std::env::var(env::RM_URL) {
        return Ok(u);
    }
    let file = layout::rm_url(&layout::rm_dir(&auth::cluster_dir()));
    std::fs::read_to_string(&file).map(|s| s.trim().to_string()).map_err(|_| {
        anyhow::anyhow!(
            "no resource manager: pass --rm URL, set SAMZA_RM_URL, or start a local cluster (samza-run cluster), \
             which writes {}",
            file.display()
        )
    })
}

pub fn client(explicit: Option<&str>) -> anyhow::Result<Client> {
    Ok(Client::new(&rm_url(explicit)?, &auth::find_token()?))
}

fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}", ms.rem_euclid(1000))
}

/// Uploads the job's package, submits it, and (unless `detach`) follows it
/// until it ends: exit 0 when it SUCCEEDED.
///
/// `systems` holds the system types this tool knows; sections of other types
/// (a job's own) are checked by the job binary, in its coordinator.
pub fn submit(
    job: &Path,
    overrides: &[String],
    systems: &SystemRegistry,
    rm: Option<&str>,
    detach: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = JobConfig::load(job, overrides)?;
    let rm = client(rm.or(cfg.cluster.rm.as_deref()))?;
    // Inputs that do not exist (and declare no partition count), or that are
    // not co-partitioned, fail here rather than spend coordinator attempts.
    // Systems this tool does not know (a job's own types) are checked by the
    // coordinator.
    let known = systems.resolve_known(&cfg)?;
    if cfg.inputs.iter().all(|i| known.contains(&i.system)) {
        tools::compute_model(&cfg, &known)?;
    }
    let binary = cfg.job_binary().map_err(anyhow::Error::msg)?;
    let bytes = std::fs::read(&binary).map_err(|e| {
        anyhow::anyhow!("{}: cannot read the job binary {}: {e}", job.display(), binary.display())
    })?;
    let sha = auth::sha256_hex(&bytes);
    let package = format!("/v1/packages/{sha}");
    if !rm.exists(&package)? {
        rm.put_bytes(&package, bytes)?;
    }
    let base = job.canonicalize()?.parent().map(Path::to_path_buf).unwrap_or_default();
    let submitted: Submitted = rm.post(
        "/v1/apps",
        &Submit {
            name: cfg.name.clone(),
            config: std::fs::read_to_string(job)?,
            base_dir: base.display().to_string(),
            overrides: overrides.to_vec(),
            package_sha256: sha,
            coordinator: Resources { memory_mb: cfg.cluster.coordinator_memory_mb, vcores: 1 },
        },
    )?;
    println!("{}", submitted.app);
    eprintln!("samza-run: submitted job {} as {} to {}", cfg.name, submitted.app, rm.base());
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    follow(&rm, &submitted.app)
}

/// Prints the application's new events until it ends.
pub fn follow(rm: &Client, app: &str) -> anyhow::Result<ExitCode> {
    let mut seen = 0;
    loop {
        let info: AppInfo = rm.get(&format!("/v1/apps/{app}"))?;
        for e in info.events.iter().skip(seen) {
            eprintln!("{}  {}", fmt_time(e.time_ms), e.message);
        }
        seen = info.events.len();
        if info.state.is_final() {
            let reason = info.reason.map(|r| format!(": {r}")).unwrap_or_default();
            eprintln!("samza-run: {app} {}{reason}", state_word(info.state));
            return Ok(if info.state == AppState::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> =
            r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `samza-run status [APP]`: every application, or one in detail.
pub fn status(rm: Option<&str>, app: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let rm = client(rm)?;
    let Some(app) = app else {
        let apps: Vec<AppInfo> = rm.get("/v1/apps")?;
        let nodes: Vec<NodeInfo> = rm.get("/v1/nodes")?;
        if json {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"apps": apps, "nodes": nodes}))?);
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows =
            vec![["APP", "JOB", "STATE", "ATTEMPT", "CONTAINERS", "PROCESSED", "LAG", "SUBMITTED"]
                .map(String::from)
                .to_vec()];
        let now = now_ms();
        for a in &apps {
            let running = a.containers.iter().filter(|c| c.state == ContainerState::Running).count();
            let m = job_metrics(&rm, a);
            rows.push(vec![
                a.app.clone(),
                a.name.clone(),
                state_word(a.state),
                a.attempt.to_string(),
                format!("{running} running"),
                m.as_ref().map_or("-".into(), |m| human_count(m.processed)),
                m.as_ref().map_or("-".into(), |m| human_count(m.lag)),
                format!("{} ago", human_duration(now - a.submitted_ms)),
            ]);
        }
        print!("{}", table(&rows));
        println!();
        print!("{}", nodes_table(&nodes));
        return Ok(ExitCode::SUCCESS);
    };
    let info: AppInfo = rm.get(&format!("/v1/apps/{app}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    let reason = info.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    println!(
        "{}  job {}  {}{reason}  coordinator attempt {}  submitted {} ago",
        info.app,
        info.name,
        state_word(info.state),
        info.attempt,
        human_duration(now_ms() - info.submitted_ms)
    );
    let metrics = job_metrics(&rm, &info);
    if let Some(m) = &metrics {
        println!("processed {}  lag {}", human_count(m.processed), human_count(m.lag));
    }
    let restarts = |role: Role| match role {
        Role::Coordinator => "-".to_string(),
        Role::Container(n) => info
            .coordinator_state
            .as_ref()
            .and_then(|s| s.containers.get(&n))
            .map_or("-".to_string(), |s| s.restarts.to_string()),
    };
    let mut rows = vec![vec![
        "CONTAINER".into(),
        "ROLE".into(),
        "NODE".into(),
        "STATE".into(),
        "PID".into(),
        "RESTARTS".into(),
        "PROCESSED".into(),
        "LAG".into(),
        "EXIT".into(),
    ]];
    for c in &info.containers {
        // A running container's figures, from its last heartbeat to the coordinator.
        let figure = |f: fn(&ContainerMetrics) -> u64| {
            let m = metrics.as_ref().and_then(|m| m.containers.values().find(|x| x.container == c.id));
            m.map_or("-".to_string(), |m| human_count(f(m)))
        };
        let exit = match (c.exit_code, &c.reason) {
            (Some(code), Some(r)) => format!("{code}: {r}"),
            (Some(code), None) => code.to_string(),
            (None, Some(r)) => r.clone(),
            _ => String::new(),
        };
        rows.push(vec![
            c.id.clone(),
            c.role.to_string(),
            c.node.clone(),
            state_word(c.state),
            c.pid.map_or("-".into(), |p| p.to_string()),
            restarts(c.role),
            figure(|m| m.processed),
            figure(|m| m.lag),
            exit,
        ]);
    }
    print!("\n{}", table(&rows));
    println!("\nrecent events:");
    for e in info.events.iter().rev().take(20).collect::<Vec<_>>().into_iter().rev() {
        println!("  {}  {}", fmt_time(e.time_ms), e.message);
    }
    Ok(ExitCode::SUCCESS)
}

fn nodes_table(nodes: &[NodeInfo]) -> String {
    let mut rows = vec![vec![
        "NODE".into(),
        "STATE".into(),
        "MEMORY USED".into(),
        "VCORES USED".into(),
        "CONTAINERS".into(),
        "LAST HEARTBEAT".into(),
        "URL".into(),
    ]];
    for n in nodes {
        rows.push(vec![
            n.node.clone(),
            state_word(n.state),
            format!("{} / {} MB", n.used.memory_mb, n.capacity.memory_mb),
            format!("{} / {}", n.used.vcores, n.capacity.vcores),
            n.containers.to_string(),
            format!("{} ago", human_duration(n.heartbeat_age_ms as i64)),
            n.url.clone(),
        ]);
    }
    table(&rows)
}

/// `samza-run kill APP`: kills the application and returns once its
/// containers have stopped (exit 0), or names those that have not within
/// `wait` (exit 1). Containers on nodes declared lost cannot be confirmed:
/// they end by their lease, which the note says.
pub fn kill(rm: Option<&str>, app: &str, wait: Duration) -> anyhow::Result<ExitCode> {
    let rm = client(rm)?;
    let mut info: AppInfo = rm.post(&format!("/v1/apps/{app}/kill"), &serde_json::json!({}))?;
    let start = Instant::now();
    let live = |i: &AppInfo| -> Vec<ContainerInfo> {
        i.containers.iter().filter(|c| !c.state.is_done()).cloned().collect()
    };
    while !live(&info).is_empty() && start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(100));
        info = rm.get(&format!("/v1/apps/{app}"))?;
    }
    let left = live(&info);
    if !left.is_empty() {
        eprintln!(
            "samza-run: {app}: {} container(s) still running after {:.0} s:",
            left.len(),
            wait.as_secs_f64()
        );
        for c in &left {
            let pid = c.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
            eprintln!("  {}{pid}", crate::rm::describe(c));
        }
        println!("{} {}", info.app, state_word(info.state));
        return Ok(ExitCode::FAILURE);
    }
    let lost = info.containers.iter().filter(|c| c.state == ContainerState::Lost).count();
    if lost > 0 {
        eprintln!(
            "samza-run: {app}: {lost} container(s) were lost with their nodes; if still alive there, they stop by their lease"
        );
    }
    println!("{} {}", info.app, state_word(info.state));
    Ok(ExitCode::SUCCESS)
}

/// `samza-run logs APP [CONTAINER]`: the container's (default: the
/// coordinator's latest) stdout or stderr, read from its node.
pub fn logs(rm: Option<&str>, app: &str, container: Option<&str>, stdout: bool) -> anyhow::Result<ExitCode> {
    let rm = client(rm)?;
    let info: AppInfo = rm.get(&format!("/v1/apps/{app}"))?;
    let c = match container {
        Some(want) => {
            info.containers.iter().rev().find(|c| c.id == want || c.role.to_string() == want).ok_or_else(
                || anyhow::anyhow!("{app} has no container {want:?} (see samza-run status {app})"),
            )?
        }
        None => info
            .containers
            .iter()
            .rev()
            .find(|c| c.role == Role::Coordinator)
            .ok_or_else(|| anyhow::anyhow!("{app} has no container yet"))?,
    };
    let nodes: Vec<NodeInfo> = rm.get("/v1/nodes")?;
    let node = nodes
        .iter()
        .find(|n| n.node == c.node)
        .ok_or_else(|| anyhow::anyhow!("node {} of container {} is not known", c.node, c.id))?;
    let nm = rm.at(&node.url);
    let stream = if stdout { "stdout" } else { "stderr" };
    let bytes = nm.get_bytes(&format!("/v1/containers/{}/logs/{stream}", c.id)).map_err(|e| {
        anyhow::anyhow!("cannot read the log of {} from node {} ({}): {e:#}", c.id, c.node, node.url)
    })?;
    use std::io::Write;
    std::io::stdout().write_all(&bytes)?;
    Ok(ExitCode::SUCCESS)
}

/// A local cluster: one resource manager and `nodes` node managers, each a
/// process of its own with its own port and directory under `dir`.
pub struct LocalCluster {
    pub dir: PathBuf,
    pub rm_url: String,
    pub token: String,
    pub rm: Child,
    pub nodes: Vec<(String, Child)>,
    bin: PathBuf,
    node_timeout_ms: u64,
    heartbeat_ms: u64,
    /// Where each node runs (`node-N` on `places[N-1]`; the resource manager
    /// on the first); empty: everything on loopback here.
    places: Vec<Place>,
    /// More arguments for node managers started (or restarted) from now on.
    pub nm_args: Vec<String>,
}

/// A host of a cluster spanning network namespaces (see [`crate::netns`]).
#[derive(Clone, Debug)]
pub struct Place {
    pub netns: String,
    pub addr: String,
}

impl Place {
    fn command(place: Option<&Place>, program: &Path) -> Command {
        match place {
            Some(p) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &p.netns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

fn wait_file(path: &Path, child: &mut Child, what: &str) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.trim().is_empty() {
                return Ok(s.trim().to_string());
            }
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{what} exited ({status}) before it was ready");
        }
        if start.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("{what} did not write {} within 30 s", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl LocalCluster {
    /// Starts the daemons found next to this executable (or in `bin`).
    pub fn start(bin: &Path, dir: &Path, nodes: u32, node_timeout_ms: u64) -> anyhow::Result<LocalCluster> {
        Self::start_with(bin, dir, nodes, node_timeout_ms, 1000)
    }

    /// As [`LocalCluster::start`], with the node managers' heartbeat interval.
    pub fn start_with(
        bin: &Path,
        dir: &Path,
        nodes: u32,
        node_timeout_ms: u64,
        heartbeat_ms: u64,
    ) -> anyhow::Result<LocalCluster> {
        Self::start_places(bin, dir, nodes, Vec::new(), node_timeout_ms, heartbeat_ms)
    }

    /// A cluster across hosts: node `node-N` on `places[N-1]`, the resource
    /// manager on the first, each daemon bound to its host's address.
    pub fn start_on(
        bin: &Path,
        dir: &Path,
        places: Vec<Place>,
        node_timeout_ms: u64,
        heartbeat_ms: u64,
    ) -> anyhow::Result<LocalCluster> {
        anyhow::ensure!(!places.is_empty(), "a cluster needs a host");
        Self::start_places(bin, dir, places.len() as u32, places, node_timeout_ms, heartbeat_ms)
    }

    fn start_places(
        bin: &Path,
        dir: &Path,
        nodes: u32,
        places: Vec<Place>,
        node_timeout_ms: u64,
        heartbeat_ms: u64,
    ) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let bind = places.first().map_or("127.0.0.1:0".to_string(), |p| format!("{}:0", p.addr));
        let (rm, rm_url) = spawn_rm(bin, &dir, &bind, node_timeout_ms, places.first())?;
        let token = auth::read(&layout::token(&layout::rm_dir(&dir)))?;
        let mut c = LocalCluster {
            dir,
            rm_url,
            token,
            rm,
            nodes: Vec::new(),
            bin: bin.to_path_buf(),
            node_timeout_ms,
            heartbeat_ms,
            places,
            nm_args: Vec::new(),
        };
        for i in 1..=nodes {
            c.start_node(&format!("node-{i}"))?;
        }
        Ok(c)
    }

    fn place_of(&self, node: &str) -> Option<&Place> {
        let n: usize = node.strip_prefix("node-")?.parse().ok()?;
        self.places.get(n.checked_sub(1)?)
    }

    /// Waits (10 s at most) until node manager `name` has heard from the
    /// resource manager since it started: it then knows the operator (its
    /// list answers the operator's token) and launches.
    pub fn wait_node_ready(&self, name: &str) -> anyhow::Result<()> {
        let url = std::fs::read_to_string(layout::nm_url(&self.dir.join(name)))?;
        let nm = Client::with_timeout(url.trim(), &self.token, Duration::from_secs(2));
        let start = Instant::now();
        while nm.get::<Vec<NodeContainer>>("/v1/containers").is_err() {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(10),
                "node manager {name} is not ready after 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts (or restarts) the node manager `name`, with the credential
    /// the resource manager issues for it in `<dir>/<name>/credential`.
    pub fn start_node(&mut self, name: &str) -> anyhow::Result<()> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let credential = layout::node_credential(&dir);
        if !credential.is_file() {
            let rm = Client::new(&self.rm_url, &self.token);
            let c: NodeCredential =
                rm.post(&format!("/v1/nodes/{name}/credential"), &serde_json::json!({}))?;
            crate::durable::write_atomic_mode(&credential, c.credential.as_bytes(), Some(0o600))?;
        }
        let _ = std::fs::remove_file(layout::nm_url(&dir));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let place = self.place_of(name);
        let bind = place.map_or("127.0.0.1:0".to_string(), |p| format!("{}:0", p.addr));
        let mut child = Place::command(place, &self.bin.join("samza-nm"))
            .arg("--node")
            .arg(name)
            .arg("--dir")
            .arg(&dir)
            .arg("--rm")
            .arg(&self.rm_url)
            .arg("--bind")
            .arg(bind)
            .arg("--heartbeat-ms")
            .arg(self.heartbeat_ms.to_string())
            .args(&self.nm_args)
            .env(env::TOKEN_FILE, &credential)
            .env_remove(env::TOKEN)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.bin.join("samza-nm").display()))?;
        wait_file(&layout::nm_url(&dir), &mut child, "samza-nm")?;
        self.nodes.retain(|(n, _)| n != name);
        self.nodes.push((name.to_string(), child));
        Ok(())
    }

    /// Restarts the resource manager on the same directory and port.
    pub fn restart_rm(&mut self) -> anyhow::Result<()> {
        let bind = self.rm_url.trim_start_matches("http://").to_string();
        (self.rm, _) = spawn_rm(&self.bin, &self.dir, &bind, self.node_timeout_ms, self.places.first())?;
        Ok(())
    }

    /// Ends everything the cluster started: SIGKILL to every container the
    /// resource manager knows alive (its process group), then the daemons.
    /// Stop applications first (kill) for a clean stop; also run on drop.
    pub fn stop(&mut self) {
        let rm = Client::new(&self.rm_url, &self.token);
        if let Ok(apps) = rm.get::<Vec<AppInfo>>("/v1/apps") {
            for c in apps.iter().flat_map(|a| &a.containers).filter(|c| !c.state.is_done()) {
                if let Some(pid) = c.pid {
                    // SAFETY: kill has no memory effects; the group is a container this cluster started.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
            }
        }
        // Also those the resource manager no longer counts (on nodes it
        // declared lost): every node manager's own table says what it started.
        for (name, _) in &self.nodes {
            for pid in crate::nm::running_pids(&self.dir.join(name)) {
                // SAFETY: as above; the pid's start time matched the table's.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
        }
        for (_, c) in self.nodes.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.rm.kill();
        let _ = self.rm.wait();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `samza-rm` on `bind` with its state in `<dir>/rm` and its log
/// appended to `<dir>/rm.log`; returns it and its URL once it listens.
fn spawn_rm(
    bin: &Path,
    dir: &Path,
    bind: &str,
    node_timeout_ms: u64,
    place: Option<&Place>,
) -> anyhow::Result<(Child, String)> {
    let rm_dir = layout::rm_dir(dir);
    let _ = std::fs::remove_file(layout::rm_url(&rm_dir));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("rm.log"))?;
    let mut rm = Place::command(place, &bin.join("samza-rm"))
        .arg("--dir")
        .arg(&rm_dir)
        .arg("--bind")
        .arg(bind)
        .arg("--node-timeout-ms")
        .arg(node_timeout_ms.to_string())
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.join("samza-rm").display()))?;
    let url = wait_file(&layout::rm_url(&rm_dir), &mut rm, "samza-rm")?;
    Ok((rm, url))
}

/// `samza-run cluster`: starts a local cluster and keeps it up until Ctrl-C.
pub fn cluster(dir: &Path, nodes: u32) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().unwrap_or(Path::new("."));
    let mut c = LocalCluster::start(bin, dir, nodes, 10_000)?;
    eprintln!("samza-run: local cluster up: resource manager {} and {nodes} node managers", c.rm_url);
    eprintln!(
        "samza-run: token in {}; daemons' logs in {}",
        c.dir.join("rm/token").display(),
        c.dir.display()
    );
    eprintln!("samza-run: submit with: samza-run JOB.toml --rm {}   (Ctrl-C stops the cluster)", c.rm_url);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let mut seen = BTreeSet::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = c.rm.try_wait()? {
            eprintln!(
                "samza-run: the resource manager exited ({status}); see {}",
                c.dir.join("rm.log").display()
            );
            c.stop();
            return Ok(ExitCode::FAILURE);
        }
        for (name, child) in c.nodes.iter_mut() {
            if let Some(status) = child.try_wait()? {
                if seen.insert(name.clone()) {
                    eprintln!("samza-run: node manager {name} exited ({status})");
                }
            }
        }
    }
    eprintln!("samza-run: stopping the local cluster (and killing its running applications)");
    let rm = Client::new(&c.rm_url, &c.token);
    if let Ok(apps) = rm.get::<Vec<AppInfo>>("/v1/apps") {
        for a in apps.iter().filter(|a| !a.state.is_final()) {
            let _ = rm.post::<_, AppInfo>(&format!("/v1/apps/{}/kill", a.app), &serde_json::json!({}));
        }
        // The node managers stop the containers at their next heartbeat.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            let live = rm
                .get::<Vec<AppInfo>>("/v1/apps")
                .map(|apps| apps.iter().flat_map(|a| &a.containers).any(|c| !c.state.is_done()))
                .unwrap_or(false);
            if !live {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    c.stop();
    Ok(ExitCode::SUCCESS)
}

/// `samza-run node-credential NODE [--rotate] [--out FILE]`: issues node
/// `NODE`'s credential (the operator's token is needed; `--rotate`: a new
/// one, revoking the one before) and prints it, or writes it to `FILE`
/// (mode 0600) for the node manager's `SAMZA_TOKEN_FILE`.
pub fn node_credential(
    rm: Option<&str>,
    node: &str,
    out: Option<&Path>,
    rotate: bool,
) -> anyhow::Result<ExitCode> {
    let rotate = if rotate { "?rotate=true" } else { "" };
    let path = format!("/v1/nodes/{}/credential{rotate}", encode(node));
    let c: NodeCredential = client(rm)?.post(&path, &serde_json::json!({}))?;
    match out {
        Some(path) => {
            crate::durable::write_atomic_mode(path, c.credential.as_bytes(), Some(0o600))?;
            eprintln!(
                "samza-run: node {node}'s credential is in {}; start its node manager with SAMZA_TOKEN_FILE={}",
                path.display(),
                path.display()
            );
        }
        None => println!("{}", c.credential),
    }
    Ok(ExitCode::SUCCESS)
}

/// `samza-run query APP STORE KEY`: the key's current value in the running
/// job's store, read by the container that owns it.
pub fn query(
    rm: Option<&str>,
    app: &str,
    store: &str,
    key: &str,
    task: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let rm = client(rm)?;
    let mut path = format!("/v1/apps/{}/stores/{}/{}", encode(app), encode(store), encode(key));
    if let Some(t) = task {
        path.push_str(&format!("?task={}", encode(t)));
    }
    match rm.get::<serde_json::Value>(&path) {
        Ok(v) if json => println!("{}", serde_json::to_string_pretty(&v)?),
        Ok(v) => println!("{}", v["value"]),
        Err(e) if e.downcast_ref::<HttpError>().is_some_and(|h| h.status == 404) => {
            eprintln!("samza-run: {e}");
            return Ok(ExitCode::from(EXIT_NOT_FOUND));
        }
        Err(e) => return Err(e),
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code when the thing asked for (key, application) does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code when an action is refused because of the job's state.
pub const EXIT_REFUSED: u8 = 4;

/// `samza-run checkpoint show job.toml`: every task's checkpointed offsets,
/// with each partition's upcoming offset and the lag between them.
pub fn checkpoint_show(
    job: &Path,
    overrides: &[String],
    systems: &SystemRegistry,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = JobConfig::load(job, overrides)?;
    let systems = systems.resolve(&cfg)?;
    let cps = tools::read_checkpoints(&cfg, &systems)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&cps)?);
        return Ok(ExitCode::SUCCESS);
    }
    if cps.is_empty() {
        println!("job {} has no checkpoints yet", cfg.name);
        return Ok(ExitCode::SUCCESS);
    }
    let mut upcoming: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut rows = vec![["TASK", "PARTITION", "OFFSET", "UPCOMING", "LAG"].map(String::from).to_vec()];
    for (task, cp) in &cps {
        for e in &cp.offsets {
            let ss = e.ssp.system_stream.to_string();
            if !upcoming.contains_key(&ss) {
                let meta = systems
                    .admin(&e.ssp.system_stream.system)
                    .ok()
                    .and_then(|a| a.partition_metadata(e.ssp.stream()).ok());
                upcoming.insert(
                    ss.clone(),
                    meta.map(|m| m.iter().map(|p| p.upcoming).collect()).unwrap_or_default(),
                );
            }
            let up = upcoming[&ss].get(e.ssp.partition as usize).copied();
            rows.push(vec![
                task.to_string(),
                e.ssp.to_string(),
                human_count(e.offset),
                up.map_or("-".into(), human_count),
                up.map_or("-".into(), |u| human_count(u.saturating_sub(e.offset))),
            ]);
        }
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// `samza-run checkpoint set job.toml --task T SSP=OFFSET...`: only while
/// the job runs nowhere (on this machine or on its cluster).
pub fn checkpoint_set(
    job: &Path,
    overrides: &[String],
    systems: &SystemRegistry,
    rm: Option<&str>,
    task: &str,
    offsets: &[String],
) -> anyhow::Result<ExitCode> {
    let cfg = JobConfig::load(job, overrides)?;
    let systems = systems.resolve(&cfg)?;
    let mut parsed = Vec::new();
    for o in offsets {
        let (ssp, off) = o
            .rsplit_once('=')
            .ok_or_else(|| anyhow::anyhow!("{o:?}: write PARTITION=OFFSET, e.g. log.in[0]=1200"))?;
        let off: u64 = off.parse().map_err(|_| anyhow::anyhow!("{o:?}: offset {off:?} is not a number"))?;
        parsed.push((tools::parse_ssp(ssp)?, off));
    }
    if parsed.is_empty() {
        anyhow::bail!("name at least one PARTITION=OFFSET to set");
    }
    if let Some((id, pid)) = tools::running_locally(&cfg) {
        eprintln!("samza-run: job {} is running here (container {id}, pid {pid}); stop it first", cfg.name);
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    if let Some(url) = rm.or(cfg.cluster.rm.as_deref()) {
        let apps: Vec<AppInfo> = client(Some(url))?.get("/v1/apps")?;
        if let Some(a) = apps.iter().find(|a| a.name == cfg.name && !a.state.is_final()) {
            eprintln!(
                "samza-run: job {} is {} on the cluster as {}; kill it first",
                cfg.name,
                state_word(a.state),
                a.app
            );
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
    }
    let cp = tools::set_checkpoint(&cfg, &systems, task, &parsed)?;
    for e in &cp.offsets {
        println!("{task}  {}  {}", e.ssp, e.offset);
    }
    Ok(ExitCode::SUCCESS)
}

/// `samza-run store get job.toml STORE KEY`: a key from a task's store on
/// this machine's disk.
pub fn store_get(
    job: &Path,
    overrides: &[String],
    systems: &SystemRegistry,
    store: &str,
    key: &str,
    task: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = JobConfig::load(job, overrides)?;
    let systems = systems.resolve(&cfg)?;
    let (task, value) = tools::read_store_key(&cfg, &systems, store, key, task)?;
    match value {
        Some(v) if json => {
            println!("{}", serde_json::json!({"store": store, "key": key, "task": task, "value": v}))
        }
        Some(v) => println!("{v}"),
        None => {
            eprintln!("samza-run: no key {key:?} in store {store} of task {task}");
            return Ok(ExitCode::from(EXIT_NOT_FOUND));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The running job's figures from its coordinator (none when it is not running).
fn job_metrics(rm: &Client, a: &AppInfo) -> Option<JobMetrics> {
    if a.state != AppState::Running {
        return None;
    }
    rm.get(&format!("/v1/apps/{}/metrics", a.app)).ok()
}

/// 1500 -> "1.5 s", 200000 -> "3 min 20 s", 7_500_000 -> "2 h 5 min".
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// 1234567 -> "1,234,567".
pub fn human_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod human_tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_as_people_write_them() {
        assert_eq!(human_count(0), "0");
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(1000), "1,000");
        assert_eq!(human_count(1234567), "1,234,567");
        assert_eq!(human_duration(250), "250 ms");
        assert_eq!(human_duration(1500), "1.5 s");
        assert_eq!(human_duration(200_000), "3 min 20 s");
        assert_eq!(human_duration(7_500_000), "2 h 5 min");
        assert_eq!(human_duration(90_000_000), "1 d 1 h");
    }
}
