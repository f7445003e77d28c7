//! The container status file: what a container on this machine tells
//! `samza-run` (its progress line), the tools (is the job running here?) and
//! tests, once a second. One type, written by the run loop and read by every
//! reader; the file is replaced atomically, so a reader never sees half of it.

use std::path::Path;

use samza_state::restore::RestoreReport;
use serde::{Deserialize, Serialize};

/// `<state-dir>/<job>/container-<id>.status.json` (see [`crate::layout`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub container: u32,
    pub pid: u32,
    /// Messages processed since the container started.
    pub processed: u64,
    /// The container has ended (inputs done or stopped) and committed.
    pub finished: bool,
    pub partitions: Vec<PartitionStatus>,
    pub stores: Vec<StoreStatus>,
    /// How long its commits took (the last 4096).
    #[serde(default)]
    pub commits: CommitStats,
}

/// Commit latency: how long the run loop stood still to commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStats {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl CommitStats {
    /// Figures of `recent` (microseconds), `count` commits in all.
    pub fn of(count: u64, recent: &[u32]) -> CommitStats {
        if recent.is_empty() {
            return CommitStats { count, ..Default::default() };
        }
        let mut v = recent.to_vec();
        v.sort_unstable();
        let at = |q: f64| u64::from(v[((v.len() - 1) as f64 * q).round() as usize]);
        CommitStats { count, p50_us: at(0.5), p99_us: at(0.99), max_us: at(1.0) }
    }
}

/// An input partition's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub system: String,
    pub stream: String,
    pub partition: u32,
    /// The next offset the container will process.
    pub next_offset: u64,
    /// The partition's upcoming offset when last read (`None` until then).
    pub upcoming: Option<u64>,
}

impl PartitionStatus {
    /// Messages behind the partition's end, as far as known.
    pub fn lag(&self) -> u64 {
        self.upcoming.unwrap_or(0).saturating_sub(self.next_offset)
    }
}

/// How a task's store was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub task: String,
    pub store: String,
    pub restore: RestoreReport,
}

impl ContainerStatus {
    /// The status in `path`, when there is one and it parses.
    pub fn read(path: &Path) -> Option<ContainerStatus> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Replaces `path` with this status (write to a temporary file, rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, path)
    }
}
