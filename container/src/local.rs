//! `samza-run job.toml` without a cluster: runs the job's containers as
//! processes of the job binary on this machine, shows a live progress line,
//! and stops them cleanly on Ctrl-C.
//!
//! Containers run in their own process group (so a terminal's Ctrl-C reaches
//! only the runner, which asks each container to stop with SIGTERM and waits
//! for its final commit) and get SIGTERM if the runner dies. Their output goes
//! to `<state-dir>/<job>/container-<id>.log`; a failing container stops the run
//! with a non-zero exit and the end of its log shown.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::JobConfig;
use crate::layout;
use crate::status::ContainerStatus;

struct Running {
    id: u32,
    child: Child,
    log: PathBuf,
    status: PathBuf,
    exited: Option<std::process::ExitStatus>,
}

/// Runs the job described by `job` on this machine; `binary` overrides `package.binary`.
pub fn run_local(job: &Path, overrides: &[String], binary: Option<PathBuf>) -> ExitCode {
    match run(job, overrides, binary) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("samza-run: {}", crate::entry::chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// A fresh random token for this run, written to `path` with mode 0600.
fn local_token(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 24];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let _ = std::fs::remove_file(path);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}

/// The next generation for this job here (see `lease::next_generation`),
/// recorded in `path`.
pub fn next_generation(path: &Path) -> anyhow::Result<u64> {
    let last: u64 = match std::fs::read_to_string(path) {
        Ok(s) => {
            s.trim().parse().map_err(|_| anyhow::anyhow!("{}: {s:?} is not a generation", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let g = crate::lease::next_generation(last);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, g.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(g)
}

/// Has the job binary check the config with its own system types and tasks
/// (`<binary> check`), so that a mistake fails once, here, before any
/// container starts.
fn check_with_binary(binary: &Path, job: &Path, overrides: &[String]) -> anyhow::Result<()> {
    let mut cmd = Command::new(binary);
    cmd.arg("check").arg("--config").arg(job);
    for o in overrides {
        cmd.arg("--override").arg(o);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!("{}", err.trim_end());
    }
    Ok(())
}

fn run(job: &Path, overrides: &[String], binary: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let cfg = JobConfig::load(job, overrides)?;
    let binary = match binary {
        Some(b) if !b.is_file() => {
            anyhow::bail!("{}: the job binary {} does not exist", job.display(), b.display())
        }
        Some(b) => b,
        None => cfg.job_binary().map_err(anyhow::Error::msg)?,
    };
    check_with_binary(&binary, job, overrides)?;
    let job_dir = layout::job_dir(&cfg.state_dir, &cfg.name);
    std::fs::create_dir_all(&job_dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())?;
    }

    // The containers serve their metrics on loopback behind this run's token.
    let token = local_token(&layout::token_file(&cfg.state_dir, &cfg.name))?;
    // This run's containers own their tasks from now on: a generation above
    // every earlier one fences containers of an earlier run still alive.
    let generation = next_generation(&layout::generation_file(&cfg.state_dir, &cfg.name))?;
    let mut running = Vec::new();
    for id in 0..cfg.container_count {
        let log = layout::log_file(&cfg.state_dir, &cfg.name, id);
        let status = layout::status_file(&cfg.state_dir, &cfg.name, id);
        let _ = std::fs::remove_file(&status);
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(&binary);
        cmd.arg("container").arg("--config").arg(job).arg("--container-id").arg(id.to_string());
        for o in overrides {
            cmd.arg("--override").arg(o);
        }
        cmd.env(crate::env::STATUS_FILE, &status)
            .env(crate::env::TOKEN, &token)
            .env(crate::env::GENERATION, generation.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        running.push(Running { id, child, log, status, exited: None });
    }
    eprintln!(
        "samza-run: job {} running {} container(s) of {} (logs in {})",
        cfg.name,
        cfg.container_count,
        binary.display(),
        job_dir.display()
    );

    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut progress = Progress::default();
    let mut last_line = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        for r in running.iter_mut().filter(|r| r.exited.is_none()) {
            if let Some(status) = r.child.try_wait()? {
                r.exited = Some(status);
                if !status.success() {
                    if tty {
                        eprintln!();
                    }
                    eprintln!("samza-run: container {} failed ({status}); end of {}:", r.id, r.log.display());
                    eprint!("{}", tail(&r.log, 20));
                    stop_all(&mut running, cfg.shutdown_timeout_ms);
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        let line = progress.line(&running, start);
        if tty {
            eprint!("\r{line}\x1b[K");
        } else if last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!("{line}");
            last_line = Instant::now();
        }
        if running.iter().all(|r| r.exited.is_some()) {
            if tty {
                eprintln!();
            }
            eprintln!("{}", progress.line(&running, start));
            eprintln!("samza-run: job {} finished", cfg.name);
            return Ok(ExitCode::SUCCESS);
        }
        if stop.load(Ordering::Relaxed) {
            if tty {
                eprintln!();
            }
            eprintln!("samza-run: stopping job {} (containers commit and exit)", cfg.name);
            let clean = stop_all(&mut running, cfg.shutdown_timeout_ms);
            eprintln!("{}", progress.line(&running, start));
            return Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
    }
}

/// SIGTERM to every running container, SIGKILL to those still alive after the
/// timeout. Returns whether all exited cleanly.
fn stop_all(running: &mut [Running], timeout_ms: u64) -> bool {
    for r in running.iter().filter(|r| r.exited.is_none()) {
        // SAFETY: signalling a child we started, by its pid.
        unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut clean = true;
    for r in running.iter_mut().filter(|r| r.exited.is_none()) {
        loop {
            match r.child.try_wait() {
                Ok(Some(s)) => {
                    clean &= s.success();
                    r.exited = Some(s);
                    break;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    eprintln!(
                        "samza-run: container {} did not stop within {timeout_ms} ms; killing it",
                        r.id
                    );
                    let _ = r.child.kill();
                    r.exited = r.child.wait().ok();
                    clean = false;
                    break;
                }
            }
        }
    }
    clean
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}

#[derive(Default)]
struct Progress {
    last: Option<(Instant, i64)>,
    rate: f64,
}

impl Progress {
    /// `processed N (R msg/s), lag: stream=L, ...` from the containers' status files.
    fn line(&mut self, running: &[Running], start: Instant) -> String {
        let mut processed = 0i64;
        let mut lag: BTreeMap<String, u64> = BTreeMap::new();
        for r in running {
            let Some(status) = ContainerStatus::read(&r.status) else {
                continue;
            };
            processed += status.processed as i64;
            for p in &status.partitions {
                *lag.entry(format!("{}.{}", p.system, p.stream)).or_default() += p.lag();
            }
        }
        let now = Instant::now();
        if let Some((t, n)) = self.last {
            let dt = now.duration_since(t).as_secs_f64();
            if dt >= 0.9 {
                self.rate = (processed - n) as f64 / dt;
                self.last = Some((now, processed));
            }
        } else {
            self.last = Some((now, processed));
        }
        let lag: Vec<String> = lag.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let alive = running.iter().filter(|r| r.exited.is_none()).count();
        let mut s = String::new();
        let _ = write!(
            &mut VecWriter(&mut s),
            "[{:>5.0}s] {alive} container(s) running, {processed} messages processed ({:.0} msg/s), lag: {}",
            start.elapsed().as_secs_f64(),
            self.rate,
            if lag.is_empty() { "-".to_string() } else { lag.join(" ") }
        );
        s
    }
}

struct VecWriter<'a>(&'a mut String);

impl Write for VecWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
