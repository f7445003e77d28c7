//! What exactly-once costs, side by side in one run; prints figures, asserts nothing.
//!
//! Two jobs through `samza-run` and 2 containers, each with
//! `task.processing-guarantee` = exactly-once and at-least-once, committing
//! every 1 s (the default) and every 100 ms:
//!
//! - keyed count: `--events` page views (default 10 M) over `--users`
//!   users (default 1 M), counted per user by the page-view-counter in
//!   RocksDB with a changelog (the `state-bench` job);
//! - pass-through: `--records` 100-byte records (default 10 M) copied to an
//!   output stream (the `pipeline-bench` job).
//!
//! Each line gives messages/s from `samza-run`'s start to its exit and the
//! containers' commit latency (p50 / p99 / max of their commits, from their
//! status files). `--only count` or `--only pass` runs one job. Each pair
//! runs `--repeat` times (default 2), in alternating order, after the input
//! is synced to disk, so neither mode pays more often for the writeback of
//! what was written before it; the ratios compare the means.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use samza_container::status::{CommitStats, ContainerStatus};
use samza_examples::{arg, arg_or, user_of};
use samza_log::{FsyncPolicy, Log, StreamConfig};

fn main() {
    if let Err(e) = run() {
        eprintln!("eos-bench: {e}");
        std::process::exit(1);
    }
}

const GUARANTEES: [&str; 2] = ["exactly-once", "at-least-once"];

fn run() -> Result<(), String> {
    let events: u64 = arg_or("--events", 10_000_000);
    let users: u64 = arg_or("--users", 1_000_000);
    let records: u64 = arg_or("--records", 10_000_000);
    let only = arg("--only");
    let repeat: u32 = arg_or("--repeat", 2);
    let bin = std::env::current_exe().map_err(|e| e.to_string())?.parent().unwrap().to_path_buf();
    for b in ["samza-run", "page-view-counter", "pass-through"] {
        if !bin.join(b).is_file() {
            return Err(format!("{} is missing: cargo build --release --workspace", bin.join(b).display()));
        }
    }
    let dir = PathBuf::from(arg("--dir").unwrap_or_else(|| "target/eos-bench".into()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let log = Log::open(dir.join("log")).map_err(|e| e.to_string())?;
    let never = StreamConfig { fsync: FsyncPolicy::Never, ..StreamConfig::with_partitions(2) };
    println!("# exactly-once benchmark: keyed count of {events} events over {users} users; pass-through of {records} records; 2 containers");

    let mut results: Vec<(String, u64, &str, f64)> = Vec::new();
    if only.as_deref() != Some("pass") {
        load_page_views(&log, &never, events, users)?;
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        for (commit_ms, g) in order(repeat) {
            {
                let name = format!("count-{}-{commit_ms}", &g[..1]);
                let job = format!(
                    r#"[job]
name = "{name}"
container-count = 2
state-dir = "state"
[package]
binary = "{}"
[task]
class = "count"
inputs = ["log.page-views-by-user"]
commit-ms = {commit_ms}
processing-guarantee = "{g}"
[systems.log]
type = "embedded-log"
dir = "log"
[systems.log.streams.page-views-by-user]
bounded = true
[stores.counts]
engine = "rocksdb"
changelog = "log.{name}-changelog"
cache-entries = 1000000
write-batch-entries = 500000
"#,
                    bin.join("page-view-counter").display()
                );
                let rate = run_job(&dir, &bin, &name, &job, events, "keyed count", g, commit_ms)?;
                results.push(("keyed count".into(), commit_ms, g, rate));
                let _ = log.delete_stream(&format!("{name}-changelog"));
                let _ = log.delete_stream(&format!("__samza_checkpoint_{name}"));
            }
        }
        let _ = log.delete_stream("page-views-by-user");
    }
    if only.as_deref() != Some("count") {
        load_records(&log, &never, records)?;
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        for (commit_ms, g) in order(repeat) {
            {
                let name = format!("pass-{}-{commit_ms}", &g[..1]);
                log.create_stream(&format!("{name}-out"), &never).map_err(|e| e.to_string())?;
                let job = format!(
                    r#"[job]
name = "{name}"
container-count = 2
state-dir = "state"
[package]
binary = "{}"
[task]
class = "pass-through"
inputs = ["log.in"]
commit-ms = {commit_ms}
processing-guarantee = "{g}"
[systems.log]
type = "embedded-log"
dir = "log"
[systems.log.streams.in]
bounded = true
[params]
output = "log.{name}-out"
"#,
                    bin.join("pass-through").display()
                );
                let rate = run_job(&dir, &bin, &name, &job, records, "pass-through", g, commit_ms)?;
                results.push(("pass-through".into(), commit_ms, g, rate));
                let _ = log.delete_stream(&format!("{name}-out"));
                let _ = log.delete_stream(&format!("__samza_checkpoint_{name}"));
            }
        }
    }
    println!("# exactly-once / at-least-once, means of {repeat} runs each");
    for job in ["keyed count", "pass-through"] {
        for commit_ms in [1000, 100] {
            let mean = |g: &str| {
                let v: Vec<f64> = results
                    .iter()
                    .filter(|r| r.0 == job && r.1 == commit_ms && r.2 == g)
                    .map(|r| r.3)
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            if let (Some(eos), Some(alo)) = (mean(GUARANTEES[0]), mean(GUARANTEES[1])) {
                println!(
                    "{job:<12} commit {commit_ms:>4} ms: {:.2} vs {:.2} M msg/s = {:.1}%",
                    eos / 1e6,
                    alo / 1e6,
                    eos / alo * 100.0
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// (commit interval, guarantee) for every run: each pair `repeat` times,
/// which mode goes first alternating.
fn order(repeat: u32) -> Vec<(u64, &'static str)> {
    let mut runs = Vec::new();
    for commit_ms in [1000, 100] {
        for r in 0..repeat {
            let (a, b) = if r % 2 == 0 { (0, 1) } else { (1, 0) };
            runs.push((commit_ms, GUARANTEES[a]));
            runs.push((commit_ms, GUARANTEES[b]));
        }
    }
    runs
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    dir: &Path,
    bin: &Path,
    name: &str,
    toml: &str,
    messages: u64,
    label: &str,
    guarantee: &str,
    commit_ms: u64,
) -> Result<f64, String> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let out = Command::new(bin.join("samza-run")).arg(&path).output().map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("samza-run {name} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut commits: Vec<CommitStats> = Vec::new();
    for c in 0..2 {
        let status = samza_container::layout::status_file(&dir.join("state"), name, c);
        if let Some(s) = ContainerStatus::read(&status) {
            commits.push(s.commits);
        }
    }
    let ms = |f: fn(&CommitStats) -> u64| commits.iter().map(f).max().unwrap_or(0) as f64 / 1000.0;
    let rate = messages as f64 / secs;
    println!(
        "{label:<12} {guarantee:<13} commit {commit_ms:>4} ms: {:>5.2} M msg/s ({secs:>5.2} s); commit latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} commits)",
        rate / 1e6,
        ms(|c| c.p50_us),
        ms(|c| c.p99_us),
        ms(|c| c.max_us),
        commits.iter().map(|c| c.count).sum::<u64>()
    );
    let _ = std::fs::remove_dir_all(dir.join("state").join(name));
    Ok(rate)
}

fn load_page_views(log: &Log, cfg: &StreamConfig, events: u64, users: u64) -> Result<(), String> {
    let input = log.create_stream("page-views-by-user", cfg).map_err(|e| e.to_string())?;
    let mut p = input.producer();
    let mut value = String::new();
    let mut key = String::new();
    for i in 0..events {
        use std::fmt::Write as _;
        let u = user_of(i, users);
        value.clear();
        key.clear();
        let _ = write!(value, r#"{{"user":"user-{u}","page":"/page-{}","time":{i}}}"#, i % 50);
        let _ = write!(key, "user-{u}");
        p.send(None, Some(key.as_bytes()), Some(value.as_bytes()), i as i64, &[])
            .map_err(|e| e.to_string())?;
    }
    p.flush().map_err(|e| e.to_string())
}

fn load_records(log: &Log, cfg: &StreamConfig, records: u64) -> Result<(), String> {
    let input = log.create_stream("in", cfg).map_err(|e| e.to_string())?;
    let value = [b'x'; 100];
    for p in 0..2u32 {
        let mut w = input.writer(p).map_err(|e| e.to_string())?;
        let mut b = samza_log::BatchBuilder::with_capacity(128 * 1024);
        let n = records / 2 + u64::from(u64::from(p) < records % 2);
        for i in 0..n {
            b.push(None, Some(&value), 0, &[]);
            if b.len() == 1000 || i + 1 == n {
                w.append(&mut b).map_err(|e| e.to_string())?;
                b.clear();
            }
        }
    }
    Ok(())
}
