#![allow(dead_code)] // each test file uses its own subset
//! What must never happen while a task changes owner, read back from the
//! streams afterwards: a checkpoint written by an older generation after a
//! newer one, a checkpointed offset going backwards, an emitted count going
//! down; and what must hold at the end: no count below the truth.

use std::collections::{BTreeMap, HashMap};

use samza_examples::verify::{self, Rec};
use samza_log::Log;

/// Every record of `stream` in log order, per partition: (key, value).
pub fn history(log: &Log, stream: &str) -> Vec<Vec<(String, Vec<u8>)>> {
    let parts = verify::history(log, stream, false).unwrap();
    parts.into_iter().map(|p| p.into_iter().map(|r| (r.key, r.value)).collect()).collect()
}

fn records(list: Vec<(String, Vec<u8>)>) -> impl Iterator<Item = Rec> {
    list.into_iter().map(|(k, v)| Rec::new(k, v))
}

/// Checks the checkpoint stream of `job`: per task, generations never go
/// down (no older owner wrote after a newer one) and no partition's offset
/// goes backwards. Returns the generations seen per task.
pub fn check_checkpoints(log: &Log, job: &str) -> BTreeMap<String, Vec<u64>> {
    check_checkpoint_records(history(log, &format!("__samza_checkpoint_{job}")).concat())
}

/// [`check_checkpoints`] over a checkpoint stream's records, (task, value) in order.
pub fn check_checkpoint_records(list: Vec<(String, Vec<u8>)>) -> BTreeMap<String, Vec<u64>> {
    let (bad, generations) = verify::checkpoints_of("the job", records(list)).unwrap();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    generations
}

/// Checks an output of the counter (user -> count as decimal text): no
/// user's emitted count ever goes down. Returns the latest per user.
pub fn check_counts_never_go_down(log: &Log, stream: &str) -> HashMap<String, i64> {
    check_count_records(history(log, stream).concat(), stream)
}

/// [`check_counts_never_go_down`] over an output's records, (user, count) in order.
pub fn check_count_records(list: Vec<(String, Vec<u8>)>, stream: &str) -> HashMap<String, i64> {
    let updates = verify::updates_of(stream, records(list)).unwrap();
    let bad = verify::counts_go_down(&updates);
    assert!(bad.is_empty(), "on {stream}: {}", bad.join("\n"));
    verify::latest(&updates)
}

/// The latest count per user in the counter's changelog (big-endian i64).
pub fn changelog_counts(log: &Log, stream: &str) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for (user, v) in history(log, stream).concat() {
        out.insert(user, i64::from_be_bytes(v.as_slice().try_into().unwrap()));
    }
    out
}

/// Every user's count at least the truth.
pub fn check_not_below_truth(counts: &HashMap<String, i64>, truth: &HashMap<String, i64>, what: &str) {
    assert_eq!(counts.len(), truth.len(), "{what}: every user counted");
    for (user, n) in truth {
        let c = counts.get(user).copied().unwrap_or(0);
        assert!(c >= *n, "{what}: {user} has {c}, below the truth {n}");
    }
}

pub use samza_scheduler::nm::process_running as alive;

/// Waits (10 s at most) until none of `pids` runs: nothing of a stopped cluster is left.
pub fn check_none_left(pids: &[u32]) {
    let start = std::time::Instant::now();
    while let Some(p) = pids.iter().find(|p| alive(**p)) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "process {p} of the cluster is left after it stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
