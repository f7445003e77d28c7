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
/// (`run`, `container`, or `coordinator` on a cluster).
pub fn main(tasks: TaskRegistry) -> std::process::ExitCode {
    main_with_systems(tasks, systems::SystemRegistry::default())
}

/// As [`main`], with user-defined system types (`embedded-log` and `kafka`
/// are built in).
pub fn main_with_systems(
    tasks: TaskRegistry,
    mut systems: systems::SystemRegistry,
) -> std::process::ExitCode {
    if !systems.contains("kafka") {
        samza_kafka::register(&mut systems);
    }
    let roles = samza_container::entry::ClusterRoles {
        coordinator: samza_scheduler::coordinator::main,
        join: samza_scheduler::coordinator::join,
    };
    samza_container::entry::main_with_roles(tasks, systems, Some(roles))
}
pub use samza_container::{config, memory, systems, testing};
pub use samza_task_api::*;

/// Everything a task needs, in one import.
pub mod prelude {
    pub use samza_task_api::{
        Config, Counter, Gauge, IncomingMessageEnvelope, JsonSerde, MessageCollector, MetricsRegistry,
        OutgoingMessageEnvelope, RequestScope, Serde, StreamTask, StringSerde, SystemStream,
        SystemStreamPartition, TaskContext, TaskCoordinator, TaskError, TaskName, TaskRegistry, Timer,
    };
}
