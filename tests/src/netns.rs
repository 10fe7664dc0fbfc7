//! A test storage network: hosts as network namespaces on a bridge of the root namespace,
//! where the servers (cowd, etcd, a copy target) listen.
//!
//! ```text
//!   root namespace: bridge cwbTAG, 10.77.S.1/24  <- servers listen on this address
//!     ├─ veth ── namespace cowd-TAG-0: 10.77.S.2/24   (host 0)
//!     └─ veth ── namespace cowd-TAG-1: 10.77.S.3/24   (host 1)
//! ```
//!
//! TAG is the test process's pid (hex) and the network's number in it, so that tests build
//! networks side by side. S is a /24 of 10.77.0.0/16 no interface of this machine has yet.
//! Traffic stays on this machine: a host reaches only the bridge's subnet. Dropping the
//! [`Net`] deletes the namespaces (their veth ends go with them) and the bridge, also when the
//! test panics half-way through building it; the processes run in a namespace must be gone
//! first (a namespace lives while a process is in it). Needs root and `ip` (iproute2).

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{require, run, run_stdout};

/// Networks made by this process so far: each has its number in its names, so that tests of
/// one binary build theirs at once.
static NETS: AtomicU32 = AtomicU32::new(0);

/// Held while a network picks its subnet and takes it (gives the bridge its address).
static SUBNETS: Mutex<()> = Mutex::new(());

/// Namespaces on a bridge; deleted on drop.
#[derive(Debug)]
pub struct Net {
    bridge: Option<String>,
    /// The third byte of the subnet's addresses.
    subnet: u8,
    /// Namespaces made so far, host 0 first.
    hosts: Vec<String>,
    /// `PID(hex)nNUMBER`, in the names of the bridge and the veths.
    tag: String,
}

/// Runs `ip ARGS`, panicking with its output unless it succeeds.
fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

impl Net {
    /// A bridge and `hosts` namespaces on it, each with its address and loopback up.
    pub fn new(hosts: usize) -> Net {
        require("ip");
        assert!(hosts < 200, "one /24");
        let pid = std::process::id();
        let tag = format!("{pid:x}n{}", NETS.fetch_add(1, Ordering::Relaxed));
        let picking = SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
        let mut net = Net {
            bridge: None,
            subnet: free_subnet(),
            hosts: Vec::new(),
            tag,
        };
        let bridge = format!("cwb{}", net.tag);
        ip(&["link", "add", &bridge, "type", "bridge"]);
        net.bridge = Some(bridge.clone());
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.server()),
            "dev",
            &bridge,
        ]);
        drop(picking);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..hosts {
            let ns = format!("cowd-{}-{i}", net.tag);
            ip(&["netns", "add", &ns]);
            net.hosts.push(ns.clone());
            let (outer, inner) = (format!("cw{}h{i}", net.tag), net.link(i));
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns,
            ]);
            ip(&["link", "set", &outer, "master", &bridge, "up"]);
            let addr = format!("{}/24", net.host(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// The servers' address (the bridge's, in the root namespace).
    pub fn server(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    /// The address of host `i` (inside its namespace).
    pub fn host(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.subnet, i + 2)
    }

    /// The name of host `i`'s namespace.
    pub fn namespace(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// The name of host `i`'s end of its veth, inside its namespace.
    fn link(&self, i: usize) -> String {
        format!("cw{}v{i}", self.tag)
    }

    /// Cuts host `i` off the network: its link goes down (connecting fails at once, packets of
    /// open connections are lost) until [`mend`](Net::mend).
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.hosts[i], "link", "set", &self.link(i), "down"]);
    }

    /// Brings host `i`'s link up again after [`cut`](Net::cut); open connections resume.
    pub fn mend(&self, i: usize) {
        ip(&["-n", &self.hosts[i], "link", "set", &self.link(i), "up"]);
    }

    /// `program` to be run in host `i`'s namespace (`ip netns exec` execs it: the child's pid
    /// is the program's).
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i]]).arg(program);
        cmd
    }
}

/// A /24 of 10.77.0.0/16 that no interface has an address in.
fn free_subnet() -> u8 {
    let used = run_stdout(Command::new("ip").args(["-4", "-o", "addr", "show"]));
    let start = std::process::id() % 200;
    (0..200)
        .map(|k| (20 + (start + k) % 200) as u8)
        .find(|s| !used.contains(&format!("10.77.{s}.")))
        .expect("a free 10.77.x.0/24")
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.drain(..) {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        if let Some(b) = self.bridge.take() {
            let _ = Command::new("ip").args(["link", "del", &b]).status();
        }
    }
}
