//! A Kafka-protocol broker for tests: `tansu` started on a free loopback
//! port with its data in a directory of its own, stopped (SIGKILL, by pid)
//! when dropped. `.ci/run` installs it; `TANSU` names the binary, else
//! `$HOME/.cache/samza-tools/bin/tansu`, else `tansu` on the `PATH`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    child: Option<Child>,
    host: String,
    port: u16,
    dir: PathBuf,
    storage: String,
}

/// The tansu binary, or why there is none.
pub fn tansu() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TANSU") {
        return Ok(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cache/samza-tools/bin/tansu");
        if p.is_file() {
            return Ok(p);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no tansu broker: run .ci/run (cargo install tansu --features libsql,dynostore) or set TANSU"
                .into()
        })
}

impl Broker {
    /// Starts a broker keeping its data in SQLite in `dir` (created if missing).
    pub fn start(dir: &Path) -> Result<Broker, String> {
        Self::start_with(dir, "sqlite://tansu.db")
    }

    /// Starts a broker with this tansu storage engine URL (`memory://tansu/`
    /// keeps nothing across restarts), run from `dir`.
    pub fn start_with(dir: &Path, storage: &str) -> Result<Broker, String> {
        Self::start_at(dir, storage, "127.0.0.1")
    }

    /// As [`Broker::start_with`], listening on (and advertising) `host`, an
    /// address of the calling thread's network (see `samza_scheduler::netns`).
    pub fn start_at(dir: &Path, storage: &str, host: &str) -> Result<Broker, String> {
        let port =
            TcpListener::bind((host, 0)).and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let mut b = Broker {
            child: None,
            host: host.to_string(),
            port,
            dir: dir.to_path_buf(),
            storage: storage.to_string(),
        };
        b.restart()?;
        Ok(b)
    }

    /// `host:port` for `bootstrap-servers`.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the broker (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port and data (after `kill`).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let url = format!("tcp://{}:{}", self.host, self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new(tansu()?)
            .args([
                "broker",
                "--cluster-id",
                "samza-test",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start tansu: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((self.host.as_str(), self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
                return Err(format!("tansu exited ({status}): {log}"));
            }
            if Instant::now() > deadline {
                return Err(format!("tansu did not listen on port {} within 20 s", self.port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
