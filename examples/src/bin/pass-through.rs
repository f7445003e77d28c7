//! A job that copies every message of its input to `params.output` unchanged:
//! the benchmark of the run loop's own cost, and a template for new jobs.

use samza::prelude::*;

#[derive(Default)]
struct PassThrough {
    output: Option<SystemStream>,
}

impl StreamTask for PassThrough {
    fn init(&mut self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.output = Some(ctx.config().get_system_stream("params.output", "log.out")?);
        Ok(())
    }

    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        out: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let mut msg = OutgoingMessageEnvelope::new(
            self.output.clone().expect("init ran"),
            env.key.clone(),
            env.message.clone(),
        );
        msg.partition = Some(env.ssp.partition);
        msg.event_time = Some(env.event_time);
        out.send(msg);
        Ok(())
    }
}

/// Does nothing: measures the run loop's per-message overhead alone.
#[derive(Default)]
struct NoOp;

impl StreamTask for NoOp {
    fn process(
        &mut self,
        _: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    samza::main(TaskRegistry::new().register::<PassThrough>("pass-through").register::<NoOp>("no-op"))
}
