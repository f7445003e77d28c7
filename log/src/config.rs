//! Per-stream settings, persisted as `stream.json` beside the stream's data.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When appended data is forced to disk with `fdatasync`.
///
/// Data handed to the kernel survives the death of the writing process (kill -9)
/// under every policy; the policy decides what survives a machine crash or power
/// loss. The default is `interval:1000`: an append syncs when the writer's last
/// sync is older than a second, and `flush` (which the container calls before
/// every checkpoint) syncs. There is no background thread: a writer that stops
/// appending leaves its last appends unsynced until it flushes or appends again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is on disk before it is acknowledged.
    Always,
    /// An append syncs when the last sync is older than this interval; `flush` syncs.
    Interval(Duration),
    /// Never sync; the kernel writes back in its own time.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_millis(1000))
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.trim_end_matches("ms").parse::<u64>().ok())
                    .ok_or_else(|| {
                        format!(
                            "invalid fsync policy {s:?}: expected always, never or interval:<milliseconds>"
                        )
                    })?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl Serialize for FsyncPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Settings of one stream. Only `partitions` is required when creating one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Fixed number of partitions.
    pub partitions: u32,
    /// A segment is sealed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Oldest segments are deleted while the partition is larger than this.
    pub retention_bytes: Option<u64>,
    /// Segments whose newest data is older than this are deleted.
    pub retention_ms: Option<u64>,
    /// Keep only the latest record per key (changelogs, checkpoints).
    pub compacted: bool,
    /// How long a tombstone survives compaction, so slow readers still see the delete.
    pub delete_retention_ms: u64,
    /// Default sync policy of writers of this stream.
    pub fsync: FsyncPolicy,
    /// About one index entry per this many bytes of log.
    pub index_interval_bytes: u32,
    /// A writer seals its active segment once it has held records for this
    /// long, so that compaction and retention reach recent data. `None`:
    /// only by size, except in compacted streams, which roll hourly
    /// ([`DEFAULT_COMPACTED_SEGMENT_MS`]).
    pub segment_ms: Option<u64>,
    /// Compacted streams compact themselves: a writer that sealed this many
    /// segments since its last compaction starts one (in the background;
    /// `compact.lock` keeps compactions apart). 0 turns it off (then only
    /// `samza-log compact` compacts).
    pub auto_compact_segments: u32,
}

/// How long the active segment of a compacted stream holds records before it
/// is sealed, unless `segment_ms` says otherwise: an hour.
pub const DEFAULT_COMPACTED_SEGMENT_MS: u64 = 3_600_000;

pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            partitions: 1,
            segment_bytes: 128 << 20,
            retention_bytes: None,
            retention_ms: None,
            compacted: false,
            delete_retention_ms: 24 * 3600 * 1000,
            fsync: FsyncPolicy::default(),
            index_interval_bytes: 4096,
            segment_ms: None,
            auto_compact_segments: 4,
        }
    }
}

impl StreamConfig {
    pub fn with_partitions(partitions: u32) -> Self {
        StreamConfig { partitions, ..Default::default() }
    }

    /// How long an active segment holds records before it is sealed, if at all.
    pub fn roll_after(&self) -> Option<std::time::Duration> {
        let ms = self.segment_ms.or(self.compacted.then_some(DEFAULT_COMPACTED_SEGMENT_MS))?;
        Some(std::time::Duration::from_millis(ms))
    }

    /// Checks the settings, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.partitions == 0 || self.partitions > 100_000 {
            return Err(format!("partitions must be between 1 and 100000, got {}", self.partitions));
        }
        if !(4096..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(format!(
                "segment_bytes must be between 4096 and {MAX_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be positive".into());
        }
        if self.segment_ms == Some(0) {
            return Err("segment_ms must be positive".into());
        }
        Ok(())
    }
}
