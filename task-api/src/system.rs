//! The `System` abstraction: how the framework reads and writes partitioned,
//! offset-addressed streams without knowing which log is underneath.
//!
//! A system (the embedded log, Kafka) implements three roles, as in Samza:
//! [`SystemAdmin`] (streams and their offsets), [`SystemConsumer`] (reading a set
//! of partitions from given offsets) and [`SystemProducer`] (writing, with
//! `flush` as the durability barrier the checkpoint protocol relies on).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// Position of a message within one partition; monotonically increasing.
pub type Offset = u64;

/// A named stream within a named system.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SystemStream {
    /// Shared, so that cloning a stream name per message costs no allocation.
    pub system: Arc<str>,
    pub stream: Arc<str>,
}

impl SystemStream {
    pub fn new(system: impl Into<Arc<str>>, stream: impl Into<Arc<str>>) -> Self {
        SystemStream { system: system.into(), stream: stream.into() }
    }

    pub fn partition(&self, partition: u32) -> SystemStreamPartition {
        SystemStreamPartition { system_stream: self.clone(), partition }
    }
}

impl fmt::Display for SystemStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.system, self.stream)
    }
}

/// Text that does not name a stream (`system.stream`) or a partition
/// (`system.stream[N]`); the message quotes the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not \"{expected}\"")]
pub struct ParseStreamError {
    text: String,
    expected: &'static str,
}

/// `system.stream`: split at the first dot (stream names may hold dots);
/// neither part may be empty.
impl std::str::FromStr for SystemStream {
    type Err = ParseStreamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('.') {
            Some((system, stream)) if !system.is_empty() && !stream.is_empty() => {
                Ok(SystemStream::new(system, stream))
            }
            _ => Err(ParseStreamError { text: s.to_string(), expected: "system.stream" }),
        }
    }
}

/// One partition of one stream of one system: the unit of input a task owns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SystemStreamPartition {
    #[serde(flatten)]
    pub system_stream: SystemStream,
    pub partition: u32,
}

impl SystemStreamPartition {
    pub fn new(system: impl Into<Arc<str>>, stream: impl Into<Arc<str>>, partition: u32) -> Self {
        SystemStream::new(system, stream).partition(partition)
    }

    pub fn system(&self) -> &str {
        &self.system_stream.system
    }

    pub fn stream(&self) -> &str {
        &self.system_stream.stream
    }
}

impl fmt::Display for SystemStreamPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.system_stream, self.partition)
    }
}

/// `system.stream[N]`, as [`SystemStreamPartition`]'s `Display` writes it.
impl std::str::FromStr for SystemStreamPartition {
    type Err = ParseStreamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseStreamError { text: s.to_string(), expected: "system.stream[partition]" };
        let (stream, rest) = s.rsplit_once('[').ok_or_else(bad)?;
        let partition = rest.strip_suffix(']').and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let stream: SystemStream = stream.parse().map_err(|_| bad())?;
        Ok(stream.partition(partition))
    }
}

/// What a system consumer hands to the run loop: one message and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingMessageEnvelope {
    pub ssp: Arc<SystemStreamPartition>,
    pub offset: Offset,
    pub key: Option<Bytes>,
    /// `None` is a tombstone (a deletion marker in compacted streams).
    pub message: Option<Bytes>,
    /// Milliseconds since the Unix epoch, as set by the producer.
    pub event_time: i64,
    /// Milliseconds since the Unix epoch at which the consumer read the message.
    pub arrival_time: i64,
    pub headers: Vec<(String, Bytes)>,
}

impl IncomingMessageEnvelope {
    /// Whether the message came from `stream` (an input from
    /// [`crate::TaskContext::input`]).
    pub fn is_from(&self, stream: &SystemStream) -> bool {
        self.ssp.system_stream == *stream
    }

    /// The message as UTF-8 text.
    pub fn message_str(&self) -> Result<&str, crate::TaskError> {
        let m = self.message.as_deref().ok_or_else(|| self.tombstone_error())?;
        std::str::from_utf8(m).map_err(|e| {
            crate::TaskError::serde(format!(
                "message at {} offset {} is not utf-8: {e}",
                self.ssp, self.offset
            ))
        })
    }

    /// The message decoded from JSON.
    pub fn message_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::TaskError> {
        let m = self.message.as_deref().ok_or_else(|| self.tombstone_error())?;
        serde_json::from_slice(m).map_err(|e| {
            crate::TaskError::serde(format!(
                "message at {} offset {} is not the expected json: {e}",
                self.ssp, self.offset
            ))
        })
    }

    /// The key as UTF-8 text, if there is a key.
    pub fn key_str(&self) -> Result<Option<&str>, crate::TaskError> {
        self.key
            .as_deref()
            .map(|k| {
                std::str::from_utf8(k).map_err(|e| {
                    crate::TaskError::serde(format!(
                        "key at {} offset {} is not utf-8: {e}",
                        self.ssp, self.offset
                    ))
                })
            })
            .transpose()
    }

    fn tombstone_error(&self) -> crate::TaskError {
        crate::TaskError::serde(format!(
            "message at {} offset {} is a tombstone (no value)",
            self.ssp, self.offset
        ))
    }
}

/// A message to be written to a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessageEnvelope {
    pub stream: SystemStream,
    /// Explicit partition; when absent the partition comes from the partition key,
    /// then the key (see [`crate::partition_for_key`]), then round-robin.
    pub partition: Option<u32>,
    /// Bytes hashed to choose the partition when it differs from the key.
    pub partition_key: Option<Bytes>,
    pub key: Option<Bytes>,
    pub message: Option<Bytes>,
    /// Milliseconds since the Unix epoch; `None` means "now".
    pub event_time: Option<i64>,
    pub headers: Vec<(String, Bytes)>,
}

impl OutgoingMessageEnvelope {
    pub fn new(stream: SystemStream, key: Option<Bytes>, message: Option<Bytes>) -> Self {
        OutgoingMessageEnvelope {
            stream,
            partition: None,
            partition_key: None,
            key,
            message,
            event_time: None,
            headers: Vec::new(),
        }
    }
}

/// Builders: keys and values take the same types everywhere (anything
/// that is bytes: `&str`, `String`, `Vec<u8>`, `Bytes`, ...; JSON; or any
/// serde), as the test harness's `Msg` does.
///
/// ```
/// use samza_task_api::*;
/// let out = SystemStream::new("log", "counts");
/// let user = String::from("ann");
/// let m = OutgoingMessageEnvelope::to(out.clone()).key(&user).value("3");
/// let j = OutgoingMessageEnvelope::to(out.clone()).key(&user).value_json(&serde_json::json!({"n": 3}))?;
/// let t = OutgoingMessageEnvelope::to(out).key_with(&7i64, &I64Serde)?.value_with(&3i64, &I64Serde)?;
/// assert_eq!(m.key, j.key);
/// # let _ = t;
/// # Ok::<(), TaskError>(())
/// ```
impl OutgoingMessageEnvelope {
    /// A message to `stream`, with no key and no value yet.
    pub fn to(stream: SystemStream) -> Self {
        Self::new(stream, None, None)
    }

    /// The key's bytes.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(Bytes::copy_from_slice(key.as_ref()));
        self
    }

    /// The key, encoded by `serde`.
    pub fn key_with<K>(mut self, key: &K, serde: &impl crate::Serde<K>) -> Result<Self, crate::TaskError> {
        self.key = Some(serde.to_bytes(key)?);
        Ok(self)
    }

    /// The value's bytes.
    pub fn value(mut self, value: impl AsRef<[u8]>) -> Self {
        self.message = Some(Bytes::copy_from_slice(value.as_ref()));
        self
    }

    /// The value as JSON.
    pub fn value_json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Result<Self, crate::TaskError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| crate::TaskError::serde(format!("cannot encode json for {}: {e}", self.stream)))?;
        self.message = Some(bytes.into());
        Ok(self)
    }

    /// The value, encoded by `serde`.
    pub fn value_with<V>(
        mut self,
        value: &V,
        serde: &impl crate::Serde<V>,
    ) -> Result<Self, crate::TaskError> {
        self.message = Some(serde.to_bytes(value)?);
        Ok(self)
    }

    /// The event time, in milliseconds since the Unix epoch.
    pub fn at(mut self, time_ms: i64) -> Self {
        self.event_time = Some(time_ms);
        self
    }

    /// A record header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_string(), Bytes::copy_from_slice(value.as_ref())));
        self
    }
}

impl OutgoingMessageEnvelope {
    /// A message whose value is `value` as JSON.
    pub fn json<T: serde::Serialize>(
        stream: SystemStream,
        key: Option<&str>,
        value: &T,
    ) -> Result<Self, crate::TaskError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| crate::TaskError::serde(format!("cannot encode json for {stream}: {e}")))?;
        Ok(Self::new(stream, key.map(|k| Bytes::copy_from_slice(k.as_bytes())), Some(Bytes::from(bytes))))
    }

    /// Routes the message by `partition_key` instead of its key.
    pub fn with_partition_key(mut self, partition_key: impl Into<Bytes>) -> Self {
        self.partition_key = Some(partition_key.into());
        self
    }

    /// Sends the message to this partition.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// The offsets of one partition as seen by its system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionMetadata {
    /// Oldest offset still readable.
    pub oldest: Offset,
    /// Offset of the newest message, `None` when the partition holds none.
    pub newest: Option<Offset>,
    /// Offset the next message appended will get.
    pub upcoming: Offset,
}

/// What a stream should look like when a system is asked to create it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    pub stream: String,
    pub partitions: u32,
    /// Keep only the latest message per key (changelogs, checkpoints).
    pub compacted: bool,
}

/// Broad classes of system failure a runtime reacts to differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemErrorKind {
    /// The stream or partition does not exist.
    NotFound,
    /// The requested offset is outside what the partition holds.
    OffsetOutOfRange,
    /// Stored data failed its integrity check.
    Corruption,
    /// The request itself is wrong (bad name, bad partition count, ...).
    InvalidInput,
    /// I/O or transport failure; may succeed on retry.
    Io,
    /// A newer incarnation of this writer has taken over (its epoch is
    /// higher): this one must stop without writing anything more.
    Fenced,
    Other,
}

/// An error from a system, with a kind to branch on and a message naming what failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SystemError {
    kind: SystemErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SystemError {
    pub fn new(kind: SystemErrorKind, message: impl Into<String>) -> Self {
        SystemError { kind, message: message.into(), source: None }
    }

    pub fn with_source(
        kind: SystemErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        SystemError { kind, message: message.into(), source: Some(Box::new(source)) }
    }

    pub fn kind(&self) -> SystemErrorKind {
        self.kind
    }
}

/// Streams and offsets of one system.
pub trait SystemAdmin: Send + Sync {
    /// Metadata of every partition of `stream`, indexed by partition number.
    fn partition_metadata(&self, stream: &str) -> Result<Vec<PartitionMetadata>, SystemError>;

    /// Creates the stream; `Ok(false)` when it already exists with the same partition count.
    fn create_stream(&self, spec: &StreamSpec) -> Result<bool, SystemError>;

    /// Whether `stream` exists.
    fn stream_exists(&self, stream: &str) -> Result<bool, SystemError>;
}

/// Reads a set of partitions, each from an offset the runtime chooses.
pub trait SystemConsumer: Send {
    /// Adds `ssp` to the set polled, starting at `offset` (the next message to read).
    fn register(&mut self, ssp: &SystemStreamPartition, offset: Offset) -> Result<(), SystemError>;

    /// Appends available messages of registered partitions to `out`, at most
    /// about `max_messages`; waits up to `max_wait` when none is available.
    fn poll(
        &mut self,
        out: &mut Vec<IncomingMessageEnvelope>,
        max_messages: usize,
        max_wait: Duration,
    ) -> Result<(), SystemError>;

    /// The offset of the next record of `ssp` this consumer will return,
    /// when it knows it has read everything before it (gaps that compaction
    /// left included); `None` when it cannot tell. Lets a reader that must
    /// reach an offset tell "at the end" from "the system is slow".
    fn position(&self, ssp: &SystemStreamPartition) -> Option<Offset> {
        let _ = ssp;
        None
    }
}

/// Who writes through a producer: an identity that stays the same across
/// restarts (a job's container) and an epoch that grows with each one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerOwner {
    pub id: String,
    pub epoch: u64,
}

/// Writes messages; `flush` is the barrier after which everything sent is durable.
pub trait SystemProducer: Send {
    /// Queues `envelope`; may write a batch when enough is buffered.
    fn send(&mut self, envelope: OutgoingMessageEnvelope) -> Result<(), SystemError>;

    /// Returns once every message sent before the call is durable in the system.
    fn flush(&mut self) -> Result<(), SystemError>;

    /// Writes as `owner` from now on, fencing older epochs of the same
    /// identity: on `partitions` at once, on any other partition before this
    /// producer's first write to it. Once fenced by a newer epoch, sends and
    /// flushes fail with [`SystemErrorKind::Fenced`]. Systems that cannot
    /// fence keep the default, which does nothing (ownership then rests on
    /// the container's lease alone).
    fn fence(
        &mut self,
        owner: &ProducerOwner,
        partitions: &[SystemStreamPartition],
    ) -> Result<(), SystemError> {
        let _ = (owner, partitions);
        Ok(())
    }

    /// Whether this producer writes transactions (exactly-once): see
    /// [`SystemProducer::init_transactions`].
    fn transactional(&self) -> bool {
        false
    }

    /// Makes every later send part of a transaction of `owner` (fenced with
    /// [`SystemProducer::fence`] before), visible to read-committed readers
    /// only once [`SystemProducer::commit_transaction`] returns, all at
    /// once. First finishes what older generations of `owner` left: their
    /// last committed transaction becomes visible everywhere, the one they
    /// had open is aborted.
    fn init_transactions(&mut self, owner: &ProducerOwner) -> Result<(), SystemError> {
        let _ = owner;
        Err(SystemError::new(SystemErrorKind::InvalidInput, "this system cannot write transactions"))
    }

    /// Flushes, commits the open transaction (every record sent since the
    /// last commit) and starts the next. Returns the partitions written
    /// with their next offsets after the commit.
    fn commit_transaction(&mut self) -> Result<Vec<(SystemStreamPartition, u64)>, SystemError> {
        Err(SystemError::new(SystemErrorKind::InvalidInput, "this system cannot write transactions"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_parse_with_one_rule() {
        assert_eq!("log.in".parse::<SystemStream>().unwrap(), SystemStream::new("log", "in"));
        assert_eq!("kafka.a.b".parse::<SystemStream>().unwrap(), SystemStream::new("kafka", "a.b"));
        for bad in ["in", "log.", ".in", ""] {
            let e = bad.parse::<SystemStream>().unwrap_err().to_string();
            assert_eq!(e, format!("{bad:?} is not \"system.stream\""));
        }
    }

    #[test]
    fn partitions_parse_as_they_display() {
        let ssp = SystemStreamPartition::new("log", "a.b", 7);
        assert_eq!(ssp.to_string().parse::<SystemStreamPartition>().unwrap(), ssp);
        for bad in ["log.in", "log.in[x]", "log.in[1", "log[1]", "log.[1]", "log.in[-1]"] {
            let e = bad.parse::<SystemStreamPartition>().unwrap_err().to_string();
            assert_eq!(e, format!("{bad:?} is not \"system.stream[partition]\""));
        }
    }
}
