//! Which process owns a backup in progress, and whether it still runs.
//!
//! A pin (`pins/<id>.json`) protects a running backup's parent and young chunks. A pin whose
//! process is gone (killed, crashed, the machine rebooted) protects nothing and would keep
//! chunks forever, so each pin names its owner: the process id, the kernel's start time of that
//! process (so a recycled pid is not taken for the owner) and the boot it ran in.

use serde::{Deserialize, Serialize};

/// The process that wrote a pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot at which the process started.
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` of the boot the process ran in.
    pub boot_id: String,
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
        })
    }

    /// True while the owner process runs.
    pub fn alive(&self) -> bool {
        boot_id().is_some_and(|b| b == self.boot_id)
            && start_ticks(self.pid).is_some_and(|t| t == self.start_ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_child_is_not() {
        let me = Owner::current().unwrap();
        assert!(me.alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let ticks = start_ticks(pid);
        child.wait().unwrap();
        let gone = Owner {
            pid,
            start_ticks: ticks.unwrap_or(0),
            boot_id: me.boot_id.clone(),
        };
        assert!(!gone.alive());
        let recycled = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(!recycled.alive(), "another process under the same pid");
        let other_boot = Owner {
            boot_id: "another-boot".into(),
            ..me
        };
        assert!(!other_boot.alive());
    }
}
