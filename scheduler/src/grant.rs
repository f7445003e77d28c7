//! Grants: the resource manager's proof that it allocated a container, which
//! a node manager checks before it launches anything (YARN's container
//! tokens). A grant names the container, its application, its node, the
//! resources the RM accounted for, the SHA-256 of the application's token
//! (the launch must carry that token, which the container gets) and when
//! it expires; it is signed with HMAC-SHA256 under a key derived from the
//! node's credential, which the RM and that node's manager alone hold
//! (`crate::auth::Keys::grant_key`). So a launch the RM did not allocate, one
//! bigger than it accounted for, one meant for another node, or one that
//! would hand the process another application's token is refused, whoever
//! sends it.
//!
//! The same key signs the node's launch tokens (YARN's NMTokens): the bearer
//! credential of the launch route, one per application, which the RM gives
//! the application's coordinator with its allocations on the node. An
//! application's token (which its containers hold) is not one, so a
//! container cannot launch anything, even with a grant in hand.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::auth::hex;
use crate::proto::{Grant, Launch, Resources};

/// How long a grant may wait for its launch (the coordinator launches at
/// once; the margin covers clocks that differ between hosts).
pub const GRANT_TTL_MS: i64 = 10 * 60 * 1000;
/// [`GRANT_TTL_MS`] as a duration.
pub const GRANT_TTL: std::time::Duration = std::time::Duration::from_millis(GRANT_TTL_MS as u64);

/// The signing key of one node's grants, derived from its credential.
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
    #[error("the launch of {0} does not come with the token of the application the grant is for")]
    Token(String),
    #[error("the grant for {container} allows {granted_mb} MB and {granted_vcores} vcores; the launch asks for {asked_mb} MB and {asked_vcores} vcores")]
    Resources { container: String, granted_mb: u64, granted_vcores: u32, asked_mb: u64, asked_vcores: u32 },
    #[error("the grant for {0} has expired")]
    Expired(String),
}

fn message(g: &Grant) -> Vec<u8> {
    let r = &g.resources;
    format!(
        "samza-grant/3\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        g.container, g.app, g.job, g.node, r.memory_mb, r.vcores, g.token_sha256, g.expires_ms
    )
    .into_bytes()
}

impl GrantKey {
    /// The key whose secret is `token` (a node's credential).
    pub fn from_secret(token: &str) -> GrantKey {
        let mut h = Sha256::new();
        h.update(b"samza grant key\0");
        h.update(token.as_bytes());
        GrantKey(h.finalize().into())
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }

    fn launch_mac(&self, app: &str) -> Hmac<Sha256> {
        let mut mac = self.mac();
        mac.update(b"samza-launch-token/1\n");
        mac.update(app.as_bytes());
        mac
    }

    /// The launch token of application `app` on this key's node.
    pub fn launch_token(&self, app: &str) -> String {
        let sig = hex(&self.launch_mac(app).finalize().into_bytes());
        format!("{}{app}.{sig}", crate::auth::LAUNCH_PREFIX)
    }

    /// The application whose launch token on this key's node `t` is.
    pub fn launcher_of(&self, t: &str) -> Option<String> {
        let (app, sig) = crate::auth::launch_token_parts(t)?;
        let sig = unhex(&sig)?;
        self.launch_mac(&app).verify_slice(&sig).ok().map(|()| app)
    }

    /// A grant for `container` of `app` on `node`, of `resources`, launched
    /// with the token whose SHA-256 is `token_sha256`, valid until
    /// `now_ms + GRANT_TTL_MS`.
    pub fn sign(
        &self,
        container: &str,
        app: &str,
        node: &str,
        resources: Resources,
        token_sha256: &str,
        now_ms: i64,
    ) -> Grant {
        let g = Grant {
            container: container.to_string(),
            app: app.to_string(),
            job: String::new(),
            node: node.to_string(),
            resources,
            token_sha256: token_sha256.to_string(),
            expires_ms: 0,
            signature: String::new(),
        };
        self.sign_grant(g, now_ms)
    }

    /// Signs `g` (its job included), valid until `now_ms + GRANT_TTL_MS`.
    pub fn sign_grant(&self, mut g: Grant, now_ms: i64) -> Grant {
        g.expires_ms = now_ms + GRANT_TTL_MS;
        let mut mac = self.mac();
        mac.update(&message(&g));
        g.signature = hex(&mac.finalize().into_bytes());
        g
    }

    /// Checks that launch `l`, carrying an application token whose SHA-256
    /// is `token_sha256`, carries a grant signed for this node (`node`) for
    /// exactly this launch, not expired.
    pub fn check(&self, l: &Launch, node: &str, token_sha256: &str, now_ms: i64) -> Result<(), GrantError> {
        let (container, app, resources) = (&l.container, &l.app, &l.resources);
        let g = l.grant.as_ref().ok_or_else(|| GrantError::Missing(container.to_string()))?;
        let mut mac = self.mac();
        mac.update(&message(g));
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
        if !crate::auth::same(g.token_sha256.as_bytes(), token_sha256.as_bytes()) {
            return Err(GrantError::Token(container.to_string()));
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
        let key = GrantKey::from_secret("node-1's credential");
        let token = "ab".repeat(32);
        let g = key.sign("app-0001-c2", "app-0001", "node-1", R, &token, 1_000);
        let launch = |g: Option<&Grant>, c: &str, a: &str, r: &Resources| Launch {
            container: c.into(),
            app: a.into(),
            package_sha256: String::new(),
            args: vec![],
            env: Default::default(),
            files: Default::default(),
            resources: *r,
            stop_grace_ms: 0,
            grant: g.cloned(),
            app_token: String::new(),
        };
        let check = |g: Option<&Grant>, c: &str, a: &str, n: &str, r: &Resources, now: i64| {
            key.check(&launch(g, c, a, r), n, &token, now).map_err(|e| e.to_string())
        };
        assert_eq!(check(Some(&g), "app-0001-c2", "app-0001", "node-1", &R, 2_000), Ok(()));
        assert_eq!(
            check(None, "app-0001-c2", "app-0001", "node-1", &R, 2_000).unwrap_err(),
            "the launch of app-0001-c2 carries no allocation grant from the resource manager"
        );
        // Another node's key, or any field changed after signing.
        let other = GrantKey::from_secret("node-2's credential").sign(
            "app-0001-c2",
            "app-0001",
            "node-1",
            R,
            &token,
            1_000,
        );
        let forged = [
            other,
            Grant { resources: Resources { memory_mb: 0, vcores: 1 }, ..g.clone() },
            Grant { node: "node-2".into(), ..g.clone() },
            Grant { expires_ms: i64::MAX, ..g.clone() },
            Grant { token_sha256: "cd".repeat(32), ..g.clone() },
            Grant { job: "another-job".into(), ..g.clone() },
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
        assert_eq!(
            key.check(&launch(Some(&g), "app-0001-c2", "app-0001", &R), "node-1", &"cd".repeat(32), 2_000)
                .unwrap_err()
                .to_string(),
            "the launch of app-0001-c2 does not come with the token of the application the grant is for"
        );
        // Launch tokens: one per application and node, not forgeable.
        let lt = key.launch_token("app-0001");
        assert!(lt.starts_with("samza-launch.app-0001."), "{lt}");
        assert_eq!(key.launcher_of(&lt).as_deref(), Some("app-0001"));
        assert_eq!(key.launcher_of(&lt.replacen("app-0001", "app-0002", 1)), None, "renamed");
        assert_eq!(GrantKey::from_secret("node-2's credential").launcher_of(&lt), None, "another node");
        for not_one in [&token, "samza-app.app-0001.00", "samza-launch.app-0001.zz", "samza-launch.app-0001"]
        {
            assert_eq!(key.launcher_of(not_one), None, "{not_one}");
        }
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
