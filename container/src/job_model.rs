//! The JobModel: which task instances exist, which input partitions each owns,
//! and which container runs each. Computed the same way by every container
//! from the config and the inputs' partition counts, so no coordinator is
//! needed on one machine.

use std::collections::BTreeMap;

use samza_task_api::{SystemError, SystemStream, SystemStreamPartition, TaskName};

use crate::config::{Grouper, JobConfig};

/// Why a job's JobModel cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("input stream {input} does not exist and declares no partition count (create it, or declare it with systems.{}.streams.{}.partitions)", input.system, input.stream)]
    MissingInput { input: SystemStream },
    #[error("cannot read input {input}: {source}")]
    Input {
        input: SystemStream,
        #[source]
        source: SystemError,
    },
    #[error("{0}")]
    NotCopartitioned(String),
}

/// The JobModel of the job: the one computation the coordinator, containers
/// on one machine and the tools share. `partitions` tells an input's
/// partition count, `None` when the stream does not exist yet: then its
/// declared count is used (containers create declared streams), and an
/// undeclared missing input is an error.
pub fn compute(
    cfg: &JobConfig,
    mut partitions: impl FnMut(&SystemStream) -> Result<Option<u32>, SystemError>,
) -> Result<JobModel, ModelError> {
    let mut counts = Vec::new();
    for input in &cfg.inputs {
        let n = partitions(input).map_err(|source| ModelError::Input { input: input.clone(), source })?;
        let n = n
            .or(cfg.stream(input).partitions)
            .ok_or_else(|| ModelError::MissingInput { input: input.clone() })?;
        counts.push((input.clone(), n));
    }
    check_copartitioned(&counts, cfg.grouper).map_err(ModelError::NotCopartitioned)?;
    Ok(build(&counts, cfg.grouper, cfg.container_count))
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskModel {
    pub name: TaskName,
    pub ssps: Vec<SystemStreamPartition>,
    /// Position among all the job's tasks: the task's changelog partition.
    pub index: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobModel {
    /// Container id -> its tasks, by name.
    pub containers: BTreeMap<u32, BTreeMap<TaskName, TaskModel>>,
}

impl JobModel {
    /// The task that reads the partition `key` belongs to in `input` (the
    /// stable key hash every producer uses), and the container running it:
    /// where a store keyed like the input keeps that key.
    pub fn task_for_key(&self, input: &SystemStream, key: &[u8]) -> Option<(u32, &TaskModel)> {
        let tasks = || self.containers.iter().flat_map(|(c, t)| t.values().map(move |t| (*c, t)));
        let partitions = tasks().flat_map(|(_, t)| &t.ssps).filter(|s| s.system_stream == *input).count();
        if partitions == 0 {
            return None;
        }
        let p = samza_task_api::partition_for_key(key, partitions as u32);
        tasks().find(|(_, t)| t.ssps.iter().any(|s| s.system_stream == *input && s.partition == p))
    }

    /// The task named `task`, else the one owning `key` in the job's first
    /// input (see [`JobModel::task_for_key`]), and its container: where a
    /// store read goes.
    pub fn owner(
        &self,
        task: Option<&str>,
        inputs: &[SystemStream],
        key: &[u8],
    ) -> Option<(u32, &TaskModel)> {
        match task {
            Some(t) => self.container_of(t),
            None => self.task_for_key(inputs.first()?, key),
        }
    }

    /// The container running task `name`.
    pub fn container_of(&self, name: &str) -> Option<(u32, &TaskModel)> {
        self.containers
            .iter()
            .find_map(|(c, t)| t.values().find(|t| t.name.as_str() == name).map(|t| (*c, t)))
    }
}

/// `partition` grouping joins partition N of every input: inputs with
/// different partition counts would leave some tasks with only some of
/// their inputs (a join missing its other side, without a word), so they
/// are an error naming the streams and counts.
pub fn check_copartitioned(inputs: &[(SystemStream, u32)], grouper: Grouper) -> Result<(), String> {
    if grouper != Grouper::Partition {
        return Ok(());
    }
    let Some((first, n)) = inputs.first() else { return Ok(()) };
    match inputs.iter().find(|(_, m)| m != n) {
        None => Ok(()),
        Some((other, m)) => Err(format!(
            "inputs are not co-partitioned: {first} has {n} partitions, {other} has {m}; task.grouper = \"partition\" joins partition N of every input, so give them the same partition count (or set task.grouper = \"ssp\": one task per input partition)"
        )),
    }
}

/// Groups the inputs' partitions into tasks and spreads the tasks over containers.
///
/// `partition` grouping: task `Partition N` owns partition N of every input that
/// has one (co-partitioned streams meet in one task). `ssp` grouping: one task
/// per input partition, named `SystemStreamPartition [system, stream, N]`.
/// Tasks are sorted (by partition number, then name) and dealt round-robin, so
/// each container gets a balanced share.
pub fn build(inputs: &[(SystemStream, u32)], grouper: Grouper, container_count: u32) -> JobModel {
    let mut tasks: Vec<(u32, TaskModel)> = Vec::new();
    match grouper {
        Grouper::Partition => {
            let max = inputs.iter().map(|(_, n)| *n).max().unwrap_or(0);
            for p in 0..max {
                let ssps = inputs.iter().filter(|(_, n)| p < *n).map(|(s, _)| s.partition(p)).collect();
                tasks.push((p, TaskModel { name: TaskName(format!("Partition {p}")), ssps, index: 0 }));
            }
        }
        Grouper::Ssp => {
            for (s, n) in inputs {
                for p in 0..*n {
                    let name = TaskName(format!("SystemStreamPartition [{}, {}, {p}]", s.system, s.stream));
                    tasks.push((p, TaskModel { name, ssps: vec![s.partition(p)], index: 0 }));
                }
            }
        }
    }
    tasks.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    let mut containers: BTreeMap<u32, BTreeMap<TaskName, TaskModel>> =
        (0..container_count).map(|c| (c, BTreeMap::new())).collect();
    for (i, (_, mut t)) in tasks.into_iter().enumerate() {
        t.index = i as u32;
        containers.get_mut(&(i as u32 % container_count)).unwrap().insert(t.name.clone(), t);
    }
    JobModel { containers }
}

#[cfg(test)]
mod tests {
    #[test]
    fn inputs_with_different_partition_counts_are_refused_under_partition_grouping() {
        let a = (SystemStream::new("log", "page-views"), 6);
        let b = (SystemStream::new("log", "profiles"), 4);
        let e = check_copartitioned(&[a.clone(), b.clone()], Grouper::Partition).unwrap_err();
        assert!(
            e.starts_with(
                "inputs are not co-partitioned: log.page-views has 6 partitions, log.profiles has 4"
            ),
            "{e}"
        );
        assert!(check_copartitioned(&[a.clone(), b], Grouper::Ssp).is_ok());
        assert!(check_copartitioned(&[a.clone(), a], Grouper::Partition).is_ok());
    }

    use super::*;

    #[test]
    fn partition_grouping_puts_co_partitioned_streams_together() {
        let a = SystemStream::new("log", "a");
        let b = SystemStream::new("log", "b");
        let m = build(&[(a.clone(), 4), (b.clone(), 2)], Grouper::Partition, 2);
        let c0 = &m.containers[&0];
        let c1 = &m.containers[&1];
        assert_eq!(c0.len() + c1.len(), 4);
        let t0 = &c0[&TaskName("Partition 0".into())];
        assert_eq!(t0.ssps, vec![a.partition(0), b.partition(0)]);
        let t3 = &c1[&TaskName("Partition 3".into())];
        assert_eq!(t3.ssps, vec![a.partition(3)]);
    }

    #[test]
    fn ssp_grouping_makes_one_task_per_partition() {
        let a = SystemStream::new("log", "a");
        let m = build(&[(a.clone(), 3)], Grouper::Ssp, 1);
        assert_eq!(m.containers[&0].len(), 3);
        assert!(m.containers[&0].contains_key(&TaskName("SystemStreamPartition [log, a, 2]".into())));
    }
}
