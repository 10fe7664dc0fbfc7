//! Copy jobs (server-free copies run by data movers) and the ports they go through.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One copy job, as `GET /v1/copies` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyJob {
    pub id: u64,
    /// Who asked: `EXTENDED COPY on disk (list 3)`, `backup disk-...`.
    pub origin: String,
    /// `queued`, `copying`, `done` or `failed`.
    pub state: String,
    /// What is copied: `export:disk -> copy-target:vault`, one per distinct pair.
    pub what: Vec<String>,
    /// The port group of the request's target port, if it has one.
    pub group: Option<String>,
    /// The mover holding it now.
    pub mover: Option<String>,
    /// The path the mover copies through: `PORT -> URI`.
    pub path: Option<String>,
    /// Bytes copied so far (all of them once done).
    pub bytes: u64,
    /// Bytes durable at the destinations (the last checkpoint): a mover taking the job over
    /// resumes there, and a backup has released its blocks before it.
    #[serde(default)]
    pub durable: u64,
    /// Bytes to copy.
    pub total: u64,
    /// How many times a mover claimed it (more than one: failed over or taken over).
    pub claims: u32,
    /// Movers that could not reach a copy target, and why.
    pub unavailable: BTreeMap<String, String>,
    /// Why it failed: `copy target not reachable`, `device failure`, ...
    pub error: Option<String>,
    /// The details: every path tried, or the device error.
    pub reason: Option<String>,
}

/// What a port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortRole {
    /// Commands arrive here (an iSCSI portal of cowd).
    Target,
    /// Movers reach copy targets from here.
    Initiator,
}

/// One port, as `GET /v1/ports` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    pub name: String,
    pub role: PortRole,
    pub address: Option<String>,
    pub group: Option<String>,
}

/// `PUT /v1/ports/{name}`: what to change (a field left out stays; `group: ""` clears it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortChange {
    pub role: Option<PortRole>,
    pub group: Option<String>,
}
