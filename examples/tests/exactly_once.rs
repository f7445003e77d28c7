//! Exactly-once (the default on the embedded log) with real processes and
//! kill -9: the page-view counter's store and its stream of count updates
//! reflect every input exactly once.
//!
//! What is checked afterwards, from the streams as a downstream reader sees
//! them (read-committed): every user's last update is its true count; each
//! user's updates carry sequence numbers 1, 2, 3, ... with no gap and no
//! repeat, and counts that only grow; the changelog holds the true count of
//! every user; no checkpoint went backwards or was written by an older
//! generation after a newer one.
//!
//! - locally: rounds of kill -9 of a container mid-stream, then a run to the end;
//! - on a cluster (a resource manager and 3 node managers on loopback) while
//!   events flow: kill -9 of a container, of a node manager with its
//!   containers, of the job coordinator. `SAMZA_EOS_EVENTS` (default
//!   60 000) and `SAMZA_EOS_ROUNDS` (default 1) make the long run
//!   (docs/testing.md).

mod common;
#[path = "common/ownership.rs"]
mod ownership;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{bin_dir, counter_job, produce, status};
use ownership::{changelog_counts, check_checkpoints, check_none_left};
use samza_log::{Log, StartAt, StreamConfig};
use samza_scheduler::cli::LocalCluster;
use samza_scheduler::client::Client;
use samza_scheduler::proto::*;

/// Every user's updates on `user-counts` in log order: (count, seq).
fn updates(log: &Log, uncommitted: bool) -> HashMap<String, Vec<(i64, i64)>> {
    let s = log.stream("user-counts").unwrap();
    let mut out: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for p in 0..s.partitions() {
        let mut r = s.reader(p, StartAt::Oldest).unwrap();
        if uncommitted {
            r = r.read_uncommitted();
        }
        loop {
            let c = r.read(1 << 20).unwrap();
            if c.is_empty() {
                break;
            }
            for rec in c.records() {
                let rec = rec.unwrap();
                let user = String::from_utf8(rec.key.unwrap().to_vec()).unwrap();
                let count: i64 = std::str::from_utf8(rec.value.unwrap()).unwrap().parse().unwrap();
                let seq = rec
                    .headers()
                    .filter_map(Result::ok)
                    .find(|(k, _)| *k == "seq")
                    .and_then(|(_, v)| std::str::from_utf8(v?).ok()?.parse().ok())
                    .unwrap_or_else(|| panic!("update of {user} at offset {} has no seq header", rec.offset));
                out.entry(user).or_default().push((count, seq));
            }
        }
    }
    out
}

/// Whether every user's last update is its true count.
fn converged(log: &Log, truth: &HashMap<String, i64>) -> bool {
    let u = updates(log, false);
    u.len() == truth.len() && truth.iter().all(|(user, n)| u[user].last().map(|x| x.0) == Some(*n))
}

/// Everything exactly-once promises, checked from the streams.
fn check_exact(log: &Log, truth: &HashMap<String, i64>) {
    let u = updates(log, false);
    assert_eq!(u.len(), truth.len(), "every user has updates");
    let mut total = 0;
    for (user, n) in truth {
        let ups = &u[user];
        total += ups.len();
        for (i, (count, seq)) in ups.iter().enumerate() {
            assert_eq!(
                *seq,
                i as i64 + 1,
                "{user}: update #{} carries seq {seq} (a gap or a repeat): {ups:?}",
                i + 1
            );
            if i > 0 {
                assert!(
                    *count > ups[i - 1].0,
                    "{user}: the count went from {} to {count}: {ups:?}",
                    ups[i - 1].0
                );
            }
        }
        assert_eq!(ups.last().unwrap().0, *n, "{user}: last update is not the truth: {ups:?}");
    }
    let stored = changelog_counts(log, "counts-changelog");
    assert_eq!(stored.len(), truth.len(), "every user in the store");
    for (user, n) in truth {
        assert_eq!(stored[user], *n, "{user}: the store holds {} for a truth of {n}", stored[user]);
    }
    check_checkpoints(log, "page-view-counter");
    // What readers never saw: records of transactions the crashes aborted.
    let written: usize = updates(log, true).values().map(Vec::len).sum();
    eprintln!(
        "{} users, {total} updates committed, {} written and aborted",
        truth.len(),
        written.saturating_sub(total)
    );
}

/// `samza-run dir/job.toml`, its containers dying at `crash_at` (see
/// `samza_task_api::crash`) when given.
fn run_crashing(dir: &std::path::Path, crash_at: Option<&str>, overrides: &[&str]) -> std::process::Child {
    let mut cmd = common::command(dir, overrides);
    if let Some(at) = crash_at {
        cmd.env(samza_container::env::CRASH_AT, at);
    }
    cmd.spawn().unwrap()
}

/// The local rounds: containers dying at each step of a commit, then a
/// kill -9 at a random time, then a run to the end; `guarantee` as set.
fn local_rounds(
    guarantee: &str,
) -> (Log, HashMap<String, i64>, Vec<(String, String, u64)>, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4)).unwrap();
    let mut truth = HashMap::new();
    produce(&log, 0, 200_000, 700, &mut truth);
    counter_job().set("job.state-dir", "state").set("task.processing-guarantee", guarantee).write(dir);
    let throttle = ["params.throttle-us=100000"];
    let mut restored = Vec::new();
    let stores = |restored: &mut Vec<(String, String, u64)>| {
        for c in 0..2 {
            if let Some(s) = status(dir, c) {
                restored
                    .extend(s.stores.into_iter().map(|st| (st.store, st.restore.mode, st.restore.records)));
            }
        }
    };
    let clear_status = || {
        for c in 0..2 {
            // No status of the run before (its killed container's is never finished).
            let _ = std::fs::remove_file(samza_container::layout::status_file(
                &dir.join("state"),
                "page-view-counter",
                c,
            ));
        }
    };
    // Each step of a commit: outputs and changelog appended, the commit
    // decided with one marker written, the stores written back.
    let mut points = vec!["commit-flushed:8", "commit-partly-marked:8", "commit-written-back:8"];
    if guarantee == "at-least-once" {
        points.retain(|p| !p.starts_with("commit-partly-marked")); // no transactions
    }
    for (round, point) in points.iter().enumerate() {
        clear_status();
        let out = run_crashing(dir, Some(point), &throttle).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "round {round}: the job ended before the crash at {point}: {stderr}");
        if round > 0 {
            stores(&mut restored);
        }
    }
    // kill -9 at a random time.
    clear_status();
    let mut child = run_crashing(dir, None, &throttle);
    let start = Instant::now();
    let pid = loop {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "container 1 made no progress ({:?}): {}",
                status(dir, 1),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(s) = status(dir, 1).filter(|s| s.processed > 3_000 && !s.finished) {
            break s.pid as i32;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(start.elapsed().as_millis() as u64 % 200));
    // SAFETY: SIGKILL to a container process of the samza-run this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the job ended before the kill");
    stores(&mut restored);
    // To the end.
    clear_status();
    let out = run_crashing(dir, None, &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stores(&mut restored);
    (log, truth, restored, tmp)
}

#[test]
fn containers_dying_at_every_step_of_a_commit_leave_every_count_and_update_sequence_exact() {
    let (log, truth, restored, _tmp) = local_rounds("exactly-once");
    // Local state was kept through every crash: restores replay a tail only.
    assert!(restored.iter().all(|(_, mode, _)| mode == "tail"), "{restored:?}");
    let replayed: u64 = restored.iter().map(|(_, _, r)| r).sum();
    eprintln!("restores after the crashes replayed {replayed} changelog records in all: {restored:?}");
    check_exact(&log, &truth);
}

/// The same crashes under at-least-once break what exactly-once promises
/// (so the check above can fail), and never lose a count.
#[test]
fn the_same_crashes_under_at_least_once_repeat_updates_and_never_lose_one() {
    let (log, truth, _, _tmp) = local_rounds("at-least-once");
    let result = std::panic::catch_unwind(|| check_exact(&log, &truth));
    assert!(result.is_err(), "at-least-once came out exact: the crashes did not hit a commit");
    let stored = changelog_counts(&log, "counts-changelog");
    for (user, n) in &truth {
        assert!(stored[user] >= *n, "{user}: {} is below the truth {n}", stored[user]);
    }
}

/// A bounded bootstrap input written in transactions ends with a marker, an
/// offset no message carries: the job still reaches its end (it waited
/// forever before the consumer's position counted).
#[test]
fn a_bounded_bootstrap_input_written_in_transactions_ends_on_its_last_marker() {
    use samza_task_api::{OutgoingMessageEnvelope, ProducerOwner, SystemProducer, SystemStream};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4)).unwrap();
    let mut upstream = samza_log::system::LogSystemProducer::new(log.clone());
    upstream.init_transactions(&ProducerOwner { id: "page-views/container-0".into(), epoch: 1 }).unwrap();
    let mut truth: HashMap<String, i64> = HashMap::new();
    for i in 0..3_000u64 {
        let user = format!("user-{}", i % 50);
        *truth.entry(user.clone()).or_default() += 1;
        let env = OutgoingMessageEnvelope::new(
            SystemStream::new("log", "page-views-by-user"),
            Some(user.clone().into_bytes().into()),
            Some(format!(r#"{{"user":"{user}"}}"#).into_bytes().into()),
        );
        upstream.send(env).unwrap();
        if i % 1000 == 999 {
            upstream.commit_transaction().unwrap();
        }
    }
    counter_job()
        .set("job.state-dir", "state")
        .set("systems.log.streams.page-views-by-user.bootstrap", true)
        .write(dir);
    let mut child = run_crashing(dir, None, &[]);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the job never reached the end of its input: {:?}", status(dir, 0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
    check_exact(&log, &truth);
}

fn events() -> u64 {
    std::env::var("SAMZA_EOS_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(60_000)
}

fn rounds() -> u32 {
    std::env::var("SAMZA_EOS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

const NODE_TIMEOUT_MS: u64 = 6_000;

struct Cluster {
    cluster: LocalCluster,
    app: String,
}

impl Cluster {
    fn rm(&self) -> Client {
        Client::new(&self.cluster.rm_url, &self.cluster.token)
    }

    fn info(&self) -> AppInfo {
        self.rm().get(&format!("/v1/apps/{}", self.app)).unwrap()
    }

    fn running(&self, role: Role) -> Option<ContainerInfo> {
        self.info().containers.into_iter().find(|c| c.role == role && c.state == ContainerState::Running)
    }

    /// Waits until `role` runs in a container other than `old` (any, when
    /// `None`); returns it and how long that took.
    fn wait_running(&self, role: Role, old: Option<&str>, since: Instant) -> (ContainerInfo, Duration) {
        loop {
            if let Some(c) = self.running(role).filter(|c| Some(c.id.as_str()) != old) {
                return (c, since.elapsed());
            }
            assert!(
                since.elapsed() < Duration::from_secs(90),
                "{role:?} not running: {:#?}",
                self.info().events
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn nm_pid(&self, node: &str) -> u32 {
        self.cluster.nodes.iter().find(|(n, _)| n == node).map(|(_, c)| c.id()).unwrap()
    }
}

#[test]
fn kill_9_of_a_container_a_node_manager_and_the_coordinator_on_a_cluster_leaves_every_count_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4)).unwrap();
    counter_job()
        .unset("systems.log.streams.page-views-by-user.bounded")
        .set("job.shutdown-timeout-ms", 5000)
        .set("cluster.container-memory-mb", 512)
        .set("cluster.host-affinity-timeout-ms", 500)
        .write(dir);
    let total = events();
    let users = (total / 100).clamp(300, 1_000_000);
    // Events flow at a steady rate through the faults: about 20 s per round
    // of faults, 40 s at least.
    let ticks = u64::from(rounds()).max(2) * 200;
    let per_tick = (total / ticks).max(1);
    let feeder = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut truth = HashMap::new();
            let mut i = 0;
            while i < total {
                let to = (i + per_tick).min(total);
                produce(&log, i, to, users, &mut truth);
                i = to;
                std::thread::sleep(Duration::from_millis(100));
            }
            truth
        })
    };

    if rounds() > 3 {
        // A coordinator killed every round: more than the default budget of
        // 4 failures in 10 minutes (no other test of this binary starts a cluster).
        std::env::set_var(samza_container::env::RM_MAX_ATTEMPTS, (rounds() + 2).to_string());
    }
    let mut c = Cluster {
        cluster: LocalCluster::start(&bin_dir(), &dir.join("cluster"), 3, NODE_TIMEOUT_MS).unwrap(),
        app: String::new(),
    };
    c.app = common::submit(&c.cluster, dir);
    let mut pids: Vec<u32> = Vec::new();
    let mut report = Vec::new();
    for round in 0..rounds() {
        // 1. kill -9 of a container (its process group).
        let (victim, _) = c.wait_running(Role::Container(1), None, Instant::now());
        std::thread::sleep(Duration::from_millis(1500));
        let killed = Instant::now();
        // SAFETY: a container process group this test's cluster started.
        unsafe { libc::kill(-(victim.pid.unwrap() as i32), libc::SIGKILL) };
        pids.push(victim.pid.unwrap());
        let (_, took) = c.wait_running(Role::Container(1), Some(&victim.id), killed);
        report.push(format!("round {round}: kill -9 of container 1: running again after {took:?}"));

        // 2. kill -9 of a node manager with its containers; the node comes back later.
        let (victim, _) = c.wait_running(Role::Container(0), None, Instant::now());
        std::thread::sleep(Duration::from_millis(1500));
        let info = c.info();
        let node = victim.node.clone();
        let killed = Instant::now();
        // SAFETY: the node manager and the containers on its node were started by this test's cluster.
        unsafe {
            libc::kill(c.nm_pid(&node) as i32, libc::SIGKILL);
            for x in info.containers.iter().filter(|x| x.node == node && x.state == ContainerState::Running) {
                libc::kill(-(x.pid.unwrap() as i32), libc::SIGKILL);
                pids.push(x.pid.unwrap());
            }
        }
        let (_, took) = c.wait_running(Role::Container(0), Some(&victim.id), killed);
        report.push(format!("round {round}: kill -9 of node manager {node} and its containers: container 0 running again after {took:?}"));
        c.wait_running(Role::Coordinator, None, killed);
        c.cluster.start_node(&node).unwrap();

        // 3. kill -9 of the job coordinator (its containers keep running).
        let (coordinator, _) = c.wait_running(Role::Coordinator, None, Instant::now());
        std::thread::sleep(Duration::from_millis(1500));
        let killed = Instant::now();
        // SAFETY: the coordinator's process group was started by this test's cluster.
        unsafe { libc::kill(-(coordinator.pid.unwrap() as i32), libc::SIGKILL) };
        pids.push(coordinator.pid.unwrap());
        let (_, took) = c.wait_running(Role::Coordinator, Some(&coordinator.id), killed);
        report
            .push(format!("round {round}: kill -9 of the coordinator: a new attempt running after {took:?}"));
    }
    let truth = feeder.join().unwrap();
    let fed = Instant::now();
    while !converged(&log, &truth) {
        assert!(
            fed.elapsed() < Duration::from_secs(240),
            "the counts never reached the truth: {:#?}",
            c.info().events
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for line in &report {
        eprintln!("{line}");
    }
    eprintln!(
        "{total} events over {} users: counts exact {:?} after the last event",
        truth.len(),
        fed.elapsed()
    );
    check_exact(&log, &truth);
    let info = c.info();
    assert!(!info.state.is_final(), "the job runs on: {:#?}", info.events);
    pids.extend(info.containers.iter().filter_map(|x| x.pid));
    // Nothing of the cluster is left once it stops.
    let Cluster { mut cluster, .. } = c;
    cluster.stop();
    check_none_left(&pids);
}
