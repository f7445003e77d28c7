//! The job binary: `samza-run job.toml` starts it in the role it needs
//! (a container, or a job coordinator on a cluster).

fn main() -> std::process::ExitCode {
    samza::main(my_job::tasks())
}
