//! What a job author implements: [`StreamTask`], and what the framework hands it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::metrics::MetricsRegistry;
use crate::system::{IncomingMessageEnvelope, OutgoingMessageEnvelope, SystemStreamPartition};
use crate::TaskError;

/// Name of a task instance, e.g. `Partition 3`. Stable across restarts: its
/// checkpoint and its state are keyed by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TaskName(pub String);

impl TaskName {
    pub fn new(name: impl Into<String>) -> Self {
        TaskName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Flat job configuration: dotted keys to string values (`task.window-ms` -> `"1000"`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

impl Config {
    pub fn new(entries: BTreeMap<String, String>) -> Self {
        Config { entries }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The stream named by `key` as `"system.stream"`, or `default` when the key is absent.
    pub fn get_system_stream(&self, key: &str, default: &str) -> Result<crate::SystemStream, TaskError> {
        let v = self.get(key).unwrap_or(default);
        v.parse().map_err(|e| TaskError::config(format!("config key {key}: {e}")))
    }

    /// The value of `key` parsed as `T`, with an error naming the key and value.
    pub fn get_parsed<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, TaskError>
    where
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| TaskError::config(format!("config key {key}: cannot parse {v:?}: {e}"))),
        }
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.entries
    }
}

/// Everything a task instance gets at `init`.
pub struct TaskContext {
    pub(crate) task_name: TaskName,
    pub(crate) ssps: Vec<Arc<SystemStreamPartition>>,
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: MetricsRegistry,
    pub(crate) stores: BTreeMap<String, crate::SharedStore>,
}

impl TaskContext {
    /// Built by runtimes (the container, the test runner).
    pub fn new(
        task_name: TaskName,
        ssps: Vec<Arc<SystemStreamPartition>>,
        config: Arc<Config>,
        metrics: MetricsRegistry,
    ) -> Self {
        TaskContext { task_name, ssps, config, metrics, stores: BTreeMap::new() }
    }

    /// Adds a store (for runtimes).
    pub fn add_store(&mut self, name: &str, store: crate::SharedStore) {
        self.stores.insert(name.to_string(), store);
    }

    /// The store `name` (declared under `[stores.<name>]` in job.toml), typed
    /// through the given serdes.
    pub fn store<K, V>(
        &self,
        name: &str,
        keys: impl crate::Serde<K> + 'static,
        values: impl crate::Serde<V> + 'static,
    ) -> Result<crate::KeyValueStore<K, V>, TaskError> {
        let raw = self.stores.get(name).ok_or_else(|| {
            TaskError::config(format!(
                "store {name:?} is not declared in job.toml (declared: {})",
                self.stores.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        Ok(crate::KeyValueStore::new(raw.clone(), keys, values))
    }

    pub fn task_name(&self) -> &TaskName {
        &self.task_name
    }

    /// The input partitions this task instance owns.
    pub fn ssps(&self) -> &[Arc<SystemStreamPartition>] {
        &self.ssps
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The container's registry, which every task of the container shares:
    /// `counter("name")` is one counter per container (tasks adding to it
    /// add up), served on the container's `/metrics` and in its snapshots.
    /// For a figure per task, put the task's name in the metric's name or
    /// label (`counter_with("name", &[("task", ctx.task_name().as_str())])`).
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// The input `stream` of this task (`"name"` or `"system.name"`), to
    /// tell envelopes apart with [`IncomingMessageEnvelope::is_from`]; an
    /// error names the task's inputs when it has none of that name.
    pub fn input(&self, stream: &str) -> Result<crate::SystemStream, TaskError> {
        let found = self.ssps.iter().map(|s| &s.system_stream).find(|ss| {
            &*ss.stream == stream
                || stream.split_once('.').is_some_and(|(sys, st)| &*ss.system == sys && &*ss.stream == st)
        });
        found.cloned().ok_or_else(|| {
            let mut inputs: Vec<String> = self.ssps.iter().map(|s| s.system_stream.to_string()).collect();
            inputs.dedup();
            TaskError::config(format!(
                "task {} has no input {stream:?} (its inputs: {})",
                self.task_name,
                inputs.join(", ")
            ))
        })
    }
}

/// Collects the messages a task sends; the runtime hands them to the systems.
#[derive(Default, Debug)]
pub struct MessageCollector {
    pub(crate) out: Vec<OutgoingMessageEnvelope>,
}

impl MessageCollector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn send(&mut self, envelope: OutgoingMessageEnvelope) {
        self.out.push(envelope);
    }

    /// Messages sent since the last drain (for runtimes).
    pub fn drain(&mut self) -> std::vec::Drain<'_, OutgoingMessageEnvelope> {
        self.out.drain(..)
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }
}

/// Which tasks a commit or shutdown request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestScope {
    /// Only the task that asks.
    CurrentTask,
    /// Every task in the container.
    AllTasksInContainer,
}

/// Lets a task ask for a commit or a shutdown.
///
/// Shutdown of the current task is a vote: the container stops once every task
/// has voted (as in Samza). Shutdown of all tasks stops the container at once
/// (after a final commit).
#[derive(Default, Debug)]
pub struct TaskCoordinator {
    commit: Option<RequestScope>,
    shutdown: Option<RequestScope>,
}

impl TaskCoordinator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn commit(&mut self, scope: RequestScope) {
        self.commit = Some(match (self.commit, scope) {
            (Some(RequestScope::AllTasksInContainer), _) => RequestScope::AllTasksInContainer,
            _ => scope,
        });
    }

    pub fn shutdown(&mut self, scope: RequestScope) {
        self.shutdown = Some(match (self.shutdown, scope) {
            (Some(RequestScope::AllTasksInContainer), _) => RequestScope::AllTasksInContainer,
            _ => scope,
        });
    }

    /// Takes the pending requests (for runtimes): `(commit, shutdown)`.
    pub fn take_requests(&mut self) -> (Option<RequestScope>, Option<RequestScope>) {
        (self.commit.take(), self.shutdown.take())
    }
}

/// A stream task: the unit of processing bound to a set of input partitions.
///
/// The runtime calls `init` once, then `process` for each message of its
/// partitions in offset order per partition, `window` on the window timer
/// (never at the same time as `process`), and `close` when the task stops.
/// `caught_up` runs once, when the task's bootstrap inputs are read to the
/// end they had when the container started (before any other input's
/// message; at once for a task without bootstrap inputs).
///
/// At the end (every bounded input read to its end, or a stop asked for: a
/// signal, or every task voting to shut down) the order is: a last `window`
/// (when `task.window-ms` is set), then `close`, then the final commit. What
/// `close` writes to its stores and sends to `collector` is in that commit.
/// After a failure neither runs: the next run resumes at the last commit.
pub trait StreamTask: Send {
    fn init(&mut self, _context: &mut TaskContext) -> Result<(), TaskError> {
        Ok(())
    }

    fn process(
        &mut self,
        envelope: &IncomingMessageEnvelope,
        collector: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError>;

    fn window(
        &mut self,
        _collector: &mut MessageCollector,
        _coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        Ok(())
    }

    /// The task's bootstrap inputs are loaded (e.g. a table to join with):
    /// from now on its other inputs flow.
    fn caught_up(
        &mut self,
        _collector: &mut MessageCollector,
        _coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        Ok(())
    }

    fn close(&mut self, _collector: &mut MessageCollector) -> Result<(), TaskError> {
        Ok(())
    }
}

/// A task built from its context: its stores, config and metrics are at
/// hand when it is made, so its fields need no `Option` filled in `init`.
/// Register it with [`TaskRegistry::register_built`].
///
/// ```
/// use samza_task_api::*;
///
/// struct Count {
///     counts: KeyValueStore<String, i64>,
///     views: SystemStream,
/// }
///
/// impl BuildTask for Count {
///     fn build(ctx: &mut TaskContext) -> Result<Self, TaskError> {
///         Ok(Count { counts: ctx.store("counts", StringSerde, I64Serde)?, views: ctx.input("page-views")? })
///     }
/// }
///
/// impl StreamTask for Count {
///     fn process(&mut self, env: &IncomingMessageEnvelope, _: &mut MessageCollector,
///                _: &mut TaskCoordinator) -> Result<(), TaskError> {
///         if env.is_from(&self.views) {
///             let user = env.key_str()?.unwrap_or("anonymous").to_string();
///             self.counts.update(&user, |n| Some(n.unwrap_or(0) + 1))?;
///         }
///         Ok(())
///     }
/// }
///
/// let tasks = TaskRegistry::new().register_built::<Count>("count");
/// # let _ = tasks;
/// ```
pub trait BuildTask: StreamTask + Sized + 'static {
    /// Makes the task instance from its context; `init` runs after it.
    fn build(ctx: &mut TaskContext) -> Result<Self, TaskError>;
}

/// A [`BuildTask`] before and after its context came.
struct Built<T> {
    task: Option<T>,
}

impl<T: BuildTask> Built<T> {
    fn task(&mut self) -> Result<&mut T, TaskError> {
        self.task.as_mut().ok_or_else(|| TaskError::task("the task was called before it was built (init)"))
    }
}

impl<T: BuildTask> StreamTask for Built<T> {
    fn init(&mut self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        let mut task = T::build(ctx)?;
        task.init(ctx)?;
        self.task = Some(task);
        Ok(())
    }

    fn process(
        &mut self,
        envelope: &IncomingMessageEnvelope,
        collector: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.task()?.process(envelope, collector, coordinator)
    }

    fn window(
        &mut self,
        collector: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.task()?.window(collector, coordinator)
    }

    fn caught_up(
        &mut self,
        collector: &mut MessageCollector,
        coordinator: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        self.task()?.caught_up(collector, coordinator)
    }

    fn close(&mut self, collector: &mut MessageCollector) -> Result<(), TaskError> {
        self.task()?.close(collector)
    }
}

/// Creates task instances; one call per task instance.
pub type TaskFactory = Arc<dyn Fn(&Config) -> Result<Box<dyn StreamTask>, TaskError> + Send + Sync>;

/// Task factories by the name `task.class` refers to.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    factories: BTreeMap<String, TaskFactory>,
}

impl fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl TaskRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a task type constructed with `Default`.
    pub fn register<T: StreamTask + Default + 'static>(mut self, name: &str) -> Self {
        self.factories.insert(name.to_string(), Arc::new(|_| Ok(Box::new(T::default()))));
        self
    }

    /// Registers a task type built from its context (see [`BuildTask`]).
    pub fn register_built<T: BuildTask>(mut self, name: &str) -> Self {
        self.factories.insert(name.to_string(), Arc::new(|_| Ok(Box::new(Built::<T> { task: None }))));
        self
    }

    /// Registers a factory that builds a task from the job's config.
    pub fn register_with<F>(mut self, name: &str, factory: F) -> Self
    where
        F: Fn(&Config) -> Result<Box<dyn StreamTask>, TaskError> + Send + Sync + 'static,
    {
        self.factories.insert(name.to_string(), Arc::new(factory));
        self
    }

    pub fn get(&self, name: &str) -> Option<&TaskFactory> {
        self.factories.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }
}
