//! The job's tasks. They live in the library so that `tests/` can run them
//! with `samza::testing::TestRunner`; `src/main.rs` is the job binary.

use std::collections::BTreeSet;

use samza::prelude::*;

/// Counts the events of each key (a page view's user id, say) in the store
/// `counts` and, on each window, sends the counts that changed since the last
/// one (`key -> count`) to the stream `params.output`.
pub struct CountByKey {
    counts: KeyValueStore<String, i64>,
    output: SystemStream,
    changed: BTreeSet<String>,
}

impl BuildTask for CountByKey {
    /// The task is made with its stores and settings at hand: no `Option`s
    /// filled in `init`.
    fn build(ctx: &mut TaskContext) -> Result<Self, TaskError> {
        Ok(CountByKey {
            counts: ctx.store("counts", StringSerde, I64Serde)?,
            output: ctx.config().get_system_stream("params.output", "log.counts")?,
            changed: BTreeSet::new(),
        })
    }
}

impl StreamTask for CountByKey {
    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let key = env.key_str()?.unwrap_or("(no key)").to_string();
        self.counts.update(&key, |n| Some(n.unwrap_or(0) + 1))?;
        self.changed.insert(key);
        Ok(())
    }

    fn window(&mut self, out: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        for key in std::mem::take(&mut self.changed) {
            let count = self.counts.get(&key)?.unwrap_or(0);
            out.send(OutgoingMessageEnvelope::to(self.output.clone()).key(&key).value(count.to_string()));
        }
        Ok(())
    }
}

/// The job's tasks by the name `task.class` gives.
pub fn tasks() -> TaskRegistry {
    TaskRegistry::new().register_built::<CountByKey>("count-by-key")
}
