//! The backup repository as the API shows it: manifests of complete backups (also written as
//! `backups/ID/manifest.json`), listings, verify, prune and GC reports, and the requests of
//! `/v1/repo/...`.
//!
//! A manifest is a file format: its fields and spellings are read back from repositories
//! written by earlier versions. Times are RFC 3339 in UTC with microseconds
//! ([`crate::units::rfc3339`]).

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::units::rfc3339;

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

fn none(n: &u64) -> bool {
    *n == 0
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
    /// Chunks stored as a patch (only the bytes changed since the parent) over the parent's
    /// chunk; absent when 0 (so manifests without patches read and write as before).
    #[serde(default, skip_serializing_if = "none")]
    pub chunks_patched: u64,
    /// Bytes read from the device (or container).
    pub bytes_read: u64,
    /// Bytes this backup added to the repository, after compression and with headers.
    pub bytes_new_stored: u64,
}

/// One complete backup (`backups/ID/manifest.json`, and an entry of a listing).
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

/// A backup directory whose manifest cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Damaged {
    pub id: String,
    /// Always [`Status::Damaged`].
    pub status: Status,
    pub problem: String,
}

/// One entry of `GET /v1/repo/backups`: a complete backup's manifest, or a damaged backup
/// (told apart by `status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Listed {
    Complete(Box<Manifest>),
    Damaged(Damaged),
}

/// `POST /v1/repo/init`: create a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInit {
    pub path: String,
    /// Chunk size in bytes (power of two, 64 KiB to 4 MiB; default 4 MiB).
    pub chunk_size: Option<u32>,
    /// zstd level of the stored chunks (-7 to 19; default 1).
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Encrypt the repository: its first key slot opens with this secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<KeySecret>,
    /// Label of the first key slot (default: "initial").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_label: Option<String>,
    /// Share the master key of this (encrypted, unlocked) repository: the two name chunks
    /// alike, so a sync between them reads only the chunks the destination lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_from: Option<String>,
    /// Format version: 2 (default; BLAKE3 chunk names) or 1 (SHA-256, for an older cowd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<u32>,
}

/// A repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInfo {
    pub path: String,
    pub id: String,
    pub chunk_size: u32,
    pub compression_level: i32,
    /// Format version (1 or 2; absent from older daemons: 1).
    #[serde(default = "format_1")]
    pub format: u32,
    /// How chunks are named: `sha256`, `blake3`, or `blake3-keyed:<key fingerprint>`.
    #[serde(default)]
    pub chunk_names: String,
    /// The master key's fingerprint when the repository is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// Encrypted: whether the daemon holds the key (`GET /v1/repo/info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlocked: Option<bool>,
}

fn format_1() -> u32 {
    1
}

/// What opens an encrypted repository's key slot: exactly one of a passphrase or a key file.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeySecret {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
    /// Path of a key file on the daemon's host (at least 32 bytes of random data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Create `key_file` (32 random bytes, hex, mode 0600) when it does not exist.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub create_key_file: bool,
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySecret")
            .field("passphrase", &self.passphrase.as_ref().map(|_| ".."))
            .field("key_file", &self.key_file)
            .field("create_key_file", &self.create_key_file)
            .finish()
    }
}

/// `POST /v1/repo/unlock`: the daemon keeps the repository's key until it stops or
/// `POST /v1/repo/lock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnlockRequest {
    /// The repository (default: the daemon's).
    pub repo: Option<String>,
    #[serde(flatten)]
    pub secret: KeySecret,
}

/// `POST /v1/repo/lock`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockRequest {
    pub repo: Option<String>,
}

/// What `POST /v1/repo/unlock` and `POST /v1/repo/lock` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub repo: String,
    pub unlocked: bool,
    /// The slot that opened (unlock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Whether the daemon held the key before (lock).
    #[serde(default)]
    pub was_unlocked: bool,
}

/// One key slot of an encrypted repository (`GET /v1/repo/keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySlot {
    pub id: String,
    /// `passphrase` or `key-file`.
    pub kind: String,
    pub label: String,
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
}

/// `POST /v1/repo/keys`: a new slot (the repository must be unlocked).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyAdd {
    pub repo: Option<String>,
    pub secret: KeySecret,
    pub label: String,
}

/// `POST /v1/repo/keys/passwd`: the slot `old` opens replaced by one `new` opens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyChange {
    pub repo: Option<String>,
    pub old: KeySecret,
    pub new: KeySecret,
}

/// What `POST /v1/repo/keys/passwd` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChanged {
    pub added: KeySlot,
    pub removed: String,
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

/// A chunk that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptChunk {
    pub digest: Digest,
    pub path: PathBuf,
    pub problem: String,
    /// The checked backups whose index names this chunk.
    pub backups: Vec<String>,
}

/// What a verification found (the answer to [`VerifyRequest`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Backups whose index was checked (good or bad).
    pub backups_checked: u64,
    /// Distinct chunks read (good or corrupt; missing ones not counted).
    pub chunks_checked: u64,
    /// Plain bytes of the chunks that verified.
    pub bytes_checked: u64,
    /// Chunks whose file is damaged (sorted by digest).
    pub corrupt: Vec<CorruptChunk>,
    /// (backup id, problem) for each manifest or index that failed its checks.
    pub bad_indexes: Vec<(String, String)>,
    /// Chunks named by an index but absent (sorted by digest).
    pub missing: Vec<CorruptChunk>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.bad_indexes.is_empty() && self.missing.is_empty()
    }
}

/// How many backups to keep; `None` = rule not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepPolicy {
    pub last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
    /// Every backup made within this span before the newest backup (as restic's
    /// `--keep-within`: a repository nobody backs up to any more keeps its last span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<KeepWithin>,
}

/// A span of calendar time, `2y5m7d3h` (years, months, days, hours; each part optional, in
/// this order), subtracted from a time as a calendar does: a month before March 31 is
/// March 3 in a common year (February 31 rolled over), as restic and Go's `AddDate` count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeepWithin {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl std::str::FromStr for KeepWithin {
    type Err = String;

    fn from_str(s: &str) -> Result<KeepWithin, String> {
        let bad = |why: &str| {
            format!(
                "{s:?}: {why} (a span like 1y6m, 30d or 12h: y years, m months, d days, h hours)"
            )
        };
        let mut k = KeepWithin::default();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        let mut last_unit = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("a number must come before each unit"));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("a number too large"))?;
            let unit = rest[digits..]
                .chars()
                .next()
                .ok_or_else(|| bad("a number without a unit"))?;
            let (order, field) = match unit {
                'y' => (1, &mut k.years),
                'm' => (2, &mut k.months),
                'd' => (3, &mut k.days),
                'h' => (4, &mut k.hours),
                _ => return Err(bad(&format!("unknown unit {unit:?}"))),
            };
            if order <= last_unit {
                return Err(bad("units go in the order y, m, d, h, each once"));
            }
            last_unit = order;
            *field = n;
            rest = &rest[digits + 1..];
        }
        Ok(k)
    }
}

impl std::fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ];
        let mut any = false;
        for (n, unit) in parts.into_iter().filter(|(n, _)| *n > 0) {
            write!(f, "{n}{unit}")?;
            any = true;
        }
        if !any {
            f.write_str("0h")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for KeepWithin {
    type Error = String;
    fn try_from(s: String) -> Result<KeepWithin, String> {
        s.parse()
    }
}

impl From<KeepWithin> for String {
    fn from(k: KeepWithin) -> String {
        k.to_string()
    }
}

impl KeepWithin {
    /// Spans nothing: keeps no backup.
    pub fn is_zero(&self) -> bool {
        *self == KeepWithin::default()
    }
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

/// What garbage collection found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Distinct chunks referenced by the complete backups.
    pub chunks_referenced: u64,
    /// Unreferenced chunks removed (or, in a dry run, that would be).
    pub chunks_removed: u64,
    /// Their size on disk.
    pub bytes_freed: u64,
    /// Unreferenced chunks kept because they are younger than the cutoff.
    pub chunks_kept_young: u64,
}

/// `POST /v1/repo/sync`: copy backups from one repository to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncRequest {
    /// The source (default: the daemon's repository).
    pub src: Option<String>,
    /// The destination.
    pub dst: String,
    /// Only the backups of this export.
    pub export: Option<String>,
    /// Only the backups this policy keeps (needs `export`); `None`: every backup.
    pub keep: Option<KeepPolicy>,
    /// Only say what would be copied.
    pub dry_run: bool,
}

/// What a sync did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Backups copied (in a dry run: to copy), oldest first.
    pub synced: Vec<String>,
    /// Backups asked for that the destination held already.
    pub present: Vec<String>,
    /// Distinct chunks copied (in a dry run: to copy) and the plain bytes they hold.
    pub chunks_copied: u64,
    pub bytes_copied: u64,
    /// Bytes the copied chunks take in the destination (0 in a dry run).
    pub stored_bytes: u64,
    /// Distinct chunks of the synced backups the destination held already.
    pub chunks_present: u64,
}

/// `POST /v1/repo/repair`: what verify finds damaged, taken again from other repositories.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RepairRequest {
    /// The repository to repair (default: the daemon's).
    pub repo: Option<String>,
    /// Repositories to take intact chunks and indexes from (e.g. one synced to), in order.
    pub from: Vec<String>,
    /// Remove the backups that stay damaged.
    pub remove_broken: bool,
    /// Only say what would be repaired.
    pub dry_run: bool,
}

/// What a repair found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// What verify found first.
    pub found: VerifyReport,
    /// Chunks written again (in a dry run: that would be), with the repository each came
    /// from.
    pub chunks_repaired: Vec<(Digest, String)>,
    /// Backups whose index was written again, with the repository it came from.
    pub indexes_repaired: Vec<(String, String)>,
    /// Damaged or missing chunks no repository given holds intact.
    pub chunks_unrepaired: Vec<Digest>,
    /// Backups still damaged after the repair, each with why (removed with `remove_broken`).
    pub broken: Vec<(String, String)>,
    /// Backups removed.
    pub removed: Vec<String>,
}

/// `POST /v1/repo/serve`: serve a backup as a read-only export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServeRequest {
    pub repo: Option<String>,
    pub backup: String,
    pub export: String,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fixtures::same_text;

    #[test]
    fn keep_within_spans_read_and_print_as_restic_writes_them() {
        let k: KeepWithin = "2y5m7d3h".parse().unwrap();
        assert_eq!((k.years, k.months, k.days, k.hours), (2, 5, 7, 3));
        assert_eq!(k.to_string(), "2y5m7d3h");
        for (text, shown) in [("30d", "30d"), ("1y", "1y"), ("12h", "12h"), ("0d", "0h")] {
            assert_eq!(text.parse::<KeepWithin>().unwrap().to_string(), shown);
        }
        for bad in [
            "",
            "7",
            "d",
            "3x",
            "1d2y",
            "1d1d",
            "-1d",
            "99999999999d",
            "1d 2h",
        ] {
            let e = bad.parse::<KeepWithin>().unwrap_err();
            assert!(e.contains("a span like 1y6m"), "{bad}: {e}");
        }
        // In JSON as text; a policy without the newer rules reads as before.
        let p = KeepPolicy {
            daily: Some(7),
            within: Some("1m".parse().unwrap()),
            ..KeepPolicy::default()
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""within":"1m""#), "{json}");
        assert_eq!(serde_json::from_str::<KeepPolicy>(&json).unwrap(), p);
        let old: KeepPolicy =
            serde_json::from_str(r#"{"last":3,"daily":null,"weekly":null,"monthly":null}"#)
                .unwrap();
        assert_eq!(old.last, Some(3));
        assert!(serde_json::from_str::<KeepPolicy>(r#"{"within":"1q"}"#).is_err());
    }

    #[test]
    fn a_manifest_file_reads_and_writes_back_unchanged() {
        let m: Manifest = same_text(include_str!("testdata/manifest.json"));
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_714_564_800_123_456);
        assert_eq!(m.snapshot_time, t);
        assert_eq!(
            (m.mode, m.blocks, m.status),
            (Mode::Incremental, Blocks::Used, Status::Complete)
        );
        assert_eq!(m.counts.chunks_inherited, 52);
        assert_eq!(m.counts.chunks_patched, 0);
        // With patches the count is written, and read back.
        let mut p = m.clone();
        p.counts.chunks_patched = 7;
        let text = serde_json::to_string_pretty(&p).unwrap();
        assert!(text.contains("\"chunks_patched\": 7"), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), p);
    }

    #[test]
    fn a_listing_tells_complete_from_damaged() {
        let l: Vec<Listed> = same_text(include_str!("testdata/listing.json"));
        assert!(matches!(&l[0], Listed::Complete(m) if m.mode == Mode::Full && m.parent.is_none()));
        assert!(matches!(&l[1], Listed::Damaged(d) if d.status == Status::Damaged));
    }

    #[test]
    fn a_verify_report_names_chunks_by_hex_digest() {
        let r: VerifyReport = same_text(include_str!("testdata/verify.json"));
        assert_eq!(r.corrupt[0].digest.0[0], 0xba);
        assert!(!r.is_ok());
        assert!(VerifyReport::default().is_ok());
    }

    #[test]
    fn a_bad_time_is_an_error_naming_it() {
        let text = include_str!("testdata/manifest.json").replace(
            "\"snapshot_time\": \"2024-05-01T12:00:00.123456Z\"",
            "\"snapshot_time\": \"yesterday\"",
        );
        let e = serde_json::from_str::<Manifest>(&text).unwrap_err();
        assert!(e.to_string().contains("yesterday"), "{e}");
    }
}
