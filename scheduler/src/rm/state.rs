//! The resource manager's state and its decisions, without I/O: nodes and
//! their capacity, applications with their containers, asks and events, and
//! what a registration, a heartbeat, an allocate call or a lost node does to
//! them. `api.rs` locks it for a request; `persist.rs` writes what it
//! serializes to.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use samza_container::env;
use samza_container::http::ApiError;
use serde::{Deserialize, Serialize};

use crate::proto::*;

#[derive(Default, Serialize, Deserialize)]
pub(crate) struct Persisted {
    pub(crate) next_app: u64,
    pub(crate) next_container: u64,
    pub(crate) apps: BTreeMap<String, App>,
    /// The epoch of each node's credential that works (0, not listed: the
    /// first; each rotation revokes the one before).
    #[serde(default)]
    pub(crate) node_epochs: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct App {
    pub(crate) info: AppInfo,
    pub(crate) pending: Vec<Pending>,
    /// Ended containers the coordinator has not been told about yet.
    pub(crate) undelivered: Vec<ContainerInfo>,
    /// Containers to stop (released, or their application ended).
    pub(crate) stopping: Vec<String>,
    /// When its coordinator attempts failed (ms since the epoch), within
    /// the attempt-failures window; losses of a node are not counted.
    #[serde(default)]
    pub(crate) coordinator_failures: Vec<i64>,
    /// The application's token (`crate::auth`): its coordinator and
    /// containers are given it; it works while the application runs.
    #[serde(default)]
    pub(crate) token: String,
    /// The coordinator's own token (`crate::auth`): only its coordinator is
    /// given it; it works while the application runs.
    #[serde(default)]
    pub(crate) coordinator_token: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub(crate) ask: Ask,
    pub(crate) since_ms: i64,
}

pub(crate) struct Node {
    pub(crate) url: String,
    pub(crate) capacity: Resources,
    pub(crate) state: NodeState,
    pub(crate) last_heartbeat: Instant,
}

pub(crate) struct Inner {
    pub(crate) p: Persisted,
    pub(crate) nodes: BTreeMap<String, Node>,
    /// Container id -> application id.
    pub(crate) owner: BTreeMap<String, String>,
    pub(crate) dirty: bool,
    /// Coordinator failures within `attempt_window_ms` that fail the application.
    pub(crate) max_attempts: u32,
    pub(crate) attempt_window_ms: u64,
    /// The operator's token and the keys derived from it: node credentials,
    /// and the keys of grants.
    pub(crate) keys: crate::auth::Keys,
    /// Applications forgotten (`prune_apps`) within a grant's lifetime, and
    /// when: nodes are still told they ended.
    pub(crate) forgotten: BTreeMap<String, i64>,
}

/// Ended containers an application keeps in its record (see `Inner::prune_ended`).
pub(crate) const KEEP_ENDED: usize = 100;

pub(crate) use crate::now_ms;

pub(crate) fn push_event(app: &mut App, message: String) {
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
    /// The epoch of `node`'s credential that works now.
    pub(crate) fn node_epoch(&self, node: &str) -> u64 {
        self.p.node_epochs.get(node).copied().unwrap_or(0)
    }

    /// The key of grants and launch tokens on `node` (see `crate::grant`).
    pub(crate) fn grant_key(&self, node: &str) -> crate::grant::GrantKey {
        self.keys.grant_key(node, self.node_epoch(node))
    }

    /// Per node: memory and cores in use and the number of live containers,
    /// in one pass over the containers.
    pub(crate) fn usage(&self) -> BTreeMap<&str, (Resources, usize)> {
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
    pub(crate) fn place(&self, r: &Resources, preferred: Option<&str>, any: bool) -> Option<String> {
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

    pub(crate) fn new_container(
        &mut self,
        app: &str,
        node: &str,
        role: Role,
        resources: Resources,
    ) -> ContainerInfo {
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
    pub(crate) fn update_container(&mut self, id: &str, report: &NodeContainer) {
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
    pub(crate) fn prune_ended(&mut self, app_id: &str) {
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

    /// Forgets ended applications beyond the newest `keep`, and those that
    /// ended more than `max_age_ms` ago (their record, events and
    /// containers), so the state does not grow with every job ever run. An
    /// application is forgotten only once all its containers have ended.
    /// Returns the applications forgotten.
    pub(crate) fn prune_apps(&mut self, now_ms: i64, keep: usize, max_age_ms: u64) -> Vec<String> {
        let mut ended: Vec<(i64, String)> = self
            .p
            .apps
            .iter()
            .filter(|(_, a)| a.info.state.is_final() && a.info.containers.iter().all(|c| c.state.is_done()))
            .map(|(id, a)| (a.info.events.last().map_or(a.info.submitted_ms, |e| e.time_ms), id.clone()))
            .collect();
        ended.sort();
        let excess = ended.len().saturating_sub(keep);
        let forget: Vec<String> = ended
            .into_iter()
            .enumerate()
            .filter(|(i, (ended_ms, _))| *i < excess || now_ms.saturating_sub(*ended_ms) > max_age_ms as i64)
            .map(|(_, (_, id))| id)
            .collect();
        self.forgotten.retain(|_, at| now_ms.saturating_sub(*at) < crate::grant::GRANT_TTL_MS);
        for id in &forget {
            if let Some(a) = self.p.apps.remove(id) {
                for c in a.info.containers {
                    self.owner.remove(&c.id);
                }
                self.forgotten.insert(id.clone(), now_ms);
            }
        }
        if !forget.is_empty() {
            self.dirty = true;
        }
        forget
    }

    /// Ends a container for a reason its node did not report (node lost,
    /// launch failed, gone after a restart), as if its node had.
    pub(crate) fn end_container(&mut self, id: &str, state: ContainerState, reason: String) {
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
    pub(crate) fn container_ended(&mut self, app_id: &str, c: ContainerInfo) {
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
        // A budget within a window, as for job containers (YARN's attempt
        // failures validity interval): a long-running job survives a
        // coordinator failure a day, not a crash loop; a lost node is not a
        // failure of the coordinator.
        let now = now_ms();
        let window = i64::try_from(self.attempt_window_ms).unwrap_or(i64::MAX);
        app.coordinator_failures.retain(|t| now.saturating_sub(*t) < window);
        if c.state != ContainerState::Lost {
            app.coordinator_failures.push(now);
        }
        let failures = app.coordinator_failures.len() as u32;
        if failures >= self.max_attempts {
            app.info.state = AppState::Failed;
            app.info.reason = Some(format!(
                "the coordinator failed {failures} times within {}; last: {why}",
                crate::cli::human_duration(window)
            ));
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
    pub(crate) fn stop_all(&mut self, app_id: &str) {
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

    pub(crate) fn node_lost(&mut self, node: &str, why: &str) {
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

    /// Allocates a container for every accepted application's coordinator:
    /// the node manager's URL, the launch (carrying the application's token
    /// and, in its environment, the coordinator's), and the node's launch
    /// token for the application to send it with.
    pub(crate) fn place_coordinators(&mut self) -> Vec<(String, Launch, String)> {
        let waiting: Vec<String> = self
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
            let resources = self.p.apps[&app_id].info.coordinator;
            let Some(node) = self.place(&resources, None, true) else { continue };
            let c = self.new_container(&app_id, &node, Role::Coordinator, resources);
            let key = self.grant_key(&node);
            let app = self.p.apps.get_mut(&app_id).unwrap();
            app.info.state = AppState::Running;
            let attempt = app.info.attempt;
            push_event(app, format!("coordinator attempt {attempt} placed: {}", describe(&c)));
            // Each attempt its own token (YARN's AMRMToken is per attempt): a
            // replaced attempt that still runs can ask for nothing more.
            app.coordinator_token = crate::auth::new_coordinator_token(&app_id);
            let env = BTreeMap::from([
                (env::APP_ID.to_string(), app_id.clone()),
                (env::ATTEMPT.to_string(), attempt.to_string()),
                (env::COORDINATOR_TOKEN.to_string(), app.coordinator_token.clone()),
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
                grant: Some(key.sign_grant(
                    Grant {
                        container: c.id.clone(),
                        app: app_id.clone(),
                        job: app.info.name.clone(),
                        node: node.clone(),
                        resources,
                        token_sha256: crate::auth::sha256_hex(app.token.as_bytes()),
                        expires_ms: 0,
                        signature: String::new(),
                    },
                    now_ms(),
                )),
                app_token: app.token.clone(),
            };
            out.push((self.nodes[&node].url.clone(), launch, key.launch_token(&app_id)));
        }
        out
    }

    /// A coordinator's allocate call: takes its asks and releases, places
    /// what fits (its preferred node first, any node after the ask's relax
    /// time), and returns the allocations and the containers that ended.
    pub(crate) fn allocate(
        &mut self,
        app: &str,
        req: Allocate,
        node_timeout: Duration,
    ) -> Result<AllocateReply, ApiError> {
        let app = app.to_string();
        let a = self.p.apps.get_mut(&app).unwrap();
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
        self.dirty |= changed;
        // Place what can be placed.
        let pending = std::mem::take(&mut self.p.apps.get_mut(&app).unwrap().pending);
        let mut keep = Vec::new();
        let mut allocated = Vec::new();
        for p in pending {
            let preferred_alive = p
                .ask
                .preferred_node
                .as_deref()
                .is_some_and(|n| self.nodes.get(n).is_some_and(|n| n.state == NodeState::Running));
            let relaxed = !preferred_alive || now - p.since_ms >= p.ask.relax_after_ms as i64;
            match self.place(&p.ask.resources, p.ask.preferred_node.as_deref(), relaxed) {
                Some(node) => {
                    let c = self.new_container(&app, &node, p.ask.role, p.ask.resources);
                    let key = self.grant_key(&node);
                    allocated.push(Allocation {
                        container: c.id.clone(),
                        role: c.role,
                        node: node.clone(),
                        node_url: self.nodes[&node].url.clone(),
                        resources: c.resources,
                        grant: key.sign_grant(
                            Grant {
                                container: c.id.clone(),
                                app: app.clone(),
                                job: self.p.apps[&app].info.name.clone(),
                                node: node.clone(),
                                resources: c.resources,
                                token_sha256: crate::auth::sha256_hex(self.p.apps[&app].token.as_bytes()),
                                expires_ms: 0,
                                signature: String::new(),
                            },
                            now,
                        ),
                        launch_token: key.launch_token(&app),
                    });
                    let a = self.p.apps.get_mut(&app).unwrap();
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
        let node_heartbeat_age_ms: BTreeMap<String, u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.state == NodeState::Running)
            .map(|(id, n)| (id.clone(), n.last_heartbeat.elapsed().as_millis() as u64))
            .collect();
        let live_nodes = node_heartbeat_age_ms.keys().cloned().collect();
        let a = self.p.apps.get_mut(&app).unwrap();
        a.pending = keep;
        let completed = std::mem::take(&mut a.undelivered);
        self.dirty |= !completed.is_empty();
        Ok(AllocateReply {
            allocated,
            completed,
            live_nodes,
            node_heartbeat_age_ms,
            node_timeout_ms: node_timeout.as_millis() as u64,
        })
    }
}

/// Applies a node's container reports; returns the containers it must stop
/// (released, or their application ended) and those it must kill at once:
/// containers the resource manager no longer counts as the node's own (it
/// declared them lost with the node, or never knew them), whose tasks may
/// run elsewhere already, so they must not even commit.
pub(crate) fn node_update(inner: &mut Inner, node: &str, containers: &[NodeContainer]) -> HeartbeatReply {
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
    let operator_sha256 = Some(crate::auth::sha256_hex(inner.keys.operator().as_bytes()));
    let ended = inner.p.apps.iter().filter(|(_, a)| a.info.state.is_final()).map(|(id, _)| id);
    let ended_apps = ended.chain(inner.forgotten.keys()).cloned().collect();
    HeartbeatReply { known: true, stop, kill, operator_sha256, ended_apps }
}

/// Refuses a coordinator attempt that is not the application's current one
/// (a coordinator that was replaced while it was paused or cut off).
pub(crate) fn current_attempt(a: &App, attempt: u32) -> Result<(), ApiError> {
    if attempt != a.info.attempt {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("coordinator attempt {attempt} is not the current one ({})", a.info.attempt),
        ));
    }
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

    /// The RM's state over `p`, no node, a coordinator budget of 2 in 10 min.
    fn inner(p: Persisted, owner: BTreeMap<String, String>) -> Inner {
        Inner {
            p,
            nodes: BTreeMap::new(),
            owner,
            dirty: false,
            max_attempts: 2,
            attempt_window_ms: 600_000,
            keys: crate::auth::Keys::new("t"),
            forgotten: BTreeMap::new(),
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
        let app = App {
            info,
            pending: vec![],
            undelivered: vec![],
            stopping: vec!["app-0001-c2".into()],
            coordinator_failures: vec![],
            token: String::new(),
            coordinator_token: String::new(),
        };
        let mut inner = inner(
            Persisted {
                next_app: 2,
                next_container: 10,
                apps: BTreeMap::from([("app-0001".into(), app)]),
                ..Default::default()
            },
            owner,
        );
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
        let app = App {
            info,
            pending: vec![],
            undelivered,
            stopping: vec![],
            coordinator_failures: vec![],
            token: String::new(),
            coordinator_token: String::new(),
        };
        let mut inner = inner(
            Persisted {
                next_app: 2,
                next_container: 2000,
                apps: BTreeMap::from([("app-0001".into(), app)]),
                ..Default::default()
            },
            owner,
        );
        inner.prune_ended("app-0001");
        let ids: Vec<&str> = inner.p.apps["app-0001"].info.containers.iter().map(|c| c.id.as_str()).collect();
        // Five forgotten: c0, c2, c3, c4, c5 (c1 is not yet delivered to the coordinator).
        assert_eq!(ids.len(), KEEP_ENDED + 1);
        assert_eq!(&ids[..4], ["app-0001-c1", "app-0001-c999", "app-0001-c6", "app-0001-c7"]);
        assert!(!inner.owner.contains_key("app-0001-c0") && inner.owner.contains_key("app-0001-c1"));
        assert_eq!(inner.owner.len(), KEEP_ENDED + 1);
    }

    fn app(n: usize, state: &str, ended_ms: i64, container_state: ContainerState) -> (String, App) {
        let id = format!("app-{n:04}");
        let c = ContainerInfo { id: format!("{id}-c1"), ..container(0, container_state) };
        let info: AppInfo = serde_json::from_value(serde_json::json!({
            "app": id, "name": format!("j{n}"), "state": state, "reason": null, "attempt": 1,
            "config": "", "base_dir": "", "overrides": [], "coordinator": {"memory_mb": 1, "vcores": 1},
            "containers": [c],
            "events": [{"time_ms": ended_ms, "message": "application ended"}],
            "coordinator_state": null, "submitted_ms": 0, "package_sha256": "00"
        }))
        .unwrap();
        (
            id,
            App {
                info,
                pending: vec![],
                undelivered: vec![],
                stopping: vec![],
                coordinator_failures: vec![],
                token: String::new(),
                coordinator_token: String::new(),
            },
        )
    }

    #[test]
    fn ended_applications_are_kept_up_to_a_count_and_an_age_and_running_ones_always() {
        const DAY: i64 = 24 * 3600 * 1000;
        let mut apps: BTreeMap<String, App> =
            (0..105).map(|n| app(n, "SUCCEEDED", DAY + n as i64, ContainerState::Exited)).collect();
        apps.extend([app(900, "RUNNING", 0, ContainerState::Running)]);
        // Ended, but a container of it is still stopping: kept until it has.
        apps.extend([app(901, "KILLED", 0, ContainerState::Running)]);
        let owner =
            apps.values().flat_map(|a| &a.info.containers).map(|c| (c.id.clone(), String::new())).collect();
        let mut inner =
            inner(Persisted { next_app: 902, next_container: 2, apps, ..Default::default() }, owner);
        let forgotten = inner.prune_apps(DAY + 200, 100, 7 * DAY as u64);
        assert_eq!(
            forgotten,
            ["app-0000", "app-0001", "app-0002", "app-0003", "app-0004"],
            "the oldest ended first"
        );
        assert_eq!(inner.p.apps.len(), 102);
        assert!(!inner.owner.contains_key("app-0000-c1") && inner.owner.contains_key("app-0005-c1"));
        assert!(inner.dirty);
        // A week later every ended one is gone; the running and the stopping ones stay.
        let forgotten = inner.prune_apps(9 * DAY, 100, 7 * DAY as u64);
        assert_eq!(forgotten.len(), 100);
        assert_eq!(inner.p.apps.keys().collect::<Vec<_>>(), ["app-0900", "app-0901"]);
        assert_eq!(inner.owner.len(), 2);
    }

    #[test]
    fn nodes_are_told_of_ended_applications_and_of_those_forgotten_within_a_grants_lifetime() {
        let apps = BTreeMap::from([
            app(1, "KILLED", 1_000, ContainerState::Killed),
            app(900, "RUNNING", 0, ContainerState::Running),
        ]);
        let mut inner = inner(
            Persisted { next_app: 901, next_container: 2, apps, ..Default::default() },
            BTreeMap::new(),
        );
        let told = |inner: &mut Inner| node_update(inner, "node-1", &[]).ended_apps;
        assert_eq!(told(&mut inner), ["app-0001"]);
        let now = 10_000;
        assert_eq!(inner.prune_apps(now, 0, 0), ["app-0001"]);
        assert_eq!(told(&mut inner), ["app-0001"], "forgotten, but its grants may still be valid");
        inner.prune_apps(now + crate::grant::GRANT_TTL_MS - 1, 0, 0);
        assert_eq!(told(&mut inner), ["app-0001"]);
        inner.prune_apps(now + crate::grant::GRANT_TTL_MS, 0, 0);
        assert!(told(&mut inner).is_empty(), "every grant it held has expired");
    }

    #[test]
    fn coordinator_failures_fail_the_application_only_within_the_window_and_node_losses_do_not_count() {
        let (id, a) = app(1, "RUNNING", 0, ContainerState::Running);
        let mut inner = inner(
            Persisted {
                next_app: 2,
                next_container: 100,
                apps: BTreeMap::from([(id.clone(), a)]),
                ..Default::default()
            },
            BTreeMap::new(),
        );
        let coordinator = |attempt: u32, state: ContainerState| ContainerInfo {
            role: Role::Coordinator,
            attempt,
            exit_code: (state == ContainerState::Exited).then_some(137),
            ..container(50 + attempt as usize, state)
        };
        // A failure long ago (outside the window) and a lost node: neither counts.
        inner.p.apps.get_mut(&id).unwrap().coordinator_failures.push(now_ms() - 700_000);
        inner.container_ended(&id, coordinator(1, ContainerState::Lost));
        assert_eq!(inner.p.apps[&id].info.attempt, 2);
        inner.container_ended(&id, coordinator(2, ContainerState::Exited));
        let info = &inner.p.apps[&id].info;
        assert_eq!(
            (info.attempt, info.state),
            (3, AppState::Accepted),
            "one failure in the window: {:?}",
            info.reason
        );
        // A second failure within the window fails it.
        inner.container_ended(&id, coordinator(3, ContainerState::Exited));
        let info = &inner.p.apps[&id].info;
        assert_eq!(info.state, AppState::Failed);
        assert_eq!(
            info.reason.as_deref(),
            Some("the coordinator failed 2 times within 10 min 0 s; last: exit code 137")
        );
    }
}
