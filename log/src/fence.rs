//! Producer fencing: one live writer per producer identity, as Kafka fences
//! zombie producers by epoch.
//!
//! A writer identity (a job's container, say `page-view-counter/container-0`)
//! writes with an epoch that only grows: each new incarnation of the identity
//! gets a higher one. Before its first append to a partition, a fenced writer
//! *raises* the epoch there: under the partition's write lock it records its
//! epoch in the partition's `fences` file, unless a higher one is recorded
//! already (then it is itself fenced). Every later append checks, under the
//! same lock, that no higher epoch has been recorded since. So once a successor
//! has raised the epoch on a partition, no append of an older incarnation lands
//! there, however long that one was paused.
//!
//! `fences` is text, one `epoch<TAB>identity` per line, replaced atomically
//! (temp file, fsync, rename). A writer re-reads it only when the file changed
//! (inode, size or modification time), so an append costs one `stat` more.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{IoContext, LogError, Result};
use crate::segment::PartitionId;

/// The name of the fence file in a partition directory.
pub const FENCES_FILE: &str = "fences";

/// A writer's identity and epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub producer: Arc<str>,
    pub epoch: u64,
}

impl Fence {
    pub fn new(producer: impl Into<Arc<str>>, epoch: u64) -> Arc<Fence> {
        Arc::new(Fence { producer: producer.into(), epoch })
    }
}

/// What a fenced writer knows of its partition's fence file.
#[derive(Debug)]
pub(crate) struct FenceState {
    pub fence: Arc<Fence>,
    /// (inode, size, mtime ns) of the file when last read; `None`: absent.
    seen: Option<(u64, u64, i64)>,
    /// The highest epoch recorded for this identity when last read.
    recorded: Option<u64>,
}

fn stamp(path: &Path) -> Result<Option<(u64, u64, i64)>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some((m.ino(), m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx("cannot stat fence file", path),
    }
}

/// Reads a partition's fence file (empty when there is none).
pub fn read_fences(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let path = dir.join(FENCES_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).ctx("cannot read fence file", &path),
    };
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let bad =
            || LogError::BadMetadata { path: path.clone(), reason: format!("line {}: {line:?}", n + 1) };
        let (epoch, id) = line.split_once('\t').ok_or_else(bad)?;
        out.insert(id.to_string(), epoch.parse().map_err(|_| bad())?);
    }
    Ok(out)
}

fn write_fences(dir: &Path, fences: &BTreeMap<String, u64>) -> Result<()> {
    let path = dir.join(FENCES_FILE);
    let tmp = dir.join("fences.tmp");
    let mut text = String::new();
    for (id, epoch) in fences {
        text.push_str(&format!("{epoch}\t{id}\n"));
    }
    let mut f = fs::File::create(&tmp).ctx("cannot create fence file", &tmp)?;
    f.write_all(text.as_bytes()).ctx("cannot write fence file", &tmp)?;
    f.sync_all().ctx("cannot sync fence file", &tmp)?;
    fs::rename(&tmp, &path).ctx("cannot replace fence file", &path)?;
    crate::segment::sync_dir(dir)
}

impl FenceState {
    /// Records `fence`'s epoch in the partition (raising it), or fails when a
    /// higher one is recorded. Must hold the partition's write lock.
    pub(crate) fn raise(id: &PartitionId, fence: Arc<Fence>) -> Result<FenceState> {
        let mut fences = read_fences(&id.dir)?;
        let recorded = fences.get(&*fence.producer).copied();
        match recorded {
            Some(r) if r > fence.epoch => return Err(fenced(id, &fence, r)),
            Some(r) if r == fence.epoch => {}
            _ => {
                fences.insert(fence.producer.to_string(), fence.epoch);
                write_fences(&id.dir, &fences)?;
            }
        }
        let seen = stamp(&id.dir.join(FENCES_FILE))?;
        let recorded = Some(fence.epoch);
        Ok(FenceState { fence, seen, recorded })
    }

    /// Fails when a higher epoch than ours has been recorded since we last
    /// looked. Must hold the partition's write lock.
    pub(crate) fn check(&mut self, id: &PartitionId) -> Result<()> {
        let path = id.dir.join(FENCES_FILE);
        let now = stamp(&path)?;
        if now != self.seen {
            self.recorded = read_fences(&id.dir)?.get(&*self.fence.producer).copied();
            self.seen = now;
        }
        match self.recorded {
            Some(r) if r > self.fence.epoch => Err(fenced(id, &self.fence, r)),
            // The file was removed (or our line with it): our claim is gone,
            // so is any successor's; keep writing as the owner we were.
            _ => Ok(()),
        }
    }
}

fn fenced(id: &PartitionId, fence: &Fence, current: u64) -> LogError {
    LogError::Fenced {
        stream: id.stream.clone(),
        partition: id.partition,
        producer: fence.producer.to_string(),
        epoch: fence.epoch,
        current,
    }
}
