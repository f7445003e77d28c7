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

pub use samza_container::{config, env, http, layout, memory, status, systems, testing};
pub use samza_task_api::*;

/// Everything a task needs, in one import.
pub mod prelude {
    pub use samza_task_api::{
        BuildTask, BytesSerde, Config, Counter, Gauge, I64Serde, IncomingMessageEnvelope, JsonSerde,
        KeyValueStore, MessageCollector, MetricsRegistry, OutgoingMessageEnvelope, RequestScope, Serde,
        StreamTask, StringSerde, SystemStream, SystemStreamPartition, TaskContext, TaskCoordinator,
        TaskError, TaskName, TaskRegistry, Timer,
    };
}

/// docs/guide.md: its Rust blocks run as this item's doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide.md")]
pub struct JobAuthorsGuide;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every TOML block of docs/guide.md is a job file that parses.
    #[test]
    fn the_guides_job_files_parse() {
        let guide = include_str!("../../docs/guide.md");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in guide.lines() {
            match (&mut current, line.trim_start()) {
                (None, "```toml") => current = Some(String::new()),
                (Some(b), "```") => {
                    blocks.push(std::mem::take(b));
                    current = None;
                }
                (Some(b), l) => {
                    b.push_str(l);
                    b.push('\n');
                }
                (None, l) if l.starts_with("```") && !l.starts_with("```rust") && l != "```" => {
                    panic!("docs/guide.md has a block no test checks: {l}")
                }
                _ => {}
            }
        }
        assert!(blocks.len() >= 3, "the guide's job files: {}", blocks.len());
        for (i, text) in blocks.iter().enumerate() {
            let job =
                samza_container::config::JobConfig::parse(text, std::path::Path::new("/j/job.toml"), &[])
                    .unwrap_or_else(|e| panic!("docs/guide.md, job file {}: {e}\n{text}", i + 1));
            builtin_systems()
                .resolve(&job)
                .unwrap_or_else(|e| panic!("docs/guide.md, job file {}: {e}", i + 1));
        }
    }

    fn job(section: &str) -> String {
        format!(
            "[job]\nname = \"j\"\n[task]\nclass = \"c\"\ninputs = [\"kafka.in\"]\n[systems.kafka]\ntype = \"kafka\"\n{section}"
        )
    }

    fn resolve(text: &str) -> Result<(), String> {
        let job = samza_container::config::JobConfig::parse(text, std::path::Path::new("/j/job.toml"), &[])
            .map_err(|e| e.to_string())?;
        builtin_systems().resolve(&job).map(drop).map_err(|e| e.to_string())
    }

    #[test]
    fn a_kafka_section_is_checked_naming_the_key_and_line() {
        resolve(&job(
            "bootstrap-servers = \"b:9092\"\nreplication-factor = 1\n[systems.kafka.settings]\nacks = 1\n",
        ))
        .unwrap();
        let e = resolve(&job("")).unwrap_err();
        assert!(e.contains("systems.kafka.bootstrap-servers: a kafka system needs its brokers"), "{e}");
        let e = resolve(&job("bootstrap-servers = \"b:9092\"\nreplication-factor = 0\n")).unwrap_err();
        assert!(e.contains("systems.kafka.replication-factor: must be at least 1"), "{e}");
        let e =
            resolve(&job("bootstrap-servers = \"b:9092\"\n[systems.kafka.settings]\nx = [1]\n")).unwrap_err();
        assert!(e.contains("line 10") && e.contains("expected a string, number or boolean"), "{e}");
        let e = resolve(&job("bootstrap-server = \"b:9092\"\n")).unwrap_err();
        assert!(e.contains("line 8") && e.contains("unknown field `bootstrap-server`"), "{e}");
    }

    #[test]
    fn an_embedded_log_needs_its_directory_resolved_against_the_job_file() {
        let text = "[job]\nname = \"j\"\n[task]\nclass = \"c\"\ninputs = [\"log.in\"]\n[systems.log]\ntype = \"embedded-log\"\n";
        let e = resolve(text).unwrap_err();
        assert!(e.ends_with("systems.log.dir: an embedded-log system needs a directory"), "{e}");
        let e = resolve(&format!("{text}dri = \"log\"\n")).unwrap_err();
        assert!(e.contains("line 8") && e.contains("unknown field `dri`, expected `dir`"), "{e}");
        resolve(&format!("{text}dir = \"log\"\n")).unwrap();
    }
}
