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
pub mod durable;
pub mod grant;
pub mod layout;
pub mod netns;
pub mod nm;
pub mod proto;
pub mod rm;

pub use samza_container::entry::init_tracing;

/// Makes every file and directory this process (and every process it
/// starts) creates readable by its owner only (umask 077): the daemons'
/// state, packages, container directories, logs, stores and markers.
pub fn owner_only_files() {
    // SAFETY: umask only sets this process's file mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Milliseconds since the Unix epoch: the clock of events, leases' wall
/// time and grants' expiry.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
