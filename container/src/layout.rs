//! Where a job keeps its files on a machine, under `job.state-dir`: one
//! module of paths, used by whoever writes them and whoever reads them
//! (`samza-run`, the containers, the tools, tests).
//!
//! ```text
//! <state-dir>/<job>/
//!     container-<id>.log             a local container's output
//!     container-<id>.status.json     its status (crate::status::ContainerStatus)
//!     container-<id>.status.url      its HTTP address, written before the first status
//!     token                          this run's token for the containers' endpoints (0600)
//!     generation                     the last generation a local run gave its containers
//!     stores/<store>/<task>/         a task's store (task name with other characters as `_`)
//! ```

use std::path::{Path, PathBuf};

use samza_task_api::TaskName;

/// The directory of job `job` under `state_dir`.
pub fn job_dir(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join(job)
}

/// Container `id`'s status file.
pub fn status_file(state_dir: &Path, job: &str, id: u32) -> PathBuf {
    job_dir(state_dir, job).join(format!("container-{id}.status.json"))
}

/// Container `id`'s log on this machine.
pub fn log_file(state_dir: &Path, job: &str, id: u32) -> PathBuf {
    job_dir(state_dir, job).join(format!("container-{id}.log"))
}

/// The URL file a container writes next to its status file.
pub fn url_file(status_file: &Path) -> PathBuf {
    status_file.with_extension("url")
}

/// The token of a local run's container endpoints.
pub fn token_file(state_dir: &Path, job: &str) -> PathBuf {
    job_dir(state_dir, job).join("token")
}

/// The last generation a local run gave its containers.
pub fn generation_file(state_dir: &Path, job: &str) -> PathBuf {
    job_dir(state_dir, job).join("generation")
}

/// Where task `task` keeps store `store`.
pub fn store_dir(state_dir: &Path, job: &str, store: &str, task: &TaskName) -> PathBuf {
    job_dir(state_dir, job).join("stores").join(store).join(task_dir_name(task))
}

/// A task name as a directory name: letters, digits and `-` kept, others `_`.
fn task_dir_name(task: &TaskName) -> String {
    task.as_str().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_under_the_jobs_directory() {
        let s = Path::new("/s");
        assert_eq!(status_file(s, "j", 2), Path::new("/s/j/container-2.status.json"));
        assert_eq!(url_file(&status_file(s, "j", 2)), Path::new("/s/j/container-2.status.url"));
        assert_eq!(
            store_dir(s, "j", "counts", &TaskName::new("Partition 3")),
            Path::new("/s/j/stores/counts/Partition_3")
        );
    }
}
