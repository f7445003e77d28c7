//! The flagship example end to end with real processes: count page views per
//! user in RocksDB with a changelog; kill -9 a counting container mid-stream
//! and delete its local state; run again; the counts are rebuilt from the
//! changelog (never below the truth, exact where nothing failed); a further
//! run on the same directories replays only the changelog tail.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{counter_job, latest, produce, run, status};
use samza_log::{Log, StreamConfig};

fn restore_modes(dir: &Path) -> Vec<(String, String, u64)> {
    (0..2)
        .flat_map(|c| {
            let s = status(dir, c).unwrap();
            s.stores
                .into_iter()
                .filter(|st| st.store == "counts")
                .map(|st| (st.task, st.restore.mode, st.restore.records))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn counts_survive_kill_9_and_lost_state_and_reopen_replays_only_the_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4)).unwrap();
    let mut truth = HashMap::new();
    const N: u64 = 60_000;
    produce(&log, 0, N, 500, &mut truth);
    counter_job()
        .set("job.state-dir", "state")
        .set("stores.counts.cache-entries", 100)
        .set("stores.counts.write-batch-entries", 1000)
        .write(dir);

    // 1. Kill container 0 with SIGKILL in the middle of its partitions.
    let child = run(dir, &["params.throttle-us=40000"]);
    let start = Instant::now();
    let (pid, tasks_of_0) = loop {
        assert!(start.elapsed() < Duration::from_secs(60), "container 0 never made progress");
        if let Some(s) = status(dir, 0).filter(|s| s.processed > 5_000) {
            let tasks: Vec<String> =
                s.stores.iter().filter(|t| t.store == "counts").map(|t| t.task.clone()).collect();
            break (s.pid as i32, tasks);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: SIGKILL to a container process of the samza-run this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());

    // 2. Its machine is lost: delete its local state.
    for t in &tasks_of_0 {
        let d = dir.join("state/page-view-counter/stores/counts").join(t.replace(' ', "_"));
        assert!(d.is_dir(), "{}", d.display());
        std::fs::remove_dir_all(d).unwrap();
    }

    // 3. Run again to the end of the input.
    let out = run(dir, &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (task, mode, records) in restore_modes(dir) {
        if tasks_of_0.contains(&task) {
            assert_eq!(mode, "full", "{task}: local state was deleted");
            assert!(records > 0, "{task}: rebuilt from the changelog");
        } else {
            assert_eq!(mode, "tail", "{task}: local state reused");
        }
    }
    let counts = latest(&log, "user-counts");
    let changelog = latest(&log, "counts-changelog");
    assert_eq!(counts.len(), truth.len());
    let mut over = 0;
    for (user, n) in &truth {
        // The store's contents, as its changelog holds them.
        let stored = i64::from_be_bytes(changelog[user].as_slice().try_into().unwrap());
        assert!(stored >= *n, "{user}: count {stored} is below the truth {n}");
        let emitted: i64 = std::str::from_utf8(&counts[user]).unwrap().parse().unwrap();
        let p = samza_task_api::partition_for_key(user.as_bytes(), 4);
        if !tasks_of_0.contains(&format!("Partition {p}")) {
            assert_eq!(stored, *n, "{user}: no failure in its partition, so exact");
            assert_eq!(emitted, *n, "{user}: the last window emitted the final count");
        } else {
            // Increments after the killed container's last window were never
            // emitted; the store has them.
            assert!(emitted <= stored, "{user}: emitted {emitted}, stored {stored}");
        }
        over += stored - n;
    }
    eprintln!("{} users, {} views counted twice after the kill", truth.len(), over);

    // 4. Same directories, a little more input: only the changelog tail is replayed.
    produce(&log, N, N + 1000, 500, &mut truth);
    let out = run(dir, &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (task, mode, records) in restore_modes(dir) {
        assert_eq!((mode.as_str(), records), ("tail", 0), "{task}: clean reopen replays nothing");
    }
    let changelog = latest(&log, "counts-changelog");
    for (user, n) in &truth {
        assert!(i64::from_be_bytes(changelog[user].as_slice().try_into().unwrap()) >= *n, "{user}");
    }
}
