//! Ports and port groups: where commands arrive (target ports: cowd's iSCSI portals) and
//! through what movers reach copy targets (initiator ports), grouped by the operator.
//!
//! ```toml
//! [[port]]
//! name = "fe0"                 # a target port: an iSCSI portal cowd listens on
//! role = "target"
//! address = "10.0.0.1:3260"
//! group = "vault-a"
//!
//! [[port]]
//! name = "be0"                 # an initiator port: connections to copy targets leave from
//! role = "initiator"           # this address
//! address = "10.0.1.1"
//! group = "vault-a"
//! ```
//!
//! - A job gets the group of the target port its command came in on; a mover serves it
//!   through its initiator ports of that group only. A target port without a group lets a
//!   mover search all of its initiator ports.
//! - A portal cowd listens on without a `[[port]]` entry is a target port named after its
//!   address, without a group. Without initiator ports a mover has one, `any` (no fixed
//!   address, no group).
//! - `cowctl ports set PORT --role R --group G` changes a port while cowd runs: a target port
//!   made an initiator port takes no new iSCSI logins; an initiator port made a target port
//!   is no longer used by movers; a new group applies to the next job. Changes are not
//!   written back to cowd.toml.

use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// What a port is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Target,
    Initiator,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "target" => Ok(Role::Target),
            "initiator" => Ok(Role::Initiator),
            _ => Err(format!("{s}: a role is target or initiator")),
        }
    }
}

/// One port, as configured or as changed at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub role: Role,
    /// A target port: `HOST:PORT` of the portal (`0.0.0.0:3260` matches any local address on
    /// port 3260). An initiator port: the local IP address connections leave from.
    pub address: Option<String>,
    pub group: Option<String>,
}

/// The name of the one initiator port a mover has when none are configured.
pub const ANY_PORT: &str = "any";

impl Port {
    /// The source address of an initiator port.
    pub fn source(&self) -> Option<IpAddr> {
        self.address.as_deref().and_then(|a| a.parse().ok())
    }

    /// A target port's portal matches the local address a connection arrived on.
    fn serves(&self, local: SocketAddr) -> bool {
        let Some(a) = self.address.as_deref() else {
            return false;
        };
        match a.parse::<SocketAddr>() {
            Ok(p) => p.port() == local.port() && (p.ip().is_unspecified() || p.ip() == local.ip()),
            Err(_) => false,
        }
    }

    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || name.contains(['/', ' ']) {
            return Err(format!(
                "port {name:?}: a name is not empty and has no '/' or space"
            ));
        }
        match (self.role, self.address.as_deref()) {
            (Role::Target, None) => Err(format!(
                "port {name}: a target port needs address = \"HOST:PORT\""
            )),
            (Role::Target, Some(a)) if a.parse::<SocketAddr>().is_err() => Err(format!(
                "port {name}: address {a:?}: a target port's address is IP:PORT"
            )),
            (Role::Initiator, Some(a)) if a.parse::<IpAddr>().is_err() => Err(format!(
                "port {name}: address {a:?}: an initiator port's address is an IP address"
            )),
            _ => Ok(()),
        }
    }
}

/// The daemon's ports; shared by the iSCSI server, the copy managers and the movers.
#[derive(Debug, Default)]
pub struct Ports {
    ports: RwLock<Vec<Port>>,
}

impl Ports {
    /// Checks configured ports (names unique, addresses well formed).
    pub fn new(ports: Vec<Port>) -> Result<Ports, String> {
        for (i, p) in ports.iter().enumerate() {
            p.check()?;
            if ports[..i].iter().any(|q| q.name == p.name) {
                return Err(format!("port {}: named twice", p.name));
            }
        }
        Ok(Ports {
            ports: RwLock::new(ports),
        })
    }

    /// Adds a target port for a portal cowd listens on, unless a configured one covers it.
    pub fn add_portal(&self, local: SocketAddr) {
        let mut ports = self.ports.write().unwrap();
        if ports.iter().any(|p| p.serves(local)) {
            return;
        }
        let name = local.to_string();
        ports.push(Port {
            name,
            role: Role::Target,
            address: Some(local.to_string()),
            group: None,
        });
    }

    /// Every port, in configuration order then portals added.
    pub fn list(&self) -> Vec<Port> {
        self.ports.read().unwrap().clone()
    }

    /// Changes a port's role and group; `group: Some(None)` clears the group.
    pub fn set(
        &self,
        name: &str,
        role: Option<Role>,
        group: Option<Option<String>>,
    ) -> Result<Port, String> {
        let mut ports = self.ports.write().unwrap();
        let p = ports
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("no port named {name}"))?;
        let mut changed = p.clone();
        if let Some(r) = role {
            changed.role = r;
        }
        if let Some(g) = group {
            changed.group = g.filter(|g| !g.is_empty());
        }
        if changed.role == Role::Target
            && changed
                .address
                .as_deref()
                .is_none_or(|a| a.parse::<SocketAddr>().is_err())
        {
            return Err(format!(
                "port {name}: only a port with a portal address (IP:PORT) can be a target port"
            ));
        }
        *p = changed.clone();
        Ok(changed)
    }

    /// The target port a connection to `local` arrived on, `None` when no target port serves
    /// that address (the port was made an initiator port: refuse the login).
    pub fn target_port(&self, local: SocketAddr) -> Option<Port> {
        self.ports
            .read()
            .unwrap()
            .iter()
            .find(|p| p.serves(local))
            .filter(|p| p.role == Role::Target)
            .cloned()
    }

    /// The initiator ports named `names` (all initiator ports when `names` is empty; [`ANY_PORT`]
    /// when there are none), in the order given, restricted to `group` when it is `Some`.
    pub fn initiators(&self, names: &[String], group: Option<&str>) -> Vec<Port> {
        let ports = self.ports.read().unwrap();
        let initiators: Vec<&Port> = ports.iter().filter(|p| p.role == Role::Initiator).collect();
        let mine: Vec<Port> = if names.is_empty() {
            if initiators.is_empty() {
                vec![Port {
                    name: ANY_PORT.into(),
                    role: Role::Initiator,
                    address: None,
                    group: None,
                }]
            } else {
                initiators.into_iter().cloned().collect()
            }
        } else {
            names
                .iter()
                .filter_map(|n| {
                    initiators
                        .iter()
                        .find(|p| &p.name == n)
                        .map(|p| (*p).clone())
                })
                .collect()
        };
        match group {
            Some(g) => mine
                .into_iter()
                .filter(|p| p.group.as_deref() == Some(g))
                .collect(),
            None => mine,
        }
    }
}

#[cfg(test)]
#[path = "ports_tests.rs"]
mod tests;
