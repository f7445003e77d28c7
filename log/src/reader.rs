//! Reading one partition from any offset, in another process than the writers.
//!
//! A reader keeps its segment file open and reads whole, checksummed batches in
//! large chunks. It never trusts bytes it has not validated: a batch still being
//! written (incomplete at the tail) is simply not there yet; bytes that are
//! whole but invalid are re-examined under the write lock, where they are
//! either a dead writer's torn tail (cut off) or corruption (an error naming the
//! stream, partition and offset). Seeking uses the sparse index, so reading from
//! any offset costs no scan of earlier data.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{IoContext, LogError, Result};
use crate::format::{check_batch, BatchView, Check, ControlType, RecordRef, HEADER_LEN};
use crate::segment::{
    self, index_position, list_segments, open_lock_file, read_at, read_index, repair_tail, scan_from,
    trim_index, FileLock, PartitionId, ScanEnd,
};
use std::os::unix::fs::MetadataExt;

struct ReadSegment {
    base: u64,
    file: File,
    path: PathBuf,
    pos: u64,
}

/// Reads one partition sequentially from an offset.
pub struct PartitionReader {
    id: Arc<PartitionId>,
    seg: Option<ReadSegment>,
    next_offset: u64,
    /// End offset of the last batch passed, to check that offsets only grow.
    last_end: Option<u64>,
    buf: Vec<u8>,
    /// Read-committed (the default): a transaction's records wait for its
    /// marker and aborted ones are skipped (see [`crate::txn`]).
    committed_only: bool,
    /// Markers found ahead of the reader: (producer id, transaction) -> committed.
    markers: HashMap<(i64, i32), bool>,
    /// Scans ahead of the reader for markers, uncommitted.
    ahead: Option<Box<PartitionReader>>,
    /// Indices of the aborted batches in the last chunk.
    hidden: Vec<usize>,
    /// The open transaction the reader stopped before: until its marker is
    /// found, a read only looks ahead (reading it again would find nothing new).
    blocked: Option<(i64, i32)>,
}

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReader")
            .field("stream", &self.id.stream)
            .field("partition", &self.id.partition)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

/// Oldest and upcoming offsets of a partition, read from its files.
pub(crate) fn offsets(id: &PartitionId) -> Result<(u64, u64, Vec<u64>)> {
    let mut attempts = 0;
    loop {
        let bases = list_segments(&id.dir)?;
        let Some(&last) = bases.last() else {
            return Ok((0, 0, bases));
        };
        let path = segment::log_path(&id.dir, last);
        let file = match File::open(&path) {
            Ok(f) => f,
            // Retention or a roll moved on between listing and opening; look again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 10 => {
                attempts += 1;
                continue;
            }
            Err(e) => return Err(e).ctx("cannot open segment", &path),
        };
        let len = file.metadata().ctx("cannot stat segment", &path)?.len();
        let index = read_index(&segment::index_path(&id.dir, last))?;
        let (start, mut upcoming) = index_position(&file, &path, last, &index, u64::MAX, len)?;
        let (_, end) = segment::scan_from(&file, &path, start, |_, b| upcoming = b.next_offset())?;
        if let segment::ScanEnd::Sealed { next_base } = end {
            upcoming = next_base;
        }
        return Ok((bases[0], upcoming, bases));
    }
}

impl PartitionReader {
    pub(crate) fn open(id: Arc<PartitionId>, offset: u64) -> Result<Self> {
        let mut r = PartitionReader {
            id,
            seg: None,
            next_offset: offset,
            last_end: None,
            buf: Vec::new(),
            committed_only: true,
            markers: HashMap::new(),
            ahead: None,
            hidden: Vec::new(),
            blocked: None,
        };
        r.seek(offset)?;
        Ok(r)
    }

    /// Returns the records of open and aborted transactions too, as written
    /// (read-uncommitted); by default a reader returns committed ones only.
    pub fn read_uncommitted(mut self) -> Self {
        self.committed_only = false;
        self.ahead = None;
        self
    }

    pub fn partition(&self) -> &PartitionId {
        &self.id
    }

    /// Offset of the next record this reader will return (or a later one, where
    /// compaction removed records or control records take offsets).
    pub fn position(&self) -> u64 {
        self.next_offset
    }

    /// Moves to `offset`; fails with `OffsetOutOfRange` when the partition holds
    /// no such offset (older than the oldest, or past the upcoming one).
    pub fn seek(&mut self, offset: u64) -> Result<()> {
        let (oldest, upcoming, bases) = offsets(&self.id)?;
        if offset < oldest || offset > upcoming || bases.is_empty() {
            return Err(LogError::OffsetOutOfRange {
                stream: self.id.stream.clone(),
                partition: self.id.partition,
                offset,
                oldest,
                upcoming,
            });
        }
        let base = bases[bases.partition_point(|b| *b <= offset) - 1];
        let path = segment::log_path(&self.id.dir, base);
        let file = File::open(&path).ctx("cannot open segment", &path)?;
        let len = file.metadata().ctx("cannot stat segment", &path)?.len();
        let index = read_index(&segment::index_path(&self.id.dir, base))?;
        let (pos, _) = index_position(&file, &path, base, &index, offset, len)?;
        self.seg = Some(ReadSegment { base, file, path, pos });
        self.next_offset = offset;
        self.last_end = None;
        self.markers.clear();
        self.ahead = None;
        self.blocked = None;
        Ok(())
    }

    /// Reads about `max_bytes` of whole batches at the reader's position. An
    /// empty chunk means there is nothing more yet.
    pub fn read(&mut self, max_bytes: usize) -> Result<Chunk<'_>> {
        let min_offset = self.next_offset;
        self.hidden.clear();
        let len = self.fill(max_bytes)?;
        Ok(Chunk { id: &self.id, bytes: &self.buf[..len], min_offset, hidden: &self.hidden })
    }

    /// Of the `at` bytes of valid batches read, the prefix a read-committed
    /// reader may return: up to the first batch of a transaction whose
    /// marker is not written yet. Aborted batches are listed in `hidden`.
    fn committed_prefix(&mut self, at: usize, end_before: Option<u64>) -> Result<usize> {
        let mut pos = 0;
        let mut index = 0;
        let mut end = end_before;
        while pos < at {
            let b = BatchView::trusted(&self.buf[pos..at]);
            let (len, next, base, producer) = (b.len(), b.next_offset(), b.base_offset(), b.producer());
            let key = (producer.producer_id, producer.base_sequence);
            if b.is_control() {
                self.markers.remove(&key);
            } else if b.is_transactional() {
                if !self.markers.contains_key(&key) {
                    self.look_ahead(base, key)?;
                }
                match self.markers.get(&key) {
                    Some(true) => {}
                    Some(false) => self.hidden.push(index),
                    None => {
                        // Not decided yet: stop before it.
                        self.last_end = end;
                        self.blocked = Some(key);
                        return Ok(pos);
                    }
                }
            }
            end = Some(next);
            pos += len;
            index += 1;
        }
        Ok(at)
    }

    /// Reads on from `from` (without returning anything) until the marker of
    /// `key` or the end, noting every marker passed.
    fn look_ahead(&mut self, from: u64, key: (i64, i32)) -> Result<()> {
        let mut ahead = match self.ahead.take() {
            Some(a) if a.position() >= from => a,
            _ => Box::new(PartitionReader::open(self.id.clone(), from)?.read_uncommitted()),
        };
        let found = loop {
            let chunk = match ahead.read(1 << 20) {
                Ok(c) => c,
                Err(e) => break Err(e),
            };
            if chunk.is_empty() {
                break Ok(());
            }
            for b in chunk.batches().filter(BatchView::is_control) {
                let p = b.producer();
                if let Some(t) = b.control_type() {
                    self.markers.insert((p.producer_id, p.base_sequence), t == ControlType::Commit);
                }
            }
            if self.markers.contains_key(&key) {
                break Ok(());
            }
        };
        self.ahead = Some(ahead);
        found
    }

    fn fill(&mut self, max_bytes: usize) -> Result<usize> {
        if let Some(key) = self.blocked {
            if !self.markers.contains_key(&key) {
                self.look_ahead(self.next_offset, key)?;
            }
            if !self.markers.contains_key(&key) {
                return Ok(0);
            }
            self.blocked = None;
        }
        'segment: loop {
            let seg = self.seg.as_mut().expect("reader always has a segment after seek");
            let file_len = seg.file.metadata().ctx("cannot stat segment", &seg.path)?.len();
            if seg.pos >= file_len {
                return Ok(0);
            }
            let mut want = ((file_len - seg.pos) as usize).min(max_bytes.max(HEADER_LEN));
            let end_before = self.last_end;
            'read: loop {
                read_at(&seg.file, &mut self.buf, seg.pos, want, &seg.path)?;
                let mut at = 0usize;
                while at < self.buf.len() {
                    match check_batch(&self.buf[at..]) {
                        Check::Valid(v) if v.is_seal() => {
                            if at > 0 {
                                break;
                            }
                            let next_base = v.base_offset();
                            match list_segments(&self.id.dir)?.into_iter().find(|b| *b > seg.base) {
                                Some(base) => {
                                    let path = segment::log_path(&self.id.dir, base);
                                    let file = File::open(&path).ctx("cannot open segment", &path)?;
                                    if base != next_base {
                                        // Retention deleted what came next while we read
                                        // an older segment: the records in between are gone.
                                        let (oldest, upcoming, _) = offsets(&self.id)?;
                                        return Err(LogError::OffsetOutOfRange {
                                            stream: self.id.stream.clone(),
                                            partition: self.id.partition,
                                            offset: next_base,
                                            oldest,
                                            upcoming,
                                        });
                                    }
                                    self.seg = Some(ReadSegment { base, file, path, pos: 0 });
                                    continue 'segment;
                                }
                                // The writer that sealed is about to create it.
                                None => return Ok(0),
                            }
                        }
                        Check::Valid(v) => {
                            if let Some(end) = self.last_end {
                                if v.base_offset() < end {
                                    let p = seg.pos + at as u64;
                                    let path = seg.path.clone();
                                    return Err(self.corruption(&path, p, "batch offsets go backwards"));
                                }
                            }
                            self.last_end = Some(v.next_offset());
                            at += v.len();
                        }
                        Check::Incomplete { needed } => {
                            if at == 0 {
                                if let Some(n) = needed {
                                    if seg.pos + n as u64 <= file_len && n > want {
                                        want = n;
                                        continue 'read;
                                    }
                                }
                            }
                            // A batch still being written, or cut by the chunk size.
                            break;
                        }
                        Check::Invalid(reason) => {
                            if at > 0 {
                                break;
                            }
                            self.repair(reason)?;
                            continue 'segment;
                        }
                    }
                }
                let at = if self.committed_only { self.committed_prefix(at, end_before)? } else { at };
                let seg = self.seg.as_mut().unwrap();
                seg.pos += at as u64;
                if let Some(end) = self.last_end {
                    self.next_offset = self.next_offset.max(end);
                }
                self.buf.truncate(at);
                return Ok(at);
            }
        }
    }

    fn corruption(&self, path: &std::path::Path, position: u64, reason: &str) -> LogError {
        LogError::Corruption {
            stream: self.id.stream.clone(),
            partition: self.id.partition,
            offset: self.last_end.unwrap_or(self.next_offset),
            segment: path.to_path_buf(),
            position,
            reason: reason.to_string(),
        }
    }

    /// Invalid bytes at the reader's position: decide under the write lock whether
    /// they are a torn tail (cut off; the reader then waits for new data) or corruption.
    fn repair(&mut self, reason: &'static str) -> Result<()> {
        let seg = self.seg.as_ref().unwrap();
        let lock_path = self.id.dir.join("write.lock");
        let lock = open_lock_file(&self.id.dir, "write.lock")?;
        let _guard = FileLock::lock(&lock, &lock_path)?;
        // With appends excluded, find where valid data really ends in the file
        // we are reading, scanning from the last index entry before our position.
        let len = seg.file.metadata().ctx("cannot stat segment", &seg.path)?.len();
        let index = read_index(&segment::index_path(&self.id.dir, seg.base))?;
        let before: Vec<(u32, u32)> = index.into_iter().filter(|(_, p)| u64::from(*p) <= seg.pos).collect();
        let (start, _) = index_position(&seg.file, &seg.path, seg.base, &before, u64::MAX, len)?;
        let (end, how) = scan_from(&seg.file, &seg.path, start, |_, _| {})?;
        if end != seg.pos {
            // A writer repaired or completed the bytes meanwhile: read again.
            return Ok(());
        }
        let ScanEnd::Bad { .. } = how else {
            return Ok(());
        };
        // Repair through the path only if it still names the file we read.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg.path)
            .ctx("cannot open segment", &seg.path)?;
        let (a, b) = (
            file.metadata().ctx("cannot stat segment", &seg.path)?,
            seg.file.metadata().ctx("cannot stat segment", &seg.path)?,
        );
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            return Err(self.corruption(&seg.path.clone(), seg.pos, reason));
        }
        let offset = self.last_end.unwrap_or(self.next_offset);
        repair_tail(&self.id, &file, &seg.path, seg.pos, offset, reason)?;
        let index_path = segment::index_path(&self.id.dir, seg.base);
        let index = std::fs::OpenOptions::new()
            .write(true)
            .open(&index_path)
            .ctx("cannot open index", &index_path)?;
        trim_index(&index, &index_path, seg.pos)
    }
}

/// Whole, validated batches returned by [`PartitionReader::read`].
pub struct Chunk<'a> {
    id: &'a PartitionId,
    bytes: &'a [u8],
    min_offset: u64,
    /// Indices of aborted batches, skipped by [`Chunk::records`].
    hidden: &'a [usize],
}

impl<'a> Chunk<'a> {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The chunk's bytes: whole batches, as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Bytes of the batches in the chunk.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The raw batches, control batches included.
    pub fn batches(&self) -> impl Iterator<Item = BatchView<'a>> + 'a {
        let mut rest = self.bytes;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let b = BatchView::trusted(rest);
            rest = &rest[b.len()..];
            Some(b)
        })
    }

    /// The data records at or after the offset the read started from; control
    /// records (transaction markers) and aborted transactions are skipped.
    pub fn records(&self) -> impl Iterator<Item = Result<RecordRef<'a>>> + 'a {
        let min = self.min_offset;
        let id = self.id;
        let hidden = self.hidden;
        self.batches()
            .enumerate()
            .filter(move |(i, b)| !b.is_control() && b.next_offset() > min && !hidden.contains(i))
            .map(|(_, b)| b)
            .flat_map(move |b| {
                b.records().map(move |r| {
                    r.map_err(|e| LogError::Corruption {
                        stream: id.stream.clone(),
                        partition: id.partition,
                        offset: b.base_offset(),
                        segment: id.dir.clone(),
                        position: 0,
                        reason: e.to_string(),
                    })
                })
            })
            .filter(move |r| r.as_ref().map_or(true, |r| r.offset >= min))
    }
}
