//! Live backups of exports: starting one, steering it, and its report
//! (`/v1/exports/{name}/backups|cancel|prioritize`, `/v1/backups`).
//!
//! A [`BackupStatus`] is also what cowd keeps of a backup in its state directory
//! (`STATE/backups/ID.json`), so its JSON is a file format as well as the API's.
//!
//! ```text
//!   running ──mover done──> done
//!      │ ──error / overflow policy──> failed (reason)
//!      └──cancel──> cancelled
//! ```

use serde::{Deserialize, Serialize};

/// What to do when a write needing a copy cannot get container space within `cbw_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnOverflow {
    /// The backup fails with the reason; writes go on untouched.
    #[default]
    FailBackup,
    /// Writes keep waiting; the backup is never broken.
    BlockWrites,
}

impl OnOverflow {
    /// Parses the command-line spelling (the same as the JSON one).
    pub fn parse(s: &str) -> Option<OnOverflow> {
        match s {
            "fail-backup" => Some(OnOverflow::FailBackup),
            "block-writes" => Some(OnOverflow::BlockWrites),
            _ => None,
        }
    }
}

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

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupState {
    Running,
    Done,
    Failed,
    Cancelled,
}

/// The report of a backup, as the control API shows it and the session record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupStatus {
    pub id: String,
    pub export: String,
    pub state: BackupState,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    pub target: String,
    /// RFC 3339 time of the snapshot point.
    pub snapshot_time: String,
    pub ended_time: Option<String>,
    pub quiesce: String,
    pub setup_ms: f64,
    pub block_size: u32,
    pub blocks_total: u64,
    pub blocks_done: u64,
    pub container_path: Option<String>,
    pub container_slots: u32,
    pub container_used: u32,
    pub container_peak: u32,
    pub copies_before_write: u64,
    pub throttled_writes: u64,
    pub throttle_delay_ms: f64,
    pub waited_writes: u64,
    pub wait_ms: f64,
    pub moved_bytes: u64,
    pub elapsed_s: f64,
    pub mover_mib_s: f64,
    pub eta_s: Option<f64>,
    /// With `--freeze`: when the filesystem was frozen and thawed (T lies between).
    pub frozen_at: Option<String>,
    pub thawed_at: Option<String>,
    /// The repository of a backup into one (absent for raw images, and in records of earlier
    /// versions): commands that take the backup's id find the repository by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::same_text;

    #[test]
    fn a_session_record_reads_and_writes_back_unchanged() {
        let r: BackupStatus = same_text(include_str!("testdata/record.json"));
        assert_eq!(r.state, BackupState::Failed);
        assert_eq!(r.eta_s, None);
        assert_eq!(r.thawed_at.as_deref(), Some("2024-05-01T12:00:00.125000Z"));
    }

    #[test]
    fn start_request_spellings() {
        let req: StartBackup = serde_json::from_str(
            r#"{"to":"/b.img","on_overflow":"block-writes","mode":"incremental","blocks":"all"}"#,
        )
        .unwrap();
        assert_eq!(req.on_overflow, Some(OnOverflow::BlockWrites));
        assert_eq!(req.mode, Some(BackupMode::Incremental));
        assert_eq!(req.blocks, Some(BlockChoice::All));
        assert!(!req.no_quiesce && req.block_size.is_none());
        assert_eq!(
            OnOverflow::parse("fail-backup"),
            Some(OnOverflow::FailBackup)
        );
        assert_eq!(OnOverflow::parse("fail"), None);
        let v = serde_json::to_value(OnOverflow::BlockWrites).unwrap();
        assert_eq!(v, "block-writes");
    }
}
