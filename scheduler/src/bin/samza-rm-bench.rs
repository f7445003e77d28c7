//! Load benchmark of the resource manager: a real `samza-rm` process, and
//! simulated nodes (no process per node) that register and heartbeat at 1 Hz,
//! while a simulated coordinator allocates and releases containers. Prints
//! p50 / p99 / max latency of heartbeats and allocations; asserts nothing.
//!
//! ```text
//! samza-rm-bench [--nodes 10000] [--seconds 20] [--rm-bin target/release/samza-rm]
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use samza_scheduler::proto::*;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nodes: usize = arg("--nodes").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seconds: u64 = arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(20);
    let exe = std::env::current_exe()?;
    let rm_bin = arg("--rm-bin").map_or_else(|| exe.parent().unwrap().join("samza-rm"), Into::into);
    let dir = std::env::temp_dir().join(format!("samza-rm-bench-{}", std::process::id()));
    let rm_dir = dir.join("rm");
    let mut rm = tokio::process::Command::new(&rm_bin)
        .args(["--bind", "127.0.0.1:0", "--node-timeout-ms", "10000", "--dir"])
        .arg(&rm_dir)
        .env(samza_container::env::LOG, "warn")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", rm_bin.display()))?;
    let start = Instant::now();
    let url = loop {
        if let Ok(u) = std::fs::read_to_string(rm_dir.join("rm.url")) {
            break u.trim().to_string();
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "samza-rm did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let token = std::fs::read_to_string(rm_dir.join("token"))?.trim().to_string();

    // One endpoint that accepts launches for every simulated node.
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fake_url = format!("http://{}", fake.local_addr()?);
    let app = axum::Router::new().route(
        "/v1/containers",
        axum::routing::post(|axum::Json(l): axum::Json<Launch>| async move {
            let c = NodeContainer {
                id: l.container,
                app: l.app,
                state: ContainerState::Running,
                pid: Some(1),
                exit_code: None,
                reason: None,
                resources: l.resources,
            };
            (axum::http::StatusCode::CREATED, axum::Json(c))
        }),
    );
    tokio::spawn(async move { axum::serve(fake, app).await });

    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    println!(
        "# samza-rm under {nodes} simulated nodes heartbeating at 1 Hz for {seconds} s, plus allocations"
    );
    let t = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut regs = Vec::new();
    for i in 0..nodes {
        let (http, url, token, fake_url, sem) =
            (http.clone(), url.clone(), token.clone(), fake_url.clone(), sem.clone());
        regs.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let reg = RegisterNode {
                node: format!("sim-{i:05}"),
                url: fake_url,
                capacity: Resources { memory_mb: 65536, vcores: 32 },
                containers: vec![],
            };
            http.post(format!("{url}/v1/nodes"))
                .bearer_auth(&token)
                .json(&reg)
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(())
        }));
    }
    for r in regs {
        r.await??;
    }
    println!("registered {nodes} nodes in {:.2} s", t.elapsed().as_secs_f64());

    let hb_lat = Arc::new(Mutex::new(Vec::<u64>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..nodes {
        let (http, url, token, lat, errors) =
            (http.clone(), url.clone(), token.clone(), hb_lat.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the nodes over the second.
            tokio::time::sleep(Duration::from_micros((i as u64 * 1_000_000) / nodes as u64)).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let body = NodeHeartbeat { containers: vec![] };
            let path = format!("{url}/v1/nodes/sim-{i:05}/heartbeat");
            let mut mine = Vec::new();
            while Instant::now() < deadline {
                tick.tick().await;
                let t = Instant::now();
                let r = http.post(&path).bearer_auth(&token).json(&body).send().await;
                match r.map(|r| r.status().is_success()) {
                    Ok(true) => mine.push(t.elapsed().as_micros() as u64),
                    _ => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            lat.lock().unwrap().extend(mine);
        }));
    }

    // A coordinator allocating and releasing one container at a time.
    let pkg = b"#!/bin/sh\nexit 0\n".to_vec();
    let sha = samza_scheduler::auth::sha256_hex(&pkg);
    http.put(format!("{url}/v1/packages/{sha}"))
        .bearer_auth(&token)
        .body(pkg)
        .send()
        .await?
        .error_for_status()?;
    let submit = Submit {
        name: "bench".into(),
        config: String::new(),
        base_dir: "/".into(),
        overrides: vec![],
        package_sha256: sha,
        coordinator: Resources { memory_mb: 64, vcores: 1 },
    };
    let app: Submitted = http
        .post(format!("{url}/v1/apps"))
        .bearer_auth(&token)
        .json(&submit)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut alloc_lat = Vec::new();
    let mut release: Vec<String> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let req = Allocate {
            attempt: 1,
            asks: vec![Ask {
                role: Role::Container((n % 16) as u32),
                resources: Resources { memory_mb: 1024, vcores: 1 },
                // Half the asks prefer a node (host affinity), half take any.
                preferred_node: (n % 2 == 0).then(|| format!("sim-{:05}", n as usize % nodes)),
                relax_after_ms: 0,
            }],
            release: std::mem::take(&mut release),
        };
        n += 1;
        let t = Instant::now();
        let r = http
            .post(format!("{url}/v1/apps/{}/allocate", app.app))
            .bearer_auth(&token)
            .json(&req)
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            anyhow::bail!("allocate: {status}: {}", r.text().await.unwrap_or_default());
        }
        let reply: AllocateReply = r.json().await?;
        alloc_lat.push(t.elapsed().as_micros() as u64);
        release.extend(reply.allocated.into_iter().map(|a| a.container));
    }
    for t in tasks {
        t.await?;
    }
    let mut hb = std::mem::take(&mut *hb_lat.lock().unwrap());
    let count = hb.len();
    println!(
        "heartbeats: {count} ok ({:.0}/s), {} errors; latency ms p50 {:.2} p99 {:.2} max {:.2}",
        count as f64 / seconds as f64,
        errors.load(std::sync::atomic::Ordering::Relaxed),
        pct(&mut hb, 0.5),
        pct(&mut hb, 0.99),
        pct(&mut hb, 1.0)
    );
    let an = alloc_lat.len();
    println!(
        "allocations: {an}; latency ms p50 {:.2} p99 {:.2} max {:.2}",
        pct(&mut alloc_lat, 0.5),
        pct(&mut alloc_lat, 0.99),
        pct(&mut alloc_lat, 1.0)
    );
    rm.kill().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
