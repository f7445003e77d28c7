//! Shared by the tests that run a local cluster: its setup, a copy job over
//! a bounded input, and `samza-run` against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use samza_log::{Log, StartAt};
use samza_scheduler::cli::LocalCluster;
use samza_scheduler::client::Client;
use samza_scheduler::proto::*;
use samza_test_support::{write_stream, JobToml};

pub const JOB: &str = env!("CARGO_BIN_EXE_test-job");

pub fn bin_dir() -> PathBuf {
    samza_test_support::bin_dir(&["samza-rm", "samza-nm", "samza-run", "test-job"])
}

/// Fields drop in order: the cluster (its containers, then daemons) before
/// the directory they use.
pub struct Setup {
    pub cluster: LocalCluster,
    pub log: Log,
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new(nodes: u32) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().join("log")).unwrap();
        let cluster = LocalCluster::start(&bin_dir(), &dir.path().join("cluster"), nodes, 10_000).unwrap();
        Setup { cluster, log, dir }
    }

    pub fn rm(&self) -> Client {
        Client::new(&self.cluster.rm_url, &self.cluster.token)
    }

    /// Input `in`: 2 partitions of `per_partition` messages `p<P>-<i>`.
    pub fn input(&self, per_partition: u64) {
        write_stream(&self.log, "in", 2, per_partition, |p, i| (format!("k{i}"), format!("p{p}-{i}")));
    }

    /// The copy job (task `class`) over `in` on this cluster: 2 containers.
    pub fn job_toml(&self, class: &str) -> JobToml {
        JobToml::new("copy-job", Path::new(JOB), class, &["log.in"])
            .set("job.container-count", 2)
            .set("job.shutdown-timeout-ms", 5000)
            .set("task.commit-ms", 200)
            .set("systems.log.streams.out.partitions", 2)
            .set("cluster.container-memory-mb", 512)
    }

    /// The copy job over the bounded input, written as `job.toml`, with
    /// `extra` appended.
    pub fn job(&self, class: &str, extra: &str) -> PathBuf {
        self.job_toml(class)
            .set("systems.log.streams.in.bounded", true)
            .set("cluster.host-affinity-timeout-ms", 1000)
            .append(extra)
            .write(self.dir.path())
    }

    /// `samza-run ARGS... --rm <this cluster>` with its token.
    pub fn samza_run(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("samza-run"))
            .args(args)
            .args(["--rm", &self.cluster.rm_url])
            .env(samza::env::TOKEN, &self.cluster.token)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    }

    pub fn submit(&self, job: &Path) -> String {
        let out = self.samza_run(&[job.to_str().unwrap(), "--detach"]);
        assert!(out.status.success(), "submit failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Waits until both job containers run with their pids known.
    pub fn wait_running(&self, app: &str) -> AppInfo {
        self.wait(app, "2 running containers", Duration::from_secs(60), |i| {
            running_job_containers(i).iter().filter(|c| c.pid.is_some()).count() == 2
        })
    }

    pub fn app(&self, app: &str) -> AppInfo {
        self.rm().get(&format!("/v1/apps/{app}")).unwrap()
    }

    pub fn wait(
        &self,
        app: &str,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&AppInfo) -> bool,
    ) -> AppInfo {
        let start = Instant::now();
        loop {
            if let Ok(info) = self.rm().get::<AppInfo>(&format!("/v1/apps/{app}")) {
                if ok(&info) {
                    return info;
                }
                if start.elapsed() > timeout {
                    panic!(
                        "timed out waiting for {what}; application now: {}",
                        serde_json::to_string_pretty(&info).unwrap()
                    );
                }
            } else if start.elapsed() > timeout {
                panic!("timed out waiting for {what}; the resource manager does not answer");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn out_count(&self) -> u64 {
        let s = self.log.stream("out").unwrap();
        (0..s.partitions())
            .map(|p| {
                let mut r = s.reader(p, StartAt::Oldest).unwrap();
                let mut n = 0;
                loop {
                    let c = r.read(1 << 20).unwrap();
                    if c.is_empty() {
                        return n;
                    }
                    n += c.records().count() as u64;
                }
            })
            .sum()
    }

    pub fn status_text(&self, app: &str) -> String {
        let out = self.samza_run(&["status", app]);
        assert!(out.status.success(), "samza-run status: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

pub fn running_job_containers(info: &AppInfo) -> Vec<&ContainerInfo> {
    info.containers
        .iter()
        .filter(|c| c.role != Role::Coordinator && c.state == ContainerState::Running)
        .collect()
}

/// Pids of the application's running containers, its coordinator's included.
pub fn running_pids(info: &AppInfo) -> Vec<u32> {
    info.containers.iter().filter(|c| c.state == ContainerState::Running).map(|c| c.pid.unwrap()).collect()
}

pub fn coordinator(info: &AppInfo) -> Option<&ContainerInfo> {
    info.containers.iter().rev().find(|c| c.role == Role::Coordinator && c.attempt == info.attempt)
}

/// A process's environment, from `/proc` (the tests run as root, so they
/// read it also where a job's process made itself non-dumpable).
pub fn environ(pid: u32) -> std::collections::BTreeMap<String, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect()
}

pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}
