//! Job one of the page-view example: repartition page views by user id.
//!
//! Input `log.page-views`: JSON `{"user": "...", "page": "...", "time": ms}`,
//! partitioned any way. Output `log.page-views-by-user`: the same events keyed
//! by user id, so every view of a user lands in the same partition, ready for
//! a per-user count.

use samza::prelude::*;

#[derive(serde::Deserialize)]
struct PageView {
    user: String,
}

#[derive(Default)]
struct Repartition {
    output: Option<SystemStream>,
}

impl StreamTask for Repartition {
    fn init(&mut self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.output = Some(ctx.config().get_system_stream("params.output", "log.page-views-by-user")?);
        Ok(())
    }

    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        out: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let view: PageView = env.message_json()?;
        let mut msg = OutgoingMessageEnvelope::new(
            self.output.clone().expect("init ran"),
            Some(view.user.into_bytes().into()),
            env.message.clone(),
        );
        msg.event_time = Some(env.event_time);
        out.send(msg);
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    samza::main(TaskRegistry::new().register::<Repartition>("repartition"))
}
