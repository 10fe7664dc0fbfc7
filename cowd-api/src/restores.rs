//! Restores: writing a repository backup to a file or device, as jobs with progress
//! (`/v1/restores`).

use serde::{Deserialize, Serialize};

/// `POST /v1/restores`: restore a backup to a file or device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreRequest {
    pub repo: Option<String>,
    pub backup: String,
    /// The destination; for a live restore into an existing export it may be empty (the
    /// export's own device).
    pub to: String,
    /// Serve the destination at once as `export`, read-write, while it is restored.
    pub live: bool,
    /// The export a live restore serves (new, or an existing idle export to roll back).
    pub export: Option<String>,
    /// Limit of the live restore's background filler, in MiB/s.
    pub max_rate_mib_s: Option<f64>,
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
    /// A live restore: the destination is served as `export` while it is restored.
    #[serde(default)]
    pub live: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    /// Chunks a live restore fetched because a client read (or partly wrote) them first.
    #[serde(default)]
    pub chunks_on_demand: u64,
    /// Chunks that could not be restored (their blocks answer EIO until a retry works).
    #[serde(default)]
    pub chunks_failed: u64,
    /// What the end means for the user (a live restore: the export now needs only the
    /// destination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
