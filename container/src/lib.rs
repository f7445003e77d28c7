//! The container runtime: the run loop that binds input partitions to task
//! instances, calls `process`, `window` and `commit`, and writes checkpoints;
//! and the local runner behind `samza-run job.toml`.

pub mod checkpoint;
pub mod config;
pub mod entry;
pub mod env;
pub mod http;
pub mod job_model;
pub mod layout;
pub mod lease;
pub mod local;
pub mod memory;
pub mod query;
pub mod run_loop;
pub mod status;
pub mod systems;
pub mod testing;
pub mod tools;
