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
const COUNTRIES: [&str; 5] = ["fr", "de", "nl", "se", "pt"];

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

#[test]
fn views_per_country_join_a_bootstrapped_table_with_two_tasks_per_container() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = Log::open(dir.join("log")).unwrap();
    // 4 partitions over 2 containers: two tasks per container.
    for s in ["profiles", "page-views-by-user"] {
        log.create_stream(s, &StreamConfig::with_partitions(4)).unwrap();
    }
    const USERS: u64 = 400;
    const VIEWS: u64 = 30_000;
    let country = |u: u64| COUNTRIES[(u * 7 % 5) as usize];
    let mut p = log.stream("profiles").unwrap().producer();
    // Users 0..390 have a profile; the last ten do not (they count as "unknown").
    for u in 0..USERS - 10 {
        let v = format!(r#"{{"user":"user-{u}","country":"{}"}}"#, country(u));
        p.send(None, Some(format!("user-{u}").as_bytes()), Some(v.as_bytes()), 0, &[]).unwrap();
    }
    p.flush().unwrap();
    let mut truth: BTreeMap<String, i64> = BTreeMap::new();
    let mut p = log.stream("page-views-by-user").unwrap().producer();
    for i in 0..VIEWS {
        let u = samza_examples::user_of(i, USERS);
        let v = format!(r#"{{"user":"user-{u}","page":"/p","time":{i}}}"#);
        p.send(None, Some(format!("user-{u}").as_bytes()), Some(v.as_bytes()), 0, &[]).unwrap();
        let c = if u < USERS - 10 { country(u) } else { "unknown" };
        *truth.entry(c.to_string()).or_default() += 1;
    }
    p.flush().unwrap();

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
    JobToml::new("country-sum", Path::new(COUNTRY_VIEWS), "sum", &["log.country-partials"])
        .set("job.state-dir", "state")
        .set("task.window-ms", 200)
        .set("task.commit-ms", 200)
        .set("systems.log.streams.country-partials.bounded", true)
        .set("systems.log.streams.country-counts.partitions", 2)
        .set("systems.log.streams.country-counts.compacted", true)
        .set("stores.by-country.engine", "rocksdb")
        .set("stores.by-country.changelog", "log.country-sum-changelog")
        .write_to(&dir.join("sum.toml"));
    let out = Command::new(samza_run()).arg(dir.join("sum.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let totals: BTreeMap<String, i64> = latest(&log, "country-counts")
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).unwrap().parse().unwrap()))
        .collect();
    assert_eq!(totals, truth, "every view counted once, under its user's country");
}
