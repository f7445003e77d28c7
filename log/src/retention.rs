//! Deleting old segments by size and by age. Only sealed segments are ever
//! deleted, oldest first and without gaps, so the active segment and the
//! offsets of what remains never change. A reader with a deleted segment open
//! keeps reading it to its end (the file lives while open).

use std::time::UNIX_EPOCH;

use crate::config::StreamConfig;
use crate::error::{IoContext, Result};
use crate::segment::{self, list_segments, open_lock_file, FileLock, PartitionId};

/// Deletes the segments that retention no longer covers; returns their base offsets.
///
/// A segment's age is the time of its last append (its file's modification
/// time, which compaction preserves).
pub(crate) fn apply(id: &PartitionId, config: &StreamConfig, now_ms: i64) -> Result<Vec<u64>> {
    if config.retention_bytes.is_none() && config.retention_ms.is_none() {
        return Ok(Vec::new());
    }
    // Compaction rewrites sealed segments; the two never run at once.
    let lock_path = id.dir.join("compact.lock");
    let lock = open_lock_file(&id.dir, "compact.lock")?;
    let _guard = FileLock::lock(&lock, &lock_path)?;
    delete_expired(id, config, now_ms)
}

/// As [`apply`], but skipped when a compaction holds the partition (a writer
/// rolling a segment must not wait for a compaction); the next roll retries.
pub(crate) fn apply_if_idle(id: &PartitionId, config: &StreamConfig, now_ms: i64) -> Result<Vec<u64>> {
    if config.retention_bytes.is_none() && config.retention_ms.is_none() {
        return Ok(Vec::new());
    }
    let lock_path = id.dir.join("compact.lock");
    let lock = open_lock_file(&id.dir, "compact.lock")?;
    match FileLock::try_lock(&lock, &lock_path)? {
        Some(_guard) => delete_expired(id, config, now_ms),
        None => Ok(Vec::new()),
    }
}

fn delete_expired(id: &PartitionId, config: &StreamConfig, now_ms: i64) -> Result<Vec<u64>> {
    let bases = list_segments(&id.dir)?;
    let mut segments = Vec::with_capacity(bases.len());
    for &base in &bases {
        let path = segment::log_path(&id.dir, base);
        match std::fs::metadata(&path) {
            Ok(m) => {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                segments.push((base, m.len(), mtime));
            }
            // Deleted by a concurrent retention run.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("cannot stat segment", &path),
        }
    }
    let mut total: u64 = segments.iter().map(|s| s.1).sum();
    let mut deleted = Vec::new();
    // Never the last (active) segment.
    for &(base, size, mtime) in segments.iter().take(segments.len().saturating_sub(1)) {
        let by_size = config.retention_bytes.is_some_and(|r| total - size >= r);
        let by_age = config
            .retention_ms
            .is_some_and(|r| now_ms.saturating_sub(mtime) > i64::try_from(r).unwrap_or(i64::MAX));
        if !(by_size || by_age) {
            break;
        }
        let log = segment::log_path(&id.dir, base);
        match std::fs::remove_file(&log) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("cannot delete segment", &log),
        }
        let _ = std::fs::remove_file(segment::index_path(&id.dir, base));
        tracing::info!(stream = %id.stream, partition = id.partition, base, bytes = size, by_size, by_age, "deleted segment");
        total -= size;
        deleted.push(base);
    }
    Ok(deleted)
}
