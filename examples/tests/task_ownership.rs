//! One owner per task (DESIGN invariant 9) under the faults that leave a
//! container running without its node: the page-view counter on a local
//! cluster (a resource manager and 3 node managers on loopback, real
//! processes), while events flow,
//!
//! - a node manager killed with kill -9 alone, its containers left running;
//! - a node manager and its containers stopped (SIGSTOP) for longer than the
//!   node-loss timeout, then continued.
//!
//! Each checks, from the streams afterwards, what must never happen (a
//! checkpoint written by an older generation after a newer one, a
//! checkpointed offset going backwards, an emitted count going down), that
//! the old container stopped by itself (lease) or was ended by its node
//! manager before or as soon as its successor ran, that no count ends below
//! the truth, and that no process of the cluster is left afterwards.

mod common;
#[path = "common/ownership.rs"]
mod ownership;

use std::collections::{BTreeSet, HashMap};

use std::time::{Duration, Instant};

use common::{bin_dir, counter_job, produce};
use ownership::*;
use samza_log::{Log, StreamConfig};
use samza_scheduler::cli::LocalCluster;
use samza_scheduler::client::Client;
use samza_scheduler::proto::*;

const NODE_TIMEOUT_MS: u64 = 6_000;
const USERS: u64 = 300;
const EVENTS: u64 = 40_000;

struct Run {
    cluster: LocalCluster,
    log: Log,
    truth: HashMap<String, i64>,
    app: String,
    /// Kept last: dropped after the cluster.
    tmp: tempfile::TempDir,
}

impl Run {
    fn start() -> Run {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = Log::open(dir.join("log")).unwrap();
        log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4)).unwrap();
        let mut truth = HashMap::new();
        produce(&log, 0, EVENTS, USERS, &mut truth);
        counter_job()
            .set("job.shutdown-timeout-ms", 5000)
            .set("task.window-ms", 300)
            .unset("systems.log.streams.user-counts.compacted")
            .set("cluster.container-memory-mb", 512)
            .set("cluster.host-affinity-timeout-ms", 500)
            .set("params.throttle-us", 700000)
            .write(dir);
        let cluster = LocalCluster::start(&bin_dir(), &dir.join("cluster"), 3, NODE_TIMEOUT_MS).unwrap();
        let app = common::submit(&cluster, dir);
        Run { cluster, log, truth, app, tmp }
    }

    fn rm(&self) -> Client {
        Client::new(&self.cluster.rm_url, &self.cluster.token)
    }

    fn info(&self) -> AppInfo {
        self.rm().get(&format!("/v1/apps/{}", self.app)).unwrap()
    }

    /// Both job containers counting; returns container 0.
    fn wait_counting(&self) -> ContainerInfo {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "containers never started: {:#?}",
                self.info().events
            );
            let info = self.info();
            let running: Vec<&ContainerInfo> = info
                .containers
                .iter()
                .filter(|c| c.role != Role::Coordinator && c.state == ContainerState::Running)
                .collect();
            // Every task has checkpointed: each container owns and writes.
            let cp = "__samza_checkpoint_page-view-counter";
            let checkpointed = match self.log.stream(cp) {
                Ok(_) => {
                    history(&self.log, cp).concat().into_iter().map(|(k, _)| k).collect::<BTreeSet<_>>().len()
                }
                Err(_) => 0,
            };
            if running.len() == 2 && checkpointed == 4 {
                return running.iter().find(|c| c.role == Role::Container(0)).map(|c| (*c).clone()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn nm_pid(&self, node: &str) -> u32 {
        self.cluster.nodes.iter().find(|(n, _)| n == node).map(|(_, c)| c.id()).unwrap()
    }

    /// Waits until container 0 runs again in a container other than `old`;
    /// `while_waiting` runs every 50 ms. Returns the successor.
    fn wait_successor(&self, old: &ContainerInfo, mut while_waiting: impl FnMut()) -> ContainerInfo {
        let start = Instant::now();
        loop {
            let info = self.info();
            if let Some(c) = info.containers.iter().find(|c| {
                c.role == Role::Container(0) && c.id != old.id && c.state == ContainerState::Running
            }) {
                return c.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "container 0 not restarted: {:#?}",
                info.events
            );
            while_waiting();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the job to finish, then checks everything the streams say.
    /// `by_lease`: the old container must have ended by itself (its node
    /// manager was not there to end it).
    fn finish_and_check(self, zombie: &ContainerInfo, by_lease: bool) {
        let start = Instant::now();
        let done = loop {
            let info = self.info();
            if info.state.is_final() {
                break info;
            }
            assert!(start.elapsed() < Duration::from_secs(240), "job did not finish: {:#?}", info.events);
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
        let generations = check_checkpoints(&self.log, "page-view-counter");
        // Container 0's tasks changed owner: two generations wrote their checkpoints, in order.
        let moved: Vec<&Vec<u64>> = generations.values().filter(|g| g.len() >= 2).collect();
        assert!(!moved.is_empty(), "a task changed owner: {generations:?}");
        let emitted = check_counts_never_go_down(&self.log, "user-counts");
        check_not_below_truth(&emitted, &self.truth, "user-counts");
        check_not_below_truth(&changelog_counts(&self.log, "counts-changelog"), &self.truth, "changelog");
        // The old container ended by itself, not by a commit of its own.
        let stderr = self
            .tmp
            .path()
            .join("cluster")
            .join(&zombie.node)
            .join("containers")
            .join(&zombie.id)
            .join("stderr");
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        assert!(!text.contains("container stopped"), "the old container committed a final time: {text}");
        if by_lease {
            assert!(text.contains("no longer the owner of its tasks"), "{}: {text}", stderr.display());
        }
        // Nothing of the cluster is left once it stops.
        let mut pids: Vec<u32> = done.containers.iter().filter_map(|c| c.pid).collect();
        pids.push(zombie.pid.unwrap());
        let Run { mut cluster, tmp, .. } = self;
        cluster.stop();
        check_none_left(&pids);
        drop(tmp);
    }
}

#[test]
fn a_node_manager_killed_alone_leaves_containers_that_stop_by_their_lease_before_their_successors_run() {
    let run = Run::start();
    let zombie = run.wait_counting();
    let zpid = zombie.pid.unwrap();
    // SAFETY: the node manager is a process this test's cluster started.
    unsafe { libc::kill(run.nm_pid(&zombie.node) as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let mut zombie_ended = None;
    let successor = run.wait_successor(&zombie, || {
        if zombie_ended.is_none() && !alive(zpid) {
            zombie_ended = Some(killed.elapsed());
        }
    });
    let took = killed.elapsed();
    // Once the lease has passed, no two containers run the task: the old
    // one stopped by itself before the successor started.
    assert!(
        !alive(zpid),
        "container {} (pid {zpid}) still runs beside its successor {}",
        zombie.id,
        successor.id
    );
    let ended = zombie_ended.unwrap_or(took);
    assert!(ended <= took, "the old container ended after {ended:?}, its successor ran after {took:?}");
    assert!(took < Duration::from_millis(NODE_TIMEOUT_MS + 5_000), "failover took {took:?}");
    eprintln!(
        "kill -9 of the node manager: old container gone after {ended:?}, successor running after {took:?}"
    );
    run.finish_and_check(&zombie, true);
}

#[test]
fn a_paused_node_resumed_after_its_containers_moved_neither_commits_nor_lowers_a_count() {
    let run = Run::start();
    let zombie = run.wait_counting();
    let info = run.info();
    let on_node: Vec<u32> = info
        .containers
        .iter()
        .filter(|c| c.node == zombie.node && c.state == ContainerState::Running)
        .filter_map(|c| c.pid)
        .collect();
    let nm = run.nm_pid(&zombie.node);
    // SAFETY: the node manager and the containers on its node are processes this test's cluster started.
    unsafe {
        libc::kill(nm as i32, libc::SIGSTOP);
        for p in &on_node {
            libc::kill(-(*p as i32), libc::SIGSTOP);
        }
    }
    let paused = Instant::now();
    let successor = run.wait_successor(&zombie, || {});
    let took = paused.elapsed();
    // Paused past the node-loss timeout, then continued.
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: as above.
    unsafe {
        for p in &on_node {
            libc::kill(-(*p as i32), libc::SIGCONT);
        }
        libc::kill(nm as i32, libc::SIGCONT);
    }
    let resumed = Instant::now();
    let zpid = zombie.pid.unwrap();
    while alive(zpid) {
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "the resumed container {} still runs beside its successor {}",
            zombie.id,
            successor.id
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "SIGSTOP of a node: successor running after {took:?}; the resumed container ended {:?} after SIGCONT",
        resumed.elapsed()
    );
    run.finish_and_check(&zombie, false);
}
