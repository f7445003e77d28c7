//! Benchmark of the cluster scheduler on a local cluster (a `samza-rm` and
//! 3 `samza-nm` processes); prints figures, asserts nothing.
//!
//! 1. Submit -> first message processed: `samza-run job.toml --detach` of the
//!    pass-through job until its first output record, cold (no node has the
//!    package) and warm (a resubmission: the nodes have it cached).
//! 2. Node kill -> every affected partition processing again elsewhere: with
//!    input flowing, SIGKILL a node manager and its containers; the time until
//!    the output of each partition the dead node ran grows again. With the
//!    defaults (heartbeat 1 s, node lost after 10 s) and tuned (`--tuned`:
//!    heartbeat 250 ms, lost after 1.5 s).
//!
//! 3. The faults that leave a container running without its node, each on a
//!    fresh cluster: a node manager killed alone (kill -9), a node paused
//!    (SIGSTOP of its node manager and containers), a host cut off the network
//!    (three hosts in network namespaces, root only): the time until every
//!    partition of the node's containers is processed by their successors,
//!    and whether the old container ended.
//!
//! ```text
//! cargo build --release --workspace
//! target/release/cluster-bench [--tuned]
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use samza_log::{Log, StreamConfig};
use samza_scheduler::cli::{LocalCluster, Place};
use samza_scheduler::client::Client;
use samza_scheduler::netns::TestNet;
use samza_scheduler::nm::process_running as alive;
use samza_scheduler::proto::*;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn end_offsets(log: &Log, stream: &str) -> Vec<u64> {
    match log.stream(stream) {
        Ok(s) => (0..s.partitions()).map(|p| s.partition_info(p).map(|i| i.upcoming).unwrap_or(0)).collect(),
        Err(_) => vec![],
    }
}

fn submit(bin: &Path, job: &Path, c: &LocalCluster) -> anyhow::Result<String> {
    let out = Command::new(bin.join("samza-run"))
        .arg(job)
        .args(["--rm", &c.rm_url, "--detach"])
        .env(samza_container::env::TOKEN, &c.token)
        .output()?;
    anyhow::ensure!(out.status.success(), "submit: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

fn wait_output(log: &Log, stream: &str, start: Instant) -> anyhow::Result<Duration> {
    loop {
        if end_offsets(log, stream).iter().sum::<u64>() > 0 {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(120), "no output within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() -> anyhow::Result<()> {
    let tuned = std::env::args().any(|a| a == "--tuned");
    let (heartbeat_ms, timeout_ms) = if tuned { (250, 1500) } else { (1000, 10_000) };
    let bin = std::env::current_exe()?.parent().unwrap().to_path_buf();
    let dir = PathBuf::from("target/cluster-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let log = Log::open(dir.join("log"))?;
    log.create_stream("in", &StreamConfig::with_partitions(4))?;
    println!("# cluster benchmark: 3 nodes, heartbeat {heartbeat_ms} ms, node lost after {timeout_ms} ms");
    let mut cluster = LocalCluster::start_with(&bin, &dir.join("cluster"), 3, timeout_ms, heartbeat_ms)?;

    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(&log, &stop);
    let job = |name: &str, out: &str| write_job(&bin, &dir, name, out);

    // 1. Submit -> first message, cold then warm.
    let t = Instant::now();
    let cold = submit(&bin, &job("cold", "out-cold")?, &cluster)?;
    let first_cold = wait_output(&log, "out-cold", t)?;
    let rm = Client::new(&cluster.rm_url, &cluster.token);
    let _: AppInfo = rm.post(&format!("/v1/apps/{cold}/kill"), &serde_json::json!({}))?;
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let app = submit(&bin, &job("warm", "out")?, &cluster)?;
    let first_warm = wait_output(&log, "out", t)?;
    println!(
        "submit -> first message processed: {:.2} s cold (package uploaded, hashed and fetched by the nodes), {:.2} s warm (resubmission)",
        first_cold.as_secs_f64(),
        first_warm.as_secs_f64()
    );

    // 2. Kill the node running container 0, with its containers.
    std::thread::sleep(Duration::from_secs(3));
    let rm = Client::new(&cluster.rm_url, &cluster.token);
    failover(&rm, &log, &app, &mut cluster, Fault::Node, None)?;
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap()?;
    let info: AppInfo = rm.post(&format!("/v1/apps/{app}/kill"), &serde_json::json!({}))?;
    std::thread::sleep(Duration::from_secs(3));
    for c in info.containers.iter().filter(|c| !c.state.is_done()) {
        if let Some(pid) = c.pid {
            // SAFETY: a container this benchmark's cluster started.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
    cluster.stop();
    drop(rm);

    // 3. The faults that leave a container running without its node: each on
    //    a fresh cluster, the last on three hosts (network namespaces).
    for fault in [Fault::NodeManager, Fault::Pause, Fault::Cut] {
        if let Err(e) = fault_run(&bin, &dir, fault, heartbeat_ms, timeout_ms) {
            println!("{}: not measured: {e:#}", fault.name());
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// SIGKILL of a node manager and its containers.
    Node,
    /// SIGKILL of a node manager alone: its containers keep running.
    NodeManager,
    /// SIGSTOP of a node manager and its containers, SIGCONT afterwards.
    Pause,
    /// The node's host cut off the network (link down), reconnected afterwards.
    Cut,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Node => "node kill (node manager and containers, kill -9)",
            Fault::NodeManager => "node manager kill -9 alone (containers left running)",
            Fault::Pause => "node paused (SIGSTOP of node manager and containers)",
            Fault::Cut => "host cut off the network (three hosts, link down)",
        }
    }
}

/// A fresh cluster (on three hosts for `Fault::Cut`), the pass-through job
/// with input flowing, then `fault` on container 0's node.
fn fault_run(bin: &Path, dir: &Path, fault: Fault, heartbeat_ms: u64, timeout_ms: u64) -> anyhow::Result<()> {
    let dir = dir.join(format!("{fault:?}").to_lowercase());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let log = Log::open(dir.join("log"))?;
    log.create_stream("in", &StreamConfig::with_partitions(4))?;
    let net = match fault {
        Fault::Cut => {
            TestNet::available().map_err(|e| anyhow::anyhow!(e))?;
            let net = TestNet::create(&format!("szb{}", std::process::id() % 100_000), 3)?;
            net.enter(1)?;
            Some(net)
        }
        _ => None,
    };
    let mut cluster = match &net {
        Some(net) => {
            let places =
                (1..=3).map(|n| Place { netns: net.netns(n).to_string(), addr: net.addr(n) }).collect();
            LocalCluster::start_on(bin, &dir.join("cluster"), places, timeout_ms, heartbeat_ms)?
        }
        None => LocalCluster::start_with(bin, &dir.join("cluster"), 3, timeout_ms, heartbeat_ms)?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(&log, &stop);
    let job = write_job(bin, &dir, "failover", "out")?;
    let app = submit(bin, &job, &cluster)?;
    wait_output(&log, "out", Instant::now())?;
    std::thread::sleep(Duration::from_secs(3));
    let rm = Client::new(&cluster.rm_url, &cluster.token);
    let r = failover(&rm, &log, &app, &mut cluster, fault, net.as_ref());
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
    let _: Result<AppInfo, _> = rm.post(&format!("/v1/apps/{app}/kill"), &serde_json::json!({}));
    std::thread::sleep(Duration::from_secs(2));
    cluster.stop();
    drop(net);
    r
}

/// Applies `fault` to the node of container 0 and prints the time until
/// every partition it processed is processed again by its successor.
fn failover(
    rm: &Client,
    log: &Log,
    app: &str,
    cluster: &mut LocalCluster,
    fault: Fault,
    net: Option<&TestNet>,
) -> anyhow::Result<()> {
    let info: AppInfo = rm.get(&format!("/v1/apps/{app}"))?;
    let pick = |c: &&ContainerInfo| c.role == Role::Container(0) && c.state == ContainerState::Running;
    // On three hosts, host 1 holds the bridge: cut another.
    let old = match fault {
        Fault::Cut => info.containers.iter().filter(pick).find(|c| c.node != "node-1"),
        _ => info.containers.iter().find(pick),
    }
    .cloned()
    .ok_or_else(|| anyhow::anyhow!("container 0 is not running (or only on host 1)"))?;
    let victim = old.node.clone();
    let on_node: Vec<&ContainerInfo> =
        info.containers.iter().filter(|c| c.node == victim && c.state == ContainerState::Running).collect();
    let roles: Vec<String> =
        on_node.iter().filter(|c| c.role != Role::Coordinator).map(|c| c.role.to_string()).collect();
    // Partitions of the containers on that node: tasks are dealt round-robin over containers.
    let affected: Vec<usize> = (0..4).filter(|p| roles.contains(&((p % 2) as u32).to_string())).collect();
    let nm_pid = cluster.nodes.iter().find(|(n, _)| *n == victim).map(|(_, c)| c.id()).unwrap();
    let hit = Instant::now();
    let hit_ms = now_ms();
    // SAFETY: the node manager and containers this benchmark's cluster started.
    unsafe {
        match fault {
            Fault::Node => {
                libc::kill(nm_pid as i32, libc::SIGKILL);
                for c in &on_node {
                    libc::kill(-(c.pid.unwrap() as i32), libc::SIGKILL);
                }
            }
            Fault::NodeManager => {
                libc::kill(nm_pid as i32, libc::SIGKILL);
            }
            Fault::Pause => {
                libc::kill(nm_pid as i32, libc::SIGSTOP);
                for c in &on_node {
                    libc::kill(-(c.pid.unwrap() as i32), libc::SIGSTOP);
                }
            }
            Fault::Cut => {
                let host: usize = victim.strip_prefix("node-").unwrap_or("0").parse()?;
                net.expect("three hosts").cut(host)?;
            }
        }
    }
    // Where the output of the node's partitions stands once nothing on the
    // node writes any more: at once for a killed or paused node; once the old
    // container ended by its lease for a node manager killed alone or a host
    // cut off (their containers go on until then). Then the successors'
    // first output of each such partition.
    let old_pid = old.pid.unwrap();
    if matches!(fault, Fault::NodeManager | Fault::Cut) {
        while alive(old_pid) {
            anyhow::ensure!(hit.elapsed() < Duration::from_secs(60), "the old container 0 never ended");
            std::thread::sleep(Duration::from_millis(2));
        }
        println!(
            "{}: the old container 0 ended by its lease after {:.2} s",
            fault.name(),
            hit.elapsed().as_secs_f64()
        );
    } else {
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = end_offsets(log, "out");
    let mut resumed = vec![None; 4];
    while affected.iter().any(|p| resumed[*p].is_none()) {
        let now = end_offsets(log, "out");
        for p in &affected {
            if resumed[*p].is_none() && now[*p] > base[*p] {
                resumed[*p] = Some(hit.elapsed());
            }
        }
        anyhow::ensure!(hit.elapsed() < Duration::from_secs(120), "partitions {affected:?} did not resume");
        std::thread::sleep(Duration::from_millis(5));
    }
    let worst = affected.iter().filter_map(|p| resumed[*p]).max().unwrap();
    println!(
        "{} -> every affected partition ({affected:?}, on {victim}) processing again elsewhere: {:.2} s",
        fault.name(),
        worst.as_secs_f64()
    );
    let info: AppInfo = rm.get(&format!("/v1/apps/{app}"))?;
    if let Some(lost) = info.events.iter().find(|e| e.message.starts_with(&format!("node {victim} lost"))) {
        let to_lost = (lost.time_ms - hit_ms) as f64 / 1000.0;
        println!(
            "  of which fault -> node declared lost {to_lost:.2} s, lost -> processing again {:.2} s",
            worst.as_secs_f64() - to_lost
        );
    }
    // Undo what can be undone, so the old processes meet their fate (the
    // node manager ends what the resource manager no longer counts as its own).
    match fault {
        // SAFETY: as above.
        Fault::Pause => unsafe {
            for c in &on_node {
                libc::kill(-(c.pid.unwrap() as i32), libc::SIGCONT);
            }
            libc::kill(nm_pid as i32, libc::SIGCONT);
        },
        Fault::Cut => {
            let host: usize = victim.strip_prefix("node-").unwrap_or("0").parse()?;
            net.expect("three hosts").heal(host)?;
        }
        _ => {}
    }
    if fault == Fault::Pause {
        let t = Instant::now();
        while alive(old_pid) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        match alive(old_pid) {
            false => println!("  the old container 0 ended {:.2} s after SIGCONT", t.elapsed().as_secs_f64()),
            true => println!("  the old container 0 STILL RUNS 10 s after SIGCONT"),
        }
    }
    Ok(())
}

/// Input keeps flowing: 4 partitions, about 4000 messages/s.
fn feed(log: &Log, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let (log, stop) = (log.clone(), stop.clone());
    std::thread::spawn(move || -> anyhow::Result<()> {
        let s = log.stream("in")?;
        let mut p = s.producer();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..40 {
                let k = format!("k{i}");
                p.send(Some((i % 4) as u32), Some(k.as_bytes()), Some(b"v"), i as i64, &[])?;
                i += 1;
            }
            p.flush()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    })
}

fn write_job(bin: &Path, dir: &Path, name: &str, out: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"[job]
name = "{name}"
container-count = 2
shutdown-timeout-ms = 2000
[package]
binary = "{}"
[task]
class = "pass-through"
inputs = ["log.in"]
commit-ms = 100
[systems.log]
type = "embedded-log"
dir = "log"
[systems.log.streams.{out}]
partitions = 4
[cluster]
container-memory-mb = 1024
host-affinity-timeout-ms = 0
[params]
output = "log.{out}"
"#,
            bin.join("pass-through").display()
        ),
    )?;
    Ok(path)
}
