//! The kafka system against a real Kafka-protocol broker (tansu) on
//! loopback: topic creation, offsets, keyed records landing where Java's
//! default partitioner puts them, assign-based reads from given offsets, and
//! a broker restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use samza_kafka::testing::Broker;
use samza_kafka::{KafkaConfig, KafkaFactory};
use samza_task_api::SystemFactory;
use samza_task_api::{
    IncomingMessageEnvelope, OutgoingMessageEnvelope, StreamSpec, SystemConsumer, SystemStream,
};

fn config(broker: &Broker) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: Some(broker.bootstrap()),
        replication_factor: Some(1),
        ..Default::default()
    }
}

/// Polls until `n` messages arrived (or 30 s passed).
fn read(consumer: &mut dyn SystemConsumer, n: usize) -> Vec<IncomingMessageEnvelope> {
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n && start.elapsed() < Duration::from_secs(30) {
        consumer.poll(&mut out, 10_000, Duration::from_millis(200)).unwrap();
    }
    out
}

#[test]
fn topics_offsets_partitioning_and_assigned_reads_against_a_real_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path()).unwrap();
    let sc = config(&broker);
    let admin = KafkaFactory.admin("kafka", &sc).unwrap();

    assert!(!admin.stream_exists("events").unwrap());
    let spec = StreamSpec { stream: "events".into(), partitions: 4, compacted: false };
    assert!(admin.create_stream(&spec).unwrap(), "created");
    assert!(!admin.create_stream(&spec).unwrap(), "exists with the same partitions");
    let e = admin.create_stream(&StreamSpec { partitions: 2, ..spec.clone() }).unwrap_err().to_string();
    assert!(e.contains("exists with 4 partitions; 2 are needed"), "{e}");
    assert!(admin
        .create_stream(&StreamSpec { stream: "changelog".into(), partitions: 1, compacted: true })
        .unwrap());
    let meta = admin.partition_metadata("events").unwrap();
    assert_eq!(meta.len(), 4);
    assert!(meta.iter().all(|m| m.oldest == 0 && m.upcoming == 0 && m.newest.is_none()), "{meta:?}");
    let e = admin.partition_metadata("nope").unwrap_err();
    assert_eq!(e.kind(), samza_task_api::SystemErrorKind::NotFound, "{e}");

    // 1000 keyed records: each lands on murmur2(key) % 4, as Java producers put it.
    let mut producer = KafkaFactory.producer("kafka", &sc).unwrap();
    let mut expected: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for i in 0..1000 {
        let key = format!("user-{}", i % 97);
        expected
            .entry(samza_task_api::partition_for_key(key.as_bytes(), 4))
            .or_default()
            .push(format!("{key}/{i}"));
        producer
            .send(OutgoingMessageEnvelope::new(
                SystemStream::new("kafka", "events"),
                Some(Bytes::from(key.clone())),
                Some(Bytes::from(format!("{key}/{i}"))),
            ))
            .unwrap();
    }
    producer.flush().unwrap();
    let meta = admin.partition_metadata("events").unwrap();
    for (p, m) in meta.iter().enumerate() {
        assert_eq!(m.upcoming as usize, expected[&(p as u32)].len(), "partition {p}");
    }
    // Java's murmur2 for "21" is -973932308: partition (h & 0x7fffffff) % 4.
    assert_eq!(samza_task_api::partition_for_key(b"21", 4), ((-973932308i32 & 0x7fffffff) % 4) as u32);

    // Assigned reads from given offsets, in order per partition.
    let mut consumer = KafkaFactory.consumer("kafka", &sc).unwrap();
    for p in 0..4u32 {
        let ssp = SystemStream::new("kafka", "events").partition(p);
        consumer.register(&ssp, if p == 0 { 5 } else { 0 }).unwrap();
    }
    let got = read(consumer.as_mut(), 995);
    assert_eq!(got.len(), 995);
    let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for m in &got {
        by_partition
            .entry(m.ssp.partition)
            .or_default()
            .push(String::from_utf8(m.message.clone().unwrap().to_vec()).unwrap());
        assert_eq!(m.ssp.stream(), "events");
    }
    for (p, values) in &by_partition {
        let want = &expected[p][if *p == 0 { 5 } else { 0 }..];
        assert_eq!(values, want, "partition {p}: order and starting offset");
    }
    assert_eq!(got.iter().find(|m| m.ssp.partition == 0).unwrap().offset, 5);

    // The broker restarts: data kept, clients carry on.
    broker.restart().unwrap();
    let start = Instant::now();
    let meta = loop {
        match admin.partition_metadata("events") {
            Ok(m) => break m,
            Err(e) if start.elapsed() < Duration::from_secs(30) => {
                eprintln!("waiting for the broker: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("broker did not come back: {e}"),
        }
    };
    assert_eq!(meta.iter().map(|m| m.upcoming).sum::<u64>(), 1000);
    producer
        .send(
            OutgoingMessageEnvelope::new(
                SystemStream::new("kafka", "events"),
                None,
                Some(Bytes::from("after")),
            )
            .with_partition(1),
        )
        .unwrap();
    producer.flush().unwrap();
    let got = read(consumer.as_mut(), 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.as_deref(), Some(&b"after"[..]));
    assert_eq!(got[0].offset as usize, expected[&1].len());
}
