//! An in-memory system (`type = "in-memory"`): streams that live in the process,
//! for the test runner and for job authors' unit tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use samza_task_api::{
    partition_for_key, IncomingMessageEnvelope, Offset, OutgoingMessageEnvelope, PartitionMetadata,
    StreamSpec, SystemAdmin, SystemConsumer, SystemError, SystemErrorKind, SystemFactory, SystemProducer,
    SystemStreamPartition,
};

/// The in-memory system has no keys of its own.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InMemoryConfig {}

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub key: Option<Bytes>,
    pub message: Option<Bytes>,
    pub timestamp: i64,
    pub headers: Vec<(String, Bytes)>,
}

#[derive(Default)]
struct State {
    streams: BTreeMap<String, Vec<Vec<StoredMessage>>>,
    round_robin: u32,
}

/// Shared in-memory streams; clones share the same data.
#[derive(Clone, Default)]
pub struct InMemoryStreams {
    inner: Arc<(Mutex<State>, Condvar)>,
}

fn not_found(stream: &str) -> SystemError {
    SystemError::new(SystemErrorKind::NotFound, format!("stream {stream} does not exist"))
}

impl InMemoryStreams {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn create(&self, stream: &str, partitions: u32) -> bool {
        let mut st = self.inner.0.lock().unwrap();
        if st.streams.contains_key(stream) {
            return false;
        }
        st.streams.insert(stream.to_string(), vec![Vec::new(); partitions as usize]);
        true
    }

    /// Appends a message, choosing the partition as every producer does.
    pub fn append(
        &self,
        stream: &str,
        partition: Option<u32>,
        key: Option<Bytes>,
        message: Option<Bytes>,
        timestamp: i64,
    ) -> Result<(u32, Offset), SystemError> {
        self.append_with_headers(stream, partition, key, message, timestamp, Vec::new())
    }

    /// [`Self::append`] with record headers.
    pub fn append_with_headers(
        &self,
        stream: &str,
        partition: Option<u32>,
        key: Option<Bytes>,
        message: Option<Bytes>,
        timestamp: i64,
        headers: Vec<(String, Bytes)>,
    ) -> Result<(u32, Offset), SystemError> {
        let (lock, cv) = &*self.inner;
        let mut st = lock.lock().unwrap();
        st.round_robin = st.round_robin.wrapping_add(1);
        let rr = st.round_robin;
        let parts = st.streams.get_mut(stream).ok_or_else(|| not_found(stream))?;
        let n = parts.len() as u32;
        let p = partition.unwrap_or_else(|| key.as_deref().map_or(rr % n, |k| partition_for_key(k, n)));
        let part = parts.get_mut(p as usize).ok_or_else(|| {
            SystemError::new(SystemErrorKind::NotFound, format!("stream {stream} has no partition {p}"))
        })?;
        part.push(StoredMessage { key, message, timestamp, headers });
        let offset = part.len() as u64 - 1;
        cv.notify_all();
        Ok((p, offset))
    }

    /// Every message of a partition.
    pub fn messages(&self, stream: &str, partition: u32) -> Vec<StoredMessage> {
        let st = self.inner.0.lock().unwrap();
        st.streams.get(stream).and_then(|p| p.get(partition as usize)).cloned().unwrap_or_default()
    }

    pub fn partitions(&self, stream: &str) -> Option<u32> {
        self.inner.0.lock().unwrap().streams.get(stream).map(|p| p.len() as u32)
    }
}

impl SystemFactory for InMemoryStreams {
    type Config = InMemoryConfig;

    fn admin(&self, _: &str, _: &InMemoryConfig) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        Ok(Arc::new(self.clone()))
    }

    fn consumer(&self, _: &str, _: &InMemoryConfig) -> Result<Box<dyn SystemConsumer>, SystemError> {
        Ok(Box::new(InMemoryConsumer { streams: self.clone(), registered: Vec::new(), rotate: 0 }))
    }

    fn producer(&self, _: &str, _: &InMemoryConfig) -> Result<Box<dyn SystemProducer>, SystemError> {
        Ok(Box::new(self.clone()))
    }
}

impl SystemAdmin for InMemoryStreams {
    fn partition_metadata(&self, stream: &str) -> Result<Vec<PartitionMetadata>, SystemError> {
        let st = self.inner.0.lock().unwrap();
        let parts = st.streams.get(stream).ok_or_else(|| not_found(stream))?;
        Ok(parts
            .iter()
            .map(|p| PartitionMetadata {
                oldest: 0,
                newest: (p.len() as u64).checked_sub(1),
                upcoming: p.len() as u64,
            })
            .collect())
    }

    fn create_stream(&self, spec: &StreamSpec) -> Result<bool, SystemError> {
        Ok(self.create(&spec.stream, spec.partitions))
    }

    fn stream_exists(&self, stream: &str) -> Result<bool, SystemError> {
        Ok(self.partitions(stream).is_some())
    }
}

impl SystemProducer for InMemoryStreams {
    fn send(&mut self, env: OutgoingMessageEnvelope) -> Result<(), SystemError> {
        let partition = match (env.partition, &env.partition_key) {
            (Some(p), _) => Some(p),
            (None, Some(k)) => {
                let n = self.partitions(&env.stream.stream).ok_or_else(|| not_found(&env.stream.stream))?;
                Some(partition_for_key(k, n))
            }
            (None, None) => None,
        };
        let time = env.event_time.unwrap_or(0);
        self.append_with_headers(&env.stream.stream, partition, env.key, env.message, time, env.headers)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SystemError> {
        Ok(())
    }
}

struct InMemoryConsumer {
    streams: InMemoryStreams,
    registered: Vec<(Arc<SystemStreamPartition>, u64)>,
    rotate: usize,
}

impl SystemConsumer for InMemoryConsumer {
    fn register(&mut self, ssp: &SystemStreamPartition, offset: Offset) -> Result<(), SystemError> {
        if self.streams.partitions(ssp.stream()).is_none() {
            return Err(not_found(ssp.stream()));
        }
        self.registered.push((Arc::new(ssp.clone()), offset));
        Ok(())
    }

    fn poll(
        &mut self,
        out: &mut Vec<IncomingMessageEnvelope>,
        max_messages: usize,
        max_wait: Duration,
    ) -> Result<(), SystemError> {
        let deadline = Instant::now() + max_wait;
        let (lock, cv) = &*self.streams.inner;
        let mut st = lock.lock().unwrap();
        loop {
            let before = out.len();
            // A fair share per partition, starting with a different one each poll.
            let n = self.registered.len().max(1);
            let share = (max_messages / n).max(1);
            self.rotate = (self.rotate + 1) % n;
            for k in 0..self.registered.len() {
                let (ssp, next) = &mut self.registered[(self.rotate + k) % n];
                let part = &st.streams[ssp.stream()][ssp.partition as usize];
                let taken = out.len();
                while (*next as usize) < part.len()
                    && out.len() - taken < share
                    && out.len() - before < max_messages
                {
                    let m = &part[*next as usize];
                    out.push(IncomingMessageEnvelope {
                        ssp: ssp.clone(),
                        offset: *next,
                        key: m.key.clone(),
                        message: m.message.clone(),
                        event_time: m.timestamp,
                        arrival_time: m.timestamp,
                        headers: m.headers.clone(),
                    });
                    *next += 1;
                }
            }
            let now = Instant::now();
            if out.len() > before || now >= deadline {
                return Ok(());
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }
}
