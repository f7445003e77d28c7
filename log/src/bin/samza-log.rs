//! `samza-log`: create, inspect, feed and read streams of the embedded log.

use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use samza_log::{FsyncPolicy, Log, StartAt, StreamConfig, Watcher};

#[derive(Parser)]
#[command(name = "samza-log", version, about = "Create, inspect, feed and read streams of the embedded log")]
struct Cli {
    /// Directory of the log (holds one directory per stream).
    #[arg(long, global = true, env = "SAMZA_LOG_DIR", default_value = "samza-data/log")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the producers that write transactions (a job's containers): the
    /// generation that owns each, its last committed transaction, the
    /// partitions it wrote, older generations not yet finished.
    Transactions,
    /// Finish PRODUCER's transactions as its next start would: its last
    /// commit becomes visible everywhere, whatever it had open is aborted,
    /// and its current generation is fenced. For a job stopped for good
    /// whose open transaction holds its readers back.
    FinishTransactions { producer: String },
    /// Create a stream with a fixed number of partitions.
    Create {
        stream: String,
        /// Number of partitions (fixed for the life of the stream).
        #[arg(long, short)]
        partitions: u32,
        /// Keep only the latest record per key (for changelogs).
        #[arg(long)]
        compacted: bool,
        /// Delete the oldest segments while a partition is larger than this many bytes.
        #[arg(long)]
        retention_bytes: Option<u64>,
        /// Delete segments whose last append is older than this many milliseconds.
        #[arg(long)]
        retention_ms: Option<u64>,
        /// Size at which a segment is sealed and a new one started.
        #[arg(long, default_value_t = 128 << 20)]
        segment_bytes: u64,
        /// How long compaction keeps tombstones, in milliseconds.
        #[arg(long, default_value_t = 24 * 3600 * 1000)]
        delete_retention_ms: u64,
        /// Default sync policy of writers: always, never or interval:<ms>.
        #[arg(long, default_value = "interval:1000")]
        fsync: FsyncPolicy,
        /// Seal the active segment once it has held records this long, in
        /// milliseconds (default: by size only; compacted streams hourly).
        #[arg(long)]
        segment_ms: Option<u64>,
        /// Compacted streams: a writer compacts after sealing this many
        /// segments (0: only `samza-log compact` does).
        #[arg(long, default_value_t = 4)]
        auto_compact_segments: u32,
    },
    /// List streams.
    List,
    /// Show a stream's settings and, per partition, its offsets, segments and bytes.
    Describe {
        stream: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a stream and all its data.
    Delete { stream: String },
    /// Append lines of stdin (or a file) as records, one record per line.
    ///
    /// Without a key option records have no key and are spread round-robin
    /// (or all go to --partition). With a key, the partition is the stable key
    /// hash modulo the partition count, as everywhere in the project.
    Produce {
        stream: String,
        /// Read lines from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Each line is KEY<SEP>VALUE; the key is the text before the first SEP.
        #[arg(long, conflicts_with = "key_field")]
        key_separator: Option<String>,
        /// Each line is a JSON object; the key is this field's value (strings unquoted).
        #[arg(long)]
        key_field: Option<String>,
        /// Write every record to this partition.
        #[arg(long)]
        partition: Option<u32>,
        /// Sync policy for this producer (default: the stream's).
        #[arg(long)]
        fsync: Option<FsyncPolicy>,
    },
    /// Print records as `partition<TAB>offset<TAB>key<TAB>value`.
    Consume {
        stream: String,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<u32>,
        /// Where to start: oldest, newest (the last record), upcoming, or an offset.
        #[arg(long, default_value = "oldest")]
        from: String,
        /// Keep waiting for new records instead of stopping at the end.
        #[arg(long, short)]
        follow: bool,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<u64>,
        /// Also print each record's timestamp (ms since the epoch) after the offset.
        #[arg(long)]
        timestamps: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also print records of transactions not committed yet, and of
        /// aborted ones (by default only committed records are shown).
        #[arg(long)]
        read_uncommitted: bool,
    },
    /// Print the latest value of KEY (read from the partition the key hashes to).
    ///
    /// Meant for compacted, keyed streams such as a job's per-key results:
    /// `samza-log get user-counts user-42`. Exits with 1 when the key is absent
    /// or its latest record is a tombstone.
    Get { stream: String, key: String },
    /// Apply retention and, for compacted streams, compact every partition.
    Compact { stream: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("samza-log: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let log = Log::open(&cli.dir)?;
    match cli.command {
        Command::Create {
            stream,
            partitions,
            compacted,
            retention_bytes,
            retention_ms,
            segment_bytes,
            delete_retention_ms,
            fsync,
            segment_ms,
            auto_compact_segments,
        } => {
            let config = StreamConfig {
                partitions,
                compacted,
                retention_bytes,
                retention_ms,
                segment_bytes,
                delete_retention_ms,
                fsync,
                segment_ms,
                auto_compact_segments,
                ..StreamConfig::default()
            };
            log.create_stream(&stream, &config)?;
            println!("created stream {stream} with {partitions} partitions");
        }
        Command::List => {
            for name in log.streams()? {
                let s = log.stream(&name)?;
                println!(
                    "{name}\t{} partitions{}",
                    s.partitions(),
                    if s.config().compacted { "\tcompacted" } else { "" }
                );
            }
        }
        Command::Describe { stream, json } => describe(&log, &stream, json)?,
        Command::Delete { stream } => {
            log.delete_stream(&stream)?;
            println!("deleted stream {stream}");
        }
        Command::Produce { stream, file, key_separator, key_field, partition, fsync } => {
            produce(&log, &stream, file, key_separator, key_field, partition, fsync)?
        }
        Command::Consume { stream, partition, from, follow, max, timestamps, format, read_uncommitted } => {
            let opts = ConsumeOptions { follow, max, timestamps, format, read_uncommitted };
            consume(&log, &stream, partition, &from, opts)?
        }
        Command::Get { stream, key } => {
            let s = log.stream(&stream)?;
            let p = samza_task_api::partition_for_key(key.as_bytes(), s.partitions());
            let mut reader = s.reader(p, StartAt::Oldest)?;
            let mut latest: Option<Option<Vec<u8>>> = None;
            loop {
                let chunk = reader.read(1 << 20)?;
                if chunk.is_empty() {
                    break;
                }
                for rec in chunk.records() {
                    let rec = rec?;
                    if rec.key == Some(key.as_bytes()) {
                        latest = Some(rec.value.map(<[u8]>::to_vec));
                    }
                }
            }
            match latest {
                Some(Some(v)) => println!("{}", String::from_utf8_lossy(&v)),
                _ => {
                    eprintln!("samza-log: no value for key {key:?} in {stream} (partition {p})");
                    std::process::exit(1);
                }
            }
        }
        Command::Transactions => {
            for t in samza_log::txn::identities(log.root())? {
                let unfinished: Vec<String> = t.unfinished.iter().map(|g| g.generation.to_string()).collect();
                println!(
                    "{}\tgeneration {}\tcommitted {}\tpartitions {}\tunfinished [{}]",
                    t.identity,
                    t.current.generation,
                    t.current.committed,
                    t.current.partitions.len(),
                    unfinished.join(",")
                );
            }
        }
        Command::FinishTransactions { producer } => {
            let Some(t) =
                samza_log::txn::identities(log.root())?.into_iter().find(|t| t.identity == producer)
            else {
                anyhow::bail!("no producer {producer:?} writes transactions in {}", log.root().display());
            };
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
            let owner = samza_task_api::ProducerOwner {
                id: producer.clone(),
                epoch: (t.current.generation + 1).max(now),
            };
            let mut p = samza_log::system::LogSystemProducer::new(log.clone());
            samza_task_api::SystemProducer::init_transactions(&mut p, &owner)?;
            let partitions: usize = t.unfinished.iter().chain([&t.current]).map(|g| g.partitions.len()).sum();
            println!(
                "finished {producer}: generation {} fenced, transaction {} committed and {} aborted in {partitions} partitions",
                t.current.generation,
                t.current.committed,
                t.current.committed + 1
            );
        }
        Command::Compact { stream } => {
            let s = log.stream(&stream)?;
            let deleted = s.apply_retention()?;
            let mut rewritten = 0;
            let mut removed = 0;
            for p in 0..s.partitions() {
                let st = s.compact(p)?;
                rewritten += st.segments_rewritten;
                removed += st.records_removed;
            }
            println!("{stream}: {deleted} segments deleted by retention, {rewritten} segments compacted, {removed} records removed");
        }
    }
    Ok(())
}

fn describe(log: &Log, name: &str, json: bool) -> Result<()> {
    let s = log.stream(name)?;
    let infos = (0..s.partitions()).map(|p| s.partition_info(p)).collect::<Result<Vec<_>, _>>()?;
    if json {
        let v = serde_json::json!({ "stream": name, "config": s.config(), "partitions": infos });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let c = s.config();
    println!(
        "stream {name}: {} partitions, compacted {}, fsync {}, segment_bytes {}",
        c.partitions, c.compacted, c.fsync, c.segment_bytes
    );
    println!(
        "retention: bytes {}, ms {}",
        c.retention_bytes.map_or("none".into(), |b| b.to_string()),
        c.retention_ms.map_or("none".into(), |b| b.to_string())
    );
    println!("partition\toldest\tupcoming\tsegments\tbytes");
    for i in infos {
        println!("{}\t{}\t{}\t{}\t{}", i.partition, i.oldest, i.upcoming, i.segments, i.bytes);
    }
    Ok(())
}

fn produce(
    log: &Log,
    name: &str,
    file: Option<PathBuf>,
    key_separator: Option<String>,
    key_field: Option<String>,
    partition: Option<u32>,
    fsync: Option<FsyncPolicy>,
) -> Result<()> {
    let stream = log.stream(name)?;
    let mut producer = stream.producer();
    if let Some(f) = fsync {
        producer.set_fsync(f);
    }
    let input: Box<dyn BufRead> = match &file {
        Some(path) => Box::new(io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(io::stdin().lock()),
    };
    let source = file.as_ref().map_or("stdin".to_string(), |p| p.display().to_string());
    let mut count = 0u64;
    let result = (|| -> Result<()> {
        for (i, line) in input.lines().enumerate() {
            let line = line.with_context(|| format!("cannot read line {} of {source}", i + 1))?;
            let (key, value): (Option<String>, &str) = if let Some(sep) = &key_separator {
                match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.to_string()), v),
                    None => bail!("line {} of {source}: no key separator {sep:?} in {line:?}", i + 1),
                }
            } else if let Some(field) = &key_field {
                let v: serde_json::Value = serde_json::from_str(&line)
                    .with_context(|| format!("line {} of {source}: not valid JSON", i + 1))?;
                let k = match v.get(field) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => bail!("line {} of {source}: no field {field:?} in {line}", i + 1),
                };
                (Some(k), line.as_str())
            } else {
                (None, line.as_str())
            };
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            producer.send(partition, key.as_deref().map(str::as_bytes), Some(value.as_bytes()), ts, &[])?;
            count += 1;
        }
        Ok(())
    })();
    // Whatever was accepted before an error is still written.
    producer.flush()?;
    result?;
    eprintln!("produced {count} records to {name}");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
/// How `consume` prints and when it stops.
struct ConsumeOptions {
    follow: bool,
    max: Option<u64>,
    timestamps: bool,
    format: Format,
    read_uncommitted: bool,
}

fn consume(log: &Log, name: &str, partition: Option<u32>, from: &str, opts: ConsumeOptions) -> Result<()> {
    let ConsumeOptions { follow, max, timestamps, format, .. } = opts;
    let stream = log.stream(name)?;
    let partitions: Vec<u32> = match partition {
        Some(p) => vec![p],
        None => (0..stream.partitions()).collect(),
    };
    let mut watcher = Watcher::new()?;
    let mut readers = Vec::new();
    for &p in &partitions {
        watcher.watch(&stream.partition_dir(p)?)?;
        let start = match from {
            "oldest" => StartAt::Oldest,
            "upcoming" => StartAt::Upcoming,
            "newest" => {
                let info = stream.partition_info(p)?;
                StartAt::Offset(info.upcoming.saturating_sub(1).max(info.oldest))
            }
            other => StartAt::Offset(other.parse().with_context(|| {
                format!("--from must be oldest, newest, upcoming or an offset, not {other:?}")
            })?),
        };
        let reader = stream.reader(p, start)?;
        readers.push((p, if opts.read_uncommitted { reader.read_uncommitted() } else { reader }));
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    loop {
        let mut any = false;
        for (p, reader) in readers.iter_mut() {
            let chunk = reader.read(1 << 20)?;
            // A chunk can hold no record at or after the start (batches
            // before it, read where the index gave no shortcut): read on
            // until a chunk is empty.
            any |= !chunk.is_empty();
            for rec in chunk.records() {
                let rec = rec?;
                let key = rec.key.map(String::from_utf8_lossy);
                let value = rec.value.map(String::from_utf8_lossy);
                match format {
                    Format::Text => {
                        write!(out, "{p}\t{}\t", rec.offset)?;
                        if timestamps {
                            write!(out, "{}\t", rec.timestamp)?;
                        }
                        writeln!(
                            out,
                            "{}\t{}",
                            key.as_deref().unwrap_or("null"),
                            value.as_deref().unwrap_or("null")
                        )?;
                    }
                    Format::Json => {
                        let v = serde_json::json!({
                            "partition": p, "offset": rec.offset, "timestamp": rec.timestamp,
                            "key": key, "value": value,
                        });
                        writeln!(out, "{v}")?;
                    }
                }
                printed += 1;
                if max.is_some_and(|m| printed >= m) {
                    out.flush()?;
                    return Ok(());
                }
            }
        }
        if !any {
            if !follow {
                break;
            }
            out.flush()?;
            watcher.wait(Duration::from_millis(500))?;
        }
    }
    out.flush()?;
    Ok(())
}
