//! A job author's first day, as README.md tells it: copy `templates/job` out
//! of the repository, point its `samza` dependency at the checkout, build it
//! with Cargo, run its own test, and run it with `samza-run job.toml`, which
//! finds the binary through `package.cargo-bin`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The target directory this test was built in (`<target>/debug/deps/<test>`),
/// so that the template's build reuses the workspace's compiled dependencies.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        if name == "target" || name == "data" || name == "samza-data" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

fn ok(what: &str, out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_job_template_builds_tests_and_runs_outside_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("my-job");
    copy_dir(&repo().join("templates/job"), &job);
    // What README.md says to change: the path to the framework.
    let manifest = std::fs::read_to_string(job.join("Cargo.toml")).unwrap();
    let line = "samza = { path = \"../../samza\" }";
    assert!(manifest.contains(line), "the template names the framework by a path");
    let samza = repo().join("samza");
    let manifest = manifest.replace(line, &format!("samza = {{ path = {:?} }}", samza.to_str().unwrap()));
    std::fs::write(job.join("Cargo.toml"), manifest).unwrap();
    // The workspace's lock file: the same versions as the workspace builds (and no network).
    std::fs::copy(repo().join("Cargo.lock"), job.join("Cargo.lock")).unwrap();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo = |args: &[&str]| {
        Command::new(&cargo)
            .args(args)
            .args(["--offline", "--quiet"])
            .current_dir(&job)
            .env("CARGO_TARGET_DIR", target_dir())
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap()
    };
    ok("cargo build", cargo(&["build"]));
    let tests = ok("cargo test", cargo(&["test", "--test", "count"]));
    assert!(tests.contains("test result: ok. 1 passed"), "the template's own test: {tests}");

    // Input, then the job as its job.toml describes it (bounded here, the dev build).
    let bin = samza_test_support::bin_dir(&["samza-run", "samza-log"]);
    let log = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut c = Command::new(bin.join("samza-log"))
            .args(["--dir", "data/log"])
            .args(args)
            .current_dir(&job)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        ok(&format!("samza-log {args:?}"), c.wait_with_output().unwrap())
    };
    log(&["create", "events", "-p", "4"], "");
    let mut truth = BTreeMap::new();
    let mut input = String::new();
    for i in 0..500u64 {
        let user = format!("user-{}", (i * 7919) % 37);
        *truth.entry(user.clone()).or_insert(0u64) += 1;
        input.push_str(&format!("{user}\t{{\"page\":{i}}}\n"));
    }
    log(&["produce", "events", "--key-separator", "\t"], &input);
    let run = Command::new(bin.join("samza-run"))
        .args([
            "job.toml",
            "--config",
            "package.profile=dev",
            "--config",
            "systems.log.streams.events.bounded=true",
        ])
        .current_dir(&job)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    ok("samza-run job.toml", run);
    // The latest count of every key is the truth.
    let mut latest = BTreeMap::new();
    for line in log(&["consume", "counts"], "").lines() {
        let f: Vec<&str> = line.split('\t').collect();
        latest.insert(f[2].to_string(), f[3].parse::<u64>().unwrap());
    }
    assert_eq!(latest, truth);
}
