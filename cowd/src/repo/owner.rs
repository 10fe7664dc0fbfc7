//! Which process owns a backup in progress, and whether it still runs.
//!
//! A pin (`pins/<id>.json`) protects a running backup's parent and young chunks. A pin whose
//! process is gone (killed, crashed, the machine rebooted) protects nothing and would keep
//! chunks forever, so each pin names its owner: the process id, the kernel's start time of that
//! process (so a recycled pid is not taken for the owner), the boot it ran in, and the host.
//!
//! A repository on a filesystem several hosts share is written by processes this host cannot
//! see: a pin of another host is [`Liveness::Elsewhere`], and its owner keeps it fresh
//! (`backup.rs`: the heartbeat) instead.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The process that wrote a pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot at which the process started.
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` of the boot the process ran in.
    pub boot_id: String,
    /// [`host_id`] of its host (absent in pins of earlier versions: this host).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

/// Whether a pin's process runs, as far as this host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Gone,
    /// On another host: only the pin's heartbeat tells.
    Elsewhere,
}

/// This host's identity: `/etc/machine-id` (systemd's, stable across boots and distinct per
/// installation), else `/var/lib/dbus/machine-id`, else the host name.
pub fn host_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        [
            "/etc/machine-id",
            "/var/lib/dbus/machine-id",
            "/proc/sys/kernel/hostname",
        ]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
    })
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned())
}

/// The start time of process `pid`, if it runs (or is a zombie not yet reaped).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold anything.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    // `rest` starts at field 3 (state); field 22 is the 20th of them.
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

impl Owner {
    /// This process.
    pub fn current() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            pid,
            start_ticks: start_ticks(pid)?,
            boot_id: boot_id()?,
            host: host_id().to_owned(),
        })
    }

    /// True when this is the calling process.
    pub fn is_current(&self) -> bool {
        self.pid == std::process::id()
            && (self.host.is_empty() || self.host == host_id())
            && Owner::current().is_some_and(|c| c.start_ticks == self.start_ticks)
    }

    /// Whether the owner process runs: checked here for a process of this host.
    pub fn liveness(&self) -> Liveness {
        if !self.host.is_empty() && self.host != host_id() {
            return Liveness::Elsewhere;
        }
        let alive = boot_id().is_some_and(|b| b == self.boot_id)
            && start_ticks(self.pid).is_some_and(|t| t == self.start_ticks);
        if alive {
            Liveness::Alive
        } else {
            Liveness::Gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_child_is_not() {
        let me = Owner::current().unwrap();
        assert_eq!(me.liveness(), Liveness::Alive);
        assert_eq!(me.host, host_id());
        let elsewhere = Owner {
            host: "another-host".into(),
            ..me.clone()
        };
        assert_eq!(elsewhere.liveness(), Liveness::Elsewhere);
        // Pins of earlier versions name no host: this one.
        let legacy = Owner {
            host: String::new(),
            ..me.clone()
        };
        assert_eq!(legacy.liveness(), Liveness::Alive);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let ticks = start_ticks(pid);
        child.wait().unwrap();
        let gone = Owner {
            pid,
            start_ticks: ticks.unwrap_or(0),
            boot_id: me.boot_id.clone(),
            host: me.host.clone(),
        };
        assert_eq!(gone.liveness(), Liveness::Gone);
        let recycled = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert_eq!(
            recycled.liveness(),
            Liveness::Gone,
            "another process, same pid"
        );
        let other_boot = Owner {
            boot_id: "another-boot".into(),
            ..me
        };
        assert_eq!(other_boot.liveness(), Liveness::Gone);
    }
}
