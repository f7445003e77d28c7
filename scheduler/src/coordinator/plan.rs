//! The coordinator's decisions, without I/O: the job's state and what
//! happened in, the actions to take out. The loop in `mod.rs` feeds it the
//! resource manager's answers and the leases the HTTP thread keeps, and
//! carries out what it decides (asks, releases, launches, the end of the
//! job), so that adoption, the retry budget, host affinity, lease waits and
//! hung containers are decided in one place and tested without processes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::proto::*;

use super::Leases;

/// What happened since the last step.
#[derive(Debug)]
pub enum Event<'a> {
    /// This attempt starts: the application's containers as the resource
    /// manager knows them.
    Start { containers: &'a [ContainerInfo] },
    /// The resource manager allocated a container.
    Allocated(Allocation),
    /// Starting an allocated container on its node failed (it may have
    /// started after all: the answer may have been lost).
    LaunchFailed { n: u32, allocation: Allocation, error: String },
    /// A container of the application ended (or its node was lost);
    /// `log_line` is the last error line of its log, when it failed.
    Completed { container: ContainerInfo, log_line: Option<String> },
    /// Time passed: asks whose wait is over go out, silent containers are
    /// found hung.
    Tick,
}

/// What the coordinator must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Ask the resource manager for a container (in the next allocate call).
    Ask(Ask),
    /// Give a container back (the resource manager stops it).
    Release(String),
    /// Start the allocated container as job container `n` with `generation`
    /// (after the state is saved: a next attempt must know it may run).
    Launch { n: u32, allocation: Allocation, generation: u64 },
    /// End the application.
    Finish { state: AppState, reason: Option<String> },
}

/// The settings the decisions depend on.
#[derive(Clone, Debug)]
pub struct Policy {
    pub container_count: u32,
    pub resources: Resources,
    /// How long an ask waits for the container's last node (host affinity).
    pub host_affinity_timeout_ms: u64,
    /// More failures than this within the window fail the job.
    pub retry_count: u32,
    pub retry_window_ms: u64,
    /// A container silent this long is hung.
    pub heartbeat_timeout: Duration,
}

impl Policy {
    pub fn of(cfg: &samza_container::config::JobConfig) -> Policy {
        Policy {
            container_count: cfg.container_count,
            resources: Resources {
                memory_mb: cfg.cluster.container_memory_mb,
                vcores: cfg.cluster.container_vcores,
            },
            host_affinity_timeout_ms: cfg.cluster.host_affinity_timeout_ms,
            retry_count: cfg.cluster.retry_count,
            retry_window_ms: cfg.cluster.retry_window_ms,
            heartbeat_timeout: Duration::from_millis(cfg.cluster.container_heartbeat_timeout_ms),
        }
    }
}

/// The coordinator's state and decisions.
pub struct Plan {
    pub policy: Policy,
    /// What the coordinator keeps at the resource manager.
    pub st: CoordinatorState,
    /// Job containers to ask for once the old owner's lease has run out.
    delayed: Vec<(Instant, u32)>,
    /// Job container -> the cluster container started (or adopted) for it,
    /// and when: a container silent since then is hung.
    started: BTreeMap<u32, (String, Instant)>,
    /// The job's end was decided: nothing more is.
    finished: bool,
}

/// A container that ended on its own with a failure (not finished, not
/// lost with its node): its log is worth a look.
pub fn failed(c: &ContainerInfo) -> bool {
    !matches!((c.state, c.exit_code), (ContainerState::Exited, Some(0)) | (ContainerState::Lost, _))
}

impl Plan {
    pub fn new(policy: Policy, st: CoordinatorState) -> Plan {
        Plan { policy, st, delayed: Vec::new(), started: BTreeMap::new(), finished: false }
    }

    /// Whether every job container has finished.
    pub fn done(&self) -> bool {
        self.st.containers.values().all(|s| s.done)
    }

    /// Decides what `event` calls for. `leases` are the ones the coordinator
    /// grants (locked by the caller for the step); `now` and `now_ms` are the
    /// clock (monotonic, and wall time for the retry window).
    pub fn step(&mut self, leases: &mut Leases, now: Instant, now_ms: i64, event: Event<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match event {
            Event::Start { containers } => self.adopt(leases, now, now_ms, containers, &mut out),
            Event::Allocated(a) => self.allocated(leases, now, a, &mut out),
            Event::LaunchFailed { n, allocation, error } => {
                tracing::warn!(container = n, id = %allocation.container, node = %allocation.node, "launch failed: {error}");
                out.push(Action::Release(allocation.container));
                // It may have started after all: its successor waits a whole lease.
                let wait = leases.give_up(n, now);
                self.retry(
                    n,
                    &format!("cannot start it on {}: {error}", allocation.node),
                    Some(wait),
                    now,
                    now_ms,
                    &mut out,
                );
            }
            Event::Completed { container, log_line } => {
                self.completed(leases, now, now_ms, container, log_line, &mut out)
            }
            Event::Tick => {
                self.ask_due(now, &mut out);
                self.hung(leases, now, now_ms, &mut out);
            }
        }
        if !out.iter().any(|a| matches!(a, Action::Finish { .. })) && self.done() {
            out.push(Action::Finish { state: AppState::Succeeded, reason: None });
        }
        self.finished = out.iter().any(|a| matches!(a, Action::Finish { .. }));
        out
    }

    /// Adopts the containers of the last attempt that still run; asks again
    /// for the others (after a lease, when one may still hold it).
    fn adopt(
        &mut self,
        leases: &mut Leases,
        now: Instant,
        now_ms: i64,
        containers: &[ContainerInfo],
        out: &mut Vec<Action>,
    ) {
        let by_id: BTreeMap<&str, &ContainerInfo> = containers.iter().map(|c| (c.id.as_str(), c)).collect();
        for n in 0..self.policy.container_count {
            let slot = self.st.containers.entry(n).or_default();
            if slot.done {
                continue;
            }
            match slot.container.as_deref().and_then(|c| by_id.get(c)) {
                Some(c) if c.state == ContainerState::Running => {
                    tracing::info!(container = n, id = %c.id, node = %c.node, "adopted a running container");
                    // It may hold a lease from the last attempt: counted as granted now.
                    leases.own(n, &c.id, &c.node, Some(now));
                    self.started.insert(n, (c.id.clone(), now));
                }
                Some(c) if c.state == ContainerState::Exited && c.exit_code == Some(0) => slot.done = true,
                other => {
                    // A container the last attempt gave a lease to, not known to
                    // have ended, may still hold it: its successor waits a lease.
                    let ended = other
                        .is_some_and(|c| matches!(c.state, ContainerState::Exited | ContainerState::Killed));
                    if other.is_some_and(|c| c.state == ContainerState::Exited) {
                        self.st.failures.push_back(now_ms);
                    }
                    let wait = (slot.container.is_some() && !ended).then(|| now + leases.lease);
                    slot.container = None;
                    self.again(n, wait, now, out);
                }
            }
        }
    }

    fn allocated(&mut self, leases: &mut Leases, now: Instant, a: Allocation, out: &mut Vec<Action>) {
        let Role::Container(n) = a.role else {
            out.push(Action::Release(a.container));
            return;
        };
        let slot = self.st.containers.entry(n).or_default();
        if slot.container.is_some() || slot.done {
            out.push(Action::Release(a.container));
            return;
        }
        slot.container = Some(a.container.clone());
        slot.node = Some(a.node.clone());
        slot.node_url = Some(a.node_url.clone());
        self.st.generation = samza_container::lease::next_generation(self.st.generation);
        self.started.insert(n, (a.container.clone(), now));
        leases.own(n, &a.container, &a.node, None);
        out.push(Action::Launch { n, allocation: a, generation: self.st.generation });
    }

    fn completed(
        &mut self,
        leases: &mut Leases,
        now: Instant,
        now_ms: i64,
        c: ContainerInfo,
        log_line: Option<String>,
        out: &mut Vec<Action>,
    ) {
        let Some((&n, _)) = self.st.containers.iter().find(|(_, s)| s.container.as_deref() == Some(&c.id))
        else {
            return;
        };
        let slot = self.st.containers.get_mut(&n).expect("found above");
        slot.container = None;
        let lease_ends = leases.revoke(n);
        match (c.state, c.exit_code) {
            (ContainerState::Exited, Some(0)) => {
                tracing::info!(container = n, id = %c.id, "finished");
                slot.done = true;
            }
            (ContainerState::Lost, _) => {
                // Its process may still run (the node manager died alone, or
                // the node is cut off): the successor starts once the last
                // lease granted to it has run out. Not counted as a failure.
                let wait = lease_ends.filter(|t| *t > now);
                let after = wait.map_or(0.0, |t| t.saturating_duration_since(now).as_secs_f64());
                tracing::warn!(container = n, id = %c.id, node = %c.node, wait_s = after, "lost with its node; starting it elsewhere once its lease has run out");
                slot.restarts += 1;
                self.again(n, wait, now, out);
            }
            _ => {
                let mut why = match (c.exit_code, &c.reason) {
                    (Some(code), Some(r)) => format!("exit code {code}: {r}"),
                    (Some(code), None) => format!("exit code {code}"),
                    (None, Some(r)) => r.clone(),
                    (None, None) => format!("{:?}", c.state),
                };
                if let Some(line) = log_line {
                    why = format!("{why}; its log ends: {line}");
                }
                tracing::warn!(container = n, id = %c.id, node = %c.node, "failed: {why}");
                // Its node saw it end: no lease to wait for.
                self.retry(n, &format!("{} on {}: {why}", c.id, c.node), None, now, now_ms, out);
            }
        }
    }

    /// Hung containers: alive as far as their node knows, silent to us.
    fn hung(&mut self, leases: &mut Leases, now: Instant, now_ms: i64, out: &mut Vec<Action>) {
        let timeout = self.policy.heartbeat_timeout;
        let hung: Vec<(u32, String, Duration)> = self
            .st
            .containers
            .iter()
            .filter_map(|(n, slot)| {
                let id = slot.container.clone()?;
                let (sid, since) = self.started.get(n)?;
                if *sid != id {
                    return None;
                }
                let last = leases.last_heartbeat(*n, &id).map_or(*since, |h| h.max(*since));
                let silent = now.saturating_duration_since(last);
                (silent >= timeout).then_some((*n, id, silent))
            })
            .collect();
        for (n, id, silent) in hung {
            let why = format!("{id}: no heartbeat for {:.1} s; stopped as hung", silent.as_secs_f64());
            tracing::warn!(container = n, "{why}");
            out.push(Action::Release(id));
            self.started.remove(&n);
            // The resource manager may have renewed its lease until the release.
            let wait = leases.give_up(n, now);
            self.retry(n, &why, Some(wait), now, now_ms, out);
            if out.iter().any(|a| matches!(a, Action::Finish { .. })) {
                return;
            }
        }
    }

    fn ask(&self, n: u32) -> Ask {
        Ask {
            role: Role::Container(n),
            resources: self.policy.resources,
            // Host affinity: its last node, where its local state is. The
            // resource manager skips the wait when that node is not running.
            preferred_node: self.st.containers.get(&n).and_then(|s| s.node.clone()),
            relax_after_ms: self.policy.host_affinity_timeout_ms,
        }
    }

    /// Asks for job container `n` again, at once or not before `not_before`.
    fn again(&mut self, n: u32, not_before: Option<Instant>, now: Instant, out: &mut Vec<Action>) {
        match not_before {
            Some(t) if t > now => self.delayed.push((t, n)),
            _ => out.push(Action::Ask(self.ask(n))),
        }
    }

    /// The delayed asks that are due.
    fn ask_due(&mut self, now: Instant, out: &mut Vec<Action>) {
        let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(t, _)| *t <= now);
        self.delayed = later;
        for (_, n) in due {
            tracing::info!(container = n, "the old owner's lease has run out; asking for its successor");
            out.push(Action::Ask(self.ask(n)));
        }
    }

    /// After a failure of container `n`: counts it against the budget and
    /// asks for the container again (not before `not_before`), or fails the
    /// job when the budget is spent.
    fn retry(
        &mut self,
        n: u32,
        why: &str,
        not_before: Option<Instant>,
        now: Instant,
        now_ms: i64,
        out: &mut Vec<Action>,
    ) {
        let window = self.policy.retry_window_ms as i64;
        self.st.failures.push_back(now_ms);
        while self.st.failures.front().is_some_and(|t| now_ms - t > window) {
            self.st.failures.pop_front();
        }
        let count = self.st.failures.len() as u32;
        if count > self.policy.retry_count {
            let reason = format!(
                "{count} container failures within {} s (budget {}); last: container {n}: {why}",
                window / 1000,
                self.policy.retry_count
            );
            out.push(Action::Finish { state: AppState::Failed, reason: Some(reason) });
            return;
        }
        let slot = self.st.containers.get_mut(&n).expect("a slot per job container");
        slot.container = None;
        slot.restarts += 1;
        self.again(n, not_before, now, out);
    }
}

#[cfg(test)]
mod tests {
    use samza_task_api::metrics::Snapshot;

    use super::super::Beat;
    use super::*;

    fn policy() -> Policy {
        Policy {
            container_count: 2,
            resources: Resources { memory_mb: 100, vcores: 1 },
            host_affinity_timeout_ms: 5_000,
            retry_count: 2,
            retry_window_ms: 60_000,
            heartbeat_timeout: Duration::from_secs(30),
        }
    }

    fn leases() -> Leases {
        Leases {
            owners: BTreeMap::new(),
            beats: BTreeMap::new(),
            granted: BTreeMap::new(),
            node_seen: BTreeMap::new(),
            node_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(5),
            retired: 0,
        }
    }

    fn container(
        id: &str,
        n: u32,
        node: &str,
        state: ContainerState,
        exit_code: Option<i32>,
    ) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            node: node.into(),
            state,
            resources: Resources { memory_mb: 100, vcores: 1 },
            pid: None,
            exit_code,
            reason: None,
            role: Role::Container(n),
            attempt: 1,
        }
    }

    fn allocation(id: &str, n: u32, node: &str) -> Allocation {
        Allocation {
            container: id.into(),
            role: Role::Container(n),
            node: node.into(),
            node_url: format!("http://{node}"),
            resources: Resources { memory_mb: 100, vcores: 1 },
            grant: crate::grant::GrantKey::from_secret("t").sign(
                id,
                "app-0001",
                node,
                Resources { memory_mb: 100, vcores: 1 },
                "",
                0,
            ),
            launch_token: String::new(),
        }
    }

    fn slot(container: &str, node: &str) -> Slot {
        Slot { container: Some(container.into()), node: Some(node.into()), ..Slot::default() }
    }

    fn asks(actions: &[Action]) -> Vec<(Role, Option<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Ask(ask) => Some((ask.role, ask.preferred_node.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_attempt_adopts_what_runs_and_asks_again_for_the_rest_after_a_lease() {
        let now = Instant::now();
        let mut st = CoordinatorState::default();
        st.containers.insert(0, slot("a-c1", "n1"));
        st.containers.insert(1, slot("a-c2", "n2"));
        let mut plan = Plan::new(Policy { container_count: 3, ..policy() }, st);
        let mut l = leases();
        let known = [
            container("a-c1", 0, "n1", ContainerState::Running, None),
            // a-c2 is unknown to the resource manager: it may still hold a lease.
        ];
        let out = plan.step(&mut l, now, 0, Event::Start { containers: &known });
        assert_eq!(l.owners[&0].container, "a-c1", "adopted, with a lease counted from now");
        assert_eq!(l.granted["a-c1"], now);
        // Job container 2 never ran: asked for at once; 1 waits for its lease.
        assert_eq!(asks(&out), vec![(Role::Container(2), None)]);
        assert!(plan.step(&mut l, now + Duration::from_secs(4), 0, Event::Tick).is_empty());
        let out = plan.step(&mut l, now + Duration::from_secs(5), 0, Event::Tick);
        assert_eq!(asks(&out), vec![(Role::Container(1), Some("n2".into()))], "its last node first");
    }

    #[test]
    fn a_finished_container_is_not_run_again_and_the_job_succeeds_when_all_are_done() {
        let now = Instant::now();
        let mut st = CoordinatorState::default();
        st.containers.insert(0, slot("a-c1", "n1"));
        st.containers.insert(1, slot("a-c2", "n1"));
        let mut plan = Plan::new(policy(), st);
        let mut l = leases();
        let known = [
            container("a-c1", 0, "n1", ContainerState::Exited, Some(0)),
            container("a-c2", 1, "n1", ContainerState::Running, None),
        ];
        let out = plan.step(&mut l, now, 0, Event::Start { containers: &known });
        assert!(out.is_empty(), "{out:?}");
        let done = container("a-c2", 1, "n1", ContainerState::Exited, Some(0));
        let out = plan.step(&mut l, now, 0, Event::Completed { container: done, log_line: None });
        assert_eq!(out, vec![Action::Finish { state: AppState::Succeeded, reason: None }]);
    }

    #[test]
    fn allocations_launch_with_growing_generations_and_extras_are_released() {
        let now = Instant::now();
        let mut plan = Plan::new(policy(), CoordinatorState::default());
        let mut l = leases();
        plan.step(&mut l, now, 0, Event::Start { containers: &[] });
        let out = plan.step(&mut l, now, 0, Event::Allocated(allocation("a-c1", 0, "n1")));
        let Action::Launch { n: 0, generation: g1, .. } = out[0] else { panic!("{out:?}") };
        let out = plan.step(&mut l, now, 0, Event::Allocated(allocation("a-c2", 1, "n2")));
        let Action::Launch { n: 1, generation: g2, .. } = out[0] else { panic!("{out:?}") };
        assert!(g2 > g1 && g1 > 0);
        assert_eq!(l.owners[&1].container, "a-c2");
        // A second allocation for a job container that has one goes back.
        let out = plan.step(&mut l, now, 0, Event::Allocated(allocation("a-c3", 1, "n2")));
        assert_eq!(out, vec![Action::Release("a-c3".into())]);
        assert_eq!(plan.st.containers[&1].container.as_deref(), Some("a-c2"));
    }

    #[test]
    fn failures_spend_the_budget_and_losses_of_a_node_do_not() {
        let now = Instant::now();
        let mut plan = Plan::new(policy(), CoordinatorState::default());
        let mut l = leases();
        plan.step(&mut l, now, 0, Event::Start { containers: &[] });
        let mut t = 0;
        let mut run = |plan: &mut Plan, l: &mut Leases, id: &str| {
            plan.step(l, now, t, Event::Allocated(allocation(id, 0, "n1")));
            t += 1_000;
        };
        // A lost node: asked again, its last node preferred, not counted.
        run(&mut plan, &mut l, "a-c1");
        let lost = container("a-c1", 0, "n1", ContainerState::Lost, None);
        let out = plan.step(&mut l, now, 1_000, Event::Completed { container: lost, log_line: None });
        assert_eq!(asks(&out), vec![(Role::Container(0), Some("n1".into()))]);
        assert!(plan.st.failures.is_empty());
        // Failures: two are within the budget (2), the third fails the job.
        for (i, id) in ["a-c2", "a-c3", "a-c4"].into_iter().enumerate() {
            run(&mut plan, &mut l, id);
            let failed = ContainerInfo {
                reason: Some("boom".into()),
                ..container(id, 0, "n1", ContainerState::Exited, Some(1))
            };
            let log_line = Some("error: task failed".to_string());
            let out =
                plan.step(&mut l, now, 2_000 + i as i64, Event::Completed { container: failed, log_line });
            if i < 2 {
                assert_eq!(asks(&out).len(), 1, "{out:?}");
            } else {
                let [Action::Finish { state: AppState::Failed, reason: Some(r) }] = out.as_slice() else {
                    panic!("{out:?}")
                };
                assert_eq!(r, "3 container failures within 60 s (budget 2); last: container 0: a-c4 on n1: exit code 1: boom; its log ends: error: task failed");
            }
        }
        assert_eq!(plan.st.containers[&0].restarts, 3, "the loss and two failures");
    }

    #[test]
    fn failures_older_than_the_window_no_longer_count() {
        let now = Instant::now();
        let mut plan = Plan::new(policy(), CoordinatorState::default());
        let mut l = leases();
        plan.step(&mut l, now, 0, Event::Start { containers: &[] });
        for (i, t) in [0, 1_000, 70_000, 71_000].into_iter().enumerate() {
            let id = format!("a-c{i}");
            plan.step(&mut l, now, t, Event::Allocated(allocation(&id, 0, "n1")));
            let failed = container(&id, 0, "n1", ContainerState::Exited, Some(1));
            let out = plan.step(&mut l, now, t, Event::Completed { container: failed, log_line: None });
            assert!(!out.iter().any(|a| matches!(a, Action::Finish { .. })), "failure at {t} ms: {out:?}");
        }
        assert_eq!(plan.st.failures, [70_000, 71_000]);
    }

    #[test]
    fn a_lost_containers_successor_waits_for_its_last_lease() {
        let now = Instant::now();
        let mut plan = Plan::new(policy(), CoordinatorState::default());
        let mut l = leases();
        plan.step(&mut l, now, 0, Event::Start { containers: &[] });
        plan.step(&mut l, now, 0, Event::Allocated(allocation("a-c1", 0, "n1")));
        // The owner was granted a lease 1 s from now (5 s long).
        l.granted.insert("a-c1".into(), now + Duration::from_secs(1));
        let lost = container("a-c1", 0, "n1", ContainerState::Lost, None);
        let out = plan.step(
            &mut l,
            now + Duration::from_secs(2),
            0,
            Event::Completed { container: lost, log_line: None },
        );
        assert!(asks(&out).is_empty(), "not while its lease may run: {out:?}");
        assert!(!l.owners.contains_key(&0), "no longer the owner");
        assert!(asks(&plan.step(&mut l, now + Duration::from_millis(5_999), 0, Event::Tick)).is_empty());
        let out = plan.step(&mut l, now + Duration::from_secs(6), 0, Event::Tick);
        assert_eq!(asks(&out), vec![(Role::Container(0), Some("n1".into()))]);
    }

    #[test]
    fn a_silent_container_is_stopped_as_hung_and_replaced_after_a_lease() {
        let now = Instant::now();
        let mut plan = Plan::new(policy(), CoordinatorState::default());
        let mut l = leases();
        plan.step(&mut l, now, 0, Event::Start { containers: &[] });
        plan.step(&mut l, now, 0, Event::Allocated(allocation("a-c1", 0, "n1")));
        plan.step(&mut l, now, 0, Event::Allocated(allocation("a-c2", 1, "n1")));
        // Container 1 heartbeats; container 0 never does.
        let at = now + Duration::from_secs(29);
        l.beats.insert(1, Beat { container: "a-c2".into(), at, url: None, metrics: Snapshot::default() });
        assert!(plan.step(&mut l, now + Duration::from_secs(29), 0, Event::Tick).is_empty());
        let later = now + Duration::from_secs(30);
        let out = plan.step(&mut l, later, 0, Event::Tick);
        assert_eq!(out, vec![Action::Release("a-c1".into())], "only the silent one");
        assert_eq!(plan.st.failures.len(), 1, "a hung container counts as a failure");
        let out = plan.step(&mut l, later + Duration::from_secs(5), 0, Event::Tick);
        assert_eq!(asks(&out), vec![(Role::Container(0), Some("n1".into()))], "after a lease");
    }

    #[test]
    fn a_failed_launch_is_released_and_retried_after_a_lease() {
        let now = Instant::now();
        let mut plan = Plan::new(policy(), CoordinatorState::default());
        let mut l = leases();
        plan.step(&mut l, now, 0, Event::Start { containers: &[] });
        plan.step(&mut l, now, 0, Event::Allocated(allocation("a-c1", 0, "n1")));
        let event =
            Event::LaunchFailed { n: 0, allocation: allocation("a-c1", 0, "n1"), error: "refused".into() };
        let out = plan.step(&mut l, now, 0, event);
        assert_eq!(out, vec![Action::Release("a-c1".into())]);
        let out = plan.step(&mut l, now + Duration::from_secs(5), 0, Event::Tick);
        assert_eq!(asks(&out).len(), 1);
    }
}
