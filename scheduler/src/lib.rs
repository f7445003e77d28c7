//! The cluster scheduler, in the style of Hadoop YARN: a resource manager
//! (`samza-rm`), a node manager on every machine (`samza-nm`), and a job
//! coordinator per application (the ApplicationMaster analogue, run from the
//! job binary), talking JSON over HTTP with the cluster's bearer token.
//! `samza-run` submits jobs, shows their status and logs, and starts a local
//! cluster. The wire types are in [`proto`].

pub mod auth;
pub mod cli;
pub mod client;
pub mod coordinator;
pub mod dashboard;
pub mod nm;
pub mod proto;
pub mod rm;

/// Logs to stderr, filtered by `SAMZA_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SAMZA_LOG").unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: container logs go to files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
