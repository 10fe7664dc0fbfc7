//! Restores: writing a repository backup to a file or device, as jobs with progress
//! (`/v1/restores`).

use serde::{Deserialize, Serialize};

/// `POST /v1/restores`: restore a backup to a file or device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreRequest {
    pub repo: Option<String>,
    pub backup: String,
    pub to: String,
}

/// Where a restore is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreState {
    Running,
    Done,
    Failed,
}

/// The progress of a restore, as the control API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreStatus {
    pub id: String,
    pub backup: String,
    pub to: String,
    pub state: RestoreState,
    pub reason: Option<String>,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub bytes_written: u64,
    pub elapsed_s: f64,
    pub mib_s: f64,
    pub started_time: String,
}
