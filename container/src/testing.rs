//! A test harness for job authors (like Samza's TestRunner or Kafka Streams'
//! TopologyTestDriver): runs a job's tasks in-process on in-memory streams
//! with the real run loop, so `process`, `window`, outputs and committed
//! offsets can be asserted on without files or processes.
//!
//! [`TestPipeline`] runs several jobs declared with [`TestJob`] (inputs,
//! bootstrap, priorities, stores with engines and changelogs) over shared
//! streams, takes [`Msg`]s of any serde with keys and event times, and reads
//! outputs typed. [`TestRunner`] runs one job from its whole job file.
//!
//! ```
//! use samza_container::testing::TestRunner;
//! use samza_task_api::*;
//!
//! #[derive(Default)]
//! struct Upper;
//! impl StreamTask for Upper {
//!     fn process(&mut self, env: &IncomingMessageEnvelope, out: &mut MessageCollector,
//!                _: &mut TaskCoordinator) -> Result<(), TaskError> {
//!         let text = env.message_str()?.to_uppercase();
//!         out.send(OutgoingMessageEnvelope::new(SystemStream::new("mem", "out"), env.key.clone(),
//!                                               Some(text.into())));
//!         Ok(())
//!     }
//! }
//!
//! let mut t = TestRunner::new(TaskRegistry::new().register::<Upper>("upper"), "upper", &["in"]).unwrap();
//! t.create_stream("in", 2);
//! t.create_stream("out", 2);
//! t.send("in", Some("k"), "hello");
//! t.run().unwrap();
//! assert_eq!(t.values("out"), vec!["HELLO"]);
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use samza_task_api::{TaskName, TaskRegistry};

use crate::checkpoint::{self, Checkpoint};
use crate::config::{ConfigError, JobConfig};
use crate::memory::{InMemoryStreams, StoredMessage};
use crate::run_loop::{self, ContainerError, ContainerSpec, Outcome};
use crate::systems::SystemRegistry;
use samza_task_api::SystemFactory;

/// Runs tasks over in-memory streams of a system named `mem`.
pub struct TestRunner {
    tasks: TaskRegistry,
    streams: InMemoryStreams,
    config: JobConfig,
    /// Each container's metrics, from its last run.
    metrics: Vec<samza_task_api::MetricsRegistry>,
}

impl TestRunner {
    /// A job running task `class` over `inputs` (stream names in system `mem`).
    pub fn new(tasks: TaskRegistry, class: &str, inputs: &[&str]) -> Result<Self, ConfigError> {
        let inputs: Vec<String> = inputs.iter().map(|i| format!("\"mem.{i}\"")).collect();
        let bounded: String = inputs
            .iter()
            .map(|i| format!("[systems.mem.streams.{}]\nbounded = true\n", &i[5..i.len() - 1]))
            .collect();
        let toml = format!(
            "[job]\nname = \"test\"\n[task]\nclass = \"{class}\"\ninputs = [{}]\ncommit-ms = 1000\n[systems.mem]\ntype = \"in-memory\"\n{bounded}",
            inputs.join(", ")
        );
        Self::with_config(tasks, &toml, &[])
    }

    /// A job described by a full `job.toml` text; its systems of type
    /// `in-memory` share this runner's streams.
    pub fn with_config(
        tasks: TaskRegistry,
        job_toml: &str,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let config = JobConfig::parse(job_toml, Path::new("test-job.toml"), overrides)?;
        Ok(TestRunner { tasks, streams: InMemoryStreams::new(), config, metrics: Vec::new() })
    }

    pub fn create_stream(&mut self, stream: &str, partitions: u32) {
        self.streams.create(stream, partitions);
    }

    /// Appends a message; the partition follows the key as everywhere else.
    pub fn send(&mut self, stream: &str, key: Option<&str>, message: &str) {
        self.streams
            .append(
                stream,
                None,
                key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                Some(Bytes::copy_from_slice(message.as_bytes())),
                0,
            )
            .expect("stream exists");
    }

    /// Appends `msg` (a value of any serde, a key, an event time: [`Msg`]).
    pub fn send_msg(&mut self, stream: &str, msg: Msg) {
        msg.append_to(&self.streams, stream);
    }

    /// Appends a message to an explicit partition.
    pub fn send_to(&mut self, stream: &str, partition: u32, key: Option<&str>, message: &str) {
        self.streams
            .append(
                stream,
                Some(partition),
                key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                Some(Bytes::copy_from_slice(message.as_bytes())),
                0,
            )
            .expect("stream and partition exist");
    }

    /// The metrics of container `id` from the last `run` (messages processed
    /// and lag per input partition, latencies, store counters, the tasks' own).
    pub fn metrics(&self, id: u32) -> Option<&samza_task_api::MetricsRegistry> {
        self.metrics.get(id as usize)
    }

    /// Runs every container of the job in turn until their (bounded) inputs end.
    pub fn run(&mut self) -> Result<Outcome, ContainerError> {
        let (outcome, metrics) = run_job(&self.streams, &self.config, &self.tasks)?;
        self.metrics = metrics;
        Ok(outcome)
    }

    /// Messages of one partition.
    pub fn messages(&self, stream: &str, partition: u32) -> Vec<StoredMessage> {
        self.streams.messages(stream, partition)
    }

    /// Every message value of a stream as text, partition by partition.
    pub fn values(&self, stream: &str) -> Vec<String> {
        (0..self.streams.partitions(stream).unwrap_or(0))
            .flat_map(|p| self.streams.messages(stream, p))
            .map(|m| m.message.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default())
            .collect()
    }

    /// The last committed checkpoint of every task.
    pub fn checkpoints(&self) -> BTreeMap<TaskName, Checkpoint> {
        checkpoints(&self.streams, &self.config)
    }
}

fn checkpoints(streams: &InMemoryStreams, config: &JobConfig) -> BTreeMap<TaskName, Checkpoint> {
    let consumer = streams.consumer(&config.checkpoint_system, &Default::default());
    let consumer = consumer.expect("in-memory consumer");
    checkpoint::read_all(streams, consumer, &config.checkpoint_stream()).unwrap_or_default()
}

/// Runs every container of a job over `streams` in turn until their
/// (bounded) inputs end; returns each container's metrics.
fn run_job(
    streams: &InMemoryStreams,
    config: &JobConfig,
    tasks: &TaskRegistry,
) -> Result<(Outcome, Vec<samza_task_api::MetricsRegistry>), ContainerError> {
    let mut registry = SystemRegistry::new();
    registry.register("in-memory", streams.clone());
    let systems = registry.resolve(config)?;
    let mut outcome = Outcome::NoTasks;
    let metrics: Vec<samza_task_api::MetricsRegistry> =
        (0..config.container_count).map(|_| Default::default()).collect();
    for id in 0..config.container_count {
        let o = run_loop::run(ContainerSpec {
            config: Arc::new(config.clone()),
            container_id: id,
            tasks: tasks.clone(),
            systems: systems.clone(),
            shutdown: Arc::new(AtomicBool::new(false)),
            status_path: None,
            model: None,
            metrics: metrics[id as usize].clone(),
            queries: None,
            owner: None,
            lease: None,
        })?;
        if o != Outcome::NoTasks {
            outcome = o;
        }
    }
    Ok((outcome, metrics))
}

/// A message for [`TestPipeline::send`]: a value in any serde, a key, an
/// event time, and a partition when the key should not choose it.
///
/// ```
/// use samza_container::testing::Msg;
/// use samza_task_api::I64Serde;
/// let view = Msg::json(&serde_json::json!({"user": "ann", "page": "/"})).key("ann").at(1_700_000_000_000);
/// let count = Msg::with(&42i64, I64Serde).key("ann");
/// # let _ = (view, count);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Msg {
    key: Option<Bytes>,
    value: Option<Bytes>,
    time_ms: i64,
    partition: Option<u32>,
    headers: Vec<(String, Bytes)>,
}

impl Msg {
    fn append_to(self, streams: &InMemoryStreams, stream: &str) {
        streams
            .append_with_headers(stream, self.partition, self.key, self.value, self.time_ms, self.headers)
            .unwrap_or_else(|e| panic!("cannot send to {stream}: {e}"));
    }

    /// A UTF-8 text value.
    pub fn text(value: impl Into<String>) -> Msg {
        Msg { value: Some(Bytes::from(value.into())), ..Msg::default() }
    }

    /// A value as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Msg {
        let bytes = serde_json::to_vec(value).unwrap_or_else(|e| panic!("the message is not JSON: {e}"));
        Msg { value: Some(bytes.into()), ..Msg::default() }
    }

    /// A value in `serde` (any of the task API's serdes, or your own).
    pub fn with<T>(value: &T, serde: impl samza_task_api::Serde<T>) -> Msg {
        let bytes = serde.to_bytes(value).unwrap_or_else(|e| panic!("cannot encode the message: {e}"));
        Msg { value: Some(bytes), ..Msg::default() }
    }

    /// No value: a deletion marker for compacted streams.
    pub fn tombstone() -> Msg {
        Msg::default()
    }

    /// The key (its bytes; the partition follows it as everywhere else).
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Msg {
        self.key = Some(Bytes::copy_from_slice(key.as_ref()));
        self
    }

    /// The key in `serde`.
    pub fn key_with<K>(mut self, key: &K, serde: impl samza_task_api::Serde<K>) -> Msg {
        self.key = Some(serde.to_bytes(key).unwrap_or_else(|e| panic!("cannot encode the key: {e}")));
        self
    }

    /// The event time, in milliseconds since the Unix epoch.
    pub fn at(mut self, time_ms: i64) -> Msg {
        self.time_ms = time_ms;
        self
    }

    /// This partition, whatever the key.
    pub fn partition(mut self, partition: u32) -> Msg {
        self.partition = Some(partition);
        self
    }

    /// A record header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Msg {
        self.headers.push((name.to_string(), Bytes::copy_from_slice(value.as_ref())));
        self
    }
}

/// A job as its job file declares it, key by key, on the harness's
/// in-memory system `mem`: inputs (bounded: a run ends at their end),
/// bootstrap inputs, priorities, stores with engines and changelogs, and any
/// other key.
///
/// ```
/// use samza_container::testing::TestJob;
/// use samza_task_api::TaskRegistry;
/// # let tasks = TaskRegistry::new();
/// let join = TestJob::new("join", tasks, "join")
///     .bootstrap_input("profiles")
///     .input("page-views")
///     .store("profiles", "in-memory")
///     .store("partials", "rocksdb")
///     .window_ms(1000)
///     .set("params.output", "mem.partials");
/// # let _ = join;
/// ```
#[derive(Clone)]
pub struct TestJob {
    name: String,
    tasks: TaskRegistry,
    root: toml::Table,
}

impl TestJob {
    /// Job `name` running task `class` of `tasks`, one container, committing every second.
    pub fn new(name: &str, tasks: TaskRegistry, class: &str) -> TestJob {
        let job = TestJob { name: name.to_string(), tasks, root: toml::Table::new() };
        job.set("job.name", name)
            .set("task.class", class)
            .set("task.inputs", toml::Value::Array(Vec::new()))
            .set("task.commit-ms", 1000)
            .set("systems.mem.type", "in-memory")
    }

    /// Sets any key of the job file (`params.output`, `job.container-count`, ...).
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> TestJob {
        let mut segments: Vec<&str> = key.split('.').collect();
        let last = segments.pop().expect("a key");
        let mut table = &mut self.root;
        for seg in segments {
            table = table
                .entry(seg)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{key}: {seg} is not a table"));
        }
        table.insert(last.to_string(), value.into());
        self
    }

    fn set_stream(self, stream: &str, key: &str, value: impl Into<toml::Value>) -> TestJob {
        self.set(&format!("systems.mem.streams.{stream}.{key}"), value)
    }

    /// Reads `stream` (bounded: the run ends at its end as of the start).
    pub fn input(mut self, stream: &str) -> TestJob {
        let inputs = self.root["task"]["inputs"].as_array().cloned().unwrap_or_default();
        let mut inputs: Vec<toml::Value> = inputs;
        inputs.push(format!("mem.{stream}").into());
        self = self.set("task.inputs", toml::Value::Array(inputs));
        self.set_stream(stream, "bounded", true)
    }

    /// Reads `stream` to its end before any other input (a table to join with).
    pub fn bootstrap_input(self, stream: &str) -> TestJob {
        self.input(stream).set_stream(stream, "bootstrap", true)
    }

    /// The input's priority: higher goes first when several have messages.
    pub fn priority(self, stream: &str, priority: i64) -> TestJob {
        self.set_stream(stream, "priority", priority)
    }

    /// Store `name` with `engine` (`in-memory` or `rocksdb`), backed by the
    /// changelog `mem.<job>-<name>-changelog`.
    pub fn store(self, name: &str, engine: &str) -> TestJob {
        let changelog = format!("mem.{}-{name}-changelog", self.name);
        self.store_without_changelog(name, engine).set(&format!("stores.{name}.changelog"), changelog)
    }

    /// Store `name` with `engine` and no changelog.
    pub fn store_without_changelog(self, name: &str, engine: &str) -> TestJob {
        self.set(&format!("stores.{name}.engine"), engine)
    }

    pub fn window_ms(self, ms: i64) -> TestJob {
        self.set("task.window-ms", ms)
    }

    pub fn containers(self, n: i64) -> TestJob {
        self.set("job.container-count", n)
    }

    /// The job file this declares.
    pub fn toml(&self) -> String {
        toml::to_string(&self.root).expect("a TOML table")
    }
}

/// In-memory streams shared by the jobs of a test, run one after the other
/// over them: a pipeline of jobs (like Kafka Streams' TopologyTestDriver
/// with several topologies, or Flink's MiniCluster), with the real run loop.
///
/// ```
/// use samza_container::testing::{Msg, TestJob, TestPipeline};
/// use samza_task_api::*;
///
/// struct Upper { out: SystemStream }
/// impl BuildTask for Upper {
///     fn build(ctx: &mut TaskContext) -> Result<Self, TaskError> {
///         Ok(Upper { out: ctx.config().get_system_stream("params.output", "mem.out")? })
///     }
/// }
/// impl StreamTask for Upper {
///     fn process(&mut self, env: &IncomingMessageEnvelope, out: &mut MessageCollector,
///                _: &mut TaskCoordinator) -> Result<(), TaskError> {
///         let text = env.message_str()?.to_uppercase();
///         out.send(OutgoingMessageEnvelope::new(self.out.clone(), env.key.clone(), Some(text.into())));
///         Ok(())
///     }
/// }
///
/// let tasks = TaskRegistry::new().register_built::<Upper>("upper");
/// let p = TestPipeline::new();
/// p.stream("in", 2).stream("mid", 2).stream("out", 1);
/// p.send("in", Msg::text("hello").key("k"));
/// p.run(&TestJob::new("one", tasks.clone(), "upper").input("in").set("params.output", "mem.mid")).unwrap();
/// p.run(&TestJob::new("two", tasks, "upper").input("mid").set("params.output", "mem.out")).unwrap();
/// assert_eq!(p.read("out", StringSerde, StringSerde), vec![(Some("k".to_string()), "HELLO".to_string())]);
/// ```
pub struct TestPipeline {
    streams: InMemoryStreams,
    /// Where jobs keep their stores (RocksDB) and files; removed on drop.
    state_dir: std::path::PathBuf,
}

impl Default for TestPipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPipeline {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

impl TestPipeline {
    pub fn new() -> TestPipeline {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let state_dir = std::env::temp_dir().join(format!("samza-test-pipeline-{}-{n}", std::process::id()));
        TestPipeline { streams: InMemoryStreams::new(), state_dir }
    }

    /// Creates stream `name` with `partitions`.
    pub fn stream(&self, name: &str, partitions: u32) -> &TestPipeline {
        self.streams.create(name, partitions);
        self
    }

    /// Appends `msg` to `stream`.
    pub fn send(&self, stream: &str, msg: Msg) {
        msg.append_to(&self.streams, stream);
    }

    /// The job file of `job` as the harness runs it (its state under this pipeline's directory).
    pub fn config(&self, job: &TestJob) -> Result<JobConfig, ConfigError> {
        let job = job.clone().set("job.state-dir", self.state_dir.to_string_lossy().as_ref());
        JobConfig::parse(&job.toml(), Path::new("test-job.toml"), &[])
    }

    /// Runs every container of `job` until its inputs end (they are bounded).
    pub fn run(&self, job: &TestJob) -> Result<Outcome, ContainerError> {
        let config = self.config(job)?;
        Ok(run_job(&self.streams, &config, &job.tasks)?.0)
    }

    /// The messages of one partition of `stream`.
    pub fn messages_in(&self, stream: &str, partition: u32) -> Vec<StoredMessage> {
        self.streams.messages(stream, partition)
    }

    /// Every message of `stream`, partition by partition.
    pub fn messages(&self, stream: &str) -> Vec<StoredMessage> {
        (0..self.streams.partitions(stream).unwrap_or(0))
            .flat_map(|p| self.streams.messages(stream, p))
            .collect()
    }

    /// Every message of `stream` decoded, partition by partition: its key
    /// (if any) and value (tombstones skipped).
    pub fn read<K, V>(
        &self,
        stream: &str,
        keys: impl samza_task_api::Serde<K>,
        values: impl samza_task_api::Serde<V>,
    ) -> Vec<(Option<K>, V)> {
        self.messages(stream)
            .into_iter()
            .filter_map(|m| {
                let v = m.message?;
                let k =
                    m.key.map(|k| keys.from_bytes(&k).unwrap_or_else(|e| panic!("a key of {stream}: {e}")));
                Some((k, values.from_bytes(&v).unwrap_or_else(|e| panic!("a message of {stream}: {e}"))))
            })
            .collect()
    }

    /// The latest value of every key of `stream` (a compacted stream's view;
    /// a tombstone removes the key).
    pub fn latest<K: Ord, V>(
        &self,
        stream: &str,
        keys: impl samza_task_api::Serde<K>,
        values: impl samza_task_api::Serde<V>,
    ) -> BTreeMap<K, V> {
        let mut out = BTreeMap::new();
        for m in self.messages(stream) {
            let Some(k) = m.key else { continue };
            let k = keys.from_bytes(&k).unwrap_or_else(|e| panic!("a key of {stream}: {e}"));
            match m.message {
                Some(v) => out.insert(
                    k,
                    values.from_bytes(&v).unwrap_or_else(|e| panic!("a message of {stream}: {e}")),
                ),
                None => out.remove(&k),
            };
        }
        out
    }

    /// The last committed checkpoint of every task of `job`.
    pub fn checkpoints(&self, job: &TestJob) -> BTreeMap<TaskName, Checkpoint> {
        let config = self.config(job).expect("the job's config parses");
        checkpoints(&self.streams, &config)
    }
}
