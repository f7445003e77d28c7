//! Benchmark of the embedded log; prints figures, asserts nothing.
//!
//! `samza-log-bench` (default `run`) measures, on the disk holding `--dir`:
//! append throughput of 100-byte records in batches with one and two writer
//! processes under each fsync policy, sequential read throughput, and the raw
//! sequential write rate of the same disk (`dd conv=fdatasync`) for comparison.
//!
//! `samza-log-bench worker ...` is one appending process: the benchmark's
//! second writer, and the writer that the crash tests kill.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use samza_log::{BatchBuilder, FsyncPolicy, Log, StartAt, StreamConfig};

#[derive(Parser)]
#[command(about = "Benchmark of the embedded log")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark and print figures.
    Run {
        /// Directory for the benchmark's streams (removed afterwards).
        #[arg(long, default_value = "target/log-bench")]
        dir: PathBuf,
        /// Records per run (fsync never / interval).
        #[arg(long, default_value_t = 10_000_000)]
        records: u64,
        /// Records per run with fsync always.
        #[arg(long, default_value_t = 1_000_000)]
        records_always: u64,
        /// Records per appended batch.
        #[arg(long, default_value_t = 1000)]
        batch: u32,
    },
    /// Append records to one partition (one writer process).
    Worker {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        stream: String,
        #[arg(long, default_value_t = 0)]
        partition: u32,
        /// Writer id, written into every value as `id:seq:`.
        #[arg(long, default_value_t = 0)]
        id: u32,
        #[arg(long)]
        records: u64,
        #[arg(long, default_value_t = 1000)]
        batch: u32,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        #[arg(long, default_value = "never")]
        fsync: FsyncPolicy,
        /// Print `ack <last seq> <last offset>` after every acknowledged batch.
        #[arg(long)]
        ack: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        None => run(Path::new("target/log-bench"), 10_000_000, 1_000_000, 1000),
        Some(Cmd::Run { dir, records, records_always, batch }) => run(&dir, records, records_always, batch),
        Some(Cmd::Worker { dir, stream, partition, id, records, batch, value_size, fsync, ack }) => {
            worker(&dir, &stream, partition, id, records, batch, value_size, fsync, ack)
        }
    }
}

/// The value of record `seq` of writer `id`: `id:seq:` padded with `x` to `size` bytes.
fn fill_value(buf: &mut Vec<u8>, id: u32, seq: u64, size: usize) {
    buf.clear();
    write!(buf, "{id}:{seq}:").unwrap();
    buf.resize(size.max(buf.len()), b'x');
}

#[allow(clippy::too_many_arguments)]
fn worker(
    dir: &Path,
    stream: &str,
    partition: u32,
    id: u32,
    records: u64,
    batch: u32,
    value_size: usize,
    fsync: FsyncPolicy,
    ack: bool,
) -> Result<()> {
    let log = Log::open(dir)?;
    let mut writer = log.stream(stream)?.writer_with(partition, fsync)?;
    let mut b = BatchBuilder::with_capacity(batch as usize * (value_size + 16) + 64);
    let mut value = Vec::with_capacity(value_size);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut seq = 0u64;
    while seq < records {
        b.clear();
        let n = u64::from(batch).min(records - seq);
        for i in 0..n {
            fill_value(&mut value, id, seq + i, value_size);
            b.push(None, Some(&value), 0, &[]);
        }
        let a = writer.append(&mut b)?.expect("non-empty batch");
        seq += n;
        if ack {
            writeln!(out, "ack {} {}", seq - 1, a.last_offset)?;
            out.flush()?;
        }
    }
    writer.flush()?;
    Ok(())
}

fn run(dir: &Path, records: u64, records_always: u64, batch: u32) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe()?;
    println!("# samza-log benchmark: 100-byte values, {batch} records per batch, dir {}", dir.display());
    let raw = dd_rate(dir)?;
    println!("raw disk sequential write (dd bs=1M count=1024 conv=fdatasync): {raw:.0} MB/s");
    let log = Log::open(dir)?;
    let policies = [
        (FsyncPolicy::Never, records),
        (FsyncPolicy::Interval(std::time::Duration::from_millis(1000)), records),
        (FsyncPolicy::Always, records_always),
    ];
    for (policy, n) in policies {
        for procs in [1u32, 2] {
            let name = format!("bench-{}-{procs}", policy.to_string().replace(':', "-"));
            let _ = log.delete_stream(&name);
            let stream = log
                .create_stream(&name, &StreamConfig { fsync: policy, ..StreamConfig::with_partitions(1) })?;
            let start = Instant::now();
            if procs == 1 {
                worker(dir, &name, 0, 0, n, batch, 100, policy, false)?;
            } else {
                let children: Vec<_> = (0..procs)
                    .map(|id| {
                        Command::new(&exe)
                            .args(["worker", "--dir"])
                            .arg(dir)
                            .args(["--stream", &name, "--id", &id.to_string(), "--records"])
                            .arg((n / u64::from(procs)).to_string())
                            .args(["--batch", &batch.to_string(), "--fsync", &policy.to_string()])
                            .stdout(Stdio::null())
                            .spawn()
                    })
                    .collect::<Result<_, _>>()?;
                for mut c in children {
                    if !c.wait()?.success() {
                        bail!("worker failed");
                    }
                }
            }
            let secs = start.elapsed().as_secs_f64();
            let bytes = stream.partition_info(0)?.bytes;
            println!(
                "append fsync={policy:<13} processes={procs}: {:>6.2} M records/s  {:>7.1} MB/s  ({n} records, {:.2} s)",
                n as f64 / secs / 1e6,
                bytes as f64 / secs / 1e6,
                secs
            );
            if policy == FsyncPolicy::Never && procs == 1 {
                read_bench(&stream, n)?;
            }
            log.delete_stream(&name)?;
        }
    }
    Ok(())
}

fn read_bench(stream: &samza_log::Stream, expected: u64) -> Result<()> {
    let mut reader = stream.reader(0, StartAt::Oldest)?;
    let start = Instant::now();
    let mut n = 0u64;
    let mut value_bytes = 0u64;
    loop {
        let chunk = reader.read(4 << 20)?;
        if chunk.is_empty() {
            break;
        }
        for r in chunk.records() {
            let r = r?;
            value_bytes += r.value.map_or(0, |v| v.len() as u64);
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    if n != expected {
        bail!("read {n} records, expected {expected}");
    }
    let bytes = stream.partition_info(0)?.bytes;
    println!(
        "sequential read (page cache):            {:>6.2} M records/s  {:>7.1} MB/s  ({n} records, {value_bytes} value bytes, {secs:.2} s)",
        n as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6
    );
    Ok(())
}

/// MB/s of `dd` writing 1 GiB with a final fdatasync, in `dir`.
fn dd_rate(dir: &Path) -> Result<f64> {
    let target = dir.join("dd.bin");
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", "count=1024", "conv=fdatasync"])
        .output()
        .context("cannot run dd")?;
    let _ = std::fs::remove_file(&target);
    let text = String::from_utf8_lossy(&out.stderr);
    // "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 1.234 s, 870 MB/s"
    let secs = text
        .split(", ")
        .find_map(|p| p.strip_suffix(" s").and_then(|s| s.trim().parse::<f64>().ok()))
        .with_context(|| format!("cannot parse dd output: {text}"))?;
    Ok(1073741824.0 / secs / 1e6)
}
