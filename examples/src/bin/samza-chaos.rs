//! `samza-chaos`: the page-view example, both jobs (`page-views`
//! repartitions, `page-view-counter` counts), on a cluster of three hosts
//! (network namespaces joined by a bridge: root only), with page views fed
//! at a steady rate and random faults injected, reproducibly from a seed:
//!
//! - kill -9 of a job container, of a node manager with or without its
//!   containers (restarted after a random delay), of a job coordinator, of
//!   the resource manager (restarted after a random delay);
//! - SIGSTOP of a node manager and its containers for longer than the
//!   node-loss timeout, then SIGCONT;
//! - a host cut off the network (its link down) and reconnected;
//! - a node's state directory (a small tmpfs the harness mounts for each
//!   node) full, then freed.
//!
//! A fault that hits a node picks one that runs job containers (by the
//! seed's draw among them), so it has something to break.
//!
//! After each fault it waits for recovery (every job container of both jobs
//! heartbeating and processing again) and a random pause. At the end it
//! stops the feed, waits for the counts, and checks from the streams: with
//! exactly-once, every page view repartitioned exactly once, every user's
//! count equal to the truth, each user's updates numbered 1, 2, 3, ...
//! without gap or repeat and growing; with at-least-once, no view lost, no
//! count below the truth, none that went down; in both, no checkpoint
//! written by an older generation after a newer one or going backwards, and
//! no process of the cluster left once it is stopped. It prints a report
//! (faults, recovery times with p50/p99/max, a throughput timeline, the
//! verdict) and writes it as JSON; exit 0 only for a PASS.
//!
//! ```text
//! samza-chaos --duration 10m --seed 42 [--rate 1000] [--guarantee exactly-once|at-least-once]
//!             [--report chaos.json] [--dir DIR] [--keep]
//! ```
//! The job binaries, `samza-rm`, `samza-nm` and `samza-run` are found beside it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use samza_examples::{arg, user_of, verify};
use samza_log::{Log, StreamConfig};
use samza_scheduler::cli::{LocalCluster, Place};
use samza_scheduler::client::Client;
use samza_scheduler::netns::TestNet;
use samza_scheduler::proto::*;

const NODE_TIMEOUT_MS: u64 = 6_000;
const USERS: u64 = 500;
const CONTAINERS: u32 = 2;
/// The jobs, in pipeline order: (name, task class, input, output).
const JOBS: [(&str, &str, &str); 2] =
    [("page-views", "repartition", "page-views"), ("page-view-counter", "count", "page-views-by-user")];
/// How long a fault may take to recover from before the run fails.
const RECOVERY_LIMIT: Duration = Duration::from_secs(120);

/// splitmix64: the schedule is a function of the seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn ms(&mut self, from: u64, to: u64) -> u64 {
        from + self.below(to - from + 1)
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillContainer { job: usize, n: u32 },
    KillNodeManager { pick: u64, containers: bool, down_ms: u64 },
    KillCoordinator { job: usize },
    KillResourceManager { down_ms: u64 },
    PauseNode { pick: u64, ms: u64 },
    CutHost { pick: u64, ms: u64 },
    DiskFull { pick: u64, ms: u64 },
}

impl Fault {
    fn draw(rng: &mut Rng) -> Fault {
        let over_timeout = |rng: &mut Rng| rng.ms(NODE_TIMEOUT_MS + 1_000, NODE_TIMEOUT_MS + 5_000);
        match rng.below(8) {
            0 => Fault::KillContainer {
                job: rng.below(2) as usize,
                n: rng.below(u64::from(CONTAINERS)) as u32,
            },
            1 => Fault::KillNodeManager { pick: rng.next(), containers: true, down_ms: rng.ms(1_000, 8_000) },
            2 => {
                Fault::KillNodeManager { pick: rng.next(), containers: false, down_ms: rng.ms(1_000, 8_000) }
            }
            3 => Fault::KillCoordinator { job: rng.below(2) as usize },
            4 => Fault::KillResourceManager { down_ms: rng.ms(500, 5_000) },
            5 => Fault::PauseNode { pick: rng.next(), ms: over_timeout(rng) },
            6 => Fault::CutHost { pick: rng.next(), ms: over_timeout(rng) },
            _ => Fault::DiskFull { pick: rng.next(), ms: rng.ms(3_000, 12_000) },
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Fault::KillContainer { .. } => "kill-container",
            Fault::KillNodeManager { containers: true, .. } => "kill-node-manager-with-containers",
            Fault::KillNodeManager { containers: false, .. } => "kill-node-manager-alone",
            Fault::KillCoordinator { .. } => "kill-coordinator",
            Fault::KillResourceManager { .. } => "kill-resource-manager",
            Fault::PauseNode { .. } => "pause-node",
            Fault::CutHost { .. } => "cut-host",
            Fault::DiskFull { .. } => "disk-full",
        }
    }

    fn describe(&self) -> String {
        match *self {
            Fault::KillContainer { job, n } => format!("kill -9 of container {n} of {}", JOBS[job].0),
            Fault::KillNodeManager { containers, down_ms, .. } => format!(
                "kill -9 of a node manager{}, restarted after {down_ms} ms",
                if containers { " and its containers" } else { " alone" }
            ),
            Fault::KillCoordinator { job } => format!("kill -9 of the coordinator of {}", JOBS[job].0),
            Fault::KillResourceManager { down_ms } => {
                format!("kill -9 of the resource manager, restarted after {down_ms} ms")
            }
            Fault::PauseNode { ms, .. } => {
                format!("SIGSTOP of a node manager and its containers for {ms} ms")
            }
            Fault::CutHost { ms, .. } => format!("a host cut off the network for {ms} ms"),
            Fault::DiskFull { ms, .. } => format!("a node's state directory full for {ms} ms"),
        }
    }
}

/// What the run found, fault by fault.
struct FaultRecord {
    at_ms: u64,
    fault: Fault,
    /// What it hit (a node, a pid, how many containers).
    target: String,
    note: Option<String>,
    recovery_ms: Option<u64>,
}

/// A throughput sample.
#[derive(Clone, Default)]
struct Sample {
    t_ms: u64,
    fed: u64,
    /// Per job: input offsets committed (summed over its tasks' checkpoints).
    committed: [u64; 2],
    /// Per job: input offsets committed per second since the last sample.
    rate: [f64; 2],
}

struct Opts {
    duration: Duration,
    seed: u64,
    rate: u64,
    guarantee: String,
    report: Option<PathBuf>,
    dir: Option<PathBuf>,
    keep: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = n.parse().map_err(|_| format!("--duration {s:?}: expected e.g. 90s, 10m or 1h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("--duration {s:?}: the unit is s, m or h")),
    }
}

fn opts() -> Result<Opts, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let known = ["--duration", "--seed", "--rate", "--guarantee", "--report", "--dir"];
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            a if known.contains(&a) => i += 2,
            "--keep" => i += 1,
            a => return Err(format!("unknown argument {a:?} (see the top of samza-chaos.rs)")),
        }
    }
    let guarantee = arg("--guarantee").unwrap_or_else(|| "exactly-once".into());
    if guarantee != "exactly-once" && guarantee != "at-least-once" {
        return Err(format!("--guarantee {guarantee:?}: exactly-once or at-least-once"));
    }
    Ok(Opts {
        duration: parse_duration(&arg("--duration").unwrap_or_else(|| "2m".into()))?,
        seed: arg("--seed")
            .map(|s| s.parse().map_err(|_| format!("--seed {s:?}: a number")))
            .transpose()?
            .unwrap_or(42),
        rate: arg("--rate")
            .map(|s| s.parse().map_err(|_| format!("--rate {s:?}: events per second")))
            .transpose()?
            .unwrap_or(1000),
        guarantee,
        report: arg("--report").map(PathBuf::from),
        dir: arg("--dir").map(PathBuf::from),
        keep: args.iter().any(|a| a == "--keep"),
    })
}

/// A small file system under a node's state directory, which a fault fills.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path) -> anyhow::Result<SmallDisk> {
        std::fs::create_dir_all(at)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256m,mode=0700", "samza-chaos"])
            .arg(at)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mount tmpfs at {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(SmallDisk { at: at.to_path_buf() })
    }

    fn filler(&self) -> PathBuf {
        self.at.join(".chaos-filler")
    }

    /// Fills it to the last byte; returns the bytes written.
    fn fill(&self) -> u64 {
        use std::io::Write;
        let Ok(mut f) = std::fs::File::create(self.filler()) else { return 0 };
        let chunk = vec![0u8; 1 << 20];
        let mut n = 0;
        while f.write_all(&chunk).is_ok() {
            n += chunk.len() as u64;
        }
        for size in [4096usize, 512, 1] {
            while f.write_all(&chunk[..size]).is_ok() {
                n += size as u64;
            }
        }
        let _ = f.flush();
        n
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.at).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

/// Everything the run started. Fields drop in order: the cluster's
/// processes, the small disk, the network; the directory is removed last
/// (by `main`) unless `--keep`.
struct Chaos {
    cluster: LocalCluster,
    /// Node n's state directory is `disks[n - 1]`.
    disks: Vec<SmallDisk>,
    net: TestNet,
    dir: PathBuf,
    apps: [String; 2],
    /// Every process of the cluster seen, to check none is left.
    pids: Mutex<BTreeSet<u32>>,
}

impl Chaos {
    fn rm(&self, timeout: Duration) -> Client {
        Client::with_timeout(&self.cluster.rm_url, &self.cluster.token, timeout)
    }

    fn info(&self, job: usize) -> Option<AppInfo> {
        let info: AppInfo =
            self.rm(Duration::from_secs(3)).get(&format!("/v1/apps/{}", self.apps[job])).ok()?;
        self.pids.lock().unwrap().extend(info.containers.iter().filter_map(|c| c.pid));
        Some(info)
    }

    fn running(&self, job: usize, role: Role) -> Option<ContainerInfo> {
        self.info(job)?.containers.into_iter().find(|c| c.role == role && c.state == ContainerState::Running)
    }

    fn nm_pid(&self, node: usize) -> Option<u32> {
        let name = format!("node-{node}");
        self.cluster.nodes.iter().find(|(n, _)| *n == name).map(|(_, c)| c.id())
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        self.cluster.dir.join(format!("node-{node}"))
    }

    /// The process groups of the containers node `node` runs, from its own table.
    fn containers_on(&self, node: usize) -> Vec<u32> {
        let pids = samza_scheduler::nm::running_pids(&self.node_dir(node));
        self.pids.lock().unwrap().extend(&pids);
        pids
    }

    fn signal_group(pid: u32, sig: i32) {
        // SAFETY: kill has no memory effects; `pid` leads a process group this run's cluster started.
        unsafe { libc::kill(-(pid as i32), sig) };
    }

    fn signal(pid: u32, sig: i32) {
        // SAFETY: as above, a daemon this run started.
        unsafe { libc::kill(pid as i32, sig) };
    }

    /// Injects `fault`; returns what undoes it and when, or a note when it
    /// found nothing to break.
    fn start(&mut self, fault: Fault) -> Result<(String, Option<(Duration, Undo)>), String> {
        let none = |what: &str| Err(format!("nothing to break: {what}"));
        match fault {
            Fault::KillContainer { job, n } => {
                let Some(pid) = self.running(job, Role::Container(n)).and_then(|c| c.pid) else {
                    return none("the container is not running");
                };
                Self::signal_group(pid, libc::SIGKILL);
                Ok((format!("pid {pid}"), None))
            }
            Fault::KillCoordinator { job } => {
                let Some(pid) = self.running(job, Role::Coordinator).and_then(|c| c.pid) else {
                    return none("no coordinator running");
                };
                Self::signal_group(pid, libc::SIGKILL);
                Ok((format!("pid {pid}"), None))
            }
            Fault::KillNodeManager { pick, containers, down_ms } => {
                // With its containers: a node that runs some.
                let node =
                    if containers { self.pick_node(pick, &[1, 2, 3]) } else { 1 + (pick % 3) as usize };
                let pids = self.containers_on(node);
                let Some(nm) = self.nm_pid(node) else { return none("no such node manager") };
                Self::signal(nm, libc::SIGKILL);
                if containers {
                    for p in &pids {
                        Self::signal_group(*p, libc::SIGKILL);
                    }
                }
                let what = format!("node-{node}, {} containers", pids.len());
                Ok((what, Some((Duration::from_millis(down_ms), Undo::StartNode(node)))))
            }
            Fault::KillResourceManager { down_ms } => {
                let _ = self.cluster.rm.kill();
                let _ = self.cluster.rm.wait();
                Ok((String::new(), Some((Duration::from_millis(down_ms), Undo::RestartRm))))
            }
            Fault::PauseNode { pick, ms } => {
                let node = self.pick_node(pick, &[1, 2, 3]);
                let Some(nm) = self.nm_pid(node) else { return none("no such node manager") };
                let pids = self.containers_on(node);
                Self::signal(nm, libc::SIGSTOP);
                for p in &pids {
                    Self::signal_group(*p, libc::SIGSTOP);
                }
                let what = format!("node-{node}, {} containers", pids.len());
                Ok((what, Some((Duration::from_millis(ms), Undo::Continue(nm, pids)))))
            }
            Fault::CutHost { pick, ms } => {
                // Host 1 holds the bridge (and the resource manager): hosts 2 and 3.
                let host = self.pick_node(pick, &[2, 3]);
                self.net.cut(host).map_err(|e| format!("cut: {e:#}"))?;
                let what = format!("host {host}, {} containers", self.containers_on(host).len());
                Ok((what, Some((Duration::from_millis(ms), Undo::Heal(host)))))
            }
            Fault::DiskFull { pick, ms } => {
                let node = self.pick_node(pick, &[1, 2, 3]);
                let filled = self.disks[node - 1].fill();
                let what = format!(
                    "node-{node}, {} containers, {} MiB written",
                    self.containers_on(node).len(),
                    filled >> 20
                );
                Ok((what, Some((Duration::from_millis(ms), Undo::FreeDisk(node)))))
            }
        }
    }

    /// One of `among`, by `pick`: among those that run job containers when
    /// any does (a fault there has something to break).
    fn pick_node(&self, pick: u64, among: &[usize]) -> usize {
        let busy: Vec<usize> = among.iter().copied().filter(|n| !self.containers_on(*n).is_empty()).collect();
        let from = if busy.is_empty() { among } else { &busy };
        from[(pick % from.len() as u64) as usize]
    }

    /// Undoes a fault: the node or resource manager restarted, the node
    /// continued, the host reconnected, the disk freed.
    fn undo(&mut self, undo: Undo) -> Result<(), String> {
        match undo {
            Undo::StartNode(node) => {
                self.cluster.start_node(&format!("node-{node}")).map_err(|e| format!("restart: {e:#}"))
            }
            Undo::RestartRm => self.cluster.restart_rm().map_err(|e| format!("restart: {e:#}")),
            Undo::Continue(nm, pids) => {
                for p in &pids {
                    Self::signal_group(*p, libc::SIGCONT);
                }
                Self::signal(nm, libc::SIGCONT);
                Ok(())
            }
            Undo::Heal(host) => self.net.heal(host).map_err(|e| format!("heal: {e:#}")),
            Undo::FreeDisk(node) => {
                self.disks[node - 1].free();
                Ok(())
            }
        }
    }
}

/// What undoes a fault.
enum Undo {
    StartNode(usize),
    RestartRm,
    Continue(u32, Vec<u32>),
    Heal(usize),
    FreeDisk(usize),
}

/// Every task's progress, read from the jobs' checkpoint streams as it is
/// written (uncommitted too: a reader need not wait for a dead writer's
/// successor): a task is processing while its checkpointed offsets keep
/// advancing.
struct Progress {
    readers: Vec<(usize, samza_log::reader::PartitionReader)>,
    /// (job, task) -> the sum of its checkpointed offsets, and when it last grew.
    tasks: HashMap<(usize, String), (u64, Instant)>,
}

/// A task whose offsets have not grown for this long is not processing
/// (commits come every 500 ms while page views flow to every partition).
const STALL: Duration = Duration::from_millis(1_500);
/// Every task processing for this long, after a fault is undone: recovered.
const STABLE: Duration = Duration::from_secs(3);

impl Progress {
    fn open(log: &Log) -> anyhow::Result<Progress> {
        let mut readers = Vec::new();
        for (job, (name, ..)) in JOBS.iter().enumerate() {
            let s = log.stream(&format!("__samza_checkpoint_{name}"))?;
            for p in 0..s.partitions() {
                readers.push((job, s.reader(p, samza_log::StartAt::Oldest)?.read_uncommitted()));
            }
        }
        Ok(Progress { readers, tasks: HashMap::new() })
    }

    fn poll(&mut self) {
        for (job, r) in &mut self.readers {
            while let Ok(c) = r.read(1 << 20) {
                if c.is_empty() {
                    break;
                }
                for rec in c.records().flatten() {
                    let task = String::from_utf8_lossy(rec.key.unwrap_or_default()).into_owned();
                    let Ok(cp) = serde_json::from_slice::<serde_json::Value>(rec.value.unwrap_or_default())
                    else {
                        continue;
                    };
                    let sum: u64 = cp["offsets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e["offset"].as_u64())
                        .sum();
                    let e = self.tasks.entry((*job, task)).or_insert((0, Instant::now()));
                    if sum > e.0 || e.0 == 0 {
                        *e = (sum, Instant::now());
                    }
                }
            }
        }
    }

    /// Whether every task of both jobs (4 each) advanced within `STALL`.
    fn all_processing(&self) -> bool {
        self.tasks.len() == 8 && self.tasks.values().all(|(_, t)| t.elapsed() < STALL)
    }
}

fn job_file(dir: &Path, bin: &Path, job: usize, guarantee: &str) -> String {
    let (name, class, input) = JOBS[job];
    let binary = bin.join(name);
    let log = dir.join("log");
    let common = format!(
        r#"[job]
name = "{name}"
container-count = {CONTAINERS}
shutdown-timeout-ms = 5000

[package]
binary = "{binary}"

[task]
class = "{class}"
inputs = ["log.{input}"]
commit-ms = 500
window-ms = 500
processing-guarantee = "{guarantee}"

[systems.log]
type = "embedded-log"
dir = "{log}"

[cluster]
container-memory-mb = 512
host-affinity-timeout-ms = 1000
retry-count = 1000000
"#,
        binary = binary.display(),
        log = log.display(),
    );
    match job {
        0 => format!(
            "{common}\n[systems.log.streams.page-views-by-user]\npartitions = 4\n\n[params]\noutput = \"log.page-views-by-user\"\n"
        ),
        _ => format!(
            r#"{common}
[systems.log.streams.user-counts]
partitions = 4

[stores.counts]
engine = "rocksdb"
changelog = "log.page-view-counter-counts-changelog"
key-serde = "string"
msg-serde = "i64"

[stores.emits]
engine = "rocksdb"
changelog = "log.page-view-counter-emits-changelog"

[params]
output = "log.user-counts"
"#
        ),
    }
}

fn submit(c: &LocalCluster, job_toml: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin_dir().join("samza-run"))
        .arg(job_toml)
        .args(["--rm", &c.rm_url, "--detach"])
        .env(samza_container::env::TOKEN, &c.token)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "samza-run {}: {}",
        job_toml.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn bin_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default()
}

/// Feeds page views at `rate` per second until `stop`; returns the truth.
fn feed(
    log: Log,
    rate: u64,
    fed: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
) -> HashMap<String, i64> {
    let mut truth = HashMap::new();
    let mut p = log.stream("page-views").expect("page-views").producer();
    let start = Instant::now();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // As many as the rate allows by now, written in one batch.
        let due = (start.elapsed().as_millis() as u64 * rate / 1000).max(i);
        while i < due {
            let user = format!("user-{}", user_of(i, USERS));
            let time = 1_700_000_000_000 + i as i64;
            let v = format!(r#"{{"user":"{user}","page":"/page-{}","time":{time},"i":{i}}}"#, i % 50);
            p.send(None, None, Some(v.as_bytes()), time, &[]).expect("append a page view");
            *truth.entry(user).or_default() += 1;
            i += 1;
        }
        p.flush().expect("flush page views");
        fed.store(i, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
    }
    truth
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() -> ExitCode {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("samza-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(why) = TestNet::available() {
        eprintln!("samza-chaos: builds a network of three hosts, which {why}");
        return ExitCode::FAILURE;
    }
    let dir = o
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("samza-chaos-{}", std::process::id())));
    let r = run(&o, &dir);
    if !o.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("samza-chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(o: &Opts, dir: &Path) -> anyhow::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let bin = bin_dir();
    let log = Log::open(dir.join("log"))?;
    log.create_stream("page-views", &StreamConfig::with_partitions(4))?;
    log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4))?;

    let net = TestNet::create(&format!("sc{}", std::process::id() % 100_000), 3)?;
    net.enter(1)?;
    let disks = (1..=3)
        .map(|n| SmallDisk::mount(&dir.join(format!("cluster/node-{n}/state"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The coordinators are killed again and again: never count that against the job.
    std::env::set_var(samza_container::env::RM_MAX_ATTEMPTS, "1000000");
    let places = (1..=3).map(|n| Place { netns: net.netns(n).to_string(), addr: net.addr(n) }).collect();
    let cluster = LocalCluster::start_on(&bin, &dir.join("cluster"), places, NODE_TIMEOUT_MS, 1000)?;
    let mut c = Chaos {
        cluster,
        disks,
        net,
        dir: dir.clone(),
        apps: [String::new(), String::new()],
        pids: Mutex::new(BTreeSet::new()),
    };
    for (job, (name, ..)) in JOBS.iter().enumerate() {
        let jd = dir.join("jobs").join(name);
        std::fs::create_dir_all(&jd)?;
        std::fs::write(jd.join("job.toml"), job_file(&dir, &bin, job, &o.guarantee))?;
        c.apps[job] = submit(&c.cluster, &jd.join("job.toml"))?;
    }
    println!(
        "samza-chaos: seed {}, {} s, {} page views/s, {}; applications {} and {} on three hosts ({})",
        o.seed,
        o.duration.as_secs(),
        o.rate,
        o.guarantee,
        c.apps[0],
        c.apps[1],
        c.dir.display()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let fed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let feeder = {
        let (log, fed, stop) = (log.clone(), fed.clone(), stop.clone());
        let rate = o.rate;
        std::thread::spawn(move || feed(log, rate, fed, stop))
    };
    let start = Instant::now();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    // Throughput: what each job commits, from its checkpoint streams (it
    // never goes back, whoever owns a task, so the rate is what was
    // processed for good).
    let sampler = {
        let (samples, sampling, fed, log) = (samples.clone(), sampling.clone(), fed.clone(), log.clone());
        std::thread::spawn(move || {
            let mut progress: Option<Progress> = None;
            let mut prev: Option<Sample> = None;
            while sampling.load(Ordering::Relaxed) {
                if progress.is_none() {
                    progress = Progress::open(&log).ok();
                }
                let mut s = Sample {
                    t_ms: start.elapsed().as_millis() as u64,
                    fed: fed.load(Ordering::Relaxed),
                    ..Sample::default()
                };
                if let Some(p) = progress.as_mut() {
                    p.poll();
                    for ((job, _), (sum, _)) in &p.tasks {
                        s.committed[*job] += sum;
                    }
                }
                if let Some(p) = &prev {
                    let dt = (s.t_ms - p.t_ms).max(1) as f64 / 1000.0;
                    for job in 0..2 {
                        s.rate[job] = s.committed[job].saturating_sub(p.committed[job]) as f64 / dt;
                    }
                }
                samples.lock().unwrap().push(s.clone());
                prev = Some(s);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    // Both jobs processing before the first fault.
    let mut faults: Vec<FaultRecord> = Vec::new();
    let begun = Instant::now();
    let mut progress = loop {
        match Progress::open(&log) {
            Ok(p) => break p,
            Err(e) if begun.elapsed() > RECOVERY_LIMIT => anyhow::bail!("the jobs never checkpointed: {e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    loop {
        progress.poll();
        if progress.all_processing() {
            break;
        }
        anyhow::ensure!(
            begun.elapsed() < RECOVERY_LIMIT,
            "the jobs never ran: {:?} / {:?}",
            c.info(0).map(|i| i.events),
            c.info(1).map(|i| i.events)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut rng = Rng(o.seed);
    while start.elapsed() < o.duration {
        let fault = Fault::draw(&mut rng);
        let pause = rng.ms(1_000, 5_000);
        let at = Instant::now();
        let at_ms = start.elapsed().as_millis() as u64;
        println!("[{:>6.1}s] {}", at_ms as f64 / 1000.0, fault.describe());
        let (mut undo, mut note, target) = match c.start(fault) {
            Ok((target, u)) => (u.map(|(after, u)| (at + after, u)), None, target),
            Err(n) => (None, Some(n), String::new()),
        };
        if !target.is_empty() {
            println!("          ({target})");
        }
        let limit =
            at + undo.as_ref().map_or(Duration::ZERO, |(when, _)| when.duration_since(at)) + RECOVERY_LIMIT;
        // Recovery: the start of the streak of "every task processing" that
        // lasts; it may begin during the fault (a failover) or after it is
        // undone, and must hold for `STABLE` after the undo.
        let mut undone_at = Instant::now();
        let mut streak: Option<Instant> = None;
        let recovery = loop {
            if undo.as_ref().is_some_and(|(when, _)| Instant::now() >= *when) {
                let (_, u) = undo.take().unwrap();
                if let Err(e) = c.undo(u) {
                    note = Some(e);
                }
                undone_at = Instant::now();
            }
            progress.poll();
            if !progress.all_processing() {
                streak = None;
            } else if streak.is_none() {
                streak = Some(Instant::now());
            }
            if let Some(s) = streak.filter(|_| undo.is_none()) {
                if s.elapsed() >= STABLE && undone_at.elapsed() >= STABLE {
                    break Some(s.saturating_duration_since(at));
                }
            }
            if Instant::now() > limit {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // What runs now, for the check that nothing is left at the end.
        for node in 1..=3 {
            c.containers_on(node);
        }
        let say = note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
        match recovery {
            Some(d) => println!("          every task processing again after {:.1} s{say}", d.as_secs_f64()),
            None => println!("          NOT recovered within {} s{say}", RECOVERY_LIMIT.as_secs()),
        }
        faults.push(FaultRecord {
            at_ms,
            fault,
            target,
            note,
            recovery_ms: recovery.map(|d| d.as_millis() as u64),
        });
        if recovery.is_none() {
            if let Some((_, u)) = undo.take() {
                let _ = c.undo(u);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(pause));
    }

    // The end: the feed stops; the counts must come to the truth.
    stop.store(true, Ordering::Relaxed);
    let truth = feeder.join().map_err(|_| anyhow::anyhow!("the feeder panicked"))?;
    let events = fed.load(Ordering::Relaxed);
    let exactly = o.guarantee == "exactly-once";
    let fed_at = Instant::now();
    let mut violations: Vec<String>;
    loop {
        let u = verify::updates(&log, "user-counts").unwrap_or_default();
        violations =
            if exactly { verify::exactly_once(&u, &truth) } else { verify::at_least_once(&u, &truth) };
        if violations.is_empty() || fed_at.elapsed() > Duration::from_secs(180) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let settle = fed_at.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    violations.extend(
        verify::repartitioned(&log, "page-views-by-user", events, exactly).unwrap_or_else(|e| vec![e]),
    );
    for (name, ..) in JOBS {
        violations.extend(verify::checkpoints(&log, name).unwrap_or_else(|e| vec![e]));
    }
    let end_state: Vec<String> = (0..2)
        .map(|j| {
            c.info(j)
                .map(|i| format!("{}: {}", JOBS[j].0, samza_scheduler::rm::state_word(i.state)))
                .unwrap_or_default()
        })
        .collect();

    // Nothing of the cluster is left once it is stopped.
    {
        let mut pids = c.pids.lock().unwrap();
        pids.insert(c.cluster.rm.id());
        pids.extend(c.cluster.nodes.iter().map(|(_, ch)| ch.id()));
    }
    for node in 1..=3 {
        c.containers_on(node);
    }
    c.cluster.stop();
    let pids: Vec<u32> = c.pids.lock().unwrap().iter().copied().collect();
    let waited = Instant::now();
    let mut left: Vec<u32> =
        pids.iter().copied().filter(|p| samza_scheduler::nm::process_running(*p)).collect();
    while !left.is_empty() && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        left.retain(|p| samza_scheduler::nm::process_running(*p));
    }
    for p in &left {
        violations.push(format!("process {p} of the cluster is left after it stopped"));
    }

    // The report.
    let mut recoveries: Vec<u64> = faults.iter().filter_map(|f| f.recovery_ms).collect();
    recoveries.sort_unstable();
    let unrecovered = faults.iter().filter(|f| f.recovery_ms.is_none()).count();
    if unrecovered > 0 {
        violations
            .push(format!("{unrecovered} fault(s) not recovered from within {} s", RECOVERY_LIMIT.as_secs()));
    }
    let pass = violations.is_empty();
    let samples = samples.lock().unwrap().clone();
    println!();
    println!("faults ({}):", faults.len());
    let mut by_kind: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for f in &faults {
        by_kind.entry(f.fault.kind()).or_default().extend(f.recovery_ms);
        println!(
            "  {:>7.1}s  {:<62} {:<36} {}",
            f.at_ms as f64 / 1000.0,
            f.fault.describe(),
            f.target,
            f.recovery_ms.map_or("NOT RECOVERED".to_string(), |ms| format!(
                "recovered in {:.1} s",
                ms as f64 / 1000.0
            ))
        );
    }
    println!(
        "recovery (fault -> every task processing again): p50 {:.1} s, p99 {:.1} s, max {:.1} s over {} faults",
        percentile(&recoveries, 0.5) as f64 / 1000.0,
        percentile(&recoveries, 0.99) as f64 / 1000.0,
        recoveries.last().copied().unwrap_or(0) as f64 / 1000.0,
        recoveries.len()
    );
    for (kind, r) in &by_kind {
        let mut r = r.clone();
        r.sort_unstable();
        println!(
            "  {kind:<36} {} x, p50 {:.1} s, max {:.1} s",
            r.len(),
            percentile(&r, 0.5) as f64 / 1000.0,
            r.last().copied().unwrap_or(0) as f64 / 1000.0
        );
    }
    println!("throughput (input offsets committed per second over each 10 s: repartition / count):");
    for w in samples.windows(11).step_by(10) {
        let (a, b) = (&w[0], &w[10]);
        let dt = (b.t_ms - a.t_ms).max(1) as f64 / 1000.0;
        let rate = |job: usize| b.committed[job].saturating_sub(a.committed[job]) as f64 / dt;
        println!(
            "  {:>6.0}s  fed {:>9}  committed {:>9} / {:>9}  {:>7.0} / {:>7.0} per s",
            b.t_ms as f64 / 1000.0,
            b.fed,
            b.committed[0],
            b.committed[1],
            rate(0),
            rate(1)
        );
    }
    println!(
        "{events} page views of {} users; counts settled {:.1} s after the feed stopped; {}",
        truth.len(),
        settle.as_secs_f64(),
        end_state.join(", ")
    );
    for v in violations.iter().take(50) {
        println!("VIOLATION: {v}");
    }
    println!("verdict: {} (seed {})", if pass { "PASS" } else { "FAIL" }, o.seed);

    if let Some(path) = &o.report {
        let report = serde_json::json!({
            "seed": o.seed,
            "duration_s": o.duration.as_secs(),
            "rate": o.rate,
            "guarantee": o.guarantee,
            "events": events,
            "users": truth.len(),
            "faults": faults.iter().map(|f| serde_json::json!({
                "at_ms": f.at_ms,
                "kind": f.fault.kind(),
                "fault": f.fault.describe(),
                "target": f.target,
                "note": f.note,
                "recovery_ms": f.recovery_ms,
            })).collect::<Vec<_>>(),
            "recovery_ms": {
                "count": recoveries.len(),
                "p50": percentile(&recoveries, 0.5),
                "p99": percentile(&recoveries, 0.99),
                "max": recoveries.last().copied().unwrap_or(0),
            },
            "throughput": samples.iter().map(|s| serde_json::json!({
                "t_ms": s.t_ms, "fed": s.fed,
                "committed": s.committed, "committed_per_s": s.rate,
            })).collect::<Vec<_>>(),
            "settle_ms": settle.as_millis() as u64,
            "end_state": end_state,
            "violations": violations,
            "verdict": if pass { "PASS" } else { "FAIL" },
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        println!("report: {}", path.display());
    }
    drop(c);
    Ok(pass)
}
