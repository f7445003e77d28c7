//! Producer fencing: once a newer epoch of a producer identity has been
//! raised on a partition, no append of an older one lands there.

use samza_log::{BatchBuilder, Fence, Log, LogError, StartAt, StreamConfig};

fn batch(v: &str) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    b.push(None, Some(v.as_bytes()), 0, &[]);
    b
}

fn values(log: &Log, stream: &str, p: u32) -> Vec<String> {
    let mut r = log.stream(stream).unwrap().reader(p, StartAt::Oldest).unwrap();
    let chunk = r.read(1 << 20).unwrap();
    chunk.records().map(|r| String::from_utf8(r.unwrap().value.unwrap().to_vec()).unwrap()).collect()
}

#[test]
fn an_older_epoch_is_refused_once_a_newer_one_is_raised_and_others_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let s = log.create_stream("out", &StreamConfig::with_partitions(2)).unwrap();

    let mut old = s.writer(0).unwrap();
    old.fence(Fence::new("job/container-0", 1)).unwrap();
    old.append(&mut batch("old-1")).unwrap();

    // The successor raises the epoch before its first write.
    let mut new = s.writer(0).unwrap();
    new.fence(Fence::new("job/container-0", 2)).unwrap();

    // The zombie's next append is refused, naming what fenced it.
    let err = old.append(&mut batch("old-2")).unwrap_err();
    assert!(matches!(err, LogError::Fenced { epoch: 1, current: 2, partition: 0, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "fenced: producer job/container-0 epoch 1 may no longer write to stream out partition 0; epoch 2 has taken over"
    );
    new.append(&mut batch("new-1")).unwrap();

    // An older epoch cannot raise itself again.
    let mut again = s.writer(0).unwrap();
    assert!(matches!(again.fence(Fence::new("job/container-0", 1)), Err(LogError::Fenced { .. })));

    // Another identity, and a writer that is not fenced, are not affected.
    let mut other = s.writer(0).unwrap();
    other.fence(Fence::new("job/container-1", 1)).unwrap();
    other.append(&mut batch("other-1")).unwrap();
    let mut plain = s.writer(0).unwrap();
    plain.append(&mut batch("plain-1")).unwrap();

    // The same epoch may open more writers (one incarnation, several writers).
    let mut same = s.writer(0).unwrap();
    same.fence(Fence::new("job/container-0", 2)).unwrap();
    same.append(&mut batch("new-2")).unwrap();

    assert_eq!(values(&log, "out", 0), ["old-1", "new-1", "other-1", "plain-1", "new-2"]);
    // Partition 1 was never raised: fencing is per partition, as in Kafka.
    let mut p1 = s.writer(1).unwrap();
    p1.fence(Fence::new("job/container-0", 1)).unwrap();
}

#[test]
fn a_fenced_producer_raises_its_epoch_before_its_first_write_to_each_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let s = log.create_stream("out", &StreamConfig::with_partitions(2)).unwrap();
    let mut old = s.producer();
    old.set_fence(Fence::new("j/c0", 7)).unwrap();
    old.send(Some(0), None, Some(b"a"), 0, &[]).unwrap();
    old.send(Some(1), None, Some(b"b"), 0, &[]).unwrap();
    old.flush().unwrap();

    let mut new = s.producer();
    new.set_fence(Fence::new("j/c0", 8)).unwrap();
    new.raise(0).unwrap();
    // Partition 0 is fenced at once; partition 1 only at the successor's first write there.
    old.send(Some(0), None, Some(b"zombie"), 0, &[]).unwrap();
    let err = old.flush().unwrap_err();
    assert!(matches!(err, LogError::Fenced { partition: 0, .. }), "{err:?}");
    new.send(Some(1), None, Some(b"c"), 0, &[]).unwrap();
    new.flush().unwrap();
    let mut zombie = s.producer();
    zombie.set_fence(Fence::new("j/c0", 7)).unwrap();
    zombie.send(Some(1), None, Some(b"zombie"), 0, &[]).unwrap();
    assert!(matches!(zombie.flush(), Err(LogError::Fenced { partition: 1, epoch: 7, current: 8, .. })));
    assert_eq!(values(&log, "out", 0), ["a"]);
    assert_eq!(values(&log, "out", 1), ["b", "c"]);
    // A damaged fence file is an error naming it, never a silent pass.
    std::fs::write(dir.path().join("out").join("1").join("fences"), "garbage").unwrap();
    let mut w = s.writer(1).unwrap();
    let err = w.fence(Fence::new("j/c0", 9)).unwrap_err();
    assert!(err.to_string().contains("fences"), "{err}");
}
