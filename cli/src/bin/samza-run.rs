//! `samza-run`: runs a job described by job.toml, on this machine or on a
//! cluster, and operates cluster applications.
//!
//! ```text
//! samza-run job.toml [--config k=v]...          run on this machine (no cluster named)
//! samza-run job.toml --rm URL [--detach]        submit to a cluster (also when job.toml sets cluster.rm)
//! samza-run status [APP] [--json]               applications and nodes, or one application
//! samza-run kill APP
//! samza-run logs APP [CONTAINER] [--stdout]     a container's log (default: the coordinator's stderr)
//! samza-run cluster [--nodes 3] [--dir DIR]     a local cluster: a resource manager and N node managers
//! samza-run node-credential NODE [--out FILE]   issue a node's credential for its node manager
//! samza-run query APP STORE KEY [--task T]      a key's value in a running job's store
//! samza-run checkpoint show job.toml [--json]   tasks' checkpointed offsets and lag
//! samza-run checkpoint set job.toml --task T log.in[0]=1200...   replay from an offset (job stopped)
//! samza-run store get job.toml STORE KEY        a key from a task's store on this machine's disk
//! ```
//!
//! Exit codes: 0 success; 1 error (or the followed job FAILED); 2 bad usage;
//! 3 not found (key, application); 4 refused because of the job's state.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use samza_scheduler::cli;

#[derive(Parser)]
#[command(name = "samza-run", version, about = "Run a stream processing job described by job.toml")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The job's configuration file (see docs/config.md).
    #[arg(required = true)]
    job: Option<PathBuf>,
    /// Override a key of job.toml, e.g. --config job.container-count=2 (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Submit to the cluster whose resource manager is at URL.
    #[arg(long)]
    rm: Option<String>,
    /// With a cluster: print the application id and return instead of following it.
    #[arg(long)]
    detach: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Applications and nodes of the cluster, or one application in detail.
    Status {
        app: Option<String>,
        #[arg(long)]
        rm: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Kill an application (its containers are stopped).
    Kill {
        app: String,
        #[arg(long)]
        rm: Option<String>,
        /// How long to wait for the containers to stop.
        #[arg(long, default_value_t = 60)]
        wait_s: u64,
    },
    /// A container's log, read from its node: CONTAINER is its id or its number in the job.
    Logs {
        app: String,
        container: Option<String>,
        #[arg(long)]
        rm: Option<String>,
        /// stdout instead of stderr (where the framework logs).
        #[arg(long)]
        stdout: bool,
    },
    /// A key's current value in a running job's store (queryable state),
    /// read by the container that owns the key.
    Query {
        app: String,
        store: String,
        key: String,
        /// Read this task's store instead of the key's owner by partition.
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        rm: Option<String>,
        /// The whole answer (store, key, task, value) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show or set tasks' checkpoints.
    Checkpoint {
        #[command(subcommand)]
        action: CheckpointCmd,
    },
    /// Read a task's store on this machine's disk.
    Store {
        #[command(subcommand)]
        action: StoreCmd,
    },
    /// Issue the credential of node NODE (the operator's token is needed):
    /// its node manager registers with it (SAMZA_TOKEN_FILE=FILE samza-nm --node NODE ...).
    NodeCredential {
        node: String,
        /// Write it to FILE (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Issue a new one and revoke the one that works now (a node's
        /// credential leaked): restart the node manager with the new one
        /// within the node timeout to keep its containers.
        #[arg(long)]
        rotate: bool,
        #[arg(long)]
        rm: Option<String>,
    },
    /// Start a local cluster (a resource manager and N node managers, each its
    /// own process) and keep it up until Ctrl-C.
    Cluster {
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Where the daemons keep their state (default: $SAMZA_CLUSTER_DIR or samza-data/cluster).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CheckpointCmd {
    /// Every task's checkpointed offsets, each partition's upcoming offset and the lag.
    Show {
        job: PathBuf,
        #[arg(long = "config", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Set offsets of a task's checkpoint (the job must be stopped): it resumes there.
    Set {
        job: PathBuf,
        #[arg(long)]
        task: String,
        /// PARTITION=OFFSET, e.g. log.in[0]=1200 (repeatable).
        #[arg(required = true)]
        offsets: Vec<String>,
        #[arg(long = "config", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// The cluster to check for a running attempt of the job (default: cluster.rm).
        #[arg(long)]
        rm: Option<String>,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// A key's value (decoded with the store's msg-serde), read-only.
    Get {
        job: PathBuf,
        store: String,
        key: String,
        /// The task whose store to read (default: the key's owner by partition).
        #[arg(long)]
        task: Option<String>,
        #[arg(long = "config", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    samza_scheduler::init_tracing();
    let cli = Cli::parse();
    let systems = samza::builtin_systems();
    let r = match cli.command {
        Some(Cmd::Status { app, rm, json }) => cli::status(rm.as_deref(), app.as_deref(), json),
        Some(Cmd::Kill { app, rm, wait_s }) => {
            cli::kill(rm.as_deref(), &app, std::time::Duration::from_secs(wait_s))
        }
        Some(Cmd::Logs { app, container, rm, stdout }) => {
            cli::logs(rm.as_deref(), &app, container.as_deref(), stdout)
        }
        Some(Cmd::Query { app, store, key, task, rm, json }) => {
            cli::query(rm.as_deref(), &app, &store, &key, task.as_deref(), json)
        }
        Some(Cmd::Checkpoint { action: CheckpointCmd::Show { job, overrides, json } }) => {
            cli::checkpoint_show(&job, &overrides, &systems, json)
        }
        Some(Cmd::Checkpoint { action: CheckpointCmd::Set { job, task, offsets, overrides, rm } }) => {
            cli::checkpoint_set(&job, &overrides, &systems, rm.as_deref(), &task, &offsets)
        }
        Some(Cmd::Store { action: StoreCmd::Get { job, store, key, task, overrides, json } }) => {
            cli::store_get(&job, &overrides, &systems, &store, &key, task.as_deref(), json)
        }
        Some(Cmd::NodeCredential { node, out, rotate, rm }) => {
            cli::node_credential(rm.as_deref(), &node, out.as_deref(), rotate)
        }
        Some(Cmd::Cluster { nodes, dir }) => {
            cli::cluster(&dir.unwrap_or_else(samza_scheduler::auth::cluster_dir), nodes)
        }
        None => {
            let job = cli.job.expect("clap requires JOB without a subcommand");
            let on_cluster = cli.rm.is_some()
                || samza_container::config::JobConfig::load(&job, &cli.overrides)
                    .map(|c| c.cluster.rm.is_some())
                    .unwrap_or(false);
            if on_cluster {
                cli::submit(&job, &cli.overrides, &systems, cli.rm.as_deref(), cli.detach)
            } else {
                return samza_container::local::run_local(&job, &cli.overrides, None);
            }
        }
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("samza-run: {}", samza_container::entry::chain(&e));
            let not_found =
                e.downcast_ref::<samza_scheduler::client::HttpError>().is_some_and(|h| h.status == 404);
            if not_found {
                ExitCode::from(cli::EXIT_NOT_FOUND)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
