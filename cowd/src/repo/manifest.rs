//! [`Manifest`]: what one complete backup is (`backups/<id>/manifest.json`), and [`Listing`],
//! the backups of a repository. The manifest's type (and its JSON, also the API's) is in
//! `cowd_api::repo`.
//!
//! Written once, at commit, next to the backup's `index.bin`; `index_sha256` is the index's
//! trailing checksum, so the manifest vouches for the index and the index for every chunk.
//! Times are RFC 3339 in UTC with microseconds.

pub use cowd_api::repo::{Blocks, Counts, Damaged, Listed, Manifest, Mode, Status};
pub use cowd_api::units::rfc3339;

/// The backups of a repository as listed: the complete ones, and those whose manifest cannot
/// be read (listed with the reason, never silently left out).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// Oldest first (by snapshot time, then id).
    pub backups: Vec<Manifest>,
    /// By id.
    pub damaged: Vec<Damaged>,
}

impl Listing {
    /// Complete backups oldest first, then the damaged ones.
    pub fn entries(self) -> Vec<Listed> {
        let complete = self.backups.into_iter().map(|m| Listed::Complete(m.into()));
        complete
            .chain(self.damaged.into_iter().map(Listed::Damaged))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    pub(crate) fn sample() -> Manifest {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_714_564_800_123_456);
        Manifest {
            id: "b1".into(),
            export: "disk0".into(),
            device_size: 1 << 30,
            block_size: 65536,
            chunk_size: 4 << 20,
            snapshot_time: t,
            started_time: t,
            ended_time: t + Duration::from_secs(3),
            duration_s: 3.0,
            mode: Mode::Incremental,
            parent: Some("b0".into()),
            full_reason: None,
            blocks: Blocks::Used,
            filesystem: Some("ext4".into()),
            counts: Counts {
                chunks_total: 256,
                ..Counts::default()
            },
            index_sha256: "00".repeat(32),
            status: Status::Complete,
        }
    }

    #[test]
    fn json_shape_and_round_trip() {
        let m = sample();
        let s = serde_json::to_string(&m).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["snapshot_time"], "2024-05-01T12:00:00.123456Z");
        assert_eq!(v["mode"], "incremental");
        assert_eq!(v["blocks"], "used");
        assert_eq!(v["status"], "complete");
        assert_eq!(v["full_reason"], serde_json::Value::Null);
        assert_eq!(v["counts"]["chunks_total"], 256);
        assert_eq!(serde_json::from_str::<Manifest>(&s).unwrap(), m);
    }
}
