//! Exports as the control API shows them, and the kernel NBD devices attached to them
//! (`/v1/exports`, `/v1/exports/{name}/attach`, `/v1/detach`, `/v1/resolve`).

use serde::{Deserialize, Serialize};

/// One export as the control API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportInfo {
    pub name: String,
    pub path: String,
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    pub read_only: bool,
    /// NBD connections in the transmission phase.
    pub connections: usize,
}

/// `POST /v1/exports/{name}/attach` and `POST /v1/detach`: a kernel NBD device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub device: String,
}

/// `GET /v1/resolve?device=/dev/nbdN`: which export a kernel NBD device is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub device: String,
    pub export: String,
}
