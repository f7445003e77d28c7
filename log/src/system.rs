//! The embedded log behind the framework's `System` abstraction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use samza_task_api::{
    IncomingMessageEnvelope, Offset, OutgoingMessageEnvelope, PartitionMetadata, StreamSpec,
    SystemAdmin, SystemConsumer, SystemError, SystemErrorKind, SystemProducer,
    SystemStreamPartition,
};

use crate::config::StreamConfig;
use crate::format::Header;
use crate::log::{Log, StartAt, Stream};
use crate::producer::Producer;
use crate::reader::PartitionReader;
use crate::watch::Watcher;
use crate::writer::now_ms;

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
        let config = StreamConfig {
            partitions: spec.partitions,
            compacted: spec.compacted,
            ..Default::default()
        };
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
        self.partitions.push(Registered {
            ssp: Arc::new(ssp.clone()),
            reader,
        });
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
                for rec in chunk.records() {
                    let rec = rec?;
                    out.push(IncomingMessageEnvelope {
                        ssp: reg.ssp.clone(),
                        offset: rec.offset,
                        key: rec.key.map(Bytes::copy_from_slice),
                        message: rec.value.map(Bytes::copy_from_slice),
                        event_time: rec.timestamp,
                        arrival_time: arrival,
                        headers: rec
                            .headers()
                            .filter_map(|h| h.ok())
                            .map(|(k, v)| {
                                (k.to_string(), Bytes::copy_from_slice(v.unwrap_or_default()))
                            })
                            .collect(),
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
}

/// Producer of the embedded log; `flush` appends and syncs every buffered batch.
pub struct LogSystemProducer {
    log: Log,
    producers: HashMap<String, Producer>,
}

impl LogSystemProducer {
    pub fn new(log: Log) -> Self {
        LogSystemProducer {
            log,
            producers: HashMap::new(),
        }
    }
}

impl SystemProducer for LogSystemProducer {
    fn send(&mut self, env: OutgoingMessageEnvelope) -> Result<(), SystemError> {
        let stream = &env.stream.stream;
        if !self.producers.contains_key(stream) {
            let s = self.log.stream(stream)?;
            self.producers.insert(stream.clone(), s.producer());
        }
        let producer = self.producers.get_mut(stream).unwrap();
        let hash_key = env.partition_key.as_deref().or(env.key.as_deref());
        let partition = match env.partition {
            Some(p) => Some(p),
            None => hash_key
                .map(|k| samza_task_api::partition_for_key(k, producer.stream().partitions())),
        };
        let headers: Vec<Header<'_>> = env
            .headers
            .iter()
            .map(|(k, v)| Header {
                key: k,
                value: Some(v),
            })
            .collect();
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
        for p in self.producers.values_mut() {
            p.flush()?;
        }
        Ok(())
    }
}
