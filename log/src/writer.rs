//! Appending to one partition, safely from any number of processes at once.
//!
//! Every append takes the partition's `write.lock` (`flock`), so batches from
//! different processes never interleave. A writer caches where the partition
//! ends; under the lock it compares that with the segment's real length and
//! scans whatever other processes appended meanwhile (following SEAL markers to
//! newer segments), so offsets are assigned without any shared memory. Bytes
//! that do not form a valid batch at the tail are what a writer that died
//! mid-append left behind: they were never acknowledged and are cut off before
//! the next append. The lock dies with its holder, so a kill -9 never wedges it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{FsyncPolicy, StreamConfig};
use crate::error::{IoContext, LogError, Result};
use crate::fence::{Fence, FenceState};
use crate::format::{seal_batch, stamp, BatchBuilder, MAX_BATCH_LEN};
use crate::retention;
use crate::segment::{
    self, encode_index_entry, index_position, list_segments, open_lock_file, read_index, repair_tail,
    scan_from, trim_index, wants_index_entry, FileLock, PartitionId, ScanEnd,
};

/// Offsets given to an appended batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
}

struct ActiveSegment {
    base: u64,
    log: File,
    log_path: PathBuf,
    index: File,
    index_path: PathBuf,
    /// End of the valid data this writer knows of.
    size: u64,
}

/// Appends batches to one partition. Cheap to keep open; one per partition per process.
pub struct PartitionWriter {
    id: Arc<PartitionId>,
    config: Arc<StreamConfig>,
    fsync: FsyncPolicy,
    lock_file: File,
    lock_path: PathBuf,
    active: ActiveSegment,
    next_offset: u64,
    last_sync: Instant,
    unsynced: bool,
    /// Set by [`PartitionWriter::fence`]: every append checks it under the lock.
    fence: Option<FenceState>,
    /// The stream's `roll_after`, read once.
    roll_after: Option<std::time::Duration>,
    /// Since when the active segment has held records, as far as this
    /// writer knows (from its first append to it): sealed `roll_after` later.
    holding_since: Option<Instant>,
    /// Segments this writer sealed since it last started a compaction.
    sealed_since_compaction: u32,
    /// Set while a compaction this writer started runs.
    compacting: Arc<AtomicBool>,
}

impl std::fmt::Debug for PartitionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWriter")
            .field("stream", &self.id.stream)
            .field("partition", &self.id.partition)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

/// Clears a writer's "compaction running" flag when the compaction ends,
/// however it ends (a panic included).
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn open_segment(id: &PartitionId, base: u64, create: bool) -> Result<ActiveSegment> {
    let log_path = segment::log_path(&id.dir, base);
    let index_path = segment::index_path(&id.dir, base);
    let log = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(&log_path)
        .ctx("cannot open segment", &log_path)?;
    let index = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&index_path)
        .ctx("cannot open index", &index_path)?;
    Ok(ActiveSegment { base, log, log_path, index, index_path, size: 0 })
}

/// The newest segment, positioned at its last index entry that still points at
/// a valid batch header, and that batch's base offset: recovery then scans at
/// most one index interval plus a torn tail. Must hold the write lock.
fn open_tail(id: &PartitionId) -> Result<(ActiveSegment, u64)> {
    let base = list_segments(&id.dir)?.last().copied().unwrap_or(0);
    let mut active = open_segment(id, base, true)?;
    let len = active.log.metadata().ctx("cannot stat segment", &active.log_path)?.len();
    let index = read_index(&active.index_path)?;
    let (pos, offset) = index_position(&active.log, &active.log_path, base, &index, u64::MAX, len)?;
    active.size = pos;
    Ok((active, offset))
}

impl PartitionWriter {
    pub(crate) fn open(id: Arc<PartitionId>, config: Arc<StreamConfig>, fsync: FsyncPolicy) -> Result<Self> {
        let lock_path = id.dir.join("write.lock");
        let lock_file = open_lock_file(&id.dir, "write.lock")?;
        let _guard = FileLock::lock(&lock_file, &lock_path)?;
        let (active, next_offset) = open_tail(&id)?;
        let roll_after = config.roll_after();
        let mut writer = PartitionWriter {
            id,
            config,
            fsync,
            lock_file: lock_file.try_clone().ctx("cannot open lock file", &lock_path)?,
            lock_path,
            active,
            next_offset,
            last_sync: Instant::now(),
            unsynced: false,
            fence: None,
            roll_after,
            holding_since: None,
            sealed_since_compaction: 0,
            compacting: Arc::new(AtomicBool::new(false)),
        };
        writer.catch_up()?;
        trim_index(&writer.active.index, &writer.active.index_path, writer.active.size)?;
        Ok(writer)
    }

    /// Makes this writer write as `fence`: raises its epoch in the partition
    /// now (refused with [`LogError::Fenced`] when a higher epoch of the same
    /// producer is recorded), and refuses every later append once a higher
    /// one has been (see [`crate::fence`]).
    pub fn fence(&mut self, fence: Arc<Fence>) -> Result<()> {
        let _guard = FileLock::lock(&self.lock_file, &self.lock_path)?;
        self.fence = Some(FenceState::raise(&self.id, fence)?);
        Ok(())
    }

    /// Offset the next appended record will get (as of this writer's last append).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn partition(&self) -> &PartitionId {
        &self.id
    }

    /// Brings this writer's view of the tail up to date with what other
    /// processes appended, repairing a torn tail. Must hold the write lock.
    fn catch_up(&mut self) -> Result<()> {
        loop {
            let meta = self.active.log.metadata().ctx("cannot stat segment", &self.active.log_path)?;
            if std::os::unix::fs::MetadataExt::nlink(&meta) == 0 {
                // Our segment was deleted (retention, or the stream was recreated):
                // start again from what is on disk now.
                self.sync_if_unsynced()?;
                (self.active, self.next_offset) = open_tail(&self.id)?;
                continue;
            }
            let len = meta.len();
            if len == self.active.size {
                return Ok(());
            }
            if len < self.active.size {
                // Only tail repair truncates, and only bytes no writer counted as data.
                return Err(
                    self.corruption(len, format!("segment shrank from {} to {len} bytes", self.active.size))
                );
            }
            let mut next = self.next_offset;
            let mut backwards = None;
            let (end, how) =
                scan_from(&self.active.log, &self.active.log_path, self.active.size, |pos, b| {
                    if b.base_offset() < next && backwards.is_none() {
                        backwards = Some(pos);
                    }
                    next = b.next_offset();
                })?;
            if let Some(pos) = backwards {
                return Err(self.corruption(pos, "batch offsets go backwards".to_string()));
            }
            self.next_offset = next;
            self.active.size = end;
            match how {
                ScanEnd::End => return Ok(()),
                ScanEnd::Sealed { next_base } => {
                    if next_base < next || next_base <= self.active.base {
                        return Err(self.corruption(
                            end,
                            format!("seal names next segment {next_base}, before offset {next}"),
                        ));
                    }
                    self.sync_if_unsynced()?;
                    let newest = list_segments(&self.id.dir)?.last().copied().unwrap_or(0);
                    if newest > next_base && !segment::log_path(&self.id.dir, next_base).exists() {
                        // Segments after ours exist and the one the seal names is
                        // gone (retention): never recreate it, start from the newest.
                        (self.active, self.next_offset) = open_tail(&self.id)?;
                        continue;
                    }
                    // Created here when the roller died before creating it.
                    let created = newest < next_base;
                    self.active = open_segment(&self.id, next_base, true)?;
                    self.next_offset = next_base;
                    if created && self.fsync != FsyncPolicy::Never {
                        segment::sync_dir(&self.id.dir)?;
                    }
                }
                ScanEnd::Bad { reason } => {
                    repair_tail(&self.id, &self.active.log, &self.active.log_path, end, next, reason)?;
                    trim_index(&self.active.index, &self.active.index_path, end)?;
                }
            }
        }
    }

    fn corruption(&self, position: u64, reason: String) -> LogError {
        LogError::Corruption {
            stream: self.id.stream.clone(),
            partition: self.id.partition,
            offset: self.next_offset,
            segment: self.active.log_path.clone(),
            position,
            reason,
        }
    }

    /// Syncs the active segment if this writer appended to it since its last
    /// sync, before it moves to another segment.
    fn sync_if_unsynced(&mut self) -> Result<()> {
        if self.unsynced && self.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        Ok(())
    }

    /// Appends the batch and returns its offsets; `None` for an empty batch.
    /// The builder is left as it was; call [`BatchBuilder::clear`] to reuse it.
    pub fn append(&mut self, batch: &mut BatchBuilder) -> Result<Option<Appended>> {
        if batch.is_empty() {
            return Ok(None);
        }
        let count = u64::from(batch.len());
        let bytes = batch.finish();
        if bytes.len() > MAX_BATCH_LEN {
            return Err(LogError::BatchTooLarge { size: bytes.len(), max: MAX_BATCH_LEN });
        }
        let appended = {
            let _guard = FileLock::lock(&self.lock_file, &self.lock_path)?;
            if let Some(f) = &mut self.fence {
                f.check(&self.id)?;
            }
            let base_before = self.active.base;
            self.catch_up()?;
            if self.active.base != base_before {
                // Another writer sealed the segment this one knew.
                self.holding_since = None;
            }
            let aged = self.roll_after.zip(self.holding_since).is_some_and(|(after, t)| t.elapsed() >= after);
            if self.active.size >= self.config.segment_bytes || aged {
                self.roll()?;
            }
            let base = self.next_offset;
            stamp(bytes, base);
            let pos = self.active.size;
            if let Err(e) = self.active.log.write_all_at(bytes, pos) {
                // Leave no partial batch behind; the error reaches the caller.
                let _ = self.active.log.set_len(pos);
                return Err(e).ctx("cannot append to segment", &self.active.log_path);
            }
            let len = bytes.len() as u64;
            if wants_index_entry(pos, len, u64::from(self.config.index_interval_bytes)) {
                let entry = encode_index_entry((base - self.active.base) as u32, pos as u32);
                // The batch is appended either way; the index is only a hint.
                if let Err(e) = self.active.index.write_all(&entry) {
                    tracing::warn!(index = %self.active.index_path.display(), error = %e, "cannot append to index");
                }
            }
            self.active.size = pos + len;
            self.holding_since.get_or_insert_with(Instant::now);
            self.next_offset = base + count;
            Appended { base_offset: base, last_offset: base + count - 1 }
        };
        self.unsynced = true;
        match self.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.sync()?,
            _ => {}
        }
        Ok(Some(appended))
    }

    /// Forces appended data to disk unless the policy is `never`.
    pub fn flush(&mut self) -> Result<()> {
        self.sync_if_unsynced()
    }

    fn sync(&mut self) -> Result<()> {
        self.active.log.sync_data().ctx("cannot sync segment", &self.active.log_path)?;
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    /// Seals the active segment and starts a new one at the next offset. Holds the lock.
    fn roll(&mut self) -> Result<()> {
        let seal = seal_batch(self.next_offset, now_ms());
        let pos = self.active.size;
        self.active.log.write_all_at(&seal, pos).ctx("cannot seal segment", &self.active.log_path)?;
        self.active.size = pos + seal.len() as u64;
        // The old segment is synced before the new one exists, so a synced
        // batch never sits behind an unsynced seal.
        self.sync_if_unsynced()?;
        self.active = open_segment(&self.id, self.next_offset, true)?;
        self.holding_since = None;
        if self.fsync != FsyncPolicy::Never {
            segment::sync_dir(&self.id.dir)?;
        }
        retention::apply_if_idle(&self.id, &self.config, now_ms())?;
        self.sealed_since_compaction += 1;
        self.compact_if_due();
        Ok(())
    }

    /// In a compacted stream, starts a compaction of the sealed segments in
    /// the background once this writer has sealed `auto_compact_segments`
    /// since its last one (and that one has ended). Appends go on meanwhile:
    /// compaction never touches the active segment.
    fn compact_if_due(&mut self) {
        let every = self.config.auto_compact_segments;
        if !self.config.compacted || every == 0 || self.sealed_since_compaction < every {
            return;
        }
        if self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.sealed_since_compaction = 0;
        let running = Running(self.compacting.clone());
        let (id, config) = (self.id.clone(), self.config.clone());
        let spawned = std::thread::Builder::new().name("log-compaction".into()).spawn(move || {
            let _running = running;
            // When another writer's (or process's) compaction is going on, it does the work.
            match crate::compaction::compact_if_idle(&id, &config, now_ms()) {
                Ok(stats) => {
                    tracing::debug!(stream = %id.stream, partition = id.partition, ?stats, "compacted")
                }
                Err(e) => {
                    tracing::warn!(stream = %id.stream, partition = id.partition, "compaction failed: {e}")
                }
            }
        });
        if let Err(e) = spawned {
            // `running` went with the closure and was dropped: the flag is clear.
            tracing::warn!("cannot start a compaction thread: {e}");
        }
    }
}
