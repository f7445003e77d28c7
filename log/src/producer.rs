//! Writing records to a stream, choosing each record's partition.
//!
//! Partition choice, in order: an explicit partition; the stream-wide key hash
//! [`samza_task_api::partition_for_key`]; round-robin for keyless records.
//! Records are buffered per partition and appended as one batch once a batch
//! reaches `batch_bytes`, or on `flush`.

use std::sync::Arc;

use samza_task_api::partition_for_key;

use crate::config::FsyncPolicy;
use crate::error::{LogError, Result};
use crate::fence::Fence;
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
    /// Writers are fenced with it before their first append.
    fence: Option<Arc<Fence>>,
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
            fence: None,
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

    /// Writes as `fence` from now on: every partition's writer raises the
    /// epoch before its first append (see [`crate::fence`]). Writers opened
    /// already are fenced at once.
    pub fn set_fence(&mut self, fence: Arc<Fence>) -> Result<()> {
        for w in self.writers.iter_mut().flatten() {
            w.fence(fence.clone())?;
        }
        self.fence = Some(fence);
        Ok(())
    }

    /// Raises this producer's epoch on partition `p` now, before anything is
    /// written there (a no-op without a fence).
    pub fn raise(&mut self, p: u32) -> Result<()> {
        if self.fence.is_some() {
            self.writer(p)?;
        }
        Ok(())
    }

    fn writer(&mut self, p: u32) -> Result<&mut PartitionWriter> {
        let i = p as usize;
        if i >= self.writers.len() {
            return Err(LogError::PartitionNotFound {
                stream: self.stream.name().to_string(),
                partition: p,
                partitions: self.stream.partitions(),
            });
        }
        if self.writers[i].is_none() {
            let mut w = self.stream.writer_with(p, self.fsync)?;
            if let Some(f) = &self.fence {
                w.fence(f.clone())?;
            }
            self.writers[i] = Some(w);
        }
        Ok(self.writers[i].as_mut().unwrap())
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
        let mut batch = std::mem::take(&mut self.batches[i]);
        let r = self.writer(p).and_then(|w| w.append(&mut batch));
        if r.is_ok() {
            batch.clear();
        }
        self.batches[i] = batch;
        r?;
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
