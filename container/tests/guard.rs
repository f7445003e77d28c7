//! A job's process on a cluster keeps its credentials from the other
//! processes of its user: another process running as the same user cannot
//! read the tokens in its environment once it has called
//! `guard_credentials`, and can without it (so the check can fail).
//!
//! The test runs itself again as a child process that drops to user
//! `nobody` (so it needs root, as CI and the namespace tests have), sets
//! itself up, says "ready" and waits; the parent then reads the child's
//! `/proc/<pid>/environ` as `nobody` with `setpriv`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CHILD: &str = "SAMZA_GUARD_TEST_CHILD";
const SECRET: &str = "samza-app.app-0001.secret-of-the-guard-test";
const NOBODY: u32 = 65534;

/// The child's side: become `nobody`, guard (or not), wait to be read.
fn child(guarded: bool) {
    // SAFETY: plain system calls with integer arguments, in a process of
    // its own that only sleeps afterwards.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
        assert_eq!(libc::setgid(NOBODY), 0);
        assert_eq!(libc::setuid(NOBODY), 0);
        // Changing user makes a process non-dumpable: the unguarded child
        // becomes dumpable again, as a process started by its user is.
        assert_eq!(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0), 0);
    }
    if guarded {
        samza_container::entry::guard_credentials();
    }
    println!("ready");
    std::thread::sleep(std::time::Duration::from_secs(60));
}

/// Starts the child, reads its environment as `nobody`: Some(text) when
/// readable.
fn read_environ_of_child(guarded: bool) -> Option<String> {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "another_process_of_the_user_cannot_read_a_guarded_processs_tokens", "--nocapture"])
        .env(CHILD, if guarded { "guarded" } else { "open" })
        .env("SAMZA_TOKEN", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the child ended before it was ready");
    }
    let read = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(format!("/proc/{}/environ", c.id()))
        .output()
        .expect("setpriv (util-linux)");
    c.kill().unwrap();
    c.wait().unwrap();
    read.status.success().then(|| String::from_utf8_lossy(&read.stdout).into_owned())
}

#[test]
fn another_process_of_the_user_cannot_read_a_guarded_processs_tokens() {
    match std::env::var(CHILD).as_deref() {
        Ok("guarded") => return child(true),
        Ok("open") => return child(false),
        _ => {}
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: changing to another user needs root");
        return;
    }
    let open = read_environ_of_child(false).expect("an unguarded process's environment is readable");
    assert!(open.contains(SECRET), "the control read its token");
    assert!(read_environ_of_child(true).is_none(), "a guarded process's environment was read");
}
