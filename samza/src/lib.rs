//! The one crate a job author depends on.
//!
//! ```no_run
//! use samza::prelude::*;
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl StreamTask for Echo {
//!     fn process(&mut self, env: &IncomingMessageEnvelope, out: &mut MessageCollector,
//!                _: &mut TaskCoordinator) -> Result<(), TaskError> {
//!         out.send(OutgoingMessageEnvelope::new(SystemStream::new("log", "echoed"),
//!                                               env.key.clone(), env.message.clone()));
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     samza::main(TaskRegistry::new().register::<Echo>("echo"))
//! }
//! ```
//! Then describe the job in `job.toml` (`task.class = "echo"`, `package.binary`
//! naming this binary) and run `samza-run job.toml`.

/// Job binaries allocate with mimalloc unless the `mimalloc` feature is off.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The job binary's entry point: runs the role its command line names
/// (`run`, `container`, `check`, or `coordinator` on a cluster), with the
/// built-in system types.
pub fn main(tasks: TaskRegistry) -> std::process::ExitCode {
    main_with_systems(tasks, systems::SystemRegistry::new())
}

/// As [`main`], with user-defined system types besides the built-in ones
/// (a type registered here replaces a built-in one of the same name).
pub fn main_with_systems(tasks: TaskRegistry, systems: systems::SystemRegistry) -> std::process::ExitCode {
    let mut all = builtin_systems();
    all.extend(systems);
    let roles = samza_container::entry::ClusterRoles {
        coordinator: samza_scheduler::coordinator::main,
        join: samza_scheduler::coordinator::join,
    };
    samza_container::entry::main_with_roles(tasks, all, Some(roles))
}

/// The system types every job binary and `samza-run` know: `embedded-log`
/// (the embedded log) and `kafka`.
pub fn builtin_systems() -> systems::SystemRegistry {
    let mut r = systems::SystemRegistry::new();
    r.register("embedded-log", samza_log::system::EmbeddedLogFactory);
    r.register(samza_kafka::TYPE, samza_kafka::KafkaFactory);
    r
}

pub use samza_container::{config, env, layout, memory, status, systems, testing};
pub use samza_task_api::*;

/// Everything a task needs, in one import.
pub mod prelude {
    pub use samza_task_api::{
        Config, Counter, Gauge, IncomingMessageEnvelope, JsonSerde, MessageCollector, MetricsRegistry,
        OutgoingMessageEnvelope, RequestScope, Serde, StreamTask, StringSerde, SystemStream,
        SystemStreamPartition, TaskContext, TaskCoordinator, TaskError, TaskName, TaskRegistry, Timer,
    };
}
