#![allow(dead_code)] // each test file uses its own subset
//! What must never happen while a task changes owner, read back from the
//! streams afterwards: a checkpoint written by an older generation after a
//! newer one, a checkpointed offset going backwards, an emitted count going
//! down; and what must hold at the end: no count below the truth.

use std::collections::{BTreeMap, HashMap};

use samza_log::{Log, StartAt};

/// Every record of `stream` in log order, per partition: (key, value).
pub fn history(log: &Log, stream: &str) -> Vec<Vec<(String, Vec<u8>)>> {
    let s = log.stream(stream).unwrap();
    let mut out = Vec::new();
    for p in 0..s.partitions() {
        let mut r = s.reader(p, StartAt::Oldest).unwrap();
        let mut part = Vec::new();
        loop {
            let c = r.read(1 << 20).unwrap();
            if c.is_empty() {
                break;
            }
            for rec in c.records() {
                let rec = rec.unwrap();
                let k = String::from_utf8(rec.key.unwrap_or_default().to_vec()).unwrap();
                part.push((k, rec.value.unwrap_or_default().to_vec()));
            }
        }
        out.push(part);
    }
    out
}

/// Checks the checkpoint stream of `job`: per task, generations never go
/// down (no older owner wrote after a newer one) and no partition's offset
/// goes backwards. Returns the generations seen per task.
pub fn check_checkpoints(log: &Log, job: &str) -> BTreeMap<String, Vec<u64>> {
    check_checkpoint_records(history(log, &format!("__samza_checkpoint_{job}")).concat())
}

/// [`check_checkpoints`] over a checkpoint stream's records, (task, value) in order.
pub fn check_checkpoint_records(records: Vec<(String, Vec<u8>)>) -> BTreeMap<String, Vec<u64>> {
    let mut last: HashMap<String, (u64, BTreeMap<String, u64>)> = HashMap::new();
    let mut generations: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (i, (task, value)) in records.into_iter().enumerate() {
        let cp: serde_json::Value = serde_json::from_slice(&value).unwrap();
        let generation = cp["generation"].as_u64().expect("checkpoints carry the writer's generation");
        let offsets: BTreeMap<String, u64> = cp["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    format!("{}.{}[{}]", e["system"], e["stream"], e["partition"]),
                    e["offset"].as_u64().unwrap(),
                )
            })
            .collect();
        if let Some((g, before)) = last.get(&task) {
            assert!(
                generation >= *g,
                "checkpoint #{i} of {task} was written by generation {generation} after generation {g} wrote one"
            );
            for (ssp, o) in &offsets {
                let b = before.get(ssp).copied().unwrap_or(0);
                assert!(*o >= b, "checkpoint #{i} of {task}: {ssp} went back from offset {b} to {o}");
            }
        }
        let gens = generations.entry(task.clone()).or_default();
        if gens.last() != Some(&generation) {
            gens.push(generation);
        }
        last.insert(task, (generation, offsets));
    }
    generations
}

/// Checks an output of the counter (user -> count as decimal text): no
/// user's emitted count ever goes down. Returns the latest per user.
pub fn check_counts_never_go_down(log: &Log, stream: &str) -> HashMap<String, i64> {
    check_count_records(history(log, stream).concat(), stream)
}

/// [`check_counts_never_go_down`] over an output's records, (user, count) in order.
pub fn check_count_records(records: Vec<(String, Vec<u8>)>, stream: &str) -> HashMap<String, i64> {
    let mut latest: HashMap<String, i64> = HashMap::new();
    for (user, v) in records {
        let n = decode_count(&v);
        if let Some(before) = latest.get(&user) {
            assert!(n >= *before, "the count of {user} emitted on {stream} went down from {before} to {n}");
        }
        latest.insert(user, n);
    }
    latest
}

fn decode_count(v: &[u8]) -> i64 {
    std::str::from_utf8(v).unwrap().trim().parse().unwrap()
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
