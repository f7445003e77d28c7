//! Waiting for new data without spinning: inotify on partition directories.
//!
//! Appends from any process modify a segment file inside the partition
//! directory, which inotify reports on the directory's watch; a roll creates a
//! file. A follower blocks in `poll(2)` on the inotify descriptor, so it wakes
//! within the kernel's scheduling latency of an append and burns no CPU while
//! idle. Events queue from the moment a directory is watched, so an append that
//! lands between a reader's last empty read and its wait still wakes it.

use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::Duration;

use inotify::{Inotify, WatchMask};

use crate::error::{IoContext, Result};

/// Wakes a reader when any watched partition changes.
pub struct Watcher {
    inotify: Inotify,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

impl Watcher {
    pub fn new() -> Result<Self> {
        let inotify = Inotify::init().ctx("cannot initialise inotify", Path::new("inotify"))?;
        Ok(Watcher { inotify, buf: vec![0; 4096] })
    }

    /// Watches a partition directory for appends and new segments.
    pub fn watch(&mut self, dir: &Path) -> Result<()> {
        self.inotify
            .watches()
            .add(dir, WatchMask::MODIFY | WatchMask::CREATE | WatchMask::MOVED_TO)
            .ctx("cannot watch partition directory", dir)?;
        Ok(())
    }

    /// Waits until a watched directory changes or `timeout` passes; returns
    /// whether anything changed. Drains the queued events.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        if self.drain()? {
            return Ok(true);
        }
        let mut pfd = libc::pollfd { fd: self.inotify.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(err).ctx("cannot poll inotify", Path::new("inotify"));
        }
        if rc == 0 {
            return Ok(false);
        }
        self.drain()?;
        Ok(true)
    }

    fn drain(&mut self) -> Result<bool> {
        let mut any = false;
        loop {
            match self.inotify.read_events(&mut self.buf) {
                Ok(events) => {
                    let n = events.count();
                    if n == 0 {
                        return Ok(any);
                    }
                    any = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(any),
                Err(e) => return Err(e).ctx("cannot read inotify events", Path::new("inotify")),
            }
        }
    }
}
