//! `samza-run job.toml`: runs a job. Without a cluster address it runs the job's
//! containers on this machine as processes of the job binary (`package.binary`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "samza-run", version, about = "Run a stream processing job described by job.toml")]
struct Cli {
    /// The job's configuration file (see docs/config.md).
    job: PathBuf,
    /// Override a key of job.toml, e.g. --config job.container-count=2 (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    samza_container::local::run_local(&cli.job, &cli.overrides, None)
}
