//! The job binary of the end-to-end tests.
//!
//! - `copy`: copies each message to `params.output` (default `log.out`), same
//!   key and partition; with `params.sleep-us` it sleeps that long every 1000
//!   messages, so tests can kill it mid-stream.
//! - `fail`: like `copy`, but fails on the message whose value is `params.fail-on`.
//!
//! Both count what they copied in a metric of their own, `copy.copied`.

use std::time::Duration;

use samza::prelude::*;

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

fn main() -> std::process::ExitCode {
    samza::main(TaskRegistry::new().register::<Copy>("copy").register::<Copy>("fail"))
}
