//! Helpers shared by the example's end-to-end tests.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use samza_container::layout;
use samza_container::status::ContainerStatus;
use samza_examples::user_of;
use samza_log::{Log, StartAt};

pub const COUNTER: &str = env!("CARGO_BIN_EXE_page-view-counter");

/// The `samza-run` built beside the example's binaries.
pub fn samza_run() -> PathBuf {
    let p = Path::new(COUNTER).parent().unwrap().join("samza-run");
    assert!(p.is_file(), "{} is missing: build it with `cargo build --workspace`", p.display());
    p
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
    ContainerStatus::read(&layout::status_file(&dir.join("state"), "page-view-counter", c))
}

/// `samza-run dir/job.toml --config O...`, its stderr piped.
pub fn run(dir: &Path, overrides: &[&str]) -> Child {
    let mut cmd = Command::new(samza_run());
    cmd.arg(dir.join("job.toml")).stdout(Stdio::null()).stderr(Stdio::piped());
    for o in overrides {
        cmd.args(["--config", o]);
    }
    cmd.spawn().unwrap()
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
