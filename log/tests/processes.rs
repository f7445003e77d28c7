//! Several real processes on one log: writers killed with SIGKILL mid-append,
//! two writers on one partition, and a follower in another process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use samza_log::{BatchBuilder, Log, StartAt, StreamConfig};

const BENCH: &str = env!("CARGO_BIN_EXE_samza-log-bench");
const CLI: &str = env!("CARGO_BIN_EXE_samza-log");

fn worker(dir: &Path, stream: &str, id: u32, records: u64, batch: u32, fsync: &str, ack: bool) -> Child {
    let mut cmd = Command::new(BENCH);
    cmd.args(["worker", "--dir"])
        .arg(dir)
        .args(["--stream", stream, "--id", &id.to_string(), "--records", &records.to_string()])
        .args(["--batch", &batch.to_string(), "--fsync", fsync])
        .stdout(Stdio::piped());
    if ack {
        cmd.arg("--ack");
    }
    cmd.spawn().expect("spawn worker")
}

/// Reads every record of partition 0 and returns (writer id, seq) of each, in offset order,
/// checking that offsets are contiguous.
fn read_values(stream: &samza_log::Stream) -> Vec<(u32, u64)> {
    let mut reader = stream.reader(0, StartAt::Oldest).unwrap();
    let mut out = Vec::new();
    let mut expected = 0u64;
    loop {
        let chunk = reader.read(1 << 20).unwrap();
        if chunk.is_empty() {
            break;
        }
        for rec in chunk.records() {
            let rec = rec.expect("no corrupt record");
            assert_eq!(rec.offset, expected, "offsets must be contiguous");
            expected += 1;
            let v = std::str::from_utf8(rec.value.unwrap()).unwrap();
            let mut parts = v.split(':');
            let id: u32 = parts.next().unwrap().parse().unwrap();
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            assert!(parts.next().unwrap().bytes().all(|b| b == b'x'), "value intact: {v}");
            assert_eq!(v.len(), 100);
            out.push((id, seq));
        }
    }
    out
}

#[test]
fn kill_9_mid_append_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    for (round, kill_after_ms) in [30u64, 80, 150, 250, 400].into_iter().enumerate() {
        let name = format!("crash-{round}");
        // Small segments so that kills also land around segment rolls.
        let stream = log
            .create_stream(
                &name,
                &StreamConfig { segment_bytes: 2 << 20, ..StreamConfig::with_partitions(1) },
            )
            .unwrap();
        // Big batches make a kill in the middle of a write likely.
        let mut child = worker(dir.path(), &name, 0, 100_000_000, 4000, "always", true);
        let stdout = child.stdout.take().unwrap();
        let acks = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let mut f = line.split(' ');
                assert_eq!(f.next(), Some("ack"));
                last = Some(f.next().unwrap().parse::<u64>().unwrap());
            }
            last
        });
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last_acked = acks.join().unwrap();

        // A new writer recovers the partition (truncating any torn tail)...
        let mut w = stream.writer(0).unwrap();
        let values = read_values(&stream);
        // ...every acknowledged record is there, in order, exactly once.
        if let Some(last) = last_acked {
            assert!(values.len() as u64 > last, "round {round}: acked {last}, found {}", values.len());
        }
        for (i, (id, seq)) in values.iter().enumerate() {
            assert_eq!((*id, *seq), (0, i as u64), "round {round}");
        }
        assert_eq!(w.next_offset(), values.len() as u64);
        // And the partition takes appends again right after the recovered tail.
        let mut b = BatchBuilder::new();
        b.push(None, Some(b"after"), 0, &[]);
        let a = w.append(&mut b).unwrap().unwrap();
        assert_eq!(a.base_offset, values.len() as u64);
        eprintln!(
            "round {round}: killed after {kill_after_ms} ms, {} records, last ack {last_acked:?}",
            values.len()
        );
    }
}

#[test]
fn two_writer_processes_never_interleave_lose_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log
        .create_stream("shared", &StreamConfig { segment_bytes: 1 << 20, ..StreamConfig::with_partitions(1) })
        .unwrap();
    const PER_WRITER: u64 = 300_000;
    // Different batch sizes so that appends of the two interleave unevenly.
    let mut a = worker(dir.path(), "shared", 1, PER_WRITER, 700, "never", false);
    let mut b = worker(dir.path(), "shared", 2, PER_WRITER, 1300, "never", false);
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());

    let values = read_values(&stream);
    assert_eq!(values.len() as u64, 2 * PER_WRITER);
    let mut next = [0u64; 3];
    let mut switches = 0;
    let mut prev = 0;
    for (id, seq) in values {
        assert!(id == 1 || id == 2);
        assert_eq!(seq, next[id as usize], "writer {id}: records in order, none lost or repeated");
        next[id as usize] += 1;
        if id != prev {
            switches += 1;
            prev = id;
        }
    }
    assert_eq!(next, [0, PER_WRITER, PER_WRITER]);
    eprintln!("writers alternated {switches} times; {} segments", stream.partition_info(0).unwrap().segments);
    assert!(stream.partition_info(0).unwrap().segments > 10, "rolls happened under concurrent writers");
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the command name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn follower_in_another_process_sees_appends_within_milliseconds_without_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log.create_stream("live", &StreamConfig::with_partitions(2)).unwrap();
    let mut child = Command::new(CLI)
        .arg("--dir")
        .arg(dir.path())
        .args(["consume", "live", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut w = stream.writer(1).unwrap();
    let mut send = |i: u32| {
        let mut b = BatchBuilder::new();
        b.push(Some(b"k"), Some(format!("v{i}").as_bytes()), 0, &[]);
        w.append(&mut b).unwrap();
    };
    // The first record proves the follower is up.
    send(0);
    assert_eq!(lines.next().unwrap().unwrap(), "1\t0\tk\tv0");

    // Idle: the follower must sleep, not spin.
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_millis(1000));
    let idle_ticks = cpu_ticks(child.id()) - before;
    assert!(idle_ticks <= 5, "follower used {idle_ticks} ticks of CPU in 1 s idle");

    let mut latencies = Vec::new();
    for i in 1..=30 {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        send(i);
        assert_eq!(lines.next().unwrap().unwrap(), format!("1\t{i}\tk\tv{i}"));
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    eprintln!("append-to-follower latency: median {median:?}, max {:?}", latencies.last().unwrap());
    assert!(median < Duration::from_millis(20), "median wake-up latency {median:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}
