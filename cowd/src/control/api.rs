//! Request and response bodies of the control API (version 1). `cowctl` uses these types too.
//!
//! | method | path          | response            |
//! |--------|---------------|---------------------|
//! | GET    | /v1/exports   | `[ExportInfo]`      |
//! | any    | (error)       | `ErrorBody`         |

use serde::{Deserialize, Serialize};

/// The default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/cowd/control.sock";

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

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

pub use crate::snapshot::session::{OnOverflow, Report as BackupStatus, State as BackupState};

/// `POST /v1/exports/{name}/backups`: start a backup of an export. Unset fields take the
/// daemon's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartBackup {
    /// Raw image to write: a new path (sparse file), or an existing file or block device at
    /// least as large as the export.
    pub to: String,
    /// Copy-before-write block size in bytes (power of two, 4 KiB to 4 MiB).
    pub block_size: Option<u32>,
    /// Container path: a file (created), a partition or a device.
    pub container: Option<String>,
    /// Container capacity in bytes.
    pub container_size: Option<u64>,
    /// Seconds without writes to wait for before the snapshot point.
    pub quiet_period_s: Option<f64>,
    /// Seconds to wait for the quiet period before failing.
    pub quiet_timeout_s: Option<f64>,
    /// Freeze this mountpoint around the snapshot point instead of waiting for quiet.
    pub freeze: Option<String>,
    /// Neither wait for a quiet period nor freeze.
    pub no_quiesce: bool,
    /// Container fill ratio above which writes needing a copy are delayed (0..1].
    pub high_watermark: Option<f64>,
    /// Container fill ratio above which the mover drains the container first (0..1).
    pub low_watermark: Option<f64>,
    /// Longest a write may wait for container space before `on_overflow` decides.
    pub cbw_timeout_s: Option<f64>,
    pub on_overflow: Option<OnOverflow>,
    /// Pending neighbours of a copied block the mover takes early.
    pub neighbours: Option<u32>,
    /// Limit the mover to this many MiB/s (device and target I/O of the backup).
    pub max_rate_mib_s: Option<f64>,
    /// Back up into this repository (instead of `to`); the daemon's default repository is used
    /// when neither `to` nor `repo` is given.
    pub repo: Option<String>,
    /// Repository backups: full, incremental, or auto (incremental when the change map allows).
    pub mode: Option<BackupMode>,
    /// Repository backups: only the blocks the filesystem uses (default when recognized), or all.
    pub blocks: Option<BlockChoice>,
    /// Testing aid, accepted only by a daemon started with `--allow-fault-injection`:
    /// delays or failures injected under the target.
    pub target_faults: Option<TargetFaults>,
}

/// Faults injected under a backup target (testing aid).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetFaults {
    /// Delay of every target operation, in milliseconds.
    pub delay_ms: Option<u64>,
    /// Let this many target writes succeed, then fail every later one with EIO.
    pub fail_after_writes: Option<u64>,
}

/// The kind of repository backup asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    Full,
    Incremental,
    #[default]
    Auto,
}

/// Which blocks a repository backup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockChoice {
    #[default]
    Used,
    All,
}

/// The answer to [`StartBackup`]: the snapshot point is taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupStarted {
    pub id: String,
    pub export: String,
    /// RFC 3339 time of the snapshot point.
    pub snapshot_time: String,
    pub block_size: u32,
    pub blocks_total: u64,
    /// Blocks to read from the device or the container (holes at T excluded).
    pub blocks_to_copy: u64,
    /// How long writes were held to take the snapshot point.
    pub setup_ms: f64,
    pub quiesce: String,
}

/// `POST /v1/exports/{name}/prioritize`: move a byte range to the front of the mover's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prioritize {
    pub offset: u64,
    pub length: u64,
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

pub use crate::repo::{Damaged, GcReport, KeepPolicy, Listed, Manifest, Status, VerifyReport};
pub use crate::restore::{RestoreState, RestoreStatus};

/// `POST /v1/repo/init`: create a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInit {
    pub path: String,
    /// Chunk size in bytes (power of two, 64 KiB to 4 MiB; default 4 MiB).
    pub chunk_size: Option<u32>,
    /// zstd level of the stored chunks (-7 to 19; default 1).
    #[serde(default)]
    pub compression_level: Option<i32>,
}

/// A repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInfo {
    pub path: String,
    pub id: String,
    pub chunk_size: u32,
    pub compression_level: i32,
}

/// `POST /v1/repo/verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyRequest {
    /// The repository (default: the daemon's).
    pub repo: Option<String>,
    /// Backups to verify (default: all).
    pub ids: Option<Vec<String>>,
}

/// `POST /v1/repo/prune`: remove backups of an export outside a retention policy, then
/// collect the chunks no backup uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PruneRequest {
    pub repo: Option<String>,
    pub export: String,
    pub keep: KeepPolicy,
    pub dry_run: bool,
}

/// The answer to [`PruneRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneResult {
    /// Backups the policy keeps, newest first, with the rules that keep each.
    pub keep: Vec<Kept>,
    /// Backups outside the policy, newest first.
    pub remove: Vec<String>,
    /// Backups removed (none with `dry_run`; a parent of a running backup stays).
    pub removed: Vec<String>,
    pub gc: GcReport,
}

/// A backup kept by a retention policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub id: String,
    pub reasons: Vec<String>,
}

/// `POST /v1/restores`: restore a backup to a file or device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreRequest {
    pub repo: Option<String>,
    pub backup: String,
    pub to: String,
}

/// `POST /v1/repo/serve`: serve a backup as a read-only export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServeRequest {
    pub repo: Option<String>,
    pub backup: String,
    pub export: String,
}
