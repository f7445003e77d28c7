//! `samza-run` as a user meets it first: help and a missing file.
//! (The end-to-end runs are in the workspace's `tests/` package; this file also
//! makes `cargo test --workspace` build the `samza-run` binary they use.)

use std::process::Command;

const RUN: &str = env!("CARGO_BIN_EXE_samza-run");

#[test]
fn help_and_missing_file() {
    let out = Command::new(RUN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config <KEY=VALUE>"));
    let out = Command::new(RUN).arg("/nonexistent/job.toml").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read job config /nonexistent/job.toml"));
}
