//! Opening a task's store: reuse local state when it is provably current
//! (host affinity), otherwise rebuild it from the changelog.
//!
//! A RocksDB store lives in `<dir>/db` with a marker `<dir>/marker.json`
//! naming the job, store, task and changelog partition it belongs to, and the
//! changelog offset it reflects. The marker is written after each commit's
//! engine writes are durable, and the engine never runs ahead of the
//! changelog (see `store.rs`), so a store whose marker matches and lies within
//! the changelog is current up to the marker: only the tail after it is
//! replayed. State of another job, store, task or partition, state ahead of
//! its changelog, or state whose tail the changelog no longer holds, is
//! discarded and rebuilt. Restores write in large batches with the WAL off and
//! flush once at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use samza_task_api::{PartitionMetadata, SystemConsumer, SystemStreamPartition};

use crate::engine::{BorrowedWrite, Engine, MemoryEngine, RocksEngine};
use crate::StateError;

/// Which engine a store uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Rocksdb,
    InMemory,
}

/// Who a store's local state belongs to, and how far it is current.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    pub job: String,
    pub store: String,
    pub task: String,
    pub changelog: Option<SystemStreamPartition>,
    /// Next changelog offset: the store reflects every record before it.
    pub offset: u64,
}

/// What opening a store did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreReport {
    /// `tail` (local state reused, changelog tail replayed), `full` (rebuilt
    /// from the changelog), `local` (no changelog), or `memory`.
    pub mode: String,
    /// Why local state was discarded, when it was.
    pub discarded: Option<String>,
    pub from_offset: u64,
    pub records: u64,
    pub bytes: u64,
    pub millis: u64,
}

/// A changelog partition to restore from, with its offsets at start.
pub struct ChangelogSource {
    pub ssp: SystemStreamPartition,
    pub meta: PartitionMetadata,
    pub consumer: Box<dyn SystemConsumer>,
    /// A restore that has not reached `meta.upcoming` by then fails (it
    /// never stops short: a store with part of its changelog would be wrong).
    pub timeout: Duration,
}

/// How long a restore waits for its changelog by default.
pub const DEFAULT_RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Opened {
    pub engine: Box<dyn Engine>,
    /// Next changelog offset after the restore.
    pub changelog_next: u64,
    pub report: RestoreReport,
}

pub fn marker_path(dir: &Path) -> PathBuf {
    dir.join("marker.json")
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> StateError {
    StateError::Io { op, path: path.to_path_buf(), source }
}

/// Writes the marker (atomically: temporary file, then rename).
pub fn write_marker(dir: &Path, marker: &Marker) -> Result<(), StateError> {
    let path = marker_path(dir);
    let tmp = dir.join("marker.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(marker).expect("marker serialises"))
        .map_err(|e| io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("cannot replace", &path, e))
}

/// Opens the store of `want` (job, store, task, changelog) in `dir`.
pub fn open(
    kind: EngineKind,
    dir: &Path,
    want: &Marker,
    changelog: Option<ChangelogSource>,
) -> Result<Opened, StateError> {
    let start = Instant::now();
    let mut report = RestoreReport::default();
    let mut engine: Box<dyn Engine>;
    let from;
    match kind {
        EngineKind::InMemory => {
            engine = Box::new(MemoryEngine::default());
            report.mode = "memory".into();
            from = changelog.as_ref().map_or(0, |c| c.meta.oldest);
        }
        EngineKind::Rocksdb => {
            let current = match (&changelog, read_marker(dir)) {
                (_, Err(reason)) => Err(reason),
                (None, Ok(m)) => check_owner(&m, want).map(|_| m.offset),
                (Some(c), Ok(m)) => check_owner(&m, want).and_then(|_| {
                    if m.offset > c.meta.upcoming {
                        Err(format!(
                            "local state is at changelog offset {} but the changelog ends at {}",
                            m.offset, c.meta.upcoming
                        ))
                    } else if m.offset < c.meta.oldest {
                        Err(format!(
                            "the changelog no longer holds offset {} (oldest {})",
                            m.offset, c.meta.oldest
                        ))
                    } else {
                        Ok(m.offset)
                    }
                }),
            };
            match current {
                Ok(offset) => {
                    report.mode = if changelog.is_some() { "tail" } else { "local" }.into();
                    from = offset;
                }
                Err(reason) => {
                    if dir.exists() {
                        tracing::warn!(dir = %dir.display(), %reason, "discarding local state");
                        std::fs::remove_dir_all(dir).map_err(|e| io("cannot remove", dir, e))?;
                        report.discarded = Some(reason);
                    }
                    report.mode = if changelog.is_some() { "full" } else { "local" }.into();
                    from = changelog.as_ref().map_or(0, |c| c.meta.oldest);
                }
            }
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
            // A crash during the restore must not leave a marker claiming more.
            if report.mode == "full" {
                let _ = std::fs::remove_file(marker_path(dir));
            }
            engine = Box::new(RocksEngine::open(&dir.join("db"))?);
        }
    }
    let mut next = from;
    if let Some(mut c) = changelog {
        report.from_offset = from;
        let (records, bytes, end) = replay(engine.as_mut(), &mut c, from)?;
        report.records = records;
        report.bytes = bytes;
        next = end;
        engine.finish_bulk()?;
    } else if kind == EngineKind::Rocksdb {
        next = 0;
    }
    if kind == EngineKind::Rocksdb {
        write_marker(dir, &Marker { offset: next, ..want.clone() })?;
    }
    report.millis = start.elapsed().as_millis() as u64;
    Ok(Opened { engine, changelog_next: next, report })
}

fn read_marker(dir: &Path) -> Result<Marker, String> {
    let path = marker_path(dir);
    let bytes = std::fs::read(&path).map_err(|e| format!("no usable marker {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("marker {} is not valid: {e}", path.display()))
}

fn check_owner(have: &Marker, want: &Marker) -> Result<(), String> {
    if (&have.job, &have.store, &have.task, &have.changelog)
        == (&want.job, &want.store, &want.task, &want.changelog)
    {
        Ok(())
    } else {
        Err(format!(
            "local state belongs to job {:?} store {:?} task {:?} changelog {:?}",
            have.job, have.store, have.task, have.changelog
        ))
    }
}

/// Replays changelog records `[from, upcoming)` into the engine in batches.
fn replay(
    engine: &mut dyn Engine,
    c: &mut ChangelogSource,
    from: u64,
) -> Result<(u64, u64, u64), StateError> {
    let upcoming = c.meta.upcoming;
    if from >= upcoming {
        return Ok((0, 0, from));
    }
    c.consumer.register(&c.ssp, from).map_err(|source| StateError::Changelog {
        context: format!("cannot read {} from {from}", c.ssp),
        source,
    })?;
    let mut buf = Vec::new();
    let (mut records, mut bytes, mut next) = (0u64, 0u64, from);
    let started = Instant::now();
    let mut told = started;
    while next < upcoming {
        buf.clear();
        c.consumer
            .poll(&mut buf, 100_000, Duration::from_millis(200))
            .map_err(|source| StateError::Changelog { context: format!("cannot read {}", c.ssp), source })?;
        if buf.is_empty() {
            // Compaction may have removed the last records before `upcoming`;
            // a consumer that knows its position says so. Otherwise the
            // system is slow or away: wait for it, never stop short.
            if c.consumer.position(&c.ssp).is_some_and(|p| p >= upcoming) {
                next = upcoming;
                break;
            }
            if started.elapsed() >= c.timeout {
                return Err(StateError::RestoreTimeout {
                    ssp: c.ssp.clone(),
                    next,
                    upcoming,
                    secs: c.timeout.as_secs_f64(),
                });
            }
            if told.elapsed() >= Duration::from_secs(5) {
                told = Instant::now();
                tracing::warn!(changelog = %c.ssp, next, upcoming, records, "restore waiting for the changelog");
            }
            continue;
        }
        // One write batch per poll, borrowing the polled records.
        let mut batch: Vec<BorrowedWrite<'_>> = Vec::with_capacity(buf.len());
        for env in &buf {
            if env.offset >= upcoming {
                next = upcoming;
                break;
            }
            next = env.offset + 1;
            let Some(key) = env.key.as_deref() else { continue };
            records += 1;
            bytes += key.len() as u64 + env.message.as_ref().map_or(0, |m| m.len() as u64);
            batch.push((key, env.message.as_deref()));
        }
        engine.bulk_write(&batch)?;
    }
    Ok((records, bytes, upcoming.max(next)))
}
