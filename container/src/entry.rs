//! The job binary's entry point: `samza::main(registry)` hands control here.
//!
//! ```text
//! <job-binary> run job.toml [--config key=value]...          run the job on this machine
//! <job-binary> container --config job.toml --container-id N  (started by samza-run or a node manager)
//! <job-binary> coordinator                                    (started by the resource manager)
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use samza_task_api::TaskRegistry;

use crate::config::JobConfig;
use crate::env;
use crate::run_loop::{self, ContainerSpec};
use crate::systems::SystemRegistry;

#[derive(Parser)]
#[command(about = "A stream processing job")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the job on this machine (as `samza-run job.toml` does with this binary).
    Run {
        /// The job's configuration file.
        job: PathBuf,
        /// Override a key of job.toml: --config job.container-count=2 (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Run one container of the job (started by samza-run or a node manager).
    Container {
        #[arg(long = "config")]
        config: PathBuf,
        #[arg(long)]
        container_id: u32,
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Resolve the config's relative paths against this directory instead
        /// of the config file's (a cluster container's config is a copy).
        #[arg(long)]
        base_dir: Option<PathBuf>,
    },
    /// Run the job's coordinator on a cluster (started by the resource manager).
    Coordinator,
    /// Check the job's configuration with this binary's system types and
    /// tasks, and exit (samza-run does, before it starts anything).
    Check {
        #[arg(long = "config")]
        config: PathBuf,
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

/// What a container tells its job's coordinator in every heartbeat.
#[derive(Clone)]
pub struct ContainerEndpoint {
    /// The container's HTTP server (metrics), when it runs one.
    pub url: Option<String>,
    pub metrics: samza_task_api::MetricsRegistry,
}

/// What a container gets when it joins its job on a cluster.
pub struct Joined {
    /// The JobModel the coordinator serves.
    pub model: crate::job_model::JobModel,
    /// The lease on the container's tasks, renewed by the heartbeats.
    pub lease: Arc<crate::lease::Lease>,
}

/// Run by a container before it starts: on a cluster, fetches the JobModel
/// from the job's coordinator, takes its first lease and starts heartbeats
/// that renew it (with the container's address and metrics); `None` elsewhere.
pub type JoinCluster = fn(u32, ContainerEndpoint) -> anyhow::Result<Option<Joined>>;

/// What a job binary does on a cluster (the cluster scheduler provides it;
/// `samza::main` passes it in).
#[derive(Clone, Copy)]
pub struct ClusterRoles {
    /// `<job-binary> coordinator`.
    pub coordinator: fn(SystemRegistry) -> ExitCode,
    pub join: JoinCluster,
}

/// An error and its causes on one line, `error: cause: cause`, leaving out
/// a cause whose text its parent's message already holds (errors that name
/// their source in their message, as the log crate's do, and keep it as
/// `#[source]` too).
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Logs to stderr, filtered by `SAMZA_LOG` (default `info`); one JSON object
/// per line with `SAMZA_LOG_FORMAT=json`. Lines carry their spans' fields:
/// the job and container (and the task, in task code) in containers, the
/// application in coordinators, the node in node managers.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::LOG).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var(env::LOG_FORMAT).is_ok_and(|f| f == "json") {
        let _ = builder.json().with_current_span(false).try_init();
    } else {
        // Colours only on a terminal: container logs go to files.
        let _ = builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init();
    }
}

/// On a cluster a job's process holds its application's credentials in its
/// environment; the daemons and jobs of a node run as one user, so this
/// keeps that user's other processes (another job's containers) from
/// reading them in `/proc/<pid>/environ` or attaching to it: the process
/// is made non-dumpable (no core dumps either).
pub fn guard_credentials() {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot make this process non-dumpable");
    }
}

/// Parses the command line and runs the job binary in the role it names,
/// with the system types in `systems` (the facade, `samza::main`, adds
/// the built-in ones) and, when given, the roles of a cluster.
pub fn main_with_roles(
    tasks: TaskRegistry,
    systems: SystemRegistry,
    cluster: Option<ClusterRoles>,
) -> ExitCode {
    init_tracing();
    if env::on_cluster() {
        guard_credentials();
    }
    match Cli::parse().command {
        Command::Run { job, overrides } => {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: cannot find this binary's path: {e}");
                    return ExitCode::FAILURE;
                }
            };
            crate::local::run_local(&job, &overrides, Some(exe))
        }
        Command::Coordinator => match cluster {
            Some(roles) => (roles.coordinator)(systems),
            None => {
                eprintln!("error: this job binary was built without the cluster coordinator");
                ExitCode::FAILURE
            }
        },
        Command::Check { config, overrides } => match check(&config, &overrides, &tasks, &systems) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}", chain(&e));
                ExitCode::FAILURE
            }
        },
        Command::Container { config, container_id, overrides, base_dir } => {
            let join = cluster.map(|c| c.join);
            let code = match run_container(
                &config,
                base_dir.as_deref(),
                container_id,
                &overrides,
                tasks,
                systems,
                join,
            ) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: container {container_id}: {}", chain(&e));
                    let lost =
                        e.downcast_ref::<run_loop::ContainerError>().is_some_and(|e| e.lost_ownership());
                    if lost {
                        // Nothing queued may reach a system after this process.
                        crate::lease::exit_abortively();
                    }
                    1
                }
            };
            // On a cluster, the exit code also goes to a file in the working
            // directory: a node manager that restarted meanwhile is not this
            // process's parent and reads it there.
            if env::on_cluster() {
                let _ = std::fs::write("exit-code", code.to_string());
            }
            ExitCode::from(code)
        }
    }
}

/// What `<job-binary> check` checks: the file, every system's section by
/// its type's factory, that the task class is registered, and that the
/// JobModel can be computed (every input exists or declares its partitions;
/// inputs co-partitioned).
fn check(
    config: &std::path::Path,
    overrides: &[String],
    tasks: &TaskRegistry,
    systems: &SystemRegistry,
) -> anyhow::Result<()> {
    let cfg = JobConfig::load(config, overrides)?;
    let systems = systems.resolve(&cfg)?;
    run_loop::task_factory(&cfg, tasks)?;
    crate::tools::compute_model(&cfg, &systems)?;
    Ok(())
}

fn run_container(
    config: &std::path::Path,
    base_dir: Option<&std::path::Path>,
    container_id: u32,
    overrides: &[String],
    tasks: TaskRegistry,
    systems: SystemRegistry,
    join: Option<JoinCluster>,
) -> anyhow::Result<()> {
    let mut cfg = match base_dir {
        None => JobConfig::load(config, overrides)?,
        Some(base) => {
            let text = std::fs::read_to_string(config)
                .map_err(|e| anyhow::anyhow!("cannot read job config {}: {e}", config.display()))?;
            JobConfig::parse(&text, &base.join(config.file_name().unwrap_or("job.toml".as_ref())), overrides)?
        }
    };
    // On a cluster, stores live under the node's own state directory, so host
    // affinity means "the same node".
    if let Some(dir) = std::env::var_os(env::NODE_STATE_DIR) {
        cfg.state_dir = PathBuf::from(dir);
    }
    if container_id >= cfg.container_count {
        anyhow::bail!("container id {container_id} is not below job.container-count {}", cfg.container_count);
    }
    let systems = systems.resolve(&cfg)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, shutdown.clone())?;
    }
    let status_path = std::env::var_os(env::STATUS_FILE).map(PathBuf::from);
    // Every line this container logs names its job and container (and its
    // application on a cluster).
    let app = std::env::var(env::APP_ID).unwrap_or_default();
    let span = if app.is_empty() {
        tracing::info_span!("container", job = %cfg.name, container = container_id)
    } else {
        tracing::info_span!("container", job = %cfg.name, container = container_id, app = %app)
    };
    let _entered = span.enter();
    // With a token from its launcher (a node manager, or samza-run on this
    // machine), the container serves its metrics over HTTP on loopback.
    let metrics = samza_task_api::MetricsRegistry::new();
    let cfg = Arc::new(cfg);
    let (queries_tx, queries) = std::sync::mpsc::channel();
    let url = match std::env::var(env::TOKEN) {
        Ok(token) if !token.is_empty() => {
            let labels = vec![
                ("job".to_string(), cfg.name.clone()),
                ("container".to_string(), container_id.to_string()),
            ];
            let router = crate::http::metrics_routes(metrics.clone(), labels)
                .merge(crate::http::store_routes(cfg.clone(), queries_tx));
            let bind = std::env::var(env::BIND).unwrap_or_else(|_| "127.0.0.1".into());
            let url = crate::http::serve(
                &format!("{bind}:0"),
                crate::http::Accepted::with_env(&token),
                router,
                "container-http",
            )
            .map_err(|e| anyhow::anyhow!("cannot serve the container's metrics on {bind}: {e}"))?;
            tracing::info!(%url, "serving metrics and store queries");
            Some(url)
        }
        _ => None,
    };
    if let (Some(path), Some(url)) = (&status_path, &url) {
        // Found by samza-run before the first status is written.
        let _ = std::fs::write(crate::layout::url_file(path), url);
    }
    let joined = match join {
        Some(join) => join(container_id, ContainerEndpoint { url, metrics: metrics.clone() })?,
        None => None,
    };
    let (model, lease) = match joined {
        Some(j) => (Some(j.model), Some(j.lease)),
        None => (None, None),
    };
    // The generation its launcher gave it makes this start the owner of the
    // container's tasks; without one (a container started by hand) nothing
    // is fenced.
    let owner = match std::env::var(env::GENERATION) {
        Ok(g) => Some(samza_task_api::ProducerOwner {
            id: format!("{}/container-{container_id}", cfg.name),
            epoch: g.parse().map_err(|_| anyhow::anyhow!("{}={g:?} is not a number", env::GENERATION))?,
        }),
        Err(_) => None,
    };
    run_loop::run(ContainerSpec {
        config: cfg,
        container_id,
        tasks,
        systems,
        shutdown,
        status_path,
        model,
        metrics,
        queries: Some(queries),
        owner,
        lease,
    })?;
    Ok(())
}
