//! Helpers shared by the example's end-to-end tests.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use samza_container::status::ContainerStatus;
use samza_examples::user_of;
use samza_log::{Log, StartAt};
use samza_test_support::JobToml;

pub const COUNTER: &str = env!("CARGO_BIN_EXE_page-view-counter");

pub use samza_test_support::samza_run;

/// The directory of the workspace's binaries (the daemons, samza-run and the examples').
pub fn bin_dir() -> PathBuf {
    samza_test_support::bin_dir(&["samza-rm", "samza-nm", "samza-run", "page-view-counter"])
}

/// The page-view counter's job file as the tests run it: 2 containers over
/// the bounded `page-views-by-user`, counts in RocksDB with a changelog,
/// outputs to the compacted `user-counts` (what each window emits kept in
/// the store `emits`).
pub fn counter_job() -> JobToml {
    JobToml::new("page-view-counter", Path::new(COUNTER), "count", &["log.page-views-by-user"])
        .set("job.container-count", 2)
        .set("task.window-ms", 200)
        .set("task.commit-ms", 200)
        .set("systems.log.streams.page-views-by-user.bounded", true)
        .set("systems.log.streams.user-counts.partitions", 4)
        .set("systems.log.streams.user-counts.compacted", true)
        .set("stores.counts.engine", "rocksdb")
        .set("stores.counts.changelog", "log.counts-changelog")
        .set("stores.emits.engine", "rocksdb")
        .set("stores.emits.changelog", "log.emits-changelog")
        .set("params.output", "log.user-counts")
}

/// Page views `from..to` of `users` users into the embedded log's
/// `page-views-by-user`, keyed by user; `truth` counts them.
pub fn produce(log: &Log, from: u64, to: u64, users: u64, truth: &mut HashMap<String, i64>) {
    let mut p = log.stream("page-views-by-user").unwrap().producer();
    for i in from..to {
        let user = format!("user-{}", user_of(i, users));
        let v = format!(r#"{{"user":"{user}","page":"/p","time":{i}}}"#);
        p.send(None, Some(user.as_bytes()), Some(v.as_bytes()), i as i64, &[]).unwrap();
        *truth.entry(user).or_default() += 1;
    }
    p.flush().unwrap();
}

/// Container `c`'s last status file under `dir/state`, when written.
pub fn status(dir: &Path, c: u32) -> Option<ContainerStatus> {
    samza_test_support::status(&dir.join("state"), "page-view-counter", c)
}

/// `samza-run dir/job.toml --config O...`, its stderr piped.
pub fn run(dir: &Path, overrides: &[&str]) -> Child {
    command(dir, overrides).spawn().unwrap()
}

/// The command [`run`] starts, to add to.
pub fn command(dir: &Path, overrides: &[&str]) -> Command {
    let mut cmd = Command::new(samza_run());
    cmd.arg(dir.join("job.toml")).stdout(Stdio::null()).stderr(Stdio::piped());
    for o in overrides {
        cmd.args(["--config", o]);
    }
    cmd
}

/// Submits `dir/job.toml` to `cluster` (`samza-run --rm URL --detach`); its application id.
pub fn submit(cluster: &samza_scheduler::cli::LocalCluster, dir: &Path) -> String {
    let out = Command::new(bin_dir().join("samza-run"))
        .arg(dir.join("job.toml"))
        .args(["--rm", &cluster.rm_url, "--detach"])
        .env(samza_container::env::TOKEN, &cluster.token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Latest value per key of a stream (its keys are UTF-8).
pub fn latest(log: &Log, stream: &str) -> BTreeMap<String, Vec<u8>> {
    let s = log.stream(stream).unwrap();
    let mut out = BTreeMap::new();
    for p in 0..s.partitions() {
        let mut r = s.reader(p, StartAt::Oldest).unwrap();
        loop {
            let c = r.read(1 << 20).unwrap();
            if c.is_empty() {
                break;
            }
            for rec in c.records() {
                let rec = rec.unwrap();
                let k = String::from_utf8(rec.key.unwrap().to_vec()).unwrap();
                out.insert(k, rec.value.unwrap_or_default().to_vec());
            }
        }
    }
    out
}
