//! `cowctl`'s repository commands against a real daemon: `repo init`, `start-backup` into a
//! repository (full, then incremental after writes through NBD), `backups`, `verify` (also of a
//! corrupted chunk), `restore`, `serve`/`unserve` and `prune` with its garbage collection.
//!
//! Nothing writes an image while it is backed up, and `--wait` returns once the backup is
//! complete, so a copy of the image file taken right after a backup is what that backup holds.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cowd::control::api::{
    ExportInfo, Manifest, PruneResult, RepoInfo, RestoreState, RestoreStatus, VerifyReport,
};
use cowd::repo::{Blocks, Mode};
use cowd_tests::cli::{cowctl, failed, ok, path_str, start, stderr, stdout};
use cowd_tests::files::assert_same_file;
use cowd_tests::mounts::mkfs_ext4;
use cowd_tests::{Daemon, bin, nbd_writes, pattern, require, run};

const MIB: u64 = 1 << 20;

/// Random-looking data in a few regions of a sparse image: 3 MiB at 0, 5 MiB and 33 MiB,
/// 1 MiB at 60 MiB: 10 MiB in chunks 0, 1, 8 and 15 of 4 MiB; the other 12 chunks are zero.
fn scatter_data(image: &Path) {
    let f = File::options().write(true).open(image).unwrap();
    for (i, (off, len)) in [
        (0, 3 * MIB),
        (5 * MIB, 3 * MIB),
        (33 * MIB, 3 * MIB),
        (60 * MIB, MIB),
    ]
    .into_iter()
    .enumerate()
    {
        f.write_all_at(&pattern(i as u64 + 7, len as usize), off)
            .unwrap();
    }
}

/// The manifests of the repository, as `cowctl backups --json` prints them.
fn manifests(d: &Daemon, extra: &[&str]) -> Vec<Manifest> {
    let args: Vec<&str> = ["backups", "--json"].iter().chain(extra).copied().collect();
    let text = ok(&cowctl(d, &args));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The rows of a `cowctl backups` table (header checked), as words, with the indented lines
/// under each row.
fn backups_rows(table: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "TIME", "(UTC)", "MODE", "SIZE", "READ", "NEW", "DURATION"
        ],
        "{table}"
    );
    let mut rows: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for l in lines {
        if let Some(more) = l.strip_prefix("  ") {
            rows.last_mut()
                .expect("a row first")
                .1
                .push(more.to_owned());
        } else {
            rows.push((
                l.split_whitespace().map(str::to_owned).collect(),
                Vec::new(),
            ));
        }
    }
    rows
}

/// Runs `cowctl start-backup EXPORT ARGS... --no-quiesce --wait` and returns the backup id.
fn backup(d: &Daemon, export: &str, args: &[&str]) -> String {
    let mut all = vec!["start-backup", export];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--no-quiesce", "--wait"]);
    let out = ok(&cowctl(d, &all));
    let first = out.lines().next().unwrap();
    let id = first
        .strip_prefix("backup ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    assert!(
        out.contains(&format!("backup {id} of {export} done in ")),
        "{out}"
    );
    assert!(out.contains("  target:              repository "), "{out}");
    id
}

/// Writes through NBD with qemu-io: `write -P BYTE OFFSET LENGTH`.
fn nbd_write(d: &Daemon, byte: u8, offset: u64, len: u64) {
    nbd_writes(&d.uri("disk"), &[(byte, offset, len)]);
}

/// Chunk files of a repository with their sizes.
fn chunk_files(repo: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for dir in fs::read_dir(repo.join("chunks")).unwrap() {
        for f in fs::read_dir(dir.unwrap().path()).unwrap() {
            let f = f.unwrap();
            out.push((f.path(), f.metadata().unwrap().len()));
        }
    }
    out
}

/// The `N` of `... removed N chunk(s), ...`.
fn number_before(text: &str, marker: &str) -> u64 {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in\n{text}"));
    text[at + marker.len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {marker:?} in\n{text}"))
}

#[test]
fn repo_init_and_refusals() {
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    let repo = d.dir().join("repo");
    let out = ok(&cowctl(&d, &["repo", "init", path_str(&repo)]));
    let prefix = format!(
        "repository {} created (format 2, chunk size 4.0 MiB, zstd level 1, id ",
        path_str(&repo)
    );
    assert!(out.starts_with(&prefix) && out.ends_with(")\n"), "{out}");
    assert!(repo.join("config.json").is_file());
    let line = failed(&cowctl(&d, &["repo", "init", path_str(&repo)]), 1);
    assert_eq!(
        line,
        format!("cowctl: {} is already a repository", path_str(&repo))
    );
    // A non-empty directory, then a relative path (sent absolute) with --json.
    let full = d.dir().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), b"x").unwrap();
    let line = failed(&cowctl(&d, &["repo", "init", path_str(&full)]), 1);
    assert_eq!(
        line,
        format!(
            "cowctl: {} is not empty and is not a repository; refusing to create one there",
            path_str(&full)
        )
    );
    let o = Command::new(bin("cowctl"))
        .current_dir(d.dir())
        .args(["--socket", path_str(&d.control), "--json", "repo", "init"])
        .args(["small", "--chunk-size", "64K", "--compression-level", "-3"])
        .output()
        .unwrap();
    let info: RepoInfo = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(info.path, path_str(&d.dir().join("small")));
    assert_eq!(info.chunk_size, 65536);
    assert_eq!(info.compression_level, -3);
    assert!(!info.id.is_empty());
    let odd = d.dir().join("odd");
    let line = failed(
        &cowctl(
            &d,
            &["repo", "init", path_str(&odd), "--compression-level", "20"],
        ),
        1,
    );
    assert_eq!(
        line,
        "cowctl: compression level 20 is out of range: give -7 to 19"
    );
    let line = failed(
        &cowctl(
            &d,
            &[
                "repo",
                "init",
                path_str(&d.dir().join("odd")),
                "--chunk-size",
                "96K",
            ],
        ),
        1,
    );
    assert!(line.contains("chunk size 98304 is invalid"), "{line}");

    // An empty repository.
    let r = path_str(&repo);
    assert_eq!(ok(&cowctl(&d, &["backups", "--repo", r])), "no backups\n");
    assert_eq!(
        ok(&cowctl(&d, &["backups", "disk", "--repo", r])),
        "no backups of disk\n"
    );
    assert_eq!(ok(&cowctl(&d, &["--json", "backups", "--repo", r])), "[]\n");
    assert_eq!(
        ok(&cowctl(&d, &["verify", "--repo", r])),
        "no backups to verify\n"
    );
    let line = failed(&cowctl(&d, &["verify", "nope", "--repo", r]), 1);
    assert_eq!(line, "cowctl: no backup \"nope\" in the repository");

    // No default repository in this daemon.
    for cmd in [
        &["backups"][..],
        &["verify"],
        &["prune", "disk", "--keep-last", "1"],
        &["serve", "x", "--export", "y"],
    ] {
        let line = failed(&cowctl(&d, cmd), 1);
        assert_eq!(
            line, "cowctl: no repository given and none configured (--repo DIR)",
            "{cmd:?}"
        );
    }
    let line = failed(&cowctl(&d, &["start-backup", "disk", "--no-quiesce"]), 1);
    assert_eq!(
        line,
        "cowctl: no target: give --to PATH or --repo DIR (or configure a default repository)"
    );
    let out = d.dir().join("nothing.img");
    let line = failed(
        &cowctl(
            &d,
            &["restore", "nope", "--to", path_str(&out), "--repo", r],
        ),
        1,
    );
    assert_eq!(line, "cowctl: no backup \"nope\" in the repository");
    assert!(!out.exists());
    let line = failed(
        &cowctl(&d, &["serve", "nope", "--export", "old", "--repo", r]),
        1,
    );
    assert_eq!(line, "cowctl: no backup \"nope\" in the repository");
    let line = failed(&cowctl(&d, &["unserve", "disk"]), 1);
    assert!(line.contains("serves a device, not a backup"), "{line}");
    let line = failed(&cowctl(&d, &["unserve", "nope"]), 1);
    assert_eq!(line, "cowctl: no export named \"nope\"");

    // prune: no rule is a usage error (nothing sent); all rules 0 is refused by the daemon.
    let line = failed(&cowctl(&d, &["prune", "disk", "--repo", r]), 2);
    assert_eq!(
        line,
        "cowctl: give at least one of --keep-last, --keep-hourly, --keep-daily, \
         --keep-weekly, --keep-monthly, --keep-yearly, --keep-within: a prune without a keep \
         rule would keep every backup"
    );
    let line = failed(
        &cowctl(&d, &["prune", "disk", "--keep-last", "0", "--repo", r]),
        1,
    );
    assert!(line.contains("keeps no backup"), "{line}");
    // An incremental backup with nothing to be incremental to.
    let line = failed(
        &cowctl(
            &d,
            &[
                "start-backup",
                "disk",
                "--repo",
                r,
                "--mode",
                "incremental",
                "--no-quiesce",
            ],
        ),
        1,
    );
    assert!(
        line.contains("an incremental backup is not possible: no earlier backup"),
        "{line}"
    );
    assert_eq!(ok(&cowctl(&d, &["backups", "--repo", r])), "no backups\n");

    // Usage errors: exit 2.
    for cmd in [
        &["start-backup", "disk", "--to", "/x", "--repo", r][..],
        &["start-backup", "disk", "--to", "/x", "--mode", "full"],
        &["start-backup", "disk", "--to", "/x", "--blocks", "all"],
        &["start-backup", "disk", "--repo", r, "--mode", "sometimes"],
        &["verify", "a", "--all"],
        &["restore", "a"],
        &["serve", "a"],
        &["repo", "init"],
        &["repo", "init", "/x", "--chunk-size", "lots"],
    ] {
        let o = cowctl(&d, cmd);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {}", stderr(&o));
    }
    let help = ok(&Command::new(bin("cowctl")).arg("--help").output().unwrap());
    for c in [
        "repo", "backups", "verify", "prune", "restore", "restores", "serve", "unserve",
    ] {
        assert!(help.contains(c), "--help lacks {c}:\n{help}");
    }
}

#[test]
fn full_then_incremental_verify_restore_serve_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let r = path_str(&repo).to_owned();
    // The repository is also the daemon's default (it may be created after the daemon).
    let d = start(
        Daemon::builder()
            .export("disk", 64 * MIB)
            .args(&["--repo", &r]),
    );
    let image = d.image("disk").to_owned();
    scatter_data(&image);
    ok(&cowctl(&d, &["repo", "init", &r]));

    // A full backup (the first one; auto mode, explicit repository).
    let b1 = backup(&d, "disk", &["--repo", &r]);
    let ref1 = d.dir().join("ref1.img");
    fs::copy(&image, &ref1).unwrap();
    let table = ok(&cowctl(&d, &["backups", "--repo", &r]));
    let rows = backups_rows(&table);
    assert_eq!(rows.len(), 1, "{table}");
    let (row, more) = &rows[0];
    assert_eq!(row[0], b1, "{table}");
    // ID, date, time, "full all", then SIZE READ NEW (number and unit each), DURATION.
    assert_eq!(row[3..5], ["full", "all"], "{table}");
    assert_eq!(row[5..7], ["64.0", "MiB"], "{table}");
    assert_eq!(row[7..9], ["10.0", "MiB"], "{table}");
    assert_eq!(
        more,
        &["full because no earlier backup of this export in the repository"],
        "{table}"
    );
    let list = manifests(&d, &[]);
    assert_eq!(list.len(), 1);
    let m1 = &list[0];
    assert_eq!((m1.id.as_str(), m1.export.as_str()), (b1.as_str(), "disk"));
    assert_eq!(
        (m1.mode, m1.blocks, m1.parent.as_deref()),
        (Mode::Full, Blocks::All, None)
    );
    assert_eq!(m1.device_size, 64 * MIB);
    assert_eq!((m1.counts.chunks_total, m1.counts.chunks_new), (16, 4));
    assert_eq!(m1.counts.chunks_zero, 12);
    assert_eq!(m1.counts.bytes_read, 10 * MIB);
    // The table's time is the manifest's, to the second.
    let time = cowd::repo::rfc3339::format(m1.snapshot_time);
    assert_eq!(
        format!("{} {}", row[1], row[2]),
        time[..19].replace('T', " ")
    );

    // Change 2 MiB of chunk 0 and 1 MiB of the zero chunk 10 through NBD, then an
    // incremental backup into the daemon's default repository.
    nbd_write(&d, 0xab, MIB, 2 * MIB);
    nbd_write(&d, 0xcd, 40 * MIB, MIB);
    let b2 = backup(&d, "disk", &["--mode", "incremental"]);
    let ref2 = d.dir().join("ref2.img");
    fs::copy(&image, &ref2).unwrap();
    let list = manifests(&d, &["--repo", &r]);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0], *m1);
    let m2 = &list[1];
    assert_eq!(m2.id, b2);
    assert_eq!(
        (m2.mode, m2.parent.as_deref()),
        (Mode::Incremental, Some(b1.as_str()))
    );
    assert_eq!(m2.full_reason, None);
    assert!(m2.counts.chunks_inherited > 0, "{:?}", m2.counts);
    assert_eq!(m2.counts.chunks_inherited, 14, "{:?}", m2.counts);
    // Only the blocks written since b1 are read.
    assert_eq!(m2.counts.bytes_read, 3 * MIB, "{:?}", m2.counts);
    assert_eq!(m2.counts.chunks_new, 2, "{:?}", m2.counts);
    let table = ok(&cowctl(&d, &["backups", "disk"]));
    let rows = backups_rows(&table);
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(rows[1].0[0], b2, "{table}");
    assert_eq!(rows[1].0[3..5], ["incr", "all"], "{table}");
    assert_eq!(rows[1].1, [format!("parent: {b1}")], "{table}");
    assert_eq!(
        ok(&cowctl(&d, &["backups", "other"])),
        "no backups of other\n"
    );

    // verify: everything, then one backup.
    let out = ok(&cowctl(&d, &["verify"]));
    // b1's 4 chunks, and b2's new chunks 0 and 10.
    assert_eq!(out, "all 2 backups verified: 6 chunks, 24.0 MiB\n");
    let out = ok(&cowctl(&d, &["verify", &b2, "--repo", &r]));
    assert_eq!(out, "1 backup verified: 5 chunks, 20.0 MiB\n");
    let report: VerifyReport =
        serde_json::from_str(&ok(&cowctl(&d, &["--json", "verify", "--all"]))).unwrap();
    assert!(report.is_ok());
    assert_eq!((report.backups_checked, report.chunks_checked), (2, 6));

    // restore: each backup equals the image when it was taken.
    let r1 = d.dir().join("restored1.img");
    let out = ok(&cowctl(&d, &["restore", &b1, "--to", path_str(&r1)]));
    let mut lines = out.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("restore restore-")
            && first.contains(&format!(
                " of backup {b1} to {} started: 16 chunks",
                path_str(&r1)
            )),
        "{out}"
    );
    assert!(out.contains(&format!(" of backup {b1} done in ")), "{out}");
    assert!(out.contains("  chunks:  16/16 (100%)\n"), "{out}");
    // Whole chunks of data; the zero ones are holes.
    assert!(out.contains("  written: 16.0 MiB of data at "), "{out}");
    assert_same_file(&r1, &ref1);
    let r2 = d.dir().join("restored2.img");
    let text = ok(&cowctl(
        &d,
        &[
            "--json",
            "restore",
            &b2,
            "--to",
            path_str(&r2),
            "--repo",
            &r,
        ],
    ));
    let docs: Vec<RestoreStatus> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(docs.len(), 2, "{text}");
    assert_eq!(docs[0].id, docs[1].id);
    assert_eq!(docs[1].state, RestoreState::Done);
    assert_eq!(docs[1].chunks_done, 16);
    assert_same_file(&r2, &ref2);
    // --no-wait: the start line only; `restores` lists every restore.
    let r3 = d.dir().join("restored3.img");
    let out = ok(&cowctl(
        &d,
        &["restore", &b2, "--to", path_str(&r3), "--no-wait"],
    ));
    assert_eq!(out.lines().count(), 1, "{out}");
    let list: Vec<RestoreStatus> =
        serde_json::from_str(&ok(&cowctl(&d, &["--json", "restores"]))).unwrap();
    assert_eq!(list.len(), 3);
    let table = ok(&cowctl(&d, &["restores"]));
    assert!(table.starts_with("ID "), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    // serve: the backup as a read-only export equal to the image at its time.
    require("nbdinfo");
    require("nbdcopy");
    let out = ok(&cowctl(&d, &["serve", &b1, "--export", "old"]));
    assert_eq!(
        out,
        format!("export old serves backup {b1} from repository {r} (64.0 MiB, read-only)\n")
    );
    let exports: Vec<ExportInfo> =
        serde_json::from_str(&ok(&cowctl(&d, &["--json", "exports"]))).unwrap();
    let old = exports
        .iter()
        .find(|e| e.name == "old")
        .expect("old listed");
    assert!(old.read_only && old.size == 64 * MIB);
    let size = run(Command::new("nbdinfo").args(["--size", &d.uri("old")])).stdout;
    assert_eq!(
        String::from_utf8_lossy(&size).trim(),
        (64 * MIB).to_string()
    );
    let served = d.dir().join("served.img");
    run(Command::new("nbdcopy").arg(d.uri("old")).arg(&served));
    assert_same_file(&served, &ref1);
    let line = failed(&cowctl(&d, &["serve", &b2, "--export", "old"]), 1);
    assert!(line.contains("old"), "{line}");
    let out = ok(&cowctl(&d, &["unserve", "old"]));
    assert_eq!(
        out,
        format!("export old removed (it served backup {b1} from repository {r})\n")
    );
    let exports = ok(&cowctl(&d, &["exports"]));
    assert!(!exports.contains("old"), "{exports}");
    let gone = Command::new("nbdinfo")
        .args(["--size", &d.uri("old")])
        .output()
        .unwrap();
    assert!(!gone.status.success());

    // A corrupt chunk: verify names it and the backups it breaks, and exits 1; a restore
    // that needs it fails.
    let (chunk, _) = chunk_files(&repo)
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .unwrap();
    let digest = chunk.file_name().unwrap().to_str().unwrap().to_owned();
    let good = fs::read(&chunk).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    fs::write(&chunk, &bad).unwrap();
    let o = cowctl(&d, &["verify"]);
    let line = failed(&o, 1);
    assert!(
        line.starts_with(
            "cowctl: verification failed: 1 corrupt chunk, 0 missing chunks, 0 bad indexes ("
        ),
        "{line}"
    );
    let out = stdout(&o);
    assert!(
        out.starts_with("checked 2 backups: 6 chunks read, 20.0 MiB verified\n"),
        "{out}"
    );
    assert!(out.contains(&format!("corrupt chunk {digest}\n")), "{out}");
    assert!(
        out.contains(&format!("  path:    {}\n", path_str(&chunk))),
        "{out}"
    );
    let breaks: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("  breaks:  "))
        .unwrap_or_else(|| panic!("{out}"))
        .split(", ")
        .collect();
    assert!(!breaks.is_empty(), "{out}");
    assert!(
        breaks.iter().all(|b| *b == b1 || *b == b2),
        "{breaks:?}\n{out}"
    );
    let report: VerifyReport =
        serde_json::from_str(&stdout(&cowctl(&d, &["--json", "verify"]))).unwrap();
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].digest.to_string(), digest);
    assert_eq!(report.corrupt[0].backups, breaks);
    let broken = d.dir().join("broken.img");
    let o = cowctl(&d, &["restore", breaks[0], "--to", path_str(&broken)]);
    let line = failed(&o, 1);
    assert!(
        line.starts_with("cowctl: restore restore-") && line.contains(" failed: "),
        "{line}"
    );
    assert!(stdout(&o).contains("  reason:  "), "{}", stdout(&o));
    assert!(!broken.exists(), "a failed restore left its target");
    fs::write(&chunk, &good).unwrap();
    ok(&cowctl(&d, &["verify"]));

    // prune: the dry run changes nothing; keeping the last one removes the first backup, and
    // gc removes the chunk only it used (the old chunk 0).
    let chunks_before = chunk_files(&repo).len();
    let out = ok(&cowctl(
        &d,
        &["prune", "disk", "--keep-last", "1", "--dry-run"],
    ));
    assert!(
        out.starts_with(&format!("keep          {b2} (last)\nwould remove  {b1}\n")),
        "{out}"
    );
    assert!(out.contains("gc (dry run): "), "{out}");
    assert_eq!(manifests(&d, &[]).len(), 2);
    assert_eq!(chunk_files(&repo).len(), chunks_before);
    let out = ok(&cowctl(
        &d,
        &["prune", "disk", "--keep-last", "1", "--repo", &r],
    ));
    assert!(
        out.starts_with(&format!(
            "keep     {b2} (last)\nremoved  {b1}\ngc: removed "
        )),
        "{out}"
    );
    let removed = number_before(&out, "gc: removed ");
    assert_eq!(removed, 1, "{out}");
    assert!(out.contains("; 5 chunks still in use\n"), "{out}");
    assert_eq!(
        chunk_files(&repo).len() as u64,
        chunks_before as u64 - removed
    );
    let list = manifests(&d, &[]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, b2);
    let table = ok(&cowctl(&d, &["backups"]));
    assert!(
        table.ends_with(&format!("\n  parent: {b1} (removed)\n")),
        "{table}"
    );
    // Nothing more to remove, as JSON.
    let again: PruneResult = serde_json::from_str(&ok(&cowctl(
        &d,
        &["--json", "prune", "disk", "--keep-last", "1"],
    )))
    .unwrap();
    assert_eq!(again.keep.len(), 1);
    assert_eq!(again.keep[0].id, b2);
    assert!(again.remove.is_empty() && again.removed.is_empty());
    assert_eq!(again.gc.chunks_removed, 0);
    // What is left is intact and restores as before.
    let out = ok(&cowctl(&d, &["verify"]));
    assert_eq!(out, "1 backup verified: 5 chunks, 20.0 MiB\n");
    let r4 = d.dir().join("restored4.img");
    ok(&cowctl(&d, &["restore", &b2, "--to", path_str(&r4)]));
    assert_same_file(&r4, &ref2);

    // On a terminal (a pty from script(1)) a restore shows a bar, then the same summary.
    require("script");
    let r5 = d.dir().join("restored5.img");
    let cmd = format!(
        "{} --socket {} restore {b2} --to {}",
        bin("cowctl").display(),
        d.control.display(),
        r5.display()
    );
    let tty = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = ok(&tty);
    assert!(
        text.contains(&format!(" of backup {b2} done in ")),
        "{text}"
    );
    assert_same_file(&r5, &ref2);
}

#[test]
fn used_blocks_of_ext4_and_explicit_modes() {
    require("mkfs.ext4");
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    mkfs_ext4(d.image("disk"));
    let repo = d.dir().join("repo");
    let r = path_str(&repo);
    ok(&cowctl(&d, &["repo", "init", r, "--chunk-size", "1M"]));
    let b1 = backup(&d, "disk", &["--repo", r]);
    let b2 = backup(
        &d,
        "disk",
        &["--repo", r, "--mode", "full", "--blocks", "all"],
    );
    let b3 = backup(
        &d,
        "disk",
        &["--repo", r, "--mode", "auto", "--blocks", "used"],
    );
    let list = manifests(&d, &["--repo", r, "disk"]);
    let ids: Vec<&str> = list.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [&b1, &b2, &b3]);
    assert_eq!(
        (list[0].mode, list[0].blocks, list[0].filesystem.as_deref()),
        (Mode::Full, Blocks::Used, Some("ext4"))
    );
    assert_eq!((list[1].mode, list[1].blocks), (Mode::Full, Blocks::All));
    // Asked for, no reason to give.
    assert_eq!(list[1].full_reason, None);
    assert_eq!(list[1].chunk_size, 1 << 20);
    // Nothing was written since b2: b3 is incremental.
    assert_eq!(
        (list[2].mode, list[2].parent.as_deref()),
        (Mode::Incremental, Some(b2.as_str()))
    );
    assert_eq!(list[2].counts.bytes_read, 0);
    let table = ok(&cowctl(&d, &["backups", "--repo", r]));
    let rows = backups_rows(&table);
    assert_eq!(rows[0].0[3..6], ["full", "used", "ext4"], "{table}");
    assert_eq!(rows[1].0[3..5], ["full", "all"], "{table}");
    assert!(rows[1].1.is_empty(), "{table}");
    assert_eq!(rows[2].0[3..6], ["incr", "used", "ext4"], "{table}");
    assert_eq!(rows[2].1, [format!("parent: {b2}")], "{table}");
    assert!(ok(&cowctl(&d, &["verify", "--repo", r])).starts_with("all 3 backups verified: "));
}

#[test]
fn commands_taking_a_backup_id_find_the_repository_the_daemon_made_it_in() {
    let d = start(Daemon::builder().export("disk", 8 << 20));
    fs::write(d.image("disk"), pattern(5, 8 << 20)).unwrap();
    let repo = d.dir().join("repo");
    let r = path_str(&repo);
    ok(&cowctl(&d, &["repo", "init", r]));
    let out = ok(&cowctl(
        &d,
        &[
            "--json",
            "start-backup",
            "disk",
            "--repo",
            r,
            "--no-quiesce",
            "--wait",
        ],
    ));
    let status: serde_json::Value = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .last()
        .unwrap()
        .unwrap();
    assert_eq!(status["repo"].as_str(), Some(r), "{status}");
    let id = status["id"].as_str().unwrap().to_owned();
    // No --repo, and the daemon has no default repository.
    let to = d.dir().join("r.img");
    ok(&cowctl(&d, &["restore", &id, "--to", path_str(&to)]));
    assert_eq!(fs::read(&to).unwrap(), fs::read(d.image("disk")).unwrap());
    ok(&cowctl(&d, &["verify", &id]));
    ok(&cowctl(&d, &["serve", &id, "--export", "old"]));
}
