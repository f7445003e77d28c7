//! Log compaction: keep the latest record per key in sealed segments.
//!
//! Changelogs and checkpoint streams only need the last value of each key.
//! Compaction rewrites each sealed segment keeping, per key, only the record at
//! the key's latest offset in the whole partition; keyless records and control
//! batches are kept. Records of aborted transactions go; those of transactions
//! not decided yet are kept and replace nothing. A tombstone (a record with no value) is kept until its
//! segment is older than `delete_retention_ms`, so readers that are behind
//! still see the delete. Offsets never change: records keep their offsets and
//! batches keep their base offset, so a partition that was compacted reads like
//! one with gaps. The active segment is never touched, so compaction runs
//! beside writers; `compact.lock` keeps two compactions apart.
//!
//! A rewritten segment replaces the old one with a rename, so a reader that has
//! the old file open reads it to its end undisturbed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::StreamConfig;
use crate::error::{IoContext, LogError, Result};
use crate::format::{rebuild_batch, seal_batch, ControlType};
use crate::segment::{
    self, encode_index_entry, list_segments, open_lock_file, scan_from, wants_index_entry, FileLock,
    PartitionId, ScanEnd,
};

/// What one compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionStats {
    pub segments_rewritten: u32,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

fn corrupt(id: &PartitionId, path: &std::path::Path, position: u64, reason: &str) -> LogError {
    LogError::Corruption {
        stream: id.stream.clone(),
        partition: id.partition,
        offset: 0,
        segment: path.to_path_buf(),
        position,
        reason: reason.to_string(),
    }
}

pub(crate) fn compact(id: &PartitionId, config: &StreamConfig, now_ms: i64) -> Result<CompactionStats> {
    let lock_path = id.dir.join("compact.lock");
    let lock = open_lock_file(&id.dir, "compact.lock")?;
    let _guard = FileLock::lock(&lock, &lock_path)?;
    compact_locked(id, config, now_ms)
}

/// Compacts unless a compaction (or retention) of the partition is running
/// already, in this process or another: `None` then.
pub(crate) fn compact_if_idle(
    id: &PartitionId,
    config: &StreamConfig,
    now_ms: i64,
) -> Result<Option<CompactionStats>> {
    let lock_path = id.dir.join("compact.lock");
    let lock = open_lock_file(&id.dir, "compact.lock")?;
    match FileLock::try_lock(&lock, &lock_path)? {
        Some(_guard) => compact_locked(id, config, now_ms).map(Some),
        None => Ok(None),
    }
}

fn compact_locked(id: &PartitionId, config: &StreamConfig, now_ms: i64) -> Result<CompactionStats> {
    let bases = list_segments(&id.dir)?;
    let mut stats = CompactionStats::default();
    if bases.len() < 2 {
        return Ok(stats);
    }

    // Pass 0: how each transaction in the partition ended, where it has.
    // Records of an open transaction replace nothing and are kept; those of
    // an aborted one are removed (see `crate::txn`).
    let mut decided: HashMap<(i64, i32), bool> = HashMap::new();
    for &base in &bases {
        let path = segment::log_path(&id.dir, base);
        let file = File::open(&path).ctx("cannot open segment", &path)?;
        scan_from(&file, &path, 0, |_, b| {
            if let Some(t) = b.control_type() {
                let p = b.producer();
                decided.insert((p.producer_id, p.base_sequence), t == ControlType::Commit);
            }
        })?;
    }
    let status = |b: &crate::format::BatchView<'_>| -> Option<bool> {
        if !b.is_transactional() {
            return Some(true);
        }
        let p = b.producer();
        decided.get(&(p.producer_id, p.base_sequence)).copied()
    };

    // Pass 1: the latest offset of every key in the partition.
    let mut latest: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut decode_err = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::log_path(&id.dir, base);
        let file = File::open(&path).ctx("cannot open segment", &path)?;
        let (pos, end) = scan_from(&file, &path, 0, |_, b| {
            if b.is_control() || status(b) != Some(true) {
                return;
            }
            for r in b.records() {
                match r {
                    Ok(r) => {
                        if let Some(k) = r.key {
                            match latest.get_mut(k) {
                                Some(o) => *o = r.offset,
                                None => {
                                    latest.insert(k.to_vec(), r.offset);
                                }
                            }
                        }
                    }
                    Err(e) => decode_err = Some(e),
                }
            }
        })?;
        if let Some(e) = decode_err.take() {
            return Err(corrupt(id, &path, pos, &e.to_string()));
        }
        let last = i + 1 == bases.len();
        if let ScanEnd::Bad { reason } = end {
            // The active segment may have a batch being written; sealed ones may not.
            if !last {
                return Err(corrupt(id, &path, pos, reason));
            }
        }
    }

    // Records of the active segment decide what older ones lose: make them
    // durable first, so a power loss cannot take both the old value (dropped
    // here) and the new one (not yet synced by its writer).
    let active = segment::log_path(&id.dir, *bases.last().unwrap());
    File::open(&active).and_then(|f| f.sync_data()).ctx("cannot sync segment", &active)?;

    // Pass 2: rewrite sealed segments that hold superseded records.
    for &base in &bases[..bases.len() - 1] {
        let path = segment::log_path(&id.dir, base);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).ctx("cannot open segment", &path),
        };
        let meta = file.metadata().ctx("cannot stat segment", &path)?;
        let mtime = meta.modified().ctx("cannot stat segment", &path)?;
        let age_ms = now_ms - mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let drop_tombstones = age_ms > i64::try_from(config.delete_retention_ms).unwrap_or(i64::MAX);

        let mut out: Vec<u8> = Vec::with_capacity(meta.len() as usize);
        let mut index: Vec<u8> = Vec::new();
        let mut removed = 0u64;
        let mut err = None;
        let (pos, end) = scan_from(&file, &path, 0, |_, b| {
            let rebuilt = if b.is_control() || status(b).is_none() {
                Ok(Some(b.as_bytes().to_vec()))
            } else if status(b) == Some(false) {
                Ok(None)
            } else {
                rebuild_batch(b, |r| match r.key {
                    None => true,
                    Some(k) => latest.get(k) == Some(&r.offset) && !(r.value.is_none() && drop_tombstones),
                })
            };
            match rebuilt {
                Ok(Some(bytes)) => {
                    removed += u64::from(b.record_count())
                        - u64::from(crate::format::BatchView::trusted(&bytes).record_count());
                    let pos = out.len() as u64;
                    if wants_index_entry(pos, bytes.len() as u64, u64::from(config.index_interval_bytes)) {
                        index.extend_from_slice(&encode_index_entry(
                            (b.base_offset() - base) as u32,
                            pos as u32,
                        ));
                    }
                    out.extend_from_slice(&bytes);
                }
                Ok(None) => removed += u64::from(b.record_count()),
                Err(e) => err = Some(e),
            }
        })?;
        if let Some(e) = err {
            return Err(corrupt(id, &path, pos, &e.to_string()));
        }
        let ScanEnd::Sealed { next_base } = end else {
            return Err(corrupt(id, &path, pos, "sealed segment does not end with a seal"));
        };
        if removed == 0 {
            continue;
        }
        out.extend_from_slice(&seal_batch(next_base, now_ms));

        let tmp_log = path.with_extension("log.cleaned");
        let index_path = segment::index_path(&id.dir, base);
        let tmp_index = index_path.with_extension("index.cleaned");
        write_file(&tmp_index, &index, None)?;
        write_file(&tmp_log, &out, Some(mtime))?;
        std::fs::rename(&tmp_index, &index_path).ctx("cannot replace index", &index_path)?;
        std::fs::rename(&tmp_log, &path).ctx("cannot replace segment", &path)?;
        stats.segments_rewritten += 1;
        stats.records_removed += removed;
        stats.bytes_before += meta.len();
        stats.bytes_after += out.len() as u64;
        tracing::info!(stream = %id.stream, partition = id.partition, base, removed, before = meta.len(), after = out.len(), "compacted segment");
    }
    if stats.segments_rewritten > 0 {
        segment::sync_dir(&id.dir)?;
    }
    Ok(stats)
}

fn write_file(path: &std::path::Path, bytes: &[u8], mtime: Option<SystemTime>) -> Result<()> {
    let mut f =
        OpenOptions::new().write(true).create(true).truncate(true).open(path).ctx("cannot create", path)?;
    f.write_all(bytes).ctx("cannot write", path)?;
    if let Some(t) = mtime {
        f.set_modified(t).ctx("cannot set modification time of", path)?;
    }
    f.sync_all().ctx("cannot sync", path)
}
