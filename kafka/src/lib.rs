//! Kafka as a system (`type = "kafka"`), on librdkafka through the `rdkafka`
//! crate.
//!
//! - Consumers take explicit partition assignments (`assign`, never a
//!   consumer group's subscription: the JobModel decides who reads what) and
//!   start at the offsets the runtime gives them (the checkpoints).
//! - Producers choose a keyed record's partition with Kafka's default
//!   partitioner hash (`murmur2(key) & 0x7fffffff % partitions`, the
//!   project's [`samza_task_api::partition_for_key`]), so records land where
//!   Java producers put the same keys. `flush` returns only when every record
//!   sent before it is acknowledged (`acks=all`, idempotent by default); a
//!   record that failed makes it fail, so no checkpoint passes lost output.
//! - The admin reads partition counts and oldest/upcoming offsets (low/high
//!   watermarks) and creates topics (compacted ones for changelogs and
//!   checkpoints) with the configured replication factor.
//!
//! Every librdkafka setting can be given in job.toml: `[systems.<name>.settings]`
//! for all clients, `consumer-settings` and `producer-settings` for one role.

pub mod testing;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use samza_task_api::{
    partition_for_key, ConfigIssue, IncomingMessageEnvelope, OutgoingMessageEnvelope, PartitionMetadata,
    StreamSpec, SystemAdmin, SystemConsumer, SystemContext, SystemError, SystemErrorKind, SystemFactory,
    SystemProducer, SystemStreamPartition,
};
use serde::Deserialize;

/// How long a metadata, offsets or topic-creation request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long `flush` waits for acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// The type name job files use: `type = "kafka"`.
pub const TYPE: &str = "kafka";

/// Kafka's own keys in `[systems.<name>]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaConfig {
    /// The brokers to bootstrap from (`host:port,...`); required.
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// The replication factor of topics the job creates (default 3, capped
    /// at the number of brokers).
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// librdkafka settings passed as they are: to every client, then to
    /// consumers and producers only (the later wins).
    #[serde(default, deserialize_with = "settings")]
    pub settings: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    pub consumer_settings: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "settings")]
    pub producer_settings: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// A config for the brokers at `bootstrap_servers`.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaConfig { bootstrap_servers: Some(bootstrap_servers.into()), ..Default::default() }
    }
}

/// A setting's value: librdkafka takes every value as text.
struct Setting(String);

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Setting, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Setting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Setting, E> {
                Ok(Setting(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn settings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, Setting>::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Makes admins, consumers and producers of `type = "kafka"` systems.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaFactory;

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Admin,
    Consumer,
    Producer,
}

fn client_config(system: &str, sc: &KafkaConfig, role: Role) -> Result<ClientConfig, SystemError> {
    let servers = sc.bootstrap_servers.as_deref().ok_or_else(|| {
        SystemError::new(
            SystemErrorKind::InvalidInput,
            format!("systems.{system}.bootstrap-servers is not set"),
        )
    })?;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", servers).set("client.id", format!("samza-{system}"));
    match role {
        Role::Admin => {}
        Role::Consumer => {
            // A group id is required by librdkafka even for assign(); nothing
            // is ever committed to it.
            c.set("group.id", format!("samza-{system}-assign"))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "false")
                .set("auto.offset.reset", "earliest")
                .set("allow.auto.create.topics", "false")
                .set("fetch.wait.max.ms", "100");
        }
        Role::Producer => {
            c.set("acks", "all")
                .set("enable.idempotence", "true")
                .set("linger.ms", "5")
                .set("queue.buffering.max.messages", "500000");
        }
    }
    for (k, v) in &sc.settings {
        c.set(k, v);
    }
    let specific = match role {
        Role::Admin => None,
        Role::Consumer => Some(&sc.consumer_settings),
        Role::Producer => Some(&sc.producer_settings),
    };
    for (k, v) in specific.into_iter().flatten() {
        c.set(k, v);
    }
    Ok(c)
}

fn kafka_err(what: impl std::fmt::Display, e: KafkaError) -> SystemError {
    let kind = match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            SystemErrorKind::NotFound
        }
        Some(RDKafkaErrorCode::OffsetOutOfRange) => SystemErrorKind::OffsetOutOfRange,
        Some(RDKafkaErrorCode::InvalidPartitions | RDKafkaErrorCode::InvalidReplicationFactor) => {
            SystemErrorKind::InvalidInput
        }
        _ => SystemErrorKind::Io,
    };
    SystemError::with_source(kind, format!("{what}: {e}"), e)
}

impl SystemFactory for KafkaFactory {
    type Config = KafkaConfig;

    fn check(&self, _: &SystemContext<'_>, sc: &mut KafkaConfig) -> Result<(), ConfigIssue> {
        if sc.bootstrap_servers.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigIssue::new(
                "bootstrap-servers",
                "a kafka system needs its brokers, e.g. \"broker1:9092,broker2:9092\"",
            ));
        }
        if sc.replication_factor == Some(0) {
            return Err(ConfigIssue::new("replication-factor", "must be at least 1"));
        }
        Ok(())
    }

    fn admin(&self, system: &str, sc: &KafkaConfig) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        Ok(Arc::new(KafkaAdmin::new(system, sc)?))
    }

    fn consumer(&self, system: &str, sc: &KafkaConfig) -> Result<Box<dyn SystemConsumer>, SystemError> {
        let consumer: BaseConsumer = client_config(system, sc, Role::Consumer)?
            .create()
            .map_err(|e| kafka_err(format!("cannot create a consumer of system {system}"), e))?;
        Ok(Box::new(KafkaConsumer { consumer, assigned: Vec::new(), last: 0, system: system.to_string() }))
    }

    fn producer(&self, system: &str, sc: &KafkaConfig) -> Result<Box<dyn SystemProducer>, SystemError> {
        let producer: BaseProducer<Delivery> = client_config(system, sc, Role::Producer)?
            .create_with_context(Delivery::default())
            .map_err(|e| kafka_err(format!("cannot create a producer of system {system}"), e))?;
        Ok(Box::new(KafkaProducer { producer, partitions: Vec::new(), sent: 0, system: system.to_string() }))
    }
}

/// Topics and offsets of one Kafka cluster.
pub struct KafkaAdmin {
    admin: AdminClient<DefaultClientContext>,
    /// For metadata and watermarks (the admin client has no watermark call).
    probe: BaseConsumer,
    replication: Option<u32>,
    system: String,
    runtime: tokio::runtime::Runtime,
}

impl KafkaAdmin {
    pub fn new(system: &str, sc: &KafkaConfig) -> Result<KafkaAdmin, SystemError> {
        let what = format!("cannot connect to the kafka system {system}");
        let admin = client_config(system, sc, Role::Admin)?.create().map_err(|e| kafka_err(&what, e))?;
        let probe = client_config(system, sc, Role::Consumer)?.create().map_err(|e| kafka_err(&what, e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| SystemError::with_source(SystemErrorKind::Io, "cannot start a runtime", e))?;
        Ok(KafkaAdmin {
            admin,
            probe,
            replication: sc.replication_factor,
            system: system.to_string(),
            runtime,
        })
    }

    /// The topic's partition count, `None` when it does not exist.
    fn partitions(&self, topic: &str) -> Result<Option<u32>, SystemError> {
        let md = self
            .probe
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| kafka_err(format!("cannot read metadata of {}.{topic}", self.system), e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match t.error() {
            None if !t.partitions().is_empty() => Ok(Some(t.partitions().len() as u32)),
            None => Ok(None),
            Some(e) => match RDKafkaErrorCode::from(e) {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => Ok(None),
                code => Err(SystemError::new(
                    SystemErrorKind::Io,
                    format!("metadata of {}.{topic}: {code}", self.system),
                )),
            },
        }
    }

    fn brokers(&self) -> Result<u32, SystemError> {
        let md = self
            .probe
            .fetch_metadata(None, TIMEOUT)
            .map_err(|e| kafka_err(format!("cannot read the brokers of {}", self.system), e))?;
        Ok(md.brokers().len() as u32)
    }
}

impl SystemAdmin for KafkaAdmin {
    fn partition_metadata(&self, stream: &str) -> Result<Vec<PartitionMetadata>, SystemError> {
        let n = self.partitions(stream)?.ok_or_else(|| {
            SystemError::new(
                SystemErrorKind::NotFound,
                format!("topic {stream} does not exist in {}", self.system),
            )
        })?;
        (0..n)
            .map(|p| {
                let (low, high) = self.probe.fetch_watermarks(stream, p as i32, TIMEOUT).map_err(|e| {
                    kafka_err(format!("cannot read the offsets of {}.{stream}[{p}]", self.system), e)
                })?;
                let (low, high) = (low.max(0) as u64, high.max(0) as u64);
                Ok(PartitionMetadata { oldest: low, newest: (high > low).then(|| high - 1), upcoming: high })
            })
            .collect()
    }

    fn create_stream(&self, spec: &StreamSpec) -> Result<bool, SystemError> {
        let topic = &spec.stream;
        if let Some(n) = self.partitions(topic)? {
            return if n == spec.partitions {
                Ok(false)
            } else {
                Err(SystemError::new(
                    SystemErrorKind::InvalidInput,
                    format!(
                        "topic {}.{topic} exists with {n} partitions; {} are needed",
                        self.system, spec.partitions
                    ),
                ))
            };
        }
        let replication = match self.replication {
            Some(r) => r,
            None => self.brokers()?.clamp(1, 3),
        };
        let mut new =
            NewTopic::new(topic, spec.partitions as i32, TopicReplication::Fixed(replication as i32));
        if spec.compacted {
            new = new.set("cleanup.policy", "compact");
        }
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT)).request_timeout(Some(TIMEOUT));
        let results = self
            .runtime
            .block_on(self.admin.create_topics([&new], &options))
            .map_err(|e| kafka_err(format!("cannot create topic {}.{topic}", self.system), e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(SystemError::new(
                        SystemErrorKind::Io,
                        format!(
                            "cannot create topic {}.{t} ({} partitions, replication {replication}): {code}",
                            self.system, spec.partitions
                        ),
                    ))
                }
            }
        }
        // Metadata catches up with a new topic a little later.
        let deadline = Instant::now() + TIMEOUT;
        while self.partitions(topic)?.is_none() {
            if Instant::now() > deadline {
                return Err(SystemError::new(
                    SystemErrorKind::Io,
                    format!(
                        "topic {}.{topic} was created but its metadata did not appear within {TIMEOUT:?}",
                        self.system
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(system = %self.system, topic, partitions = spec.partitions, compacted = spec.compacted, replication, "created topic");
        Ok(true)
    }

    fn stream_exists(&self, stream: &str) -> Result<bool, SystemError> {
        Ok(self.partitions(stream)?.is_some())
    }
}

/// Reads assigned partitions from the offsets the runtime registers.
pub struct KafkaConsumer {
    consumer: BaseConsumer,
    /// Registered partitions: the SSP handed out with each message, and the
    /// next offset (where a new assignment restarts it).
    assigned: Vec<(Arc<SystemStreamPartition>, i64)>,
    /// Index in `assigned` of the last message's partition.
    last: usize,
    system: String,
}

impl KafkaConsumer {
    fn assign(&self) -> Result<(), SystemError> {
        let mut tpl = TopicPartitionList::new();
        for (ssp, next) in &self.assigned {
            tpl.add_partition_offset(ssp.stream(), ssp.partition as i32, Offset::Offset(*next))
                .map_err(|e| kafka_err(format!("cannot assign {ssp}"), e))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(|e| kafka_err(format!("cannot assign partitions of {}", self.system), e))
    }
}

/// Errors a client reports while it reconnects or waits for a leader.
fn transient(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            AllBrokersDown
                | BrokerTransportFailure
                | OperationTimedOut
                | RequestTimedOut
                | NetworkException
                | LeaderNotAvailable
                | NotLeaderForPartition
                | CoordinatorNotAvailable
                | NotCoordinator
                | Resolve
        )
    )
}

/// The index in `assigned` of a message's partition (`last` first: messages
/// come in runs from one partition).
fn find(
    assigned: &[(Arc<SystemStreamPartition>, i64)],
    last: &mut usize,
    topic: &str,
    partition: i32,
) -> Option<usize> {
    let is =
        |(s, _): &(Arc<SystemStreamPartition>, i64)| s.partition as i32 == partition && s.stream() == topic;
    if assigned.get(*last).is_some_and(is) {
        return Some(*last);
    }
    *last = assigned.iter().position(is)?;
    Some(*last)
}

impl SystemConsumer for KafkaConsumer {
    fn register(&mut self, ssp: &SystemStreamPartition, offset: u64) -> Result<(), SystemError> {
        self.assigned.push((Arc::new(ssp.clone()), offset as i64));
        self.assign()
    }

    fn poll(
        &mut self,
        out: &mut Vec<IncomingMessageEnvelope>,
        max_messages: usize,
        max_wait: Duration,
    ) -> Result<(), SystemError> {
        let mut wait = max_wait;
        let arrival = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let start = out.len();
        while out.len() - start < max_messages {
            let m = match self.consumer.poll(wait) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                // Connection trouble is reported here too; librdkafka
                // reconnects on its own, so it is only worth a line in the log.
                Some(Err(e)) if transient(&e) => {
                    tracing::warn!(system = %self.system, "consumer: {e}");
                    break;
                }
                Some(Err(e)) => return Err(kafka_err(format!("cannot read from system {}", self.system), e)),
                Some(Ok(m)) => m,
            };
            wait = Duration::ZERO;
            let Some(i) = find(&self.assigned, &mut self.last, m.topic(), m.partition()) else {
                continue;
            };
            self.assigned[i].1 = m.offset() + 1;
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.map(Bytes::copy_from_slice).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(IncomingMessageEnvelope {
                ssp: self.assigned[i].0.clone(),
                offset: m.offset() as u64,
                key: m.key().map(Bytes::copy_from_slice),
                message: m.payload().map(Bytes::copy_from_slice),
                event_time: m.timestamp().to_millis().unwrap_or(arrival),
                arrival_time: arrival,
                headers,
            });
        }
        Ok(())
    }
}

/// Delivery reports: failures are kept until the next flush reports them.
#[derive(Default)]
struct Delivery {
    failed: Mutex<(u64, Option<String>)>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            f.0 += 1;
            f.1.get_or_insert_with(|| format!("{}[{}]: {e}", m.topic(), m.partition()));
        }
    }
}

/// Writes records; `flush` waits for every acknowledgement.
pub struct KafkaProducer {
    producer: BaseProducer<Delivery>,
    /// Partition counts of the topics written to.
    partitions: Vec<(String, u32)>,
    sent: u64,
    system: String,
}

impl KafkaProducer {
    fn partition_count(&mut self, topic: &str) -> Result<u32, SystemError> {
        if let Some((_, n)) = self.partitions.iter().find(|(t, _)| t == topic) {
            return Ok(*n);
        }
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| kafka_err(format!("cannot read metadata of {}.{topic}", self.system), e))?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if n == 0 {
            return Err(SystemError::new(
                SystemErrorKind::NotFound,
                format!(
                    "topic {topic} does not exist in {} (declare it with a partition count to create it)",
                    self.system
                ),
            ));
        }
        self.partitions.push((topic.to_string(), n as u32));
        Ok(n as u32)
    }
}

impl SystemProducer for KafkaProducer {
    fn send(&mut self, env: OutgoingMessageEnvelope) -> Result<(), SystemError> {
        let topic: &str = &env.stream.stream;
        let partition = match (env.partition, env.partition_key.as_deref().or(env.key.as_deref())) {
            (Some(p), _) => Some(p),
            (None, Some(k)) => Some(partition_for_key(k, self.partition_count(topic)?)),
            // No key: librdkafka spreads the records.
            (None, None) => None,
        };
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(k) = env.key.as_deref() {
            record = record.key(k);
        }
        if let Some(m) = env.message.as_deref() {
            record = record.payload(m);
        }
        if let Some(p) = partition {
            record = record.partition(p as i32);
        }
        if let Some(t) = env.event_time {
            record = record.timestamp(t);
        }
        if !env.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(env.headers.len());
            for (k, v) in &env.headers {
                h = h.insert(Header { key: k, value: Some(v.as_ref()) });
            }
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(kafka_err(format!("cannot send to {}.{topic}", self.system), e)),
            }
        }
        self.sent += 1;
        if self.sent % 1024 == 0 {
            // Serves delivery reports now and then between flushes.
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SystemError> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| {
            kafka_err(format!("records to {} were not acknowledged within {FLUSH_TIMEOUT:?}", self.system), e)
        })?;
        let mut f = self.producer.context().failed.lock().unwrap_or_else(|p| p.into_inner());
        if let (n, Some(first)) = std::mem::take(&mut *f) {
            return Err(SystemError::new(
                SystemErrorKind::Io,
                format!("{n} record(s) to {} were not delivered; first: {first}", self.system),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_job_toml_reach_the_clients_role_settings_last() {
        let sc = KafkaConfig {
            settings: [("linger.ms".into(), "50".into()), ("socket.timeout.ms".into(), "7000".into())].into(),
            producer_settings: [("linger.ms".into(), "0".into())].into(),
            consumer_settings: [("fetch.wait.max.ms".into(), "20".into())].into(),
            ..KafkaConfig::new("127.0.0.1:1")
        };
        let p = client_config("k", &sc, Role::Producer).unwrap();
        assert_eq!(p.get("linger.ms"), Some("0"), "producer-settings win over settings");
        assert_eq!(p.get("socket.timeout.ms"), Some("7000"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        let c = client_config("k", &sc, Role::Consumer).unwrap();
        assert_eq!(c.get("linger.ms"), Some("50"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("20"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:1"));
        let e = client_config("k", &KafkaConfig::default(), Role::Admin).unwrap_err();
        assert!(e.to_string().contains("systems.k.bootstrap-servers is not set"), "{e}");
    }
}
