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

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use samza_container::status::{CommitStats, ContainerStatus};
use samza_examples::{arg, arg_or, page_view};
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

    let bench = Bench { dir: dir.clone(), bin, log: log.clone(), streams: never.clone(), repeat };
    let mut results: Vec<(String, u64, &str, f64)> = Vec::new();
    if only.as_deref() != Some("pass") {
        let input = log.create_stream("page-views-by-user", &never).map_err(|e| e.to_string())?;
        let mut p = input.producer();
        let (mut key, mut value) = (String::new(), String::new());
        for i in 0..events {
            page_view(i, users, &mut key, &mut value);
            p.send(None, Some(key.as_bytes()), Some(value.as_bytes()), i as i64, &[])
                .map_err(|e| e.to_string())?;
        }
        p.flush().map_err(|e| e.to_string())?;
        let job = Job {
            label: "keyed count",
            short: "count",
            binary: "page-view-counter",
            class: "count",
            input: "page-views-by-user",
            scratch: "changelog",
            extra: |name| {
                format!(
                    "[stores.counts]\nengine = \"rocksdb\"\nchangelog = \"log.{name}-changelog\"\ncache-entries = 1000000\nwrite-batch-entries = 500000\n"
                )
            },
        };
        bench.pairs(&job, events, &mut results)?;
        let _ = log.delete_stream("page-views-by-user");
    }
    if only.as_deref() != Some("count") {
        let input = log.create_stream("in", &never).map_err(|e| e.to_string())?;
        samza_examples::fill_records(&input, records).map_err(|e| e.to_string())?;
        let job = Job {
            label: "pass-through",
            short: "pass",
            binary: "pass-through",
            class: "pass-through",
            input: "in",
            scratch: "out",
            extra: |name| format!("[params]\noutput = \"log.{name}-out\"\n"),
        };
        bench.pairs(&job, records, &mut results)?;
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

/// One of the benchmark's jobs: which binary and task over which input,
/// and what its job file adds (given the job's name) beside the common part.
struct Job {
    label: &'static str,
    short: &'static str,
    binary: &'static str,
    class: &'static str,
    input: &'static str,
    /// The stream each run writes besides checkpoints, `<job name>-<scratch>`:
    /// created before the run when it is an output, deleted after it.
    scratch: &'static str,
    extra: fn(&str) -> String,
}

/// Where the runs happen.
struct Bench {
    dir: PathBuf,
    bin: PathBuf,
    log: Log,
    /// How the benchmark's streams are created (no fsync: the disk is not measured).
    streams: StreamConfig,
    repeat: u32,
}

impl Bench {
    /// Runs `job` over its `messages` in every mode (see [`order`]), after
    /// syncing the input to disk, adding (job, commit ms, guarantee, msg/s).
    fn pairs(
        &self,
        job: &Job,
        messages: u64,
        results: &mut Vec<(String, u64, &str, f64)>,
    ) -> Result<(), String> {
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        for (commit_ms, g) in order(self.repeat) {
            let name = format!("{}-{}-{commit_ms}", job.short, &g[..1]);
            let scratch = format!("{name}-{}", job.scratch);
            if job.scratch == "out" {
                self.log.create_stream(&scratch, &self.streams).map_err(|e| e.to_string())?;
            }
            let toml = format!(
                "[job]\nname = \"{name}\"\ncontainer-count = 2\nstate-dir = \"state\"\n[package]\nbinary = \"{}\"\n\
                 [task]\nclass = \"{}\"\ninputs = [\"log.{}\"]\ncommit-ms = {commit_ms}\nprocessing-guarantee = \"{g}\"\n\
                 [systems.log]\ntype = \"embedded-log\"\ndir = \"log\"\n[systems.log.streams.{}]\nbounded = true\n{}",
                self.bin.join(job.binary).display(),
                job.class,
                job.input,
                job.input,
                (job.extra)(&name)
            );
            let rate = self.run(&name, &toml, messages, job.label, g, commit_ms)?;
            results.push((job.label.into(), commit_ms, g, rate));
            let _ = self.log.delete_stream(&scratch);
            let _ = self.log.delete_stream(&format!("__samza_checkpoint_{name}"));
        }
        Ok(())
    }

    /// One run of `toml` through samza-run: its rate, printed with the
    /// containers' commit latency.
    fn run(
        &self,
        name: &str,
        toml: &str,
        messages: u64,
        label: &str,
        guarantee: &str,
        commit_ms: u64,
    ) -> Result<f64, String> {
        let dir = &self.dir;
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let out = Command::new(self.bin.join("samza-run")).arg(&path).output().map_err(|e| e.to_string())?;
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
}
