//! The job coordinator (the ApplicationMaster analogue), run from the job
//! binary as `<job-binary> coordinator` by a node manager at the resource
//! manager's request.
//!
//! It computes the JobModel from the config and the inputs' partition counts,
//! asks the resource manager for `job.container-count` containers, starts
//! each through the node manager it was allocated on, and watches them:
//!
//! - a container that exits non-zero is a failure: it is started again,
//!   preferring its last node (its local state is there) for
//!   `cluster.host-affinity-timeout-ms`, then any node; after
//!   `cluster.retry-count` failures within `cluster.retry-window-ms` the job
//!   is FAILED with the reason;
//! - a container lost with its node is started elsewhere and does not count
//!   against the budget;
//! - a container that exits 0 (bounded input done) is finished; when all are,
//!   the job SUCCEEDED.
//!
//! Its own state (which container runs which job container, failures) is kept
//! at the resource manager, so a new attempt after this one dies adopts the
//! running containers instead of restarting them.
//!
//! One owner per task (DESIGN invariant 9): every start of a job container
//! gets a generation above all earlier ones (kept in that state, so attempts
//! continue it), which its producers use as their epoch. The coordinator
//! keys heartbeats by cluster container: only the job container's current
//! owner has its lease renewed (see `samza_container::lease`), and only while
//! its node is heard from; any other sender is told to stop. A successor is
//! started once the old owner is known to have ended, or once the last lease
//! it could hold has run out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use samza_container::config::JobConfig;
use samza_container::entry::{ContainerEndpoint, Joined};
use samza_container::env as envs;
use samza_container::job_model::JobModel;
use samza_container::lease::Lease;
use samza_container::systems::SystemRegistry;
use samza_task_api::metrics::Snapshot;

use crate::client::{Client, HttpError};
use crate::now_ms;
use crate::proto::*;

mod plan;

use plan::{Action, Event, Plan, Policy};

/// Who owns a job container's tasks now, as far as this coordinator decides.
struct Owner {
    container: String,
    node: String,
}

/// The leases this coordinator grants: owners, their last heartbeats, and
/// what it knows of their nodes. One lock, so a container that loses its
/// ownership can never be granted a lease after that moment.
struct Leases {
    owners: BTreeMap<u32, Owner>,
    /// Job container number -> its owner's last heartbeat.
    beats: BTreeMap<u32, Beat>,
    /// Cluster container -> when its last lease was granted (receipt time).
    granted: BTreeMap<String, Instant>,
    /// Node -> when the resource manager last heard from it (as of the last
    /// allocate reply).
    node_seen: BTreeMap<String, Instant>,
    node_timeout: Duration,
    lease: Duration,
    /// Processed by owners that are gone (see `CoordinatorState::retired_processed`).
    retired: u64,
}

fn processed(b: &Beat) -> u64 {
    b.metrics.sum("container.processed").max(0) as u64
}

impl Leases {
    /// Makes `container` on `node` the owner of job container `n`;
    /// `granted`: a lease it may hold already (adopted from the last attempt).
    fn own(&mut self, n: u32, container: &str, node: &str, granted: Option<Instant>) {
        self.owners.insert(n, Owner { container: container.to_string(), node: node.to_string() });
        if let Some(t) = granted {
            self.granted.insert(container.to_string(), t);
        }
    }

    /// Ends `n`'s ownership of a container that may still run and hold a
    /// lease this coordinator cannot bound (one the resource manager renewed,
    /// or a start it never heard of): its successor waits a whole lease.
    fn give_up(&mut self, n: u32, now: Instant) -> Instant {
        self.revoke(n);
        now + self.lease
    }

    /// When the owner of `n`, cluster container `id`, last sent a heartbeat.
    fn last_heartbeat(&self, n: u32, id: &str) -> Option<Instant> {
        self.beats.get(&n).filter(|b| b.container == id).map(|b| b.at)
    }

    /// Ends `n`'s ownership; returns when the last lease granted to its
    /// owner runs out (`None`: it never had one).
    fn revoke(&mut self, n: u32) -> Option<Instant> {
        let owner = self.owners.remove(&n)?;
        if let Some(b) = self.beats.remove(&n) {
            self.retired += processed(&b);
        }
        self.granted.remove(&owner.container).map(|t| t + self.lease)
    }

    /// A heartbeat of `hb.container` for job container `n`.
    fn heartbeat(&mut self, n: u32, hb: ContainerHeartbeat) -> HeartbeatAnswer {
        let now = Instant::now();
        let owner = match self.owners.get(&n) {
            Some(o) if o.container == hb.container => o,
            other => {
                let who = other.map_or("none".to_string(), |o| o.container.clone());
                return HeartbeatAnswer {
                    owner: false,
                    lease_ms: 0,
                    reason: Some(format!(
                        "container {} is not the owner of job container {n} (its owner: {who})",
                        hb.container
                    )),
                };
            }
        };
        // Renewed only while the node is heard from, so that by the time the
        // resource manager declares it lost every lease there has run out.
        let silent = self.node_seen.get(&owner.node).map(|t| now.saturating_duration_since(*t));
        let answer = match silent {
            Some(s) if samza_container::lease::renewable(s, self.node_timeout, self.lease) => {
                self.granted.insert(hb.container.clone(), now);
                HeartbeatAnswer { owner: true, lease_ms: self.lease.as_millis() as u64, reason: None }
            }
            s => HeartbeatAnswer {
                owner: true,
                lease_ms: 0,
                reason: Some(match s {
                    Some(s) => {
                        format!("node {} silent for {:.1} s; lease not renewed", owner.node, s.as_secs_f64())
                    }
                    None => format!("node {} is not running; lease not renewed", owner.node),
                }),
            },
        };
        // Only the owner's beats are kept, and `revoke` retires them: a beat
        // replaced here is the same container's.
        let beat = Beat { container: hb.container, at: now, url: hb.url, metrics: hb.metrics };
        self.beats.insert(n, beat);
        answer
    }

    fn nodes_heard(&mut self, reply: &AllocateReply) {
        let now = Instant::now();
        self.node_seen = reply
            .node_heartbeat_age_ms
            .iter()
            .map(|(n, age)| (n.clone(), now.checked_sub(Duration::from_millis(*age)).unwrap_or(now)))
            .collect();
        if reply.node_timeout_ms > 0 {
            self.node_timeout = Duration::from_millis(reply.node_timeout_ms);
            // Leases end before a node is declared lost.
            self.lease = self.lease.min(self.node_timeout / 2);
        }
    }
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .map_err(|_| anyhow::anyhow!("{name} is not set (its node manager and the resource manager set it)"))
}

/// The coordinator role's entry point (see `samza::main`).
pub fn main(systems: SystemRegistry) -> ExitCode {
    match run(systems) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: coordinator: {}", samza_container::entry::chain(&e));
            ExitCode::FAILURE
        }
    }
}

pub use samza_container::tools::compute_model;

fn run(systems: SystemRegistry) -> anyhow::Result<()> {
    // The application's token (for its containers, which serve behind it
    // and are given it) and the coordinator's own, for what only it may ask
    // of the resource manager.
    let token = env(envs::TOKEN)?;
    let rm = Client::new(&env(envs::RM_URL)?, &env(envs::COORDINATOR_TOKEN)?);
    let app_id = env(envs::APP_ID)?;
    let attempt: u32 = env(envs::ATTEMPT)?.parse()?;
    let mut app: AppInfo = rm.get(&format!("/v1/apps/{app_id}"))?;
    // The job file with its secrets (`/v1/apps/{app}` shows them redacted).
    let file: JobFile = rm.get(&format!("/v1/apps/{app_id}/config"))?;
    (app.config, app.overrides) = (file.config, file.overrides);
    let cfg = JobConfig::parse(&app.config, &Path::new(&app.base_dir).join("job.toml"), &app.overrides)?;
    let model = compute_model(&cfg, &systems.resolve(&cfg)?)?;
    // Every line this coordinator logs names its job, application and attempt.
    let _entered = tracing::info_span!("coordinator", job = %cfg.name, app = %app_id, attempt).entered();
    tracing::info!(containers = cfg.container_count, "coordinator started");

    let lease = Duration::from_millis(cfg.cluster.container_lease_ms);
    let served = Arc::new(Served {
        job: cfg.name.clone(),
        cfg: cfg.clone(),
        token: token.clone(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?,
        model: model.clone(),
        leases: Mutex::new(Leases {
            owners: BTreeMap::new(),
            beats: BTreeMap::new(),
            granted: BTreeMap::new(),
            node_seen: BTreeMap::new(),
            node_timeout: Duration::from_secs(10),
            lease,
            retired: 0,
        }),
    });
    let url = serve(served.clone(), &token)?;
    tracing::info!(%url, "serving the JobModel and container heartbeats");
    let mut st = app.coordinator_state.clone().unwrap_or_default();
    served.lock_leases().retired = st.retired_processed;
    st.url = Some(url);
    st.model = model
        .containers
        .iter()
        .map(|(id, tasks)| (*id, tasks.keys().map(|t| t.as_str().to_string()).collect()))
        .collect();
    let mut co = Coordinator {
        rm,
        served,
        app: app_id,
        attempt,
        plan: Plan::new(Policy::of(&cfg), st),
        cfg,
        saved: None,
        pending: Vec::new(),
        release: Vec::new(),
    };
    // Adopt what still runs; ask again for the rest.
    let mut actions = co.step(Event::Start { containers: &app.containers });
    let record = app;
    loop {
        actions.extend(co.step(Event::Tick));
        if let Some(finish) = co.apply(actions).finish {
            return co.finish(finish);
        }
        co.plan.st.retired_processed = co.served.lock_leases().retired;
        co.save()?;
        let req = Allocate {
            attempt: co.attempt,
            asks: std::mem::take(&mut co.pending),
            release: std::mem::take(&mut co.release),
        };
        let path = format!("/v1/apps/{}/allocate", co.app);
        let reply: AllocateReply = retrying("allocate", || co.rm.post(&path, &req))?;
        co.served.lock_leases().nodes_heard(&reply);
        let mut allocated = Vec::new();
        for a in reply.allocated {
            allocated.extend(co.step(Event::Allocated(a)));
        }
        let applied = co.apply(allocated);
        // Recorded before they start: a next attempt must know every
        // container that may be running, to adopt it.
        co.save()?;
        // Started in parallel: a node fetches the package on its first launch.
        let results: Vec<(u32, Allocation, anyhow::Result<()>)> = std::thread::scope(|scope| {
            let co = &co;
            let record = &record;
            let handles: Vec<_> = applied
                .launches
                .into_iter()
                .map(|(n, a, generation)| {
                    scope.spawn(move || {
                        let r = co.launch(record, n, &a, generation);
                        (n, a, r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("launch thread")).collect()
        });
        // Allocations only launch; the job ends on a failure or a
        // completion, which the next lines act on at once.
        actions = Vec::new();
        for (n, allocation, r) in results {
            if let Err(e) = r {
                actions.extend(co.step(Event::LaunchFailed { n, allocation, error: format!("{e:#}") }));
            }
        }
        for c in reply.completed {
            let log_line = plan::failed(&c)
                .then(|| co.plan.st.containers.values().find(|s| s.container.as_deref() == Some(&c.id)))
                .flatten()
                .and_then(|s| s.node_url.clone())
                .and_then(|url| co.last_error_line(&url, &c.id));
            actions.extend(co.step(Event::Completed { container: c, log_line }));
        }
        // A spent budget or the last container done ends the job now.
        if actions.iter().any(|a| matches!(a, Action::Finish { .. })) {
            if let Some(finish) = co.apply(std::mem::take(&mut actions)).finish {
                return co.finish(finish);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the coordinator serves: the JobModel, and the containers' heartbeats.
struct Served {
    job: String,
    cfg: JobConfig,
    token: String,
    http: reqwest::Client,
    model: JobModel,
    leases: Mutex<Leases>,
}

struct Beat {
    /// The cluster container that sent it.
    container: String,
    at: Instant,
    url: Option<String>,
    metrics: Snapshot,
}

impl Served {
    fn lock_leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job's figures from the containers' last heartbeats (those heard
    /// from within 10 s).
    fn job_metrics(&self) -> JobMetrics {
        let leases = self.lock_leases();
        // Every owner's count, and those of the owners before them: a
        // replacement never makes the job's total go down.
        let mut m = JobMetrics { processed: leases.retired, ..JobMetrics::default() };
        for (n, b) in leases.beats.iter() {
            m.processed += processed(b);
            if b.at.elapsed() >= Duration::from_secs(10) {
                continue;
            }
            let c = ContainerMetrics {
                container: b.container.clone(),
                url: b.url.clone(),
                heartbeat_age_ms: b.at.elapsed().as_millis() as u64,
                processed: processed(b),
                lag: b.metrics.sum("ssp.lag").max(0) as u64,
            };
            m.lag += c.lag;
            m.containers.insert(*n, c);
        }
        m
    }

    /// The task that owns `key` of `store` and the address of the container
    /// running it: the key's partition in the job's first input (the stable
    /// key hash every producer uses), or the task named in the request.
    fn owner(
        &self,
        store: &str,
        key: &str,
        task: Option<String>,
    ) -> Result<(String, String), (StatusCode, String)> {
        let not_found = |m: String| (StatusCode::NOT_FOUND, m);
        let sc = self
            .cfg
            .stores
            .get(store)
            .ok_or_else(|| not_found(format!("job {} has no store {store:?}", self.job)))?;
        let bytes = sc
            .key_serde
            .encode_text(key)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("key {key:?} of store {store}: {e}")))?;
        let owner = self.model.owner(task.as_deref(), &self.cfg.inputs, &bytes);
        let (n, task) = owner
            .map(|(n, t)| (n, t.name.as_str().to_string()))
            .ok_or_else(|| not_found(format!("job {} has no task for that key or name", self.job)))?;
        let leases = self.lock_leases();
        let url = leases.beats.get(&n).and_then(|b| b.url.clone()).ok_or_else(|| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("container {n} (task {task:?}) has not reported its address yet"),
            )
        })?;
        Ok((task, url))
    }

    /// Prometheus text: every container's series (labelled with its job
    /// container number) and the job's totals.
    fn prometheus(&self) -> String {
        let m = self.job_metrics();
        let mut out = String::new();
        let job = self.job.as_str();
        let _ = writeln!(out, "# TYPE samza_job_processed_total counter");
        let _ = writeln!(out, "samza_job_processed_total{{job=\"{job}\"}} {}", m.processed);
        let _ = writeln!(out, "# TYPE samza_job_lag gauge");
        let _ = writeln!(out, "samza_job_lag{{job=\"{job}\"}} {}", m.lag);
        let _ = writeln!(out, "# TYPE samza_job_containers_reporting gauge");
        let _ = writeln!(out, "samza_job_containers_reporting{{job=\"{job}\"}} {}", m.containers.len());
        let leases = self.lock_leases();
        for (n, b) in leases.beats.iter() {
            let n = n.to_string();
            b.metrics.to_prometheus(&[("job", job), ("container", &n)], &mut out);
        }
        out
    }
}

/// `GET /v1/stores/{store}/{key}[?task=NAME]`: routed to the container
/// running the task that owns the key, answered by its run loop.
async fn query(
    axum::extract::State(s): axum::extract::State<Arc<Served>>,
    axum::extract::Path((store, key)): axum::extract::Path<(String, String)>,
    axum::extract::Query(p): axum::extract::Query<samza_container::http::TaskParam>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (task, url) = match s.owner(&store, &key, p.task) {
        Ok(x) => x,
        Err((status, m)) => return samza_container::http::error(status, m),
    };
    let r = s
        .http
        .get(format!("{url}/v1/stores/{}/{}", crate::client::encode(&store), crate::client::encode(&key)))
        .query(&[("task", &task)])
        .bearer_auth(&s.token)
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = r.bytes().await.unwrap_or_default();
            (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => samza_container::http::error(StatusCode::BAD_GATEWAY, format!("container at {url}: {e}")),
    }
}

/// Serves `GET /v1/model`, `POST /v1/containers/{n}/heartbeat`, the job's
/// metrics (`GET /v1/metrics`, JSON; `GET /metrics`, Prometheus) behind the
/// application's token (and the operator's); returns the URL.
fn serve(served: Arc<Served>, token: &str) -> anyhow::Result<String> {
    use axum::extract::{Path as UrlPath, State};
    use axum::routing::{get, post};
    let router = axum::Router::new()
        .route("/v1/model", get(|State(s): State<Arc<Served>>| async move { axum::Json(s.model.clone()) }))
        .route("/v1/metrics", get(|State(s): State<Arc<Served>>| async move { axum::Json(s.job_metrics()) }))
        .route("/v1/stores/{store}/{key}", get(query))
        .route(
            "/metrics",
            get(|State(s): State<Arc<Served>>| async move {
                ([(axum::http::header::CONTENT_TYPE, samza_container::http::PROMETHEUS_TEXT)], s.prometheus())
            }),
        )
        .route(
            "/v1/containers/{n}/heartbeat",
            post(
                |State(s): State<Arc<Served>>,
                 UrlPath(n): UrlPath<u32>,
                 axum::Json(hb): axum::Json<ContainerHeartbeat>| async move {
                    axum::Json(s.lock_leases().heartbeat(n, hb))
                },
            ),
        )
        .with_state(served);
    // On its node manager's host address, so containers on other hosts reach it.
    let host = std::env::var(envs::BIND).unwrap_or_else(|_| "127.0.0.1".into());
    let accepted = samza_container::http::Accepted::with_env(token);
    Ok(samza_container::http::serve(&format!("{host}:0"), accepted, router, "coordinator-http")?)
}

/// A container's side (see `samza_container::entry::ClusterRoles::join`): on
/// a cluster, the JobModel from the current coordinator, whose address is in
/// the application's state at the resource manager, its first lease, and a
/// thread that sends the coordinator a heartbeat every second, renewing the
/// lease (finding the coordinator again after it moved; asking the resource
/// manager for the lease while no coordinator answers). The thread ends the
/// process, with no final commit, once the lease has run out or the
/// container is told it no longer owns its tasks.
pub fn join(container: u32, endpoint: ContainerEndpoint) -> anyhow::Result<Option<Joined>> {
    let (Ok(app), Ok(rm_url), Ok(token), Ok(id)) = (
        std::env::var(envs::APP_ID),
        std::env::var(envs::RM_URL),
        std::env::var(envs::TOKEN),
        std::env::var(envs::CONTAINER_ID),
    ) else {
        return Ok(None);
    };
    let rm = Client::new(&rm_url, &token);
    // The JobModel, then a first lease: nothing is processed before it.
    let start = Instant::now();
    let (coordinator, model, granted, lease) = loop {
        let sent = Instant::now();
        let r = find_coordinator(&rm, &app).and_then(|c| {
            let m = c.get::<JobModel>("/v1/model")?;
            let a = send_heartbeat(&c, container, &id, &endpoint)?;
            Ok((c, m, a))
        });
        match r {
            Ok((_, _, a)) if !a.owner => {
                anyhow::bail!("not the owner of job container {container}: {}", a.reason.unwrap_or_default())
            }
            Ok((c, m, a)) if a.lease_ms > 0 => {
                let granted = Duration::from_millis(a.lease_ms);
                break (c, m, granted, Arc::new(Lease::granted(own_lease(granted), sent)));
            }
            Ok((_, _, a)) if start.elapsed() < Duration::from_secs(60) => {
                tracing::warn!("no lease from the coordinator yet: {}", a.reason.unwrap_or_default());
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                tracing::warn!("cannot get the JobModel from the coordinator yet: {e:#}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok((_, _, a)) => {
                anyhow::bail!("no lease from the job's coordinator: {}", a.reason.unwrap_or_default())
            }
            Err(e) => return Err(e.context("cannot get the JobModel from the job's coordinator")),
        }
    };
    tracing::info!(
        container,
        url = coordinator.base(),
        lease_ms = lease.length().as_millis() as u64,
        "JobModel from the coordinator, with a lease"
    );
    let span = tracing::Span::current();
    let held = lease.clone();
    // The heartbeat thread is also the lease's watchdog: no call of its may
    // block for long (a host cut off the network answers nothing), so it
    // checks the lease at least every `tick`, whatever the main thread is
    // blocked in.
    let tick = watchdog_tick(granted);
    let rm = Client::with_timeout(&rm_url, &token, tick);
    let coordinator = rm.at(coordinator.base());
    std::thread::Builder::new().name("heartbeat".into()).spawn(move || {
        let _in_span = span.entered();
        let lease_path = format!("/v1/apps/{app}/containers/{id}/lease?lease_ms={}", granted.as_millis());
        let mut coordinator = Some(coordinator);
        loop {
            std::thread::sleep(tick);
            let sent = Instant::now();
            match coordinator.as_ref().map(|c| send_heartbeat(c, container, &id, &endpoint)) {
                Some(Ok(a)) if !a.owner => {
                    held.revoke(a.reason.unwrap_or_else(|| "the coordinator says so".into()))
                }
                Some(Ok(a)) if a.lease_ms > 0 => held.renew(sent),
                Some(Ok(a)) => tracing::warn!("lease not renewed: {}", a.reason.unwrap_or_default()),
                _ => {
                    // The coordinator does not answer: a new attempt is
                    // starting, and the address the resource manager still
                    // has may be the dead attempt's. Look it up again for
                    // the next beat; meanwhile the resource manager vouches
                    // for the container (it stops doing so once the container
                    // is released or its node is no longer heard from).
                    coordinator = find_coordinator(&rm, &app).ok();
                    let sent = Instant::now();
                    match rm.get::<LeaseAnswer>(&lease_path) {
                        Ok(a) if a.granted => held.renew(sent),
                        Ok(a) if a.gone => held.revoke(a.reason.unwrap_or_default()),
                        Ok(a) => tracing::warn!("lease not renewed: {}", a.reason.unwrap_or_default()),
                        // The application's token no longer works: it has ended.
                        Err(e) if e.downcast_ref::<HttpError>().is_some_and(|h| h.status == 401) => {
                            held.revoke(format!("{e:#}"))
                        }
                        Err(e) => tracing::warn!("cannot renew the lease: {e:#}"),
                    }
                }
            }
            if let Err(why) = held.check() {
                samza_container::lease::exit_not_owner(container, &why);
            }
        }
    })?;
    Ok(Some(Joined { model, lease }))
}

/// The application's current coordinator, from its state at the resource manager.
fn find_coordinator(rm: &Client, app: &str) -> anyhow::Result<Client> {
    let info: AppInfo = rm.get(&format!("/v1/apps/{app}"))?;
    let url = info.coordinator_state.and_then(|s| s.url);
    let url = url.ok_or_else(|| anyhow::anyhow!("application {app} has no coordinator address yet"))?;
    Ok(rm.at(&url))
}

/// One heartbeat of cluster container `id`, job container `container`.
fn send_heartbeat(
    c: &Client,
    container: u32,
    id: &str,
    endpoint: &ContainerEndpoint,
) -> anyhow::Result<HeartbeatAnswer> {
    let body = ContainerHeartbeat {
        container: id.to_string(),
        url: endpoint.url.clone(),
        metrics: endpoint.metrics.snapshot(),
    };
    c.post(&format!("/v1/containers/{container}/heartbeat"), &body)
}

/// How often a container's heartbeat thread renews and checks its lease of
/// length `granted` (and the longest any of its calls may block).
fn watchdog_tick(granted: Duration) -> Duration {
    (granted / 5).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// The lease a container holds itself to when granted `granted`: two
/// watchdog ticks shorter, so that it has ended (the watchdog checks once a
/// tick, and a call blocks at most a tick) by the time the coordinator counts
/// the lease as run out.
fn own_lease(granted: Duration) -> Duration {
    granted.saturating_sub(watchdog_tick(granted) * 2)
}

struct Coordinator {
    rm: Client,
    served: Arc<Served>,
    app: String,
    attempt: u32,
    cfg: JobConfig,
    /// The decisions, and the state kept at the resource manager.
    plan: Plan,
    saved: Option<CoordinatorState>,
    /// Asks for the next allocate call.
    pending: Vec<Ask>,
    /// Containers to give back in the next allocate call.
    release: Vec<String>,
}

/// What the loop must do after the plan's actions were queued.
#[derive(Default)]
struct Applied {
    launches: Vec<(u32, Allocation, u64)>,
    finish: Option<(AppState, Option<String>)>,
}

impl Coordinator {
    /// One decision of the plan, with the leases locked for it.
    fn step(&mut self, event: Event<'_>) -> Vec<Action> {
        let mut leases = self.served.lock_leases();
        self.plan.step(&mut leases, Instant::now(), now_ms(), event)
    }

    /// Queues asks and releases for the next allocate call; returns the
    /// containers to launch, or the end of the job.
    fn apply(&mut self, actions: Vec<Action>) -> Applied {
        let mut applied = Applied::default();
        for action in actions {
            match action {
                Action::Ask(ask) => self.pending.push(ask),
                Action::Release(id) => self.release.push(id),
                Action::Launch { n, allocation, generation } => {
                    applied.launches.push((n, allocation, generation))
                }
                Action::Finish { state, reason } => {
                    applied.finish = Some((state, reason));
                    break;
                }
            }
        }
        applied
    }

    fn launch(&self, app: &AppInfo, n: u32, a: &Allocation, generation: u64) -> anyhow::Result<()> {
        let mut args = vec![
            "container".to_string(),
            "--config".into(),
            "job.toml".into(),
            "--container-id".into(),
            n.to_string(),
            "--base-dir".into(),
            app.base_dir.clone(),
        ];
        for o in &app.overrides {
            args.push("--override".into());
            args.push(o.clone());
        }
        let launch = Launch {
            container: a.container.clone(),
            app: self.app.clone(),
            package_sha256: app.package_sha256.clone(),
            args,
            env: BTreeMap::from([(envs::GENERATION.to_string(), generation.to_string())]),
            files: BTreeMap::from([("job.toml".to_string(), app.config.clone())]),
            resources: a.resources,
            stop_grace_ms: self.cfg.shutdown_timeout_ms,
            grant: Some(a.grant.clone()),
            app_token: self.served.token.clone(),
        };
        let nm = self.rm.at(&a.node_url).with_token(&a.launch_token);
        let _: NodeContainer = nm.post("/v1/containers", &launch)?;
        tracing::info!(container = n, id = %a.container, node = %a.node, generation, "started");
        Ok(())
    }

    /// The last line of a container's stderr that says "error", for the reason of a failure.
    fn last_error_line(&self, node_url: &str, container: &str) -> Option<String> {
        let nm = self.rm.at(node_url).with_token(&self.served.token);
        let log = nm.get_bytes(&format!("/v1/containers/{container}/logs/stderr?tail=8192")).ok()?;
        let text = String::from_utf8_lossy(&log);
        let line = text.lines().rev().find(|l| l.contains("error"))?;
        Some(line.trim().chars().take(500).collect())
    }

    fn save(&mut self) -> anyhow::Result<()> {
        if self.saved.as_ref() != Some(&self.plan.st) {
            let path = format!("/v1/apps/{}/coordinator-state?attempt={}", self.app, self.attempt);
            retrying("save state", || self.rm.put(&path, &self.plan.st))?;
            self.saved = Some(self.plan.st.clone());
        }
        Ok(())
    }

    fn finish(&mut self, (state, reason): (AppState, Option<String>)) -> anyhow::Result<()> {
        self.plan.st.retired_processed = self.served.lock_leases().retired;
        self.save()?;
        tracing::info!(app = %self.app, ?state, ?reason, "job finished");
        let path = format!("/v1/apps/{}/finish", self.app);
        let body = Finish { state, reason, attempt: self.attempt };
        let _: AppInfo = retrying("finish", || self.rm.post(&path, &body))?;
        Ok(())
    }
}

/// Retries calls to the resource manager while it is unreachable (it may be
/// restarting: its state survives), for up to 10 minutes; answers that refuse
/// the request (another attempt is current, the application ended) are final.
fn retrying<T>(what: &str, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => {
                if crate::client::HttpError::is_refusal(&e) || start.elapsed() > Duration::from_secs(600) {
                    return Err(e);
                }
                tracing::warn!("{what}: {e:#}; retrying in {delay:?}");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases() -> Leases {
        Leases {
            owners: BTreeMap::from([(0, Owner { container: "app-1-c2".into(), node: "node-1".into() })]),
            beats: BTreeMap::new(),
            granted: BTreeMap::new(),
            node_seen: BTreeMap::from([("node-1".to_string(), Instant::now())]),
            node_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(5),
            retired: 0,
        }
    }

    fn beat(container: &str) -> ContainerHeartbeat {
        ContainerHeartbeat { container: container.into(), url: None, metrics: Snapshot::default() }
    }

    #[test]
    fn only_the_owner_is_granted_a_lease_and_a_stranger_never_looks_like_it() {
        let mut l = leases();
        let a = l.heartbeat(0, beat("app-1-c2"));
        assert!(a.owner && a.lease_ms == 5000, "{a:?}");
        let stranger = l.heartbeat(0, beat("app-1-c9"));
        assert!(!stranger.owner && stranger.lease_ms == 0);
        assert_eq!(
            stranger.reason.as_deref(),
            Some("container app-1-c9 is not the owner of job container 0 (its owner: app-1-c2)")
        );
        // The stranger's heartbeat is not the owner's: it never keeps the owner alive.
        assert_eq!(l.beats[&0].container, "app-1-c2");
        assert!(!l.granted.contains_key("app-1-c9"));
    }

    #[test]
    fn a_revoked_owner_is_told_to_stop_and_its_last_lease_bounds_the_successor() {
        let mut l = leases();
        let before = Instant::now();
        l.heartbeat(0, beat("app-1-c2"));
        let ends = l.revoke(0).expect("it had a lease");
        assert!(ends >= before + Duration::from_secs(5) && ends <= Instant::now() + Duration::from_secs(5));
        let a = l.heartbeat(0, beat("app-1-c2"));
        assert!(!a.owner, "{a:?}");
        // A container that never had a lease needs no wait.
        l.owners.insert(1, Owner { container: "app-1-c3".into(), node: "node-1".into() });
        assert_eq!(l.revoke(1), None);
    }

    #[test]
    fn the_processed_total_counts_replaced_owners_too() {
        let mut l = leases();
        let registry = samza_task_api::MetricsRegistry::new();
        registry.counter("container.processed").add(700);
        let mut hb = beat("app-1-c2");
        hb.metrics = registry.snapshot();
        l.heartbeat(0, hb);
        l.revoke(0);
        l.owners.insert(0, Owner { container: "app-1-c5".into(), node: "node-1".into() });
        let fresh = samza_task_api::MetricsRegistry::new();
        fresh.counter("container.processed").add(10);
        let mut hb = beat("app-1-c5");
        hb.metrics = fresh.snapshot();
        l.heartbeat(0, hb);
        let total = l.retired + l.beats.values().map(processed).sum::<u64>();
        assert_eq!(total, 710, "700 by the old owner, 10 by its successor");
    }

    #[test]
    fn a_container_holds_itself_to_a_lease_two_watchdog_ticks_shorter() {
        assert_eq!(own_lease(Duration::from_secs(5)), Duration::from_secs(3));
        assert_eq!(watchdog_tick(Duration::from_millis(750)), Duration::from_millis(150));
        assert_eq!(own_lease(Duration::from_millis(750)), Duration::from_millis(450));
    }

    #[test]
    fn leases_are_not_renewed_on_a_node_that_is_not_heard_from() {
        let mut l = leases();
        l.node_seen.insert("node-1".into(), Instant::now() - Duration::from_secs(6));
        let a = l.heartbeat(0, beat("app-1-c2"));
        assert!(a.owner && a.lease_ms == 0, "{a:?}");
        assert!(a.reason.unwrap().starts_with("node node-1 silent for 6.0 s"));
        assert!(!l.granted.contains_key("app-1-c2"), "no lease granted");
        // Leases end before the node is declared lost, however they are configured.
        let reply = AllocateReply {
            allocated: vec![],
            completed: vec![],
            live_nodes: vec![],
            node_heartbeat_age_ms: BTreeMap::new(),
            node_timeout_ms: 4000,
        };
        l.nodes_heard(&reply);
        assert_eq!(l.lease, Duration::from_secs(2));
        let a = l.heartbeat(0, beat("app-1-c2"));
        assert_eq!(a.reason.as_deref(), Some("node node-1 is not running; lease not renewed"));
    }
}
