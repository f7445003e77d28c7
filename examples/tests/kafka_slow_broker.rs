//! Restoring a store from a Kafka changelog and reading checkpoints from
//! Kafka with the broker stopped (SIGSTOP) in the middle: both wait for it and
//! read every record up to the end offset taken when they started; neither
//! takes part of the stream for all of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use samza_container::checkpoint::{self, Checkpoint, CheckpointEntry};
use samza_kafka::testing::Broker;
use samza_kafka::{KafkaConfig, KafkaFactory};
use samza_state::restore::{self, ChangelogSource, EngineKind, Marker};
use samza_task_api::SystemFactory;
use samza_task_api::{OutgoingMessageEnvelope, StreamSpec, SystemStream, TaskName};

fn system(broker: &Broker) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: Some(broker.bootstrap()),
        replication_factor: Some(1),
        ..Default::default()
    }
}

/// Stops the broker (SIGSTOP) now and continues it after `pause`, on a thread.
fn pause(broker: &Broker, pause: Duration) -> std::thread::JoinHandle<()> {
    let pid = broker.pid().unwrap() as i32;
    // SAFETY: the broker is a process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::spawn(move || {
        std::thread::sleep(pause);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    })
}

#[test]
fn a_restore_and_a_checkpoint_read_wait_for_a_stopped_broker_and_read_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&tmp.path().join("broker")).unwrap();
    let sc = system(&broker);
    let admin = KafkaFactory.admin("kafka", &sc).unwrap();
    admin.create_stream(&StreamSpec { stream: "cl".into(), partitions: 1, compacted: true }).unwrap();
    let mut p = KafkaFactory.producer("kafka", &sc).unwrap();
    const N: u64 = 3000;
    for i in 0..N {
        let env = OutgoingMessageEnvelope::new(
            SystemStream::new("kafka", "cl"),
            Some(Bytes::from(format!("k{i}"))),
            Some(Bytes::from(i.to_be_bytes().to_vec())),
        )
        .with_partition(0);
        p.send(env).unwrap();
    }
    let cp_stream = SystemStream::new("kafka", "__samza_checkpoint_j");
    checkpoint::ensure_stream(admin.as_ref(), &cp_stream).unwrap();
    for t in 0..50u64 {
        let cp = Checkpoint {
            offsets: vec![CheckpointEntry { ssp: SystemStream::new("kafka", "in").partition(0), offset: t }],
            generation: Some(1),
        };
        checkpoint::write(p.as_mut(), &cp_stream, &TaskName(format!("Partition {}", t % 5)), &cp).unwrap();
    }
    p.flush().unwrap();

    // The restore: metadata taken, then the broker stops for 3 s.
    let ssp = SystemStream::new("kafka", "cl").partition(0);
    let meta = admin.partition_metadata("cl").unwrap()[0];
    assert_eq!(meta.upcoming, N);
    let consumer = KafkaFactory.consumer("kafka", &sc).unwrap();
    let source = ChangelogSource { ssp, meta, consumer, timeout: Duration::from_secs(60) };
    let want = Marker {
        job: "j".into(),
        store: "s".into(),
        task: "t".into(),
        changelog: Some(source.ssp.clone()),
        offset: 0,
    };
    let resume = pause(&broker, Duration::from_secs(3));
    let started = Instant::now();
    let opened = restore::open(EngineKind::InMemory, &tmp.path().join("store"), &want, Some(source)).unwrap();
    resume.join().unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2), "the restore waited for the broker");
    assert_eq!(opened.report.records, N, "every record restored");
    assert_eq!(opened.changelog_next, N);
    for i in [0, N / 2, N - 1] {
        let v = opened.engine.get(format!("k{i}").as_bytes()).unwrap();
        assert_eq!(v.as_deref(), Some(&i.to_be_bytes()[..]), "k{i}");
    }

    // The checkpoint read, with the broker stopped for 3 s once it started.
    let consumer = KafkaFactory.consumer("kafka", &sc).unwrap();
    let resume = pause(&broker, Duration::from_secs(3));
    let read = checkpoint::read_all(admin.as_ref(), consumer, &cp_stream);
    resume.join().unwrap();
    let read = read.unwrap();
    let want: BTreeMap<TaskName, u64> =
        (45..50).map(|t| (TaskName(format!("Partition {}", t % 5)), t)).collect();
    let got: BTreeMap<TaskName, u64> = read.into_iter().map(|(t, cp)| (t, cp.offsets[0].offset)).collect();
    assert_eq!(got, want, "the latest checkpoint of every task");
}
