//! Operator tools over a job's streams and local state, for `samza-run`:
//! the JobModel as the coordinator computes it, tasks' checkpoints (show, and
//! set while the job is stopped, to replay from an offset), and a key read
//! from a task's store on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use samza_task_api::{SystemAdmin, SystemStreamPartition, TaskName};

use crate::checkpoint::{self, Checkpoint, CheckpointEntry};
use crate::config::JobConfig;
use crate::job_model::{self, JobModel};
use crate::layout;
use crate::status::ContainerStatus;
use crate::systems::Systems;

/// The JobModel from the config and the inputs' partition counts (what the
/// job's coordinator serves, and what containers compute on one machine).
pub fn compute_model(cfg: &JobConfig, systems: &Systems) -> anyhow::Result<JobModel> {
    // One admin per system (a Kafka admin is two clients and a runtime).
    let mut admins: BTreeMap<String, Arc<dyn SystemAdmin>> = BTreeMap::new();
    let model = job_model::compute(cfg, |input| {
        let admin = match admins.get(&*input.system) {
            Some(a) => a.clone(),
            None => {
                let a = systems.admin(&input.system)?;
                admins.insert(input.system.to_string(), a.clone());
                a
            }
        };
        if !admin.stream_exists(&input.stream)? {
            return Ok(None);
        }
        Ok(Some(admin.partition_metadata(&input.stream)?.len() as u32))
    });
    model.map_err(|e| anyhow!("{}: {e}", cfg.path.display()))
}

/// Every task's last checkpoint.
pub fn read_checkpoints(
    cfg: &JobConfig,
    systems: &Systems,
) -> anyhow::Result<BTreeMap<TaskName, Checkpoint>> {
    let stream = cfg.checkpoint_stream();
    let admin = systems.admin(&stream.system)?;
    if !admin.stream_exists(&stream.stream)? {
        return Ok(BTreeMap::new());
    }
    let consumer = systems.consumer(&stream.system)?;
    let timeout = std::time::Duration::from_millis(cfg.checkpoint_read_timeout_ms);
    Ok(checkpoint::read_all_within(admin.as_ref(), consumer, &stream, timeout)?)
}

/// `system.stream[partition]` (as SSPs print) -> the SSP.
pub fn parse_ssp(s: &str) -> anyhow::Result<SystemStreamPartition> {
    s.parse().map_err(|e| anyhow!("{e}: write system.stream[N], e.g. log.in[0]"))
}

/// The pid of a container of this job still running on this machine under
/// `samza-run` (from its status file), if any.
pub fn running_locally(cfg: &JobConfig) -> Option<(u32, u32)> {
    (0..cfg.container_count).find_map(|id| {
        let status = ContainerStatus::read(&layout::status_file(&cfg.state_dir, &cfg.name, id))?;
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(status.pid as i32, 0) == 0 };
        (!status.finished && alive).then_some((id, status.pid))
    })
}

/// Writes a new checkpoint for `task`: its current one with `offsets`
/// replacing the entries of their partitions. Each partition must be one
/// the task reads, and each offset within the partition's retained range
/// (oldest ..= upcoming). The caller makes sure the job is stopped.
pub fn set_checkpoint(
    cfg: &JobConfig,
    systems: &Systems,
    task: &str,
    offsets: &[(SystemStreamPartition, u64)],
) -> anyhow::Result<Checkpoint> {
    let model = compute_model(cfg, systems)?;
    let (_, tm) = model.container_of(task).ok_or_else(|| {
        let names: Vec<String> =
            model.containers.values().flat_map(|t| t.keys().map(|n| n.as_str().to_string())).collect();
        anyhow!("job {} has no task {task:?} (its tasks: {})", cfg.name, names.join(", "))
    })?;
    let mut cp = read_checkpoints(cfg, systems)?.remove(&tm.name).unwrap_or_default();
    for (ssp, offset) in offsets {
        if !tm.ssps.contains(ssp) {
            let owned: Vec<String> = tm.ssps.iter().map(ToString::to_string).collect();
            bail!("task {task:?} does not read {ssp} (it reads {})", owned.join(", "));
        }
        let meta = systems.admin(&ssp.system_stream.system)?.partition_metadata(ssp.stream())?;
        let m = meta.get(ssp.partition as usize).ok_or_else(|| anyhow!("{ssp} does not exist"))?;
        if *offset < m.oldest || *offset > m.upcoming {
            bail!("offset {offset} of {ssp} is outside its retained range {}..={}", m.oldest, m.upcoming);
        }
        match cp.offsets.iter_mut().find(|e| e.ssp == *ssp) {
            Some(e) => e.offset = *offset,
            None => cp.offsets.push(CheckpointEntry { ssp: ssp.clone(), offset: *offset }),
        }
    }
    let stream = cfg.checkpoint_stream();
    let admin = systems.admin(&stream.system)?;
    checkpoint::ensure_stream(admin.as_ref(), &stream)?;
    let mut producer = systems.producer(&stream.system)?;
    checkpoint::write(producer.as_mut(), &stream, &tm.name, &cp)?;
    producer.flush()?;
    Ok(cp)
}

/// A key read from a task's store on this machine's disk (read-only; the
/// job may be stopped or running). `task` defaults to the task that owns
/// the key's partition in the job's first input. Returns the task and the
/// value decoded with the store's `msg-serde`.
pub fn read_store_key(
    cfg: &JobConfig,
    systems: &Systems,
    store: &str,
    key: &str,
    task: Option<&str>,
) -> anyhow::Result<(String, Option<serde_json::Value>)> {
    let sc = cfg.stores.get(store).ok_or_else(|| anyhow!("job {} has no store {store:?}", cfg.name))?;
    if sc.engine != samza_state::EngineKind::Rocksdb {
        bail!("store {store} is kept in memory: read it from the running job (samza-run query)");
    }
    let bytes = sc.key_serde.encode_text(key).map_err(|e| anyhow!("key {key:?} of store {store}: {e}"))?;
    let model = compute_model(cfg, systems)?;
    let owner = model.owner(task, &cfg.inputs, &bytes);
    let (_, tm) = owner.ok_or_else(|| anyhow!("job {} has no task for that key or name", cfg.name))?;
    let engine = samza_state::RocksEngine::open_read_only(&store_dir(cfg, store, &tm.name).join("db"))?;
    let stored = samza_state::Engine::get(&engine, &bytes)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let value =
        match stored.as_deref().and_then(|v| samza_state::store::stored_value(sc.options.ttl_ms, now, v)) {
            Some(v) => Some(sc.msg_serde.decode_json(v).map_err(|e| anyhow!("value of {key:?}: {e}"))?),
            None => None,
        };
    Ok((tm.name.as_str().to_string(), value))
}

/// Where task `task` keeps store `store` on this machine.
pub fn store_dir(cfg: &JobConfig, store: &str, task: &TaskName) -> PathBuf {
    layout::store_dir(&cfg.state_dir, &cfg.name, store, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use samza_task_api::SystemStream;

    #[test]
    fn partitions_parse_as_they_print() {
        let ssp = SystemStream::new("log", "page-views").partition(3);
        assert_eq!(parse_ssp(&ssp.to_string()).unwrap(), ssp);
        for bad in ["log.in", "login[0]", "log.in[x]", ".in[0]", "log.in[0"] {
            assert!(
                parse_ssp(bad).unwrap_err().to_string().contains("is not \"system.stream[partition]\""),
                "{bad}"
            );
        }
    }
}
