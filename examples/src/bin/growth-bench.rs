//! Benchmark of what a long-lived job accumulates; prints figures, asserts nothing.
//!
//! A container's start reads every checkpoint in its job's checkpoint stream,
//! and a full restore replays a store's whole changelog. Both streams are
//! compacted, so what they hold depends on compaction. This writes, on the
//! embedded log:
//!
//! - a day's checkpoints of `--tasks` tasks (default 4), one per task per
//!   second (`--checkpoints`, default 86 400 per task), as the run loop
//!   writes them;
//! - a changelog of `--keys` keys (default 100 000) rewritten `--rewrites`
//!   times (default 10),
//!
//! then times a container's start (`samza-run` of a job of the `no-op` task,
//! `pass-through` binary, over an empty bounded input: it reads the
//! checkpoints, starts its tasks and stops), the checkpoint read alone, and
//! a full restore of the store into an empty RocksDB, once as written (no
//! compaction) and once after the compaction the writers run by themselves
//! has caught up. Build the workspace first (`cargo build --release
//! --workspace`): it runs `samza-run` and `pass-through` from beside itself.

use std::path::PathBuf;
use std::time::Instant;

use samza_container::checkpoint::{self, Checkpoint, CheckpointEntry};
use samza_examples::{arg, arg_or};
use samza_log::system::{EmbeddedLogConfig, EmbeddedLogFactory};
use samza_log::{BatchBuilder, Log, StreamConfig};
use samza_state::restore::{self, ChangelogSource, EngineKind, Marker};
use samza_task_api::{SystemFactory, SystemStream, SystemStreamPartition, TaskName};

fn main() {
    if let Err(e) = run() {
        eprintln!("growth-bench: {e}");
        std::process::exit(1);
    }
}

struct Figures {
    records: u64,
    bytes: u64,
    segments: usize,
    seconds: f64,
}

fn run() -> Result<(), String> {
    let tasks: u32 = arg_or("--tasks", 4);
    let checkpoints: u64 = arg_or("--checkpoints", 86_400);
    let keys: u64 = arg_or("--keys", 100_000);
    let rewrites: u64 = arg_or("--rewrites", 10);
    let dir = PathBuf::from(arg("--dir").unwrap_or_else(|| "target/growth-bench".into()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let log = Log::open(dir.join("log")).map_err(|e| e.to_string())?;
    let system = EmbeddedLogConfig::at(dir.join("log"));
    println!(
        "# a day of checkpoints ({tasks} tasks x {checkpoints}) and a changelog of {keys} keys written {rewrites} times"
    );

    // Segments of 1 MB: the day's checkpoints span many sealed segments, as
    // hourly sealing would make them (auto compaction off: compacted below).
    let config = StreamConfig {
        compacted: true,
        segment_bytes: 1 << 20,
        auto_compact_segments: 0,
        ..StreamConfig::with_partitions(1)
    };
    let cp_stream = SystemStream::new("log", "__samza_checkpoint_growth");
    let views = StreamConfig::with_partitions(tasks);
    log.create_stream("page-views", &views).map_err(|e| e.to_string())?;
    let job = write_job(&dir, tasks)?;
    log.create_stream(&cp_stream.stream, &config).map_err(|e| e.to_string())?;
    let mut producer = EmbeddedLogFactory.producer("log", &system).map_err(|e| e.to_string())?;
    let input = SystemStream::new("log", "page-views");
    for second in 0..checkpoints {
        for t in 0..tasks {
            let cp = Checkpoint {
                offsets: vec![CheckpointEntry { ssp: input.partition(t), offset: second * 1000 }],
                generation: Some(1),
            };
            checkpoint::write(producer.as_mut(), &cp_stream, &TaskName::new(format!("Partition {t}")), &cp)
                .map_err(|e| e.to_string())?;
        }
    }
    producer.flush().map_err(|e| e.to_string())?;

    let cl = log.create_stream("counts-changelog", &config).map_err(|e| e.to_string())?;
    let mut w = cl.writer(0).map_err(|e| e.to_string())?;
    let mut b = BatchBuilder::new();
    for round in 0..rewrites {
        for k in 0..keys {
            let key = format!("user-{k}");
            b.push(Some(key.as_bytes()), Some(&(round as i64).to_be_bytes()), 0, &[]);
            if b.len() == 1000 {
                w.append(&mut b).map_err(|e| e.to_string())?;
                b.clear();
            }
        }
    }
    w.append(&mut b).map_err(|e| e.to_string())?;
    w.flush().map_err(|e| e.to_string())?;

    for compacted in [false, true] {
        if compacted {
            let t = Instant::now();
            for s in [&cp_stream.stream[..], "counts-changelog"] {
                log.stream(s).and_then(|s| s.compact(0)).map_err(|e| e.to_string())?;
            }
            println!("compaction of both streams: {:.2} s", t.elapsed().as_secs_f64());
        }
        let label = if compacted { "compacted" } else { "as written" };
        let started = container_start(&job)?;
        println!("{label}: container start to stop (samza-run, no input): {started:.3} s");
        let cp = read_checkpoints(&log, &system, &cp_stream)?;
        println!(
            "{label}: checkpoint read (container start): {:.3} s over {} records, {:.1} MB in {} segments",
            cp.seconds,
            cp.records,
            cp.bytes as f64 / 1e6,
            cp.segments
        );
        let r = full_restore(&log, &system, &dir, compacted)?;
        println!(
            "{label}: full restore: {:.2} s, {} changelog records replayed ({:.1} MB in {} segments)",
            r.seconds,
            r.records,
            r.bytes as f64 / 1e6,
            r.segments
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A job of the no-op task over the empty, bounded `page-views`, whose
/// checkpoints are the ones written above.
fn write_job(dir: &std::path::Path, tasks: u32) -> Result<PathBuf, String> {
    let bin = std::env::current_exe().map_err(|e| e.to_string())?.parent().unwrap().to_path_buf();
    let toml = format!(
        "[job]\nname = \"growth\"\nstate-dir = \"state\"\n[package]\nbinary = \"{}\"\n[task]\nclass = \"no-op\"\ninputs = [\"log.page-views\"]\n[systems.log]\ntype = \"embedded-log\"\ndir = \"log\"\n[systems.log.streams.page-views]\nbounded = true\npartitions = {tasks}\n",
        bin.join("pass-through").display()
    );
    let path = dir.join("growth.toml");
    std::fs::write(&path, toml).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Seconds from `samza-run job.toml` to its end (the container reads every
/// checkpoint, finds no input and stops).
fn container_start(job: &std::path::Path) -> Result<f64, String> {
    let bin = std::env::current_exe().map_err(|e| e.to_string())?.parent().unwrap().join("samza-run");
    let t = Instant::now();
    let out = std::process::Command::new(&bin)
        .arg(job)
        .output()
        .map_err(|e| format!("cannot run {} (build the workspace first): {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!("samza-run failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(t.elapsed().as_secs_f64())
}

fn read_checkpoints(log: &Log, system: &EmbeddedLogConfig, stream: &SystemStream) -> Result<Figures, String> {
    let admin = EmbeddedLogFactory.admin("log", system).map_err(|e| e.to_string())?;
    let consumer = EmbeddedLogFactory.consumer("log", system).map_err(|e| e.to_string())?;
    let info = log.stream(&stream.stream).and_then(|s| s.partition_info(0)).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let latest = checkpoint::read_all(admin.as_ref(), consumer, stream).map_err(|e| e.to_string())?;
    let seconds = t.elapsed().as_secs_f64();
    if latest.is_empty() {
        return Err("no checkpoint read".into());
    }
    Ok(Figures { records: count(log, &stream.stream)?, bytes: info.bytes, segments: info.segments, seconds })
}

fn full_restore(
    log: &Log,
    system: &EmbeddedLogConfig,
    dir: &std::path::Path,
    compacted: bool,
) -> Result<Figures, String> {
    let admin = EmbeddedLogFactory.admin("log", system).map_err(|e| e.to_string())?;
    let info = log.stream("counts-changelog").and_then(|s| s.partition_info(0)).map_err(|e| e.to_string())?;
    let store_dir = dir.join(format!("store-{compacted}"));
    let marker = Marker {
        job: "growth".into(),
        store: "counts".into(),
        task: "Partition 0".into(),
        changelog: Some(SystemStreamPartition::new("log", "counts-changelog", 0)),
        offset: 0,
    };
    let source = ChangelogSource {
        ssp: SystemStreamPartition::new("log", "counts-changelog", 0),
        meta: admin.partition_metadata("counts-changelog").map_err(|e| e.to_string())?[0],
        consumer: EmbeddedLogFactory.consumer("log", system).map_err(|e| e.to_string())?,
        timeout: samza_state::restore::DEFAULT_RESTORE_TIMEOUT,
    };
    let t = Instant::now();
    let opened =
        restore::open(EngineKind::Rocksdb, &store_dir, &marker, Some(source)).map_err(|e| e.to_string())?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(Figures { records: opened.report.records, bytes: info.bytes, segments: info.segments, seconds })
}

/// Records readable in partition 0 of `stream`.
fn count(log: &Log, stream: &str) -> Result<u64, String> {
    let s = log.stream(stream).map_err(|e| e.to_string())?;
    let mut r = s.reader(0, samza_log::StartAt::Oldest).map_err(|e| e.to_string())?;
    let mut n = 0;
    loop {
        let c = r.read(1 << 20).map_err(|e| e.to_string())?;
        if c.is_empty() {
            return Ok(n);
        }
        n += c.records().count() as u64;
    }
}
