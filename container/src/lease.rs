//! A container's lease on its tasks (DESIGN invariant 9, one owner per task).
//!
//! On a cluster a container owns its tasks only while its lease runs: the job
//! coordinator (or, while the coordinator is away, the resource manager)
//! renews it about once a second, and stops renewing it once the container
//! is no longer the one it counts as the tasks' owner. A container whose lease
//! ran out, or that was told it is no longer the owner, stops processing and
//! exits without committing; the coordinator starts a successor only after
//! the last lease it granted has run out (or the old container is known to
//! have ended).
//!
//! The timing assumption: the container measures its lease from the moment it
//! *sent* the renewal that was granted, the coordinator from the moment it
//! *received* it, so the container's lease always ends first as long as both
//! monotonic clocks run at about the same rate (drift well under the lease's
//! length over the lease's length, which holds for any working machine). A
//! process paused past its lease (SIGSTOP, a VM freeze) finds it expired the
//! moment it runs again: `CLOCK_MONOTONIC` counts the pause. Between that
//! check and a write, the embedded log's producer epochs fence it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The generation after `last`: above it, and above the clock in
/// milliseconds, so that generations issued by different launchers (a
/// cluster's coordinators, `samza-run` on one machine) overtake each other.
pub fn next_generation(last: u64) -> u64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (last + 1).max(clock)
}

/// Whether a lease of `lease` may be renewed for a container whose node has
/// been silent for `node_silent`: only while every lease granted on the node
/// ends before the node is declared lost (after `node_timeout`). The one rule
/// the coordinator and the resource manager both apply.
pub fn renewable(node_silent: Duration, node_timeout: Duration, lease: Duration) -> bool {
    node_silent < node_timeout.saturating_sub(lease)
}

/// Exit code of a container that stopped because it lost its tasks
/// (lease expired, revoked, or fenced by a successor).
pub const EXIT_NOT_OWNER: u8 = 3;

pub struct Lease {
    base: Instant,
    /// Milliseconds after `base` until which the lease runs.
    until_ms: AtomicU64,
    length: Duration,
    revoked: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Lease {
    /// A lease of `length`, granted at `sent` (the send time of the request
    /// that was granted).
    pub fn granted(length: Duration, sent: Instant) -> Lease {
        let lease = Lease {
            base: sent,
            until_ms: AtomicU64::new(0),
            length,
            revoked: AtomicBool::new(false),
            reason: Mutex::new(None),
        };
        lease.renew(sent);
        lease
    }

    pub fn length(&self) -> Duration {
        self.length
    }

    /// Extends the lease to `length` after `sent`, the send time of the
    /// granted renewal (never shortens it).
    pub fn renew(&self, sent: Instant) {
        let until = (sent.saturating_duration_since(self.base) + self.length).as_millis() as u64;
        self.until_ms.fetch_max(until, Ordering::AcqRel);
    }

    /// Ends the lease now, for `why`.
    pub fn revoke(&self, why: String) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(why);
        }
        self.revoked.store(true, Ordering::Release);
    }

    /// `Err(why)` once the lease has run out or was revoked.
    pub fn check(&self) -> Result<(), String> {
        if self.revoked.load(Ordering::Acquire) {
            let r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            return Err(r.clone().unwrap_or_else(|| "lease revoked".into()));
        }
        let now = self.base.elapsed().as_millis() as u64;
        let until = self.until_ms.load(Ordering::Acquire);
        if now >= until {
            return Err(format!(
                "lease expired {} ms ago (no renewal from the coordinator within {} ms)",
                now - until,
                self.length.as_millis()
            ));
        }
        Ok(())
    }
}

/// Ends this container process at once, without a final commit or any
/// other write: its tasks may already run elsewhere. Leaves the exit code in
/// `exit-code` for a node manager that is not its parent (see `entry`).
pub fn exit_not_owner(container: u32, why: &str) -> ! {
    eprintln!(
        "error: container {container}: no longer the owner of its tasks: {why}; exiting without a commit"
    );
    tracing::warn!(container, reason = why, "lost the tasks' lease; exiting without a commit");
    exit_abortively()
}

/// Exits with [`EXIT_NOT_OWNER`] so that nothing this process wrote but
/// did not see acknowledged reaches a system after it is gone: every socket
/// is reset on exit instead of closed gracefully. (A graceful close leaves
/// unsent and unacknowledged bytes to the kernel, which goes on sending them;
/// from a host cut off the network they would arrive once it is back, after
/// the successor's writes, as a stale checkpoint or output.)
pub fn exit_abortively() -> ! {
    if crate::env::on_cluster() {
        let _ = std::fs::write("exit-code", EXIT_NOT_OWNER.to_string());
    }
    reset_sockets_on_close();
    // SAFETY: _exit ends the process without running exit handlers or
    // destructors, so no other thread's half-done work is flushed anywhere.
    unsafe { libc::_exit(i32::from(EXIT_NOT_OWNER)) }
}

/// SO_LINGER 0 on every socket of this process: closing one (exit closes
/// all) resets the connection and drops what is still queued.
fn reset_sockets_on_close() {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return };
    for fd in fds.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()) {
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on a descriptor of this process with a valid
        // option value; it fails harmlessly (ENOTSOCK) on non-sockets.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_from_the_send_time_of_its_last_renewal_and_a_revocation_ends_it() {
        let t0 = Instant::now();
        let lease = Lease::granted(Duration::from_millis(50), t0);
        assert!(lease.check().is_ok());
        // A renewal sent earlier than the last one never shortens it.
        lease.renew(t0);
        std::thread::sleep(Duration::from_millis(60));
        let err = lease.check().unwrap_err();
        assert!(err.starts_with("lease expired"), "{err}");
        lease.renew(Instant::now());
        assert!(lease.check().is_ok());
        lease.revoke("container app-1-c3 is no longer the owner of job container 0".into());
        assert_eq!(
            lease.check().unwrap_err(),
            "container app-1-c3 is no longer the owner of job container 0"
        );
        lease.renew(Instant::now());
        assert!(lease.check().is_err(), "a revoked lease stays revoked");
    }
}
