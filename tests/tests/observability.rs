//! Metrics and the dashboard on a real local cluster: the Prometheus
//! endpoints of a container, the job's coordinator, the resource manager and
//! the node managers count what was really processed; the dashboard, loaded
//! in headless Chromium, shows the real nodes, job and containers.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use samza_log::{BatchBuilder, StreamConfig};
use samza_scheduler::proto::*;

/// An unbounded copy job (it keeps running once the input is consumed).
fn live_job(s: &Setup) -> PathBuf {
    s.job_toml("copy")
        .set("metrics.snapshot-stream", "log.metrics")
        .set("metrics.snapshot-interval-ms", 300)
        .write(s.dir.path())
}

fn append(s: &Setup, partition: u32, n: u64) {
    let input = s.log.stream("in").unwrap();
    let mut w = input.writer(partition).unwrap();
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(Some(format!("k{i}").as_bytes()), Some(b"v"), 0, &[]);
    }
    w.append(&mut b).unwrap();
}

/// The latest JSON value per key of a stream.
fn latest_values(s: &Setup, stream: &str) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let Ok(st) = s.log.stream(stream) else {
        return out;
    };
    for p in 0..st.partitions() {
        let mut r = st.reader(p, samza_log::StartAt::Oldest).unwrap();
        loop {
            let c = r.read(1 << 20).unwrap();
            if c.is_empty() {
                break;
            }
            for rec in c.records() {
                let rec = rec.unwrap();
                let k = String::from_utf8(rec.key.unwrap().to_vec()).unwrap();
                out.insert(k, serde_json::from_slice(rec.value.as_deref().unwrap()).unwrap());
            }
        }
    }
    out
}

fn get_text(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::blocking::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Series of `name` in Prometheus text: labels -> value.
fn series(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, labels) = key.split_once('{').map_or((key, ""), |(n, l)| (n, l.trim_end_matches('}')));
            (n == name).then(|| (labels.to_string(), value.parse().unwrap()))
        })
        .collect()
}

fn total(text: &str, name: &str) -> f64 {
    series(text, name).values().sum()
}

fn wait_metrics(s: &Setup, app: &str, what: &str, ok: impl Fn(&JobMetrics) -> bool) -> JobMetrics {
    let start = Instant::now();
    loop {
        let m = s.rm().get::<JobMetrics>(&format!("/v1/apps/{app}/metrics"));
        if let Ok(m) = &m {
            if ok(m) {
                return m.clone();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}: {m:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prometheus_endpoints_count_what_was_processed() {
    let s = Setup::new(2);
    s.log.create_stream("in", &StreamConfig::with_partitions(2)).unwrap();
    append(&s, 0, 1200);
    append(&s, 1, 800);
    let app = s.submit(&live_job(&s));
    s.wait_running(&app);
    let m = wait_metrics(&s, &app, "2000 processed, no lag", |m| {
        m.processed == 2000 && m.lag == 0 && m.containers.len() == 2
    });

    // Each container: its partitions' counts, the task's own metric, latencies.
    let token = s.cluster.token.as_str();
    let mut per_ssp = BTreeMap::new();
    for c in m.containers.values() {
        let url = c.url.as_deref().expect("containers report their metrics address");
        assert_eq!(get_text(&format!("{url}/metrics"), None).0, 401, "the token is required");
        let (code, text) = get_text(&format!("{url}/metrics"), Some(token));
        assert_eq!(code, 200);
        for (labels, v) in series(&text, "samza_ssp_processed_total") {
            assert!(labels.contains("job=\"copy-job\""), "{labels}");
            per_ssp.insert(labels.split("ssp=\"").nth(1).unwrap().split('"').next().unwrap().to_string(), v);
        }
        assert_eq!(total(&text, "samza_copy_copied_total"), total(&text, "samza_container_processed_total"));
        assert_eq!(total(&text, "samza_ssp_lag"), 0.0, "{text}");
        assert!(total(&text, "samza_container_commit_seconds_count") >= 1.0, "{text}");
        assert!(total(&text, "samza_container_process_seconds_count") >= 1.0, "{text}");
    }
    assert_eq!(
        per_ssp,
        BTreeMap::from([("log.in[0]".to_string(), 1200.0), ("log.in[1]".to_string(), 800.0)])
    );

    // More input: counted live, at the coordinator and through the RM.
    append(&s, 1, 500);
    wait_metrics(&s, &app, "2500 processed", |m| m.processed == 2500 && m.lag == 0);
    let info = s.app(&app);
    let url = info.coordinator_state.as_ref().and_then(|s| s.url.as_deref()).unwrap();
    let (_, text) = get_text(&format!("{url}/metrics"), Some(token));
    assert_eq!(series(&text, "samza_job_processed_total")["job=\"copy-job\""], 2500.0, "{text}");
    assert_eq!(total(&text, "samza_ssp_processed_total"), 2500.0, "{text}");

    let (code, text) = get_text(&format!("{}/metrics", s.cluster.rm_url), Some(token));
    assert_eq!(code, 200);
    assert_eq!(series(&text, "samza_rm_nodes")["state=\"running\""], 2.0, "{text}");
    assert_eq!(series(&text, "samza_rm_apps")["state=\"running\""], 1.0, "{text}");
    assert_eq!(total(&text, "samza_rm_containers_running"), 3.0, "coordinator and 2 containers: {text}");
    assert!(total(&text, "samza_rm_allocate_seconds_count") >= 1.0, "{text}");
    assert_eq!(get_text(&format!("{}/metrics", s.cluster.rm_url), None).0, 401);

    // The snapshot stream: each container's latest snapshot counts its partitions.
    let start = Instant::now();
    loop {
        let snapshots = latest_values(&s, "metrics");
        let processed: i64 = snapshots
            .values()
            .map(|v| {
                let snap: samza_task_api::metrics::Snapshot =
                    serde_json::from_value(v["metrics"].clone()).unwrap();
                snap.sum("ssp.processed")
            })
            .sum();
        if snapshots.len() == 2 && processed == 2500 {
            assert!(snapshots.contains_key("copy-job/0") && snapshots.contains_key("copy-job/1"));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "snapshots: {snapshots:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // samza-run status: the job's figures, humanised; scripts get JSON.
    let text = s.status_text(&app);
    assert!(text.contains("processed 2,500  lag 0"), "{text}");
    let out = s.samza_run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.starts_with(&app)).unwrap();
    let cols: Vec<&str> = row.split("  ").filter(|c| !c.is_empty()).map(str::trim).collect();
    assert_eq!(&cols[..7], [app.as_str(), "copy-job", "RUNNING", "1", "3 running", "2,500", "0"], "{text}");
    let out = s.samza_run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["apps"][0]["app"], app.as_str());
    assert_eq!(s.samza_run(&["status", "app-9999"]).status.code(), Some(3), "unknown application");

    // Logs name the job, container and task in each line's fields.
    let log = String::from_utf8(s.samza_run(&["logs", &app, "0"]).stdout).unwrap();
    let prefix = format!("container{{job=copy-job container=0 app={app}}}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() > 3 && lines.iter().all(|l| l.contains(&prefix)),
        "every line names its container: {log}"
    );
    assert!(log.contains(&format!("{prefix}:task{{task=Partition 0}}: ")), "{log}");
    let log = String::from_utf8(s.samza_run(&["logs", &app]).stdout).unwrap();
    assert!(log.contains(&format!("coordinator{{job=copy-job app={app} attempt=1}}: ")), "{log}");

    let nodes: Vec<NodeInfo> = s.rm().get("/v1/nodes").unwrap();
    let launches: f64 = nodes
        .iter()
        .map(|n| total(&get_text(&format!("{}/metrics", n.url), Some(token)).1, "samza_nm_launches_total"))
        .sum();
    assert_eq!(launches, 3.0, "coordinator and 2 containers");
}

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .filter_map(|b| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join(b))
                .find(|p| p.is_file())
        })
        .next()
        .expect("the dashboard test needs Chromium (Debian package `chromium`, installed by .ci/run)")
}

fn headless(dir: &std::path::Path, args: &[&str], url: &str) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.display()))
        .args(["--virtual-time-budget=15000", "--window-size=1400,1100"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_shows_the_real_nodes_job_and_containers() {
    let s = Setup::new(2);
    s.log.create_stream("in", &StreamConfig::with_partitions(2)).unwrap();
    append(&s, 0, 1000);
    append(&s, 1, 1000);
    let app = s.submit(&live_job(&s));
    let info = s.wait_running(&app);
    wait_metrics(&s, &app, "2000 processed", |m| m.processed == 2000);
    let profile = tempfile::tempdir().unwrap();

    // Without the token the page asks for it and shows nothing.
    let dom = headless(profile.path(), &["--dump-dom"], &s.cluster.rm_url);
    assert!(dom.contains("Cluster token"), "{dom}");
    assert!(!dom.contains(&app), "no data without the token");

    let url = format!("{}/#token={}", s.cluster.rm_url, s.cluster.token);
    let dom = headless(profile.path(), &["--dump-dom"], &url);
    assert!(dom.contains("data-loaded=\"true\""), "the page did not load its data: {dom}");
    let nodes: Vec<NodeInfo> = s.rm().get("/v1/nodes").unwrap();
    assert_eq!(nodes.len(), 2);
    for n in &nodes {
        assert!(dom.contains(&format!("<td>{}</td>", n.node)), "node {} missing: {dom}", n.node);
    }
    assert!(dom.contains("nodes <b>2</b>/2"), "{dom}");
    assert!(dom.contains(&format!(
        "<td>{app}</td><td>copy-job</td><td><span class=\"state RUNNING\">RUNNING</span>"
    )));
    for c in info.containers.iter().filter(|c| c.state == ContainerState::Running) {
        let row = format!("<td>{}</td><td>{app}</td><td>{}</td><td>{}</td>", c.id, c.role, c.node);
        assert!(dom.contains(&row), "container row {row} missing: {dom}");
    }
    assert!(dom.contains("containers running <b>3</b>"), "{dom}");
    // Each job container's own figures: its partition's 1000 messages, no lag.
    for c in
        info.containers.iter().filter(|c| c.state == ContainerState::Running && c.role != Role::Coordinator)
    {
        let row = format!(
            r#"<td class="num">{}</td><td class="num">1000</td><td class="num">0</td>"#,
            c.pid.unwrap()
        );
        assert!(dom.contains(&row), "container {} figures: {dom}", c.id);
    }
    // msg/s (needs two polls: 0 now the input is consumed), processed, lag.
    assert!(
        dom.contains(r#"<td class="num">0</td><td class="num">2000</td><td class="num">0</td>"#),
        "the job's figures: {dom}"
    );
    assert!(dom.contains("<canvas"), "a chart per running job: {dom}");
    assert!(dom.contains("submitted job copy-job"), "events: {dom}");
    assert!(dom.contains("container 0 allocated"), "events: {dom}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(profile.path(), &[&format!("--screenshot={}", shot.display())], &url);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot {}", shot.display());
    eprintln!("dashboard screenshot: {}", shot.display());
}
