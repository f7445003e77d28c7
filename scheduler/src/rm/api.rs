//! The resource manager's HTTP API: each handler checks its request, applies
//! it to the state (`state.rs`) under the lock, queues the new state for
//! writing and waits, without blocking an async thread, until it is durable
//! before it answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use samza_container::http::ApiError;
use serde::{Deserialize, Serialize};

use super::state::*;
use super::{state_word, Rm};
use crate::auth::{self, is_sha256, safe_name};
use crate::layout;
use crate::proto::*;

type Shared = State<Arc<Rm>>;

fn json_err(status: StatusCode, e: impl std::fmt::Display) -> Response {
    ApiError::new(status, e.to_string()).into_response()
}

pub(super) async fn register(
    State(rm): Shared,
    Extension(caller): Extension<auth::Caller>,
    Json(req): Json<RegisterNode>,
) -> Response {
    if !safe_name(&req.node) {
        return json_err(StatusCode::BAD_REQUEST, format!("invalid node name {:?}", req.node));
    }
    if matches!(&caller, auth::Caller::Node(n) if *n != req.node) {
        return json_err(StatusCode::FORBIDDEN, format!("{caller} may not register node {}", req.node));
    }
    let (reply, saved) = {
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
        let reported: std::collections::BTreeSet<&str> =
            req.containers.iter().map(|c| c.id.as_str()).collect();
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
        (reply, rm.persist(&mut inner))
    };
    rm.written(saved).await;
    Json(reply).into_response()
}

pub(super) async fn heartbeat(
    State(rm): Shared,
    UrlPath(node): UrlPath<String>,
    Json(hb): Json<NodeHeartbeat>,
) -> Response {
    rm.metrics.heartbeats.inc();
    let (reply, saved) = {
        let mut inner = rm.lock();
        match inner.nodes.get_mut(&node) {
            Some(n) if n.state == NodeState::Running => n.last_heartbeat = Instant::now(),
            // Lost, recovering after a restart, or never seen: register first.
            _ => {
                let reply = HeartbeatReply {
                    known: false,
                    stop: vec![],
                    kill: vec![],
                    operator_sha256: None,
                    ended_apps: vec![],
                };
                return Json(reply).into_response();
            }
        }
        let reply = node_update(&mut inner, &node, &hb.containers);
        (reply, rm.persist(&mut inner))
    };
    rm.written(saved).await;
    Json(reply).into_response()
}

#[derive(Deserialize)]
pub(super) struct CredentialQuery {
    /// Issue the next credential and revoke the one that works now.
    #[serde(default)]
    rotate: bool,
}

/// `POST /v1/nodes/{node}/credential[?rotate=true]` (the operator's): the
/// credential a node's manager registers and heartbeats with; rotated, the
/// next one, and the one before stops working at once (its node manager's
/// heartbeats are refused, so it must be restarted with the new one within
/// the node timeout to keep its containers).
pub(super) async fn node_credential(
    State(rm): Shared,
    UrlPath(node): UrlPath<String>,
    Query(q): Query<CredentialQuery>,
) -> Response {
    if !safe_name(&node) {
        return json_err(StatusCode::BAD_REQUEST, format!("invalid node name {node:?}"));
    }
    let (epoch, saved) = {
        let mut inner = rm.lock();
        let mut epoch = inner.node_epoch(&node);
        if q.rotate {
            epoch += 1;
            inner.p.node_epochs.insert(node.clone(), epoch);
            inner.dirty = true;
        }
        (epoch, rm.persist(&mut inner))
    };
    // A rotation is answered once it is on disk: a restarted resource
    // manager must not take the revoked credential back.
    rm.written(saved).await;
    let credential = rm.keys.node_credential(&node, epoch);
    if q.rotate {
        tracing::warn!(%node, epoch, "node credential rotated: the one before no longer works");
    } else {
        tracing::info!(%node, epoch, "node credential issued");
    }
    Json(NodeCredential { node, credential }).into_response()
}

pub(super) async fn list_nodes(State(rm): Shared) -> Response {
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

pub(super) async fn upload(State(rm): Shared, UrlPath(sha): UrlPath<String>, body: Bytes) -> Response {
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

pub(super) async fn download(
    State(rm): Shared,
    method: axum::http::Method,
    UrlPath(sha): UrlPath<String>,
) -> Response {
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

pub(super) async fn submit(State(rm): Shared, Json(s): Json<Submit>) -> Response {
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
    let (id, launches, saved) = {
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
            coordinator_failures: vec![],
            token: auth::new_app_token(&id),
            coordinator_token: auth::new_coordinator_token(&id),
        };
        push_event(&mut app, format!("submitted job {}", s.name));
        inner.p.apps.insert(id.clone(), app);
        inner.dirty = true;
        let launches = inner.place_coordinators();
        (id, launches, rm.persist(&mut inner))
    };
    rm.written(saved).await;
    for (url, launch, token) in launches {
        let rm = rm.clone();
        tokio::spawn(async move { rm.launch_coordinator(url, launch, token).await });
    }
    (StatusCode::CREATED, Json(Submitted { app: id })).into_response()
}

/// An application as it may be shown: the values of secret settings in its
/// job file and overrides redacted (`samza_container::config::redact`).
/// Its coordinator reads the whole file from `config`.
pub(super) fn shown(info: &AppInfo) -> AppInfo {
    let (config, overrides) = samza_container::config::redact(&info.config, &info.overrides);
    AppInfo { config, overrides, ..info.clone() }
}

/// `GET /v1/apps/{app}/config`: the job file and overrides as submitted,
/// secrets included, for the application's coordinator.
pub(super) async fn app_config(State(rm): Shared, UrlPath(app): UrlPath<String>) -> Response {
    with_app(&rm, &app, |inner| {
        let info = &inner.p.apps[&app].info;
        Ok(JobFile { config: info.config.clone(), overrides: info.overrides.clone() })
    })
    .await
}

pub(super) async fn list_apps(State(rm): Shared) -> Response {
    let inner = rm.lock();
    let apps: Vec<AppInfo> = inner.p.apps.values().map(|a| shown(&a.info)).collect();
    Json(apps).into_response()
}

/// Applies `f` to the state when application `app` exists, and answers
/// once what it changed is on disk.
pub(super) async fn with_app<T>(
    rm: &Rm,
    app: &str,
    f: impl FnOnce(&mut Inner) -> Result<T, ApiError>,
) -> Response
where
    T: Serialize,
{
    let (r, saved) = {
        let mut inner = rm.lock();
        if !inner.p.apps.contains_key(app) {
            return json_err(StatusCode::NOT_FOUND, format!("no application {app:?}"));
        }
        let r = f(&mut inner);
        (r, rm.persist(&mut inner))
    };
    rm.written(saved).await;
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn app_info(State(rm): Shared, UrlPath(app): UrlPath<String>) -> Response {
    with_app(&rm, &app, |inner| Ok(shown(&inner.p.apps[&app].info))).await
}

pub(super) async fn kill(State(rm): Shared, UrlPath(app): UrlPath<String>) -> Response {
    with_app(&rm, &app, |inner| {
        let a = inner.p.apps.get_mut(&app).unwrap();
        if !a.info.state.is_final() {
            a.info.state = AppState::Killed;
            a.info.reason = Some("killed on request".into());
            push_event(a, "application KILLED on request".into());
            inner.stop_all(&app);
        }
        Ok(shown(&inner.p.apps[&app].info))
    })
    .await
}

pub(super) async fn allocate(
    State(rm): Shared,
    UrlPath(app): UrlPath<String>,
    Json(req): Json<Allocate>,
) -> Response {
    let started = Instant::now();
    let node_timeout = rm.cfg.node_timeout;
    let r = with_app(&rm, &app, |inner| inner.allocate(&app, req, node_timeout)).await;
    rm.metrics.allocate.record(started.elapsed());
    r
}

/// The job's figures, from its coordinator (which gathers them from its
/// containers' heartbeats).
pub(super) async fn app_metrics(State(rm): Shared, UrlPath(app): UrlPath<String>) -> Response {
    to_coordinator(&rm, &app, "/v1/metrics".into(), Vec::new()).await
}

/// A key's value in a running job's store: the coordinator routes the read to
/// the container that owns the key (queryable state).
pub(super) async fn app_store(
    State(rm): Shared,
    UrlPath((app, store, key)): UrlPath<(String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let path = format!("/v1/stores/{}/{}", crate::client::encode(&store), crate::client::encode(&key));
    to_coordinator(&rm, &app, path, q.into_iter().filter(|(k, _)| k == "task").collect()).await
}

/// Forwards a GET to the application's current coordinator and passes its
/// answer back.
pub(super) async fn to_coordinator(
    rm: &Rm,
    app: &str,
    path: String,
    query: Vec<(String, String)>,
) -> Response {
    let (url, token) = {
        let inner = rm.lock();
        let Some(a) = inner.p.apps.get(app) else {
            return json_err(StatusCode::NOT_FOUND, format!("no application {app}"));
        };
        if a.info.state != AppState::Running {
            return json_err(StatusCode::CONFLICT, format!("application {app} is {:?}", a.info.state));
        }
        (a.info.coordinator_state.as_ref().and_then(|s| s.url.clone()), a.token.clone())
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
        .bearer_auth(token)
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
pub(super) async fn prometheus(State(rm): Shared) -> Response {
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

#[derive(Deserialize)]
pub(super) struct AttemptQuery {
    attempt: u32,
}

pub(super) async fn coordinator_state(
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
    .await
}

pub(super) async fn finish(
    State(rm): Shared,
    UrlPath(app): UrlPath<String>,
    Json(f): Json<Finish>,
) -> Response {
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
        Ok(shown(&inner.p.apps[&app].info))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct LeaseQuery {
    lease_ms: u64,
}

/// A container's lease while its coordinator cannot be reached (see
/// [`LeaseAnswer`]): granted only while its node has been heard from within
/// the node timeout less the lease, so that every lease on a node has run out
/// by the time the node is declared lost.
pub(super) async fn container_lease(
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
