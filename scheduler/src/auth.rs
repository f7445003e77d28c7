//! The cluster's bearer token, and checks on names that reach the disk.
//!
//! The resource manager generates the token at its first start and keeps it
//! in `<rm-dir>/token` (mode 0600). Every endpoint of the resource manager and
//! the node managers requires `Authorization: Bearer <token>`; clients find
//! the token in `SAMZA_TOKEN`, in the file named by `SAMZA_TOKEN_FILE`, or in
//! `<cluster-dir>/rm/token` (see [`find_token`]).

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
        .map_err(|e| anyhow::anyhow!("cannot read the cluster token in {}: {e}", path.display()))?;
    let t = t.trim();
    if t.is_empty() {
        anyhow::bail!("the cluster token file {} is empty", path.display());
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

pub use samza_container::http::{error, require_token};

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
    sha2::Sha256::digest(bytes).iter().map(|x| format!("{x:02x}")).collect()
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
