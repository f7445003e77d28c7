//! `samza-rm`: the cluster's resource manager (see `samza_scheduler::rm`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use samza_scheduler::rm::{self, RmConfig};

#[derive(Parser)]
#[command(name = "samza-rm", version, about = "The cluster's resource manager")]
struct Cli {
    /// State directory: token (created at first start, mode 0600), state.json, packages/.
    #[arg(long, default_value = "samza-data/cluster/rm")]
    dir: PathBuf,
    /// Address to listen on (loopback unless told otherwise; port 0 picks one,
    /// written to <dir>/rm.url).
    #[arg(long, default_value = "127.0.0.1:8088")]
    bind: String,
    /// The address other hosts reach this resource manager at (host, host:port
    /// or URL); default: the bound address. Required with a wildcard bind.
    #[arg(long)]
    advertise: Option<String>,
    /// A node without a heartbeat this long is lost.
    #[arg(long, default_value_t = 10_000)]
    node_timeout_ms: u64,
    /// Coordinator failures within --attempt-failures-window-ms that fail an
    /// application (a lost node is not counted).
    #[arg(long, env = samza_container::env::RM_MAX_ATTEMPTS, default_value_t = 4)]
    max_attempts: u32,
    /// The window in which coordinator failures count (default 10 min).
    #[arg(long, default_value_t = 600_000)]
    attempt_failures_window_ms: u64,
    /// Ended applications kept in the state (the newest); older ones are forgotten.
    #[arg(long, default_value_t = 100)]
    keep_ended_apps: usize,
    /// An ended application is forgotten this long after it ended (default 7 days).
    #[arg(long, default_value_t = 7 * 24 * 3600 * 1000)]
    ended_app_retention_ms: u64,
    /// The largest package (job binary) an upload may be, in MB.
    #[arg(long, default_value_t = 2048)]
    max_package_mb: usize,
}

fn main() -> ExitCode {
    samza_scheduler::owner_only_files();
    samza_scheduler::init_tracing();
    let cli = Cli::parse();
    let cfg = RmConfig {
        dir: cli.dir,
        node_timeout: Duration::from_millis(cli.node_timeout_ms),
        max_attempts: cli.max_attempts.max(1),
        attempt_window: Duration::from_millis(cli.attempt_failures_window_ms),
        advertised_url: cli.advertise.unwrap_or_default(),
        keep_ended_apps: cli.keep_ended_apps,
        ended_app_retention: Duration::from_millis(cli.ended_app_retention_ms),
        max_package_bytes: cli.max_package_mb.saturating_mul(1 << 20),
    };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    match rt.block_on(rm::serve(cfg, &cli.bind)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("samza-rm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
