//! Generations in a repository, end to end: the acceptance tests of the repository issue.
//!
//! 1. Five generations of a live ext4 (nbdfuse + loop, a writer running throughout, `--freeze`)
//!    each restore exactly: e2fsck clean, the test's own files as they were at that generation
//!    (sha256), the writer's files as `scripts/lib/fscheck.py` expects them for that freeze
//!    window, and a restore done twice is the same byte for byte.
//! 2. An incremental after a 1 % change reads exactly the changed blocks.
//! 3. The change map after kill -9 (full, and why), after a clean stop (incremental) and after
//!    the image changed while cowd was stopped (full, with the change in it).
//! 4. A raw backup in between: the map counts from it, so an incremental is refused, auto is
//!    full and says why.
//! 5. A used-only backup of a half-empty ext4: what it reads, and free blocks become zeroes.
//! 6. Two exports with the same data are stored once.
//! 7. `verify` finds a flipped byte and names exactly the backups it breaks.
//! 8. `prune --keep-last 2` keeps the policy and GC removes exactly the unreferenced chunks.
//! 9. A generation served as an export mounts and shows that generation's files.
//! 10. A live restore mounts at once, keeps writes made during it, resumes after kill -9, and
//!     fails only the blocks of a chunk missing from the repository.
//! 11. The files of a generation without restoring it (ext4 written by the kernel, NTFS by
//!     ntfs-3g): ls, cat, map, restore --path, mount and diff.
//!
//! One file per scenario; the fixtures below are shared (the test's own files on a mounted
//! filesystem, the paced writer and its checker). `Ctl`, cowctl against one daemon and one
//! repository, and the readers of repository files are the harness's `cowd_tests::repo`.
//!
//! The filesystem tests need root (loop devices, mount, FIFREEZE) and FUSE. Whatever a test
//! mounts or attaches is undone by an [`Attached`] guard, also when an assertion fails; every
//! test works in temp directories of its own, so the tests run in parallel.

mod change_map;
mod dedup;
mod files;
mod five_generations;
mod incremental;
mod live_restore;
mod live_restore_faults;
mod ntfs_files;
mod prune;
mod serve;
mod used_only;
mod verify;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cowd::repo::{Digest, DigestOf};
use cowd_tests::{KIB, MIB, pattern};

/// The change map's and the default copy-before-write block size.
const BLOCK: u64 = 64 * KIB;
/// The default chunk size of a repository.
const CHUNK: u64 = 4 * MIB;

// ---------------------------------------------------------------------------------------------
// Randomness

/// A pseudo-random generator seeded from the clock, the seed printed for a rerun
/// (`GENERATIONS_SEED=N`).
fn rng(test: &str) -> fastrand::Rng {
    let seed = std::env::var("GENERATIONS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("{test}: seed {seed} (GENERATIONS_SEED={seed} to repeat)");
    fastrand::Rng::with_seed(seed)
}

// ---------------------------------------------------------------------------------------------
// Files of the test on a mounted filesystem

/// Files the test writes itself: it knows their content at every moment, and changes them
/// only between backups.
#[derive(Debug)]
struct StaticFiles {
    root: PathBuf,
    content: BTreeMap<String, Vec<u8>>,
    seed: u64,
}

impl StaticFiles {
    fn new(root: &Path) -> StaticFiles {
        fs::create_dir_all(root).unwrap();
        StaticFiles {
            root: root.to_owned(),
            content: BTreeMap::new(),
            seed: 0,
        }
    }

    fn data(&mut self, len: usize) -> Vec<u8> {
        self.seed += 1;
        pattern(7_000 + self.seed, len)
    }

    fn add(&mut self, name: &str, len: usize) {
        let data = self.data(len);
        let p = self.root.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &data).unwrap();
        assert!(self.content.insert(name.to_owned(), data).is_none());
    }

    /// Overwrites a range inside the file, in place.
    fn overwrite(&mut self, name: &str, rng: &mut fastrand::Rng) {
        let len = self.content[name].len();
        if len == 0 {
            return self.append(name, 1000);
        }
        let at = rng.usize(..len.max(1));
        let n = rng.usize(1..=(64 * KIB as usize)).min(len - at.min(len));
        let data = self.data(n);
        let f = File::options()
            .write(true)
            .open(self.root.join(name))
            .unwrap();
        f.write_all_at(&data, at as u64).unwrap();
        self.content.get_mut(name).unwrap()[at..at + n].copy_from_slice(&data);
    }

    fn append(&mut self, name: &str, len: usize) {
        let data = self.data(len);
        let mut f = File::options()
            .append(true)
            .open(self.root.join(name))
            .unwrap();
        f.write_all(&data).unwrap();
        self.content.get_mut(name).unwrap().extend_from_slice(&data);
    }

    /// Replaces the whole content (truncate, write).
    fn rewrite(&mut self, name: &str, len: usize) {
        let data = self.data(len);
        fs::write(self.root.join(name), &data).unwrap();
        self.content.insert(name.to_owned(), data);
    }

    fn delete(&mut self, name: &str) {
        fs::remove_file(self.root.join(name)).unwrap();
        self.content.remove(name).unwrap();
    }

    fn rename(&mut self, from: &str, to: &str) {
        let p = self.root.join(to);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::rename(self.root.join(from), p).unwrap();
        let data = self.content.remove(from).unwrap();
        assert!(self.content.insert(to.to_owned(), data).is_none());
    }

    /// Name → SHA-256 of every file now.
    fn manifest(&self) -> BTreeMap<String, String> {
        self.content
            .iter()
            .map(|(n, d)| (n.clone(), Digest::of(d).to_string()))
            .collect()
    }

    /// A name picked at random among the current files, except `not`.
    fn pick(&self, rng: &mut fastrand::Rng, not: &[String]) -> String {
        let names: Vec<&String> = self.content.keys().filter(|n| !not.contains(n)).collect();
        names[rng.usize(..names.len())].clone()
    }
}

/// Name (relative, `/`-separated) → SHA-256 of every regular file under `root`; panics on
/// anything else than files and directories.
fn files_under(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else {
                assert!(t.is_file(), "{:?} is not a file", e.path());
                let name = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                out.insert(name, Digest::of(&fs::read(e.path()).unwrap()).to_string());
            }
        }
    }
    out
}

/// Panics, listing the differences, unless `got` equals `want`.
fn assert_same_files(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    if got == want {
        return;
    }
    let mut diff = Vec::new();
    for (n, s) in want {
        match got.get(n) {
            None => diff.push(format!("missing {n}")),
            Some(g) if g != s => diff.push(format!("{n}: sha256 {g}, want {s}")),
            _ => {}
        }
    }
    for n in got.keys().filter(|n| !want.contains_key(*n)) {
        diff.push(format!("unexpected {n}"));
    }
    panic!("{what}: {} differences:\n{}", diff.len(), diff.join("\n"));
}

/// The changes between two generations: files added (one in a new directory), changed in
/// place, appended to, rewritten shorter, renamed and deleted.
fn change_files(files: &mut StaticFiles, g: usize, rng: &mut fastrand::Rng) {
    let mut touched = Vec::new();
    for k in 0..3 {
        let name = if k == 0 {
            format!("dir{g}/new{g}-{k}.bin")
        } else {
            format!("new{g}-{k}.bin")
        };
        files.add(&name, rng.usize(1..(1536 * KIB as usize)));
        touched.push(name);
    }
    let name = files.pick(rng, &touched);
    files.overwrite(&name, rng);
    touched.push(name);
    let name = files.pick(rng, &touched);
    files.append(&name, rng.usize(1..(300 * KIB as usize)));
    touched.push(name);
    let name = files.pick(rng, &touched);
    let shorter = (files.content[&name].len() / 2).max(1);
    files.rewrite(&name, shorter);
    touched.push(name);
    let name = files.pick(rng, &touched);
    let to = format!("renamed{g}.bin");
    files.rename(&name, &to);
    touched.push(to);
    for _ in 0..2 {
        let name = files.pick(rng, &touched);
        files.delete(&name);
    }
}
