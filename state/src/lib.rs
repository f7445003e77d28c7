//! Local task state: key-value stores on RocksDB or in memory, each with a
//! write-back cache, backed by a changelog stream, restored quickly from the
//! changelog or reused in place when provably current.

pub mod engine;
pub mod restore;
pub mod store;

pub use engine::{Engine, MemoryEngine, RocksEngine};
pub use restore::{ChangelogSource, EngineKind, Marker, RestoreReport};
pub use store::{system_clock, Clock, StoreOptions, TaskStore};

use std::path::PathBuf;

/// Why a store could not be opened, read, written or restored; each variant
/// names the store's directory or changelog partition and keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("rocksdb {op} in {}: {source}", dir.display())]
    Engine {
        op: &'static str,
        dir: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("no RocksDB store in {}", dir.display())]
    NoStore { dir: PathBuf },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Changelog {
        context: String,
        #[source]
        source: samza_task_api::SystemError,
    },
    #[error("restore of {ssp} reached offset {next} of {upcoming} in {secs:.0} s and got nothing more: the changelog's system is unavailable or too slow")]
    RestoreTimeout { ssp: samza_task_api::SystemStreamPartition, next: u64, upcoming: u64, secs: f64 },
}
