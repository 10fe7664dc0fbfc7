//! A repository as the tests drive and inspect it: [`Ctl`] runs `cowctl` against one daemon and
//! one repository (init, backups to their end, manifests, restore, verify); the readers below
//! look at the repository's files directly, by their documented format (`index.bin`, chunk
//! files under `chunks/`), so a test checks what is on disk and not only what cowd reports.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cowd::control::api::{
    BackupStarted, BackupState, BackupStatus, Manifest, RestoreState, RestoreStatus, VerifyReport,
};
use cowd::repo::{Digest, DigestOf};

use crate::cli::{cowctl_at, ok, path_str, text};
use crate::{MIB, run};

/// `cowctl` against one daemon's control socket and one repository.
#[derive(Debug, Clone)]
pub struct Ctl {
    control: PathBuf,
    repo: PathBuf,
}

impl Ctl {
    pub fn new(control: &Path, repo: &Path) -> Ctl {
        Ctl {
            control: control.to_owned(),
            repo: repo.to_owned(),
        }
    }

    fn r(&self) -> &str {
        path_str(&self.repo)
    }

    /// `cowctl --socket CONTROL ARGS...`, run to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        cowctl_at(&self.control, args)
    }

    /// `cowctl ARGS... --repo REPO`.
    pub fn in_repo(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--repo", self.r()]);
        self.run(&all)
    }

    /// `cowctl repo init REPO [--chunk-size SIZE]`.
    pub fn init(&self, chunk_size: Option<&str>) {
        let mut args = vec!["repo", "init", self.r()];
        if let Some(c) = chunk_size {
            args.extend_from_slice(&["--chunk-size", c]);
        }
        ok(&self.run(&args));
    }

    /// `cowctl --json start-backup EXPORT ARGS... --wait`: the final status, which must be done.
    pub fn backup_with(&self, export: &str, args: &[&str]) -> BackupStatus {
        let mut all = vec!["--json", "start-backup", export];
        all.extend_from_slice(args);
        all.push("--wait");
        let out = ok(&self.run(&all));
        let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(docs.len(), 2, "{out}");
        let started: BackupStarted = serde_json::from_value(docs[0].clone()).unwrap();
        let status: BackupStatus = serde_json::from_value(docs[1].clone()).unwrap();
        assert_eq!(status.id, started.id, "{out}");
        assert_eq!(status.state, BackupState::Done, "{status:?}");
        status
    }

    /// A backup of `export` into the repository: `start-backup EXPORT --repo REPO ARGS...`.
    pub fn backup(&self, export: &str, args: &[&str]) -> BackupStatus {
        let mut all = vec!["--repo", self.r()];
        all.extend_from_slice(args);
        self.backup_with(export, &all)
    }

    /// The repository's manifests, oldest first.
    pub fn manifests(&self) -> Vec<Manifest> {
        let out = ok(&self.in_repo(&["--json", "backups"]));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    pub fn manifest(&self, id: &str) -> Manifest {
        self.manifests()
            .into_iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no backup {id} in the repository"))
    }

    /// `cowctl restore ID --to TO`, which must succeed.
    pub fn restore(&self, id: &str, to: &Path) {
        ok(&self.in_repo(&["restore", id, "--to", path_str(to)]));
    }

    /// `cowctl --json restores`: every restore of the daemon, newest first.
    pub fn restores(&self) -> Vec<RestoreStatus> {
        let out = ok(&self.run(&["--json", "restores"]));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Restore `id` as `cowctl restores` shows it.
    pub fn restore_status(&self, id: &str) -> RestoreStatus {
        self.restores()
            .into_iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no restore {id}"))
    }

    /// Waits (up to `limit`) until restore `id` has ended; returns its status.
    pub fn wait_restore(&self, id: &str, limit: std::time::Duration) -> RestoreStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let s = self.restore_status(id);
            if s.state != RestoreState::Running {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "restore {id} still running after {limit:?}: {s:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// `cowctl --json verify --all`: the report and the exit code.
    pub fn verify_all(&self) -> (VerifyReport, Option<i32>) {
        let o = self.in_repo(&["--json", "verify", "--all"]);
        let report = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "verify: {e}\nstdout:\n{}\nstderr:\n{}",
                text(&o.stdout),
                text(&o.stderr)
            )
        });
        (report, o.status.code())
    }
}

/// Figures of one repository backup, for the test output.
pub fn figures(m: &Manifest) -> String {
    let c = &m.counts;
    format!(
        "{} {:?}/{:?}{}: read {:.2} MiB of {:.0} MiB, stored {:.2} MiB new; chunks {} total, \
         {} zero, {} new, {} reused, {} inherited, {} patched{}",
        m.id,
        m.mode,
        m.blocks,
        m.filesystem
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default(),
        c.bytes_read as f64 / MIB as f64,
        m.device_size as f64 / MIB as f64,
        c.bytes_new_stored as f64 / MIB as f64,
        c.chunks_total,
        c.chunks_zero,
        c.chunks_new,
        c.chunks_reused,
        c.chunks_inherited,
        c.chunks_patched,
        m.full_reason
            .as_deref()
            .map(|r| format!("; full because {r}"))
            .unwrap_or_default()
    )
}

pub const ZERO_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chunk digests (hex; all zeroes for a zero chunk) of backup `id`, read from
/// `ROOT/backups/ID/index.bin` by its documented format, every field and the trailing
/// checksum checked, and the checksum matched against the manifest's `index_sha256`. A patched
/// chunk's digest is its base's (see [`index_patches`]).
pub fn index_digests(repo: &Path, id: &str) -> Vec<String> {
    read_index(repo, id).0
}

/// The patches of backup `id`'s index (version 2): (chunk, patch digest hex, plain length).
pub fn index_patches(repo: &Path, id: &str) -> Vec<(u64, String, u32)> {
    read_index(repo, id).1
}

/// Every stored object backup `id` names: its non-zero chunk digests and its patches.
pub fn index_objects(repo: &Path, id: &str) -> BTreeSet<String> {
    let (digests, patches) = read_index(repo, id);
    let mut out = stored(&digests);
    out.extend(patches.into_iter().map(|p| p.1));
    out
}

type IndexFile = (Vec<String>, Vec<(u64, String, u32)>);

fn read_index(repo: &Path, id: &str) -> IndexFile {
    let dir = repo.join("backups").join(id);
    let b = fs::read(dir.join("index.bin")).unwrap();
    assert!(b.len() >= 64, "index of {id}: {} bytes", b.len());
    assert_eq!(&b[..8], b"COWDIDX1", "index of {id}: magic");
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let version = u32_at(8);
    assert!(
        version == 1 || version == 2,
        "index of {id}: version {version}"
    );
    let (chunk_size, device_size, count) = (u64::from(u32_at(12)), u64_at(16), u64_at(24));
    assert_eq!(count, device_size.div_ceil(chunk_size), "index of {id}");
    let digests_end = (32 + 32 * count) as usize;
    let patches = if version == 2 { u64_at(digests_end) } else { 0 };
    let table = if version == 2 { 8 + 44 * patches } else { 0 };
    assert_eq!(
        b.len() as u64,
        digests_end as u64 + table + 32,
        "index of {id}: length"
    );
    let body = b.len() - 32;
    assert_eq!(
        Digest::of(&b[..body]).0[..],
        b[body..],
        "index of {id}: checksum"
    );
    let manifest: Manifest =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let hex = |d: &[u8]| Digest(d.try_into().unwrap()).to_string();
    assert_eq!(manifest.index_sha256, hex(&b[body..]), "index of {id}");
    let digests = b[32..digests_end].chunks_exact(32).map(hex).collect();
    let patches = if version == 2 {
        b[digests_end + 8..body]
            .chunks_exact(44)
            .map(|e| {
                let chunk = u64::from_le_bytes(e[..8].try_into().unwrap());
                assert!(chunk < count, "index of {id}: patch of chunk {chunk}");
                (
                    chunk,
                    hex(&e[8..40]),
                    u32::from_le_bytes(e[40..].try_into().unwrap()),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    (digests, patches)
}

/// The non-zero chunks an index names.
pub fn stored(digests: &[String]) -> BTreeSet<String> {
    digests
        .iter()
        .filter(|d| *d != ZERO_DIGEST)
        .cloned()
        .collect()
}

/// `ROOT/chunks/<first 2 hex>/<64 hex>`.
pub fn chunk_path(repo: &Path, digest: &str) -> PathBuf {
    repo.join("chunks").join(&digest[..2]).join(digest)
}

/// The digests of the chunk files in a repository.
pub fn chunk_files(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in fs::read_dir(repo.join("chunks")).unwrap() {
        for f in fs::read_dir(dir.unwrap().path()).unwrap() {
            out.insert(f.unwrap().file_name().to_str().unwrap().to_owned());
        }
    }
    out
}

/// `du -sb DIR`.
pub fn du(dir: &Path) -> u64 {
    let out = text(&run(Command::new("du").arg("-sb").arg(dir)).stdout);
    out.split_whitespace().next().unwrap().parse().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_files_are_named_by_digest_under_their_first_two_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let digests = [
            format!("ab{}", "1".repeat(62)),
            format!("ab{}", "2".repeat(62)),
            format!("cd{}", "3".repeat(62)),
        ];
        for d in &digests {
            let p = chunk_path(dir.path(), d);
            assert_eq!(p, dir.path().join("chunks").join(&d[..2]).join(d));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, b"chunk").unwrap();
        }
        assert_eq!(chunk_files(dir.path()), digests.iter().cloned().collect());
    }

    #[test]
    fn stored_chunks_leave_out_zero_chunks() {
        let a = "a".repeat(64);
        let index = [a.clone(), ZERO_DIGEST.to_owned(), a.clone()];
        assert_eq!(stored(&index), BTreeSet::from([a]));
    }
}
