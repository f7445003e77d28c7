//! `samza-run job.toml` on one machine, with real container processes killed
//! with SIGKILL, stopped with SIGINT, and fed broken configuration.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use samza_log::{Log, StartAt};
use samza_test_support::{finish, samza_run, status, values, wait_for, write_stream, JobToml};

const JOB: &str = env!("CARGO_BIN_EXE_test-job");

struct Job {
    dir: tempfile::TempDir,
    log: Log,
}

impl Job {
    /// A job copying `in` (2 partitions, `per_partition` messages each) to
    /// `out`; `extra` is appended to its job file.
    fn new(per_partition: u64, extra: &str) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path().join("log")).unwrap();
        write_stream(&log, "in", 2, per_partition, |p, i| (format!("k{i}"), format!("p{p}-{i}")));
        JobToml::new("copy-job", Path::new(JOB), "copy", &["log.in"])
            .set("job.container-count", 2)
            .set("job.state-dir", "state")
            .set("job.shutdown-timeout-ms", 5000)
            .set("task.commit-ms", 200)
            .set("systems.log.streams.out.partitions", 2)
            .append(extra)
            .write(dir.path());
        Job { dir, log }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("job.toml")
    }

    fn start(&self, overrides: &[&str]) -> Child {
        let mut cmd = Command::new(samza_run());
        cmd.arg(self.path()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for o in overrides {
            cmd.args(["--config", o]);
        }
        cmd.spawn().unwrap()
    }

    fn status(&self, container: u32) -> Option<samza::status::ContainerStatus> {
        status(&self.dir.path().join("state"), "copy-job", container)
    }

    fn values(&self, stream: &str) -> Vec<String> {
        values(&self.log, stream)
    }

    /// Latest checkpoint: (stream, partition) -> next offset.
    fn checkpoints(&self) -> BTreeMap<(String, u32), u64> {
        let mut latest = BTreeMap::new();
        let s = self.log.stream("__samza_checkpoint_copy-job").unwrap();
        let mut r = s.reader(0, StartAt::Oldest).unwrap();
        loop {
            let c = r.read(1 << 20).unwrap();
            if c.is_empty() {
                break;
            }
            for rec in c.records() {
                let rec = rec.unwrap();
                let v: serde_json::Value = serde_json::from_slice(rec.value.unwrap()).unwrap();
                for e in v["offsets"].as_array().unwrap() {
                    latest.insert(
                        (e["stream"].as_str().unwrap().to_string(), e["partition"].as_u64().unwrap() as u32),
                        e["offset"].as_u64().unwrap(),
                    );
                }
            }
        }
        latest
    }
}

#[test]
fn kill_9_of_a_container_then_rerun_processes_every_message_at_least_once() {
    const N: u64 = 60_000;
    let job = Job::new(N, "[systems.log.streams.in]\nbounded = true\n[params]\nsleep-us = 50000\n");
    let child = job.start(&[]);
    // Kill container 0 once it is well into its partition.
    let mut pid = 0;
    wait_for("container 0 to make progress", Duration::from_secs(60), || match job.status(0) {
        Some(s) if s.processed > 5_000 => {
            pid = s.pid as i32;
            true
        }
        _ => false,
    });
    // SAFETY: SIGKILL to the container process this test's samza-run started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let (out, err) = finish(child);
    assert!(!out.status.success(), "samza-run must fail when a container dies: {err}");
    assert!(err.contains("container 0 failed"), "{err}");
    let before = job.checkpoints();
    assert!(before.get(&("in".into(), 0)).copied().unwrap_or(0) < N, "killed mid-stream: {before:?}");

    // Run again: it resumes from the checkpoints and finishes the bounded input.
    let (out, err) = finish(job.start(&["params.sleep-us=0"]));
    assert!(out.status.success(), "{err}");
    assert!(err.contains("job copy-job finished"), "{err}");

    let values = job.values("out");
    let distinct: HashSet<&str> = values.iter().map(String::as_str).collect();
    for p in 0..2 {
        for i in 0..N {
            assert!(distinct.contains(format!("p{p}-{i}").as_str()), "p{p}-{i} was never processed");
        }
    }
    assert_eq!(distinct.len() as u64, 2 * N);
    eprintln!(
        "{} outputs for {} inputs ({} re-processed after the kill)",
        values.len(),
        2 * N,
        values.len() as u64 - 2 * N
    );
    // The checkpoint is exactly where the input ended.
    let cps = job.checkpoints();
    assert_eq!(cps.get(&("in".into(), 0)), Some(&N));
    assert_eq!(cps.get(&("in".into(), 1)), Some(&N));
}

#[test]
fn ctrl_c_stops_cleanly_with_a_final_checkpoint() {
    const N: u64 = 20_000;
    // A long commit interval: only the shutdown commit can write the checkpoint.
    let job = Job::new(N, "");
    let child = job.start(&["task.commit-ms=600000"]);
    wait_for("both containers to read everything", Duration::from_secs(60), || {
        (0..2).all(|c| job.status(c).is_some_and(|s| s.processed == N))
    });
    assert!(job.checkpoints().is_empty(), "no periodic commit yet");
    // SAFETY: SIGINT (Ctrl-C) to the samza-run process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (out, err) = finish(child);
    assert!(out.status.success(), "clean stop: {err}");
    assert!(err.contains("stopping job copy-job"), "{err}");
    let cps = job.checkpoints();
    assert_eq!(cps.get(&("in".into(), 0)), Some(&N), "{cps:?}");
    assert_eq!(cps.get(&("in".into(), 1)), Some(&N), "{cps:?}");
    assert_eq!(job.values("out").len() as u64, 2 * N);

    // Started again, it resumes at the checkpoint: nothing is processed twice.
    let child = job.start(&["task.commit-ms=600000"]);
    wait_for("containers to start", Duration::from_secs(30), || (0..2).all(|c| job.status(c).is_some()));
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (out, err) = finish(child);
    assert!(out.status.success(), "{err}");
    assert_eq!(job.values("out").len() as u64, 2 * N, "resumed exactly at the checkpoint");
}

#[test]
fn a_failing_task_stops_the_run_with_its_error() {
    let job = Job::new(100, "[params]\nfail-on = \"p1-42\"\n");
    let (out, err) = finish(job.start(&["task.class=fail"]));
    assert!(!out.status.success());
    assert!(
        err.contains("task Partition 1 failed processing log.in[1] offset 42: refusing message \"p1-42\""),
        "{err}"
    );
}

#[test]
fn broken_job_files_fail_before_anything_starts() {
    let job = Job::new(1, "");
    let good = std::fs::read_to_string(job.path()).unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (
            "container-count = 2",
            "container-count = \"two\"",
            "job.container-count: TOML parse error at line 3",
        ),
        ("container-count = 2", "container-count = \"two\"", "invalid type: string \"two\", expected u32"),
        (
            "inputs = [\"log.in\"]",
            "inputs = [\"log.nope\"]",
            "input stream log.nope does not exist and declares no partition count",
        ),
        ("class = \"copy\"", "clas = \"copy\"", "unknown field `clas`"),
        (
            "inputs = [\"log.in\"]",
            "inputs = [\"kafka.in\"]",
            "task.inputs[0]: system \"kafka\" is not defined under [systems]",
        ),
        ("inputs = [\"log.in\"]", "inputs = [\"in\"]", "task.inputs[0]: \"in\" is not \"system.stream\""),
        (
            "type = \"embedded-log\"\ndir = \"log\"",
            "type = \"embedded-log\"",
            "systems.log.dir: an embedded-log system needs a directory",
        ),
        ("[job]", "[job\n", "line "),
        ("name = \"copy-job\"", "name = \"copy job\"", "job.name"),
        ("commit-ms = 200", "commit-ms = -5", "commit-ms"),
    ];
    for (from, to, expected) in cases {
        assert!(good.contains(from), "{from}");
        let path = job.dir.path().join("broken.toml");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let out = Command::new(samza_run()).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to}");
        assert!(
            err.contains("broken.toml") && err.contains(expected),
            "{to}: expected {expected:?} in {err}"
        );
        assert_eq!(err.matches("broken.toml").count(), 1, "{to}: said once: {err}");
        assert!(!job.dir.path().join("state").exists(), "{to}: nothing may start");
    }
    let out = Command::new(samza_run())
        .arg(job.path())
        .args(["--config", "job.container-count=0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("job.container-count: must be at least 1"));
    let out = Command::new(samza_run()).arg(job.dir.path().join("missing.toml")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read job config"));
    // A class the binary does not register fails in the container, and the run says so.
    let (out, err) = finish(job.start(&["task.class=nope"]));
    assert!(!out.status.success());
    assert!(
        err.contains("task.class \"nope\" is not registered in this job binary (registered: copy, fail)"),
        "{err}"
    );
}

#[test]
fn a_system_type_the_job_binary_defines_is_checked_and_read_like_a_built_in_one() {
    // test-job registers `sequence`, a system of its own, with samza::main_with_systems.
    let sequence = "[systems.seq]\ntype = \"sequence\"\ncount = 500\npartitions = 2\n[systems.seq.streams.numbers]\nbounded = true\n";
    let job = Job::new(0, sequence);
    let read_seq = ["task.inputs=[\"seq.numbers\"]", "task.checkpoint-system=log"];
    let good = std::fs::read_to_string(job.path()).unwrap();
    // Its section is checked by its own factory, before anything starts, once.
    for (from, to, expected) in [
        ("count = 500", "cuont = 500", "unknown field `cuont`, expected `count` or `partitions`"),
        ("count = 500", "count = \"many\"", "invalid type: string \"many\", expected u64"),
        ("500\npartitions = 2", "500\npartitions = 0", "systems.seq.partitions: must be at least 1"),
        (
            "type = \"sequence\"",
            "type = \"sequense\"",
            "systems.seq.type: unknown system type \"sequense\" (known: embedded-log, kafka, sequence)",
        ),
    ] {
        std::fs::write(job.path(), good.replacen(from, to, 1)).unwrap();
        let (out, err) = finish(job.start(&read_seq));
        assert!(!out.status.success(), "{to}");
        assert_eq!(err.matches(expected).count(), 1, "{to}: expected {expected:?} once in {err}");
        if from == "count = 500" {
            let line = good.lines().position(|l| l == "count = 500").unwrap() + 1;
            assert!(err.contains(&format!("line {line}")), "{to}: the line ({line}) is named: {err}");
        }
        assert!(!job.dir.path().join("state").exists(), "{to}: nothing may start");
    }
    std::fs::write(job.path(), &good).unwrap();
    let (out, err) = finish(job.start(&read_seq));
    assert!(out.status.success(), "{err}");
    let mut values = job.values("out");
    values.sort();
    let mut expected: Vec<String> =
        (0..2).flat_map(|p| (0..500).map(move |i| format!("numbers-{p}-{i}"))).collect();
    expected.sort();
    assert_eq!(values, expected);
}

#[test]
fn a_newer_generation_of_a_container_fences_the_running_one_which_exits_without_committing() {
    const N: u64 = 40_000;
    let job = Job::new(N, "[systems.log.streams.in]\nbounded = true\n[params]\nsleep-us = 100000\n");
    let child = job.start(&[]);
    wait_for("container 0 to make progress", Duration::from_secs(60), || {
        job.status(0).is_some_and(|s| s.processed > 2_000)
    });
    let generation: u64 =
        std::fs::read_to_string(samza::layout::generation_file(&job.dir.path().join("state"), "copy-job"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    // Container 0 started again, as its successor would be: a higher generation.
    let successor = Command::new(JOB)
        .args(["container", "--config"])
        .arg(job.path())
        .args(["--container-id", "0", "--override", "params.sleep-us=0"])
        .env(samza::env::GENERATION, (generation + 1).to_string())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(successor.status.success(), "{}", String::from_utf8_lossy(&successor.stderr));
    let (out, err) = finish(child);
    assert!(!out.status.success(), "the fenced run fails: {err}");
    let fenced = format!("fenced: producer copy-job/container-0 epoch {generation} may no longer write");
    assert!(
        err.contains(&fenced) && err.contains(&format!("epoch {} has taken over", generation + 1)),
        "{err}"
    );
    // In the checkpoint stream the older generation never writes after the newer one.
    let s = job.log.stream("__samza_checkpoint_copy-job").unwrap();
    let mut r = s.reader(0, StartAt::Oldest).unwrap();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let c = r.read(1 << 20).unwrap();
        if c.is_empty() {
            break;
        }
        for rec in c.records() {
            let rec = rec.unwrap();
            let task = String::from_utf8(rec.key.unwrap().to_vec()).unwrap();
            let v: serde_json::Value = serde_json::from_slice(rec.value.unwrap()).unwrap();
            let g = v["generation"].as_u64().unwrap();
            let before = last.insert(task.clone(), g).unwrap_or(0);
            assert!(g >= before, "{task}: generation {g} wrote after {before}");
        }
    }
    assert_eq!(last.get("Partition 0"), Some(&(generation + 1)), "{last:?}");
    // The successor read its partition to the end.
    assert_eq!(job.checkpoints().get(&("in".into(), 0)), Some(&N));
}

/// `package.cargo-bin` names the job's Cargo binary; samza-run asks Cargo
/// where it built it (so `CARGO_TARGET_DIR` and the crate's place do not
/// matter), and says how to build it when it is not there.
#[test]
fn a_job_binary_named_by_cargo_is_found_where_cargo_built_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("log")).unwrap();
    write_stream(&log, "in", 2, 50, |p, i| (format!("k{i}"), format!("p{p}-{i}")));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let job = |bin: &str| {
        JobToml::new("copy-job", Path::new(JOB), "copy", &["log.in"])
            .unset("package.binary")
            .set("package.cargo-bin", bin)
            .set("package.manifest", manifest.to_str().unwrap())
            .set("package.profile", "debug")
            .set("job.state-dir", "state")
            .set("systems.log.streams.in.bounded", true)
            .set("systems.log.streams.out.partitions", 2)
            .write(dir.path())
    };
    let path = job("test-job");
    let (out, err) = finish(Command::new(samza_run()).arg(&path).stderr(Stdio::piped()).spawn().unwrap());
    assert!(out.status.success(), "{err}");
    assert_eq!(values(&log, "out").len(), 100);

    let path = job("no-such-job");
    let (out, err) = finish(Command::new(samza_run()).arg(&path).stderr(Stdio::piped()).spawn().unwrap());
    assert!(!out.status.success());
    assert!(
        err.contains("package.cargo-bin")
            && err.contains("/debug/no-such-job does not exist (cargo build --bin no-such-job)"),
        "{err}"
    );
}
