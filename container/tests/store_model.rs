//! Model test of a task store (write-back cache over RocksDB, changelog,
//! restore) against a `BTreeMap`: random writes, reads, range scans, commits,
//! crashes that lose uncommitted writes, and lost local state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use samza_container::memory::InMemoryStreams;
use samza_state::restore::{self, ChangelogSource, EngineKind, Marker};
use samza_state::{StoreOptions, TaskStore};
use samza_task_api::SystemFactory;
use samza_task_api::{MetricsRegistry, RawStore, SystemAdmin, SystemStreamPartition};

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Get(u8),
    /// Read-modify-write: add to the key's one-byte value (wrapping); with
    /// `true`, delete the key when it reaches zero.
    Update(u8, u8, bool),
    Range(u8, u8),
    Prefix(u8),
    All,
    /// A commit; with `true` the store also writes back to RocksDB and moves
    /// its marker (otherwise the changelog alone holds the commit's writes).
    Commit(bool),
    /// The process dies: uncommitted writes are lost; local state is reused.
    Crash,
    /// The machine is lost: local state is gone; restore from the changelog.
    Wipe,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..40).prop_map(Op::Delete),
        4 => (0u8..40).prop_map(Op::Get),
        4 => (0u8..40, any::<u8>(), any::<bool>()).prop_map(|(k, d, z)| Op::Update(k, d, z)),
        1 => (0u8..40, 0u8..40).prop_map(|(a, b)| Op::Range(a, b)),
        1 => (0u8..4).prop_map(Op::Prefix),
        1 => Just(Op::All),
        2 => any::<bool>().prop_map(Op::Commit),
        1 => Just(Op::Crash),
        1 => Just(Op::Wipe),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("{}{:02}", k % 4, k).into_bytes()
}

struct Harness {
    dir: std::path::PathBuf,
    changelog: InMemoryStreams,
    marker: Marker,
    store: TaskStore,
    next: u64,
}

fn ssp() -> SystemStreamPartition {
    SystemStreamPartition::new("mem", "cl", 0)
}

fn open(dir: &std::path::Path, changelog: &InMemoryStreams, marker: &Marker) -> (TaskStore, u64, String) {
    let meta = changelog.partition_metadata("cl").unwrap()[0];
    let source = ChangelogSource {
        ssp: ssp(),
        meta,
        consumer: changelog.consumer("mem", &Default::default()).unwrap(),
        timeout: samza_state::restore::DEFAULT_RESTORE_TIMEOUT,
    };
    let opened = restore::open(EngineKind::Rocksdb, dir, marker, Some(source)).unwrap();
    let options =
        StoreOptions { cache_entries: 4, write_batch_entries: 1000, ttl_ms: None, write_back_ms: 1 << 40 };
    let clock: samza_state::Clock = Arc::new(|| 0);
    let store = TaskStore::new(
        "s",
        "Partition 0",
        opened.engine,
        options,
        clock,
        &MetricsRegistry::new(),
        Arc::new(AtomicBool::new(false)),
    );
    (store, opened.changelog_next, opened.report.mode)
}

impl Harness {
    fn commit(&mut self, write_back: bool) {
        let batch = self.store.take_dirty();
        for (k, v) in &batch {
            self.changelog.append("cl", Some(0), Some(k.clone()), v.clone(), 0).unwrap();
        }
        self.next += batch.len() as u64;
        assert!(!self.store.write_back_due(), "due only by size or time, neither reached here");
        if write_back {
            self.store.write_back().unwrap();
            self.marker.offset = self.next;
            restore::write_marker(&self.dir, &self.marker).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let changelog = InMemoryStreams::new();
        changelog.create("cl", 1);
        let marker = Marker { job: "j".into(), store: "s".into(), task: "t".into(), changelog: Some(ssp()), offset: 0 };
        let (store, next, mode) = open(&dir, &changelog, &marker);
        prop_assert_eq!(mode, "full");
        let mut h = Harness { dir, changelog, marker, store, next };
        let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut current = committed.clone();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    h.store.put(&key(k), &[v]).unwrap();
                    current.insert(key(k), vec![v]);
                }
                Op::Delete(k) => {
                    h.store.delete(&key(k)).unwrap();
                    current.remove(&key(k));
                }
                Op::Get(k) => prop_assert_eq!(h.store.get(&key(k)).unwrap(), current.get(&key(k)).cloned()),
                Op::Update(k, d, delete_at_zero) => {
                    let before = current.get(&key(k)).cloned();
                    let mut seen = None;
                    h.store
                        .update(&key(k), &mut |cur, out| {
                            seen = Some(cur.map(<[u8]>::to_vec));
                            let n = cur.map_or(0, |c| c[0]).wrapping_add(d);
                            out.push(n);
                            Ok(!(delete_at_zero && n == 0))
                        })
                        .unwrap();
                    prop_assert_eq!(seen, Some(before.clone()), "update saw the current value");
                    let n = before.map_or(0, |c| c[0]).wrapping_add(d);
                    if delete_at_zero && n == 0 {
                        current.remove(&key(k));
                    } else {
                        current.insert(key(k), vec![n]);
                    }
                }
                Op::Range(a, b) => {
                    let (a, b) = (key(a), key(b));
                    let want: Vec<_> = if a < b { current.range(a.clone()..b.clone()).map(|(k, v)| (k.clone(), v.clone())).collect() } else { vec![] };
                    prop_assert_eq!(h.store.range(&a, &b).unwrap(), want);
                }
                Op::Prefix(p) => {
                    let p = p.to_string().into_bytes();
                    let want: Vec<_> = current.iter().filter(|(k, _)| k.starts_with(&p)).map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(h.store.prefix(&p).unwrap(), want);
                }
                Op::All => {
                    let want: Vec<_> = current.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(h.store.all().unwrap(), want);
                }
                Op::Commit(write_back) => {
                    h.commit(write_back);
                    committed = current.clone();
                }
                Op::Crash | Op::Wipe => {
                    let wipe = matches!(op, Op::Wipe);
                    // Drop the store (and its RocksDB handle) before reopening.
                    let (s, _, _) = {
                        let tmp_store = std::mem::replace(&mut h.store, open_placeholder());
                        drop(tmp_store);
                        if wipe {
                            std::fs::remove_dir_all(&h.dir).unwrap();
                        }
                        open(&h.dir, &h.changelog, &h.marker)
                    };
                    h.store = s;
                    current = committed.clone();
                    let want: Vec<_> = current.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    prop_assert_eq!(h.store.all().unwrap(), want, "after {:?}", op);
                }
            }
        }
    }
}

/// A throwaway in-memory store, so the real one can be dropped before reopening.
fn open_placeholder() -> TaskStore {
    let clock: samza_state::Clock = Arc::new(|| 0);
    TaskStore::new(
        "placeholder",
        "Partition 0",
        Box::new(samza_state::MemoryEngine::default()),
        StoreOptions::default(),
        clock,
        &MetricsRegistry::new(),
        Arc::new(AtomicBool::new(false)),
    )
}

#[test]
fn host_affinity_replays_only_the_tail_and_foreign_or_ahead_state_is_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let changelog = InMemoryStreams::new();
    changelog.create("cl", 1);
    let marker =
        Marker { job: "j".into(), store: "s".into(), task: "t".into(), changelog: Some(ssp()), offset: 0 };
    let (store, next, _) = open(&dir, &changelog, &marker);
    let mut h =
        Harness { dir: dir.clone(), changelog: changelog.clone(), marker: marker.clone(), store, next };
    for i in 0..100u8 {
        h.store.put(&[i], &[i]).unwrap();
    }
    h.commit(true);
    drop(h.store);
    // Another writer of the changelog (a failover elsewhere) adds 5 records.
    for i in 0..5u8 {
        changelog.append("cl", Some(0), Some(vec![200 + i].into()), Some(vec![1].into()), 0).unwrap();
    }
    let meta = changelog.partition_metadata("cl").unwrap()[0];
    let src = ChangelogSource {
        ssp: ssp(),
        meta,
        consumer: changelog.consumer("mem", &Default::default()).unwrap(),
        timeout: samza_state::restore::DEFAULT_RESTORE_TIMEOUT,
    };
    let m = Marker { offset: 100, ..marker.clone() };
    let opened = restore::open(EngineKind::Rocksdb, &dir, &m, Some(src)).unwrap();
    assert_eq!((opened.report.mode.as_str(), opened.report.records), ("tail", 5), "{:?}", opened.report);
    assert_eq!(opened.changelog_next, 105);
    drop(opened);

    // State of another task is discarded and rebuilt in full.
    let meta = changelog.partition_metadata("cl").unwrap()[0];
    let src = ChangelogSource {
        ssp: ssp(),
        meta,
        consumer: changelog.consumer("mem", &Default::default()).unwrap(),
        timeout: samza_state::restore::DEFAULT_RESTORE_TIMEOUT,
    };
    let other = Marker { task: "other".into(), ..marker.clone() };
    let opened = restore::open(EngineKind::Rocksdb, &dir, &other, Some(src)).unwrap();
    assert_eq!((opened.report.mode.as_str(), opened.report.records), ("full", 105));
    assert!(opened.report.discarded.as_deref().unwrap().contains("belongs to job"));
    drop(opened);

    // State ahead of its changelog (the changelog was recreated) is discarded.
    let fresh = InMemoryStreams::new();
    fresh.create("cl", 1);
    fresh.append("cl", Some(0), Some(vec![1].into()), Some(vec![1].into()), 0).unwrap();
    let meta = fresh.partition_metadata("cl").unwrap()[0];
    let src = ChangelogSource {
        ssp: ssp(),
        meta,
        consumer: fresh.consumer("mem", &Default::default()).unwrap(),
        timeout: samza_state::restore::DEFAULT_RESTORE_TIMEOUT,
    };
    let opened = restore::open(EngineKind::Rocksdb, &dir, &other, Some(src)).unwrap();
    assert_eq!(opened.report.mode, "full");
    assert!(opened.report.discarded.unwrap().contains("ends at 1"), "ahead of the changelog");
}

#[test]
fn ttl_hides_expired_entries() {
    let now = Arc::new(AtomicI64::new(1000));
    let n = now.clone();
    let clock: samza_state::Clock = Arc::new(move || n.load(Ordering::Relaxed));
    let options = StoreOptions { ttl_ms: Some(500), ..StoreOptions::default() };
    let mut store = TaskStore::new(
        "ttl",
        "Partition 0",
        Box::new(samza_state::MemoryEngine::default()),
        options,
        clock,
        &MetricsRegistry::new(),
        Arc::new(AtomicBool::new(false)),
    );
    store.put(b"a", b"1").unwrap();
    now.store(1400, Ordering::Relaxed);
    store.put(b"b", b"2").unwrap();
    assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
    now.store(1600, Ordering::Relaxed);
    assert_eq!(store.get(b"a").unwrap(), None, "expired");
    assert_eq!(store.all().unwrap(), vec![(b"b".to_vec(), b"2".to_vec())]);
}

/// Write-back is due by size (`write_batch_entries` waiting) or by time
/// (`write_back_ms` on the store's clock), never before the changelog took the
/// entries; entries waiting for the engine are never evicted and stay readable.
#[test]
fn write_back_is_due_by_size_or_time_and_pins_entries() {
    let now = Arc::new(AtomicI64::new(0));
    let n = now.clone();
    let clock: samza_state::Clock = Arc::new(move || n.load(Ordering::Relaxed));
    let options =
        StoreOptions { cache_entries: 2, write_batch_entries: 5, ttl_ms: None, write_back_ms: 1000 };
    let mut store = TaskStore::new(
        "wb",
        "Partition 0",
        Box::new(samza_state::MemoryEngine::default()),
        options,
        clock,
        &MetricsRegistry::new(),
        Arc::new(AtomicBool::new(false)),
    );
    for i in 0..4u8 {
        store.put(&[i], &[i]).unwrap();
    }
    assert!(!store.write_back_due(), "nothing taken for the changelog yet");
    assert_eq!(store.take_dirty().len(), 4);
    assert!(!store.write_back_due(), "4 < 5 entries and no time passed");
    // Past the cache size, but waiting entries are pinned: all still readable
    // although the engine has none of them.
    for i in 0..4u8 {
        assert_eq!(store.get(&[i]).unwrap(), Some(vec![i]));
    }
    now.store(999, Ordering::Relaxed);
    assert!(!store.write_back_due());
    now.store(1000, Ordering::Relaxed);
    assert!(store.write_back_due(), "due by time");
    assert_eq!(store.write_back().unwrap(), 4);
    assert!(!store.write_back_due());
    assert_eq!(store.engine_mut().scan(None, None).unwrap().len(), 4, "all in the engine now");

    // By size: one entry changed twice counts once.
    for i in [10u8, 11, 12, 10, 13] {
        store.put(&[i], &[1]).unwrap();
    }
    assert_eq!(store.take_dirty().len(), 4);
    assert!(!store.write_back_due());
    store.put(&[14], &[1]).unwrap();
    assert_eq!(store.take_dirty().len(), 1);
    assert!(store.write_back_due(), "5 entries waiting");
    assert_eq!(store.write_back().unwrap(), 5);
    assert_eq!(store.engine_mut().scan(None, None).unwrap().len(), 9);
}
