//! Local task state: key-value stores on RocksDB or in memory, each with a
//! write-back cache, backed by a changelog stream, restored quickly from the
//! changelog or reused in place when provably current.

pub mod engine;
pub mod restore;
pub mod store;

pub use engine::{Engine, MemoryEngine, RocksEngine};
pub use restore::{ChangelogSource, EngineKind, Marker, RestoreReport};
pub use store::{system_clock, Clock, StoreOptions, TaskStore};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Engine(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Changelog(String),
}
