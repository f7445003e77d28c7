//! Writing records to a stream, choosing each record's partition.
//!
//! Partition choice, in order: an explicit partition; the stream-wide key hash
//! [`samza_task_api::partition_for_key`]; round-robin for keyless records.
//! Records are buffered per partition and appended as one batch once a batch
//! reaches `batch_bytes`, or on `flush`.

use samza_task_api::partition_for_key;

use crate::config::FsyncPolicy;
use crate::error::{LogError, Result};
use crate::format::{BatchBuilder, Header, MAX_BATCH_LEN};
use crate::log::Stream;
use crate::writer::PartitionWriter;

pub struct Producer {
    stream: Stream,
    writers: Vec<Option<PartitionWriter>>,
    batches: Vec<BatchBuilder>,
    round_robin: u32,
    batch_bytes: usize,
    fsync: FsyncPolicy,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("stream", &self.stream.name()).finish()
    }
}

impl Producer {
    pub(crate) fn new(stream: Stream) -> Self {
        let n = stream.partitions() as usize;
        let stream_fsync = stream.config().fsync;
        Producer {
            stream,
            writers: (0..n).map(|_| None).collect(),
            batches: (0..n).map(|_| BatchBuilder::with_capacity(0)).collect(),
            round_robin: 0,
            batch_bytes: 256 * 1024,
            fsync: stream_fsync,
        }
    }

    /// Appends a batch once it reaches this many bytes (default 256 KiB).
    pub fn set_batch_bytes(&mut self, bytes: usize) {
        self.batch_bytes = bytes.max(1);
    }

    /// Overrides the stream's fsync policy for this producer's writers.
    pub fn set_fsync(&mut self, fsync: FsyncPolicy) {
        self.fsync = fsync;
        self.writers.iter_mut().for_each(|w| *w = None);
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The partition a record goes to (see the module docs).
    pub fn choose_partition(&mut self, partition: Option<u32>, key: Option<&[u8]>) -> Result<u32> {
        let n = self.stream.partitions();
        let p = match (partition, key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, n),
            (None, None) => {
                self.round_robin = self.round_robin.wrapping_add(1);
                self.round_robin % n
            }
        };
        if p >= n {
            return Err(LogError::PartitionNotFound {
                stream: self.stream.name().to_string(),
                partition: p,
                partitions: n,
            });
        }
        Ok(p)
    }

    /// Buffers a record; returns the partition it went to.
    pub fn send(
        &mut self,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[Header<'_>],
    ) -> Result<u32> {
        let p = self.choose_partition(partition, key)?;
        let size = 32
            + key.map_or(0, <[u8]>::len)
            + value.map_or(0, <[u8]>::len)
            + headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 16).sum::<usize>();
        if size + crate::format::HEADER_LEN > MAX_BATCH_LEN {
            return Err(LogError::BatchTooLarge { size, max: MAX_BATCH_LEN });
        }
        if self.batches[p as usize].size_bytes() + size > MAX_BATCH_LEN {
            self.append(p)?;
        }
        let batch = &mut self.batches[p as usize];
        batch.push(key, value, timestamp, headers);
        if batch.size_bytes() >= self.batch_bytes {
            self.append(p)?;
        }
        Ok(p)
    }

    fn append(&mut self, p: u32) -> Result<()> {
        let i = p as usize;
        if self.batches[i].is_empty() {
            return Ok(());
        }
        if self.writers[i].is_none() {
            self.writers[i] = Some(self.stream.writer_with(p, self.fsync)?);
        }
        self.writers[i].as_mut().unwrap().append(&mut self.batches[i])?;
        self.batches[i].clear();
        Ok(())
    }

    /// Appends everything buffered and syncs it per the stream's fsync policy.
    pub fn flush(&mut self) -> Result<()> {
        for p in 0..self.stream.partitions() {
            self.append(p)?;
        }
        for w in self.writers.iter_mut().flatten() {
            w.flush()?;
        }
        Ok(())
    }
}
