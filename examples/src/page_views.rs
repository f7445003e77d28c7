//! Job one of the page-view example: repartition page views by user id.
//!
//! Input `log.page-views`: JSON `{"user": "...", "page": "...", "time": ms}`,
//! partitioned any way. Output `params.output` (default
//! `log.page-views-by-user`): the same events keyed by user id, so every view
//! of a user lands in the same partition, ready for a per-user count.

use samza::prelude::*;

#[derive(serde::Deserialize)]
struct PageView {
    user: String,
}

/// Re-keys each page view by its user.
pub struct Repartition {
    output: SystemStream,
}

impl BuildTask for Repartition {
    fn build(ctx: &mut TaskContext) -> Result<Self, TaskError> {
        Ok(Repartition { output: ctx.config().get_system_stream("params.output", "log.page-views-by-user")? })
    }
}

impl StreamTask for Repartition {
    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        out: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let view: PageView = env.message_json()?;
        let mut msg = OutgoingMessageEnvelope::new(
            self.output.clone(),
            Some(view.user.into_bytes().into()),
            env.message.clone(),
        );
        msg.event_time = Some(env.event_time);
        out.send(msg);
        Ok(())
    }
}

/// The job's task, `repartition`.
pub fn tasks() -> TaskRegistry {
    TaskRegistry::new().register_built::<Repartition>("repartition")
}
