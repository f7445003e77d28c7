//! Benchmark of jobs through Kafka beside the embedded log, on the same
//! machine in one run: prints figures, asserts nothing but the output counts.
//!
//! Starts a tansu broker on loopback (SQLite storage; `TANSU` or
//! `~/.cache/samza-tools/bin/tansu`), loads `--records` page views keyed by
//! `--users` users into a 2-partition stream of each system, then runs with
//! `samza-run` (2 containers) the pass-through job and the page-view counter
//! (RocksDB store, changelog and checkpoints in the same system) on each.
//!
//! ```text
//! cargo build --release --workspace
//! target/release/kafka-bench [--records 1000000] [--users 100000] [--storage memory://tansu/]
//!                             [--producer-setting enable.idempotence=false]...
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use samza_examples::{arg, arg_or, user_of};
use samza_kafka::testing::Broker;
use samza_kafka::{KafkaConfig, KafkaFactory};
use samza_task_api::SystemFactory;
use samza_task_api::{OutgoingMessageEnvelope, StreamSpec, SystemAdmin, SystemStream};

fn main() {
    if let Err(e) = run() {
        eprintln!("kafka-bench: {e}");
        std::process::exit(1);
    }
}

fn value(i: u64, user: &str) -> String {
    let v = format!(r#"{{"user":"{user}","page":"/p/{}","time":{i}}}"#, i % 1000);
    format!("{v:<100}")
}

fn run() -> Result<(), String> {
    let records: u64 = arg_or("--records", 1_000_000);
    let users: u64 = arg_or("--users", 100_000);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.parent().unwrap().to_path_buf();
    let dir = PathBuf::from("target/kafka-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    println!(
        "# kafka benchmark: {records} page views of 100 bytes over {users} users, 2 partitions, 2 containers"
    );
    let storage = arg("--storage").unwrap_or_else(|| "sqlite://tansu.db".into());
    println!("# broker: tansu, storage {storage}");
    let broker = Broker::start_with(&dir.join("broker"), &storage)?;
    let sc = KafkaConfig {
        bootstrap_servers: Some(broker.bootstrap()),
        replication_factor: Some(1),
        // `--producer-setting k=v` (repeatable): librdkafka settings of the loading producer.
        producer_settings: std::env::args()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "--producer-setting")
            .filter_map(|w| w[1].split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect(),
        ..Default::default()
    };

    // Load the same events into both systems.
    let t = Instant::now();
    let log = samza_log::Log::open(dir.join("log")).map_err(|e| e.to_string())?;
    let cfg = samza_log::StreamConfig {
        fsync: samza_log::FsyncPolicy::Never,
        ..samza_log::StreamConfig::with_partitions(2)
    };
    log.create_stream("in", &cfg).map_err(|e| e.to_string())?;
    let mut p = log.stream("in").map_err(|e| e.to_string())?.producer();
    for i in 0..records {
        let user = format!("user-{}", user_of(i, users));
        p.send(None, Some(user.as_bytes()), Some(value(i, &user).as_bytes()), i as i64, &[])
            .map_err(|e| e.to_string())?;
    }
    p.flush().map_err(|e| e.to_string())?;
    let log_load = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let admin = KafkaFactory.admin("kafka", &sc).map_err(|e| e.to_string())?;
    admin
        .create_stream(&StreamSpec { stream: "in".into(), partitions: 2, compacted: false })
        .map_err(|e| e.to_string())?;
    let mut p = KafkaFactory.producer("kafka", &sc).map_err(|e| e.to_string())?;
    for i in 0..records {
        let user = format!("user-{}", user_of(i, users));
        let v = value(i, &user);
        p.send(OutgoingMessageEnvelope::new(
            SystemStream::new("kafka", "in"),
            Some(Bytes::from(user)),
            Some(Bytes::from(v)),
        ))
        .map_err(|e| e.to_string())?;
    }
    p.flush().map_err(|e| e.to_string())?;
    let kafka_load = t.elapsed().as_secs_f64();
    let loaded = admin_count(&*admin, "in")?;
    if loaded != records {
        return Err(format!("kafka input holds {loaded} records after the load, expected {records}"));
    }
    let rate = |secs: f64| records as f64 / secs / 1e6;
    println!("{:<34} {:>16} {:>16}", "", "embedded log", "kafka (tansu)");
    println!("{:<34} {:>10.3} M/s {:>10.3} M/s", "load (one producer)", rate(log_load), rate(kafka_load));

    for (job, label) in
        [("pass-through", "pass-through job end to end"), ("count", "keyed count (RocksDB + changelog)")]
    {
        let mut figures = Vec::new();
        for system in ["log", "kafka"] {
            let toml = write_job(&dir, &bin, job, system, &broker.bootstrap())?;
            let t = Instant::now();
            let out = Command::new(bin.join("samza-run")).arg(&toml).output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("{job} on {system}: {}", String::from_utf8_lossy(&out.stderr)));
            }
            figures.push(t.elapsed().as_secs_f64());
        }
        if job == "pass-through" {
            let n: u64 = admin_count(&*admin, "out")?;
            if n != records {
                return Err(format!("kafka output holds {n} records, expected {records}"));
            }
        }
        println!(
            "{label:<34} {:>10.3} M/s {:>10.3} M/s   ({:.2} s / {:.2} s, including process start)",
            rate(figures[0]),
            rate(figures[1]),
            figures[0],
            figures[1]
        );
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn admin_count(admin: &dyn SystemAdmin, topic: &str) -> Result<u64, String> {
    let meta = admin.partition_metadata(topic).map_err(|e| e.to_string())?;
    Ok(meta.iter().map(|m| m.upcoming - m.oldest).sum())
}

fn write_job(dir: &Path, bin: &Path, job: &str, system: &str, bootstrap: &str) -> Result<PathBuf, String> {
    let (binary, class, extra) = match job {
        "pass-through" => ("pass-through", "pass-through", format!("[params]\noutput = \"{system}.out\"\n")),
        _ => (
            "page-view-counter",
            "count",
            format!(
                "[stores.counts]\nengine = \"rocksdb\"\nchangelog = \"{system}.counts-changelog\"\n\n[params]\noutput = \"{system}.user-counts\"\n"
            ),
        ),
    };
    let path = dir.join(format!("{job}-{system}.toml"));
    let toml = format!(
        r#"[job]
name = "bench-{job}-{system}"
container-count = 2
state-dir = "state"

[package]
binary = "{}"

[task]
class = "{class}"
inputs = ["{system}.in"]
checkpoint-system = "{system}"
commit-ms = 1000
window-ms = 1000

[systems.log]
type = "embedded-log"
dir = "log"

[systems.kafka]
type = "kafka"
bootstrap-servers = "{bootstrap}"
replication-factor = 1

[systems.{system}.streams.in]
bounded = true

[systems.{system}.streams.out]
partitions = 2

[systems.{system}.streams.user-counts]
partitions = 2
compacted = true

{extra}"#,
        bin.join(binary).display()
    );
    std::fs::write(&path, toml).map_err(|e| e.to_string())?;
    Ok(path)
}
