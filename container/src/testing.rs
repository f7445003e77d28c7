//! A test runner for job authors (like Samza's TestRunner or Kafka Streams'
//! TopologyTestDriver): runs a job's tasks in-process on in-memory streams
//! with the real run loop, so `process`, `window`, outputs and committed
//! offsets can be asserted on without files or processes.
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
        let mut registry = SystemRegistry::new();
        registry.register("in-memory", self.streams.clone());
        let systems = registry.resolve(&self.config)?;
        let mut outcome = Outcome::NoTasks;
        self.metrics = (0..self.config.container_count).map(|_| Default::default()).collect();
        for id in 0..self.config.container_count {
            let o = run_loop::run(ContainerSpec {
                config: Arc::new(self.config.clone()),
                container_id: id,
                tasks: self.tasks.clone(),
                systems: systems.clone(),
                shutdown: Arc::new(AtomicBool::new(false)),
                status_path: None,
                model: None,
                metrics: self.metrics[id as usize].clone(),
                queries: None,
                owner: None,
                lease: None,
            })?;
            if o != Outcome::NoTasks {
                outcome = o;
            }
        }
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
        let consumer = self.streams.consumer(&self.config.checkpoint_system, &Default::default());
        let consumer = consumer.expect("in-memory consumer");
        checkpoint::read_all(&self.streams, consumer, &self.config.checkpoint_stream()).unwrap_or_default()
    }
}
