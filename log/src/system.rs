//! The embedded log behind the framework's `System` abstraction, and its
//! factory (`type = "embedded-log"`, `dir = "..."`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use samza_task_api::{
    ConfigIssue, IncomingMessageEnvelope, Offset, OutgoingMessageEnvelope, PartitionMetadata, ProducerOwner,
    StreamSpec, SystemAdmin, SystemConsumer, SystemContext, SystemError, SystemErrorKind, SystemFactory,
    SystemProducer, SystemStreamPartition,
};

use crate::fence::Fence;
use crate::format::{ControlType, ProducerInfo};
use crate::txn::Transactor;

use crate::config::StreamConfig;
use crate::format::Header;
use crate::log::{Log, StartAt, Stream};
use crate::producer::Producer;
use crate::reader::PartitionReader;
use crate::watch::Watcher;
use crate::writer::now_ms;

/// The embedded log's own keys in `[systems.<name>]`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedLogConfig {
    /// The log's directory, relative to the job file's (required).
    pub dir: Option<PathBuf>,
}

impl EmbeddedLogConfig {
    /// A config for the log in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        EmbeddedLogConfig { dir: Some(dir.into()) }
    }

    fn open(&self, system: &str) -> Result<Log, SystemError> {
        let dir = self.dir.as_ref().ok_or_else(|| {
            SystemError::new(SystemErrorKind::InvalidInput, format!("systems.{system}.dir is not set"))
        })?;
        Ok(Log::open(dir)?)
    }
}

/// Makes the embedded log's admin, consumers and producers.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmbeddedLogFactory;

impl SystemFactory for EmbeddedLogFactory {
    type Config = EmbeddedLogConfig;

    fn check(&self, system: &SystemContext<'_>, config: &mut EmbeddedLogConfig) -> Result<(), ConfigIssue> {
        let dir = config
            .dir
            .as_ref()
            .ok_or_else(|| ConfigIssue::new("dir", "an embedded-log system needs a directory"))?;
        config.dir = Some(system.resolve(dir));
        Ok(())
    }

    fn admin(&self, system: &str, config: &EmbeddedLogConfig) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        Ok(Arc::new(LogSystemAdmin::new(config.open(system)?)))
    }

    fn consumer(
        &self,
        system: &str,
        config: &EmbeddedLogConfig,
    ) -> Result<Box<dyn SystemConsumer>, SystemError> {
        Ok(Box::new(LogSystemConsumer::new(config.open(system)?)?))
    }

    fn producer(
        &self,
        system: &str,
        config: &EmbeddedLogConfig,
    ) -> Result<Box<dyn SystemProducer>, SystemError> {
        Ok(Box::new(LogSystemProducer::new(config.open(system)?).named(system)))
    }

    fn transactional(&self) -> bool {
        true
    }
}

/// Admin of the embedded log system.
#[derive(Clone, Debug)]
pub struct LogSystemAdmin {
    log: Log,
}

impl LogSystemAdmin {
    pub fn new(log: Log) -> Self {
        LogSystemAdmin { log }
    }
}

impl SystemAdmin for LogSystemAdmin {
    fn partition_metadata(&self, stream: &str) -> Result<Vec<PartitionMetadata>, SystemError> {
        let s = self.log.stream(stream)?;
        (0..s.partitions())
            .map(|p| {
                let info = s.partition_info(p)?;
                Ok(PartitionMetadata {
                    oldest: info.oldest,
                    newest: info.upcoming.checked_sub(1).filter(|n| *n >= info.oldest),
                    upcoming: info.upcoming,
                })
            })
            .collect()
    }

    fn create_stream(&self, spec: &StreamSpec) -> Result<bool, SystemError> {
        if self.log.stream_exists(&spec.stream) {
            let existing = self.log.stream(&spec.stream)?;
            if existing.partitions() != spec.partitions {
                return Err(SystemError::new(
                    SystemErrorKind::InvalidInput,
                    format!(
                        "stream {} exists with {} partitions, not the {} requested",
                        spec.stream,
                        existing.partitions(),
                        spec.partitions
                    ),
                ));
            }
            return Ok(false);
        }
        let config =
            StreamConfig { partitions: spec.partitions, compacted: spec.compacted, ..Default::default() };
        match self.log.create_stream(&spec.stream, &config) {
            Ok(_) => Ok(true),
            // Another process created it first.
            Err(crate::LogError::StreamExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn stream_exists(&self, stream: &str) -> Result<bool, SystemError> {
        Ok(self.log.stream_exists(stream))
    }
}

struct Registered {
    ssp: Arc<SystemStreamPartition>,
    reader: PartitionReader,
}

/// Consumer of the embedded log: round-robin over registered partitions, with
/// inotify to sleep while all are at their end.
pub struct LogSystemConsumer {
    log: Log,
    streams: HashMap<String, Stream>,
    partitions: Vec<Registered>,
    next: usize,
    watcher: Watcher,
    chunk_bytes: usize,
}

impl LogSystemConsumer {
    pub fn new(log: Log) -> Result<Self, SystemError> {
        Ok(LogSystemConsumer {
            log,
            streams: HashMap::new(),
            partitions: Vec::new(),
            next: 0,
            watcher: Watcher::new()?,
            chunk_bytes: 1 << 20,
        })
    }
}

impl SystemConsumer for LogSystemConsumer {
    fn register(&mut self, ssp: &SystemStreamPartition, offset: Offset) -> Result<(), SystemError> {
        let stream = match self.streams.get(ssp.stream()) {
            Some(s) => s.clone(),
            None => {
                let s = self.log.stream(ssp.stream())?;
                self.streams.insert(ssp.stream().to_string(), s.clone());
                s
            }
        };
        self.watcher.watch(&stream.partition_dir(ssp.partition)?)?;
        let reader = stream.reader(ssp.partition, StartAt::Offset(offset))?;
        self.partitions.push(Registered { ssp: Arc::new(ssp.clone()), reader });
        Ok(())
    }

    fn poll(
        &mut self,
        out: &mut Vec<IncomingMessageEnvelope>,
        max_messages: usize,
        max_wait: Duration,
    ) -> Result<(), SystemError> {
        let deadline = Instant::now() + max_wait;
        loop {
            let start_len = out.len();
            let mut read_any = false;
            let n = self.partitions.len();
            for _ in 0..n {
                if out.len() >= max_messages {
                    break;
                }
                let i = self.next;
                self.next = (self.next + 1) % n;
                let reg = &mut self.partitions[i];
                let chunk = reg.reader.read(self.chunk_bytes)?;
                if chunk.is_empty() {
                    continue;
                }
                read_any = true;
                let arrival = now_ms();
                // One copy of the chunk; every key, value and header is a slice of it.
                let bytes = chunk.as_bytes();
                let shared = Bytes::copy_from_slice(bytes);
                let base = bytes.as_ptr() as usize;
                let slice = |s: &[u8]| {
                    let start = s.as_ptr() as usize - base;
                    shared.slice(start..start + s.len())
                };
                for rec in chunk.records() {
                    let rec = rec?;
                    let headers = if rec.header_count() == 0 {
                        Vec::new()
                    } else {
                        rec.headers()
                            .filter_map(|h| h.ok())
                            .map(|(k, v)| (k.to_string(), v.map(slice).unwrap_or_default()))
                            .collect()
                    };
                    out.push(IncomingMessageEnvelope {
                        ssp: reg.ssp.clone(),
                        offset: rec.offset,
                        key: rec.key.map(slice),
                        message: rec.value.map(slice),
                        event_time: rec.timestamp,
                        arrival_time: arrival,
                        headers,
                    });
                }
            }
            if out.len() > start_len || n == 0 {
                return Ok(());
            }
            if read_any {
                // Only control records: there may be more right behind them.
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            self.watcher.wait(deadline - now)?;
        }
    }

    fn position(&self, ssp: &SystemStreamPartition) -> Option<Offset> {
        self.partitions.iter().find(|r| *r.ssp == *ssp).map(|r| r.reader.position())
    }
}

/// Producer of the embedded log; `flush` appends and syncs every buffered
/// batch. Fenced (see [`crate::fence`]) once given an owner; transactional
/// (see [`crate::txn`]) once its transactions are initialised.
pub struct LogSystemProducer {
    log: Log,
    producers: Vec<(Arc<str>, Producer)>,
    /// Index of the stream sent to last: most tasks write to one stream.
    last: usize,
    fence: Option<Arc<Fence>>,
    /// The generation's transaction file and its open transaction.
    txn: Option<(Arc<std::sync::Mutex<Transactor>>, u32)>,
    /// The system's name in the job, for the partitions it reports.
    system: Arc<str>,
}

impl LogSystemProducer {
    pub fn new(log: Log) -> Self {
        LogSystemProducer {
            log,
            producers: Vec::new(),
            last: 0,
            fence: None,
            txn: None,
            system: Arc::from("log"),
        }
    }

    /// Names the system it is in the job (default `log`).
    pub fn named(mut self, system: &str) -> Self {
        self.system = Arc::from(system);
        self
    }

    /// Writes `marker` for `producer` to `partition` of `stream`; its next offset.
    fn marker(
        &mut self,
        stream: &str,
        partition: u32,
        marker: ControlType,
        producer: ProducerInfo,
    ) -> Result<u64, SystemError> {
        let i = self.producer_for(&Arc::from(stream))?;
        Ok(self.producers[i].1.write_marker(partition, marker, producer)?)
    }

    fn producer_for(&mut self, stream: &Arc<str>) -> Result<usize, SystemError> {
        if let Some((name, _)) = self.producers.get(self.last) {
            if Arc::ptr_eq(name, stream) || **name == **stream {
                return Ok(self.last);
            }
        }
        let i = match self.producers.iter().position(|(n, _)| **n == **stream) {
            Some(i) => i,
            None => {
                let s = self.log.stream(stream)?;
                let mut p = s.producer();
                if let Some(f) = &self.fence {
                    p.set_fence(f.clone())?;
                }
                if let Some((t, txn)) = &self.txn {
                    p.set_transaction(t.clone(), *txn);
                }
                self.producers.push((stream.clone(), p));
                self.producers.len() - 1
            }
        };
        self.last = i;
        Ok(i)
    }
}

impl SystemProducer for LogSystemProducer {
    fn send(&mut self, env: OutgoingMessageEnvelope) -> Result<(), SystemError> {
        let i = self.producer_for(&env.stream.stream)?;
        let producer = &mut self.producers[i].1;
        let hash_key = env.partition_key.as_deref().or(env.key.as_deref());
        let partition = match env.partition {
            Some(p) => Some(p),
            None => hash_key.map(|k| samza_task_api::partition_for_key(k, producer.stream().partitions())),
        };
        let headers: Vec<Header<'_>> =
            env.headers.iter().map(|(k, v)| Header { key: k, value: Some(v) }).collect();
        producer.send(
            partition,
            env.key.as_deref(),
            env.message.as_deref(),
            env.event_time.unwrap_or_else(now_ms),
            &headers,
        )?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SystemError> {
        for (_, p) in &mut self.producers {
            p.flush()?;
        }
        Ok(())
    }

    fn fence(
        &mut self,
        owner: &ProducerOwner,
        partitions: &[SystemStreamPartition],
    ) -> Result<(), SystemError> {
        let fence = Fence::new(owner.id.as_str(), owner.epoch);
        for (_, p) in &mut self.producers {
            p.set_fence(fence.clone())?;
        }
        self.fence = Some(fence);
        for ssp in partitions {
            let stream: Arc<str> = ssp.system_stream.stream.clone();
            let i = self.producer_for(&stream)?;
            self.producers[i].1.raise(ssp.partition)?;
        }
        Ok(())
    }

    fn transactional(&self) -> bool {
        true
    }

    fn init_transactions(&mut self, owner: &ProducerOwner) -> Result<(), SystemError> {
        if self.fence.as_ref().is_none_or(|f| *f.producer != *owner.id || f.epoch != owner.epoch) {
            self.fence(owner, &[])?;
        }
        let (mut transactor, unfinished) = Transactor::take_over(self.log.root(), &owner.id, owner.epoch)?;
        // Finish the older generations: their last commit becomes visible
        // everywhere, whatever they had open after it is aborted.
        for g in &unfinished {
            for (stream, partition) in &g.partitions {
                if !self.log.stream_exists(stream) {
                    continue;
                }
                let info = |txn: u32| ProducerInfo {
                    producer_id: g.producer_id,
                    producer_epoch: 0,
                    base_sequence: txn as i32,
                };
                if g.committed > 0 {
                    self.marker(stream, *partition, ControlType::Commit, info(g.committed))?;
                }
                self.marker(stream, *partition, ControlType::Abort, info(g.committed + 1))?;
            }
        }
        self.flush()?;
        transactor.finished()?;
        if !unfinished.is_empty() {
            tracing::info!(owner = %owner.id, generations = unfinished.len(), "finished the transactions of older generations");
        }
        let transactor = Arc::new(std::sync::Mutex::new(transactor));
        for (_, p) in &mut self.producers {
            p.set_transaction(transactor.clone(), 1);
        }
        self.txn = Some((transactor, 1));
        Ok(())
    }

    fn commit_transaction(&mut self) -> Result<Vec<(SystemStreamPartition, u64)>, SystemError> {
        let Some((transactor, txn)) = self.txn.clone() else {
            return Err(SystemError::new(SystemErrorKind::InvalidInput, "transactions were not initialised"));
        };
        self.flush()?;
        samza_task_api::crash::crash_point("commit-flushed");
        let touched: Vec<(usize, Vec<u32>)> = self
            .producers
            .iter()
            .enumerate()
            .map(|(i, (_, p))| (i, p.touched()))
            .filter(|(_, t)| !t.is_empty())
            .collect();
        if touched.is_empty() {
            return Ok(Vec::new());
        }
        // The commit point.
        let producer_id = {
            let mut t = transactor.lock().unwrap_or_else(|p| p.into_inner());
            t.commit(txn)?;
            t.generation().producer_id
        };
        let info = ProducerInfo { producer_id, producer_epoch: 0, base_sequence: txn as i32 };
        let mut written = Vec::new();
        for (i, partitions) in touched {
            let (stream, p) = &mut self.producers[i];
            for partition in partitions {
                let next = p.write_marker(partition, ControlType::Commit, info)?;
                if written.is_empty() {
                    samza_task_api::crash::crash_point("commit-partly-marked");
                }
                written
                    .push((SystemStreamPartition::new(self.system.clone(), stream.clone(), partition), next));
            }
        }
        // The markers are not synced: the decision is, and a successor
        // writes them again from it when they were lost.
        let next = txn.checked_add(1).filter(|n| *n < i32::MAX as u32).ok_or_else(|| {
            SystemError::new(SystemErrorKind::Other, "this generation has used up its transaction numbers")
        })?;
        for (_, p) in &mut self.producers {
            p.next_transaction(next);
        }
        self.txn = Some((transactor, next));
        Ok(written)
    }
}
