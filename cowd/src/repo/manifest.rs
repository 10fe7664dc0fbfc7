//! [`Manifest`]: what one complete backup is (`backups/<id>/manifest.json`).
//!
//! Written once, at commit, next to the backup's `index.bin`; `index_sha256` is the index's
//! trailing checksum, so the manifest vouches for the index and the index for every chunk.
//! Times are RFC 3339 in UTC with microseconds.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Full or incremental backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every chunk was read from the device.
    Full,
    /// Chunks unchanged since the parent were taken from the parent's index unread.
    Incremental,
}

/// Which blocks of the device were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Blocks {
    /// The whole device.
    All,
    /// Only blocks a filesystem reader reported as used; the rest are recorded as zeroes.
    Used,
}

/// State of a listed backup: complete (its manifest reads; a manifest is written only at
/// commit), or damaged (its directory is there but its manifest cannot be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Complete,
    Damaged,
}

/// What a backup did, in chunks and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Chunks in the index.
    pub chunks_total: u64,
    /// Chunks that are all zero (not stored).
    pub chunks_zero: u64,
    /// Chunks this backup stored that were not in the repository before.
    pub chunks_new: u64,
    /// Chunks read and found already in the repository (deduplicated).
    pub chunks_reused: u64,
    /// Chunks taken from the parent's index without reading them.
    pub chunks_inherited: u64,
    /// Bytes read from the device (or container).
    pub bytes_read: u64,
    /// Bytes this backup added to the repository, after compression and with headers.
    pub bytes_new_stored: u64,
}

/// The backups of a repository as listed: the complete ones, and those whose manifest cannot
/// be read (listed with the reason, never silently left out).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// Oldest first (by snapshot time, then id).
    pub backups: Vec<Manifest>,
    /// By id.
    pub damaged: Vec<Damaged>,
}

/// A backup directory whose manifest cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Damaged {
    pub id: String,
    /// Always [`Status::Damaged`].
    pub status: Status,
    pub problem: String,
}

/// One entry of a listing as the control API sends it: a complete backup's manifest, or a
/// damaged backup (told apart by `status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Listed {
    Complete(Box<Manifest>),
    Damaged(Damaged),
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

/// One complete backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub export: String,
    pub device_size: u64,
    pub block_size: u32,
    pub chunk_size: u32,
    #[serde(with = "rfc3339")]
    pub snapshot_time: SystemTime,
    #[serde(with = "rfc3339")]
    pub started_time: SystemTime,
    #[serde(with = "rfc3339")]
    pub ended_time: SystemTime,
    pub duration_s: f64,
    pub mode: Mode,
    pub parent: Option<String>,
    /// Why a full backup was made when an incremental one was asked for.
    pub full_reason: Option<String>,
    pub blocks: Blocks,
    /// The filesystem the used-block map came from (e.g. "ext4").
    pub filesystem: Option<String>,
    pub counts: Counts,
    /// Lower-case hex of the index's trailing SHA-256 (filled in by commit).
    pub index_sha256: String,
    pub status: Status,
}

/// Serde for `SystemTime` as RFC 3339 UTC (`2024-05-01T12:00:00.123456Z`).
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// The text form.
    pub fn format(t: SystemTime) -> String {
        humantime::format_rfc3339_micros(t).to_string()
    }

    /// Parses the text form.
    pub fn parse(s: &str) -> Result<SystemTime, humantime::TimestampError> {
        humantime::parse_rfc3339(s)
    }

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(|e| serde::de::Error::custom(format!("time {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[test]
    fn bad_time_is_an_error() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["snapshot_time"] = "yesterday".into();
        let e = serde_json::from_value::<Manifest>(v).unwrap_err();
        assert!(e.to_string().contains("yesterday"), "{e}");
    }
}
