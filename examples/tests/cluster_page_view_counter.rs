//! The page-view counter on a local cluster (a resource manager and 3 node
//! managers, real processes on loopback): kill -9 a node manager and its
//! containers while events flow; the node is declared lost within the node
//! timeout, its containers run again on the other nodes (restoring their
//! stores from the changelog), `samza-run status` shows the restart, and
//! no count ends below the truth.

mod common;

use std::collections::HashMap;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin_dir, counter_job, latest, produce};
use samza_log::{Log, StreamConfig};
use samza_scheduler::cli::LocalCluster;
use samza_scheduler::client::Client;
use samza_scheduler::proto::*;

#[test]
fn node_killed_mid_stream_its_containers_restart_elsewhere_and_no_count_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4)).unwrap();
    let mut truth: HashMap<String, i64> = HashMap::new();
    const N: u64 = 40_000;
    produce(&log, 0, N, 300, &mut truth);
    counter_job()
        .set("job.shutdown-timeout-ms", 5000)
        .set("task.window-ms", 500)
        .set("cluster.container-memory-mb", 512)
        .set("cluster.host-affinity-timeout-ms", 1000)
        .set("params.throttle-us", 500000)
        .write(dir);

    // Dropped before `tmp`: stops its containers and daemons first.
    let c = LocalCluster::start(&bin_dir(), &dir.join("cluster"), 3, 10_000).unwrap();
    let rm = Client::new(&c.rm_url, &c.token);
    let app = common::submit(&c, dir);
    let get = || rm.get::<AppInfo>(&format!("/v1/apps/{app}")).unwrap();

    // Wait until both containers count, then kill the node of container 0
    // (not the coordinator's node, when they differ, to see a pure node loss
    // of job containers; either way the job must finish).
    let start = Instant::now();
    let victim = loop {
        assert!(start.elapsed() < Duration::from_secs(60), "containers never started: {:#?}", get().events);
        let info = get();
        let running: Vec<&ContainerInfo> = info
            .containers
            .iter()
            .filter(|c| c.role != Role::Coordinator && c.state == ContainerState::Running)
            .collect();
        if running.len() == 2
            && log.stream("counts-changelog").is_ok()
            && latest(&log, "counts-changelog").len() > 20
        {
            break running.iter().find(|c| c.role == Role::Container(0)).unwrap().node.clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let info = get();
    let nm = c.nodes.iter().find(|(n, _)| *n == victim).map(|(_, ch)| ch.id()).unwrap();
    let killed_at = Instant::now();
    // SAFETY: the node manager and the containers on it were started by this test's cluster.
    unsafe {
        libc::kill(nm as i32, libc::SIGKILL);
        for x in info.containers.iter().filter(|x| x.node == victim && x.state == ContainerState::Running) {
            libc::kill(-(x.pid.unwrap() as i32), libc::SIGKILL);
        }
    }

    // The node is lost within the timeout (10 s after its last heartbeat, at most 1 s before the kill).
    let lost = loop {
        let nodes: Vec<NodeInfo> = rm.get("/v1/nodes").unwrap();
        if nodes.iter().any(|n| n.node == victim && n.state == NodeState::Lost) {
            break killed_at.elapsed();
        }
        assert!(killed_at.elapsed() < Duration::from_secs(15), "node {victim} not declared lost: {nodes:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(lost <= Duration::from_millis(11_500), "lost after {lost:?}");
    let info = loop {
        let info = get();
        let replaced = info
            .containers
            .iter()
            .filter(|x| {
                x.role == Role::Container(0) && x.state == ContainerState::Running && x.node != victim
            })
            .count();
        if replaced == 1 || info.state.is_final() {
            break info;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(40),
            "container 0 not restarted: {:#?}",
            info.events
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        info.containers
            .iter()
            .any(|x| x.role == Role::Container(0) && x.node == victim && x.state == ContainerState::Lost),
        "the killed container is reported LOST: {:#?}",
        info.containers
    );
    let status = Command::new(bin_dir().join("samza-run"))
        .args(["status", &app, "--rm", &c.rm_url])
        .env(samza_container::env::TOKEN, &c.token)
        .output()
        .unwrap();
    let text = String::from_utf8(status.stdout).unwrap();
    assert!(text.contains(&format!("node {victim} lost")) && text.contains("LOST"), "{text}");
    assert!(text.contains("(not its last node"), "the restart is shown with where it went: {text}");

    // The job finishes; every user's stored count is at least the truth.
    let start = Instant::now();
    let mut total = 0;
    let done = loop {
        let info = get();
        if info.state.is_final() {
            break info;
        }
        // The job's processed total never goes down across the replacement.
        if let Ok(m) = rm.get::<JobMetrics>(&format!("/v1/apps/{app}/metrics")) {
            assert!(
                m.processed >= total,
                "the job's processed total went down from {total} to {}",
                m.processed
            );
            total = m.processed;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "job did not finish: {:#?}", info.events);
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    let restarts = done.coordinator_state.as_ref().and_then(|s| s.containers.get(&0)).map(|s| s.restarts);
    let changelog = latest(&log, "counts-changelog");
    assert_eq!(changelog.len(), truth.len(), "every user counted");
    for (user, n) in &truth {
        let stored = i64::from_be_bytes(changelog[user].as_slice().try_into().unwrap());
        assert!(stored >= *n, "{user}: count {stored} is below the truth {n} (restarts {restarts:?})");
    }
}
