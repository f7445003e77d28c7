//! Benchmark of a whole job: prints figures, asserts nothing.
//!
//! Writes `--records` 100-byte records into stream `in` of an embedded log,
//! then runs `samza-run` on a pass-through job (read each record, write it to
//! `out`) over bounded input, through real container processes, and reports
//! end-to-end messages per second; then the same with a no-op task, which is
//! the run loop's own per-message cost (poll, choose, process, checkpoint).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use samza_examples::{arg, arg_or};

fn main() {
    if let Err(e) = run() {
        eprintln!("pipeline-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let records: u64 = arg_or("--records", 10_000_000);
    let partitions: u32 = arg_or("--partitions", 2);
    let containers: u32 = arg_or("--containers", 2);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin_dir = exe.parent().unwrap();
    let samza_run = bin_dir.join("samza-run");
    let job_bin = bin_dir.join("pass-through");
    for b in [&samza_run, &job_bin] {
        if !b.is_file() {
            return Err(format!(
                "{} is missing: cargo build --release -p samza-examples -p samza-container",
                b.display()
            ));
        }
    }
    let dir = PathBuf::from(arg("--dir").unwrap_or_else(|| "target/pipeline-bench".into()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    println!("# pipeline benchmark: {records} records of 100 bytes, {partitions} partitions, {containers} containers");

    let start = Instant::now();
    fill(&dir.join("log"), records, partitions)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "load input (one producer, fsync never):      {:>6.2} M msg/s ({secs:.2} s)",
        records as f64 / secs / 1e6
    );

    for (class, label) in
        [("pass-through", "pass-through job end to end"), ("no-op", "no-op task (run loop only)")]
    {
        let job = write_job(&dir, &job_bin, class, containers)?;
        let start = Instant::now();
        let out = Command::new(&samza_run).arg(&job).output().map_err(|e| e.to_string())?;
        let secs = start.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(format!("samza-run failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let rate = records as f64 / secs;
        println!(
            "{label:<44} {:>6.2} M msg/s ({secs:.2} s wall, {:.0} ns per message per container)",
            rate / 1e6,
            1e9 * secs * f64::from(containers.min(2)) / records as f64
        );
        if class == "pass-through" {
            let log = samza_log::Log::open(dir.join("log")).map_err(|e| e.to_string())?;
            let out = log.stream("out").map_err(|e| e.to_string())?;
            // Records, not offsets: commit markers take offsets too (exactly-once).
            let mut n = 0u64;
            for p in 0..partitions {
                let mut r = out.reader(p, samza_log::StartAt::Oldest).map_err(|e| e.to_string())?;
                loop {
                    let chunk = r.read(1 << 20).map_err(|e| e.to_string())?;
                    if chunk.is_empty() {
                        break;
                    }
                    n += chunk.records().count() as u64;
                }
            }
            if n != records {
                return Err(format!("output holds {n} records, expected {records}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn fill(log_dir: &Path, records: u64, partitions: u32) -> Result<(), String> {
    let log = samza_log::Log::open(log_dir).map_err(|e| e.to_string())?;
    let cfg = samza_log::StreamConfig {
        fsync: samza_log::FsyncPolicy::Never,
        ..samza_log::StreamConfig::with_partitions(partitions)
    };
    let input = log.create_stream("in", &cfg).map_err(|e| e.to_string())?;
    log.create_stream("out", &cfg).map_err(|e| e.to_string())?;
    samza_examples::fill_records(&input, records).map_err(|e| e.to_string())
}

fn write_job(dir: &Path, bin: &Path, class: &str, containers: u32) -> Result<PathBuf, String> {
    let path = dir.join(format!("{class}.toml"));
    let toml = format!(
        r#"[job]
name = "bench-{class}"
container-count = {containers}
state-dir = "state"

[package]
binary = "{}"

[task]
class = "{class}"
inputs = ["log.in"]
commit-ms = 1000

[systems.log]
type = "embedded-log"
dir = "log"

[systems.log.streams.in]
bounded = true

[params]
output = "log.out"
"#,
        bin.display()
    );
    std::fs::write(&path, toml).map_err(|e| e.to_string())?;
    Ok(path)
}
