//! `samza-nm`: a node manager (see `samza_scheduler::nm`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use samza_scheduler::nm::{self, NmConfig};
use samza_scheduler::proto::Resources;

#[derive(Parser)]
#[command(name = "samza-nm", version, about = "A node manager: launches and watches containers on this node")]
struct Cli {
    /// This node's name (unique in the cluster).
    #[arg(long)]
    node: String,
    /// Working directory: packages/, containers/, state/, containers.json.
    #[arg(long)]
    dir: PathBuf,
    /// The resource manager's URL.
    #[arg(long, env = samza_container::env::RM_URL)]
    rm: String,
    /// Address to listen on (port 0 picks one, written to <dir>/nm.url).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// The address other hosts reach this node manager at (host, host:port or
    /// URL); default: the bound address. Required with a wildcard bind. Its
    /// containers and the job coordinators it runs bind to this host.
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long, default_value_t = 8192)]
    memory_mb: u64,
    #[arg(long, default_value_t = 8)]
    vcores: u32,
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// How long the directory (logs, exit code) of a container that ended is kept (default 1 day;
    /// at least 10 minutes, a grant's life: a directory still there refuses a replayed launch).
    #[arg(long, default_value_t = 24 * 3600 * 1000)]
    container_retention_ms: u64,
    /// Run each job's processes as an OS user of its own, taken from this
    /// range of user ids (e.g. 20000-29999; ids no account uses), so that a
    /// job reads neither this node's credential nor other jobs' files. The
    /// node manager must run as root. Default: as the node manager's user.
    #[arg(long, value_parser = parse_uids, env = "SAMZA_CONTAINER_UIDS")]
    container_uids: Option<std::ops::RangeInclusive<u32>>,
}

fn parse_uids(s: &str) -> Result<std::ops::RangeInclusive<u32>, String> {
    let bad = || format!("{s:?} is not a range of user ids FROM-TO (e.g. 20000-29999)");
    let (from, to) = s.split_once('-').ok_or_else(bad)?;
    let (from, to): (u32, u32) =
        (from.trim().parse().map_err(|_| bad())?, to.trim().parse().map_err(|_| bad())?);
    if from == 0 || from > to {
        return Err(bad());
    }
    Ok(from..=to)
}

fn main() -> ExitCode {
    samza_scheduler::owner_only_files();
    samza_scheduler::init_tracing();
    let cli = Cli::parse();
    // The node's credential, never the operator's token: the node manager
    // signs nothing, and what it starts must not act as the operator.
    let token = match samza_scheduler::auth::find_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("samza-nm: needs node {}'s credential: {e:#}", cli.node);
            return ExitCode::FAILURE;
        }
    };
    let named = samza_scheduler::auth::node_of_credential(&token);
    if named.as_deref() != Some(cli.node.as_str()) {
        let what = match named {
            Some(other) => format!("the credential of node {other}"),
            None => "not a node credential (the operator's token?)".into(),
        };
        eprintln!(
            "samza-nm: needs node {node}'s credential in SAMZA_TOKEN or the file SAMZA_TOKEN_FILE names, \
             and was given {what}; an operator issues it with: samza-run node-credential {node} --out FILE",
            node = cli.node
        );
        return ExitCode::FAILURE;
    }
    let cfg = NmConfig {
        node: cli.node,
        dir: cli.dir,
        rm_url: cli.rm.trim_end_matches('/').to_string(),
        capacity: Resources { memory_mb: cli.memory_mb, vcores: cli.vcores },
        heartbeat: Duration::from_millis(cli.heartbeat_ms.max(10)),
        keep_ended: Duration::from_secs(60),
        container_retention: Duration::from_millis(cli.container_retention_ms.max(1000)),
        container_uids: cli.container_uids,
    };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // Every line this node manager logs names its node.
    let span = tracing::info_span!("nm", node = %cfg.node);
    match rt.block_on(tracing::Instrument::instrument(
        nm::serve(cfg, &cli.bind, cli.advertise.as_deref(), &token),
        span,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("samza-nm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
