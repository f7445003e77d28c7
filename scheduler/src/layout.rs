//! Where the cluster's daemons keep their files: one module of paths, used
//! by the daemon that writes a file and by whoever reads it (`samza-run`,
//! `LocalCluster`, tests).
//!
//! ```text
//! <cluster-dir>/                 (samza-run cluster; SAMZA_CLUSTER_DIR)
//!     rm/                        a resource manager's --dir
//!         token                  the operator's token (0600)
//!         state.json             applications (with their tokens) and their coordinators' state
//!         packages/<sha256>      uploaded job binaries
//!         rm.url                 its address, once it serves
//!     rm.log
//!     <node>/                    a node manager's --dir
//!         credential             the node's credential (0600; a local cluster's)
//!         nm.url                 its address, once it serves
//!         containers.json        its container table
//!         containers/<id>/       a container's working directory:
//!             stdout, stderr, exit-code, process.json
//!         packages/<sha256>      downloaded job binaries
//!         state/                 the node's task stores (SAMZA_NODE_STATE_DIR)
//! ```

use std::path::{Path, PathBuf};

/// A resource manager's directory inside a local cluster's.
pub fn rm_dir(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("rm")
}

/// The cluster token in a resource manager's directory.
pub fn token(rm_dir: &Path) -> PathBuf {
    rm_dir.join("token")
}

pub fn rm_state(rm_dir: &Path) -> PathBuf {
    rm_dir.join("state.json")
}

pub fn rm_url(rm_dir: &Path) -> PathBuf {
    rm_dir.join("rm.url")
}

/// Where a daemon keeps packages (the RM's uploads, a node's downloads).
pub fn packages(dir: &Path) -> PathBuf {
    dir.join("packages")
}

pub fn package(dir: &Path, sha256: &str) -> PathBuf {
    packages(dir).join(sha256)
}

/// The node credential a local cluster gives its node manager.
pub fn node_credential(nm_dir: &Path) -> PathBuf {
    nm_dir.join("credential")
}

pub fn nm_url(nm_dir: &Path) -> PathBuf {
    nm_dir.join("nm.url")
}

pub fn container_table(nm_dir: &Path) -> PathBuf {
    nm_dir.join("containers.json")
}

pub fn containers(nm_dir: &Path) -> PathBuf {
    nm_dir.join("containers")
}

/// A container's working directory on its node.
pub fn container(nm_dir: &Path, id: &str) -> PathBuf {
    containers(nm_dir).join(id)
}

/// The exit code a container leaves in its working directory (read by a
/// node manager that restarted meanwhile).
pub fn exit_code(container_dir: &Path) -> PathBuf {
    container_dir.join("exit-code")
}

/// The node's task stores.
pub fn node_state(nm_dir: &Path) -> PathBuf {
    nm_dir.join("state")
}
