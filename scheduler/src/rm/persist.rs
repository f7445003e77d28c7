//! The resource manager's state file, written by a thread of its own.
//!
//! A change is serialized under the state's lock and queued here with a
//! version; the thread writes the newest queued state atomically (temp file,
//! fsync, rename, fsync of the directory) and announces its version. A
//! request waits, asynchronously, until a write at or past its version is
//! done, so no async thread ever blocks on fsync and changes that arrive
//! during a write share the next one (group commit). A write that fails is
//! logged and tried again (the requests are answered meanwhile, as the
//! resource manager did before it had this thread).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

pub(crate) struct Persister {
    queue: Mutex<Queue>,
    wake: Condvar,
    written: watch::Receiver<u64>,
}

#[derive(Default)]
struct Queue {
    /// The version of the newest queued state.
    version: u64,
    /// The newest state not written yet.
    bytes: Option<Vec<u8>>,
}

impl Persister {
    /// Starts the thread that writes `path`.
    pub(crate) fn start(path: PathBuf) -> std::io::Result<Arc<Persister>> {
        let (tx, written) = watch::channel(0);
        let p = Arc::new(Persister { queue: Mutex::new(Queue::default()), wake: Condvar::new(), written });
        let me = p.clone();
        std::thread::Builder::new().name("rm-persist".into()).spawn(move || me.run(&path, &tx))?;
        Ok(p)
    }

    fn run(&self, path: &std::path::Path, written: &watch::Sender<u64>) {
        loop {
            let (version, bytes) = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                while q.bytes.is_none() {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                (q.version, q.bytes.take().expect("checked above"))
            };
            if let Err(e) = crate::durable::write_atomic(path, &bytes) {
                // Logged, and the requests waiting are answered (a full disk
                // must not stop the cluster); the state is written again
                // until it succeeds, unless a newer one replaces it.
                tracing::error!("cannot persist resource manager state in {}: {e:#}", path.display());
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if q.bytes.is_none() {
                    q.bytes = Some(bytes);
                }
                drop(q);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            written.send_replace(version);
        }
    }

    /// Queues `bytes` as the state to write; returns its version. Called
    /// under the state's lock, so versions follow the order of changes.
    pub(crate) fn submit(&self, bytes: Vec<u8>) -> u64 {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.version += 1;
        q.bytes = Some(bytes);
        self.wake.notify_one();
        q.version
    }

    /// Returns once the state of `version` (or a later one) is written.
    pub(crate) async fn written(&self, version: u64) {
        let mut rx = self.written.clone();
        let _ = rx.wait_for(|v| *v >= version).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_answered_only_once_a_write_that_holds_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let p = Persister::start(path.clone()).unwrap();
        let versions: Vec<u64> = (1..=50).map(|i| p.submit(format!("{{\"v\":{i}}}").into_bytes())).collect();
        assert_eq!(versions, (1..=50).collect::<Vec<_>>());
        p.written(50).await;
        // Later writes replace earlier ones whole: the file holds the last state.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"v\":50}");
        let v = p.submit(b"{\"v\":51}".to_vec());
        p.written(v).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"v\":51}");
    }
}
