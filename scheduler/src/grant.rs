//! Grants: the resource manager's proof that it allocated a container, which
//! a node manager checks before it launches anything (YARN's container
//! tokens). A grant names the container, its application, its node and the
//! resources the RM accounted for, and when it expires; it is signed with
//! HMAC-SHA256 under a key the RM and the node managers derive from the
//! cluster's secret. So a launch the RM did not allocate, one bigger than it
//! accounted for, or one meant for another node is refused, whoever sends it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::proto::{Grant, Resources};

/// How long a grant may wait for its launch (the coordinator launches at
/// once; the margin covers clocks that differ between hosts).
pub const GRANT_TTL_MS: i64 = 10 * 60 * 1000;

/// The signing key, derived from the cluster's secret.
#[derive(Clone)]
pub struct GrantKey([u8; 32]);

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(..)")
    }
}

/// Why a node manager refuses a launch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("the launch of {0} carries no allocation grant from the resource manager")]
    Missing(String),
    #[error("the grant for {0} is not signed by this cluster's resource manager")]
    BadSignature(String),
    #[error("the grant is for {what} {granted:?}, the launch for {asked:?}")]
    Mismatch { what: &'static str, granted: String, asked: String },
    #[error("the grant for {container} allows {granted_mb} MB and {granted_vcores} vcores; the launch asks for {asked_mb} MB and {asked_vcores} vcores")]
    Resources { container: String, granted_mb: u64, granted_vcores: u32, asked_mb: u64, asked_vcores: u32 },
    #[error("the grant for {0} has expired")]
    Expired(String),
}

fn message(container: &str, app: &str, node: &str, r: &Resources, expires_ms: i64) -> Vec<u8> {
    format!("samza-grant/1\n{container}\n{app}\n{node}\n{}\n{}\n{expires_ms}", r.memory_mb, r.vcores)
        .into_bytes()
}

impl GrantKey {
    /// The key of a cluster whose secret is `token`.
    pub fn from_secret(token: &str) -> GrantKey {
        let mut h = Sha256::new();
        h.update(b"samza grant key\0");
        h.update(token.as_bytes());
        GrantKey(h.finalize().into())
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }

    /// A grant for `container` of `app` on `node`, of `resources`, valid
    /// until `now_ms + GRANT_TTL_MS`.
    pub fn sign(&self, container: &str, app: &str, node: &str, resources: Resources, now_ms: i64) -> Grant {
        let expires_ms = now_ms + GRANT_TTL_MS;
        let mut mac = self.mac();
        mac.update(&message(container, app, node, &resources, expires_ms));
        let signature = hex(&mac.finalize().into_bytes());
        Grant {
            container: container.to_string(),
            app: app.to_string(),
            node: node.to_string(),
            resources,
            expires_ms,
            signature,
        }
    }

    /// Checks that `grant` is this cluster's, for exactly this launch of
    /// `container` of `app` with `resources` on `node`, and not expired.
    pub fn check(
        &self,
        grant: Option<&Grant>,
        container: &str,
        app: &str,
        node: &str,
        resources: &Resources,
        now_ms: i64,
    ) -> Result<(), GrantError> {
        let g = grant.ok_or_else(|| GrantError::Missing(container.to_string()))?;
        let mut mac = self.mac();
        mac.update(&message(&g.container, &g.app, &g.node, &g.resources, g.expires_ms));
        let sig = unhex(&g.signature).ok_or_else(|| GrantError::BadSignature(container.to_string()))?;
        mac.verify_slice(&sig).map_err(|_| GrantError::BadSignature(container.to_string()))?;
        let mismatch = |what, granted: &str, asked: &str| {
            (granted != asked).then(|| GrantError::Mismatch {
                what,
                granted: granted.into(),
                asked: asked.into(),
            })
        };
        if let Some(e) = mismatch("container", &g.container, container)
            .or_else(|| mismatch("application", &g.app, app))
            .or_else(|| mismatch("node", &g.node, node))
        {
            return Err(e);
        }
        if g.resources != *resources {
            return Err(GrantError::Resources {
                container: container.to_string(),
                granted_mb: g.resources.memory_mb,
                granted_vcores: g.resources.vcores,
                asked_mb: resources.memory_mb,
                asked_vcores: resources.vcores,
            });
        }
        if now_ms > g.expires_ms {
            return Err(GrantError::Expired(container.to_string()));
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Resources = Resources { memory_mb: 512, vcores: 1 };

    #[test]
    fn only_a_grant_of_this_cluster_for_exactly_this_launch_passes() {
        let key = GrantKey::from_secret("cluster-secret");
        let g = key.sign("app-0001-c2", "app-0001", "node-1", R, 1_000);
        let check = |g: Option<&Grant>, c: &str, a: &str, n: &str, r: &Resources, now: i64| {
            key.check(g, c, a, n, r, now).map_err(|e| e.to_string())
        };
        assert_eq!(check(Some(&g), "app-0001-c2", "app-0001", "node-1", &R, 2_000), Ok(()));
        assert_eq!(
            check(None, "app-0001-c2", "app-0001", "node-1", &R, 2_000).unwrap_err(),
            "the launch of app-0001-c2 carries no allocation grant from the resource manager"
        );
        // Another cluster's key, or any field changed after signing.
        let other =
            GrantKey::from_secret("another-secret").sign("app-0001-c2", "app-0001", "node-1", R, 1_000);
        let forged = [
            other,
            Grant { resources: Resources { memory_mb: 0, vcores: 1 }, ..g.clone() },
            Grant { node: "node-2".into(), ..g.clone() },
            Grant { expires_ms: i64::MAX, ..g.clone() },
            Grant { signature: "00".repeat(32), ..g.clone() },
            Grant { signature: "not hex".into(), ..g.clone() },
        ];
        for f in &forged {
            assert_eq!(
                check(Some(f), &f.container, &f.app, &f.node, &f.resources, 2_000).unwrap_err(),
                "the grant for app-0001-c2 is not signed by this cluster's resource manager",
                "{f:?}"
            );
        }
        // A real grant used for another launch.
        assert_eq!(
            check(Some(&g), "app-0001-c3", "app-0001", "node-1", &R, 2_000).unwrap_err(),
            "the grant is for container \"app-0001-c2\", the launch for \"app-0001-c3\""
        );
        assert_eq!(
            check(Some(&g), "app-0001-c2", "app-0001", "node-2", &R, 2_000).unwrap_err(),
            "the grant is for node \"node-1\", the launch for \"node-2\""
        );
        let big = Resources { memory_mb: 0, vcores: 1 };
        assert_eq!(
            check(Some(&g), "app-0001-c2", "app-0001", "node-1", &big, 2_000).unwrap_err(),
            "the grant for app-0001-c2 allows 512 MB and 1 vcores; the launch asks for 0 MB and 1 vcores"
        );
        assert_eq!(
            check(Some(&g), "app-0001-c2", "app-0001", "node-1", &R, 1_000 + GRANT_TTL_MS + 1).unwrap_err(),
            "the grant for app-0001-c2 has expired"
        );
    }
}
