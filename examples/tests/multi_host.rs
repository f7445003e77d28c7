//! The page-view counter on a cluster that spans three hosts: network
//! namespaces joined by a bridge (see `samza_scheduler::netns`; root only,
//! as CI runs), the resource manager and a Kafka-protocol broker (tansu) on
//! host 1, a node manager on each host, every daemon bound to its host's
//! address, streams, changelog and checkpoints in Kafka.
//!
//! - Without faults, containers run on all three hosts and every user's count
//!   is exact.
//! - With host 2 cut off the network (its link down) for longer than the
//!   node-loss timeout while events flow, then reconnected: its container
//!   stops by its lease, its successor runs on another host, no checkpoint is
//!   written by an older generation after a newer one and none goes
//!   backwards, no emitted count goes down, no count ends below the truth,
//!   and no process of the cluster is left afterwards.

mod common;
#[path = "common/ownership.rs"]
mod ownership;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{bin_dir, COUNTER};
use ownership::alive;
use samza_examples::user_of;
use samza_kafka::testing::Broker;
use samza_kafka::{KafkaConfig, KafkaFactory};
use samza_scheduler::cli::{LocalCluster, Place};
use samza_scheduler::client::Client;
use samza_scheduler::netns::TestNet;
use samza_scheduler::proto::*;
use samza_task_api::SystemFactory;
use samza_task_api::{OutgoingMessageEnvelope, StreamSpec, SystemStream};
use samza_test_support::JobToml;

const NODE_TIMEOUT_MS: u64 = 6_000;
const USERS: u64 = 200;

/// Three hosts with the cluster and the broker; the calling thread on host 1.
/// Fields drop in order: the cluster's processes, the broker, the network,
/// the directory.
struct Hosts {
    cluster: LocalCluster,
    broker: Broker,
    sc: KafkaConfig,
    net: TestNet,
    tmp: tempfile::TempDir,
}

impl Hosts {
    fn start(name: &str) -> Hosts {
        if let Err(why) = TestNet::available() {
            panic!("this test builds a network of three hosts and needs what CI has: {why}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let net = TestNet::create(&format!("sz{}{name}", std::process::id() % 100_000), 3).unwrap();
        net.enter(1).unwrap();
        let broker = Broker::start_at(&tmp.path().join("broker"), "sqlite://tansu.db", &net.addr(1)).unwrap();
        let places = (1..=3).map(|n| Place { netns: net.netns(n).to_string(), addr: net.addr(n) }).collect();
        let cluster =
            LocalCluster::start_on(&bin_dir(), &tmp.path().join("cluster"), places, NODE_TIMEOUT_MS, 1000)
                .unwrap();
        assert!(cluster.rm_url.starts_with(&format!("http://{}:", net.addr(1))), "{}", cluster.rm_url);
        let sc = KafkaConfig {
            bootstrap_servers: Some(broker.bootstrap()),
            replication_factor: Some(1),
            ..Default::default()
        };
        Hosts { cluster, broker, sc, net, tmp }
    }

    fn rm(&self) -> Client {
        Client::new(&self.cluster.rm_url, &self.cluster.token)
    }

    /// `events` page views of `USERS` users, keyed by user, into a 4-partition topic.
    fn produce(&self, events: u64) -> HashMap<String, i64> {
        let admin = KafkaFactory.admin("kafka", &self.sc).unwrap();
        admin
            .create_stream(&StreamSpec {
                stream: "page-views-by-user".into(),
                partitions: 4,
                compacted: false,
            })
            .unwrap();
        let mut p = KafkaFactory.producer("kafka", &self.sc).unwrap();
        let mut truth = HashMap::new();
        for i in 0..events {
            let user = format!("user-{}", user_of(i, USERS));
            let v = format!(r#"{{"user":"{user}","page":"/p","time":{i}}}"#);
            let env = OutgoingMessageEnvelope::new(
                SystemStream::new("kafka", "page-views-by-user"),
                Some(Bytes::from(user.clone())),
                Some(Bytes::from(v)),
            );
            p.send(env).unwrap();
            *truth.entry(user).or_default() += 1;
        }
        p.flush().unwrap();
        truth
    }

    fn submit(&self, containers: u32, throttle_us: u64) -> String {
        let dir = self.tmp.path();
        JobToml::new("page-view-counter", Path::new(COUNTER), "count", &["kafka.page-views-by-user"])
            .on_kafka(&self.broker.bootstrap())
            .set("job.container-count", i64::from(containers))
            .set("job.shutdown-timeout-ms", 5000)
            .set("task.window-ms", 300)
            .set("task.commit-ms", 300)
            // Outputs reach the broker at commit (flush), not before: an emitted
            // count never runs ahead of the committed state (as on the embedded
            // log), so a failover never shows a count lower than one already emitted.
            .set_in(&["systems", "kafka", "producer-settings", "linger.ms"], "60000")
            .set("systems.kafka.streams.page-views-by-user.bounded", true)
            .set("systems.kafka.streams.user-counts.partitions", 4)
            .set("stores.counts.engine", "rocksdb")
            .set("stores.counts.changelog", "kafka.counts-changelog")
            .set("stores.counts.msg-serde", "i64")
            .set("cluster.container-memory-mb", 512)
            .set("cluster.host-affinity-timeout-ms", 500)
            .set("params.output", "kafka.user-counts")
            .set("params.throttle-us", throttle_us as i64)
            .write(dir);
        let out = Command::new(bin_dir().join("samza-run"))
            .arg(dir.join("job.toml"))
            .args(["--rm", &self.cluster.rm_url, "--detach"])
            .env(samza_container::env::TOKEN, &self.cluster.token)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn info(&self, app: &str) -> AppInfo {
        self.rm().get(&format!("/v1/apps/{app}")).unwrap()
    }

    fn wait_done(&self, app: &str, within: Duration) -> AppInfo {
        let start = Instant::now();
        loop {
            let info = self.info(app);
            if info.state.is_final() {
                return info;
            }
            assert!(start.elapsed() < within, "job did not finish: {:#?}", info.events);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every record of a topic, per partition in offset order: (key, value).
    fn topic(&self, topic: &str) -> Vec<Vec<(String, Vec<u8>)>> {
        let admin = KafkaFactory.admin("kafka", &self.sc).unwrap();
        let meta = admin.partition_metadata(topic).unwrap();
        let mut consumer = KafkaFactory.consumer("kafka", &self.sc).unwrap();
        for (p, m) in meta.iter().enumerate() {
            consumer.register(&SystemStream::new("kafka", topic).partition(p as u32), m.oldest).unwrap();
        }
        let total: u64 = meta.iter().map(|m| m.upcoming - m.oldest).sum();
        let mut records = Vec::new();
        let start = Instant::now();
        while (records.len() as u64) < total {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "read {} of {total} records of {topic}",
                records.len()
            );
            consumer.poll(&mut records, 100_000, Duration::from_millis(200)).unwrap();
        }
        let mut out = vec![Vec::new(); meta.len()];
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for r in records {
            let p = r.ssp.partition;
            if let Some(o) = last.insert(p, r.offset) {
                assert!(r.offset > o, "{topic}[{p}] read out of order");
            }
            let k = String::from_utf8(r.key.map(|k| k.to_vec()).unwrap_or_default()).unwrap();
            out[p as usize].push((k, r.message.map(|m| m.to_vec()).unwrap_or_default()));
        }
        out
    }

    /// Latest count per user in the output; checks that no user's count
    /// ever goes down along the way.
    fn emitted(&self) -> HashMap<String, i64> {
        ownership::check_count_records(self.topic("user-counts").concat(), "user-counts")
    }

    /// Per task: generations never go down, offsets never go backwards.
    fn check_checkpoints(&self) -> BTreeMap<String, Vec<u64>> {
        ownership::check_checkpoint_records(self.topic("__samza_checkpoint_page-view-counter").concat())
    }

    /// The end of the stderr of each container that failed, for a message.
    fn failed_stderr(&self, info: &AppInfo) -> String {
        let mut out = String::new();
        for c in info.containers.iter().filter(|c| c.exit_code.is_some_and(|e| e != 0)) {
            let path = self.cluster.dir.join(&c.node).join("containers").join(&c.id).join("stderr");
            let tail = match std::fs::read(&path) {
                Ok(b) => String::from_utf8_lossy(&b[b.len().saturating_sub(6000)..]).into_owned(),
                Err(e) => format!("cannot read {}: {e}", path.display()),
            };
            out.push_str(&format!(
                "--- stderr of {} on {} (exit {:?}) ---\n{tail}\n",
                c.id, c.node, c.exit_code
            ));
        }
        out
    }

    /// Stops the cluster and checks none of `pids` is left.
    fn stop_and_check(mut self, mut pids: Vec<u32>) {
        pids.extend(self.cluster.nodes.iter().map(|(_, c)| c.id()));
        pids.push(self.cluster.rm.id());
        self.cluster.stop();
        ownership::check_none_left(&pids);
        let prefix = self.net.prefix().to_string();
        drop(self);
        let left = std::fs::read_dir("/var/run/netns")
            .map(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().starts_with(&prefix)))
            .unwrap_or(false);
        assert!(!left, "network namespaces {prefix}-* left behind");
    }
}

fn check_exact(counts: &HashMap<String, i64>, truth: &HashMap<String, i64>, what: &str) {
    assert_eq!(counts.len(), truth.len(), "{what}: every user counted");
    for (user, n) in truth {
        assert_eq!(counts.get(user), Some(n), "{what}: {user}");
    }
}

#[test]
fn the_page_view_counter_runs_on_three_hosts_with_exact_counts() {
    let h = Hosts::start("a");
    let truth = h.produce(12_000);
    let app = h.submit(3, 0);
    let done = h.wait_done(&app, Duration::from_secs(180));
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    let nodes: std::collections::BTreeSet<&str> =
        done.containers.iter().filter(|c| c.role != Role::Coordinator).map(|c| c.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "containers on all three hosts: {:#?}", done.containers);
    // No fault here: a count over the truth means a container ran twice;
    // the events say why (seen once under a loaded full run).
    let ran = done.containers.iter().filter(|c| c.role != Role::Coordinator).count();
    assert_eq!(ran, 3, "no container was started again: {:#?}\n{}", done.events, h.failed_stderr(&done));
    check_exact(&h.emitted(), &truth, "user-counts");
    let mut stored = HashMap::new();
    for (user, v) in h.topic("counts-changelog").concat() {
        stored.insert(user, i64::from_be_bytes(v.as_slice().try_into().unwrap()));
    }
    check_exact(&stored, &truth, "changelog");
    let pids = done.containers.iter().filter_map(|c| c.pid).collect();
    h.stop_and_check(pids);
}

#[test]
fn a_host_cut_off_the_network_loses_its_tasks_by_lease_and_nothing_goes_backwards() {
    let h = Hosts::start("b");
    let truth = h.produce(16_000);
    let app = h.submit(3, 400_000);
    // Every task has checkpointed, then cut the host of a job container
    // that is not host 1 (which holds the bridge, the RM and the broker).
    let start = Instant::now();
    let victim = loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the job never got going: {:#?}",
            h.info(&app).events
        );
        let info = h.info(&app);
        let running: Vec<ContainerInfo> = info
            .containers
            .iter()
            .filter(|c| c.role != Role::Coordinator && c.state == ContainerState::Running)
            .cloned()
            .collect();
        // Every task has checkpointed at least once.
        let admin = KafkaFactory.admin("kafka", &h.sc).unwrap();
        let checkpointed = match admin.stream_exists("__samza_checkpoint_page-view-counter") {
            Ok(true) => h
                .topic("__samza_checkpoint_page-view-counter")
                .concat()
                .into_iter()
                .map(|(task, _)| task)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            _ => 0,
        };
        let off_host_1 = running.iter().find(|c| c.node != "node-1").cloned();
        if running.len() == 3 && checkpointed == 4 {
            if let Some(c) = off_host_1 {
                break c;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let host: usize = victim.node.strip_prefix("node-").unwrap().parse().unwrap();
    h.net.cut(host).unwrap();
    let cut = Instant::now();
    let successor = loop {
        let info = h.info(&app);
        if let Some(c) = info
            .containers
            .iter()
            .find(|c| c.role == victim.role && c.id != victim.id && c.state == ContainerState::Running)
        {
            break c.clone();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "container {} not restarted: {:#?}",
            victim.role,
            info.events
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = cut.elapsed();
    // The cut-off container stopped by its lease before its successor ran.
    assert!(!alive(victim.pid.unwrap()), "{} still runs beside its successor {}", victim.id, successor.id);
    std::thread::sleep(Duration::from_secs(2));
    h.net.heal(host).unwrap();
    eprintln!("host {host} cut off: successor of {} running on {} after {took:?}", victim.id, successor.node);
    let done = h.wait_done(&app, Duration::from_secs(240));
    assert_eq!(done.state, AppState::Succeeded, "{:#?}", done.events);
    let generations = h.check_checkpoints();
    assert!(generations.values().any(|g| g.len() >= 2), "a task changed owner: {generations:?}");
    let emitted = h.emitted();
    for (user, n) in &truth {
        let c = emitted.get(user).copied().unwrap_or(0);
        assert!(c >= *n, "{user}: emitted {c}, below the truth {n}");
    }
    let stderr =
        h.tmp.path().join("cluster").join(&victim.node).join("containers").join(&victim.id).join("stderr");
    let text = std::fs::read_to_string(&stderr).unwrap();
    assert!(text.contains("no longer the owner of its tasks"), "{}: {text}", stderr.display());
    assert!(!text.contains("container stopped"), "the cut-off container committed a final time: {text}");
    let mut pids: Vec<u32> = done.containers.iter().filter_map(|c| c.pid).collect();
    pids.push(victim.pid.unwrap());
    h.stop_and_check(pids);
}
