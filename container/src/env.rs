//! The environment variables of the project: what a container or job
//! coordinator is started with by its launcher (`samza-run`, a node manager,
//! the resource manager), and what operators' tools read. One module of
//! names, used by the side that sets a variable and the side that reads it.

/// The bearer token. On a cluster: the operator's for `samza-run`, a node's
/// credential for a node manager, and the application's token for its
/// coordinator and containers, which serve their endpoints behind it.
pub const TOKEN: &str = "SAMZA_TOKEN";
/// A file holding the token (when `SAMZA_TOKEN` is unset).
pub const TOKEN_FILE: &str = "SAMZA_TOKEN_FILE";
/// A coordinator's own credential (YARN's AMRMToken): it alone may ask the
/// resource manager for containers, save the coordinator's state and finish
/// the application; the coordinator's containers never get it.
pub const COORDINATOR_TOKEN: &str = "SAMZA_COORDINATOR_TOKEN";
/// The SHA-256 (lowercase hex) of the cluster operator's token: a job's
/// processes also accept the operator's token, knowing only its hash.
pub const OPERATOR_SHA256: &str = "SAMZA_OPERATOR_SHA256";
/// A local cluster's directory (default `samza-data/cluster`).
pub const CLUSTER_DIR: &str = "SAMZA_CLUSTER_DIR";
/// The resource manager's URL.
pub const RM_URL: &str = "SAMZA_RM_URL";

/// The application a container or coordinator belongs to (cluster only).
pub const APP_ID: &str = "SAMZA_APP_ID";
/// The coordinator attempt a coordinator is (cluster only).
pub const ATTEMPT: &str = "SAMZA_ATTEMPT";
/// The cluster's id of a container (set by its node manager; its presence
/// means "running on a cluster").
pub const CONTAINER_ID: &str = "SAMZA_CONTAINER_ID";
/// The node a container runs on.
pub const NODE: &str = "SAMZA_NODE";
/// The node's state directory: stores live there, so host affinity means
/// "the same node".
pub const NODE_STATE_DIR: &str = "SAMZA_NODE_STATE_DIR";
/// A container's generation: set by its launcher, it grows with every start
/// of the same job container (`lease::next_generation`).
pub const GENERATION: &str = "SAMZA_GENERATION";
/// The host a container or coordinator binds its HTTP server to (its node
/// manager's host address; loopback when unset).
pub const BIND: &str = "SAMZA_BIND";
/// Where a container on this machine writes its status (`status::ContainerStatus`).
pub const STATUS_FILE: &str = "SAMZA_STATUS_FILE";

/// The log filter (`tracing` env-filter syntax, default `info`).
pub const LOG: &str = "SAMZA_LOG";
/// `json` for one JSON object per log line.
pub const LOG_FORMAT: &str = "SAMZA_LOG_FORMAT";

/// Whether this process was started by a node manager.
pub fn on_cluster() -> bool {
    std::env::var_os(CONTAINER_ID).is_some()
}

/// Makes a container die at a named step of its commit (tests; see
/// `samza_task_api::crash`).
pub const CRASH_AT: &str = samza_task_api::crash::ENV;

/// `samza-rm --max-attempts` when the flag is not given (the long fault
/// tests kill coordinators more often than the default allows).
pub const RM_MAX_ATTEMPTS: &str = "SAMZA_RM_MAX_ATTEMPTS";
