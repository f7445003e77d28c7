//! Transactions: a producer's writes to many partitions become visible to
//! readers at once, or never (exactly-once), as Kafka's transactions do.
//!
//! A transactional producer has an identity that stays the same across
//! restarts (a job's container) and a generation that grows with each one.
//! Every generation writes under its own producer id ([`producer_id`]) and
//! numbers its transactions 1, 2, ... (the batch header's `base_sequence`);
//! its data batches carry the TRANSACTIONAL bit. A transaction ends with a
//! COMMIT or ABORT control batch (a marker) for `(producer id, txn)` in every
//! partition it wrote; read-committed readers hold a transaction's records
//! back until its marker and drop aborted ones (see [`crate::reader`]).
//!
//! The decision is one file per identity, `<log>/.transactions/<identity>`
//! (the transaction coordinator's log, on a shared file system): it names
//! the generation that owns the identity, the last transaction it committed
//! and every partition it may have written (registered before its first
//! write there). Committing is writing `committed = n` to it (fsync, rename)
//! under its lock, refused when a newer generation took the file over; the
//! markers follow. A new generation first takes the file over (so a paused
//! predecessor can decide nothing more), then finishes what the old one left:
//! COMMIT markers for its last committed transaction (those may not all have
//! been written) and ABORT markers for the one after it, in every partition
//! it registered. A marker for a transaction with no records in a partition
//! changes nothing there, so finishing twice is harmless.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LogError, Result};
use crate::segment::{open_lock_file, sync_dir, FileLock};

/// Directory of the transaction files inside a log's root.
pub const TRANSACTIONS_DIR: &str = ".transactions";

/// The producer id of `identity`'s generation `generation`: FNV-1a over
/// both, kept non-negative (-1 means "no producer" in a batch header).
pub fn producer_id(identity: &str, generation: u64) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.as_bytes().iter().chain(&[0u8]).chain(&generation.to_le_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h & (i64::MAX as u64)) as i64
}

/// What a generation of an identity has decided, as kept in its file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    pub generation: u64,
    pub producer_id: i64,
    /// Its last committed transaction (0: none yet); the one after it may be open.
    pub committed: u32,
    /// Every partition it may have written, as (stream, partition).
    pub partitions: BTreeSet<(String, u32)>,
}

impl Generation {
    fn new(identity: &str, generation: u64) -> Generation {
        Generation { generation, producer_id: producer_id(identity, generation), ..Default::default() }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct TxnFile {
    identity: String,
    current: Generation,
    /// Older generations whose markers are not all known to be written.
    #[serde(default)]
    unfinished: Vec<Generation>,
}

/// What a log's transaction file says of one producer identity.
#[derive(Clone, Debug)]
pub struct IdentityState {
    pub identity: String,
    pub current: Generation,
    /// Older generations whose markers are not all known to be written.
    pub unfinished: Vec<Generation>,
}

/// Every producer identity with a transaction file in the log at `log_root`, by name.
pub fn identities(log_root: &Path) -> Result<Vec<IdentityState>> {
    let dir = log_root.join(TRANSACTIONS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("cannot list transaction directory", &dir),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e.ctx("cannot list transaction directory", &dir)?.path();
        if path.extension().is_some() {
            continue; // locks and temporary files
        }
        let bytes = fs::read(&path).ctx("cannot read transaction file", &path)?;
        let f: TxnFile = serde_json::from_slice(&bytes)
            .map_err(|e| LogError::BadMetadata { path: path.clone(), reason: e.to_string() })?;
        out.push(IdentityState { identity: f.identity, current: f.current, unfinished: f.unfinished });
    }
    out.sort_by(|a, b| a.identity.cmp(&b.identity));
    Ok(out)
}

/// A file name for `identity`: characters outside `[A-Za-z0-9._-]` as `%XX`.
fn file_name(identity: &str) -> String {
    let mut s = String::with_capacity(identity.len());
    for b in identity.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// One generation's hold on its identity's transaction file.
#[derive(Debug)]
pub struct Transactor {
    identity: String,
    path: PathBuf,
    dir: PathBuf,
    lock_file: File,
    lock_path: PathBuf,
    me: Generation,
}

impl Transactor {
    /// Takes `identity` over at `generation` (fails with [`LogError::Fenced`]
    /// when a newer one holds it) and returns what older generations left to
    /// finish: write their markers (see the module docs), then call
    /// [`Transactor::finished`].
    pub fn take_over(
        log_root: &Path,
        identity: &str,
        generation: u64,
    ) -> Result<(Transactor, Vec<Generation>)> {
        let dir = log_root.join(TRANSACTIONS_DIR);
        fs::create_dir_all(&dir).ctx("cannot create transaction directory", &dir)?;
        let name = file_name(identity);
        let lock_name = format!("{name}.lock");
        let lock_path = dir.join(&lock_name);
        let lock_file = open_lock_file(&dir, &lock_name)?;
        let t = Transactor {
            identity: identity.to_string(),
            path: dir.join(&name),
            dir,
            lock_file,
            lock_path,
            me: Generation::new(identity, generation),
        };
        let guard = FileLock::lock(&t.lock_file, &t.lock_path)?;
        let file = t.read()?.unwrap_or_default();
        // A generation starts once: the same one again could not tell its
        // old open transaction from its new one.
        if file.current.producer_id != 0 && file.current.generation >= generation {
            return Err(t.fenced(file.current.generation));
        }
        let mut unfinished = file.unfinished;
        if file.current.producer_id != 0 {
            unfinished.push(file.current);
        }
        t.write(&TxnFile {
            identity: identity.to_string(),
            current: t.me.clone(),
            unfinished: unfinished.clone(),
        })?;
        drop(guard);
        Ok((t, unfinished))
    }

    /// Records that the markers of the older generations are written.
    pub fn finished(&mut self) -> Result<()> {
        self.update(|_| {})
    }

    pub fn generation(&self) -> &Generation {
        &self.me
    }

    /// Registers partitions before this generation's first write to them.
    pub fn register(&mut self, partitions: impl IntoIterator<Item = (String, u32)>) -> Result<()> {
        let new: Vec<_> = partitions.into_iter().filter(|p| !self.me.partitions.contains(p)).collect();
        if new.is_empty() {
            return Ok(());
        }
        self.update(|g| g.partitions.extend(new))
    }

    /// The commit point of transaction `txn`: recorded durably, unless a
    /// newer generation took the identity over (then [`LogError::Fenced`]).
    pub fn commit(&mut self, txn: u32) -> Result<()> {
        self.update(|g| g.committed = txn)
    }

    /// Applies `f` to this generation's record and writes the file, under
    /// its lock, unless a newer generation holds it. Clears `unfinished`.
    fn update(&mut self, f: impl FnOnce(&mut Generation)) -> Result<()> {
        let _guard = FileLock::lock(&self.lock_file, &self.lock_path)?;
        if let Some(file) = self.read()? {
            if file.current.generation != self.me.generation {
                return Err(self.fenced(file.current.generation));
            }
        }
        let mut me = self.me.clone();
        f(&mut me);
        self.write(&TxnFile {
            identity: self.identity.clone(),
            current: me.clone(),
            unfinished: Vec::new(),
        })?;
        self.me = me;
        Ok(())
    }

    fn fenced(&self, current: u64) -> LogError {
        LogError::Fenced {
            stream: TRANSACTIONS_DIR.to_string(),
            partition: 0,
            producer: self.identity.clone(),
            epoch: self.me.generation,
            current,
        }
    }

    fn read(&self) -> Result<Option<TxnFile>> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| LogError::BadMetadata { path: self.path.clone(), reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("cannot read transaction file", &self.path),
        }
    }

    fn write(&self, file: &TxnFile) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec(file).expect("transaction file serialises");
        let mut f = File::create(&tmp).ctx("cannot create transaction file", &tmp)?;
        f.write_all(&bytes).ctx("cannot write transaction file", &tmp)?;
        f.sync_data().ctx("cannot sync transaction file", &tmp)?;
        fs::rename(&tmp, &self.path).ctx("cannot replace transaction file", &self.path)?;
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_generation_takes_over_and_the_older_can_decide_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let (mut g1, left) = Transactor::take_over(dir.path(), "job/container-0", 10).unwrap();
        assert!(left.is_empty());
        g1.register([("out".to_string(), 3)]).unwrap();
        g1.commit(1).unwrap();
        let (mut g2, left) = Transactor::take_over(dir.path(), "job/container-0", 11).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].committed, 1);
        assert_eq!(left[0].producer_id, producer_id("job/container-0", 10));
        assert_eq!(left[0].partitions.iter().cloned().collect::<Vec<_>>(), vec![("out".to_string(), 3)]);
        let e = g1.commit(2).unwrap_err();
        assert!(matches!(e, LogError::Fenced { epoch: 10, current: 11, .. }), "{e}");
        assert!(matches!(
            Transactor::take_over(dir.path(), "job/container-0", 9),
            Err(LogError::Fenced { .. })
        ));
        // Not finished: a generation after 11 finishes 10 as well as 11.
        let (_, left) = Transactor::take_over(dir.path(), "job/container-0", 12).unwrap();
        assert_eq!(left.iter().map(|g| g.generation).collect::<Vec<_>>(), vec![10, 11]);
        // Once finished, nothing is left.
        let (mut g13, _) = Transactor::take_over(dir.path(), "job/container-0", 13).unwrap();
        g13.finished().unwrap();
        g2.commit(1).unwrap_err();
        let (_, left) = Transactor::take_over(dir.path(), "job/container-0", 14).unwrap();
        assert_eq!(left.iter().map(|g| g.generation).collect::<Vec<_>>(), vec![13]);
    }

    #[test]
    fn identities_become_file_names_and_producer_ids_differ_by_generation() {
        assert_eq!(file_name("page-views/container-1"), "page-views%2Fcontainer-1");
        assert_ne!(producer_id("a", 1), producer_id("a", 2));
        assert!(producer_id("a", 1) >= 0);
    }
}
