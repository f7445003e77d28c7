//! The join example (`country-views`): page views joined with a
//! bootstrapped profile table, counted per country in partials by one job
//! with two tasks per container, and summed by a second; the totals equal
//! the truth, and no view of a user with a profile counts as `unknown`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{latest, samza_run};
use samza_log::{Log, StreamConfig};
use samza_test_support::JobToml;

const COUNTRY_VIEWS: &str = env!("CARGO_BIN_EXE_country-views");

fn join_job() -> JobToml {
    JobToml::new(
        "country-join",
        Path::new(COUNTRY_VIEWS),
        "join",
        &["log.page-views-by-user", "log.profiles"],
    )
    .set("job.container-count", 2)
    .set("job.state-dir", "state")
    .set("task.window-ms", 200)
    .set("task.commit-ms", 200)
    .set("systems.log.streams.page-views-by-user.bounded", true)
    .set("systems.log.streams.profiles.bounded", true)
    .set("systems.log.streams.profiles.bootstrap", true)
    .set("systems.log.streams.country-partials.partitions", 2)
    .set("stores.profiles.engine", "rocksdb")
    .set("stores.profiles.changelog", "log.country-join-profiles")
    .set("stores.partials.engine", "rocksdb")
    .set("stores.partials.changelog", "log.country-join-partials")
}

const USERS: u64 = 400;
const VIEWS: u64 = 30_000;

/// The profile of user `u`, as `page-view-gen --profiles` writes it.
fn profile(u: u64) -> Option<String> {
    samza_examples::country_of(u).map(|c| format!(r#"{{"user":"user-{u}","country":"{c}"}}"#))
}

/// Page view `i` (its user, the JSON).
fn view(i: u64) -> (String, String) {
    let u = samza_examples::user_of(i, USERS);
    (format!("user-{u}"), format!(r#"{{"user":"user-{u}","page":"/p","time":{i}}}"#))
}

/// The reference (`page-view-gen --reference-countries`).
fn truth() -> BTreeMap<String, i64> {
    let truth = samza_examples::views_per_country(0, VIEWS, USERS);
    assert!(truth["unknown"] > 0 && truth.len() == 6, "every country and users without a profile: {truth:?}");
    truth
}

/// Profiles and page views, 4 partitions each, into the embedded log.
fn write_inputs(log: &Log) {
    for s in ["profiles", "page-views-by-user"] {
        log.create_stream(s, &StreamConfig::with_partitions(4)).unwrap();
    }
    let mut p = log.stream("profiles").unwrap().producer();
    for u in 0..USERS {
        if let Some(v) = profile(u) {
            p.send(None, Some(format!("user-{u}").as_bytes()), Some(v.as_bytes()), 0, &[]).unwrap();
        }
    }
    p.flush().unwrap();
    let mut p = log.stream("page-views-by-user").unwrap().producer();
    for i in 0..VIEWS {
        let (user, v) = view(i);
        p.send(None, Some(user.as_bytes()), Some(v.as_bytes()), 0, &[]).unwrap();
    }
    p.flush().unwrap();
}

fn sum_job() -> JobToml {
    JobToml::new("country-sum", Path::new(COUNTRY_VIEWS), "sum", &["log.country-partials"])
        .set("job.state-dir", "state")
        .set("task.window-ms", 200)
        .set("task.commit-ms", 200)
        .set("systems.log.streams.country-partials.bounded", true)
        .set("systems.log.streams.country-counts.partitions", 2)
        .set("systems.log.streams.country-counts.compacted", true)
        .set("stores.by-country.engine", "rocksdb")
        .set("stores.by-country.changelog", "log.country-sum-changelog")
}

fn totals(log: &Log) -> BTreeMap<String, i64> {
    latest(log, "country-counts")
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap().parse().unwrap()))
        .collect()
}

#[test]
fn views_per_country_join_a_bootstrapped_table_with_two_tasks_per_container() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    // 4 partitions over 2 containers: two tasks per container.
    write_inputs(&log);
    let truth = truth();

    // The example's own job files say what the test runs (paths aside).
    for f in ["country-join.toml", "country-sum.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs").join(f);
        samza_container::config::JobConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    // Job one: two tasks per container, each loading its profile partition
    // before it joins a view.
    join_job().write_to(&dir.join("join.toml"));
    let out = Command::new(samza_run()).arg(dir.join("join.toml")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for c in 0..2 {
        let log = std::fs::read_to_string(dir.join(format!("state/country-join/container-{c}.log"))).unwrap();
        assert_eq!(log.matches("profiles loaded; joining page views").count(), 2, "container {c}: {log}");
    }

    // Job two sums the partials.
    sum_job().write_to(&dir.join("sum.toml"));
    let out = Command::new(samza_run()).arg(dir.join("sum.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&log), truth, "every view counted once, under its user's country");
}

/// Both jobs on a local cluster (a resource manager and three node managers):
/// submitted one after the other, each to SUCCEEDED, with exact totals.
#[test]
fn views_per_country_on_a_local_cluster_with_exact_totals() {
    use samza_scheduler::proto::AppState;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    write_inputs(&log);
    let log_dir = dir.join("log");
    let cluster =
        samza_scheduler::cli::LocalCluster::start(&common::bin_dir(), &dir.join("cluster"), 3, 10_000)
            .unwrap();
    let rm = samza_scheduler::client::Client::new(&cluster.rm_url, &cluster.token);
    for (name, job) in [("join", join_job()), ("sum", sum_job())] {
        let job_dir = dir.join(name);
        std::fs::create_dir_all(&job_dir).unwrap();
        job.set("systems.log.dir", log_dir.to_str().unwrap())
            .set("cluster.container-memory-mb", 512)
            .write(&job_dir);
        let app = common::submit(&cluster, &job_dir);
        let start = std::time::Instant::now();
        let info = loop {
            let info: samza_scheduler::proto::AppInfo = rm.get(&format!("/v1/apps/{app}")).unwrap();
            if info.state.is_final() {
                break info;
            }
            assert!(start.elapsed() < std::time::Duration::from_secs(120), "{name}: {:#?}", info.events);
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        assert_eq!(info.state, AppState::Succeeded, "{name}: {:#?}", info.events);
    }
    assert_eq!(totals(&log), truth(), "every view counted once, under its user's country");
}

/// Both jobs as one pipeline in the test harness: the profiles a bootstrap
/// input of higher priority, the stores as the job files declare them.
#[test]
fn views_per_country_as_a_pipeline_in_the_test_harness() {
    use samza::testing::{Msg, TestJob, TestPipeline};
    let p = TestPipeline::new();
    p.stream("profiles", 4)
        .stream("page-views-by-user", 4)
        .stream("country-partials", 2)
        .stream("country-counts", 2);
    for u in 0..USERS {
        if let Some(v) = profile(u) {
            p.send("profiles", Msg::text(v).key(format!("user-{u}")));
        }
    }
    for i in 0..VIEWS {
        let (user, v) = view(i);
        p.send("page-views-by-user", Msg::text(v).key(user).at(i as i64));
    }
    let tasks = samza_examples::country_views::tasks();
    let join = TestJob::new("country-join", tasks.clone(), "join")
        .bootstrap_input("profiles")
        .priority("profiles", 1)
        .input("page-views-by-user")
        .store("profiles", "rocksdb")
        .store("partials", "in-memory")
        .window_ms(200)
        .containers(2)
        .set("params.output", "mem.country-partials");
    p.run(&join).unwrap();
    let sum = TestJob::new("country-sum", tasks, "sum")
        .input("country-partials")
        .store("by-country", "in-memory")
        .window_ms(200)
        .set("params.output", "mem.country-counts");
    p.run(&sum).unwrap();
    let totals: BTreeMap<String, i64> = p
        .latest("country-counts", samza::StringSerde, samza::StringSerde)
        .into_iter()
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(totals, truth());
    // No view met a missing profile: "unknown" counts only the ten users without one.
    let partials: Vec<(Option<String>, serde_json::Value)> =
        p.read("country-partials", samza::StringSerde, samza::JsonSerde);
    assert!(partials.iter().all(|(k, v)| v["country"] == k.as_deref().unwrap()));
}
