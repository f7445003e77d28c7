//! Benchmark of local state; prints figures, asserts nothing.
//!
//! 1. Keyed count: `--events` page views (default 10 M) over `--users` users
//!    (default 1 M), keyed by user, counted per user by the page-view-counter
//!    job in RocksDB with a changelog, through `samza-run` and 2 containers,
//!    committing every `--commit-ms` (default 1000, the job default).
//! 2. Restore: a changelog of `--restore-mb` MB (default 1024) of 100-byte
//!    values rebuilt into an empty RocksDB store (MB/s of changelog read).
//! 3. Host-affinity reopen of that store (marker current: nothing replayed).
//! 4. The Flink peer (`../shared/peers/flink_keyed_count.py`) on the same events
//!    when `--flink PYTHON` names a Python with apache-flink installed, as
//!    configured by default and `--tuned` (mini-batch and two-phase
//!    aggregation, Flink's recommendation for a GROUP BY); each stopped after
//!    `--flink-timeout-s` (default 1800), the ratio then printed as a bound.
//!
//! The keyed count runs with the job's default guarantee, exactly-once.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use samza_examples::{arg, arg_or, page_view};
use samza_log::{Log, StreamConfig};
use samza_state::restore::{self, ChangelogSource, EngineKind, Marker};
use samza_task_api::{SystemAdmin, SystemStreamPartition};

fn main() {
    if let Err(e) = run() {
        eprintln!("state-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let events: u64 = arg_or("--events", 10_000_000);
    let users: u64 = arg_or("--users", 1_000_000);
    let commit_ms: u64 = arg_or("--commit-ms", 1000);
    let restore_mb: u64 = arg_or("--restore-mb", 1024);
    let dir = PathBuf::from(arg("--dir").unwrap_or_else(|| "target/state-bench".into()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let bin = std::env::current_exe().map_err(|e| e.to_string())?.parent().unwrap().to_path_buf();
    println!("# state benchmark: {events} events over {users} users; restore of {restore_mb} MB");

    // 1. Keyed count through samza-run.
    let log = Log::open(dir.join("log")).map_err(|e| e.to_string())?;
    let never = StreamConfig { fsync: samza_log::FsyncPolicy::Never, ..StreamConfig::with_partitions(2) };
    let input = log.create_stream("page-views-by-user", &never).map_err(|e| e.to_string())?;
    let csv_path = dir.join("pv.csv");
    let mut csv = std::io::BufWriter::new(std::fs::File::create(&csv_path).map_err(|e| e.to_string())?);
    let t = Instant::now();
    let mut p = input.producer();
    let (mut key, mut value) = (String::new(), String::new());
    for i in 0..events {
        use std::io::Write as _;
        let u = page_view(i, users, &mut key, &mut value);
        p.send(None, Some(key.as_bytes()), Some(value.as_bytes()), i as i64, &[])
            .map_err(|e| e.to_string())?;
        let _ = writeln!(csv, "{u},/page-{},{i}", i % 50);
    }
    p.flush().map_err(|e| e.to_string())?;
    drop(csv);
    println!("load input: {:.2} M events/s", events as f64 / t.elapsed().as_secs_f64() / 1e6);
    let job = dir.join("count.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "bench-count"
container-count = 2
state-dir = "state"
[package]
binary = "{}"
[task]
class = "count"
inputs = ["log.page-views-by-user"]
commit-ms = {commit_ms}
[systems.log]
type = "embedded-log"
dir = "log"
[systems.log.streams.page-views-by-user]
bounded = true
[systems.log.streams.user-counts]
partitions = 2
compacted = true
[stores.counts]
engine = "rocksdb"
changelog = "log.counts-changelog"
cache-entries = 1000000
write-batch-entries = 500000
"#,
            bin.join("page-view-counter").display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let out = Command::new(bin.join("samza-run")).arg(&job).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("samza-run failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let secs = t.elapsed().as_secs_f64();
    let ours = events as f64 / secs;
    println!("keyed count, RocksDB + changelog, 2 containers: {:.2} M msg/s ({secs:.2} s)", ours / 1e6);

    // 2. Restore of a large changelog into an empty store.
    let cl = log
        // No compaction in the background while the restore is measured.
        .create_stream(
            "big-changelog",
            &StreamConfig { compacted: true, auto_compact_segments: 0, ..never.clone() },
        )
        .map_err(|e| e.to_string())?;
    let records = restore_mb * 1_000_000 / 120;
    let mut w = cl.writer(0).map_err(|e| e.to_string())?;
    let mut b = samza_log::BatchBuilder::with_capacity(256 * 1024);
    let v = [7u8; 100];
    for i in 0..records {
        b.push(Some(format!("key-{i:012}").as_bytes()), Some(&v), 0, &[]);
        if b.len() == 2000 || i + 1 == records {
            w.append(&mut b).map_err(|e| e.to_string())?;
            b.clear();
        }
    }
    let bytes = cl.partition_info(0).map_err(|e| e.to_string())?.bytes;
    let ssp = SystemStreamPartition::new("log", "big-changelog", 0);
    let admin = samza_log::system::LogSystemAdmin::new(log.clone());
    let store_dir = dir.join("restored");
    let marker = Marker {
        job: "b".into(),
        store: "s".into(),
        task: "t".into(),
        changelog: Some(ssp.clone()),
        offset: 0,
    };
    let source = |admin: &samza_log::system::LogSystemAdmin| -> Result<ChangelogSource, String> {
        Ok(ChangelogSource {
            ssp: ssp.clone(),
            meta: admin.partition_metadata("big-changelog").map_err(|e| e.to_string())?[0],
            consumer: Box::new(
                samza_log::system::LogSystemConsumer::new(log.clone()).map_err(|e| e.to_string())?,
            ),
            timeout: samza_state::restore::DEFAULT_RESTORE_TIMEOUT,
        })
    };
    let t = Instant::now();
    let opened = restore::open(EngineKind::Rocksdb, &store_dir, &marker, Some(source(&admin)?))
        .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "restore from changelog: {:.0} MB/s of changelog ({} records, {:.0} MB in {secs:.2} s, store {:.0} MB on disk)",
        bytes as f64 / secs / 1e6,
        opened.report.records,
        bytes as f64 / 1e6,
        opened.engine.disk_bytes() as f64 / 1e6
    );
    drop(opened);

    // 3. Host-affinity reopen: the marker is current.
    let t = Instant::now();
    let m = Marker { offset: records, ..marker };
    let opened = restore::open(EngineKind::Rocksdb, &store_dir, &m, Some(source(&admin)?))
        .map_err(|e| e.to_string())?;
    println!(
        "host-affinity reopen: {:.3} s ({} mode, {} records replayed)",
        t.elapsed().as_secs_f64(),
        opened.report.mode,
        opened.report.records
    );
    drop(opened);

    // 4. The Flink peer on the same events.
    match arg("--flink") {
        Some(python) => {
            flink(&python, &csv_path, events, ours, false)?;
            flink(&python, &csv_path, events, ours, true)?;
        }
        None => println!("flink peer: skipped (pass --flink PATH-TO-PYTHON with apache-flink installed)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn flink(python: &str, csv: &Path, events: u64, ours: f64, tuned: bool) -> Result<(), String> {
    let label = if tuned { "flink peer, tuned" } else { "flink peer" };
    let script = ["../shared/peers/flink_keyed_count.py", "../../shared/peers/flink_keyed_count.py"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("cannot find shared/peers/flink_keyed_count.py")?;
    // The peer may not finish on large inputs: after `--flink-timeout-s`
    // (default 1800) it is stopped and the ratio printed as a bound.
    let timeout = Duration::from_secs(arg_or("--flink-timeout-s", 1800));
    let out_path = csv.with_extension("flink.out");
    let mut child = Command::new(python)
        .arg(&script)
        .arg(csv)
        .args(["2", "rocksdb"])
        .args(tuned.then_some("--tuned"))
        .stdout(std::fs::File::create(&out_path).map_err(|e| e.to_string())?)
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if started.elapsed() > timeout {
            // SAFETY: the process group of the peer this benchmark started (python and its JVM).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            let bound = events as f64 / timeout.as_secs_f64();
            println!(
                "{label} ({events} events, parallelism 2, RocksDB): did not finish within {} s, so below {:.4} M msg/s; ours / flink > {:.0}x",
                timeout.as_secs(),
                bound / 1e6,
                ours / bound
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&out_path).map_err(|e| e.to_string())?;
    let line = text.lines().last().unwrap_or("");
    let rate: f64 = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("events_per_s="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("flink peer failed: {line}"))?;
    println!(
        "{label} ({events} events, parallelism 2, RocksDB): {:.2} M msg/s; ours / flink = {:.1}x",
        rate / 1e6,
        ours / rate
    );
    Ok(())
}
