//! The log as a whole: a root directory of named streams, and their admin.
//!
//! ```text
//! <root>/<stream>/stream.json              settings (StreamConfig), written once at creation
//! <root>/<stream>/<partition>/write.lock   flock serialising appends
//! <root>/<stream>/<partition>/{base:020}.log / .index
//! ```
//! A stream is created in a temporary directory and renamed into place, so it
//! appears whole or not at all, even with concurrent creators; deletion renames
//! it away first for the same reason.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compaction::{self, CompactionStats};
use crate::config::{FsyncPolicy, StreamConfig};
use crate::error::{IoContext, LogError, Result};
use crate::producer::Producer;
use crate::reader::{self, PartitionReader};
use crate::segment::{self, PartitionId};
use crate::writer::{now_ms, PartitionWriter};

const META: &str = "stream.json";

/// Handle on a log directory. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Log {
    root: PathBuf,
}

/// Sizes and offsets of one partition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// Oldest offset still stored.
    pub oldest: u64,
    /// Offset the next appended record gets.
    pub upcoming: u64,
    pub segments: usize,
    pub bytes: u64,
}

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Offset(u64),
    Oldest,
    /// Only records appended from now on.
    Upcoming,
}

/// Checks a stream name: 1 to 200 characters of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_stream_name(name: &str) -> Result<()> {
    let bad = |reason| Err(LogError::InvalidStreamName { name: name.to_string(), reason });
    if name.is_empty() || name.len() > 200 {
        return bad("must be 1 to 200 characters long");
    }
    if name.starts_with('.') {
        return bad("must not start with '.'");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return bad("may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

impl Log {
    /// Opens (creating if needed) the log rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Log> {
        let root = root.into();
        fs::create_dir_all(&root).ctx("cannot create log directory", &root)?;
        Ok(Log { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a stream with all its partitions.
    pub fn create_stream(&self, name: &str, config: &StreamConfig) -> Result<Stream> {
        validate_stream_name(name)?;
        config.validate().map_err(|reason| LogError::InvalidConfig { stream: name.to_string(), reason })?;
        let dest = self.root.join(name);
        if dest.exists() {
            return Err(LogError::StreamExists(name.to_string()));
        }
        let tmp = self.root.join(format!(".creating-{name}-{}-{}", std::process::id(), now_ms()));
        let result = (|| {
            fs::create_dir(&tmp).ctx("cannot create stream directory", &tmp)?;
            let meta = serde_json::to_vec_pretty(config).expect("config serialises");
            let meta_path = tmp.join(META);
            fs::write(&meta_path, meta).ctx("cannot write stream metadata", &meta_path)?;
            fs::File::open(&meta_path).and_then(|f| f.sync_all()).ctx("cannot sync", &meta_path)?;
            for p in 0..config.partitions {
                let dir = tmp.join(p.to_string());
                fs::create_dir(&dir).ctx("cannot create partition directory", &dir)?;
                let log = segment::log_path(&dir, 0);
                fs::File::create(&log).ctx("cannot create segment", &log)?;
                segment::sync_dir(&dir)?;
            }
            segment::sync_dir(&tmp)?;
            match fs::rename(&tmp, &dest) {
                Ok(()) => Ok(()),
                Err(e) if dest.exists() => {
                    let _ = e;
                    Err(LogError::StreamExists(name.to_string()))
                }
                Err(e) => Err(e).ctx("cannot create stream", &dest),
            }
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result?;
        segment::sync_dir(&self.root)?;
        tracing::info!(stream = name, partitions = config.partitions, "created stream");
        self.stream(name)
    }

    /// Deletes a stream and all its data.
    pub fn delete_stream(&self, name: &str) -> Result<()> {
        validate_stream_name(name)?;
        let dir = self.root.join(name);
        let gone = self.root.join(format!(".deleting-{name}-{}-{}", std::process::id(), now_ms()));
        match fs::rename(&dir, &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LogError::StreamNotFound(name.to_string()))
            }
            Err(e) => return Err(e).ctx("cannot delete stream", &dir),
        }
        fs::remove_dir_all(&gone).ctx("cannot delete stream directory", &gone)?;
        tracing::info!(stream = name, "deleted stream");
        Ok(())
    }

    /// Names of all streams, sorted.
    pub fn streams(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for e in fs::read_dir(&self.root).ctx("cannot list log directory", &self.root)? {
            let e = e.ctx("cannot list log directory", &self.root)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && e.path().join(META).is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn stream_exists(&self, name: &str) -> bool {
        validate_stream_name(name).is_ok() && self.root.join(name).join(META).is_file()
    }

    /// Opens an existing stream.
    pub fn stream(&self, name: &str) -> Result<Stream> {
        validate_stream_name(name)?;
        let dir = self.root.join(name);
        let meta_path = dir.join(META);
        let bytes = match fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LogError::StreamNotFound(name.to_string()))
            }
            Err(e) => return Err(e).ctx("cannot read stream metadata", &meta_path),
        };
        let config: StreamConfig = serde_json::from_slice(&bytes)
            .map_err(|e| LogError::BadMetadata { path: meta_path.clone(), reason: e.to_string() })?;
        config.validate().map_err(|reason| LogError::BadMetadata { path: meta_path.clone(), reason })?;
        Ok(Stream { name: name.to_string(), dir, config: Arc::new(config) })
    }
}

/// One stream of the log.
#[derive(Clone, Debug)]
pub struct Stream {
    name: String,
    dir: PathBuf,
    config: Arc<StreamConfig>,
}

impl Stream {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    fn partition_id(&self, partition: u32) -> Result<Arc<PartitionId>> {
        if partition >= self.config.partitions {
            return Err(LogError::PartitionNotFound {
                stream: self.name.clone(),
                partition,
                partitions: self.config.partitions,
            });
        }
        Ok(Arc::new(PartitionId {
            stream: self.name.clone(),
            partition,
            dir: self.dir.join(partition.to_string()),
        }))
    }

    /// A writer with the stream's fsync policy.
    pub fn writer(&self, partition: u32) -> Result<PartitionWriter> {
        self.writer_with(partition, self.config.fsync)
    }

    pub fn writer_with(&self, partition: u32, fsync: FsyncPolicy) -> Result<PartitionWriter> {
        PartitionWriter::open(self.partition_id(partition)?, self.config.clone(), fsync)
    }

    pub fn reader(&self, partition: u32, start: StartAt) -> Result<PartitionReader> {
        let id = self.partition_id(partition)?;
        let offset = match start {
            StartAt::Offset(o) => o,
            StartAt::Oldest => reader::offsets(&id)?.0,
            StartAt::Upcoming => reader::offsets(&id)?.1,
        };
        PartitionReader::open(id, offset)
    }

    /// Directory of a partition, for watching it (see [`crate::Watcher`]).
    pub fn partition_dir(&self, partition: u32) -> Result<PathBuf> {
        Ok(self.partition_id(partition)?.dir.clone())
    }

    pub fn partition_info(&self, partition: u32) -> Result<PartitionInfo> {
        let id = self.partition_id(partition)?;
        let (oldest, upcoming, bases) = reader::offsets(&id)?;
        let mut bytes = 0;
        for base in &bases {
            if let Ok(m) = fs::metadata(segment::log_path(&id.dir, *base)) {
                bytes += m.len();
            }
        }
        Ok(PartitionInfo { partition, oldest, upcoming, segments: bases.len(), bytes })
    }

    /// A producer that routes records to partitions by key.
    pub fn producer(&self) -> Producer {
        Producer::new(self.clone())
    }

    /// Compacts one partition (only streams marked compacted are compacted).
    pub fn compact(&self, partition: u32) -> Result<CompactionStats> {
        let id = self.partition_id(partition)?;
        if !self.config.compacted {
            return Ok(CompactionStats::default());
        }
        compaction::compact(&id, &self.config, now_ms())
    }

    /// Compacts with an explicit clock, for tests of tombstone expiry.
    #[doc(hidden)]
    pub fn compact_at(&self, partition: u32, now_ms: i64) -> Result<CompactionStats> {
        compaction::compact(&*self.partition_id(partition)?, &self.config, now_ms)
    }

    /// Applies size and age retention to every partition; returns segments deleted.
    pub fn apply_retention(&self) -> Result<usize> {
        let mut n = 0;
        for p in 0..self.config.partitions {
            n += crate::retention::apply(&*self.partition_id(p)?, &self.config, now_ms())?.len();
        }
        Ok(n)
    }
}
