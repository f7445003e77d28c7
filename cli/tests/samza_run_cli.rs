//! `samza-run` as a user meets it first: help, a missing file, and cluster
//! commands without a cluster. (The end-to-end runs are in the workspace's
//! `tests/` package; this file also makes `cargo test --workspace` build the
//! `samza-run` binary they use.)

use std::process::Command;

const RUN: &str = env!("CARGO_BIN_EXE_samza-run");

#[test]
fn help_and_missing_file() {
    let out = Command::new(RUN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--config <KEY=VALUE>"), "{help}");
    for cmd in ["status", "kill", "logs", "cluster"] {
        assert!(help.contains(cmd), "{cmd} in {help}");
    }
    let out = Command::new(RUN).arg("/nonexistent/job.toml").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read job config /nonexistent/job.toml"));
}

#[test]
fn cluster_commands_without_a_cluster_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(RUN)
        .arg("status")
        .env_remove("SAMZA_RM_URL")
        .env("SAMZA_CLUSTER_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no resource manager: pass --rm URL, set SAMZA_RM_URL"), "{err}");
    let out = Command::new(RUN)
        .args(["status", "--rm", "http://127.0.0.1:9"])
        .env_remove("SAMZA_TOKEN")
        .env_remove("SAMZA_TOKEN_FILE")
        .env("SAMZA_CLUSTER_DIR", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the token") && err.contains("SAMZA_TOKEN"), "{err}");
}
