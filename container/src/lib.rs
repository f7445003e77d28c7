//! The container runtime: the run loop that binds input partitions to task
//! instances, calls `process`, `window` and `commit`, and writes checkpoints;
//! and the local runner behind `samza-run job.toml`.

pub mod config;
