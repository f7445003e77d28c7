//! Admin, retention, compaction and control records.

use std::time::{Duration, SystemTime};

use samza_log::{BatchBuilder, ControlType, Log, LogError, ProducerInfo, StartAt, Stream, StreamConfig};

fn records(stream: &Stream, p: u32, from: StartAt) -> Vec<(u64, Option<Vec<u8>>, Option<Vec<u8>>)> {
    let mut r = stream.reader(p, from).unwrap();
    let mut out = Vec::new();
    loop {
        let c = r.read(1 << 16).unwrap();
        if c.is_empty() {
            return out;
        }
        for rec in c.records() {
            let rec = rec.unwrap();
            out.push((rec.offset, rec.key.map(<[u8]>::to_vec), rec.value.map(<[u8]>::to_vec)));
        }
    }
}

#[test]
fn streams_are_created_listed_described_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_stream("b", &StreamConfig::with_partitions(3)).unwrap();
    log.create_stream("a", &StreamConfig { compacted: true, ..StreamConfig::with_partitions(1) }).unwrap();
    assert!(matches!(log.create_stream("a", &StreamConfig::default()), Err(LogError::StreamExists(_))));
    assert!(matches!(
        log.create_stream("../x", &StreamConfig::default()),
        Err(LogError::InvalidStreamName { .. })
    ));
    assert!(matches!(
        log.create_stream("z", &StreamConfig::with_partitions(0)),
        Err(LogError::InvalidConfig { .. })
    ));
    assert_eq!(log.streams().unwrap(), vec!["a", "b"]);

    // Metadata is persisted with the data.
    let reopened = Log::open(dir.path()).unwrap();
    let b = reopened.stream("b").unwrap();
    assert_eq!(b.partitions(), 3);
    assert!(reopened.stream("a").unwrap().config().compacted);
    let mut p = b.producer();
    for i in 0..30 {
        p.send(None, Some(format!("key{i}").as_bytes()), Some(b"v"), 0, &[]).unwrap();
    }
    p.flush().unwrap();
    let infos: Vec<_> = (0..3).map(|i| b.partition_info(i).unwrap()).collect();
    assert_eq!(infos.iter().map(|i| i.upcoming).sum::<u64>(), 30);
    // Keyed records went where the stable hash says.
    for i in 0..30 {
        let key = format!("key{i}");
        let part = samza_task_api::partition_for_key(key.as_bytes(), 3);
        assert!(records(&b, part, StartAt::Oldest).iter().any(|r| r.1.as_deref() == Some(key.as_bytes())));
    }
    assert!(matches!(b.writer(3), Err(LogError::PartitionNotFound { partition: 3, partitions: 3, .. })));

    reopened.delete_stream("b").unwrap();
    assert_eq!(reopened.streams().unwrap(), vec!["a"]);
    assert!(matches!(reopened.stream("b"), Err(LogError::StreamNotFound(_))));
}

fn fill(stream: &Stream, batches: u32) {
    let mut w = stream.writer(0).unwrap();
    for i in 0..batches {
        let mut b = BatchBuilder::new();
        b.push(None, Some(&[i as u8; 1000]), 0, &[]);
        w.append(&mut b).unwrap();
    }
}

#[test]
fn retention_by_size_deletes_oldest_segments_and_keeps_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let cfg = StreamConfig {
        segment_bytes: 4096,
        retention_bytes: Some(16 * 1024),
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("sized", &cfg).unwrap();
    fill(&stream, 200);
    let info = stream.partition_info(0).unwrap();
    assert!(info.bytes <= 16 * 1024 + 8192, "{info:?}");
    assert!(info.oldest > 0 && info.upcoming == 200, "{info:?}");
    let recs = records(&stream, 0, StartAt::Oldest);
    assert_eq!(recs.first().unwrap().0, info.oldest);
    assert_eq!(recs.last().unwrap().0, 199);
    assert_eq!(recs.len() as u64, 200 - info.oldest);
    assert!(
        matches!(stream.reader(0, StartAt::Offset(0)), Err(LogError::OffsetOutOfRange { oldest, .. }) if oldest == info.oldest)
    );
}

#[test]
fn retention_by_age_deletes_segments_last_written_too_long_ago() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let cfg = StreamConfig {
        segment_bytes: 4096,
        retention_ms: Some(3_600_000),
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("aged", &cfg).unwrap();
    fill(&stream, 40);
    let before = stream.partition_info(0).unwrap();
    assert!(before.segments > 5);
    // Age the three oldest segments by two hours.
    let pdir = stream.partition_dir(0).unwrap();
    let mut segs: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    let old = SystemTime::now() - Duration::from_secs(7200);
    for p in &segs[..3] {
        std::fs::File::options().write(true).open(p).unwrap().set_modified(old).unwrap();
    }
    assert_eq!(stream.apply_retention().unwrap(), 3);
    let after = stream.partition_info(0).unwrap();
    assert_eq!(after.segments, before.segments - 3);
    assert_eq!(records(&stream, 0, StartAt::Oldest).last().unwrap().0, 39);
}

#[test]
fn compaction_keeps_latest_per_key_and_expires_tombstones_without_moving_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    // Compacted by hand only, to count what one compaction removes.
    let cfg = StreamConfig {
        segment_bytes: 4096,
        compacted: true,
        auto_compact_segments: 0,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("changelog", &cfg).unwrap();
    let mut w = stream.writer(0).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..2000u32 {
        let key = format!("k{}", i % 10);
        let mut b = BatchBuilder::new();
        let value = if i == 1500 { None } else { Some(format!("v{i}")) };
        b.push(Some(key.as_bytes()), value.as_deref().map(str::as_bytes), 0, &[]);
        let a = w.append(&mut b).unwrap().unwrap();
        expected.insert(key, (a.base_offset, value));
    }
    // Make the tail segment sealed so every key's latest record is compactable.
    let before = stream.partition_info(0).unwrap();
    let stats = stream.compact(0).unwrap();
    assert!(stats.records_removed > 1500, "{stats:?}");
    assert!(stats.bytes_after < stats.bytes_before / 4, "{stats:?}");
    let after = stream.partition_info(0).unwrap();
    assert_eq!((after.oldest, after.upcoming), (before.oldest, before.upcoming), "offsets never change");

    let recs = records(&stream, 0, StartAt::Oldest);
    // Latest value of every key survives with its original offset.
    for (key, (offset, value)) in &expected {
        let found = recs.iter().find(|r| r.0 == *offset).unwrap_or_else(|| panic!("latest {key} lost"));
        assert_eq!(found.1.as_deref(), Some(key.as_bytes()));
        assert_eq!(found.2.as_deref(), value.as_deref().map(str::as_bytes));
    }
    // Nothing older than the latest of its key remains in sealed segments
    // (the active segment is never compacted).
    let sealed_end = records(&stream, 0, StartAt::Oldest).len();
    assert!(sealed_end < 400, "{sealed_end} records left");
    // k0 was tombstoned at offset 1500 and rewritten later; the tombstone itself
    // is gone only if superseded. Expire tombstones: two days later they go.
    let tomb_offset = 1500;
    let tomb_key_latest = expected["k0"].0;
    assert!(tomb_key_latest > tomb_offset);
    let later = stream.compact_at(0, samza_now() + 2 * 24 * 3600 * 1000).unwrap();
    let _ = later;
    let recs2 = records(&stream, 0, StartAt::Oldest);
    for (key, (offset, _)) in &expected {
        assert!(recs2.iter().any(|r| r.0 == *offset), "latest {key} kept after second compaction");
    }
}

fn samza_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn tombstone_is_kept_until_delete_retention_then_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let cfg = StreamConfig {
        segment_bytes: 4096,
        compacted: true,
        delete_retention_ms: 60_000,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("tomb", &cfg).unwrap();
    let mut w = stream.writer(0).unwrap();
    let mut b = BatchBuilder::new();
    b.push(Some(b"gone"), Some(b"1"), 0, &[]);
    b.push(Some(b"gone"), None, 0, &[]);
    b.push(Some(b"stays"), Some(b"2"), 0, &[]);
    w.append(&mut b).unwrap();
    // Fill past a segment so that batch is sealed.
    for _ in 0..10 {
        let mut b = BatchBuilder::new();
        b.push(None, Some(&[0u8; 1000]), 0, &[]);
        w.append(&mut b).unwrap();
    }
    stream.compact(0).unwrap();
    let recs = records(&stream, 0, StartAt::Oldest);
    assert_eq!(recs[0], (1, Some(b"gone".to_vec()), None), "tombstone kept while young");
    assert_eq!(recs[1], (2, Some(b"stays".to_vec()), Some(b"2".to_vec())));
    stream.compact_at(0, samza_now() + 120_000).unwrap();
    let recs = records(&stream, 0, StartAt::Oldest);
    assert_eq!(
        recs[0],
        (2, Some(b"stays".to_vec()), Some(b"2".to_vec())),
        "tombstone dropped after delete retention"
    );
}

#[test]
fn control_records_take_offsets_but_are_skipped_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log.create_stream("tx", &StreamConfig::with_partitions(1)).unwrap();
    let mut w = stream.writer(0).unwrap();
    let producer = ProducerInfo { producer_id: 7, producer_epoch: 1, base_sequence: 0 };
    let mut b = BatchBuilder::new();
    b.set_producer(producer);
    b.set_transactional(true);
    b.push(Some(b"a"), Some(b"1"), 0, &[]);
    w.append(&mut b).unwrap();
    let mut marker = BatchBuilder::control(ControlType::Commit, producer, 0);
    assert_eq!(w.append(&mut marker).unwrap().unwrap().base_offset, 1);
    let mut b = BatchBuilder::new();
    b.push(Some(b"b"), Some(b"2"), 0, &[]);
    assert_eq!(w.append(&mut b).unwrap().unwrap().base_offset, 2);

    let recs = records(&stream, 0, StartAt::Oldest);
    assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 2]);
    let mut r = stream.reader(0, StartAt::Oldest).unwrap();
    let chunk = r.read(1 << 16).unwrap();
    let batches: Vec<_> = chunk.batches().collect();
    assert_eq!(batches[0].producer(), producer);
    assert!(batches[0].is_transactional());
    assert_eq!(batches[1].control_type(), Some(ControlType::Commit));
}

#[test]
fn idle_writer_continues_after_retention_deleted_the_segments_it_knew() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let cfg =
        StreamConfig { segment_bytes: 4096, retention_bytes: Some(8192), ..StreamConfig::with_partitions(1) };
    let stream = log.create_stream("idle", &cfg).unwrap();
    let mut idle = stream.writer(0).unwrap();
    let mut b = BatchBuilder::new();
    b.push(None, Some(b"first"), 0, &[]);
    idle.append(&mut b).unwrap();
    // Another writer rolls many segments; retention deletes the idle writer's.
    fill(&stream, 100);
    assert!(stream.partition_info(0).unwrap().oldest > 1);
    let mut b = BatchBuilder::new();
    b.push(None, Some(b"late"), 0, &[]);
    let a = idle.append(&mut b).unwrap().unwrap();
    assert_eq!(a.base_offset, 101, "the idle writer continues after the newest record");
    let recs = records(&stream, 0, StartAt::Oldest);
    let offsets: Vec<u64> = recs.iter().map(|r| r.0).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "contiguous: {offsets:?}");
    assert_eq!(recs.last().unwrap().2.as_deref(), Some(&b"late"[..]));
}

/// A checkpoint stream's life: the same few keys rewritten all the time.
/// With segments sealed by age and the writer compacting after every two, the
/// stream holds about the latest value per key, not its whole history.
#[test]
fn a_compacted_stream_rolls_by_age_and_compacts_itself() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = StreamConfig {
        compacted: true,
        segment_ms: Some(40),
        auto_compact_segments: 2,
        ..StreamConfig::with_partitions(1)
    };
    let stream = log.create_stream("checkpoints", &config).unwrap();
    let mut w = stream.writer(0).unwrap();
    const ROUNDS: u32 = 60;
    for round in 0..ROUNDS {
        let mut b = BatchBuilder::new();
        for task in 0..10 {
            let (k, v) = (format!("task-{task}"), format!("{round}"));
            b.push(Some(k.as_bytes()), Some(v.as_bytes()), samza_now(), &[]);
        }
        w.append(&mut b).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    // Compactions run in the background: wait for the last to end.
    let start = std::time::Instant::now();
    let got = loop {
        let got = records(&stream, 0, StartAt::Oldest);
        if got.len() <= 200 || start.elapsed() > Duration::from_secs(20) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let info = stream.partition_info(0).unwrap();
    assert!(info.segments >= 10, "sealed by age: {info:?}");
    assert_eq!(info.upcoming, u64::from(ROUNDS) * 10, "offsets never change");
    assert!(got.len() <= 200, "{} of {} records left after compaction", got.len(), ROUNDS * 10);
    // The latest value of every key is there, and nothing read differs from what was written.
    let mut latest = std::collections::BTreeMap::new();
    for (offset, k, v) in &got {
        let round = offset / 10;
        assert_eq!(v.as_deref(), Some(round.to_string().as_bytes()), "offset {offset}");
        latest.insert(k.clone().unwrap(), round);
    }
    assert_eq!(latest.len(), 10);
    assert!(latest.values().all(|r| *r == u64::from(ROUNDS) - 1), "{latest:?}");
    // Without automatic compaction nothing is removed.
    let manual = log
        .create_stream("manual", &StreamConfig { auto_compact_segments: 0, segment_ms: Some(40), ..config })
        .unwrap();
    let mut w = manual.writer(0).unwrap();
    for _ in 0..10 {
        let mut b = BatchBuilder::new();
        b.push(Some(b"k"), Some(b"v"), samza_now(), &[]);
        w.append(&mut b).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(records(&manual, 0, StartAt::Oldest).len(), 10);
}
