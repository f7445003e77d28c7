//! A test network of hosts on this machine, for clusters that span machines:
//! one network namespace per host, joined by a bridge that lives in host 1's
//! namespace, each host with its own address (`10.77.0.<n>/24`, reachable only
//! inside these namespaces). Nothing is added to the machine's own network
//! namespace. Dropping the network deletes the namespaces (and with them
//! the bridge and links), also when a test fails; the processes started in
//! them must be ended first by whoever started them.
//!
//! A host can be cut off (its link set down at the bridge) and reconnected.
//! Processes run on a host through `ip netns exec` (`cli::Place`); a thread joins a host's
//! network with [`TestNet::enter`] (its sockets, and the threads and
//! processes it starts afterwards, are on that host).
//!
//! Needs root and `ip` (iproute2); [`TestNet::available`] says why not.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

pub struct TestNet {
    prefix: String,
    hosts: Vec<String>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run ip {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        anyhow::bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl TestNet {
    /// `Err(why)` when this machine cannot make a test network (not root, no `ip`).
    pub fn available() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(o) if o.status.success() => Ok(()),
            _ => Err("no `ip` command (Debian's iproute2)".into()),
        }
    }

    /// Creates `hosts` hosts named `<prefix>-h1`..; host `n` has address `10.77.0.<n>`.
    pub fn create(prefix: &str, hosts: usize) -> anyhow::Result<TestNet> {
        anyhow::ensure!((1..=200).contains(&hosts), "1 to 200 hosts");
        let mut net = TestNet { prefix: prefix.to_string(), hosts: Vec::new() };
        for n in 1..=hosts {
            let name = format!("{prefix}-h{n}");
            // Left over by a run that was killed before it could clean up.
            if Path::new("/var/run/netns").join(&name).exists() {
                let _ = ip(&["netns", "del", &name]);
            }
            ip(&["netns", "add", &name])?;
            net.hosts.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        let h1 = net.hosts[0].clone();
        ip(&["-n", &h1, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &h1, "addr", "add", &format!("{}/24", net.addr(1)), "dev", "br0"])?;
        ip(&["-n", &h1, "link", "set", "br0", "up"])?;
        for n in 2..=hosts {
            let host = net.hosts[n - 1].clone();
            let port = format!("v{n}");
            ip(&[
                "link", "add", &port, "netns", &h1, "type", "veth", "peer", "name", "eth0", "netns", &host,
            ])?;
            ip(&["-n", &h1, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &h1, "link", "set", &port, "up"])?;
            ip(&["-n", &host, "addr", "add", &format!("{}/24", net.addr(n)), "dev", "eth0"])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    /// Host `n`'s address (hosts count from 1).
    pub fn addr(&self, n: usize) -> String {
        format!("10.77.0.{n}")
    }

    /// Host `n`'s namespace name.
    pub fn netns(&self, n: usize) -> &str {
        &self.hosts[n - 1]
    }

    /// Puts the calling thread on host `n`'s network: its sockets, and the
    /// threads and processes it starts from now on, are there.
    pub fn enter(&self, n: usize) -> anyhow::Result<()> {
        let path = Path::new("/var/run/netns").join(self.netns(n));
        let f =
            std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        // SAFETY: setns on a namespace file this process opened; affects only this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            anyhow::bail!("setns {}: {}", path.display(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Cuts host `n` off the network (its link down at the bridge).
    pub fn cut(&self, n: usize) -> anyhow::Result<()> {
        anyhow::ensure!(n >= 2, "host 1 holds the bridge; cut another host");
        ip(&["-n", self.netns(1), "link", "set", &format!("v{n}"), "down"])
    }

    /// Reconnects host `n`.
    pub fn heal(&self, n: usize) -> anyhow::Result<()> {
        ip(&["-n", self.netns(1), "link", "set", &format!("v{n}"), "up"])
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for h in self.hosts.iter().rev() {
            if let Err(e) = ip(&["netns", "del", h]) {
                eprintln!("cannot delete network namespace {h}: {e:#}");
            }
        }
    }
}
