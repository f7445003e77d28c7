//! Transactions (see `samza_log::txn`): a producer's records in several
//! partitions become visible to read-committed readers together at its
//! commit, or never; a new generation finishes what the old one left.

use bytes::Bytes;
use samza_log::system::LogSystemProducer;
use samza_log::txn::Transactor;
use samza_log::{Log, LogError, StartAt, StreamConfig};
use samza_task_api::{OutgoingMessageEnvelope, ProducerOwner, SystemProducer, SystemStream};

fn send(p: &mut LogSystemProducer, stream: &str, partition: u32, key: &str, value: &str) {
    let env = OutgoingMessageEnvelope::new(
        SystemStream::new("log", stream),
        Some(Bytes::copy_from_slice(key.as_bytes())),
        Some(Bytes::copy_from_slice(value.as_bytes())),
    )
    .with_partition(partition);
    p.send(env).unwrap();
}

/// Values of partition `p` as a reader from the oldest offset sees them now.
fn read(log: &Log, stream: &str, p: u32, uncommitted: bool) -> Vec<String> {
    let mut r = log.stream(stream).unwrap().reader(p, StartAt::Oldest).unwrap();
    if uncommitted {
        r = r.read_uncommitted();
    }
    let mut out = Vec::new();
    loop {
        let chunk = r.read(1 << 20).unwrap();
        if chunk.is_empty() {
            return out;
        }
        out.extend(chunk.records().map(|r| String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap()));
    }
}

fn committed(log: &Log, stream: &str, p: u32) -> Vec<String> {
    read(log, stream, p, false)
}

fn owner(epoch: u64) -> ProducerOwner {
    ProducerOwner { id: "job/container-0".into(), epoch }
}

fn transactional(log: &Log, epoch: u64) -> LogSystemProducer {
    let mut p = LogSystemProducer::new(log.clone());
    p.init_transactions(&owner(epoch)).unwrap();
    p
}

#[test]
fn records_are_visible_at_commit_in_every_partition_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_stream("out", &StreamConfig::with_partitions(2)).unwrap();
    log.create_stream("cl", &StreamConfig::with_partitions(1)).unwrap();
    let mut p = transactional(&log, 1);
    // A reader that starts before anything is committed.
    let mut early = log.stream("out").unwrap().reader(1, StartAt::Oldest).unwrap();

    send(&mut p, "out", 0, "a", "a1");
    send(&mut p, "out", 1, "b", "b1");
    send(&mut p, "cl", 0, "a", "1");
    p.flush().unwrap();
    // Written, not committed: only an uncommitted reader sees them.
    assert_eq!(read(&log, "out", 0, true), ["a1"]);
    assert!(committed(&log, "out", 0).is_empty());
    assert!(committed(&log, "out", 1).is_empty());
    assert!(committed(&log, "cl", 0).is_empty());
    assert!(early.read(1 << 20).unwrap().is_empty());
    assert_eq!(early.position(), 0, "a reader waits before an open transaction");

    let written = p.commit_transaction().unwrap();
    let mut names: Vec<String> = written.iter().map(|(ssp, next)| format!("{ssp}@{next}")).collect();
    names.sort();
    // Each partition holds its record and the commit marker.
    assert_eq!(names, ["log.cl[0]@2", "log.out[0]@2", "log.out[1]@2"]);
    assert_eq!(committed(&log, "out", 0), ["a1"]);
    assert_eq!(committed(&log, "out", 1), ["b1"]);
    assert_eq!(committed(&log, "cl", 0), ["1"]);
    let chunk = early.read(1 << 20).unwrap();
    let seen: Vec<_> = chunk.records().map(|r| r.unwrap().value.unwrap().to_vec()).collect();
    assert_eq!(seen, [b"b1".to_vec()]);

    // The next transaction is separate: committed records stay, new ones wait.
    send(&mut p, "out", 0, "a", "a2");
    p.flush().unwrap();
    assert_eq!(committed(&log, "out", 0), ["a1"]);
    p.commit_transaction().unwrap();
    assert_eq!(committed(&log, "out", 0), ["a1", "a2"]);
    // Nothing sent: nothing to commit.
    assert!(p.commit_transaction().unwrap().is_empty());
}

#[test]
fn a_new_generation_aborts_what_the_old_one_left_open_and_the_old_one_can_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_stream("out", &StreamConfig::with_partitions(2)).unwrap();
    let mut old = transactional(&log, 5);
    send(&mut old, "out", 0, "a", "kept");
    old.commit_transaction().unwrap();
    send(&mut old, "out", 0, "a", "lost-0");
    send(&mut old, "out", 1, "b", "lost-1");
    old.flush().unwrap();
    // A reader of partition 1 is held back by the open transaction.
    let mut waiting = log.stream("out").unwrap().reader(1, StartAt::Oldest).unwrap();
    assert!(waiting.read(1 << 20).unwrap().is_empty());

    // The old generation is paused here; a new one takes over.
    let mut new = transactional(&log, 6);
    assert_eq!(committed(&log, "out", 0), ["kept"]);
    assert!(committed(&log, "out", 1).is_empty());
    assert_eq!(read(&log, "out", 1, true), ["lost-1"], "aborted records stay on disk, unread");
    // The waiting reader moves past the aborted transaction.
    assert!(waiting.read(1 << 20).unwrap().records().next().is_none());
    // Past its record and the two markers the new generation wrote
    // (commit of transaction 1, registered here too; abort of transaction 2).
    assert_eq!(waiting.position(), 3);

    // The zombie resumes: it can neither commit nor write.
    let e = old.commit_transaction().unwrap_err();
    assert_eq!(e.kind(), samza_task_api::SystemErrorKind::Fenced, "{e}");
    send(&mut new, "out", 1, "b", "new");
    new.commit_transaction().unwrap();
    assert_eq!(committed(&log, "out", 1), ["new"]);
    assert_eq!(committed(&log, "out", 0), ["kept"]);
}

#[test]
fn a_commit_decided_but_not_marked_everywhere_is_finished_by_the_next_generation() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let s = log.create_stream("out", &StreamConfig::with_partitions(3)).unwrap();
    // Generation 1 writes transaction 1 to three partitions and dies right
    // after its commit point, before any marker.
    let (t, left) = Transactor::take_over(dir.path(), "job/container-0", 1).unwrap();
    assert!(left.is_empty());
    let t = std::sync::Arc::new(std::sync::Mutex::new(t));
    let mut producer = s.producer();
    producer.set_transaction(t.clone(), 1);
    for p in 0..3 {
        producer.send(Some(p), Some(b"k"), Some(format!("v{p}").as_bytes()), 0, &[]).unwrap();
    }
    producer.flush().unwrap();
    t.lock().unwrap().commit(1).unwrap();
    // ... and one marker only.
    let info = samza_log::ProducerInfo {
        producer_id: t.lock().unwrap().generation().producer_id,
        producer_epoch: 0,
        base_sequence: 1,
    };
    producer.write_marker(0, samza_log::ControlType::Commit, info).unwrap();
    // Then it opened transaction 2 on partition 0, which nobody committed.
    producer.next_transaction(2);
    producer.send(Some(0), Some(b"k"), Some(b"open"), 0, &[]).unwrap();
    producer.flush().unwrap();
    assert_eq!(committed(&log, "out", 0), ["v0"]);
    assert!(committed(&log, "out", 2).is_empty());

    let _new = transactional(&log, 2);
    for p in 0..3 {
        assert_eq!(committed(&log, "out", p), [format!("v{p}")], "partition {p}");
    }
    assert_eq!(read(&log, "out", 0, true), ["v0", "open"]);
}

#[test]
fn compaction_never_lets_an_aborted_or_open_record_replace_a_committed_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut cfg = StreamConfig::with_partitions(1);
    cfg.compacted = true;
    cfg.segment_bytes = 4096;
    let s = log.create_stream("cl", &cfg).unwrap();
    // Values over a segment's size: every batch in a segment of its own.
    let pad = |v: &str| format!("{v}{}", ".".repeat(4096));
    let strip = |vs: Vec<String>| vs.iter().map(|v| v.trim_end_matches('.').to_string()).collect::<Vec<_>>();
    let mut g1 = transactional(&log, 1);
    send(&mut g1, "cl", 0, "a", &pad("a-committed"));
    send(&mut g1, "cl", 0, "b", &pad("b-committed"));
    g1.commit_transaction().unwrap();
    send(&mut g1, "cl", 0, "a", &pad("a-aborted"));
    g1.flush().unwrap();
    let mut g2 = transactional(&log, 2);
    send(&mut g2, "cl", 0, "b", &pad("b-open"));
    g2.flush().unwrap();
    // A later segment, so everything above is sealed.
    let mut plain = s.writer(0).unwrap();
    let mut batch = samza_log::BatchBuilder::new();
    batch.push(Some(b"c"), Some(pad("c").as_bytes()), 0, &[]);
    plain.append(&mut batch).unwrap();
    plain.append(&mut batch).unwrap();

    let stats = s.compact(0).unwrap();
    assert!(stats.records_removed >= 2, "{stats:?}");
    // The aborted record is gone, the committed values stay, the open one is kept.
    assert_eq!(strip(read(&log, "cl", 0, true)), ["a-committed", "b-committed", "b-open", "c"]);
    assert_eq!(strip(committed(&log, "cl", 0)), ["a-committed", "b-committed"]);
    g2.commit_transaction().unwrap();
    assert_eq!(strip(committed(&log, "cl", 0)), ["a-committed", "b-committed", "b-open", "c"]);
}

#[test]
fn a_generation_starts_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let _g = transactional(&log, 3);
    let mut again = LogSystemProducer::new(log.clone());
    let e = again.init_transactions(&owner(3)).unwrap_err();
    assert_eq!(e.kind(), samza_task_api::SystemErrorKind::Fenced, "{e}");
    let e = Transactor::take_over(dir.path(), "job/container-0", 2).unwrap_err();
    assert!(matches!(e, LogError::Fenced { epoch: 2, current: 3, .. }), "{e}");
}
