//! The container's run loop: one thread, no async. It polls the input systems
//! in batches, chooses which partition's messages go next (bootstrap streams
//! first, then by priority, round-robin among equals), calls `process`, hands
//! outputs to the producers, calls `window` on its timer (never while `process`
//! runs: same thread) and commits on its timer or when a task asks.
//!
//! Commit order (DESIGN invariant 1): flush every producer, so every output
//! sent so far is durable; only then write and flush the checkpoints. A crash
//! anywhere in between re-processes from the previous checkpoint: outputs may
//! repeat (at-least-once), input is never skipped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use samza_task_api::{
    IncomingMessageEnvelope, MessageCollector, MetricsRegistry, OutgoingMessageEnvelope, ProducerOwner,
    RequestScope, SerdeName, StreamTask, SystemAdmin, SystemConsumer, SystemError, SystemProducer,
    SystemStreamPartition, TaskCoordinator, TaskError, TaskFactory, TaskName, TaskRegistry,
};

use crate::checkpoint::{self, Checkpoint, CheckpointEntry};
use crate::config::{JobConfig, StoreConfig};
use crate::job_model;
use crate::systems::Systems;
use crate::tools::store_dir;
use samza_state::{system_clock, ChangelogSource, EngineKind, Marker, RestoreReport, TaskStore};
use samza_task_api::SharedStore;

/// Why a container stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{context}: {source}")]
    System {
        context: String,
        #[source]
        source: SystemError,
    },
    #[error("task {task} failed processing {ssp} offset {offset}: {source}")]
    Process {
        task: TaskName,
        ssp: SystemStreamPartition,
        offset: u64,
        #[source]
        source: TaskError,
    },
    #[error("task {task} failed in {phase}: {source}")]
    Task {
        task: TaskName,
        phase: &'static str,
        #[source]
        source: TaskError,
    },
    #[error("store {store} of task {task}: {source}")]
    Store {
        task: TaskName,
        store: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{0}")]
    Setup(String),
    /// The job's config was refused (a system's section, by its factory).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The JobModel cannot be computed (a missing input, inputs not co-partitioned).
    #[error(transparent)]
    Model(#[from] job_model::ModelError),
    /// The container no longer owns its tasks (lease expired or revoked);
    /// it stops without committing.
    #[error("no longer the owner of its tasks: {0}")]
    NotOwner(String),
}

impl ContainerError {
    /// Whether the container stopped because another took its tasks over
    /// (lease lost, or fenced by a newer epoch): not a failure of its own.
    pub fn lost_ownership(&self) -> bool {
        match self {
            ContainerError::NotOwner(_) => true,
            ContainerError::System { source, .. } => source.kind() == samza_task_api::SystemErrorKind::Fenced,
            _ => false,
        }
    }
}

fn sys<T>(r: Result<T, SystemError>, context: impl FnOnce() -> String) -> Result<T, ContainerError> {
    r.map_err(|source| ContainerError::System { context: context(), source })
}

/// How a container run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every input was bounded and has been read to its end.
    EndOfStream,
    /// Asked to stop (signal or every task voted to shut down).
    Shutdown,
    /// The job model gave this container no task.
    NoTasks,
}

/// What a container needs to run.
pub struct ContainerSpec {
    pub config: Arc<JobConfig>,
    pub container_id: u32,
    pub tasks: TaskRegistry,
    /// The job's systems, resolved by the job binary's registry.
    pub systems: Systems,
    /// Set by a signal handler (or a test) to stop after the current message.
    pub shutdown: Arc<AtomicBool>,
    /// Where to write the container's progress once a second, for `samza-run`.
    pub status_path: Option<PathBuf>,
    /// The JobModel served by the job's coordinator on a cluster; without
    /// one the container computes it (the same way) from the inputs.
    pub model: Option<job_model::JobModel>,
    /// The container's metrics (served over HTTP and sent in heartbeats by
    /// whoever created it); the run loop and the tasks update it.
    pub metrics: MetricsRegistry,
    /// Reads of keys from the tasks' stores (queryable state), answered
    /// between messages.
    pub queries: Option<std::sync::mpsc::Receiver<StoreQuery>>,
    /// Who writes: the container's identity and generation. Its producers
    /// fence older generations of the same container (systems that can).
    pub owner: Option<ProducerOwner>,
    /// On a cluster: the lease on the container's tasks. The loop stops,
    /// without committing, once it has run out.
    pub lease: Option<Arc<crate::lease::Lease>>,
}

pub use crate::query::{QueryAnswer, QueryError, StoreQuery};

mod report;
mod setup;

use report::UpcomingOffsets;

struct SspState {
    ssp: Arc<SystemStreamPartition>,
    task: usize,
    next_offset: u64,
    /// Bounded inputs end here (the offset they had when the job started).
    end: Option<u64>,
    /// Bootstrap streams are read to this offset before anything else.
    bootstrap_until: Option<u64>,
    priority: i32,
    key_serde: Option<SerdeName>,
    msg_serde: Option<SerdeName>,
    queue: VecDeque<IncomingMessageEnvelope>,
    /// Messages processed, counted here and published once a second.
    processed: u64,
    m_processed: samza_task_api::Counter,
    m_lag: samza_task_api::Gauge,
    m_offset: samza_task_api::Gauge,
}

impl SspState {
    fn done(&self) -> bool {
        self.end.is_some_and(|e| self.next_offset >= e)
    }

    fn bootstrapping(&self) -> bool {
        self.bootstrap_until.is_some_and(|u| self.next_offset < u)
    }
}

struct TaskInstance {
    name: TaskName,
    task: Box<dyn StreamTask>,
    ssps: Vec<usize>,
    collector: MessageCollector,
    coordinator: TaskCoordinator,
    dirty: bool,
    voted_shutdown: bool,
    /// `caught_up` has run (its bootstrap partitions reached their end).
    caught_up: bool,
    stores: Vec<StoreSlot>,
    /// Entered around the task's calls: its log lines name it.
    span: tracing::Span,
}

/// One store of one task, as the runtime sees it.
struct StoreSlot {
    name: String,
    shared: SharedStore,
    changelog: Option<SystemStreamPartition>,
    /// Next offset of the changelog partition (this task is its only writer).
    changelog_next: u64,
    /// Local directory and marker of a RocksDB store.
    persistent: Option<(PathBuf, Marker)>,
    report: RestoreReport,
}

fn with_store<T>(shared: &SharedStore, f: impl FnOnce(&mut TaskStore) -> T) -> T {
    let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.as_any_mut().downcast_mut::<TaskStore>().expect("stores are created by the runtime"))
}

/// Commit durations kept for the status's latency figures.
const COMMIT_TIMES: usize = 4096;

/// Messages processed per choice of partition before choosing again.
const RUN: usize = 256;

/// The factory of the job's `task.class` in this binary.
pub fn task_factory(cfg: &JobConfig, tasks: &TaskRegistry) -> Result<TaskFactory, ContainerError> {
    tasks.get(&cfg.task_class).cloned().ok_or_else(|| {
        ContainerError::Setup(format!(
            "task.class {:?} is not registered in this job binary (registered: {})",
            cfg.task_class,
            tasks.names().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Runs one container of the job until its inputs end, it is told to stop, or it fails.
pub fn run(spec: ContainerSpec) -> Result<Outcome, ContainerError> {
    let shutdown = spec.shutdown.clone();
    let container_id = spec.container_id;
    let setup = setup::Setup::open(spec)?;
    let Some(mut lp) = setup.build()? else {
        tracing::warn!(container = container_id, "the job model gives this container no task");
        return Ok(Outcome::NoTasks);
    };
    // After a failure nothing is committed: the next run resumes from the last
    // checkpoint, whose outputs are durable.
    let outcome = lp.run(&shutdown)?;
    if lp.cfg.window_ms > 0 {
        // A last window before the final commit, so windowed results include
        // everything processed (bounded input done, or a clean stop).
        lp.window()?;
    }
    // Then `close`, whose store writes and outputs the final commit includes.
    lp.close()?;
    lp.commit(WriteBack::All)?;
    lp.write_status(true);
    tracing::info!(container = container_id, ?outcome, processed = lp.processed(), "container stopped");
    Ok(outcome)
}

/// Whether a commit writes every store's pending entries back to its engine
/// or only those of stores where it is due (see `TaskStore::write_back_due`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WriteBack {
    WhenDue,
    All,
}

struct Loop {
    cfg: Arc<JobConfig>,
    container_id: u32,
    systems: Systems,
    admins: BTreeMap<String, Arc<dyn SystemAdmin>>,
    tasks: Vec<TaskInstance>,
    ssps: Vec<SspState>,
    consumers: BTreeMap<String, Box<dyn SystemConsumer>>,
    producers: Producers,
    lease: Option<Arc<crate::lease::Lease>>,
    /// At-least-once: the checkpoints' own producer. Under exactly-once
    /// they are written in the container's transaction instead.
    cp_producer: Option<Box<dyn SystemProducer>>,
    cp_stream: samza_task_api::SystemStream,
    /// Commits are transactions (`task.processing-guarantee`).
    exactly_once: bool,
    /// Consumer's `Arc<SystemStreamPartition>` address -> index in `ssps`.
    index: HashMap<usize, usize>,
    poll_buf: Vec<IncomingMessageEnvelope>,
    m_processed: samza_task_api::Counter,
    /// Per message, the mean of each run of messages from one partition.
    m_process: samza_task_api::Timer,
    m_commit: samza_task_api::Timer,
    /// The last [`COMMIT_TIMES`] commits' durations (µs), for the status.
    commit_times: Vec<u32>,
    m_window: samza_task_api::Timer,
    status_path: Option<PathBuf>,
    queries: Option<std::sync::mpsc::Receiver<StoreQuery>>,
    upcoming: UpcomingOffsets,
    metrics: MetricsRegistry,
    last_snapshot: Instant,
    last_status: Instant,
    /// Set by stores whose dirty entries reached their write batch size.
    commit_requested: Arc<AtomicBool>,
}

/// The producers of the systems the tasks write to, opened on first use
/// (and fenced as the container's owner when it has one).
#[derive(Default)]
struct Producers {
    open: Vec<(Arc<str>, Box<dyn SystemProducer>)>,
    /// Index of the system sent to last: most jobs write to one system.
    last: usize,
    owner: Option<ProducerOwner>,
}

impl Producers {
    /// The producer of `system`, opened (and fenced) when missing.
    fn open(&mut self, cfg: &JobConfig, systems: &Systems, system: &str) -> Result<usize, ContainerError> {
        if let Some(i) = self.open.iter().position(|(n, _)| &**n == system) {
            return Ok(i);
        }
        if !cfg.systems.contains_key(system) {
            return Err(ContainerError::Setup(format!("system {system:?} is not defined under [systems]")));
        }
        let mut p = sys(systems.producer(system), || format!("cannot open producer of system {system}"))?;
        if let Some(owner) = &self.owner {
            sys(p.fence(owner, &[]), || {
                format!("cannot fence the producer of system {system} as {}", owner.id)
            })?;
        }
        self.open.push((Arc::from(system), p));
        Ok(self.open.len() - 1)
    }

    /// Raises the owner's epoch on `ssps` of `system` now.
    fn fence(
        &mut self,
        cfg: &JobConfig,
        systems: &Systems,
        system: &str,
        ssps: &[SystemStreamPartition],
    ) -> Result<(), ContainerError> {
        let i = self.open(cfg, systems, system)?;
        let Some(owner) = &self.owner else { return Ok(()) };
        let (name, p) = &mut self.open[i];
        sys(p.fence(owner, ssps), || {
            format!("cannot take over the changelogs of {} in system {name}", owner.id)
        })
    }

    fn send(
        &mut self,
        cfg: &JobConfig,
        systems: &Systems,
        out: OutgoingMessageEnvelope,
    ) -> Result<(), ContainerError> {
        let system = &out.stream.system;
        let hit = self.open.get(self.last).is_some_and(|(n, _)| Arc::ptr_eq(n, system) || n == system);
        if !hit {
            if !cfg.systems.contains_key(&**system) {
                return Err(ContainerError::Setup(format!(
                    "output stream {} names system {system:?}, which is not defined under [systems]",
                    out.stream
                )));
            }
            self.last = self.open(cfg, systems, system)?;
        }
        let (name, producer) = &mut self.open[self.last];
        sys(producer.send(out), || format!("cannot send to system {name}"))
    }

    fn flush(&mut self) -> Result<(), ContainerError> {
        for (system, p) in &mut self.open {
            sys(p.flush(), || format!("cannot flush output to system {system}"))?;
        }
        Ok(())
    }

    /// Commits the open transaction of `system`'s producer (exactly-once):
    /// the partitions written, with their next offsets.
    fn commit(
        &mut self,
        cfg: &JobConfig,
        systems: &Systems,
        system: &str,
    ) -> Result<Vec<(SystemStreamPartition, u64)>, ContainerError> {
        let i = self.open(cfg, systems, system)?;
        sys(self.open[i].1.commit_transaction(), || {
            format!("cannot commit the transaction in system {system}")
        })
    }
}

impl Loop {
    fn run(&mut self, shutdown: &AtomicBool) -> Result<Outcome, ContainerError> {
        self.write_status(false);
        let mut commit = false;
        for t in 0..self.tasks.len() {
            match self.catch_up(t)? {
                Some(Stop::Shutdown) => return Ok(Outcome::Shutdown),
                Some(Stop::Commit) => commit = true,
                None => {}
            }
        }
        if commit {
            self.commit(WriteBack::WhenDue)?;
        }
        let window = (self.cfg.window_ms > 0).then(|| Duration::from_millis(self.cfg.window_ms));
        let commit_every = Duration::from_millis(self.cfg.commit_ms);
        let mut next_window = window.map(|w| Instant::now() + w);
        let mut next_commit = Instant::now() + commit_every;
        let mut rr = 0usize;
        loop {
            self.check_lease()?;
            if shutdown.load(Ordering::Relaxed) {
                return Ok(Outcome::Shutdown);
            }
            if !self.ssps.is_empty() && self.ssps.iter().all(SspState::done) {
                return Ok(Outcome::EndOfStream);
            }
            let now = Instant::now();
            if let Some(w) = window {
                if now >= next_window.unwrap() {
                    next_window = Some(now + w);
                    match self.window()? {
                        Some(Stop::Shutdown) => return Ok(Outcome::Shutdown),
                        Some(Stop::Commit) => {
                            self.commit(WriteBack::WhenDue)?;
                            next_commit = now + commit_every;
                        }
                        None => {}
                    }
                }
            }
            if now >= next_commit {
                self.commit(WriteBack::WhenDue)?;
                next_commit = now + commit_every;
            }
            if now.duration_since(self.last_status) >= Duration::from_secs(1) {
                self.write_status(false);
            }
            self.answer_queries();

            let buffered: usize = self.ssps.iter().map(|s| s.queue.len()).sum();
            if buffered < self.cfg.poll_batch / 2 {
                let deadline = next_window.map_or(next_commit, |w| w.min(next_commit));
                let wait = if buffered == 0 {
                    deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100))
                } else {
                    Duration::ZERO
                };
                self.poll(wait)?;
                // A bootstrap partition may have ended on a marker.
                if self.tasks.iter().any(|t| !t.caught_up) {
                    for t in 0..self.tasks.len() {
                        match self.catch_up(t)? {
                            Some(Stop::Shutdown) => return Ok(Outcome::Shutdown),
                            Some(Stop::Commit) => {
                                self.commit(WriteBack::WhenDue)?;
                                next_commit = Instant::now() + commit_every;
                            }
                            None => {}
                        }
                    }
                }
            }

            let Some(g) = self.choose(&mut rr) else {
                // Nothing buffered may go next (a bootstrap partition waits
                // for its messages behind a full buffer of others): read on
                // regardless of the buffer, briefly, so it never stalls.
                if buffered >= self.cfg.poll_batch / 2 {
                    self.poll(Duration::from_millis(10))?;
                }
                continue;
            };
            let mut stop = None;
            let span = self.tasks[self.ssps[g].task].span.clone();
            let _in_task = span.enter();
            let started = Instant::now();
            let mut n = 0u32;
            for _ in 0..RUN {
                let Some(env) = self.ssps[g].queue.pop_front() else {
                    break;
                };
                n += 1;
                if let Some(s) = self.process(g, env)? {
                    stop = Some(s);
                    break;
                }
            }
            if n > 0 {
                self.m_process.record(started.elapsed() / n);
            }
            if self.commit_requested.swap(false, Ordering::Relaxed) && stop.is_none() {
                stop = Some(Stop::Commit);
            }
            match stop {
                Some(Stop::Shutdown) => return Ok(Outcome::Shutdown),
                Some(Stop::Commit) => {
                    self.commit(WriteBack::WhenDue)?;
                    next_commit = Instant::now() + commit_every;
                }
                None => {}
            }
        }
    }

    fn processed(&self) -> u64 {
        self.ssps.iter().map(|s| s.processed).sum()
    }

    /// Answers the store reads that arrived since the last call.
    fn answer_queries(&mut self) {
        let Some(rx) = &self.queries else {
            return;
        };
        while let Ok(q) = rx.try_recv() {
            let mut found = Ok(None);
            let mut has_store = false;
            for task in self.tasks.iter().filter(|t| q.task.as_deref().is_none_or(|n| n == t.name.as_str())) {
                for slot in task.stores.iter().filter(|s| s.name == q.store) {
                    has_store = true;
                    match with_store(&slot.shared, |st| samza_task_api::RawStore::get(st, &q.key)) {
                        Ok(Some(v)) => found = Ok(Some((task.name.as_str().to_string(), v))),
                        Ok(None) => {}
                        Err(source) => {
                            found = Err(QueryError::Failed {
                                task: task.name.clone(),
                                store: q.store.clone(),
                                source,
                            })
                        }
                    }
                }
                if !matches!(found, Ok(None)) {
                    break;
                }
            }
            if !has_store {
                found = Err(QueryError::NotHere(match &q.task {
                    Some(t) => format!("this container has no task {t:?} with a store {:?}", q.store),
                    None => format!("this container's tasks have no store {:?}", q.store),
                }));
            }
            let _ = q.reply.send(found);
        }
    }

    /// Fills the partition queues from every consumer.
    fn poll(&mut self, wait: Duration) -> Result<(), ContainerError> {
        let systems: Vec<String> = self.consumers.keys().cloned().collect();
        let n = systems.len();
        for (i, system) in systems.iter().enumerate() {
            // Only the last system polled may block, and only when nothing is buffered.
            let w = if i + 1 == n { wait } else { Duration::ZERO };
            self.poll_buf.clear();
            let consumer = self.consumers.get_mut(system).unwrap();
            sys(consumer.poll(&mut self.poll_buf, self.cfg.poll_batch, w), || {
                format!("cannot read from system {system}")
            })?;
            let mut last = (0usize, 0usize);
            for env in self.poll_buf.drain(..) {
                let key = Arc::as_ptr(&env.ssp) as usize;
                // Consecutive messages mostly come from one partition.
                let g = match (key == last.0).then_some(last.1).or_else(|| self.index.get(&key).copied()) {
                    Some(g) => g,
                    None => {
                        let g = self.ssps.iter().position(|s| *s.ssp == *env.ssp).ok_or_else(|| {
                            ContainerError::Setup(format!(
                                "consumer returned a message of unregistered partition {}",
                                env.ssp
                            ))
                        })?;
                        self.index.insert(key, g);
                        g
                    }
                };
                last = (key, g);
                let s = &mut self.ssps[g];
                // A bounded input ends where it was when the job started.
                if s.end.is_some_and(|e| env.offset >= e) {
                    continue;
                }
                s.queue.push_back(env);
            }
        }
        // Transaction markers (and compaction's gaps) take offsets no
        // message carries: a bounded or bootstrap partition whose messages
        // are all processed is as far as its consumer has read, so it ends.
        for s in self.ssps.iter_mut() {
            let short = s.end.is_some_and(|e| s.next_offset < e) || s.bootstrapping();
            if !short || !s.queue.is_empty() {
                continue;
            }
            let system = &*s.ssp.system_stream.system;
            if let Some(p) = self.consumers.get(system).and_then(|c| c.position(&s.ssp)) {
                s.next_offset = s.next_offset.max(p.min(s.end.unwrap_or(u64::MAX)));
            }
        }
        Ok(())
    }

    /// The partition whose messages go next: bootstrap partitions until caught
    /// up; otherwise the highest priority, round-robin among equals.
    fn choose(&self, rr: &mut usize) -> Option<usize> {
        let n = self.ssps.len();
        let bootstrapping = self.ssps.iter().any(SspState::bootstrapping);
        let mut best: Option<usize> = None;
        for k in 0..n {
            let g = (*rr + k) % n;
            let s = &self.ssps[g];
            if s.queue.is_empty() || (bootstrapping && !s.bootstrapping()) {
                continue;
            }
            if best.is_none_or(|b| s.priority > self.ssps[b].priority) {
                best = Some(g);
            }
        }
        if let Some(b) = best {
            *rr = (b + 1) % n;
        }
        best
    }

    fn process(&mut self, g: usize, env: IncomingMessageEnvelope) -> Result<Option<Stop>, ContainerError> {
        let s = &self.ssps[g];
        let t = s.task;
        let task = &mut self.tasks[t];
        let fail = |source: TaskError| ContainerError::Process {
            task: task.name.clone(),
            ssp: (*env.ssp).clone(),
            offset: env.offset,
            source,
        };
        if let (Some(serde), Some(k)) = (s.key_serde, env.key.as_deref()) {
            serde
                .check(k)
                .map_err(|e| fail(TaskError::serde(format!("key does not decode as {serde:?}: {e}"))))?;
        }
        if let (Some(serde), Some(m)) = (s.msg_serde, env.message.as_deref()) {
            serde
                .check(m)
                .map_err(|e| fail(TaskError::serde(format!("message does not decode as {serde:?}: {e}"))))?;
        }
        task.task.process(&env, &mut task.collector, &mut task.coordinator).map_err(fail)?;
        task.dirty = true;
        let s = &mut self.ssps[g];
        s.next_offset = env.offset + 1;
        s.processed += 1;
        // Checked only until the task is caught up: afterwards this is one branch.
        let bootstrap_done = !self.tasks[t].caught_up && s.bootstrap_until.is_some() && !s.bootstrapping();
        let stop = self.after_call(t)?;
        if bootstrap_done {
            return Ok(match (self.catch_up(t)?, stop) {
                (Some(Stop::Shutdown), _) | (_, Some(Stop::Shutdown)) => Some(Stop::Shutdown),
                (a, b) => a.or(b),
            });
        }
        Ok(stop)
    }

    /// Calls task `t`'s `caught_up` once all its bootstrap partitions have
    /// reached their end (once per run).
    fn catch_up(&mut self, t: usize) -> Result<Option<Stop>, ContainerError> {
        let task = &self.tasks[t];
        if task.caught_up || task.ssps.iter().any(|i| self.ssps[*i].bootstrapping()) {
            return Ok(None);
        }
        let task = &mut self.tasks[t];
        task.caught_up = true;
        let _in_task = task.span.clone().entered();
        task.task
            .caught_up(&mut task.collector, &mut task.coordinator)
            .map_err(|e| ContainerError::Task { task: task.name.clone(), phase: "caught_up", source: e })?;
        task.dirty = true;
        self.after_call(t)
    }

    /// Sends what task `t` collected and acts on its requests.
    fn after_call(&mut self, t: usize) -> Result<Option<Stop>, ContainerError> {
        let task = &mut self.tasks[t];
        for out in task.collector.drain() {
            self.producers.send(&self.cfg, &self.systems, out)?;
        }
        let (commit, shutdown) = task.coordinator.take_requests();
        match shutdown {
            Some(RequestScope::AllTasksInContainer) => return Ok(Some(Stop::Shutdown)),
            Some(RequestScope::CurrentTask) => {
                task.voted_shutdown = true;
                if self.tasks.iter().all(|t| t.voted_shutdown) {
                    return Ok(Some(Stop::Shutdown));
                }
            }
            None => {}
        }
        Ok(commit.map(|_| Stop::Commit))
    }

    /// Calls every task's `window`; returns what the tasks asked for.
    fn window(&mut self) -> Result<Option<Stop>, ContainerError> {
        self.m_window.clone().time(|| self.window_tasks())
    }

    fn window_tasks(&mut self) -> Result<Option<Stop>, ContainerError> {
        let mut stop = None;
        for t in 0..self.tasks.len() {
            let task = &mut self.tasks[t];
            let _in_task = task.span.clone().entered();
            task.task
                .window(&mut task.collector, &mut task.coordinator)
                .map_err(|e| ContainerError::Task { task: task.name.clone(), phase: "window", source: e })?;
            task.dirty = true;
            match (self.after_call(t)?, stop) {
                (Some(Stop::Shutdown), _) => stop = Some(Stop::Shutdown),
                (Some(Stop::Commit), None) => stop = Some(Stop::Commit),
                _ => {}
            }
        }
        Ok(stop)
    }

    /// Flushes every producer, then checkpoints every task that moved.
    fn commit(&mut self, write_back: WriteBack) -> Result<(), ContainerError> {
        let started = Instant::now();
        let r = self.commit_now(write_back);
        let took = started.elapsed();
        self.m_commit.record(took);
        if self.commit_times.len() == COMMIT_TIMES {
            self.commit_times.remove(0);
        }
        self.commit_times.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
        r
    }

    fn commit_now(&mut self, write_back: WriteBack) -> Result<(), ContainerError> {
        self.check_lease()?;
        // 1. Dirty store entries go to their changelogs.
        for task in self.tasks.iter_mut() {
            for slot in task.stores.iter_mut() {
                let batch = with_store(&slot.shared, TaskStore::take_dirty);
                if batch.is_empty() {
                    continue;
                }
                if let Some(ssp) = &slot.changelog {
                    slot.changelog_next += batch.len() as u64;
                    for (k, v) in batch {
                        let env = OutgoingMessageEnvelope::new(ssp.system_stream.clone(), Some(k), v)
                            .with_partition(ssp.partition);
                        self.producers.send(&self.cfg, &self.systems, env)?;
                    }
                }
                task.dirty = true;
            }
        }
        if self.exactly_once {
            // 2. The checkpoints join the outputs and changelog writes in the
            //    transaction, which commits them all at once, while the
            //    tasks are still ours.
            self.send_checkpoints(None)?;
            self.check_lease()?;
            let written =
                self.producers.commit(&self.cfg, &self.systems, &self.cfg.checkpoint_system.clone())?;
            for slot in self.tasks.iter_mut().flat_map(|t| t.stores.iter_mut()) {
                if let Some((_, next)) = written.iter().find(|(ssp, _)| Some(ssp) == slot.changelog.as_ref())
                {
                    slot.changelog_next = *next;
                }
            }
            // 3. Only committed writes reach the engines, so a crash never
            //    leaves an engine ahead of its committed changelog.
            self.write_back(write_back)?;
            samza_task_api::crash::crash_point("commit-written-back");
            return Ok(());
        }
        // 2. Outputs and changelogs become durable.
        self.producers.flush()?;
        samza_task_api::crash::crash_point("commit-flushed");
        // 3. Only then may the stores write back to their engines, and their
        //    markers move to the changelogs' ends.
        self.write_back(write_back)?;
        samza_task_api::crash::crash_point("commit-written-back");
        // 4. Checkpoints, only while the tasks are still ours.
        self.check_lease()?;
        let mut producer = self.cp_producer.take().expect("at-least-once has a checkpoint producer");
        let sent = self.send_checkpoints(Some(producer.as_mut()));
        let flushed = match sent {
            Ok(true) => sys(producer.flush(), || format!("cannot flush checkpoints to {}", self.cp_stream)),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        self.cp_producer = Some(producer);
        flushed
    }

    /// Writes back the stores whose time has come (all with `WriteBack::All`;
    /// a store without a changelog at every commit: its engine is the only
    /// copy of its writes) and moves their markers to the changelogs' ends.
    fn write_back(&mut self, write_back: WriteBack) -> Result<(), ContainerError> {
        for task in self.tasks.iter_mut() {
            for slot in task.stores.iter_mut() {
                let due = write_back == WriteBack::All
                    || slot.changelog.is_none()
                    || with_store(&slot.shared, |st| st.write_back_due());
                if !due {
                    continue;
                }
                let err = |e: samza_state::StateError| ContainerError::Store {
                    task: task.name.clone(),
                    store: slot.name.clone(),
                    source: e.into(),
                };
                with_store(&slot.shared, TaskStore::write_back).map_err(err)?;
                if let Some((dir, marker)) = &mut slot.persistent {
                    if marker.offset != slot.changelog_next {
                        marker.offset = slot.changelog_next;
                        samza_state::restore::write_marker(dir, marker).map_err(err)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the checkpoint of every task that moved, through `producer`
    /// (or, under exactly-once, the transaction's); whether any was sent.
    fn send_checkpoints(
        &mut self,
        producer: Option<&mut dyn SystemProducer>,
    ) -> Result<bool, ContainerError> {
        let generation = self.producers.owner.as_ref().map(|o| o.epoch);
        let due: Vec<(usize, Checkpoint)> = (0..self.tasks.len())
            .filter(|t| self.tasks[*t].dirty)
            .map(|t| {
                let offsets = self.tasks[t]
                    .ssps
                    .iter()
                    .map(|g| CheckpointEntry {
                        ssp: (*self.ssps[*g].ssp).clone(),
                        offset: self.ssps[*g].next_offset,
                    })
                    .collect();
                (t, Checkpoint { offsets, generation })
            })
            .collect();
        if due.is_empty() {
            return Ok(false);
        }
        let p: &mut dyn SystemProducer = match producer {
            Some(p) => p,
            None => {
                let i = self.producers.open(&self.cfg, &self.systems, &self.cfg.checkpoint_system)?;
                self.producers.open[i].1.as_mut()
            }
        };
        for (t, cp) in &due {
            let name = &self.tasks[*t].name;
            sys(checkpoint::write(p, &self.cp_stream, name, cp), || {
                format!("cannot write checkpoint of task {name}")
            })?;
        }
        for (t, _) in due {
            self.tasks[t].dirty = false;
        }
        Ok(true)
    }

    /// Fails once the container's lease has run out or was revoked.
    fn check_lease(&self) -> Result<(), ContainerError> {
        match &self.lease {
            Some(l) => l.check().map_err(ContainerError::NotOwner),
            None => Ok(()),
        }
    }

    fn close(&mut self) -> Result<(), ContainerError> {
        for t in 0..self.tasks.len() {
            let task = &mut self.tasks[t];
            let _in_task = task.span.clone().entered();
            task.task.close(&mut task.collector).map_err(|e| ContainerError::Task {
                task: task.name.clone(),
                phase: "close",
                source: e,
            })?;
            task.dirty = true;
            for out in task.collector.drain() {
                self.producers.send(&self.cfg, &self.systems, out)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Commit,
    Shutdown,
}

/// Opens (restoring as needed) store `name` of task `task`.
#[allow(clippy::too_many_arguments)]
fn open_store(
    cfg: &JobConfig,
    systems: &Systems,
    admins: &BTreeMap<String, Arc<dyn SystemAdmin>>,
    task: &TaskName,
    index: u32,
    name: &str,
    sc: &StoreConfig,
    metrics: &MetricsRegistry,
    commit_requested: &Arc<AtomicBool>,
) -> Result<StoreSlot, ContainerError> {
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| ContainerError::Store {
        task: task.clone(),
        store: name.to_string(),
        source,
    };
    let dir = store_dir(cfg, name, task);
    let changelog = sc.changelog.as_ref().map(|cl| cl.partition(index));
    let source = match &changelog {
        None => None,
        Some(ssp) => {
            let system = &*ssp.system_stream.system;
            let meta = sys(admins[system].partition_metadata(ssp.stream()), || {
                format!("cannot read changelog {ssp}")
            })?;
            let m = meta.get(ssp.partition as usize).copied().ok_or_else(|| {
                fail(
                    format!(
                        "changelog {} has {} partitions; this task needs partition {}",
                        ssp.system_stream,
                        meta.len(),
                        ssp.partition
                    )
                    .into(),
                )
            })?;
            let consumer = sys(systems.consumer(system), || format!("cannot read changelog {ssp}"))?;
            let timeout = Duration::from_millis(sc.restore_timeout_ms);
            Some(ChangelogSource { ssp: ssp.clone(), meta: m, consumer, timeout })
        }
    };
    let want = Marker {
        job: cfg.name.clone(),
        store: name.to_string(),
        task: task.as_str().to_string(),
        changelog: changelog.clone(),
        offset: 0,
    };
    let opened = samza_state::restore::open(sc.engine, &dir, &want, source).map_err(|e| fail(e.into()))?;
    let r = &opened.report;
    tracing::info!(%task, store = name, mode = %r.mode, records = r.records, bytes = r.bytes, millis = r.millis, "store ready");
    let labels = [("store", name), ("task", task.as_str())];
    let g = |what: &str, v: u64| metrics.gauge_with(&format!("store.restore-{what}"), &labels).set(v as i64);
    g("records", r.records);
    g("bytes", r.bytes);
    g("millis", r.millis);
    let store = TaskStore::new(
        name,
        task.as_str(),
        opened.engine,
        sc.options.clone(),
        system_clock(),
        metrics,
        commit_requested.clone(),
    );
    let shared: SharedStore = Arc::new(std::sync::Mutex::new(Box::new(store)));
    let persistent =
        (sc.engine == EngineKind::Rocksdb).then(|| (dir, Marker { offset: opened.changelog_next, ..want }));
    Ok(StoreSlot {
        name: name.to_string(),
        shared,
        changelog,
        changelog_next: opened.changelog_next,
        persistent,
        report: opened.report,
    })
}
