//! A container's start, step by step, from its spec to the loop: open the
//! systems, create the declared streams, compute (or take) the JobModel,
//! take over the container's tasks (fence, then read checkpoints), then
//! build each task instance with its partitions and stores. Each step reads
//! what the earlier ones made; `build` runs them in order and returns the
//! loop (none when the model gives this container no task).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use samza_task_api::{
    MessageCollector, PartitionMetadata, ProducerOwner, StreamSpec, SystemAdmin, SystemConsumer,
    SystemProducer, SystemStream, SystemStreamPartition, TaskContext, TaskCoordinator, TaskName,
};

use super::*;
use crate::checkpoint::{self, Checkpoint};
use crate::config::{DefaultOffset, Guarantee};
use crate::job_model::{self, TaskModel};

/// The container's spec and its systems' admins, opened.
pub(super) struct Setup {
    spec: ContainerSpec,
    cfg: Arc<JobConfig>,
    admins: BTreeMap<String, Arc<dyn SystemAdmin>>,
}

/// The checkpoint stream and what was read from it after the takeover.
struct TakenOver {
    /// `None` under exactly-once: checkpoints go in the transaction.
    cp_producer: Option<Box<dyn SystemProducer>>,
    cp_stream: SystemStream,
    producers: Producers,
    checkpoints: BTreeMap<TaskName, Checkpoint>,
}

/// The task instances and their input partitions, registered with the consumers.
struct Instances {
    tasks: Vec<TaskInstance>,
    ssps: Vec<SspState>,
    consumers: BTreeMap<String, Box<dyn SystemConsumer>>,
}

impl Setup {
    /// Opens an admin of every system of the job.
    pub(super) fn open(spec: ContainerSpec) -> Result<Setup, ContainerError> {
        let cfg = spec.config.clone();
        let mut admins: BTreeMap<String, Arc<dyn SystemAdmin>> = BTreeMap::new();
        for name in cfg.systems.keys() {
            admins.insert(
                name.clone(),
                sys(spec.systems.admin(name), || format!("cannot open system {name}"))?,
            );
        }
        Ok(Setup { spec, cfg, admins })
    }

    /// Runs every step; `None` when the JobModel gives this container no task.
    pub(super) fn build(self) -> Result<Option<Loop>, ContainerError> {
        self.create_streams()?;
        let (model, input_meta) = self.model()?;
        let my_tasks = model.containers.get(&self.spec.container_id).cloned().unwrap_or_default();
        if my_tasks.is_empty() {
            return Ok(None);
        }
        let task_count: usize = model.containers.values().map(BTreeMap::len).sum();
        self.create_changelogs(task_count as u32)?;
        let commit_requested = Arc::new(AtomicBool::new(false));
        let taken = self.take_over(&my_tasks)?;
        let instances = self.instances(&my_tasks, &input_meta, &taken.checkpoints, &commit_requested)?;
        tracing::info!(
            container = self.spec.container_id,
            tasks = instances.tasks.len(),
            partitions = instances.ssps.len(),
            guarantee = %self.spec.systems.guarantee(),
            why = self.spec.systems.why_at_least_once().unwrap_or(""),
            "container started"
        );
        Ok(Some(self.into_loop(taken, instances, commit_requested)))
    }

    /// Streams declared with a partition count, and the metrics snapshot
    /// stream, are created when missing.
    fn create_streams(&self) -> Result<(), ContainerError> {
        let cfg = &self.cfg;
        for (ss, sc) in &cfg.streams {
            if let Some(partitions) = sc.partitions {
                let spec = StreamSpec { stream: ss.stream.to_string(), partitions, compacted: sc.compacted };
                sys(self.admins[&*ss.system].create_stream(&spec), || format!("cannot create stream {ss}"))?;
            }
        }
        // The metrics snapshot stream: one partition unless declared otherwise.
        if let Some(m) = &cfg.metrics {
            let ss = &m.snapshot_stream;
            let partitions = cfg.stream(ss).partitions.unwrap_or(1);
            let spec = StreamSpec { stream: ss.stream.to_string(), partitions, compacted: false };
            sys(self.admins[&*ss.system].create_stream(&spec), || {
                format!("cannot create metrics stream {ss}")
            })?;
        }
        Ok(())
    }

    /// The JobModel (the coordinator's, or computed here the same way), and
    /// the partition metadata of every input, read once: where bounded and
    /// bootstrap streams end.
    #[allow(clippy::type_complexity)]
    fn model(
        &self,
    ) -> Result<(job_model::JobModel, BTreeMap<SystemStream, Vec<PartitionMetadata>>), ContainerError> {
        let cfg = &self.cfg;
        let mut input_meta = BTreeMap::new();
        for input in &cfg.inputs {
            let admin = &self.admins[&*input.system];
            if sys(admin.stream_exists(&input.stream), || format!("cannot read input {input}"))? {
                let meta = sys(admin.partition_metadata(&input.stream), || {
                    format!("cannot read offsets of input {input}")
                })?;
                input_meta.insert(input.clone(), meta);
            }
        }
        let model = match &self.spec.model {
            Some(m) => m.clone(),
            None => job_model::compute(cfg, |i| Ok(input_meta.get(i).map(|m| m.len() as u32)))?,
        };
        // Declared inputs were created above; a model from the coordinator may
        // still name one that is gone.
        if let Some(input) = cfg.inputs.iter().find(|i| !input_meta.contains_key(*i)) {
            return Err(job_model::ModelError::MissingInput { input: input.clone() }.into());
        }
        Ok((model, input_meta))
    }

    /// Changelogs: compacted, one partition per task of the whole job.
    fn create_changelogs(&self, task_count: u32) -> Result<(), ContainerError> {
        for sc in self.cfg.stores.values() {
            if let Some(cl) = &sc.changelog {
                let spec =
                    StreamSpec { stream: cl.stream.to_string(), partitions: task_count, compacted: true };
                sys(self.admins[&*cl.system].create_stream(&spec), || {
                    format!("cannot create changelog {cl} of store {}", sc.name)
                })?;
            }
        }
        Ok(())
    }

    /// One owner per task: this generation raises its epoch on the checkpoint
    /// and changelog partitions before it reads them, so an older generation
    /// still running (paused, cut off) can write none of them from now on;
    /// then the checkpoints are read.
    fn take_over(&self, my_tasks: &BTreeMap<TaskName, TaskModel>) -> Result<TakenOver, ContainerError> {
        let (cfg, spec) = (&self.cfg, &self.spec);
        let exactly_once = spec.systems.guarantee() == Guarantee::ExactlyOnce;
        let cp_stream = cfg.checkpoint_stream();
        let cp_sys = &cfg.checkpoint_system;
        let cp_admin = &self.admins[cp_sys];
        sys(checkpoint::ensure_stream(cp_admin.as_ref(), &cp_stream), || {
            format!("cannot create checkpoint stream {cp_stream}")
        })?;
        // Transactions need an owner: a container started by hand is given
        // one whose generation is the clock's.
        let owner = spec.owner.clone().or_else(|| {
            exactly_once.then(|| ProducerOwner {
                id: format!("{}/container-{}", cfg.name, spec.container_id),
                epoch: crate::lease::next_generation(0),
            })
        });
        // Under exactly-once the checkpoints are written in the container's
        // transaction, by its producer of the (one) system.
        let mut cp_producer = match exactly_once {
            true => None,
            false => {
                Some(sys(spec.systems.producer(cp_sys), || format!("cannot open producer for {cp_stream}"))?)
            }
        };
        let mut producers = Producers { owner: owner.clone(), ..Producers::default() };
        if let Some(owner) = &owner {
            let cp = [cp_stream.partition(0)];
            match &mut cp_producer {
                Some(p) => sys(p.fence(owner, &cp), || {
                    format!("cannot take over the checkpoints of {} in {cp_stream}", owner.id)
                })?,
                None => producers.fence(cfg, &spec.systems, cp_sys, &cp)?,
            }
            let mut changelogs: BTreeMap<String, Vec<SystemStreamPartition>> = BTreeMap::new();
            for tm in my_tasks.values() {
                for cl in cfg.stores.values().filter_map(|sc| sc.changelog.as_ref()) {
                    changelogs.entry(cl.system.to_string()).or_default().push(cl.partition(tm.index));
                }
            }
            for (system, ssps) in changelogs {
                producers.fence(cfg, &spec.systems, &system, &ssps)?;
            }
            if exactly_once {
                // What an older generation left open is aborted, what it
                // committed made visible, before anything is read.
                let i = producers.open(cfg, &spec.systems, cp_sys)?;
                sys(producers.open[i].1.init_transactions(owner), || {
                    format!("cannot start the transactions of {} in system {cp_sys}", owner.id)
                })?;
            }
            tracing::info!(owner = %owner.id, generation = owner.epoch, guarantee = %spec.systems.guarantee(), "took over the container's tasks");
        }
        let timeout = std::time::Duration::from_millis(cfg.checkpoint_read_timeout_ms);
        let checkpoints = sys(
            spec.systems
                .consumer(cp_sys)
                .and_then(|c| checkpoint::read_all_within(cp_admin.as_ref(), c, &cp_stream, timeout)),
            || format!("cannot read checkpoints from {cp_stream}"),
        )?;
        Ok(TakenOver { cp_producer, cp_stream, producers, checkpoints })
    }

    /// Task instances: each partition starts at its checkpoint (or the
    /// stream's default offset), each store is opened (restored as needed),
    /// then the task is constructed and initialised.
    fn instances(
        &self,
        my_tasks: &BTreeMap<TaskName, TaskModel>,
        input_meta: &BTreeMap<SystemStream, Vec<PartitionMetadata>>,
        checkpoints: &BTreeMap<TaskName, Checkpoint>,
        commit_requested: &Arc<AtomicBool>,
    ) -> Result<Instances, ContainerError> {
        let (cfg, spec) = (&self.cfg, &self.spec);
        let factory = task_factory(cfg, &spec.tasks)?;
        let flat = Arc::new(cfg.flat.clone());
        let metrics = &spec.metrics;
        let mut tasks: Vec<TaskInstance> = Vec::new();
        let mut ssps: Vec<SspState> = Vec::new();
        let mut consumers: BTreeMap<String, Box<dyn SystemConsumer>> = BTreeMap::new();
        for (name, tm) in my_tasks {
            let span = tracing::info_span!("task", task = %name);
            let entered = span.enter();
            let t = tasks.len();
            let cp = checkpoints.get(name);
            let mut ids = Vec::new();
            for ssp in &tm.ssps {
                let ss = &ssp.system_stream;
                let sc = cfg.stream(ss);
                let meta = input_meta[ss][ssp.partition as usize];
                let default = match sc.default_offset {
                    DefaultOffset::Oldest => meta.oldest,
                    DefaultOffset::Upcoming => meta.upcoming,
                };
                let start = match cp.and_then(|c| c.get(ssp)) {
                    Some(_) if sc.reset_offset => default,
                    Some(o) if o < meta.oldest => {
                        tracing::warn!(%ssp, checkpoint = o, oldest = meta.oldest, "checkpoint is older than the oldest offset; starting from the oldest");
                        meta.oldest
                    }
                    Some(o) => o.min(meta.upcoming),
                    None => default,
                };
                let consumer = match consumers.entry(ss.system.to_string()) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let consumer = spec.systems.consumer(&ss.system);
                        v.insert(sys(consumer, || format!("cannot open consumer of system {}", ss.system))?)
                    }
                };
                sys(consumer.register(ssp, start), || format!("cannot read {ssp} from offset {start}"))?;
                ids.push(ssps.len());
                let ssp_name = ssp.to_string();
                let labels = [("task", name.as_str()), ("ssp", ssp_name.as_str())];
                ssps.push(SspState {
                    ssp: Arc::new(ssp.clone()),
                    task: t,
                    next_offset: start,
                    end: sc.bounded.then_some(meta.upcoming),
                    bootstrap_until: sc.bootstrap.then_some(meta.upcoming),
                    priority: sc.priority,
                    key_serde: sc.key_serde,
                    msg_serde: sc.msg_serde,
                    queue: VecDeque::new(),
                    processed: 0,
                    m_processed: metrics.counter_with("ssp.processed", &labels),
                    m_lag: metrics.gauge_with("ssp.lag", &labels),
                    m_offset: metrics.gauge_with("ssp.next-offset", &labels),
                });
            }
            let mut task = factory(&flat).map_err(|e| ContainerError::Task {
                task: name.clone(),
                phase: "construction",
                source: e,
            })?;
            let mut ctx = TaskContext::new(
                name.clone(),
                ids.iter().map(|i| ssps[*i].ssp.clone()).collect(),
                flat.clone(),
                metrics.clone(),
            );
            let mut stores = Vec::new();
            for (sname, sc) in &cfg.stores {
                let slot = open_store(
                    cfg,
                    &spec.systems,
                    &self.admins,
                    name,
                    tm.index,
                    sname,
                    sc,
                    metrics,
                    commit_requested,
                )?;
                ctx.add_store(sname, slot.shared.clone());
                stores.push(slot);
            }
            task.init(&mut ctx).map_err(|e| ContainerError::Task {
                task: name.clone(),
                phase: "init",
                source: e,
            })?;
            tracing::info!(partitions = %tm.ssps.iter().map(ToString::to_string).collect::<Vec<_>>().join(","), "task initialised");
            drop(entered);
            tasks.push(TaskInstance {
                name: name.clone(),
                task,
                ssps: ids,
                collector: MessageCollector::new(),
                coordinator: TaskCoordinator::new(),
                dirty: false,
                voted_shutdown: false,
                caught_up: false,
                stores,
                span,
            });
        }
        Ok(Instances { tasks, ssps, consumers })
    }

    fn into_loop(self, taken: TakenOver, instances: Instances, commit_requested: Arc<AtomicBool>) -> Loop {
        let Instances { tasks, ssps, consumers } = instances;
        let upcoming = {
            let inputs: std::collections::BTreeSet<_> =
                ssps.iter().map(|s| s.ssp.system_stream.clone()).collect();
            UpcomingOffsets::start(self.admins.clone(), inputs.into_iter().collect())
        };
        let spec = self.spec;
        let exactly_once = spec.systems.guarantee() == Guarantee::ExactlyOnce;
        let metrics = spec.metrics;
        Loop {
            cfg: self.cfg,
            container_id: spec.container_id,
            systems: spec.systems,
            admins: self.admins,
            tasks,
            ssps,
            consumers,
            producers: taken.producers,
            lease: spec.lease,
            cp_producer: taken.cp_producer,
            cp_stream: taken.cp_stream,
            exactly_once,
            index: HashMap::new(),
            poll_buf: Vec::new(),
            m_processed: metrics.counter("container.processed"),
            m_process: metrics.timer("container.process"),
            m_commit: metrics.timer("container.commit"),
            commit_times: Vec::new(),
            m_window: metrics.timer("container.window"),
            status_path: spec.status_path,
            queries: spec.queries,
            upcoming,
            metrics,
            last_snapshot: Instant::now(),
            last_status: Instant::now(),
            commit_requested,
        }
    }
}
