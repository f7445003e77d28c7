//! The job binary of the end-to-end tests.
//!
//! - `copy`: copies each message to `params.output` (default `log.out`), same
//!   key and partition; with `params.sleep-us` it sleeps that long every 1000
//!   messages, so tests can kill it mid-stream.
//! - `fail`: like `copy`, but fails on the message whose value is `params.fail-on`.
//!
//! Both count what they copied in a metric of their own, `copy.copied`.
//!
//! It also defines a system type of its own, `sequence`, as a job author
//! would: a read-only system whose streams hold `count` generated messages
//! (`<stream>-<partition>-<offset>`) in each of `partitions` partitions.

use std::sync::Arc;
use std::time::Duration;

use samza::prelude::*;
use samza::{
    ConfigIssue, PartitionMetadata, StreamSpec, SystemAdmin, SystemConsumer, SystemContext, SystemError,
    SystemErrorKind, SystemFactory, SystemProducer,
};

#[derive(Default)]
struct Copy {
    output: Option<SystemStream>,
    sleep: Option<Duration>,
    fail_on: Option<String>,
    seen: u64,
    copied: Counter,
}

impl StreamTask for Copy {
    fn init(&mut self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.output = Some(ctx.config().get_system_stream("params.output", "log.out")?);
        self.sleep = ctx.config().get_parsed::<u64>("params.sleep-us")?.map(Duration::from_micros);
        self.fail_on = ctx.config().get("params.fail-on").map(str::to_string);
        self.copied = ctx.metrics().counter("copy.copied");
        Ok(())
    }

    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        out: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        if let Some(f) = &self.fail_on {
            if env.message_str()? == f {
                return Err(TaskError::task(format!("refusing message {f:?}")));
            }
        }
        self.seen += 1;
        if let Some(d) = self.sleep {
            if self.seen % 1000 == 0 {
                std::thread::sleep(d);
            }
        }
        let msg =
            OutgoingMessageEnvelope::new(self.output.clone().unwrap(), env.key.clone(), env.message.clone())
                .with_partition(env.ssp.partition);
        out.send(msg);
        self.copied.inc();
        Ok(())
    }
}

/// `[systems.<name>] type = "sequence"`'s own keys.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceConfig {
    count: u64,
    #[serde(default = "one")]
    partitions: u32,
}

fn one() -> u32 {
    1
}

struct Sequence;

impl SystemFactory for Sequence {
    type Config = SequenceConfig;

    fn check(&self, _: &SystemContext<'_>, c: &mut SequenceConfig) -> Result<(), ConfigIssue> {
        if c.partitions == 0 {
            return Err(ConfigIssue::new("partitions", "must be at least 1"));
        }
        Ok(())
    }

    fn admin(&self, _: &str, c: &SequenceConfig) -> Result<Arc<dyn SystemAdmin>, SystemError> {
        Ok(Arc::new(SequenceAdmin { count: c.count, partitions: c.partitions }))
    }

    fn consumer(&self, _: &str, c: &SequenceConfig) -> Result<Box<dyn SystemConsumer>, SystemError> {
        Ok(Box::new(SequenceConsumer { count: c.count, next: Vec::new() }))
    }

    fn producer(&self, system: &str, _: &SequenceConfig) -> Result<Box<dyn SystemProducer>, SystemError> {
        Err(SystemError::new(SystemErrorKind::InvalidInput, format!("system {system} is read-only")))
    }
}

struct SequenceAdmin {
    count: u64,
    partitions: u32,
}

impl SystemAdmin for SequenceAdmin {
    fn partition_metadata(&self, _: &str) -> Result<Vec<PartitionMetadata>, SystemError> {
        let m = PartitionMetadata { oldest: 0, newest: self.count.checked_sub(1), upcoming: self.count };
        Ok(vec![m; self.partitions as usize])
    }

    fn create_stream(&self, spec: &StreamSpec) -> Result<bool, SystemError> {
        Err(SystemError::new(
            SystemErrorKind::InvalidInput,
            format!("cannot create {}: read-only", spec.stream),
        ))
    }

    fn stream_exists(&self, _: &str) -> Result<bool, SystemError> {
        Ok(true)
    }
}

struct SequenceConsumer {
    count: u64,
    next: Vec<(Arc<SystemStreamPartition>, u64)>,
}

impl SystemConsumer for SequenceConsumer {
    fn register(&mut self, ssp: &SystemStreamPartition, offset: u64) -> Result<(), SystemError> {
        self.next.push((Arc::new(ssp.clone()), offset));
        Ok(())
    }

    fn poll(
        &mut self,
        out: &mut Vec<IncomingMessageEnvelope>,
        max_messages: usize,
        max_wait: Duration,
    ) -> Result<(), SystemError> {
        let before = out.len();
        for (ssp, next) in &mut self.next {
            while *next < self.count && out.len() - before < max_messages {
                let value = format!("{}-{}-{next}", ssp.stream(), ssp.partition);
                out.push(IncomingMessageEnvelope {
                    ssp: ssp.clone(),
                    offset: *next,
                    key: None,
                    message: Some(value.into_bytes().into()),
                    event_time: 0,
                    arrival_time: 0,
                    headers: Vec::new(),
                });
                *next += 1;
            }
        }
        if out.len() == before {
            std::thread::sleep(max_wait);
        }
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let mut systems = samza::systems::SystemRegistry::new();
    systems.register("sequence", Sequence);
    samza::main_with_systems(TaskRegistry::new().register::<Copy>("copy").register::<Copy>("fail"), systems)
}
