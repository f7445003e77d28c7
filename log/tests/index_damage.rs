//! The offset index is derived data: with it missing, truncated or
//! overwritten with random bytes, every kind of read (a reader from an
//! offset, the system consumer, `samza-log consume --from`) returns exactly
//! the records the segment holds from there, and appends go on at the right
//! offsets.

use std::process::Command;
use std::time::Duration;

use samza_log::system::LogSystemConsumer;
use samza_log::{Log, StartAt, StreamConfig};
use samza_task_api::{SystemConsumer, SystemStreamPartition};

const CLI: &str = env!("CARGO_BIN_EXE_samza-log");
const N: u64 = 200_000;

#[derive(Clone, Copy, Debug)]
enum Damage {
    Missing,
    Truncated,
    RandomBytes,
}

fn damaged(damage: Damage) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let s = log.create_stream("s", &StreamConfig::with_partitions(1)).unwrap();
    let mut p = s.producer();
    for i in 0..N {
        p.send(Some(0), None, Some(format!("v{i}").as_bytes()), 0, &[]).unwrap();
    }
    p.flush().unwrap();
    let index = dir.path().join("s/0/00000000000000000000.index");
    let len = std::fs::metadata(&index).unwrap().len();
    assert!(len >= 32, "the index has entries to damage: {len} bytes");
    match damage {
        Damage::Missing => std::fs::remove_file(&index).unwrap(),
        Damage::Truncated => std::fs::write(&index, &std::fs::read(&index).unwrap()[..5]).unwrap(),
        Damage::RandomBytes => {
            // Deterministic noise, entry-sized, pointing anywhere.
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::write(&index, noise).unwrap();
        }
    }
    (dir, log)
}

fn reader_values(log: &Log, from: u64) -> Vec<String> {
    let mut r = log.stream("s").unwrap().reader(0, StartAt::Offset(from)).unwrap();
    let mut out = Vec::new();
    loop {
        let c = r.read(1 << 20).unwrap();
        if c.is_empty() {
            return out;
        }
        for rec in c.records() {
            out.push(String::from_utf8(rec.unwrap().value.unwrap().to_vec()).unwrap());
        }
    }
}

fn consumer_values(log: &Log, from: u64) -> Vec<String> {
    let mut c = LogSystemConsumer::new(log.clone()).unwrap();
    c.register(&SystemStreamPartition::new("log", "s", 0), from).unwrap();
    let mut out = Vec::new();
    loop {
        let mut buf = Vec::new();
        c.poll(&mut buf, 100_000, Duration::from_millis(50)).unwrap();
        if buf.is_empty() {
            return out;
        }
        out.extend(buf.iter().map(|e| String::from_utf8(e.message.clone().unwrap().to_vec()).unwrap()));
    }
}

fn cli_values(dir: &std::path::Path, from: &str) -> Vec<String> {
    let out =
        Command::new(CLI).args(["--dir"]).arg(dir).args(["consume", "s", "--from", from]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap().to_string())
        .collect()
}

fn expected(from: u64, to: u64) -> Vec<String> {
    (from..to).map(|i| format!("v{i}")).collect()
}

#[test]
fn a_missing_truncated_or_random_index_never_hides_a_record_from_any_read() {
    for damage in [Damage::Missing, Damage::Truncated, Damage::RandomBytes] {
        let (dir, log) = damaged(damage);
        for from in [0, 20_000, 60_000, N - 3, N - 1] {
            assert_eq!(reader_values(&log, from), expected(from, N), "{damage:?}: reader from {from}");
            assert_eq!(consumer_values(&log, from), expected(from, N), "{damage:?}: consumer from {from}");
            assert_eq!(
                cli_values(dir.path(), &from.to_string()),
                expected(from, N),
                "{damage:?}: consume --from {from}"
            );
        }
        assert_eq!(cli_values(dir.path(), "newest"), expected(N - 1, N), "{damage:?}: --from newest");
        // Appends after the damage get the next offsets and are read back.
        let mut p = log.stream("s").unwrap().producer();
        p.send(Some(0), None, Some(format!("v{N}").as_bytes()), 0, &[]).unwrap();
        p.flush().unwrap();
        assert_eq!(
            cli_values(dir.path(), "newest"),
            expected(N, N + 1),
            "{damage:?}: newest after a produce"
        );
        assert_eq!(reader_values(&log, N - 2), expected(N - 2, N + 1), "{damage:?}: reader after a produce");
    }
}
