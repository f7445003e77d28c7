//! The container runtime: the run loop that binds input partitions to task
//! instances, calls `process`, `window` and `commit`, and writes checkpoints.
//!
//! Not built yet: the task API and container issue fills this crate. The
//! embedded log (`samza-log`) it will read and write is complete.
