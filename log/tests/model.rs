//! Model test: random appends, reads, reopenings and compactions against an
//! in-memory model of the partition.

use std::collections::HashMap;

use proptest::prelude::*;
use samza_log::{BatchBuilder, Log, StartAt, StreamConfig};

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of (key index or none, value or tombstone).
    Append(Vec<(Option<u8>, Option<Vec<u8>>)>),
    /// Read everything from the offset at this fraction of the log.
    ReadFrom(u8),
    /// Drop and reopen the writer (a new process would do the same).
    Reopen,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        prop::option::weighted(0.8, 0u8..6),
        prop::option::weighted(0.9, prop::collection::vec(any::<u8>(), 0..300)),
    );
    prop_oneof![
        6 => prop::collection::vec(record, 1..20).prop_map(Op::Append),
        2 => any::<u8>().prop_map(Op::ReadFrom),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct Rec {
    offset: u64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
}

fn read_all(stream: &samza_log::Stream, from: u64) -> Vec<Rec> {
    let mut r = stream.reader(0, StartAt::Offset(from)).unwrap();
    let mut out = Vec::new();
    loop {
        // Small reads exercise chunk boundaries.
        let chunk = r.read(700).unwrap();
        if chunk.is_empty() {
            break;
        }
        for rec in chunk.records() {
            let rec = rec.unwrap();
            out.push(Rec {
                offset: rec.offset,
                key: rec.key.map(<[u8]>::to_vec),
                value: rec.value.map(<[u8]>::to_vec),
                timestamp: rec.timestamp,
            });
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..60), auto in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        // With `auto`, the writer compacts in the background after every two
        // sealed segments, while the test appends and reads.
        let config = StreamConfig {
            segment_bytes: 4096,
            compacted: true,
            index_interval_bytes: 256,
            auto_compact_segments: if auto { 2 } else { 0 },
            ..StreamConfig::with_partitions(1)
        };
        let stream = log.create_stream("model", &config).unwrap();
        let mut writer = stream.writer(0).unwrap();
        let mut model: Vec<Rec> = Vec::new();
        let mut compacted = auto;
        let mut ts = 1_000i64;
        for op in ops {
            match op {
                Op::Append(records) => {
                    let mut b = BatchBuilder::new();
                    for (k, v) in &records {
                        let key = k.map(|k| vec![b'k', k]);
                        ts += 1;
                        b.push(key.as_deref(), v.as_deref(), ts, &[]);
                        model.push(Rec { offset: model.len() as u64, key, value: v.clone(), timestamp: ts });
                    }
                    let a = writer.append(&mut b).unwrap().unwrap();
                    prop_assert_eq!(a.last_offset + 1, model.len() as u64);
                    prop_assert_eq!(a.last_offset + 1 - a.base_offset, records.len() as u64);
                }
                Op::ReadFrom(frac) => {
                    let from = (model.len() as u64 * u64::from(frac)) / 255;
                    let got = read_all(&stream, from);
                    if !compacted {
                        prop_assert_eq!(&got[..], &model[from as usize..]);
                    }
                    check_compacted(&got, &model, from)?;
                }
                Op::Reopen => {
                    writer = stream.writer(0).unwrap();
                    prop_assert_eq!(writer.next_offset(), model.len() as u64);
                }
                Op::Compact => {
                    stream.compact(0).unwrap();
                    compacted = true;
                }
            }
        }
        let info = stream.partition_info(0).unwrap();
        prop_assert_eq!(info.upcoming, model.len() as u64);
        let got = read_all(&stream, 0);
        check_compacted(&got, &model, 0)?;
    }
}

/// What compaction promises: every record read is the model's record at its
/// offset; the latest record of every key and every keyless record is present.
fn check_compacted(got: &[Rec], model: &[Rec], from: u64) -> Result<(), TestCaseError> {
    let mut latest: HashMap<&[u8], u64> = HashMap::new();
    for r in model {
        if let Some(k) = &r.key {
            latest.insert(k, r.offset);
        }
    }
    let mut prev = None;
    for r in got {
        prop_assert_eq!(r, &model[r.offset as usize], "record differs from model");
        prop_assert!(prev.is_none_or(|p| p < r.offset), "offsets not increasing");
        prev = Some(r.offset);
    }
    let present: std::collections::HashSet<u64> = got.iter().map(|r| r.offset).collect();
    for r in &model[from as usize..] {
        let must = match &r.key {
            None => true,
            Some(k) => latest[k.as_slice()] == r.offset,
        };
        if must {
            prop_assert!(present.contains(&r.offset), "record at offset {} lost", r.offset);
        }
    }
    Ok(())
}
