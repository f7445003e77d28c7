//! Corrupted and torn segments: corruption is an error naming where it is; a
//! torn tail is cut off; nothing else is ever returned as data.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use samza_log::{BatchBuilder, Log, LogError, StartAt, Stream, StreamConfig};

fn setup(batches: u32) -> (tempfile::TempDir, Stream, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log.create_stream("s", &StreamConfig::with_partitions(1)).unwrap();
    let mut w = stream.writer(0).unwrap();
    for i in 0..batches {
        let mut b = BatchBuilder::new();
        for j in 0..10 {
            b.push(Some(format!("k{j}").as_bytes()), Some(format!("value-{i}-{j}").as_bytes()), 1000, &[]);
        }
        w.append(&mut b).unwrap();
    }
    let seg = dir.path().join("s/0/00000000000000000000.log");
    (dir, stream, seg)
}

fn read_all(stream: &Stream, from: u64) -> Result<Vec<u64>, LogError> {
    let mut r = stream.reader(0, StartAt::Offset(from))?;
    let mut out = Vec::new();
    loop {
        let chunk = r.read(4096)?;
        if chunk.is_empty() {
            return Ok(out);
        }
        for rec in chunk.records() {
            out.push(rec?.offset);
        }
    }
}

fn flip(path: &PathBuf, at: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn flipped_bytes_in_the_middle_are_an_error_naming_stream_partition_and_offset() {
    let (_dir, stream, seg) = setup(100);
    // Byte position of every batch.
    let mut starts = Vec::new();
    let mut r = stream.reader(0, StartAt::Oldest).unwrap();
    let chunk = r.read(1 << 20).unwrap();
    let mut pos = 0u64;
    for b in chunk.batches() {
        starts.push(pos);
        pos += b.len() as u64;
    }
    assert_eq!(starts.len(), 100);
    // Flip a value byte of batch 50 and, later, a header byte of batch 70.
    flip(&seg, starts[51] - 20);
    let err = read_all(&stream, 0).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LogError::Corruption { offset: 500, partition: 0, .. }), "{msg}");
    assert!(msg.contains("stream s partition 0 at offset 500"), "{msg}");
    // Everything before the damage is still readable, and nothing after it is returned.
    let mut r = stream.reader(0, StartAt::Offset(0)).unwrap();
    let mut seen = 0;
    loop {
        match r.read(4096) {
            Ok(c) if c.is_empty() => panic!("reached the end past corruption"),
            Ok(c) => seen += c.records().count(),
            Err(_) => break,
        }
    }
    assert_eq!(seen, 500);
    // Readers that start after the damage are unaffected.
    assert_eq!(read_all(&stream, 900).unwrap().len(), 100);
    // The tail is intact, so appends go on.
    let mut w = stream.writer(0).unwrap();
    assert_eq!(w.next_offset(), 1000);
    let mut b = BatchBuilder::new();
    b.push(None, Some(b"x"), 0, &[]);
    assert_eq!(w.append(&mut b).unwrap().unwrap().base_offset, 1000);

    flip(&seg, starts[70] + 3); // inside the base offset of batch 70
    let err = read_all(&stream, 700).unwrap_err();
    assert!(matches!(err, LogError::Corruption { offset: 700, .. }), "{err}");
}

#[test]
fn torn_tail_is_invisible_to_readers_and_cut_by_the_next_writer() {
    let (_dir, stream, seg) = setup(20);
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A 21st batch, then cut in half as a writer killed mid-write would leave it.
    let mut w = stream.writer(0).unwrap();
    let mut b = BatchBuilder::new();
    b.push(None, Some(&[7u8; 3000]), 0, &[]);
    w.append(&mut b).unwrap();
    drop(w);
    let full = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(good_len + (full - good_len) / 2).unwrap();

    assert_eq!(read_all(&stream, 0).unwrap().len(), 200, "readers see only whole batches");
    let mut w = stream.writer(0).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len, "writer cut the torn tail");
    assert_eq!(w.next_offset(), 200);
    let mut b = BatchBuilder::new();
    b.push(None, Some(b"next"), 0, &[]);
    assert_eq!(w.append(&mut b).unwrap().unwrap().base_offset, 200);
    assert_eq!(read_all(&stream, 0).unwrap().len(), 201);
}

#[test]
fn zeroed_tail_after_power_loss_is_cut_not_read() {
    let (_dir, stream, seg) = setup(5);
    OpenOptions::new().append(true).open(&seg).unwrap().write_all(&[0u8; 8192]).unwrap();
    // A reader meets the garbage first: under the write lock it finds nothing
    // valid after it, so it is a torn tail, cut off; no error, no garbage.
    assert_eq!(read_all(&stream, 0).unwrap().len(), 50);
    let w = stream.writer(0).unwrap();
    assert_eq!(w.next_offset(), 50);
}

#[test]
fn bad_stream_metadata_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    log.create_stream("m", &StreamConfig::with_partitions(2)).unwrap();
    std::fs::write(dir.path().join("m/stream.json"), b"{\"partitions\": 0}").unwrap();
    let err = log.stream("m").unwrap_err().to_string();
    assert!(err.contains("m/stream.json") && err.contains("partitions must be between"), "{err}");
    std::fs::write(dir.path().join("m/stream.json"), b"{\"partitons\": 2}").unwrap();
    let err = log.stream("m").unwrap_err().to_string();
    assert!(err.contains("unknown field `partitons`"), "{err}");
}

#[test]
fn torn_batch_whose_value_holds_a_valid_batch_is_still_a_torn_tail() {
    let (dir, stream, seg) = setup(3);
    // A value that is itself a whole, valid batch (mirroring one log into another).
    let inner = std::fs::read(&seg).unwrap();
    let good_len = inner.len() as u64;
    let mut w = stream.writer(0).unwrap();
    let mut b = BatchBuilder::new();
    b.push(None, Some(&inner), 0, &[]);
    w.append(&mut b).unwrap();
    drop(w);
    let full = std::fs::metadata(&seg).unwrap().len();
    // Cut the write after the inner batch's bytes but before the outer batch ends.
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(full - 10).unwrap();
    let w = stream.writer(0).unwrap();
    assert_eq!(w.next_offset(), 30);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    drop(dir);
}
