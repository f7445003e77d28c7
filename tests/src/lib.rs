//! End-to-end tests live in `tests/`; `src/bin/test-job.rs` is the job binary they run.
