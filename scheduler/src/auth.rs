//! The cluster's credentials, and checks on names that reach the disk.
//!
//! Five kinds of bearer tokens (YARN's client, application, AMRM, NM and
//! node credentials), each with its own scope, checked on every route:
//! - the operator's token: the resource manager generates it at its first
//!   start and keeps it in `<rm-dir>/token` (mode 0600); it may do
//!   everything, and no container or coordinator is given it;
//! - an application's token, `samza-app.<app>.<random>`, issued by the
//!   resource manager at submit and kept in its state: the application's
//!   coordinator and containers use it for their own application only, and
//!   it stops working when the application ends;
//! - a coordinator's token, `samza-coordinator.<app>.<random>` (YARN's
//!   AMRMToken), issued for each coordinator attempt: it may call its own
//!   application's routes at the resource manager (but `kill`), among them
//!   those no other application credential may: ask for containers, save
//!   the coordinator's state, finish the application. Only the coordinator
//!   is given it, so a container cannot get containers of its own;
//! - a launch token, `samza-launch.<app>.<HMAC>` (YARN's NMToken), which
//!   the resource manager gives a coordinator with each allocation on a
//!   node: the only credential a node manager's launch route takes (with
//!   the grant of the container in the launch, `crate::grant`). It is signed
//!   under the node's grant key, so it works on that node only;
//! - a node's credential, `samza-node.<node>.<HMAC>`, issued to an operator
//!   who adds a node (`samza-run node-credential NODE`): its node manager
//!   registers and heartbeats as that node, and fetches packages with it; the
//!   grants of launches on the node are signed under a key derived from it.
//!   Rotating it (`samza-run node-credential NODE --rotate`) issues the next
//!   one, `samza-node-<epoch>.<node>.<HMAC>`, and revokes the one before.
//!
//! Clients find their token in `SAMZA_TOKEN`, in the file named by
//! `SAMZA_TOKEN_FILE`, or in `<cluster-dir>/rm/token` (see [`find_token`]).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use samza_container::env;

/// Reads the token in `path`, creating it (mode 0600) when missing.
pub fn load_or_create(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => anyhow::bail!("token file {} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read token file {}: {e}", path.display()),
    }
    let token: String = {
        use rand::RngCore;
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create token file {}: {e}", path.display()))?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok(token)
}

/// Reads a token file that must exist.
pub fn read(path: &Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the token in {}: {e}", path.display()))?;
    let t = t.trim();
    if t.is_empty() {
        anyhow::bail!("the token file {} is empty", path.display());
    }
    Ok(t.to_string())
}

/// The directory of a local cluster: `SAMZA_CLUSTER_DIR`, else `samza-data/cluster`.
pub fn cluster_dir() -> PathBuf {
    std::env::var_os(env::CLUSTER_DIR).map_or_else(|| PathBuf::from("samza-data/cluster"), PathBuf::from)
}

/// The token for clients: `SAMZA_TOKEN`, else the file in `SAMZA_TOKEN_FILE`,
/// else `<cluster-dir>/rm/token`.
pub fn find_token() -> anyhow::Result<String> {
    if let Ok(t) = std::env::var(env::TOKEN) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let path = std::env::var_os(env::TOKEN_FILE)
        .map_or_else(|| crate::layout::token(&crate::layout::rm_dir(&cluster_dir())), PathBuf::from);
    read(&path).map_err(|e| anyhow::anyhow!("{e} (set SAMZA_TOKEN or SAMZA_TOKEN_FILE)"))
}

pub use samza_container::http::{bearer, error, same};

/// A layer's state for [`count_refusals`]: the registry, and the metric.
pub type RefusalCounter = (samza_task_api::MetricsRegistry, &'static str);

/// Middleware counting the requests refused for their credential (401) or
/// its scope (403), by status, in the counter `metric` of `registry`: a
/// client with a wrong or revoked credential shows on the dashboard of
/// whoever scrapes `/metrics`.
pub async fn count_refusals(
    axum::extract::State((registry, metric)): axum::extract::State<RefusalCounter>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let r = next.run(req).await;
    let status = r.status();
    if status == axum::http::StatusCode::UNAUTHORIZED || status == axum::http::StatusCode::FORBIDDEN {
        registry.counter_with(metric, &[("status", status.as_str())]).inc();
    }
    r
}

/// Who a request comes from, by the credential it presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Operator,
    App(String),
    Coordinator(String),
    Node(String),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Operator => f.write_str("the operator's token"),
            Caller::App(a) => write!(f, "the token of application {a}"),
            Caller::Coordinator(a) => write!(f, "the coordinator token of application {a}"),
            Caller::Node(n) => write!(f, "the credential of node {n}"),
        }
    }
}

const APP_PREFIX: &str = "samza-app.";
const NODE_PREFIX: &str = "samza-node.";
/// A node's credential after its first rotation: `samza-node-<epoch>.<node>.<HMAC>`.
const NODE_EPOCH_PREFIX: &str = "samza-node-";
const COORDINATOR_PREFIX: &str = "samza-coordinator.";
pub(crate) const LAUNCH_PREFIX: &str = "samza-launch.";

/// `<prefix><name>.<secret>`: the name, when `t` has that shape.
fn named(t: &str, prefix: &str) -> Option<(String, String)> {
    let (name, secret) = t.strip_prefix(prefix)?.rsplit_once('.')?;
    (safe_name(name) && !secret.is_empty()).then(|| (name.to_string(), secret.to_string()))
}

fn random_hex() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex(&b)
}

/// A new token for application `app`.
pub fn new_app_token(app: &str) -> String {
    format!("{APP_PREFIX}{app}.{}", random_hex())
}

/// A new token for the coordinator of application `app`.
pub fn new_coordinator_token(app: &str) -> String {
    format!("{COORDINATOR_PREFIX}{app}.{}", random_hex())
}

/// The application whose coordinator a token names, when it has a
/// coordinator token's shape.
pub fn app_of_coordinator_token(t: &str) -> Option<String> {
    named(t, COORDINATOR_PREFIX).map(|(app, _)| app)
}

/// The application and signature of a launch token's shape.
pub(crate) fn launch_token_parts(t: &str) -> Option<(String, String)> {
    named(t, LAUNCH_PREFIX)
}

/// The application a token names, when it has an application token's shape
/// (whether it is valid is the resource manager's to say).
pub fn app_of_token(t: &str) -> Option<String> {
    named(t, APP_PREFIX).map(|(app, _)| app)
}

/// The node a credential names, when it has a node credential's shape.
pub fn node_of_credential(t: &str) -> Option<String> {
    node_and_epoch(t).map(|(node, _)| node)
}

/// The node and epoch a credential names (epoch 0: never rotated).
fn node_and_epoch(t: &str) -> Option<(String, u64)> {
    if let Some((node, _)) = named(t, NODE_PREFIX) {
        return Some((node, 0));
    }
    let rest = t.strip_prefix(NODE_EPOCH_PREFIX)?;
    let (epoch, rest) = rest.split_once('.')?;
    let epoch: u64 = epoch.parse().ok().filter(|e| *e > 0 && epoch.bytes().all(|b| b.is_ascii_digit()))?;
    let (node, secret) = rest.rsplit_once('.')?;
    (safe_name(node) && !secret.is_empty()).then(|| (node.to_string(), epoch))
}

/// Lowercase hex of `b`.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The resource manager's secrets: the operator's token and the keys
/// derived from it (node credentials, and from each of those the key that
/// signs the grants of launches on that node).
#[derive(Clone)]
pub struct Keys {
    operator: std::sync::Arc<str>,
    node_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    pub fn new(operator: &str) -> Keys {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"samza node credentials\0");
        h.update(operator.as_bytes());
        Keys { operator: operator.into(), node_key: h.finalize().into() }
    }

    pub fn operator(&self) -> &str {
        &self.operator
    }

    pub fn is_operator(&self, t: &str) -> bool {
        same(t.as_bytes(), self.operator.as_bytes())
    }

    /// The credential of node `node` in its `epoch` (0 until it is first
    /// rotated; each rotation revokes the epoch before).
    pub fn node_credential(&self, node: &str, epoch: u64) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.node_key).expect("any key length");
        mac.update(node.as_bytes());
        if epoch == 0 {
            return format!("{NODE_PREFIX}{node}.{}", hex(&mac.finalize().into_bytes()));
        }
        mac.update(format!("\0{epoch}").as_bytes());
        format!("{NODE_EPOCH_PREFIX}{epoch}.{node}.{}", hex(&mac.finalize().into_bytes()))
    }

    /// The node, and the epoch, whose valid credential `t` is (whether the
    /// epoch is the node's current one is the resource manager's to say).
    pub fn node_of(&self, t: &str) -> Option<(String, u64)> {
        let (node, epoch) = node_and_epoch(t)?;
        same(t.as_bytes(), self.node_credential(&node, epoch).as_bytes()).then_some((node, epoch))
    }

    /// The key that signs grants and launch tokens on `node` while its
    /// credential is in `epoch`; its node manager derives it from that
    /// credential.
    pub fn grant_key(&self, node: &str, epoch: u64) -> crate::grant::GrantKey {
        crate::grant::GrantKey::from_secret(&self.node_credential(node, epoch))
    }
}

/// A name that may become one path component: letters, digits, `-`, `_`,
/// `.`, not starting with `.`, at most 128 bytes.
pub fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A lowercase hex SHA-256.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_their_directory() {
        for bad in ["", "..", ".x", "a/b", "../etc", "a\\b", "a b", &"x".repeat(129)] {
            assert!(!safe_name(bad), "{bad:?}");
        }
        for good in ["app-1", "c_2.3", "node-1"] {
            assert!(safe_name(good));
        }
        assert!(is_sha256(&sha256_hex(b"abc")));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(!is_sha256("../../etc/passwd"));
    }

    #[test]
    fn credentials_name_their_holder_and_cannot_be_forged() {
        let keys = Keys::new("operator-secret");
        let c = keys.node_credential("node-1", 0);
        assert_eq!(keys.node_of(&c), Some(("node-1".to_string(), 0)));
        assert_eq!(node_of_credential(&c).as_deref(), Some("node-1"));
        assert_ne!(c, keys.node_credential("node-2", 0));
        assert_ne!(c, Keys::new("another cluster").node_credential("node-1", 0));
        let renamed = c.replacen("node-1", "node-2", 1);
        assert_eq!(keys.node_of(&renamed), None, "a credential renamed to another node");
        assert_eq!(keys.node_of("samza-node.node-1.00"), None);
        // Rotated: another credential per epoch, naming its node and epoch,
        // whose epoch cannot be changed (nor its node, dotted or not).
        let c2 = keys.node_credential("node-1", 2);
        assert!(c2.starts_with("samza-node-2.node-1."), "{c2}");
        assert_eq!(keys.node_of(&c2), Some(("node-1".to_string(), 2)));
        assert_eq!(node_of_credential(&c2).as_deref(), Some("node-1"));
        assert_ne!(c2, keys.node_credential("node-1", 1));
        assert_eq!(keys.node_of(&c2.replacen("samza-node-2.", "samza-node-3.", 1)), None);
        assert_eq!(keys.node_of(&c2.replacen("samza-node-2.", "samza-node-02.", 1)), None);
        assert_eq!(keys.node_of(&c2.replacen("samza-node-2.", "samza-node-0.", 1)), None);
        let dotted = keys.node_credential("rack.1.host", 4);
        assert_eq!(keys.node_of(&dotted), Some(("rack.1.host".to_string(), 4)));
        assert_eq!(
            keys.node_of(&keys.node_credential("rack.1.host", 0)),
            Some(("rack.1.host".to_string(), 0))
        );
        assert!(keys.is_operator("operator-secret") && !keys.is_operator(&c));
        let t = new_app_token("app-0001");
        assert_eq!(app_of_token(&t).as_deref(), Some("app-0001"));
        let ct = new_coordinator_token("app-0001");
        assert_eq!(app_of_coordinator_token(&ct).as_deref(), Some("app-0001"));
        assert_eq!(app_of_token(&ct), None, "a coordinator token is not an application token");
        assert_eq!(app_of_coordinator_token(&t), None);
        assert_ne!(t, new_app_token("app-0001"));
        assert_eq!(app_of_token("samza-app.../x.y"), None, "names stay safe");
        assert_eq!(app_of_token(&c), None);
    }

    #[test]
    fn token_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rm").join("token");
        let t = load_or_create(&p).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&p).unwrap(), t);
    }
}
