//! Writing records to a stream, choosing each record's partition.
//!
//! Partition choice, in order: an explicit partition; the stream-wide key hash
//! [`samza_task_api::partition_for_key`]; round-robin for keyless records.
//! Records are buffered per partition and appended as one batch once a batch
//! reaches `batch_bytes`, or on `flush`.

use std::sync::{Arc, Mutex};

use samza_task_api::partition_for_key;

use crate::config::FsyncPolicy;
use crate::error::{LogError, Result};
use crate::fence::Fence;
use crate::format::{BatchBuilder, ControlType, Header, ProducerInfo, MAX_BATCH_LEN};
use crate::log::Stream;
use crate::txn::Transactor;
use crate::writer::PartitionWriter;

/// The transaction a producer's batches belong to (see [`crate::txn`]).
struct TxnWrites {
    /// Producer id of the generation, `base_sequence` = the transaction.
    info: ProducerInfo,
    transactor: Arc<Mutex<Transactor>>,
    /// Partitions registered in the transaction file.
    registered: Vec<bool>,
    /// Partitions holding records of the open transaction.
    touched: Vec<bool>,
}

pub struct Producer {
    stream: Stream,
    writers: Vec<Option<PartitionWriter>>,
    batches: Vec<BatchBuilder>,
    round_robin: u32,
    batch_bytes: usize,
    fsync: FsyncPolicy,
    /// Writers are fenced with it before their first append.
    fence: Option<Arc<Fence>>,
    txn: Option<TxnWrites>,
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
            txn: None,
        }
    }

    /// From now on every batch belongs to transaction `txn` of the
    /// generation holding `transactor` (TRANSACTIONAL, its producer id);
    /// a partition is registered with it before its first batch.
    pub fn set_transaction(&mut self, transactor: Arc<Mutex<Transactor>>, txn: u32) {
        let (producer_id, registered) = {
            let t = transactor.lock().unwrap_or_else(|p| p.into_inner());
            let g = t.generation();
            let name = self.stream.name();
            let registered = (0..self.stream.partitions())
                .map(|p| g.partitions.iter().any(|(s, q)| s == name && *q == p))
                .collect();
            (g.producer_id, registered)
        };
        let n = self.writers.len();
        self.txn = Some(TxnWrites {
            info: ProducerInfo { producer_id, producer_epoch: 0, base_sequence: txn as i32 },
            transactor,
            registered,
            touched: vec![false; n],
        });
    }

    /// Batches from now on belong to transaction `txn`; none is touched yet.
    pub fn next_transaction(&mut self, txn: u32) {
        if let Some(t) = &mut self.txn {
            t.info.base_sequence = txn as i32;
            t.touched.iter_mut().for_each(|x| *x = false);
        }
    }

    /// Partitions holding records of the open transaction (appended ones:
    /// flush first).
    pub fn touched(&self) -> Vec<u32> {
        self.txn.as_ref().map_or_else(Vec::new, |t| {
            t.touched.iter().enumerate().filter(|(_, x)| **x).map(|(p, _)| p as u32).collect()
        })
    }

    /// Appends a transaction marker for `producer` (its id, `base_sequence`
    /// the transaction) to partition `p`; returns the partition's next offset.
    pub fn write_marker(&mut self, p: u32, marker: ControlType, producer: ProducerInfo) -> Result<u64> {
        let mut batch = BatchBuilder::control(marker, producer, crate::writer::now_ms());
        let w = self.writer(p)?;
        w.append(&mut batch)?;
        Ok(w.next_offset())
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
        if let Some(t) = &mut self.txn {
            if !t.registered[i] {
                let name = self.stream.name().to_string();
                t.transactor.lock().unwrap_or_else(|p| p.into_inner()).register([(name, p)])?;
                t.registered[i] = true;
            }
            t.touched[i] = true;
            self.batches[i].set_producer(t.info);
            self.batches[i].set_transactional(true);
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
