//! Job two of the page-view example: count page views per user.
//!
//! "The task has a counter for each user ID in its partition, and the
//! appropriate counter is incremented every time the task receives a message
//! with a particular user ID." Input: page views keyed by user id (the output
//! of job one, `page-views`). The counts live in the RocksDB store `counts`,
//! backed by a changelog, so they survive the loss of the container. On each
//! window the counts that changed are emitted to `params.output` (default
//! `log.user-counts`, compacted, keyed by user), where `samza-log get` reads
//! any user's current count.
//!
//! With a store `emits` declared (the example's job file does), what a
//! window emits lives in state too: which users changed since the last
//! window, and per user the sequence number of its last update, sent as the
//! record header `seq` (1, 2, 3, ...). Under exactly-once the stream of
//! updates then has no gap and no repeat per user through any crash, and
//! the last update of every user is its count: a crash cannot lose the set
//! of changed users, since it is committed with the counts. Without
//! `emits` that set lives in memory only.

use rustc_hash::FxHashSet;

use samza::prelude::*;

/// Counts page views per user (see the module's docs).
pub struct Counter {
    counts: KeyValueStore<String, i64>,
    /// `p:<user>` -> 1 while the user's new count waits for a window;
    /// `s:<user>` -> the sequence number of the user's last update sent.
    emits: Option<KeyValueStore<String, i64>>,
    /// Users whose count changed since the last window (kept only when
    /// the job has a window: without one nothing is emitted).
    changed: FxHashSet<String>,
    windowed: bool,
    /// The current user id, in a buffer reused across messages.
    key: String,
    output: SystemStream,
    /// Sleep this long every 1000 messages (`params.throttle-us`), for demos
    /// and tests that want to watch or kill a running job.
    throttle: Option<std::time::Duration>,
    seen: u64,
}

impl BuildTask for Counter {
    fn build(ctx: &mut TaskContext) -> Result<Self, TaskError> {
        let windowed = ctx.config().get_parsed::<u64>("task.window-ms")?.unwrap_or(0) > 0;
        let mut changed = FxHashSet::default();
        let mut emits = None;
        if windowed && ctx.config().get("stores.emits.engine").is_some() {
            let store = ctx.store("emits", StringSerde, I64Serde)?;
            // Users changed before the last commit and not yet emitted.
            for (k, _) in store.prefix(&"p:".to_string())? {
                changed.insert(k[2..].to_string());
            }
            emits = Some(store);
        }
        Ok(Counter {
            counts: ctx.store("counts", StringSerde, I64Serde)?,
            emits,
            changed,
            windowed,
            key: String::new(),
            output: ctx.config().get_system_stream("params.output", "log.user-counts")?,
            throttle: ctx
                .config()
                .get_parsed::<u64>("params.throttle-us")?
                .map(std::time::Duration::from_micros),
            seen: 0,
        })
    }
}

impl StreamTask for Counter {
    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let user = env.key_str()?.ok_or_else(|| {
            TaskError::task(format!("page view at {} offset {} has no user id key", env.ssp, env.offset))
        })?;
        self.key.clear();
        self.key.push_str(user);
        self.counts.update(&self.key, |n| Some(n.unwrap_or(0) + 1))?;
        if self.windowed && !self.changed.contains(user) {
            self.changed.insert(user.to_string());
            if let Some(emits) = &self.emits {
                emits.put(&format!("p:{user}"), &1)?;
            }
        }
        self.seen += 1;
        if let Some(t) = self.throttle.filter(|_| self.seen % 1000 == 0) {
            std::thread::sleep(t);
        }
        Ok(())
    }

    fn window(&mut self, out: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        for user in std::mem::take(&mut self.changed) {
            let n = self.counts.get(&user)?.unwrap_or(0);
            let seq = match &self.emits {
                Some(emits) => {
                    let seq = emits.get(&format!("s:{user}"))?.unwrap_or(0) + 1;
                    emits.put(&format!("s:{user}"), &seq)?;
                    emits.delete(&format!("p:{user}"))?;
                    Some(seq)
                }
                None => None,
            };
            let mut update = OutgoingMessageEnvelope::new(
                self.output.clone(),
                Some(user.into_bytes().into()),
                Some(n.to_string().into_bytes().into()),
            );
            if let Some(seq) = seq {
                update.headers.push(("seq".to_string(), seq.to_string().into_bytes().into()));
            }
            out.send(update);
        }
        Ok(())
    }
}

/// The job's task, `count`.
pub fn tasks() -> TaskRegistry {
    TaskRegistry::new().register_built::<Counter>("count")
}
