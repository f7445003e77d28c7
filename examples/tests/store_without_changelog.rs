//! A RocksDB store without a changelog is the only copy of its counts: a
//! checkpoint must never cover a write that is not durable in it. The
//! page-view counter without its changelog line, kill -9 of a counting
//! container at several points, then a run to the end: no user's count in
//! the stores is below the truth.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{counter_job, produce, run, status};
use samza_container::config::JobConfig;
use samza_log::{Log, StreamConfig};
use samza_state::Engine;
use samza_task_api::TaskName;

fn stored_counts(dir: &Path) -> HashMap<String, i64> {
    let cfg = JobConfig::load(&dir.join("job.toml"), &[]).unwrap();
    let mut out = HashMap::new();
    for p in 0..4 {
        let task = TaskName(format!("Partition {p}"));
        let db = samza_container::tools::store_dir(&cfg, "counts", &task).join("db");
        let engine = samza_state::RocksEngine::open_read_only(&db).unwrap();
        for (k, v) in engine.scan(None, None).unwrap() {
            let v = samza_state::store::stored_value(None, 0, &v).unwrap();
            out.insert(String::from_utf8(k).unwrap(), i64::from_be_bytes(v.try_into().unwrap()));
        }
    }
    out
}

#[test]
fn a_store_without_a_changelog_loses_no_counted_input_through_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4)).unwrap();
    let mut truth = HashMap::new();
    const N: u64 = 200_000;
    produce(&log, 0, N, 3000, &mut truth);
    counter_job()
        .set("job.state-dir", "state")
        .unset("systems.log.streams.user-counts.compacted")
        .unset("stores.counts.changelog")
        .write(dir);
    // Kill container 0 (SIGKILL) at three points of its input, each run
    // resuming from the checkpoints the last one left.
    for at in [8_000u64, 20_000, 40_000] {
        let child = run(dir, &["params.throttle-us=200000"]);
        let start = std::time::Instant::now();
        let pid = loop {
            assert!(start.elapsed() < Duration::from_secs(120), "container 0 never reached {at} this run");
            if let Some(s) = status(dir, 0).filter(|s| s.processed >= at) {
                break s.pid as i32;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // SAFETY: a container process of the samza-run this test started.
        let killed = unsafe { libc::kill(pid, libc::SIGKILL) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            killed,
            0,
            "container 0 (pid {pid}) gone before the kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success());
    }
    let out = run(dir, &[]).wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored = stored_counts(dir);
    assert_eq!(stored.len(), truth.len(), "every user counted");
    let below: Vec<_> = truth.iter().filter(|(u, n)| stored.get(*u).copied().unwrap_or(0) < **n).collect();
    assert!(
        below.is_empty(),
        "{} of {} users below the truth, e.g. {:?}",
        below.len(),
        truth.len(),
        below.first()
    );
}
