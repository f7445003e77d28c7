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
//!
//! `state.rs` holds the state and its decisions (no I/O), `api.rs` the HTTP
//! API, `persist.rs` the thread that writes the state file; this module
//! starts them and runs the background duties (lost nodes, coordinators to
//! place and launch).

mod api;
mod persist;
mod state;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use std::time::{Duration, Instant};

use axum::routing::{get, post, put};
use axum::Router;
use samza_container::http::{limit_bodies, JSON_BODY_LIMIT};
use serde::Serialize;

use samza_task_api::{Counter, MetricsRegistry, Timer};

use crate::auth;
use crate::layout;
use crate::proto::*;
use persist::Persister;
use state::{Inner, Node, Persisted};

pub(crate) use state::describe;

/// Settings of a resource manager.
#[derive(Clone, Debug)]
pub struct RmConfig {
    pub dir: PathBuf,
    /// A node without a heartbeat this long is lost.
    pub node_timeout: Duration,
    /// Coordinator failures (within `attempt_window`) that fail the application.
    pub max_attempts: u32,
    /// The window in which coordinator failures count (default 10 min).
    pub attempt_window: Duration,
    /// The URL containers use to reach this resource manager.
    pub advertised_url: String,
    /// Ended applications kept (the newest; older ones are forgotten) ...
    pub keep_ended_apps: usize,
    /// ... and for at most this long after they ended.
    pub ended_app_retention: Duration,
    /// The largest package (job binary) an upload may be.
    pub max_package_bytes: usize,
}

pub struct Rm {
    cfg: RmConfig,
    keys: auth::Keys,
    inner: Mutex<Inner>,
    persister: Arc<Persister>,
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
        let keys = auth::Keys::new(&token);
        let mut p = p;
        // Applications from before tokens were issued get theirs now (their
        // job binaries, built before, must be rebuilt and submitted again
        // to use them).
        let mut migrated = false;
        for a in p.apps.values_mut() {
            if a.token.is_empty() {
                a.token = auth::new_app_token(&a.info.app);
                migrated = true;
            }
            if a.coordinator_token.is_empty() {
                a.coordinator_token = auth::new_coordinator_token(&a.info.app);
                migrated = true;
            }
        }
        let (max_attempts, attempt_window_ms) = (cfg.max_attempts, cfg.attempt_window.as_millis() as u64);
        let persister = Persister::start(path)?;
        Ok(Arc::new(Rm {
            cfg,
            keys: keys.clone(),
            inner: Mutex::new(Inner {
                p,
                nodes,
                owner,
                dirty: migrated,
                max_attempts,
                attempt_window_ms,
                keys,
                forgotten: Default::default(),
            }),
            persister,
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

    /// The operator's token.
    pub fn token(&self) -> &str {
        self.keys.operator()
    }

    /// Who presents `token`: the operator, a node, or a running
    /// application's processes or coordinator (an ended application's
    /// tokens no longer work).
    fn caller(&self, token: &str) -> Result<auth::Caller, String> {
        if self.keys.is_operator(token) {
            return Ok(auth::Caller::Operator);
        }
        if let Some((node, epoch)) = self.keys.node_of(token) {
            let now = self.lock().node_epoch(&node);
            if epoch != now {
                return Err(format!(
                    "this credential of node {node} was rotated (it is epoch {epoch}; epoch {now} works): \
                     start its node manager with the new one (samza-run node-credential {node})"
                ));
            }
            return Ok(auth::Caller::Node(node));
        }
        let (app, coordinator) = match (auth::app_of_token(token), auth::app_of_coordinator_token(token)) {
            (Some(app), _) => (app, false),
            (_, Some(app)) => (app, true),
            _ => return Err("not a token of this cluster".into()),
        };
        let inner = self.lock();
        let Some(a) = inner.p.apps.get(&app) else { return Err("not a token of this cluster".into()) };
        let issued = if coordinator { &a.coordinator_token } else { &a.token };
        if issued.is_empty() || !auth::same(issued.as_bytes(), token.as_bytes()) {
            return Err("not a token of this cluster".into());
        }
        if a.info.state.is_final() {
            return Err(format!(
                "application {app} has ended ({}): its token no longer works",
                state_word(a.info.state)
            ));
        }
        Ok(if coordinator { auth::Caller::Coordinator(app) } else { auth::Caller::App(app) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the state for writing when it changed; returns the version to
    /// wait for (see [`Rm::written`]) before answering the change.
    fn persist(&self, inner: &mut Inner) -> Option<u64> {
        if !inner.dirty {
            return None;
        }
        inner.dirty = false;
        match serde_json::to_vec(&inner.p) {
            Ok(bytes) => Some(self.persister.submit(bytes)),
            Err(e) => {
                tracing::error!("cannot serialize resource manager state: {e}");
                None
            }
        }
    }

    /// Returns once the state queued as `version` is on disk.
    async fn written(&self, version: Option<u64>) {
        if let Some(v) = version {
            self.persister.written(v).await;
        }
    }

    pub fn router(self: &Arc<Self>) -> Router {
        let api = Router::new()
            .route("/v1/nodes", post(api::register).get(api::list_nodes))
            .route("/v1/nodes/{node}/heartbeat", post(api::heartbeat))
            .route("/v1/nodes/{node}/credential", post(api::node_credential))
            .route("/v1/apps", post(api::submit).get(api::list_apps))
            .route("/v1/apps/{app}", get(api::app_info))
            .route("/v1/apps/{app}/config", get(api::app_config))
            .route("/v1/apps/{app}/kill", post(api::kill))
            .route("/v1/apps/{app}/allocate", post(api::allocate))
            .route("/v1/apps/{app}/coordinator-state", put(api::coordinator_state))
            .route("/v1/apps/{app}/finish", post(api::finish))
            .route("/v1/apps/{app}/containers/{id}/lease", get(api::container_lease))
            .route("/v1/apps/{app}/metrics", get(api::app_metrics))
            .route("/v1/apps/{app}/stores/{store}/{key}", get(api::app_store))
            .route("/metrics", get(api::prometheus))
            .with_state(self.clone());
        let packages = Router::new()
            .route("/v1/packages/{sha}", put(api::upload).get(api::download))
            .with_state(self.clone());
        // Bodies are limited per use: JSON small, packages their own limit.
        let api =
            limit_bodies(api, JSON_BODY_LIMIT).merge(limit_bodies(packages, self.cfg.max_package_bytes));
        // The dashboard's page holds no data: it asks for the token and reads
        // the API above with it, as the CLI does.
        let refusals: auth::RefusalCounter = (self.metrics.registry.clone(), "rm.requests-refused");
        api.route_layer(axum::middleware::from_fn_with_state(self.clone(), authorize))
            .route_layer(axum::middleware::from_fn_with_state(refusals, auth::count_refusals))
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
                let keep = self.cfg.keep_ended_apps;
                let forgotten =
                    inner.prune_apps(state::now_ms(), keep, self.cfg.ended_app_retention.as_millis() as u64);
                if !forgotten.is_empty() {
                    tracing::info!(apps = ?forgotten, "forgot ended applications (retention)");
                }
                let launches = inner.place_coordinators();
                (launches, self.persist(&mut inner))
            };
            // A coordinator starts only once its container is on disk: a
            // restarted resource manager must know it (and not reuse its id).
            let (launches, saved) = launches;
            if !launches.is_empty() {
                self.written(saved).await;
            }
            for (node_url, launch, token) in launches {
                let rm = self.clone();
                tokio::spawn(async move { rm.launch_coordinator(node_url, launch, token).await });
            }
        }
    }

    /// Launches a coordinator, authorized by the node's launch token for its
    /// application (`launch_token`).
    async fn launch_coordinator(&self, node_url: String, launch: Launch, launch_token: String) {
        let r = self
            .http
            .post(format!("{node_url}/v1/containers"))
            .bearer_auth(launch_token)
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
        self.persist(&mut inner);
    }
}

/// The routes of an application that only its coordinator's token (and the
/// operator's) may call: its containers' tokens may not.
const COORDINATOR_ROUTES: [&str; 3] =
    ["/v1/apps/{app}/allocate", "/v1/apps/{app}/coordinator-state", "/v1/apps/{app}/finish"];

/// Who may call what (`crate::auth`): the operator everything; a
/// coordinator's token the routes of its own application, but for `kill`;
/// an application's token those too, but for the coordinator's own
/// (allocate, coordinator-state, finish); a node's credential its own
/// registration and heartbeats, and packages. Anything else is 401 (no
/// token of this cluster) or 403 (not in scope).
async fn authorize(
    State(rm): State<Arc<Rm>>,
    route: axum::extract::MatchedPath,
    params: axum::extract::RawPathParams,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use auth::Caller;
    use axum::http::{Method, StatusCode};
    let caller = match auth::bearer(req.headers()).map(|t| rm.caller(t)) {
        Some(Ok(c)) => c,
        Some(Err(why)) => return auth::error(StatusCode::UNAUTHORIZED, why),
        None => return auth::error(StatusCode::UNAUTHORIZED, "no token (Authorization: Bearer ...)"),
    };
    let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
    let method = req.method();
    let allowed = match (&caller, route.as_str()) {
        (Caller::Operator, _) => true,
        (Caller::App(_) | Caller::Coordinator(_), "/v1/apps/{app}/kill") => false,
        (Caller::App(_), r) if COORDINATOR_ROUTES.contains(&r) => false,
        (Caller::App(a) | Caller::Coordinator(a), r) if r.starts_with("/v1/apps/{app}") => {
            param("app") == Some(a.as_str())
        }
        (Caller::Node(n), "/v1/nodes/{node}/heartbeat") => param("node") == Some(n.as_str()),
        // The handler checks that the body names the credential's node.
        (Caller::Node(_), "/v1/nodes") => method == Method::POST,
        (Caller::Node(_), "/v1/packages/{sha}") => method == Method::GET || method == Method::HEAD,
        _ => false,
    };
    if !allowed {
        let what = format!("{} {}", method, req.uri().path());
        return auth::error(StatusCode::FORBIDDEN, format!("{caller} may not {what}"));
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
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
