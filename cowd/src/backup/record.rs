//! Session records in the state directory, so a backup's end survives the daemon.
//!
//! Each session writes `STATE/backups/ID.json` (its [`Report`]) when it starts and when it
//! ends, atomically (temp file, fsync, rename). At daemon start, a record still saying
//! "running" means the daemon died during that backup: it becomes "failed" with the reason, and
//! the container and partial target it left are removed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::{info, warn};

use crate::snapshot::container::dispose_stale;
use crate::snapshot::session::{Report, State};

/// The `backups/` directory of the state directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn open(state_dir: &Path) -> std::io::Result<Records> {
        let dir = state_dir.join("backups");
        std::fs::create_dir_all(&dir)?;
        Ok(Records { dir })
    }

    /// Writes a record atomically and durably, readable by cowd's user only.
    pub fn save(&self, r: &Report) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
        crate::files::write_atomic(&self.dir.join(format!("{}.json", r.id)), &bytes)
    }

    /// Removes a record (a start that failed before its snapshot point leaves none).
    pub fn remove(&self, id: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
    }

    /// Loads every record, turning those of interrupted sessions into failures and cleaning
    /// what they left. Newest first.
    pub fn recover(&self) -> std::io::Result<Vec<Report>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let p = entry?.path();
            if p.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let mut r: Report = match std::fs::read(&p).map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(r)) => r,
                _ => {
                    warn!(record = %p.display(), "unreadable backup record ignored");
                    continue;
                }
            };
            if r.state == State::Running {
                let mut cleaned = Vec::new();
                if let Some(c) = &r.container_path {
                    match dispose_stale(Path::new(c)) {
                        Ok(true) => cleaned.push(format!("container {c} removed")),
                        Ok(false) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => warn!(container = %c, error = %e, "stale container not removed"),
                    }
                }
                let partial = format!("{}.partial", r.target);
                if std::fs::remove_file(&partial).is_ok() {
                    cleaned.push(format!("partial target {partial} removed"));
                }
                r.state = State::Failed;
                r.reason = Some(format!(
                    "cowd stopped during the backup (crash, kill or power loss); the device holds only \
                     the application's writes{}{}",
                    if cleaned.is_empty() { "" } else { "; " },
                    cleaned.join("; ")
                ));
                r.ended_time =
                    Some(humantime::format_rfc3339_micros(SystemTime::now()).to_string());
                r.eta_s = None;
                info!(session = %r.id, export = %r.export, "interrupted backup marked failed");
                self.save(&r)?;
            }
            out.push(r);
        }
        out.sort_by(|a, b| b.snapshot_time.cmp(&a.snapshot_time));
        Ok(out)
    }
}
