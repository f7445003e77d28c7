//! Checkpoints: for each task, the offset of the next message to read in each
//! of its input partitions, stored in a compacted stream of the checkpoint
//! system (`__samza_checkpoint_<job>`, one partition, key = task name).
//!
//! The stored offset is the *next* offset to process, so a restarted task
//! resumes exactly there. A checkpoint is only written after every output sent
//! before it has been flushed (see `run_loop::commit`).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use samza_task_api::{
    OutgoingMessageEnvelope, StreamSpec, SystemAdmin, SystemConsumer, SystemError, SystemErrorKind,
    SystemProducer, SystemStream, SystemStreamPartition, TaskName,
};

/// One task's checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Next offset to read, per input partition.
    pub offsets: Vec<CheckpointEntry>,
    /// The generation of the container that wrote it (see
    /// `samza_container::lease`): in the checkpoint stream they only grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointEntry {
    #[serde(flatten)]
    pub ssp: SystemStreamPartition,
    pub offset: u64,
}

impl Checkpoint {
    pub fn get(&self, ssp: &SystemStreamPartition) -> Option<u64> {
        self.offsets.iter().find(|e| &e.ssp == ssp).map(|e| e.offset)
    }
}

/// Creates the checkpoint stream when missing.
pub fn ensure_stream(admin: &dyn SystemAdmin, stream: &SystemStream) -> Result<(), SystemError> {
    admin.create_stream(&StreamSpec { stream: stream.stream.to_string(), partitions: 1, compacted: true })?;
    Ok(())
}

/// How long reading the checkpoints waits for a slow checkpoint system,
/// unless `task.checkpoint-read-timeout-ms` says otherwise.
pub const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Reads the latest checkpoint of every task, to the stream's end as it was
/// when the read started, waiting up to [`READ_TIMEOUT`] for a slow system.
pub fn read_all(
    admin: &dyn SystemAdmin,
    consumer: Box<dyn SystemConsumer>,
    stream: &SystemStream,
) -> Result<BTreeMap<TaskName, Checkpoint>, SystemError> {
    read_all_within(admin, consumer, stream, READ_TIMEOUT)
}

/// As [`read_all`], waiting up to `timeout` for a system that delivers nothing.
pub fn read_all_within(
    admin: &dyn SystemAdmin,
    mut consumer: Box<dyn SystemConsumer>,
    stream: &SystemStream,
    timeout: Duration,
) -> Result<BTreeMap<TaskName, Checkpoint>, SystemError> {
    let meta = admin.partition_metadata(&stream.stream)?;
    let mut latest = BTreeMap::new();
    let Some(p0) = meta.first() else {
        return Ok(latest);
    };
    if p0.upcoming == p0.oldest {
        return Ok(latest);
    }
    consumer.register(&stream.partition(0), p0.oldest)?;
    let mut buf = Vec::new();
    let mut next = p0.oldest;
    let ssp = stream.partition(0);
    let started = std::time::Instant::now();
    while next < p0.upcoming {
        buf.clear();
        consumer.poll(&mut buf, 10_000, Duration::from_millis(200))?;
        if buf.is_empty() {
            // At the end past a gap compaction left, or a slow system: wait
            // for the latter, never take part of the stream for all of it.
            if consumer.position(&ssp).is_some_and(|p| p >= p0.upcoming) {
                break;
            }
            if started.elapsed() >= timeout {
                return Err(SystemError::new(
                    SystemErrorKind::Io,
                    format!(
                        "checkpoint stream {stream} delivered nothing past offset {next} of {} within {:.0} s (task.checkpoint-read-timeout-ms)",
                        p0.upcoming,
                        timeout.as_secs_f64()
                    ),
                ));
            }
            continue;
        }
        for env in &buf {
            next = env.offset + 1;
            let Some(key) = env.key.as_deref() else {
                continue;
            };
            let task = TaskName(String::from_utf8_lossy(key).into_owned());
            match env.message.as_deref() {
                None => {
                    latest.remove(&task);
                }
                Some(m) => {
                    let cp: Checkpoint = serde_json::from_slice(m).map_err(|e| {
                        SystemError::new(
                            SystemErrorKind::Corruption,
                            format!(
                                "checkpoint of task {task} at {stream} offset {} is not valid: {e}",
                                env.offset
                            ),
                        )
                    })?;
                    // A checkpoint of an older generation than one already
                    // read was written by a container that had lost its
                    // tasks (its bytes arrived late): never go back to it.
                    let stale = latest
                        .get(&task)
                        .and_then(|have: &Checkpoint| have.generation)
                        .is_some_and(|g| cp.generation.is_some_and(|mine| mine < g));
                    if stale {
                        tracing::warn!(%task, offset = env.offset, generation = ?cp.generation, "ignoring a checkpoint of an older generation");
                        continue;
                    }
                    latest.insert(task, cp);
                }
            }
        }
    }
    Ok(latest)
}

/// Queues the checkpoint of `task`; the caller flushes `producer`.
pub fn write(
    producer: &mut dyn SystemProducer,
    stream: &SystemStream,
    task: &TaskName,
    checkpoint: &Checkpoint,
) -> Result<(), SystemError> {
    let value = serde_json::to_vec(checkpoint).expect("checkpoint serialises");
    let env = OutgoingMessageEnvelope::new(
        stream.clone(),
        Some(Bytes::copy_from_slice(task.as_str().as_bytes())),
        Some(Bytes::from(value)),
    )
    .with_partition(0);
    producer.send(env)
}
