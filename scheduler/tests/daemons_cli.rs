//! The daemons' command lines. (The end-to-end runs are in the workspace's
//! `tests/` package; this file also makes `cargo test --workspace` build the
//! `samza-rm` and `samza-nm` binaries they use.)

use std::process::Command;

const RM: &str = env!("CARGO_BIN_EXE_samza-rm");
const NM: &str = env!("CARGO_BIN_EXE_samza-nm");

#[test]
fn daemons_explain_their_options() {
    for bin in [RM, NM] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--dir"));
    }
}
