//! What the resource manager, node managers, job coordinators and `samza-run`
//! say to each other: JSON over HTTP, every request with a bearer token whose
//! kind decides what it may call (`crate::auth`). Paths are under `/v1`.
//!
//! Resource manager: `POST /v1/nodes` (register), `POST /v1/nodes/{node}/heartbeat`,
//! `POST /v1/nodes/{node}/credential` (issue a node's credential),
//! `GET /v1/nodes`, `PUT /v1/packages/{sha256}` (upload), `GET /v1/packages/{sha256}`,
//! `POST /v1/apps` (submit), `GET /v1/apps`, `GET /v1/apps/{app}` (the job file with the values of
//! secret settings redacted), `POST /v1/apps/{app}/kill`, and for coordinators
//! `GET /v1/apps/{app}/config` (the job file whole), `POST /v1/apps/{app}/allocate`,
//! `PUT /v1/apps/{app}/coordinator-state`, `POST /v1/apps/{app}/finish`. Node manager:
//! `POST /v1/containers` (launch: the node's launch token for the application, and the RM's grant),
//! `GET /v1/containers`, `POST /v1/containers/{id}/stop`, `GET /v1/containers/{id}/logs/{stdout|stderr}`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a cluster container is to its application: the job coordinator, or
/// one of the job's containers by number. On the wire (and in the dashboard)
/// a string: `coordinator` or the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Coordinator,
    Container(u32),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Coordinator => f.write_str("coordinator"),
            Role::Container(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "coordinator" => Ok(Role::Coordinator),
            n => n
                .parse()
                .map(Role::Container)
                .map_err(|_| format!("{s:?} is not a role: \"coordinator\" or a container number")),
        }
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a job coordinator keeps at the resource manager
/// (`PUT /v1/apps/{app}/coordinator-state`), so that its next attempt adopts
/// the running containers and continues their generations; `samza-run
/// status` reads the restarts from it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinatorState {
    /// Job container number -> its current cluster container.
    pub containers: BTreeMap<u32, Slot>,
    /// Times (ms since the epoch) of failures within the retry window.
    pub failures: VecDeque<i64>,
    /// The JobModel the containers run: container number -> task names.
    pub model: BTreeMap<u32, Vec<String>>,
    /// Where the current attempt serves the JobModel and takes heartbeats.
    pub url: Option<String>,
    /// The last generation given to a container start (they only grow).
    #[serde(default)]
    pub generation: u64,
    /// Messages processed by containers that have ended: the job's total
    /// stays monotonic across replacements and coordinator attempts.
    #[serde(default)]
    pub retired_processed: u64,
}

/// One job container as its coordinator tracks it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// The cluster container running it (none while one is being asked for).
    pub container: Option<String>,
    /// Its last node: where its local state is.
    pub node: Option<String>,
    pub node_url: Option<String>,
    pub done: bool,
    pub restarts: u32,
}

/// Memory and cores: a node's capacity or a container's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_mb: u64,
    pub vcores: u32,
}

impl Resources {
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.memory_mb <= free.memory_mb && self.vcores <= free.vcores
    }
}

/// A container's state as the cluster sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerState {
    /// Given to a coordinator, not yet started on its node.
    Allocated,
    Running,
    /// The process ended; see the exit code and reason.
    Exited,
    /// Its node was lost: not a failure of the container.
    Lost,
    /// Stopped on request (application killed or finished, or released).
    Killed,
}

impl ContainerState {
    pub fn is_done(self) -> bool {
        matches!(self, ContainerState::Exited | ContainerState::Lost | ContainerState::Killed)
    }
}

/// A container as a node manager reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeContainer {
    pub id: String,
    pub app: String,
    pub state: ContainerState,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub resources: Resources,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterNode {
    pub node: String,
    /// Where the node manager's API listens.
    pub url: String,
    pub capacity: Resources,
    /// Containers it runs (or ran) already: after a restart of either side.
    pub containers: Vec<NodeContainer>,
}

/// `POST /v1/nodes/{node}/credential`: a node manager's credential.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeCredential {
    pub node: String,
    pub credential: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    pub containers: Vec<NodeContainer>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// `false`: the resource manager does not know this node (it lost it, or
    /// restarted without it); the node must register again.
    pub known: bool,
    /// Containers the node must stop (released, or their application ended):
    /// SIGTERM, then SIGKILL after the grace period.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Containers the node must end at once with SIGKILL, without a final
    /// commit: the resource manager no longer counts them as the node's own
    /// (lost with the node while it was away, or unknown). Their tasks may
    /// run elsewhere already.
    #[serde(default)]
    pub kill: Vec<String>,
    /// SHA-256 (lowercase hex) of the operator's token: the node manager, and
    /// the containers it starts, accept the operator's requests by it.
    #[serde(default)]
    pub operator_sha256: Option<String>,
    /// Applications that have ended (those the resource manager still
    /// keeps): the node refuses their launch tokens from now on.
    #[serde(default)]
    pub ended_apps: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Running,
    /// No heartbeat within the node timeout; its containers were reported lost.
    Lost,
    /// Known from before a resource manager restart, not registered again yet.
    Recovering,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    pub url: String,
    pub state: NodeState,
    pub capacity: Resources,
    pub used: Resources,
    /// Milliseconds since the last heartbeat.
    pub heartbeat_age_ms: u64,
    pub containers: usize,
}

/// What a node manager starts: the application's package binary with `args`,
/// in a fresh working directory holding `files`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Launch {
    pub container: String,
    pub app: String,
    pub package_sha256: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// File name (no directories) -> contents, written into the working directory.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    pub resources: Resources,
    /// SIGTERM, then SIGKILL after this long.
    pub stop_grace_ms: u64,
    /// The RM's proof that it allocated this container here, this big
    /// (`crate::grant`); a node manager launches nothing without one.
    #[serde(default)]
    pub grant: Option<Grant>,
    /// The application's token, which the process is given (`SAMZA_TOKEN`);
    /// the grant names its SHA-256. The launch itself is authorized by the
    /// node's launch token for the application (`Allocation::launch_token`).
    #[serde(default)]
    pub app_token: String,
}

/// `GET /v1/apps/{app}/config`: the job file and overrides as submitted
/// (elsewhere the values of secret settings are redacted).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobFile {
    pub config: String,
    pub overrides: Vec<String>,
}

/// What the RM signs when it allocates a container (see `crate::grant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub container: String,
    pub app: String,
    /// The job (its name), whose OS user a node that runs each job as a user
    /// of its own starts the container as (`samza-nm --container-uids`).
    #[serde(default)]
    pub job: String,
    pub node: String,
    pub resources: Resources,
    /// SHA-256 (lowercase hex) of the application's token: the launch must
    /// come with it, and the container is given it.
    #[serde(default)]
    pub token_sha256: String,
    /// Milliseconds since the epoch.
    pub expires_ms: i64,
    /// HMAC-SHA256 of the fields above, lowercase hex.
    pub signature: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submit {
    pub name: String,
    /// job.toml as written.
    pub config: String,
    /// Directory the config's relative paths resolve against (where job.toml was).
    pub base_dir: String,
    pub overrides: Vec<String>,
    pub package_sha256: String,
    pub coordinator: Resources,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Submitted {
    pub app: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppState {
    /// Waiting for room for its coordinator.
    Accepted,
    Running,
    Succeeded,
    Failed,
    Killed,
}

impl AppState {
    pub fn is_final(self) -> bool {
        matches!(self, AppState::Succeeded | AppState::Failed | AppState::Killed)
    }
}

/// Something that happened to an application, for `samza-run status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    pub message: String,
}

/// A container of an application, as the resource manager records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub node: String,
    pub state: ContainerState,
    pub resources: Resources,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub role: Role,
    /// Coordinator attempt that allocated it.
    pub attempt: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppInfo {
    pub app: String,
    pub name: String,
    pub state: AppState,
    pub reason: Option<String>,
    pub attempt: u32,
    pub package_sha256: String,
    pub config: String,
    pub base_dir: String,
    pub overrides: Vec<String>,
    pub coordinator: Resources,
    pub containers: Vec<ContainerInfo>,
    pub events: Vec<Event>,
    /// The state the coordinator keeps here (none before its first save).
    pub coordinator_state: Option<CoordinatorState>,
    pub submitted_ms: i64,
}

/// A coordinator's request for a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    /// The job container this is for (becomes the container's role).
    pub role: Role,
    pub resources: Resources,
    /// Prefer this node (the container's last, where its state is) ...
    pub preferred_node: Option<String>,
    /// ... for this long, then take any node with room.
    pub relax_after_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Allocate {
    pub attempt: u32,
    /// New requests (kept by the resource manager until satisfied).
    pub asks: Vec<Ask>,
    /// Containers the coordinator gives back (the resource manager stops them).
    pub release: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub container: String,
    pub role: Role,
    pub node: String,
    pub node_url: String,
    pub resources: Resources,
    /// Passed on in the launch.
    pub grant: Grant,
    /// The bearer credential of the launch at `node_url` (YARN's NMToken):
    /// the node's launch route takes nothing else.
    #[serde(default)]
    pub launch_token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AllocateReply {
    pub allocated: Vec<Allocation>,
    /// Containers of the application that ended since the last reply.
    pub completed: Vec<ContainerInfo>,
    /// Nodes that are running now, by name.
    pub live_nodes: Vec<String>,
    /// Milliseconds since each running node's last heartbeat: a coordinator
    /// renews the leases of containers on a node only while it is heard from.
    #[serde(default)]
    pub node_heartbeat_age_ms: BTreeMap<String, u64>,
    /// The resource manager's node-loss timeout.
    #[serde(default)]
    pub node_timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finish {
    pub state: AppState,
    pub reason: Option<String>,
    /// The coordinator attempt that finishes the application: a stale one is refused.
    pub attempt: u32,
}

/// What a container sends its coordinator every second
/// (`POST /v1/containers/{n}/heartbeat` on the coordinator).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerHeartbeat {
    /// The cluster container sending it.
    pub container: String,
    /// Its HTTP server (metrics, store queries), when it runs one.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub metrics: samza_task_api::metrics::Snapshot,
}

/// The coordinator's answer to a heartbeat: whether the sender still owns
/// its job container's tasks, and for how long (its lease).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// `false`: another container (or none) owns them now; stop at once,
    /// without committing.
    pub owner: bool,
    /// The lease granted from the heartbeat's send time; 0: not renewed
    /// (the node is not heard from), the lease runs out unless a later one is.
    pub lease_ms: u64,
    pub reason: Option<String>,
}

/// `GET /v1/apps/{app}/containers/{id}/lease?lease_ms=N` at the resource
/// manager: a container's lease while its coordinator cannot be reached.
/// Granted while the container runs as far as the resource manager knows
/// (not lost, not being stopped, its application not ended) on a node heard
/// from within the node timeout less the lease.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaseAnswer {
    pub granted: bool,
    /// `true`: the resource manager no longer counts the container as
    /// running; stop at once.
    pub gone: bool,
    pub reason: Option<String>,
}

/// Figures of a job from its coordinator (`GET /v1/apps/{app}/metrics` at the RM).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobMetrics {
    /// Messages processed by the job's running containers (since each started).
    pub processed: u64,
    /// Messages waiting: the sum over input partitions of upcoming offset minus next offset.
    pub lag: u64,
    /// Job container number -> its figures.
    pub containers: BTreeMap<u32, ContainerMetrics>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetrics {
    /// The cluster container id.
    pub container: String,
    /// Its HTTP server (`/metrics`).
    pub url: Option<String>,
    pub heartbeat_age_ms: u64,
    pub processed: u64,
    pub lag: u64,
}

/// An error body: `{"error": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
