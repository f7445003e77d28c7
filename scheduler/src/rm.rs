//! The resource manager (`samza-rm`): nodes, applications, containers.
//!
//! Nodes register with their capacity and heartbeat; a node silent for the
//! node timeout is lost and its containers are reported lost to their
//! coordinators (a state of their own, not a failure). An application is a
//! job config plus a package (its job binary, stored by SHA-256); the
//! resource manager starts its coordinator as the application's first
//! container and hands the coordinator containers it asks for (preferred node
//! first, any node after the ask's relax time). It never restarts a
//! container on its own: coordinators decide (DESIGN.md invariant 5). The
//! coordinator itself gets a new attempt when it dies.
//!
//! Its state (applications, their containers and events, known nodes) is a
//! JSON file written atomically on every change, so a restarted resource
//! manager recovers its applications; node managers register again with the
//! containers they still run, and nothing is killed by the restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use samza_container::env;
use samza_task_api::{Counter, MetricsRegistry, Timer};

use crate::auth::{self, is_sha256, safe_name};
use crate::layout;
use crate::proto::*;
use samza_container::http::ApiError;

/// Settings of a resource manager.
#[derive(Clone, Debug)]
pub struct RmConfig {
    pub dir: PathBuf,
    /// A node without a heartbeat this long is lost.
    pub node_timeout: Duration,
    /// Coordinator attempts before the application fails.
    pub max_attempts: u32,
    /// The URL containers use to reach this resource manager.
    pub advertised_url: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Persisted {
    next_app: u64,
    next_container: u64,
    apps: BTreeMap<String, App>,
}

#[derive(Serialize, Deserialize)]
struct App {
    info: AppInfo,
    pending: Vec<Pending>,
    /// Ended containers the coordinator has not been told about yet.
    undelivered: Vec<ContainerInfo>,
    /// Containers to stop (released, or their application ended).
    stopping: Vec<String>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    ask: Ask,
    since_ms: i64,
}

struct Node {
    url: String,
    capacity: Resources,
    state: NodeState,
    last_heartbeat: Instant,
}

struct Inner {
    p: Persisted,
    nodes: BTreeMap<String, Node>,
    /// Container id -> application id.
    owner: BTreeMap<String, String>,
    dirty: bool,
    max_attempts: u32,
}

pub struct Rm {
    cfg: RmConfig,
    token: Arc<str>,
    inner: Mutex<Inner>,
    http: reqwest::Client,
    metrics: Metrics,
}

/// The resource manager's own metrics (`GET /metrics`); gauges of nodes,
/// applications and containers are computed when scraped.
struct Metrics {
    registry: MetricsRegistry,
    heartbeats: Counter,
    allocate: Timer,
    submissions: Counter,
}

/// Ended containers an application keeps in its record (see `Inner::prune_ended`).
const KEEP_ENDED: usize = 100;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn push_event(app: &mut App, message: String) {
    tracing::info!(app = %app.info.app, "{message}");
    app.info.events.push(Event { time_ms: now_ms(), message });
    let n = app.info.events.len();
    if n > 500 {
        app.info.events.drain(..n - 500);
    }
}

pub(crate) fn describe(c: &ContainerInfo) -> String {
    let who = match c.role {
        Role::Coordinator => "coordinator".to_string(),
        Role::Container(n) => format!("container {n}"),
    };
    format!("{who} ({}) on {}", c.id, c.node)
}

impl Inner {
    /// Per node: memory and cores in use and the number of live containers,
    /// in one pass over the containers.
    fn usage(&self) -> BTreeMap<&str, (Resources, usize)> {
        let mut used: BTreeMap<&str, (Resources, usize)> = BTreeMap::new();
        for c in self.p.apps.values().flat_map(|a| &a.info.containers).filter(|c| !c.state.is_done()) {
            let (u, n) = used.entry(c.node.as_str()).or_default();
            u.memory_mb += c.resources.memory_mb;
            u.vcores += c.resources.vcores;
            *n += 1;
        }
        used
    }

    /// A running node with room for `r`: `preferred` if it has room, else the
    /// one with the most free memory (when `any` is allowed).
    fn place(&self, r: &Resources, preferred: Option<&str>, any: bool) -> Option<String> {
        let used = self.usage();
        let free = |id: &str, n: &Node| {
            let u = used.get(id).map(|(u, _)| *u).unwrap_or_default();
            Resources {
                memory_mb: n.capacity.memory_mb.saturating_sub(u.memory_mb),
                vcores: n.capacity.vcores.saturating_sub(u.vcores),
            }
        };
        let running = |n: &&Node| n.state == NodeState::Running;
        if let Some(p) = preferred {
            if self.nodes.get(p).filter(running).is_some_and(|n| r.fits_in(&free(p, n))) {
                return Some(p.to_string());
            }
        }
        if !any {
            return None;
        }
        self.nodes
            .iter()
            .filter(|(_, n)| running(n))
            .map(|(id, n)| (id, free(id, n)))
            .filter(|(_, free)| r.fits_in(free))
            .max_by_key(|(id, free)| (free.memory_mb, std::cmp::Reverse((*id).clone())))
            .map(|(id, _)| id.clone())
    }

    fn new_container(&mut self, app: &str, node: &str, role: Role, resources: Resources) -> ContainerInfo {
        self.p.next_container += 1;
        let id = format!("{app}-c{}", self.p.next_container);
        let a = self.p.apps.get_mut(app).expect("app exists");
        let c = ContainerInfo {
            id: id.clone(),
            node: node.to_string(),
            state: ContainerState::Allocated,
            resources,
            pid: None,
            exit_code: None,
            reason: None,
            role,
            attempt: a.info.attempt,
        };
        a.info.containers.push(c.clone());
        self.owner.insert(id, app.to_string());
        self.dirty = true;
        c
    }

    /// Applies a container's new state; returns what ended, for its coordinator.
    fn update_container(&mut self, id: &str, report: &NodeContainer) {
        let Some(app_id) = self.owner.get(id).cloned() else { return };
        let app = self.p.apps.get_mut(&app_id).expect("owner map matches apps");
        let stopping = app.stopping.iter().any(|s| s == id);
        let Some(c) = app.info.containers.iter_mut().find(|c| c.id == id) else { return };
        if c.state.is_done() {
            return;
        }
        let mut state = report.state;
        if state == ContainerState::Exited && stopping {
            state = ContainerState::Killed;
        }
        if c.state == state && c.pid == report.pid {
            return;
        }
        c.state = state;
        c.pid = report.pid;
        c.exit_code = report.exit_code;
        c.reason = report.reason.clone();
        let done = c.clone();
        self.dirty = true;
        if state.is_done() {
            app.stopping.retain(|s| s != id);
            let how = match (state, done.exit_code) {
                (ContainerState::Killed, _) => "stopped".to_string(),
                (_, Some(code)) => format!("exited with code {code}"),
                _ => "exited".to_string(),
            };
            let reason = done.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            push_event(app, format!("{} {how}{reason}", describe(&done)));
            self.container_ended(&app_id, done);
            self.prune_ended(&app_id);
        }
    }

    /// Keeps the last `KEEP_ENDED` ended containers of an application (its
    /// history for `status` and the dashboard); older ones are forgotten, so
    /// a long-lived job that restarts often does not grow the state forever.
    fn prune_ended(&mut self, app_id: &str) {
        let app = self.p.apps.get_mut(app_id).expect("app exists");
        let ended = app.info.containers.iter().filter(|c| c.state.is_done()).count();
        if ended <= KEEP_ENDED {
            return;
        }
        let mut excess = ended - KEEP_ENDED;
        let mut forgotten = Vec::new();
        app.info.containers.retain(|c| {
            let drop = excess > 0 && c.state.is_done() && !app.undelivered.iter().any(|u| u.id == c.id);
            if drop {
                excess -= 1;
                forgotten.push(c.id.clone());
            }
            !drop
        });
        for id in forgotten {
            self.owner.remove(&id);
        }
    }

    /// Ends a container for a reason its node did not report (node lost,
    /// launch failed, gone after a restart), as if its node had.
    fn end_container(&mut self, id: &str, state: ContainerState, reason: String) {
        let Some(app) = self.owner.get(id).cloned() else { return };
        let report = NodeContainer {
            id: id.to_string(),
            app,
            state,
            pid: None,
            exit_code: None,
            reason: Some(reason),
            resources: Resources::default(),
        };
        self.update_container(id, &report);
    }

    /// After a container of `app` ended: tell its coordinator, or, for the
    /// coordinator, start the next attempt or end the application.
    fn container_ended(&mut self, app_id: &str, c: ContainerInfo) {
        let app = self.p.apps.get_mut(app_id).expect("app exists");
        if c.role != Role::Coordinator {
            if !app.info.state.is_final() {
                app.undelivered.push(c);
            }
            return;
        }
        if app.info.state.is_final() || c.attempt != app.info.attempt {
            return;
        }
        // The coordinator died before finishing the application.
        let why = match (c.state, c.exit_code, &c.reason) {
            (ContainerState::Lost, _, _) => format!("its node {} was lost", c.node),
            (_, Some(code), Some(r)) => format!("exit code {code}: {r}"),
            (_, Some(code), None) => format!("exit code {code}"),
            (_, None, Some(r)) => r.clone(),
            _ => "ended".to_string(),
        };
        if app.info.attempt >= self.max_attempts {
            app.info.state = AppState::Failed;
            app.info.reason = Some(format!("the coordinator failed {} times; last: {why}", app.info.attempt));
            let msg = format!("application FAILED: {}", app.info.reason.clone().unwrap());
            push_event(app, msg);
            self.stop_all(app_id);
            return;
        }
        app.info.attempt += 1;
        app.info.state = AppState::Accepted;
        // Containers allocated to the dead attempt but never started are gone.
        let attempt = app.info.attempt;
        for x in app.info.containers.iter_mut() {
            if x.state == ContainerState::Allocated && x.attempt < attempt {
                x.state = ContainerState::Killed;
                x.reason = Some("allocated to a coordinator attempt that ended".into());
            }
        }
        app.pending.clear();
        push_event(app, format!("coordinator attempt {} starts (the last one ended: {why})", attempt));
        self.dirty = true;
    }

    /// Asks the nodes to stop every live container of `app`.
    fn stop_all(&mut self, app_id: &str) {
        let app = self.p.apps.get_mut(app_id).expect("app exists");
        let mut stopping = Vec::new();
        for c in app.info.containers.iter_mut() {
            match c.state {
                ContainerState::Allocated => {
                    c.state = ContainerState::Killed;
                    c.reason = Some("application ended before it started".into());
                }
                ContainerState::Running => stopping.push(c.id.clone()),
                _ => {}
            }
        }
        for s in stopping {
            if !app.stopping.contains(&s) {
                app.stopping.push(s);
            }
        }
        app.pending.clear();
        app.undelivered.clear();
        self.dirty = true;
    }

    fn node_lost(&mut self, node: &str, why: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.state = NodeState::Lost;
        }
        tracing::warn!(node, "node lost: {why}");
        let ids: Vec<(String, String)> = self
            .p
            .apps
            .iter()
            .flat_map(|(a, app)| {
                app.info
                    .containers
                    .iter()
                    .filter(|c| c.node == node && !c.state.is_done())
                    .map(move |c| (a.clone(), c.id.clone()))
            })
            .collect();
        let mut told = std::collections::BTreeSet::new();
        for (app_id, id) in ids {
            if told.insert(app_id.clone()) {
                let app = self.p.apps.get_mut(&app_id).unwrap();
                push_event(app, format!("node {node} lost: {why}"));
            }
            self.end_container(&id, ContainerState::Lost, format!("node {node} lost"));
        }
        self.dirty = true;
    }
}

impl Rm {
    /// Loads (or starts) the state in `cfg.dir` and the token in `<dir>/token`.
    pub fn open(cfg: RmConfig) -> anyhow::Result<Arc<Rm>> {
        std::fs::create_dir_all(layout::packages(&cfg.dir))?;
        let token = auth::load_or_create(&layout::token(&cfg.dir))?;
        let path = layout::rm_state(&cfg.dir);
        let p: Persisted = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow::anyhow!("cannot read resource manager state {}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        // Nodes are not persisted (they register again within a heartbeat);
        // those with live containers wait for that as RECOVERING, and are
        // lost, with their containers, if they do not come back in time.
        let nodes = p
            .apps
            .values()
            .flat_map(|a| &a.info.containers)
            .filter(|c| !c.state.is_done())
            .map(|c| {
                let node = Node {
                    url: String::new(),
                    capacity: Resources::default(),
                    state: NodeState::Recovering,
                    last_heartbeat: Instant::now(),
                };
                (c.node.clone(), node)
            })
            .collect();
        let owner = p
            .apps
            .iter()
            .flat_map(|(a, app)| app.info.containers.iter().map(move |c| (c.id.clone(), a.clone())))
            .collect();
        if !p.apps.is_empty() {
            tracing::info!(apps = p.apps.len(), "recovered state");
        }
        let max_attempts = cfg.max_attempts;
        Ok(Arc::new(Rm {
            cfg,
            token: token.into(),
            inner: Mutex::new(Inner { p, nodes, owner, dirty: false, max_attempts }),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
            metrics: {
                let registry = MetricsRegistry::new();
                Metrics {
                    heartbeats: registry.counter("rm.heartbeats"),
                    allocate: registry.timer("rm.allocate"),
                    submissions: registry.counter("rm.submissions"),
                    registry,
                }
            },
        }))
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the state when it changed (atomically: temp file, fsync, rename).
    fn save(&self, inner: &mut Inner) -> anyhow::Result<()> {
        if !inner.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&inner.p)?;
        crate::durable::write_atomic(&layout::rm_state(&self.cfg.dir), &bytes)?;
        inner.dirty = false;
        Ok(())
    }

    fn save_or_log(&self, inner: &mut Inner) {
        if let Err(e) = self.save(inner) {
            tracing::error!("cannot persist resource manager state in {}: {e:#}", self.cfg.dir.display());
        }
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let api = Router::new()
            .route("/v1/nodes", post(register).get(list_nodes))
            .route("/v1/nodes/{node}/heartbeat", post(heartbeat))
            .route("/v1/packages/{sha}", put(upload).get(download))
            .route("/v1/apps", post(submit).get(list_apps))
            .route("/v1/apps/{app}", get(app_info))
            .route("/v1/apps/{app}/kill", post(kill))
            .route("/v1/apps/{app}/allocate", post(allocate))
            .route("/v1/apps/{app}/coordinator-state", put(coordinator_state))
            .route("/v1/apps/{app}/finish", post(finish))
            .route("/v1/apps/{app}/containers/{id}/lease", get(container_lease))
            .route("/v1/apps/{app}/metrics", get(app_metrics))
            .route("/v1/apps/{app}/stores/{store}/{key}", get(app_store))
            .route("/metrics", get(prometheus))
            .layer(DefaultBodyLimit::max(2 << 30))
            .with_state(self.clone());
        // The dashboard's page holds no data: it asks for the token and reads
        // the API above with it, as the CLI does.
        api.layer(axum::middleware::from_fn_with_state(self.token.clone(), auth::require_token))
            .route("/", get(crate::dashboard::page))
            .route("/dashboard", get(crate::dashboard::page))
    }

    /// Background duties: lost nodes, coordinators to place.
    pub async fn run_duties(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let launches = {
                let mut inner = self.lock();
                let timeout = self.cfg.node_timeout;
                let now = Instant::now();
                let silent: Vec<(String, Duration)> = inner
                    .nodes
                    .iter()
                    .map(|(id, n)| (id, n, now.saturating_duration_since(n.last_heartbeat)))
                    .filter(|(_, n, age)| n.state != NodeState::Lost && *age >= timeout)
                    .map(|(id, _, age)| (id.clone(), age))
                    .collect();
                for (node, age) in silent {
                    inner.node_lost(&node, &format!("no heartbeat for {:.1} s", age.as_secs_f64()));
                }
                let launches = self.place_coordinators(&mut inner);
                self.save_or_log(&mut inner);
                launches
            };
            for (node_url, launch) in launches {
                let rm = self.clone();
                tokio::spawn(async move { rm.launch_coordinator(node_url, launch).await });
            }
        }
    }

    /// Allocates a container for every accepted application's coordinator.
    fn place_coordinators(&self, inner: &mut Inner) -> Vec<(String, Launch)> {
        let waiting: Vec<String> = inner
            .p
            .apps
            .iter()
            .filter(|(_, a)| {
                a.info.state == AppState::Accepted
                    && !a.info.containers.iter().any(|c| {
                        c.role == Role::Coordinator && c.attempt == a.info.attempt && !c.state.is_done()
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for app_id in waiting {
            let resources = inner.p.apps[&app_id].info.coordinator;
            let Some(node) = inner.place(&resources, None, true) else { continue };
            let c = inner.new_container(&app_id, &node, Role::Coordinator, resources);
            let app = inner.p.apps.get_mut(&app_id).unwrap();
            app.info.state = AppState::Running;
            let attempt = app.info.attempt;
            push_event(app, format!("coordinator attempt {attempt} placed: {}", describe(&c)));
            let env = BTreeMap::from([
                (env::APP_ID.to_string(), app_id.clone()),
                (env::ATTEMPT.to_string(), attempt.to_string()),
            ]);
            let launch = Launch {
                container: c.id.clone(),
                app: app_id.clone(),
                package_sha256: app.info.package_sha256.clone(),
                args: vec!["coordinator".into()],
                env,
                files: BTreeMap::new(),
                resources,
                stop_grace_ms: 10_000,
            };
            out.push((inner.nodes[&node].url.clone(), launch));
        }
        out
    }

    async fn launch_coordinator(&self, node_url: String, launch: Launch) {
        let r = self
            .http
            .post(format!("{node_url}/v1/containers"))
            .bearer_auth(&*self.token)
            .json(&launch)
            .send()
            .await;
        let failure = match r {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                let msg = serde_json::from_str::<ErrorBody>(&body).map(|e| e.error).unwrap_or(body);
                format!("node refused the launch: {status}: {msg}")
            }
            Err(e) => format!("cannot reach the node: {e}"),
        };
        let mut inner = self.lock();
        inner.end_container(&launch.container, ContainerState::Exited, failure);
        self.save_or_log(&mut inner);
    }
}

type Shared = State<Arc<Rm>>;

fn json_err(status: StatusCode, e: impl std::fmt::Display) -> Response {
    ApiError::new(status, e.to_string()).into_response()
}

async fn register(State(rm): Shared, Json(req): Json<RegisterNode>) -> Response {
    if !safe_name(&req.node) {
        return json_err(StatusCode::BAD_REQUEST, format!("invalid node name {:?}", req.node));
    }
    let mut inner = rm.lock();
    let was = inner.nodes.get(&req.node).map(|n| n.state);
    inner.nodes.insert(
        req.node.clone(),
        Node {
            url: req.url.clone(),
            capacity: req.capacity,
            state: NodeState::Running,
            last_heartbeat: Instant::now(),
        },
    );
    tracing::info!(node = %req.node, url = %req.url, ?was, containers = req.containers.len(), "node registered");
    // Containers this node no longer has ended while nobody watched.
    let reported: std::collections::BTreeSet<&str> = req.containers.iter().map(|c| c.id.as_str()).collect();
    let vanished: Vec<String> = inner
        .p
        .apps
        .values()
        .flat_map(|a| &a.info.containers)
        .filter(|c| c.node == req.node && c.state == ContainerState::Running)
        .filter(|c| !reported.contains(c.id.as_str()))
        .map(|c| c.id.clone())
        .collect();
    for id in vanished {
        let why = format!("no longer on node {} when it registered again", req.node);
        inner.end_container(&id, ContainerState::Exited, why);
    }
    let reply = node_update(&mut inner, &req.node, &req.containers);
    rm.save_or_log(&mut inner);
    Json(reply).into_response()
}

/// Applies a node's container reports; returns the containers it must stop
/// (released, or their application ended) and those it must kill at once:
/// containers the resource manager no longer counts as the node's own (it
/// declared them lost with the node, or never knew them), whose tasks may
/// run elsewhere already, so they must not even commit.
fn node_update(inner: &mut Inner, node: &str, containers: &[NodeContainer]) -> HeartbeatReply {
    let mut stop = Vec::new();
    let mut kill = Vec::new();
    for c in containers {
        let known = inner.owner.get(&c.id).cloned();
        let Some(app_id) = known else {
            if !c.state.is_done() {
                tracing::warn!(node, container = %c.id, "a container this resource manager does not know; killing it");
                kill.push(c.id.clone());
            }
            continue;
        };
        inner.update_container(&c.id, c);
        let app = &inner.p.apps[&app_id];
        let mine = app.info.containers.iter().find(|x| x.id == c.id);
        if c.state.is_done() {
            continue;
        }
        let not_its_own = mine.is_none_or(|x| x.state.is_done() || x.node != node);
        if not_its_own {
            tracing::warn!(node, container = %c.id, "no longer this node's container (lost with it); killing it");
            kill.push(c.id.clone());
        } else if app.stopping.contains(&c.id) || app.info.state.is_final() {
            stop.push(c.id.clone());
        }
    }
    HeartbeatReply { known: true, stop, kill }
}

async fn heartbeat(
    State(rm): Shared,
    UrlPath(node): UrlPath<String>,
    Json(hb): Json<NodeHeartbeat>,
) -> Response {
    rm.metrics.heartbeats.inc();
    let mut inner = rm.lock();
    match inner.nodes.get_mut(&node) {
        Some(n) if n.state == NodeState::Running => n.last_heartbeat = Instant::now(),
        // Lost, recovering after a restart, or never seen: register first.
        _ => return Json(HeartbeatReply { known: false, stop: vec![], kill: vec![] }).into_response(),
    }
    let reply = node_update(&mut inner, &node, &hb.containers);
    rm.save_or_log(&mut inner);
    Json(reply).into_response()
}

async fn list_nodes(State(rm): Shared) -> Response {
    let inner = rm.lock();
    let usage = inner.usage();
    let nodes: Vec<NodeInfo> = inner
        .nodes
        .iter()
        .map(|(id, n)| {
            let (used, containers) = usage.get(id.as_str()).copied().unwrap_or_default();
            NodeInfo {
                node: id.clone(),
                url: n.url.clone(),
                state: n.state,
                capacity: n.capacity,
                used,
                heartbeat_age_ms: n.last_heartbeat.elapsed().as_millis() as u64,
                containers,
            }
        })
        .collect();
    Json(nodes).into_response()
}

async fn upload(State(rm): Shared, UrlPath(sha): UrlPath<String>, body: Bytes) -> Response {
    if !is_sha256(&sha) {
        return json_err(StatusCode::BAD_REQUEST, format!("{sha:?} is not a lowercase hex SHA-256"));
    }
    let got = auth::sha256_hex(&body);
    if got != sha {
        return json_err(
            StatusCode::BAD_REQUEST,
            format!(
                "package hash mismatch: the URL says {sha}, the {} bytes uploaded hash to {got}",
                body.len()
            ),
        );
    }
    let dir = layout::packages(&rm.cfg.dir);
    let path = dir.join(&sha);
    if path.is_file() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let r = tokio::task::spawn_blocking(move || crate::durable::write_atomic(&path, &body)).await;
    match r {
        Ok(Ok(())) => StatusCode::CREATED.into_response(),
        Ok(Err(e)) => json_err(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot store package: {e}")),
        Err(e) => json_err(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn download(State(rm): Shared, method: axum::http::Method, UrlPath(sha): UrlPath<String>) -> Response {
    if !is_sha256(&sha) {
        return json_err(StatusCode::BAD_REQUEST, format!("{sha:?} is not a lowercase hex SHA-256"));
    }
    let path = layout::package(&rm.cfg.dir, &sha);
    if method == axum::http::Method::HEAD {
        // Lets a client skip uploading a package the resource manager has.
        return if path.is_file() { StatusCode::OK } else { StatusCode::NOT_FOUND }.into_response();
    }
    match tokio::fs::read(path).await {
        Ok(b) => b.into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            json_err(StatusCode::NOT_FOUND, format!("no package {sha}"))
        }
        Err(e) => json_err(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn submit(State(rm): Shared, Json(s): Json<Submit>) -> Response {
    rm.metrics.submissions.inc();
    if !safe_name(&s.name) {
        return json_err(StatusCode::BAD_REQUEST, format!("invalid job name {:?}", s.name));
    }
    if !is_sha256(&s.package_sha256) || !layout::package(&rm.cfg.dir, &s.package_sha256).is_file() {
        return json_err(
            StatusCode::BAD_REQUEST,
            format!("package {} is not uploaded (PUT /v1/packages/<sha256> first)", s.package_sha256),
        );
    }
    if s.coordinator.memory_mb == 0 {
        return json_err(StatusCode::BAD_REQUEST, "coordinator memory must be positive");
    }
    let mut inner = rm.lock();
    // One running application per job: two would share its checkpoints,
    // changelogs and stores.
    let running = inner.p.apps.values().find(|a| a.info.name == s.name && !a.info.state.is_final());
    if let Some(a) = running {
        return json_err(
            StatusCode::CONFLICT,
            format!(
                "job {} is running already as application {} ({}); kill it first (samza-run kill {})",
                s.name,
                a.info.app,
                state_word(a.info.state),
                a.info.app
            ),
        );
    }
    inner.p.next_app += 1;
    let id = format!("app-{:04}", inner.p.next_app);
    let mut app = App {
        info: AppInfo {
            app: id.clone(),
            name: s.name.clone(),
            state: AppState::Accepted,
            reason: None,
            attempt: 1,
            package_sha256: s.package_sha256,
            config: s.config,
            base_dir: s.base_dir,
            overrides: s.overrides,
            coordinator: s.coordinator,
            containers: vec![],
            events: vec![],
            coordinator_state: None,
            submitted_ms: now_ms(),
        },
        pending: vec![],
        undelivered: vec![],
        stopping: vec![],
    };
    push_event(&mut app, format!("submitted job {}", s.name));
    inner.p.apps.insert(id.clone(), app);
    inner.dirty = true;
    let launches = rm.place_coordinators(&mut inner);
    rm.save_or_log(&mut inner);
    drop(inner);
    for (url, launch) in launches {
        let rm = rm.clone();
        tokio::spawn(async move { rm.launch_coordinator(url, launch).await });
    }
    (StatusCode::CREATED, Json(Submitted { app: id })).into_response()
}

async fn list_apps(State(rm): Shared) -> Response {
    let inner = rm.lock();
    let apps: Vec<AppInfo> = inner.p.apps.values().map(|a| a.info.clone()).collect();
    Json(apps).into_response()
}

fn with_app<T>(rm: &Rm, app: &str, f: impl FnOnce(&mut Inner) -> Result<T, ApiError>) -> Response
where
    T: Serialize,
{
    let mut inner = rm.lock();
    if !inner.p.apps.contains_key(app) {
        return json_err(StatusCode::NOT_FOUND, format!("no application {app:?}"));
    }
    let r = f(&mut inner);
    rm.save_or_log(&mut inner);
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn app_info(State(rm): Shared, UrlPath(app): UrlPath<String>) -> Response {
    with_app(&rm, &app, |inner| Ok(inner.p.apps[&app].info.clone()))
}

async fn kill(State(rm): Shared, UrlPath(app): UrlPath<String>) -> Response {
    with_app(&rm, &app, |inner| {
        let a = inner.p.apps.get_mut(&app).unwrap();
        if !a.info.state.is_final() {
            a.info.state = AppState::Killed;
            a.info.reason = Some("killed on request".into());
            push_event(a, "application KILLED on request".into());
            inner.stop_all(&app);
        }
        Ok(inner.p.apps[&app].info.clone())
    })
}

async fn allocate(State(rm): Shared, UrlPath(app): UrlPath<String>, Json(req): Json<Allocate>) -> Response {
    let started = Instant::now();
    let r = allocate_now(&rm, &app, req);
    rm.metrics.allocate.record(started.elapsed());
    r
}

/// The job's figures, from its coordinator (which gathers them from its
/// containers' heartbeats).
async fn app_metrics(State(rm): Shared, UrlPath(app): UrlPath<String>) -> Response {
    to_coordinator(&rm, &app, "/v1/metrics".into(), Vec::new()).await
}

/// A key's value in a running job's store: the coordinator routes the read to
/// the container that owns the key (queryable state).
async fn app_store(
    State(rm): Shared,
    UrlPath((app, store, key)): UrlPath<(String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let path = format!("/v1/stores/{}/{}", crate::client::encode(&store), crate::client::encode(&key));
    to_coordinator(&rm, &app, path, q.into_iter().filter(|(k, _)| k == "task").collect()).await
}

/// Forwards a GET to the application's current coordinator and passes its
/// answer back.
async fn to_coordinator(rm: &Rm, app: &str, path: String, query: Vec<(String, String)>) -> Response {
    let url = {
        let inner = rm.lock();
        let Some(a) = inner.p.apps.get(app) else {
            return json_err(StatusCode::NOT_FOUND, format!("no application {app}"));
        };
        if a.info.state != AppState::Running {
            return json_err(StatusCode::CONFLICT, format!("application {app} is {:?}", a.info.state));
        }
        a.info.coordinator_state.as_ref().and_then(|s| s.url.clone())
    };
    let Some(url) = url else {
        return json_err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("application {app} has no coordinator yet"),
        );
    };
    let r = rm
        .http
        .get(format!("{url}{path}"))
        .query(&query)
        .bearer_auth(&*rm.token)
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(body) => {
                    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
                }
                Err(e) => json_err(StatusCode::BAD_GATEWAY, format!("coordinator of {app} at {url}: {e}")),
            }
        }
        Err(e) => json_err(StatusCode::BAD_GATEWAY, format!("coordinator of {app} at {url}: {e}")),
    }
}

/// Prometheus text: the resource manager's counters and timers, and gauges of
/// nodes, applications and containers by state.
async fn prometheus(State(rm): Shared) -> Response {
    let r = &rm.metrics.registry;
    {
        let inner = rm.lock();
        let mut nodes: BTreeMap<&str, i64> = ["running", "lost", "recovering"].map(|s| (s, 0)).into();
        for n in inner.nodes.values() {
            *nodes.entry(node_state_name(n.state)).or_default() += 1;
        }
        for (state, n) in nodes {
            r.gauge_with("rm.nodes", &[("state", state)]).set(n);
        }
        let mut apps: BTreeMap<String, i64> = BTreeMap::new();
        let mut running = 0;
        for a in inner.p.apps.values() {
            *apps.entry(format!("{:?}", a.info.state).to_lowercase()).or_default() += 1;
            running += a.info.containers.iter().filter(|c| c.state == ContainerState::Running).count();
        }
        for state in ["accepted", "running", "succeeded", "failed", "killed"] {
            r.gauge_with("rm.apps", &[("state", state)]).set(apps.get(state).copied().unwrap_or(0));
        }
        r.gauge("rm.containers-running").set(running as i64);
        let live = inner.nodes.values().filter(|n| n.state == NodeState::Running);
        let capacity: u64 = live.map(|n| n.capacity.memory_mb).sum();
        let used: u64 = inner.usage().values().map(|(u, _)| u.memory_mb).sum();
        r.gauge("rm.memory-mb-capacity").set(capacity as i64);
        r.gauge("rm.memory-mb-used").set(used as i64);
    }
    ([(axum::http::header::CONTENT_TYPE, samza_container::http::PROMETHEUS_TEXT)], r.to_prometheus(&[]))
        .into_response()
}

fn node_state_name(s: NodeState) -> &'static str {
    match s {
        NodeState::Running => "running",
        NodeState::Lost => "lost",
        NodeState::Recovering => "recovering",
    }
}

fn allocate_now(rm: &Rm, app: &str, req: Allocate) -> Response {
    let app = app.to_string();
    let node_timeout = rm.cfg.node_timeout;
    with_app(rm, &app, |inner| {
        let a = inner.p.apps.get_mut(&app).unwrap();
        if a.info.state.is_final() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("application {app} is {:?}", a.info.state),
            ));
        }
        current_attempt(a, req.attempt)?;
        let now = now_ms();
        // Coordinators call every 100 ms; the state is persisted only when a
        // call changes it (allocations mark it in `new_container`).
        let changed = !req.asks.is_empty() || !req.release.is_empty();
        for ask in req.asks {
            a.pending.push(Pending { ask, since_ms: now });
        }
        for id in req.release {
            if let Some(c) = a.info.containers.iter_mut().find(|c| c.id == id && !c.state.is_done()) {
                if c.state == ContainerState::Allocated {
                    c.state = ContainerState::Killed;
                    c.reason = Some("released by the coordinator".into());
                } else if !a.stopping.contains(&id) {
                    a.stopping.push(id);
                }
            }
        }
        inner.dirty |= changed;
        // Place what can be placed.
        let pending = std::mem::take(&mut inner.p.apps.get_mut(&app).unwrap().pending);
        let mut keep = Vec::new();
        let mut allocated = Vec::new();
        for p in pending {
            let preferred_alive = p
                .ask
                .preferred_node
                .as_deref()
                .is_some_and(|n| inner.nodes.get(n).is_some_and(|n| n.state == NodeState::Running));
            let relaxed = !preferred_alive || now - p.since_ms >= p.ask.relax_after_ms as i64;
            match inner.place(&p.ask.resources, p.ask.preferred_node.as_deref(), relaxed) {
                Some(node) => {
                    let c = inner.new_container(&app, &node, p.ask.role, p.ask.resources);
                    allocated.push(Allocation {
                        container: c.id.clone(),
                        role: c.role,
                        node: node.clone(),
                        node_url: inner.nodes[&node].url.clone(),
                        resources: c.resources,
                    });
                    let a = inner.p.apps.get_mut(&app).unwrap();
                    let how = match &p.ask.preferred_node {
                        Some(n) if *n == node => " (its last node)".to_string(),
                        Some(n) => format!(" (not its last node {n})"),
                        None => String::new(),
                    };
                    push_event(a, format!("container {} allocated: {} on {node}{how}", c.role, c.id));
                }
                None => keep.push(p),
            }
        }
        let node_heartbeat_age_ms: BTreeMap<String, u64> = inner
            .nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Running)
            .map(|(id, n)| (id.clone(), n.last_heartbeat.elapsed().as_millis() as u64))
            .collect();
        let live_nodes = node_heartbeat_age_ms.keys().cloned().collect();
        let a = inner.p.apps.get_mut(&app).unwrap();
        a.pending = keep;
        let completed = std::mem::take(&mut a.undelivered);
        inner.dirty |= !completed.is_empty();
        Ok(AllocateReply {
            allocated,
            completed,
            live_nodes,
            node_heartbeat_age_ms,
            node_timeout_ms: node_timeout.as_millis() as u64,
        })
    })
}

/// Refuses a coordinator attempt that is not the application's current one
/// (a coordinator that was replaced while it was paused or cut off).
fn current_attempt(a: &App, attempt: u32) -> Result<(), ApiError> {
    if attempt != a.info.attempt {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("coordinator attempt {attempt} is not the current one ({})", a.info.attempt),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct AttemptQuery {
    attempt: u32,
}

async fn coordinator_state(
    State(rm): Shared,
    UrlPath(app): UrlPath<String>,
    Query(q): Query<AttemptQuery>,
    Json(v): Json<CoordinatorState>,
) -> Response {
    with_app(&rm, &app, |inner| {
        let a = inner.p.apps.get_mut(&app).unwrap();
        current_attempt(a, q.attempt)?;
        if a.info.state.is_final() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("application {app} is {:?}", a.info.state),
            ));
        }
        a.info.coordinator_state = Some(v);
        inner.dirty = true;
        Ok(serde_json::json!({}))
    })
}

async fn finish(State(rm): Shared, UrlPath(app): UrlPath<String>, Json(f): Json<Finish>) -> Response {
    with_app(&rm, &app, |inner| {
        if !f.state.is_final() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{:?} is not a final state", f.state),
            ));
        }
        let a = inner.p.apps.get_mut(&app).unwrap();
        current_attempt(a, f.attempt)?;
        if !a.info.state.is_final() {
            a.info.state = f.state;
            a.info.reason = f.reason.clone();
            let why = f.reason.map(|r| format!(": {r}")).unwrap_or_default();
            push_event(a, format!("application {}{why}", state_word(f.state)));
            inner.stop_all(&app);
        }
        Ok(inner.p.apps[&app].info.clone())
    })
}

#[derive(Deserialize)]
struct LeaseQuery {
    lease_ms: u64,
}

/// A container's lease while its coordinator cannot be reached (see
/// [`LeaseAnswer`]): granted only while its node has been heard from within
/// the node timeout less the lease, so that every lease on a node has run out
/// by the time the node is declared lost.
async fn container_lease(
    State(rm): Shared,
    UrlPath((app, id)): UrlPath<(String, String)>,
    Query(q): Query<LeaseQuery>,
) -> Response {
    let inner = rm.lock();
    let Some(a) = inner.p.apps.get(&app) else {
        return json_err(StatusCode::NOT_FOUND, format!("no application {app:?}"));
    };
    let gone =
        |why: String| Json(LeaseAnswer { granted: false, gone: true, reason: Some(why) }).into_response();
    let Some(c) = a.info.containers.iter().find(|c| c.id == id) else {
        return gone(format!("application {app} has no container {id}"));
    };
    if a.info.state.is_final() {
        return gone(format!("application {app} is {}", state_word(a.info.state)));
    }
    if c.state.is_done() || a.stopping.contains(&id) {
        return gone(format!("container {id} is {} at the resource manager", state_word(c.state)));
    }
    let lease = Duration::from_millis(q.lease_ms);
    let age = inner
        .nodes
        .get(&c.node)
        .filter(|n| n.state == NodeState::Running)
        .map(|n| n.last_heartbeat.elapsed());
    match age {
        Some(age) if samza_container::lease::renewable(age, rm.cfg.node_timeout, lease) => {
            Json(LeaseAnswer { granted: true, gone: false, reason: None }).into_response()
        }
        _ => Json(LeaseAnswer {
            granted: false,
            gone: false,
            reason: Some(format!("node {} is not heard from; lease not renewed", c.node)),
        })
        .into_response(),
    }
}

/// `SUCCEEDED`, `FAILED`, ... as on the wire.
pub fn state_word<T: Serialize>(state: T) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Runs a resource manager until the process ends: binds `bind`, writes the
/// URL it advertises (`cfg.advertised_url`: a host, host:port or URL; the
/// bound address when empty) to `<dir>/rm.url`.
pub async fn serve(mut cfg: RmConfig, bind: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    let addr = listener.local_addr()?;
    let advertise = Some(cfg.advertised_url.as_str()).filter(|a| !a.is_empty());
    let url = crate::nm::advertised_url(addr, advertise)?;
    cfg.advertised_url = url.clone();
    let dir = cfg.dir.clone();
    let rm = Rm::open(cfg)?;
    crate::durable::write_atomic(&layout::rm_url(&dir), url.as_bytes())?;
    tracing::info!(%url, dir = %dir.display(), "resource manager listening");
    tokio::spawn(rm.clone().run_duties());
    axum::serve(listener, rm.router()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(n: usize, state: ContainerState) -> ContainerInfo {
        ContainerInfo {
            id: format!("app-0001-c{n}"),
            node: "node-1".into(),
            state,
            resources: Resources::default(),
            pid: None,
            exit_code: Some(1),
            reason: None,
            role: Role::Container(0),
            attempt: 1,
        }
    }

    #[test]
    fn a_node_that_comes_back_kills_what_was_lost_with_it_and_stops_what_was_released() {
        let lost = container(1, ContainerState::Lost);
        let released = container(2, ContainerState::Running);
        let kept = container(3, ContainerState::Running);
        let info: AppInfo = serde_json::from_value(serde_json::json!({
            "app": "app-0001", "name": "j", "state": "RUNNING", "reason": null, "attempt": 1,
            "config": "", "base_dir": "", "overrides": [], "coordinator": {"memory_mb": 1, "vcores": 1},
            "containers": [lost, released, kept], "events": [], "coordinator_state": null,
            "submitted_ms": 0, "package_sha256": "00"
        }))
        .unwrap();
        let owner = info.containers.iter().map(|c| (c.id.clone(), "app-0001".to_string())).collect();
        let app = App { info, pending: vec![], undelivered: vec![], stopping: vec!["app-0001-c2".into()] };
        let mut inner = Inner {
            p: Persisted {
                next_app: 2,
                next_container: 10,
                apps: BTreeMap::from([("app-0001".into(), app)]),
            },
            nodes: BTreeMap::new(),
            owner,
            dirty: false,
            max_attempts: 2,
        };
        let report = |id: &str| NodeContainer {
            id: id.into(),
            app: "app-0001".into(),
            state: ContainerState::Running,
            pid: Some(42),
            exit_code: None,
            reason: None,
            resources: Resources::default(),
        };
        let reports: Vec<NodeContainer> =
            ["app-0001-c1", "app-0001-c2", "app-0001-c3", "app-0009-c7"].into_iter().map(report).collect();
        let reply = node_update(&mut inner, "node-1", &reports);
        // Lost with the node, or unknown: SIGKILL, no final commit. Released: a clean stop.
        assert_eq!(reply.kill, ["app-0001-c1", "app-0009-c7"]);
        assert_eq!(reply.stop, ["app-0001-c2"]);
        assert_eq!(inner.p.apps["app-0001"].info.containers[0].state, ContainerState::Lost, "stays lost");
    }

    #[test]
    fn ended_containers_beyond_the_history_are_forgotten_oldest_first() {
        let mut containers: Vec<ContainerInfo> =
            (0..KEEP_ENDED + 5).map(|n| container(n, ContainerState::Exited)).collect();
        containers.insert(3, container(999, ContainerState::Running));
        let undelivered = vec![container(1, ContainerState::Exited)];
        let info: AppInfo = serde_json::from_value(serde_json::json!({
            "app": "app-0001", "name": "j", "state": "RUNNING", "reason": null, "attempt": 1,
            "config": "", "base_dir": "", "overrides": [], "coordinator": {"memory_mb": 1, "vcores": 1},
            "containers": containers, "events": [], "coordinator_state": null, "submitted_ms": 0,
            "package_sha256": "00"
        }))
        .unwrap();
        let owner = info.containers.iter().map(|c| (c.id.clone(), "app-0001".to_string())).collect();
        let app = App { info, pending: vec![], undelivered, stopping: vec![] };
        let mut inner = Inner {
            p: Persisted {
                next_app: 2,
                next_container: 2000,
                apps: BTreeMap::from([("app-0001".into(), app)]),
            },
            nodes: BTreeMap::new(),
            owner,
            dirty: false,
            max_attempts: 2,
        };
        inner.prune_ended("app-0001");
        let ids: Vec<&str> = inner.p.apps["app-0001"].info.containers.iter().map(|c| c.id.as_str()).collect();
        // Five forgotten: c0, c2, c3, c4, c5 (c1 is not yet delivered to the coordinator).
        assert_eq!(ids.len(), KEEP_ENDED + 1);
        assert_eq!(&ids[..4], ["app-0001-c1", "app-0001-c999", "app-0001-c6", "app-0001-c7"]);
        assert!(!inner.owner.contains_key("app-0001-c0") && inner.owner.contains_key("app-0001-c1"));
        assert_eq!(inner.owner.len(), KEEP_ENDED + 1);
    }
}
