//! The page-view example on Kafka end to end, against a real Kafka-protocol
//! broker (tansu) on loopback: job one repartitions unkeyed page views by
//! user, job two counts them; inputs, outputs, changelog and checkpoints all
//! in Kafka topics. A counting container is killed with
//! SIGKILL mid-stream and its local state deleted; the broker is restarted
//! while the job runs again; no count ends below the truth, and counts of
//! partitions that saw no failure are exact.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{run, samza_run, status, COUNTER};
use samza_examples::user_of;
use samza_kafka::testing::Broker;
use samza_kafka::{KafkaConfig, KafkaFactory};
use samza_task_api::SystemFactory;
use samza_task_api::{OutgoingMessageEnvelope, StreamSpec, SystemStream};
use samza_test_support::JobToml;

const REPARTITION: &str = env!("CARGO_BIN_EXE_page-views");

fn produce(sc: &KafkaConfig, from: u64, to: u64, truth: &mut HashMap<String, i64>) {
    let mut p = KafkaFactory.producer("kafka", sc).unwrap();
    for i in from..to {
        let user = format!("user-{}", user_of(i, 200));
        let v = format!(r#"{{"user":"{user}","page":"/p","time":{i}}}"#);
        // Unkeyed, spread over the partitions: job one keys them by user.
        let env = OutgoingMessageEnvelope::new(
            SystemStream::new("kafka", "page-views"),
            None,
            Some(Bytes::from(v)),
        )
        .with_partition((i % 3) as u32);
        p.send(env).unwrap();
        *truth.entry(user).or_default() += 1;
    }
    p.flush().unwrap();
}

fn count(dir: &Path, user: &str) -> i64 {
    let out = Command::new(samza_run())
        .args(["store", "get", dir.join("job.toml").to_str().unwrap(), "counts", user])
        .output()
        .unwrap();
    assert!(out.status.success(), "{user}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

#[test]
fn counts_on_kafka_survive_kill_9_lost_state_and_a_broker_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut broker = Broker::start(&dir.join("broker")).unwrap();
    let sc = KafkaConfig {
        bootstrap_servers: Some(broker.bootstrap()),
        replication_factor: Some(1),
        ..Default::default()
    };
    let admin = KafkaFactory.admin("kafka", &sc).unwrap();
    admin
        .create_stream(&StreamSpec { stream: "page-views".into(), partitions: 3, compacted: false })
        .unwrap();
    let mut truth = HashMap::new();
    const N: u64 = 20_000;
    produce(&sc, 0, N, &mut truth);

    // Job one: repartition by user, into a 4-partition topic it creates.
    JobToml::new("page-views-by-user", Path::new(REPARTITION), "repartition", &["kafka.page-views"])
        .on_kafka(&broker.bootstrap())
        .set("job.container-count", 2)
        .set("job.state-dir", "state")
        .set("systems.kafka.streams.page-views.bounded", true)
        .set("systems.kafka.streams.page-views.msg-serde", "json")
        .set("systems.kafka.streams.page-views-by-user.partitions", 4)
        .set("params.output", "kafka.page-views-by-user")
        .write_to(&dir.join("repartition.toml"));
    let out = Command::new(samza_run()).arg(dir.join("repartition.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let by_user = admin.partition_metadata("page-views-by-user").unwrap();
    assert_eq!(by_user.iter().map(|m| m.upcoming).sum::<u64>(), N, "every view repartitioned once");
    JobToml::new("page-view-counter", Path::new(COUNTER), "count", &["kafka.page-views-by-user"])
        .on_kafka(&broker.bootstrap())
        .set("job.container-count", 2)
        .set("job.state-dir", "state")
        .set("task.window-ms", 200)
        .set("task.commit-ms", 200)
        .set("systems.kafka.streams.page-views-by-user.bounded", true)
        .set("systems.kafka.streams.user-counts.partitions", 4)
        .set("systems.kafka.streams.user-counts.compacted", true)
        .set("stores.counts.engine", "rocksdb")
        .set("stores.counts.changelog", "kafka.counts-changelog")
        .set("stores.counts.write-batch-entries", 500)
        .set("stores.counts.msg-serde", "i64")
        .set("params.output", "kafka.user-counts")
        .write(dir);

    // 1. Kill container 0 with SIGKILL in the middle of its partitions.
    let child = run(dir, &["params.throttle-us=50000"]);
    let start = Instant::now();
    let (pid, tasks_of_0) = loop {
        assert!(start.elapsed() < Duration::from_secs(90), "container 0 never made progress");
        if let Some(s) = status(dir, 0).filter(|s| s.processed > 3_000) {
            let tasks: Vec<String> = s.stores.iter().map(|t| t.task.clone()).collect();
            break (s.pid as i32, tasks);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: SIGKILL to a container process of the samza-run this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    for t in &tasks_of_0 {
        std::fs::remove_dir_all(dir.join("state/page-view-counter/stores/counts").join(t.replace(' ', "_")))
            .unwrap();
    }

    // 2. Run again; restart the broker while it runs.
    let child = run(dir, &["params.throttle-us=2000"]);
    std::thread::sleep(Duration::from_secs(2));
    broker.restart().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // 3. Every count at least the truth; exact where no failure happened. The
    //    stores' contents, as their changelog topic holds them.
    let meta = admin.partition_metadata("counts-changelog").unwrap();
    let mut consumer = KafkaFactory.consumer("kafka", &sc).unwrap();
    for p in 0..meta.len() as u32 {
        consumer.register(&SystemStream::new("kafka", "counts-changelog").partition(p), 0).unwrap();
    }
    let total: u64 = meta.iter().map(|m| m.upcoming).sum();
    let mut records = Vec::new();
    let start = Instant::now();
    while (records.len() as u64) < total && start.elapsed() < Duration::from_secs(60) {
        consumer.poll(&mut records, 100_000, Duration::from_millis(200)).unwrap();
    }
    let mut stored: HashMap<String, i64> = HashMap::new();
    for r in &records {
        let user = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
        stored.insert(user, i64::from_be_bytes(r.message.as_deref().unwrap().try_into().unwrap()));
    }
    assert_eq!(stored.len(), truth.len());
    for (user, n) in &truth {
        let c = stored[user];
        assert!(c >= *n, "{user}: count {c} is below the truth {n}");
        let p = samza_task_api::partition_for_key(user.as_bytes(), 4);
        if !tasks_of_0.contains(&format!("Partition {p}")) {
            assert_eq!(c, *n, "{user}: no failure in its partition, so exact");
        }
    }
    // The local stores agree (read from disk by samza-run).
    for user in truth.keys().take(5) {
        assert_eq!(count(dir, user), stored[user], "{user}");
    }
}
