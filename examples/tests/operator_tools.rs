//! Operator tools on the page-view counter, with real processes: read a
//! user's count from a task's store on disk, show the tasks' checkpoints, set
//! one to replay a partition (refused while the job runs), and, on a local
//! cluster, read counts from the running job's stores over HTTP (queryable
//! state, routed to the container that owns the user's partition).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{bin_dir, counter_job, produce};
use samza_log::{Log, StreamConfig};
use samza_scheduler::cli::LocalCluster;
use samza_scheduler::client::Client;
use samza_scheduler::proto::*;

fn job_toml(dir: &Path, bounded: bool) {
    counter_job()
        .set("job.state-dir", "state")
        .set("job.shutdown-timeout-ms", 5000)
        .set("systems.log.streams.page-views-by-user.bounded", bounded)
        .set("stores.counts.key-serde", "string")
        .set("stores.counts.msg-serde", "i64")
        .set("cluster.container-memory-mb", 512)
        .write(dir);
}

fn samza_run(args: &[&str]) -> Output {
    Command::new(common::samza_run()).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}: {}", o.status.code(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn partition_of(user: &str) -> u32 {
    samza_task_api::partition_for_key(user.as_bytes(), 4)
}

#[test]
fn stores_and_checkpoints_are_read_and_a_checkpoint_set_replays_its_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4)).unwrap();
    let mut truth = HashMap::new();
    produce(&log, 0, 4000, 50, &mut truth);
    job_toml(dir, true);
    let job = dir.join("job.toml");
    let job = job.to_str().unwrap();
    stdout(&samza_run(&[job]));

    // Every user's count from the store on disk, the owner found by partition.
    for (user, n) in &truth {
        assert_eq!(
            stdout(&samza_run(&["store", "get", job, "counts", user])).trim(),
            n.to_string(),
            "{user}"
        );
    }
    let o = samza_run(&["store", "get", job, "counts", "user-nobody"]);
    assert_eq!(o.status.code(), Some(3), "not found: {}", String::from_utf8_lossy(&o.stderr));
    let u0 = truth.keys().find(|u| partition_of(u) == 0).unwrap().clone();
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&samza_run(&["store", "get", job, "counts", &u0, "--json"]))).unwrap();
    assert_eq!(v["task"], "Partition 0");

    // Checkpoints: every partition read to its end.
    let cps: serde_json::Value =
        serde_json::from_str(&stdout(&samza_run(&["checkpoint", "show", job, "--json"]))).unwrap();
    let input = log.stream("page-views-by-user").unwrap();
    for p in 0..4u32 {
        let end = input.partition_info(p).unwrap().upcoming;
        let offsets = cps[format!("Partition {p}")]["offsets"].as_array().unwrap();
        assert_eq!(offsets.len(), 1);
        assert_eq!(offsets[0]["offset"], end, "partition {p}");
    }
    let table = stdout(&samza_run(&["checkpoint", "show", job]));
    assert!(table.starts_with("TASK"), "{table}");
    assert!(table.contains("log.page-views-by-user[0]"), "{table}");

    // Bad requests name what is wrong and change nothing.
    let o = samza_run(&["checkpoint", "set", job, "--task", "Partition 0", "log.page-views-by-user[1]=0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not read log.page-views-by-user[1]"));
    let o =
        samza_run(&["checkpoint", "set", job, "--task", "Partition 0", "log.page-views-by-user[0]=999999"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("outside its retained range"), "{o:?}");

    // Replay partition 0 from its start: its users are counted twice.
    let o = stdout(&samza_run(&[
        "checkpoint",
        "set",
        job,
        "--task",
        "Partition 0",
        "log.page-views-by-user[0]=0",
    ]));
    assert_eq!(o.trim(), "Partition 0  log.page-views-by-user[0]  0");
    stdout(&samza_run(&[job]));
    for (user, n) in &truth {
        let want = if partition_of(user) == 0 { 2 * n } else { *n };
        assert_eq!(
            stdout(&samza_run(&["store", "get", job, "counts", user])).trim(),
            want.to_string(),
            "{user}"
        );
    }

    // Refused while the job runs here.
    job_toml(dir, false);
    let status = samza_container::layout::status_file(&dir.join("state"), "page-view-counter", 0);
    std::fs::remove_file(&status).unwrap();
    let mut running = Command::new(common::samza_run())
        .arg(job)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !status.is_file() {
        assert!(start.elapsed() < Duration::from_secs(30), "the job did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = samza_run(&["checkpoint", "set", job, "--task", "Partition 0", "log.page-views-by-user[0]=0"]);
    // On one machine too, containers serve their metrics behind this run's token.
    let url = std::fs::read_to_string(status.with_extension("url")).unwrap();
    let token = std::fs::read_to_string(dir.join("state/page-view-counter/token")).unwrap();
    let http = reqwest::blocking::Client::new();
    let metrics = http.get(format!("{url}/metrics")).bearer_auth(&token).send().unwrap().text().unwrap();
    let unauthorised = http.get(format!("{url}/metrics")).send().unwrap().status().as_u16();
    // SAFETY: the samza-run this test started; SIGTERM stops its containers cleanly.
    unsafe { libc::kill(running.id() as i32, libc::SIGTERM) };
    running.wait().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is running here"));
    let text = metrics;
    assert!(text.contains("samza_ssp_processed_total{job=\"page-view-counter\",container=\"0\""), "{text}");
    assert_eq!(unauthorised, 401);
}

#[test]
fn a_running_jobs_counts_are_queried_from_the_container_that_owns_each_user() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    log.create_stream("page-views-by-user", &StreamConfig::with_partitions(4)).unwrap();
    let mut truth = HashMap::new();
    produce(&log, 0, 3000, 50, &mut truth);
    job_toml(dir, false);
    let cluster = LocalCluster::start(&bin_dir(), &dir.join("cluster"), 2, 10_000).unwrap();
    let rm = Client::new(&cluster.rm_url, &cluster.token);
    let query = |args: &[&str]| {
        Command::new(common::samza_run())
            .arg("query")
            .args(args)
            .args(["--rm", &cluster.rm_url])
            .env(samza_container::env::TOKEN, &cluster.token)
            .output()
            .unwrap()
    };
    let out = Command::new(common::samza_run())
        .args([dir.join("job.toml").to_str().unwrap(), "--rm", &cluster.rm_url, "--detach"])
        .env(samza_container::env::TOKEN, &cluster.token)
        .output()
        .unwrap();
    let app = stdout(&out).trim().to_string();
    let wait_processed = |n: u64| {
        let start = Instant::now();
        loop {
            let m = rm.get::<JobMetrics>(&format!("/v1/apps/{app}/metrics"));
            if m.as_ref().is_ok_and(|m| m.processed == n && m.lag == 0 && m.containers.len() == 2) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "job did not process {n}: {m:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_processed(3000);
    let info: AppInfo = rm.get(&format!("/v1/apps/{app}")).unwrap();
    for (user, n) in &truth {
        let v: serde_json::Value =
            serde_json::from_str(&stdout(&query(&[&app, "counts", user, "--json"]))).unwrap();
        assert_eq!(v["value"], *n, "{user}");
        assert_eq!(v["task"], format!("Partition {}", partition_of(user)), "{user}");
    }
    assert_eq!(query(&[&app, "counts", "user-nobody"]).status.code(), Some(3));
    let o = query(&[&app, "nostore", "user-1"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no store \"nostore\""), "{o:?}");

    // Live: more views of one user are visible as soon as they are processed.
    let user = truth.keys().next().unwrap().clone();
    let mut p = log.stream("page-views-by-user").unwrap().producer();
    for i in 0..25 {
        p.send(None, Some(user.as_bytes()), Some(br#"{"user":"x","page":"/p","time":0}"#), i, &[]).unwrap();
    }
    p.flush().unwrap();
    wait_processed(3025);
    assert_eq!(stdout(&query(&[&app, "counts", &user])).trim(), (truth[&user] + 25).to_string());
    let _: AppInfo = rm.post(&format!("/v1/apps/{app}/kill"), &serde_json::json!({})).unwrap();
    drop(info);
}
