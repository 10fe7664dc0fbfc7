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
//!
//! The filesystem tests need root (loop devices, mount, FIFREEZE) and FUSE. Whatever a test
//! mounts or attaches is undone by an [`Attached`] guard, also when an assertion fails; every
//! test works in temp directories of its own, so the tests run in parallel.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cowd::control::api::{
    BackupStarted, BackupState, BackupStatus, ExportInfo, Manifest, PruneResult, VerifyReport,
};
use cowd::repo::{Blocks, Digest, DigestOf, Mode};
use cowd_tests::cli::{Background, failed, kill_9, ok, path_str, restart, start, text};
use cowd_tests::files::{PYTHON, assert_same_file, project_root, read_at, require_root_and};
use cowd_tests::mounts::Attached;
use cowd_tests::{Daemon, bin, pattern, require, run};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The change map's and the default copy-before-write block size.
const BLOCK: u64 = 64 * KIB;
/// The default chunk size of a repository.
const CHUNK: u64 = 4 * MIB;

// ---------------------------------------------------------------------------------------------
// The daemon and cowctl

/// `cowctl` against one daemon's control socket and one repository.
#[derive(Debug, Clone)]
struct Ctl {
    control: PathBuf,
    repo: PathBuf,
}

impl Ctl {
    fn new(control: &Path, repo: &Path) -> Ctl {
        Ctl {
            control: control.to_owned(),
            repo: repo.to_owned(),
        }
    }

    fn r(&self) -> &str {
        path_str(&self.repo)
    }

    /// `cowctl --socket CONTROL ARGS...`, run to its end.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin("cowctl"))
            .env_remove("COWD_SOCKET")
            .arg("--socket")
            .arg(&self.control)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cowctl")
    }

    /// `cowctl ARGS... --repo REPO`.
    fn in_repo(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--repo", self.r()]);
        self.run(&all)
    }

    /// `cowctl repo init REPO [--chunk-size SIZE]`.
    fn init(&self, chunk_size: Option<&str>) {
        let mut args = vec!["repo", "init", self.r()];
        if let Some(c) = chunk_size {
            args.extend_from_slice(&["--chunk-size", c]);
        }
        ok(&self.run(&args));
    }

    /// `cowctl --json start-backup EXPORT ARGS... --wait`: the final status, which must be done.
    fn backup_with(&self, export: &str, args: &[&str]) -> BackupStatus {
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
    fn backup(&self, export: &str, args: &[&str]) -> BackupStatus {
        let mut all = vec!["--repo", self.r()];
        all.extend_from_slice(args);
        self.backup_with(export, &all)
    }

    /// The repository's manifests, oldest first.
    fn manifests(&self) -> Vec<Manifest> {
        let out = ok(&self.in_repo(&["--json", "backups"]));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn manifest(&self, id: &str) -> Manifest {
        self.manifests()
            .into_iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no backup {id} in the repository"))
    }

    /// `cowctl restore ID --to TO`, which must succeed.
    fn restore(&self, id: &str, to: &Path) {
        ok(&self.in_repo(&["restore", id, "--to", path_str(to)]));
    }

    /// `cowctl --json verify --all`: the report and the exit code.
    fn verify_all(&self) -> (VerifyReport, Option<i32>) {
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
fn figures(m: &Manifest) -> String {
    let c = &m.counts;
    format!(
        "{} {:?}/{:?}{}: read {:.2} MiB of {:.0} MiB, stored {:.2} MiB new; chunks {} total, \
         {} zero, {} new, {} reused, {} inherited{}",
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
        m.full_reason
            .as_deref()
            .map(|r| format!("; full because {r}"))
            .unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------------------------
// Images and repository files

/// Fills `[offset, offset + len)` of an image with pattern data (never a zero 4 KiB block),
/// writing the file directly.
fn fill(image: &Path, offset: u64, len: u64, seed: u64) {
    let f = File::options().write(true).open(image).unwrap();
    let piece = 8 * MIB;
    let mut at = offset;
    while at < offset + len {
        let n = piece.min(offset + len - at);
        f.write_all_at(&pattern(seed * 100_000 + at / piece, n as usize), at)
            .unwrap();
        at += n;
    }
    f.sync_all().unwrap();
}

/// Writes through NBD with one qemu-io: `write -P BYTE OFFSET LENGTH` for each write.
fn nbd_writes(uri: &str, writes: &[(u8, u64, u64)]) {
    require("qemu-io");
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw", uri]);
    for (byte, off, len) in writes {
        cmd.arg("-c").arg(format!("write -P {byte} {off} {len}"));
    }
    run(&mut cmd);
}

const ZERO_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chunk digests (hex; all zeroes for a zero chunk) of backup `id`, read from
/// `ROOT/backups/ID/index.bin` by its documented format, every field and the trailing
/// checksum checked, and the checksum matched against the manifest's `index_sha256`.
fn index_digests(repo: &Path, id: &str) -> Vec<String> {
    let dir = repo.join("backups").join(id);
    let b = fs::read(dir.join("index.bin")).unwrap();
    assert!(b.len() >= 64, "index of {id}: {} bytes", b.len());
    assert_eq!(&b[..8], b"COWDIDX1", "index of {id}: magic");
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    assert_eq!(u32_at(8), 1, "index of {id}: version");
    let (chunk_size, device_size, count) = (u64::from(u32_at(12)), u64_at(16), u64_at(24));
    assert_eq!(count, device_size.div_ceil(chunk_size), "index of {id}");
    assert_eq!(
        b.len() as u64,
        32 + 32 * count + 32,
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
    b[32..body].chunks_exact(32).map(hex).collect()
}

/// The non-zero chunks an index names.
fn stored(digests: &[String]) -> BTreeSet<String> {
    digests
        .iter()
        .filter(|d| *d != ZERO_DIGEST)
        .cloned()
        .collect()
}

/// `ROOT/chunks/<first 2 hex>/<64 hex>`.
fn chunk_path(repo: &Path, digest: &str) -> PathBuf {
    repo.join("chunks").join(&digest[..2]).join(digest)
}

/// The digests of the chunk files in a repository.
fn chunk_files(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in fs::read_dir(repo.join("chunks")).unwrap() {
        for f in fs::read_dir(dir.unwrap().path()).unwrap() {
            out.insert(f.unwrap().file_name().to_str().unwrap().to_owned());
        }
    }
    out
}

/// `du -sb DIR`.
fn du(dir: &Path) -> u64 {
    let out = text(&run(Command::new("du").arg("-sb").arg(dir)).stdout);
    out.split_whitespace().next().unwrap().parse().unwrap()
}

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

/// The writer of `scripts/lib/fswriter.py` at a gentler pace (`tests/scripts/paced_fswriter.py`)
/// in `dir`, logging to `log`, until `stop` exists.
fn start_writer(dir: &Path, log: &Path, stop: &Path, out: &Path) -> Background {
    let out = File::create(out).unwrap();
    Background(
        Command::new(PYTHON)
            .arg(project_root().join("tests/scripts/paced_fswriter.py"))
            .arg("0.02")
            .arg(dir)
            .arg(log)
            .arg(stop)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run paced_fswriter.py"),
    )
}

fn log_lines(log: &Path) -> usize {
    fs::read_to_string(log).unwrap_or_default().lines().count()
}

/// `fscheck.py DIR LOG FROZEN_AT THAWED_AT`: panics unless it passes; returns its summary.
fn fscheck(dir: &Path, log: &Path, frozen_at: &str, thawed_at: &str) -> String {
    let check = Command::new(PYTHON)
        .arg(project_root().join("scripts/lib/fscheck.py"))
        .arg(dir)
        .arg(log)
        .arg(frozen_at)
        .arg(thawed_at)
        .output()
        .unwrap();
    let summary = text(&check.stdout);
    assert!(
        check.status.success(),
        "fscheck.py ({}):\n{summary}{}",
        check.status,
        text(&check.stderr)
    );
    summary.trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. Five generations of a live ext4

/// What one generation must hold.
#[derive(Debug)]
struct Generation {
    id: String,
    frozen_at: String,
    thawed_at: String,
    files: BTreeMap<String, String>,
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

#[test]
fn five_generations_of_a_live_ext4_restore_exactly() {
    require_root_and(&[
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount",
    ]);
    let began = Instant::now();
    let mut rng = rng("five_generations");
    let d = start(Daemon::builder().export("disk", 512 * MIB));
    let dir = d.dir().to_owned();
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    // Declared after the daemon: dropped (unmounted, detached) while cowd still serves.
    let mut att = Attached::default();
    let mnt = dir.join("mnt");
    let nbd = att.nbdfuse(&dir.join("fuse"), &d.uri("disk"));
    let dev = att.losetup(&nbd);
    run(Command::new("mkfs.ext4").args(["-q", "-F", &dev]));
    att.mount(&[&dev], &mnt);

    let mut files = StaticFiles::new(&mnt.join("static"));
    for (i, len) in [0, 1, 4095, 4096, 65537, 300_000, 1 << 20, 3 << 20]
        .into_iter()
        .enumerate()
    {
        files.add(&format!("file{i}.bin"), len);
    }
    for i in 0..8 {
        files.add(&format!("sub/file{i}.bin"), rng.usize(1..(2 << 20)));
    }

    // The writer runs from before the first backup to after the last one.
    let (log, stop) = (dir.join("writer.log"), dir.join("stop-writer"));
    let mut writer = start_writer(&mnt.join("live"), &log, &stop, &dir.join("writer.out"));
    std::thread::sleep(Duration::from_millis(500));
    let first_renames = log_lines(&log);
    assert!(first_renames > 0, "the writer renamed no file in 0.5 s");

    let mut gens: Vec<Generation> = Vec::new();
    for g in 0..5 {
        if g > 0 {
            change_files(&mut files, g, &mut rng);
        }
        let before = log_lines(&log);
        // Paced, so that the writer overwrites blocks the backup still has to copy.
        let s = ctl.backup("disk", &["--freeze", path_str(&mnt), "--max-rate", "10"]);
        // The same window as `cowctl status --json` lists it.
        let listed: Vec<BackupStatus> =
            serde_json::from_str(&ok(&ctl.run(&["--json", "status", "disk"]))).unwrap();
        let listed = listed.into_iter().find(|x| x.id == s.id).expect("listed");
        assert_eq!(listed.quiesce, format!("freeze {}", mnt.display()));
        let (frozen_at, thawed_at) = (
            listed.frozen_at.clone().expect("frozen_at"),
            listed.thawed_at.clone().expect("thawed_at"),
        );
        assert_eq!(
            (s.frozen_at.as_deref(), s.thawed_at.as_deref()),
            (Some(frozen_at.as_str()), Some(thawed_at.as_str()))
        );
        println!(
            "generation {g}: {} frozen {frozen_at} .. {thawed_at}; {:.2} s, cbw {}, moved {:.1} MiB; \
             {} files of the test, {} renames by the writer so far",
            s.id,
            s.elapsed_s,
            s.copies_before_write,
            s.moved_bytes as f64 / MIB as f64,
            files.content.len(),
            before
        );
        gens.push(Generation {
            id: s.id.clone(),
            frozen_at,
            thawed_at,
            files: files.manifest(),
        });
        std::thread::sleep(Duration::from_millis(700));
    }
    fs::write(&stop, b"").unwrap();
    writer.finish(Duration::from_secs(10));
    let renames = log_lines(&log);
    assert!(
        renames > first_renames + 50,
        "the writer did not keep writing: {renames} renames, {first_renames} before the first \
         backup"
    );

    // The manifests: the first full (there was no earlier backup), then incremental, each on
    // the one before; all used blocks of ext4 (frozen, so the journal is clean).
    let list = ctl.manifests();
    let ids: Vec<&str> = list.iter().map(|m| m.id.as_str()).collect();
    let want: Vec<&str> = gens.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, want);
    for (g, m) in list.iter().enumerate() {
        println!("  {}", figures(m));
        assert_eq!(
            (m.blocks, m.filesystem.as_deref()),
            (Blocks::Used, Some("ext4")),
            "generation {g}"
        );
        if g == 0 {
            assert_eq!((m.mode, m.parent.as_deref()), (Mode::Full, None));
            assert_eq!(
                m.full_reason.as_deref(),
                Some("no earlier backup of this export in the repository")
            );
        } else {
            assert_eq!(
                (m.mode, m.parent.as_deref(), m.full_reason.as_deref()),
                (Mode::Incremental, Some(gens[g - 1].id.as_str()), None),
                "generation {g}"
            );
            assert!(m.counts.chunks_inherited > 0, "{}", figures(m));
        }
    }
    // The live filesystem is clean too once unmounted.
    att.umount(&mnt);
    run(Command::new("e2fsck").arg("-fn").arg(&dev));

    // Each generation restored twice, in a shuffled order.
    let mut order: Vec<(usize, usize)> = (0..5).flat_map(|g| [(g, 0), (g, 1)]).collect();
    rng.shuffle(&mut order);
    println!("restore order: {order:?}");
    for &(g, k) in &order {
        let gen_ = &gens[g];
        let img = dir.join(format!("restored-{g}-{k}.img"));
        let t = Instant::now();
        ctl.restore(&gen_.id, &img);
        let took = t.elapsed();
        run(Command::new("e2fsck").arg("-fn").arg(&img));
        let at = dir.join(format!("restored-{g}-{k}"));
        att.mount(&["-o", "ro,noload,loop", path_str(&img)], &at);
        assert_same_files(
            &files_under(&at.join("static")),
            &gen_.files,
            &format!("generation {g} (restore {k})"),
        );
        let summary = fscheck(&at.join("live"), &log, &gen_.frozen_at, &gen_.thawed_at);
        att.umount(&at);
        println!("restore {k} of generation {g} in {took:.2?}: {summary}");
    }
    for g in 0..5 {
        assert_same_file(
            &dir.join(format!("restored-{g}-0.img")),
            &dir.join(format!("restored-{g}-1.img")),
        );
    }
    let (report, code) = ctl.verify_all();
    assert!(report.is_ok() && code == Some(0), "{report:?}");
    println!(
        "five generations: {renames} renames by the writer; verified {} chunks; took {:.1?}",
        report.chunks_checked,
        began.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. An incremental after a 1 % change

#[test]
fn incremental_after_1_percent_change() {
    let began = Instant::now();
    let mut rng = rng("incremental_after_1_percent_change");
    let size = 512 * MIB;
    let d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill(&image, 0, size, 2);
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let b1 = ctl.backup("disk", &["--blocks", "all", "--no-quiesce"]);
    let m1 = ctl.manifest(&b1.id);
    println!("{}", figures(&m1));
    assert_eq!((m1.mode, m1.blocks), (Mode::Full, Blocks::All));
    assert_eq!(m1.counts.bytes_read, size);
    let chunks = size / CHUNK;
    assert_eq!(m1.counts.chunks_total, chunks);

    // 1 % of the device in 64 KiB pieces at distinct aligned offsets.
    let pieces = (size / 100).div_ceil(BLOCK);
    let mut blocks = BTreeSet::new();
    while (blocks.len() as u64) < pieces {
        blocks.insert(rng.u64(..size / BLOCK));
    }
    let writes: Vec<(u8, u64, u64)> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| ((i % 250) as u8 + 1, b * BLOCK, BLOCK))
        .collect();
    nbd_writes(&d.uri("disk"), &writes);
    let touched: BTreeSet<u64> = blocks.iter().map(|b| b * BLOCK / CHUNK).collect();
    let b2 = ctl.backup("disk", &["--mode", "auto", "--no-quiesce"]);
    let m2 = ctl.manifest(&b2.id);
    println!(
        "{}\n  {} writes of 64 KiB ({:.3} % of the device) in {} chunks",
        figures(&m2),
        pieces,
        (pieces * BLOCK) as f64 * 100.0 / size as f64,
        touched.len()
    );
    assert_eq!(
        (m2.mode, m2.parent.as_deref(), m2.full_reason.as_deref()),
        (Mode::Incremental, Some(b1.id.as_str()), None)
    );
    assert_eq!(m2.counts.bytes_read, pieces * BLOCK, "{}", figures(&m2));
    assert!(m2.counts.bytes_read * 50 < size, "{}", figures(&m2));
    assert!(
        m2.counts.chunks_new <= touched.len() as u64,
        "{}",
        figures(&m2)
    );
    assert_eq!(
        m2.counts.chunks_inherited,
        chunks - touched.len() as u64,
        "{}",
        figures(&m2)
    );
    let r2 = dir.join("r2.img");
    ctl.restore(&b2.id, &r2);
    assert_same_file(&r2, &image);
    fs::remove_file(&r2).unwrap();

    // The same amount unaligned (4 KiB-aligned offsets, so most writes straddle two blocks):
    // every block a write touched is read, no more.
    let mut writes = Vec::new();
    let mut blocks = BTreeSet::new();
    for i in 0..pieces {
        let off = rng.u64(..(size - BLOCK) / 4096) * 4096;
        writes.push(((i % 250) as u8 + 1, off, BLOCK));
        blocks.extend(off / BLOCK..(off + BLOCK).div_ceil(BLOCK));
    }
    nbd_writes(&d.uri("disk"), &writes);
    let touched: BTreeSet<u64> = blocks.iter().map(|b| b * BLOCK / CHUNK).collect();
    let b3 = ctl.backup("disk", &["--no-quiesce"]);
    let m3 = ctl.manifest(&b3.id);
    println!(
        "{}\n  {} unaligned writes of 64 KiB touching {} blocks in {} chunks",
        figures(&m3),
        pieces,
        blocks.len(),
        touched.len()
    );
    assert_eq!(
        (m3.mode, m3.parent.as_deref()),
        (Mode::Incremental, Some(b2.id.as_str()))
    );
    assert_eq!(m3.counts.bytes_read, blocks.len() as u64 * BLOCK);
    assert!(m3.counts.bytes_read * 50 < size, "{}", figures(&m3));
    assert!(m3.counts.chunks_new <= touched.len() as u64);
    let r3 = dir.join("r3.img");
    ctl.restore(&b3.id, &r3);
    assert_same_file(&r3, &image);
    println!("1 % change: took {:.1?}", began.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. kill -9, clean stops, and an image changed while cowd was stopped

#[test]
fn kill_9_between_backups_makes_the_next_auto_backup_full() {
    let began = Instant::now();
    let size = 64 * MIB;
    let mut d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill(&image, 0, size, 3);
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let b1 = ctl.backup("disk", &["--no-quiesce"]).id;
    nbd_writes(&d.uri("disk"), &[(0x11, 5 * MIB, BLOCK)]);

    // kill -9: the next auto backup is full, and says why.
    kill_9(&mut d);
    let mut cowd = restart(&d, &image, "cowd2.log");
    let b2 = ctl.backup("disk", &["--no-quiesce"]).id;
    let m2 = ctl.manifest(&b2);
    println!("after kill -9: {}", figures(&m2));
    assert_eq!((m2.mode, m2.parent.as_deref()), (Mode::Full, None));
    let reason = m2.full_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("cowd did not stop cleanly"),
        "full_reason {reason:?}"
    );
    assert_eq!(m2.counts.bytes_read, size);
    let r2 = dir.join("r2.img");
    ctl.restore(&b2, &r2);
    assert_same_file(&r2, &image);

    // A clean stop keeps the map: writes before the stop and after the restart are all that
    // the next auto backup reads.
    nbd_writes(&d.uri("disk"), &[(0x22, 9 * MIB, 2 * BLOCK)]);
    let st = cowd.terminate();
    assert!(st.success(), "cowd after SIGTERM: {st}");
    let mut cowd = restart(&d, &image, "cowd3.log");
    nbd_writes(&d.uri("disk"), &[(0x33, 40 * MIB, BLOCK)]);
    let b3 = ctl.backup("disk", &["--no-quiesce"]).id;
    let m3 = ctl.manifest(&b3);
    println!("after a clean restart: {}", figures(&m3));
    assert_eq!(
        (m3.mode, m3.parent.as_deref(), m3.full_reason.as_deref()),
        (Mode::Incremental, Some(b2.as_str()), None)
    );
    assert_eq!(m3.counts.bytes_read, 3 * BLOCK);
    let r3 = dir.join("r3.img");
    ctl.restore(&b3, &r3);
    assert_same_file(&r3, &image);

    // A clean stop, then the image changes behind cowd's back: full, and the change is in.
    let st = cowd.terminate();
    assert!(st.success(), "cowd after SIGTERM: {st}");
    let changed = dir.join("4k");
    fs::write(&changed, pattern(99, 4096)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    run(Command::new("dd")
        .arg(format!("if={}", changed.display()))
        .arg(format!("of={}", image.display()))
        .args([
            "bs=4096",
            "seek=3000",
            "count=1",
            "conv=notrunc",
            "status=none",
        ]));
    let _cowd = restart(&d, &image, "cowd4.log");
    let b4 = ctl.backup("disk", &["--no-quiesce"]).id;
    let m4 = ctl.manifest(&b4);
    println!("after a change while stopped: {}", figures(&m4));
    assert_eq!((m4.mode, m4.parent.as_deref()), (Mode::Full, None));
    let reason = m4.full_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("changed while cowd was not serving it"),
        "full_reason {reason:?}"
    );
    let r4 = dir.join("r4.img");
    ctl.restore(&b4, &r4);
    assert_eq!(read_at(&r4, 3000 * 4096, 4096), pattern(99, 4096));
    assert_same_file(&r4, &image);
    assert_eq!(ctl.manifests().len(), 4);
    println!(
        "kill -9 and restarts: b1 {b1}; took {:.1?}",
        began.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A raw backup in between

#[test]
fn incremental_refused_when_the_map_counts_from_another_backup() {
    let size = 64 * MIB;
    let d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill(&image, 0, size, 4);
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let b1 = ctl.backup("disk", &["--no-quiesce"]).id;
    nbd_writes(&d.uri("disk"), &[(0x44, 20 * MIB, BLOCK)]);
    let raw = dir.join("raw.img");
    let raw_id = ctl
        .backup_with("disk", &["--to", path_str(&raw), "--no-quiesce"])
        .id;
    assert_same_file(&raw, &image);
    nbd_writes(&d.uri("disk"), &[(0x55, 30 * MIB, BLOCK)]);

    let o = ctl.in_repo(&[
        "start-backup",
        "disk",
        "--mode",
        "incremental",
        "--no-quiesce",
    ]);
    let line = failed(&o, 1);
    println!("refused: {line}");
    assert!(
        line.contains("an incremental backup is not possible"),
        "{line}"
    );
    assert!(
        line.contains(&raw_id) && line.contains(&b1),
        "the refusal does not name both {raw_id} and {b1}: {line}"
    );
    assert_eq!(ctl.manifests().len(), 1);

    let b2 = ctl.backup("disk", &["--mode", "auto", "--no-quiesce"]).id;
    let m2 = ctl.manifest(&b2);
    println!("{}", figures(&m2));
    assert_eq!((m2.mode, m2.parent.as_deref()), (Mode::Full, None));
    let reason = m2.full_reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&raw_id) && reason.contains(&b1),
        "full_reason {reason:?}"
    );
    let r2 = dir.join("r2.img");
    ctl.restore(&b2, &r2);
    assert_same_file(&r2, &image);

    // The map now counts from b2 again.
    nbd_writes(&d.uri("disk"), &[(0x66, 50 * MIB, BLOCK)]);
    let b3 = ctl
        .backup("disk", &["--mode", "incremental", "--no-quiesce"])
        .id;
    let m3 = ctl.manifest(&b3);
    assert_eq!(
        (m3.mode, m3.parent.as_deref(), m3.counts.bytes_read),
        (Mode::Incremental, Some(b2.as_str()), BLOCK)
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A used-only backup of a half-empty ext4

/// `dumpe2fs IMAGE`: (block size, block count, free block ranges `[first, last]` from the
/// group listing).
fn free_ranges(image: &Path) -> (u64, u64, Vec<(u64, u64)>) {
    let out = text(&run(Command::new("dumpe2fs").arg(image).stderr(Stdio::null())).stdout);
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in dumpe2fs output"))
    };
    let (bs, count) = (field("Block size:"), field("Block count:"));
    let mut ranges = Vec::new();
    for l in out.lines() {
        let Some(list) = l.trim_start().strip_prefix("Free blocks: ") else {
            continue;
        };
        if !l.starts_with(' ') {
            continue; // the superblock's count, not a group's list
        }
        for r in list.split(", ").filter(|r| !r.trim().is_empty()) {
            let (a, b) = r.trim().split_once('-').unwrap_or((r.trim(), r.trim()));
            ranges.push((a.parse().unwrap(), b.parse().unwrap()));
        }
    }
    (bs, count, ranges)
}

/// Which 4 KiB pieces of a file hold data (are not in a hole), from SEEK_DATA / SEEK_HOLE.
fn data_pieces(path: &Path) -> Vec<bool> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out = vec![false; len.div_ceil(4096) as usize];
    let mut at = 0i64;
    while (at as u64) < len {
        // SAFETY: lseek(2) on a descriptor we own; it touches no memory.
        let data = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data after `at`
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        assert!(hole > data, "SEEK_HOLE after {data}: {hole}");
        for p in data as u64 / 4096..(hole as u64).div_ceil(4096) {
            out[p as usize] = true;
        }
        at = hole;
    }
    out
}

/// The bytes a used-only backup in blocks of `bs` must read: every block with a used byte,
/// unless it lies wholly in a hole of the image (holes at T are recorded as zeroes unread).
fn expected_read(used: &[bool], data: &[bool], bs: u64) -> u64 {
    let per = (bs / 4096) as usize;
    let blocks = used
        .chunks(per)
        .zip(data.chunks(per))
        .filter(|(u, d)| u.iter().any(|&x| x) && d.iter().any(|&x| x))
        .count();
    blocks as u64 * bs
}

/// The number of 4 KiB pieces of `[start, end)` that are not all zero.
fn nonzero_pieces(f: &File, start: u64, end: u64) -> u64 {
    let mut buf = vec![0u8; MIB as usize];
    let mut n = 0;
    let mut at = start;
    while at < end {
        let len = (end - at).min(MIB) as usize;
        f.read_exact_at(&mut buf[..len], at).unwrap();
        n += buf[..len]
            .chunks(4096)
            .filter(|p| p.iter().any(|&b| b != 0))
            .count() as u64;
        at += len as u64;
    }
    n
}

#[test]
fn used_only_backup_of_a_half_empty_ext4() {
    require_root_and(&["mkfs.ext4", "e2fsck", "dumpe2fs", "mount", "umount"]);
    let began = Instant::now();
    let mut rng = rng("used_only_backup");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let size = 1 << 30;
    let image = dir.join("fs.img");
    File::create(&image).unwrap().set_len(size).unwrap();
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
    let mut att = Attached::default();

    // ~400 MiB of files, then 200 MiB written and deleted: free blocks with data in them.
    let mnt = dir.join("mnt");
    att.mount(&["-o", "loop", path_str(&image)], &mnt);
    let mut files = StaticFiles::new(&mnt.join("data"));
    let mut total = 0;
    let mut i = 0;
    while total < 400 * MIB as usize {
        let len = rng.usize(1..(12 * MIB as usize));
        files.add(&format!("d{}/f{i:03}.bin", i % 7), len);
        total += len;
        i += 1;
    }
    let garbage = mnt.join("garbage");
    {
        let mut f = File::create(&garbage).unwrap();
        for k in 0..50 {
            f.write_all(&pattern(900 + k, 4 * MIB as usize)).unwrap();
        }
        f.sync_all().unwrap();
    }
    fs::remove_file(&garbage).unwrap();
    let want = files.manifest();
    drop(files);
    att.umount(&mnt);
    // mkfs.ext4 allocates the journal as an unwritten extent; SEEK_DATA calls such an extent
    // a hole or data depending on whether its pages are cached, so what is a hole at T would
    // depend on who read the image before. A sparse copy has real holes and data only.
    let made = dir.join("made.img");
    fs::rename(&image, &made).unwrap();
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&made)
        .arg(&image));
    fs::remove_file(&made).unwrap();
    run(Command::new("e2fsck").arg("-fn").arg(&image));
    let (fs_bs, fs_blocks, free) = free_ranges(&image);
    let free_blocks: u64 = free.iter().map(|(a, b)| b - a + 1).sum();
    let used = (fs_blocks - free_blocks) * fs_bs;
    println!(
        "ext4: {} files, {:.1} MiB of file data; {:.1} MiB used of {:.0} MiB ({} free ranges)",
        want.len(),
        total as f64 / MIB as f64,
        used as f64 / MIB as f64,
        size as f64 / MIB as f64,
        free.len()
    );
    let original = File::open(&image).unwrap();
    let garbage_in_free: u64 = free
        .iter()
        .map(|&(a, b)| nonzero_pieces(&original, a * fs_bs, (b + 1) * fs_bs))
        .sum::<u64>()
        * 4096;
    assert!(
        garbage_in_free >= 150 * MIB,
        "only {garbage_in_free} bytes of free blocks hold data"
    );

    // cowd on the unmounted image: a used-only backup (the default), then a full one in 4 KiB
    // blocks (the filesystem's block size).
    let d = start(Daemon::builder().export_path("disk", &image));
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    assert_eq!(fs_bs, 4096);
    let mut used_pieces = vec![true; (size / 4096) as usize];
    for &(a, b) in &free {
        used_pieces[a as usize..=b as usize].fill(false);
    }
    let data = data_pieces(&image);
    let b64 = ctl.backup("disk", &["--no-quiesce"]).id;
    let b4 = ctl
        .backup(
            "disk",
            &["--mode", "full", "--block-size", "4K", "--no-quiesce"],
        )
        .id;
    let (m64, m4) = (ctl.manifest(&b64), ctl.manifest(&b4));
    println!("{}\n{}", figures(&m64), figures(&m4));
    for m in [&m64, &m4] {
        assert_eq!(
            (m.mode, m.blocks, m.filesystem.as_deref()),
            (Mode::Full, Blocks::Used, Some("ext4"))
        );
    }
    let read = m64.counts.bytes_read;
    let used_data = expected_read(&used_pieces, &data, 4096);
    println!(
        "used-only: read {:.1} MiB in 64 KiB blocks, {:.1} MiB in 4 KiB blocks, for {:.1} MiB \
         used ({:+.1} %), of which {:.1} MiB are not holes of the image",
        read as f64 / MIB as f64,
        m4.counts.bytes_read as f64 / MIB as f64,
        used as f64 / MIB as f64,
        (read as f64 / used as f64 - 1.0) * 100.0,
        used_data as f64 / MIB as f64
    );
    assert!(
        read as f64 >= used as f64 * 0.85 && read as f64 <= used as f64 * 1.15,
        "read {read} bytes for {used} bytes used"
    );
    assert!(read < size * 6 / 10, "{}", figures(&m64));
    // Exactly: the blocks holding a used byte, except those wholly in holes of the image.
    assert_eq!(read, expected_read(&used_pieces, &data, BLOCK));
    assert_eq!(m4.counts.bytes_read, used_data);

    // The restores: clean, the same files, zeroes in the free blocks.
    for (id, bs) in [(&b64, BLOCK), (&b4, 4096)] {
        let img = dir.join(format!("restored-{bs}.img"));
        ctl.restore(id, &img);
        run(Command::new("e2fsck").arg("-fn").arg(&img));
        let at = dir.join(format!("restored-{bs}"));
        att.mount(&["-o", "ro,noload,loop", path_str(&img)], &at);
        assert_same_files(&files_under(&at.join("data")), &want, "restored files");
        att.umount(&at);
        assert_eq!(free_ranges(&img).2, free, "the free blocks of the restore");
        // Every free block (in backup blocks: those holding no used byte) is zero; the free
        // filesystem blocks inside a partly used backup block keep what the device held.
        let restored = File::open(&img).unwrap();
        let per = bs / fs_bs;
        let mut whole_free = BTreeSet::new();
        for &(a, b) in &free {
            for blk in a.div_ceil(per)..(b + 1) / per {
                whole_free.insert(blk);
            }
        }
        let mut left = 0;
        for &(a, b) in &free {
            let n = nonzero_pieces(&restored, a * fs_bs, (b + 1) * fs_bs);
            left += n;
        }
        let in_whole_free: u64 = whole_free
            .iter()
            .map(|&blk| nonzero_pieces(&restored, blk * bs, (blk + 1) * bs))
            .sum();
        println!(
            "restore of {id} ({bs}-byte blocks): {:.1} MiB of free filesystem blocks hold data \
             (in partly used backup blocks)",
            (left * 4096) as f64 / MIB as f64
        );
        assert_eq!(
            in_whole_free, 0,
            "free blocks of the filesystem hold data in the restore of {id}"
        );
        if bs == 4096 {
            assert_eq!(left, 0);
        }
    }
    // The filesystem reader agrees with dumpe2fs.
    let dev = cowd::device::FileDevice::open(
        &dir.join("restored-4096.img"),
        cowd::device::FileOptions {
            read_only: true,
            direct: false,
        },
    )
    .unwrap();
    let map = cowd::fs::used_map(&dev).unwrap().expect("an ext4 used map");
    assert_eq!(map.used_bytes, used);
    println!("used-only backup: took {:.1?}", began.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 6. Deduplication across exports

#[test]
fn two_exports_with_the_same_data_are_stored_once() {
    let size = 128 * MIB;
    let d = start(
        Daemon::builder()
            .export("a", size)
            .export("b", size)
            .export("c", size),
    );
    let dir = d.dir().to_owned();
    // 40 MiB of random data, 24 MiB of zeroes, 32 MiB of compressible text, 32 MiB random.
    let text_data: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
        .iter()
        .copied()
        .cycle()
        .take(32 * MIB as usize)
        .collect();
    for name in ["a", "b"] {
        let image = d.image(name).to_owned();
        fill(&image, 0, 40 * MIB, 6);
        File::options()
            .write(true)
            .open(&image)
            .unwrap()
            .write_all_at(&text_data, 64 * MIB)
            .unwrap();
        fill(&image, 96 * MIB, 32 * MIB, 7);
    }
    assert_same_file(d.image("a"), d.image("b"));
    let repo = dir.join("repo");
    let ctl = Ctl::new(&d.control, &repo);
    ctl.init(None);
    let ba = ctl.backup("a", &["--no-quiesce"]).id;
    let after_a = du(&repo.join("chunks"));
    let files_a = chunk_files(&repo);
    let bb = ctl.backup("b", &["--no-quiesce"]).id;
    let after_b = du(&repo.join("chunks"));
    let (ma, mb) = (ctl.manifest(&ba), ctl.manifest(&bb));
    println!(
        "{}\n{}\ndu chunks: {after_a} bytes after a, {after_b} after b",
        figures(&ma),
        figures(&mb)
    );
    let nonzero = mb.counts.chunks_total - mb.counts.chunks_zero;
    assert_eq!((mb.mode, mb.counts.chunks_zero), (Mode::Full, 6));
    assert_eq!(mb.counts.chunks_new, 0, "{}", figures(&mb));
    assert_eq!(mb.counts.chunks_reused, nonzero, "{}", figures(&mb));
    assert!(mb.counts.bytes_new_stored <= 4096, "{}", figures(&mb));
    assert_eq!(chunk_files(&repo), files_a);
    assert_eq!(after_b, after_a);
    // One copy: the non-zero data, the text compressed.
    assert!(
        (72 * MIB..80 * MIB).contains(&after_a),
        "{after_a} bytes of chunks for one copy of 72 MiB of random data and 32 of text"
    );
    assert_eq!(index_digests(&repo, &ba), index_digests(&repo, &bb));

    // A third export with the same data shifted by one chunk: chunk-aligned dedup still finds
    // every chunk.
    let image_c = d.image("c").to_owned();
    {
        let (fa, fc) = (
            File::open(d.image("a")).unwrap(),
            File::options().write(true).open(&image_c).unwrap(),
        );
        let mut buf = vec![0u8; CHUNK as usize];
        for at in (0..size - CHUNK).step_by(CHUNK as usize) {
            fa.read_exact_at(&mut buf, at).unwrap();
            fc.write_all_at(&buf, at + CHUNK).unwrap();
        }
    }
    let bc = ctl.backup("c", &["--no-quiesce"]).id;
    let mc = ctl.manifest(&bc);
    println!("{}", figures(&mc));
    assert_eq!(mc.counts.chunks_new, 0, "{}", figures(&mc));
    assert_eq!(du(&repo.join("chunks")), after_a);
    let r = dir.join("restored-b.img");
    ctl.restore(&bb, &r);
    assert_same_file(&r, d.image("b"));
}

// ---------------------------------------------------------------------------------------------
// 7. verify names the backups a bad chunk breaks

#[test]
fn verify_finds_a_flipped_byte_and_names_the_backups() {
    let size = 64 * MIB;
    let d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    fill(d.image("disk"), 0, size, 7);
    let repo = dir.join("repo");
    let ctl = Ctl::new(&d.control, &repo);
    ctl.init(None);
    let b1 = ctl.backup("disk", &["--no-quiesce"]).id;
    nbd_writes(&d.uri("disk"), &[(0x77, 13 * MIB, MIB)]);
    let b2 = ctl.backup("disk", &["--no-quiesce"]).id;
    nbd_writes(&d.uri("disk"), &[(0x88, 37 * MIB, MIB)]);
    let b3 = ctl.backup("disk", &["--no-quiesce"]).id;
    let (i1, i2, i3) = (
        stored(&index_digests(&repo, &b1)),
        stored(&index_digests(&repo, &b2)),
        stored(&index_digests(&repo, &b3)),
    );
    // Chunk 3 changed for b2 and is inherited by b3.
    let shared: Vec<&String> = i2.intersection(&i3).filter(|c| !i1.contains(*c)).collect();
    assert_eq!(shared.len(), 1, "{shared:?}");
    let digest = shared[0].clone();
    assert_eq!(index_digests(&repo, &b3)[3], digest);
    let (report, code) = ctl.verify_all();
    assert!(report.is_ok() && code == Some(0), "{report:?}");

    let path = chunk_path(&repo, &digest);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let (report, code) = ctl.verify_all();
    println!("verify after the flip: {report:?}");
    assert_eq!(code, Some(1));
    assert!(report.missing.is_empty() && report.bad_indexes.is_empty());
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    let bad = &report.corrupt[0];
    assert_eq!(bad.digest.to_string(), digest);
    assert_eq!(bad.path, path);
    let mut names = bad.backups.clone();
    names.sort();
    let mut want = vec![b2.clone(), b3.clone()];
    want.sort();
    assert_eq!(names, want, "{report:?}");
    // The table names them too; b1 alone is intact.
    let o = ctl.in_repo(&["verify"]);
    let line = failed(&o, 1);
    assert!(line.contains("1 corrupt chunk"), "{line}");
    let out = text(&o.stdout);
    assert!(out.contains(&format!("corrupt chunk {digest}\n")), "{out}");
    let breaks: BTreeSet<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("  breaks:  "))
        .unwrap_or_else(|| panic!("{out}"))
        .split(", ")
        .collect();
    assert_eq!(breaks, BTreeSet::from([b2.as_str(), b3.as_str()]), "{out}");
    ok(&ctl.in_repo(&["verify", &b1]));
    let line = failed(&ctl.in_repo(&["verify", &b3]), 1);
    assert!(line.contains("1 corrupt chunk"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// 8. prune and gc

#[test]
fn prune_keeps_the_policy_and_gc_removes_only_unreferenced_chunks() {
    let size = 64 * MIB;
    let d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill(&image, 0, 48 * MIB, 8);
    let repo = dir.join("repo");
    let ctl = Ctl::new(&d.control, &repo);
    ctl.init(None);
    let mut ids = Vec::new();
    let mut refs = Vec::new();
    for i in 0..5u64 {
        if i > 0 {
            // Chunk 0 changes every time; chunk 2 + 2i is new data; chunk 15 changes twice.
            let mut w = vec![
                (i as u8, 0, BLOCK),
                (0x40 + i as u8, (2 + 2 * i) * CHUNK, MIB),
            ];
            if i == 2 || i == 4 {
                w.push((0x80 + i as u8, 15 * CHUNK, CHUNK));
            }
            nbd_writes(&d.uri("disk"), &w);
        }
        ids.push(ctl.backup("disk", &["--no-quiesce"]).id);
        let r = dir.join(format!("ref{i}.img"));
        fs::copy(&image, &r).unwrap();
        refs.push(r);
    }
    let idx: Vec<BTreeSet<String>> = ids
        .iter()
        .map(|id| stored(&index_digests(&repo, id)))
        .collect();
    let before = chunk_files(&repo);
    let all: BTreeSet<String> = idx.iter().flatten().cloned().collect();
    assert_eq!(
        before, all,
        "chunk files = the chunks the backups reference"
    );

    let dry: PruneResult = serde_json::from_str(&ok(&ctl.in_repo(&[
        "--json",
        "prune",
        "disk",
        "--keep-last",
        "2",
        "--dry-run",
    ])))
    .unwrap();
    assert!(dry.removed.is_empty());
    assert_eq!(chunk_files(&repo), before);
    let res: PruneResult = serde_json::from_str(&ok(&ctl.in_repo(&[
        "--json",
        "prune",
        "disk",
        "--keep-last",
        "2",
    ])))
    .unwrap();
    println!("prune: {res:?}");
    let kept: BTreeSet<&str> = res.keep.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(kept, BTreeSet::from([ids[3].as_str(), ids[4].as_str()]));
    let removed: BTreeSet<&str> = res.removed.iter().map(String::as_str).collect();
    assert_eq!(
        removed,
        BTreeSet::from([ids[0].as_str(), ids[1].as_str(), ids[2].as_str()])
    );
    assert_eq!(dry.remove, res.remove);
    let left: Vec<String> = ctl.manifests().into_iter().map(|m| m.id).collect();
    assert_eq!(left, ids[3..]);

    let after = chunk_files(&repo);
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    let needed: BTreeSet<String> = idx[3].union(&idx[4]).cloned().collect();
    let only_removed: BTreeSet<String> = idx[..3]
        .iter()
        .flatten()
        .filter(|c| !needed.contains(*c))
        .cloned()
        .collect();
    println!(
        "gc: {} chunks before, {} removed ({} only in removed backups), {} left, {} needed",
        before.len(),
        gone.len(),
        only_removed.len(),
        after.len(),
        needed.len()
    );
    let missing: Vec<&String> = needed.difference(&after).collect();
    assert!(
        missing.is_empty(),
        "chunks of kept backups removed: {missing:?}"
    );
    assert_eq!(
        gone, only_removed,
        "gc removed other chunks than the unreferenced ones"
    );
    assert_eq!(after, needed);
    assert_eq!(res.gc.chunks_removed, gone.len() as u64);
    assert!(!gone.is_empty());

    let (report, code) = ctl.verify_all();
    assert!(report.is_ok() && code == Some(0), "{report:?}");
    assert_eq!(report.backups_checked, 2);
    for i in 3..5 {
        let r = dir.join(format!("restored{i}.img"));
        ctl.restore(&ids[i], &r);
        assert_same_file(&r, &refs[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// 9. A generation served and mounted

#[test]
fn serve_a_generation_and_mount_it() {
    require_root_and(&[
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "mount",
        "umount",
    ]);
    let mut rng = rng("serve_a_generation");
    let d = start(Daemon::builder().export("disk", 256 * MIB));
    let dir = d.dir().to_owned();
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let mut att = Attached::default();
    let mnt = dir.join("mnt");
    let nbd = att.nbdfuse(&dir.join("fuse"), &d.uri("disk"));
    let dev = att.losetup(&nbd);
    run(Command::new("mkfs.ext4").args(["-q", "-F", &dev]));
    att.mount(&[&dev], &mnt);
    let mut files = StaticFiles::new(&mnt.join("files"));
    for i in 0..12 {
        files.add(&format!("f{i}.bin"), rng.usize(1..(3 << 20)));
    }
    let gen1 = ctl.backup("disk", &["--freeze", path_str(&mnt)]).id;
    let want1 = files.manifest();
    change_files(&mut files, 1, &mut rng);
    let gen2 = ctl.backup("disk", &["--freeze", path_str(&mnt)]).id;
    assert_ne!(files.manifest(), want1);

    let out = ok(&ctl.in_repo(&["serve", &gen1, "--export", "gen1"]));
    println!("{}", out.trim());
    let exports: Vec<ExportInfo> =
        serde_json::from_str(&ok(&ctl.run(&["--json", "exports"]))).unwrap();
    let e = exports.iter().find(|e| e.name == "gen1").expect("gen1");
    assert!(e.read_only && e.size == 256 * MIB, "{e:?}");
    let fuse1 = dir.join("fuse-gen1");
    let nbd1 = att.nbdfuse(&fuse1, &d.uri("gen1"));
    let dev1 = att.losetup_read_only(&nbd1);
    let at = dir.join("gen1");
    att.mount(&["-o", "ro,noload", &dev1], &at);
    assert_same_files(
        &files_under(&at.join("files")),
        &want1,
        "generation 1 served",
    );
    // Not while it is in use.
    let line = failed(&ctl.run(&["unserve", "gen1"]), 1);
    assert!(line.contains("connected"), "{line}");
    att.umount(&at);
    att.detach(&dev1);
    att.unfuse(&fuse1);
    // nbdfuse has exited; its connection may take a moment to be gone in cowd.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = ctl.run(&["unserve", "gen1"]);
        if o.status.success() {
            println!("{}", text(&o.stdout).trim());
            break;
        }
        let line = failed(&o, 1);
        assert!(
            line.contains("connected") && Instant::now() < deadline,
            "{line}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let exports = ok(&ctl.run(&["exports"]));
    assert!(!exports.contains("gen1"), "{exports}");
    println!("served {gen1} (gen2 {gen2}) and mounted it");
}
