//! Power-loss safety: cowd's image, state directory, containers, repository and targets on a
//! lazyfs mount (`cowd_tests::lazyfs`), the power cut at a spread of operations of each action,
//! cowd killed and restarted on what survived, and then everything cowd had called complete or
//! acknowledged must be there and exact.
//!
//! Each scenario file sweeps one action: it runs it once to count its operations, then once
//! per cut point on a fresh [`PowerRig`]. Contents are known to the test: it writes them
//! through NBD (flushed) before the action and writes nothing during it, so every backup's
//! snapshot point T has a known image.

mod change_map;
mod nbd_durability;
mod prune_gc;
mod raw_target;
mod repo_backup;
mod restore;

use std::collections::BTreeMap;

use cowd::control::api::{BackupStarted, BackupStatus, Manifest};
use cowd_tests::cli::{ok, stderr, stdout};
use cowd_tests::pattern;
use cowd_tests::power::{NbdOp, PowerRig, s};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The export's size: small, so that a sweep of a dozen cuts stays quick.
const SIZE: u64 = 8 * MIB;
/// The repository's chunk size: many chunk files for an 8 MiB image.
const CHUNK: &str = "256K";
/// About how many cut points each sweep tries.
const POINTS: usize = 10;

/// An image of `SIZE` bytes: pattern blocks of 64 KiB from `seed`, every fifth one zero.
fn content(seed: u64) -> Vec<u8> {
    let block = 64 * KIB as usize;
    let mut v = Vec::with_capacity(SIZE as usize);
    for i in 0..SIZE as usize / block {
        if (i as u64 + seed) % 5 == 0 {
            v.resize(v.len() + block, 0);
        } else {
            v.extend_from_slice(&pattern(seed * 1_000_003 + i as u64, block));
        }
    }
    v
}

/// `old` with a few scattered 64 KiB blocks and one 1 MiB run replaced (seeded).
fn changed(old: &[u8], seed: u64) -> Vec<u8> {
    let mut v = old.to_vec();
    let block = 64 * KIB as usize;
    for k in [3, 17, 40, 41, 99] {
        let at = (k * 7 + seed as usize * 13) % (v.len() / block) * block;
        v[at..at + block].copy_from_slice(&pattern(seed * 7_919 + k as u64, block));
    }
    let run = (seed as usize * 5 % 6 + 1) * MIB as usize;
    v[run..run + MIB as usize].copy_from_slice(&pattern(seed * 104_729, MIB as usize));
    v
}

/// Makes the export hold `image` (through NBD, flushed), writing only what differs from `old`.
fn write_image(rig: &PowerRig, old: &[u8], image: &[u8]) {
    let block = 64 * KIB as usize;
    let mut ops: Vec<NbdOp> = old
        .chunks(block)
        .zip(image.chunks(block))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (_, b))| NbdOp::write((i * block) as u64, b))
        .collect();
    ops.push(NbdOp::Flush);
    assert_eq!(
        rig.nbd(&ops),
        ops.len(),
        "writes not acknowledged:\n{}",
        rig.log()
    );
}

/// The repository on the mount.
fn repo(rig: &PowerRig) -> String {
    s(&rig.on("repo")).to_owned()
}

fn repo_init(rig: &PowerRig) {
    ok(&rig.cowctl(&["repo", "init", &repo(rig), "--chunk-size", CHUNK]));
}

/// `--json start-backup disk --repo REPO --no-quiesce --mode MODE --wait`.
fn backup_args(rig: &PowerRig, mode: &str) -> Vec<String> {
    [
        "--json",
        "start-backup",
        "disk",
        "--repo",
        &repo(rig),
        "--no-quiesce",
        "--mode",
        mode,
        "--wait",
    ]
    .map(String::from)
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The JSON documents cowctl printed (`start-backup --wait` prints two).
fn docs(out: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(out)
        .into_iter()
        .map_while(Result::ok)
        .collect()
}

/// The id a `start-backup --json` printed, if it got that far.
fn started_id(out: &[u8]) -> Option<String> {
    let first = docs(out).into_iter().next()?;
    serde_json::from_value::<BackupStarted>(first)
        .ok()
        .map(|b| b.id)
}

/// A repository backup with the power on: must end done; returns its id.
fn backup(rig: &PowerRig, mode: &str) -> String {
    let out = rig.cowctl(&strs(&backup_args(rig, mode)));
    let text = ok(&out);
    let d = docs(&out.stdout);
    let end: BackupStatus = serde_json::from_value(d.last().cloned().unwrap()).unwrap();
    assert_eq!(format!("{:?}", end.state), "Done", "{text}\n{}", rig.log());
    end.id
}

/// The repository's complete backups, oldest first.
fn manifests(rig: &PowerRig) -> Vec<Manifest> {
    let out = rig.cowctl(&["--json", "backups", "--repo", &repo(rig)]);
    let text = ok(&out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Every backup the repository lists restores exactly to the image `expect` gives for it
/// (None: the backup should not exist), and `verify --all` passes.
fn check_repo(rig: &PowerRig, expect: &dyn Fn(&str) -> Option<Vec<u8>>, context: &str) {
    for m in manifests(rig) {
        let want = expect(&m.id).unwrap_or_else(|| {
            panic!(
                "{context}: backup {} is listed but was never complete",
                m.id
            )
        });
        let to = rig.check(&format!("restore-{}.img", m.id));
        let _ = std::fs::remove_file(&to);
        let out = rig.cowctl(&["restore", &m.id, "--to", s(&to), "--repo", &repo(rig)]);
        assert!(
            out.status.success(),
            "{context}: restore of {} failed: {}{}",
            m.id,
            stdout(&out),
            stderr(&out)
        );
        let got = std::fs::read(&to).unwrap();
        assert!(
            got == want,
            "{context}: backup {} {}",
            m.id,
            first_difference(&got, &want)
        );
        std::fs::remove_file(&to).unwrap();
    }
    let v = rig.cowctl(&["verify", "--all", "--repo", &repo(rig)]);
    assert!(
        v.status.success(),
        "{context}: verify --all failed:\n{}{}",
        stdout(&v),
        stderr(&v)
    );
}

/// "differs at byte N" or the sizes.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    if got.len() != want.len() {
        return format!("has {} bytes, expected {}", got.len(), want.len());
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    format!("differs from its snapshot point at byte {at}")
}

/// Images by backup id, for [`check_repo`].
type Known = BTreeMap<String, Vec<u8>>;
