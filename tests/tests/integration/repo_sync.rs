//! `cowctl repo sync` and `repo repair` against a real daemon: backups copied to a second
//! repository with only the chunks it lacks, restored exactly from there; a dry run, a second
//! sync with nothing to do, a retention policy choosing what to copy, and the refusals; then
//! damaged and missing chunks repaired from the copy, and what no copy holds named and removed.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cowd::control::api::SyncReport;
use cowd_tests::cli::{backup_into, cowctl, failed, ok, path_str, start};
use cowd_tests::files::assert_same_file;
use cowd_tests::{Daemon, MIB, nbd_writes, pattern};

/// A backup of `disk` into `repo`; its id.
fn backup(d: &Daemon, repo: &str) -> String {
    backup_into(d, "disk", repo)
}

/// A daemon with export `disk` (32 MiB), repositories `a` and `b` in its directory, and two
/// backups in `a`: a full one of 6 MiB at 0 and 2 MiB at 20 MiB (chunks 0, 1 and 5 of 4 MiB),
/// then an incremental one after 1 MiB written at 4 MiB (chunk 1); each with a copy of the
/// image as it held.
struct Setup {
    d: Daemon,
    a: String,
    b: String,
    backups: [(String, PathBuf); 2],
}

fn setup() -> Setup {
    let d = start(Daemon::builder().export("disk", 32 * MIB));
    let image = d.image("disk").to_owned();
    let f = fs::File::options().write(true).open(&image).unwrap();
    f.write_all_at(&pattern(1, (6 * MIB) as usize), 0).unwrap();
    f.write_all_at(&pattern(2, (2 * MIB) as usize), 20 * MIB)
        .unwrap();
    let (a, b) = (d.dir().join("a"), d.dir().join("b"));
    let (a, b) = (path_str(&a).to_owned(), path_str(&b).to_owned());
    ok(&cowctl(&d, &["repo", "init", &a]));
    ok(&cowctl(&d, &["repo", "init", &b]));
    let b1 = backup(&d, &a);
    let ref1 = d.dir().join("ref1.img");
    fs::copy(&image, &ref1).unwrap();
    nbd_writes(&d.uri("disk"), &[(0x5a, 4 * MIB, MIB)]);
    let b2 = backup(&d, &a);
    let ref2 = d.dir().join("ref2.img");
    fs::copy(&image, &ref2).unwrap();
    Setup {
        d,
        a,
        b,
        backups: [(b1, ref1), (b2, ref2)],
    }
}

/// Restores `id` from `repo` and compares it with `reference`.
fn restores_exactly(d: &Daemon, repo: &str, id: &str, reference: &Path) {
    let out = d.dir().join(format!("{id}-{}.img", fastrand::u32(..)));
    ok(&cowctl(
        d,
        &["restore", id, "--repo", repo, "--to", path_str(&out)],
    ));
    assert_same_file(&out, reference);
    fs::remove_file(&out).unwrap();
}

/// The chunk files of repository `repo`, sorted.
fn chunk_files(repo: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in fs::read_dir(Path::new(repo).join("chunks")).unwrap() {
        for f in fs::read_dir(dir.unwrap().path()).unwrap() {
            files.push(f.unwrap().path());
        }
    }
    files.sort();
    files
}

fn flip_last_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn backups_sync_to_a_second_repository_and_restore_from_it() {
    let Setup { d, a, b, backups } = setup();
    let [(b1, _), (b2, ref2)] = &backups;
    let (b1, b2) = (b1.clone(), b2.clone());

    // A dry run says what it would copy and copies nothing.
    let out = ok(&cowctl(&d, &["repo", "sync", &a, &b, "--dry-run"]));
    assert!(
        out.contains(&format!("would copy  {b1}\n"))
            && out.contains(&format!("would copy  {b2}\n")),
        "{out}"
    );
    let listed = ok(&cowctl(&d, &["backups", "--repo", &b]));
    assert!(!listed.contains(&b1), "{listed}");

    // The sync: b1's chunks, then only the one b2 changed.
    let json = ok(&cowctl(&d, &["--json", "repo", "sync", &a, &b]));
    let report: SyncReport = serde_json::from_str(&json).unwrap();
    assert_eq!(report.synced, [b1.clone(), b2.clone()]);
    // 6 MiB at 0 and 2 MiB at 20 MiB: chunks 0 and 1, and 5 (4 MiB chunks); b2 changed chunk 1.
    assert_eq!(report.chunks_copied, 3 + 1, "{report:?}");
    assert_eq!(report.chunks_present, 2, "{report:?}");
    for (id, reference) in &backups {
        restores_exactly(&d, &b, id, reference);
    }
    let verified = ok(&cowctl(&d, &["verify", "--repo", &b]));
    assert!(verified.contains("2 backups"), "{verified}");

    // Again: nothing to copy.
    let out = ok(&cowctl(&d, &["repo", "sync", &a, &b]));
    assert!(
        out.starts_with(&format!("present  {b1}\npresent  {b2}\nnothing to copy\n")),
        "{out}"
    );

    // Only what a policy keeps: the newest, standing alone without its parent.
    let c = path_str(&d.dir().join("c")).to_owned();
    ok(&cowctl(&d, &["repo", "init", &c]));
    let out = ok(&cowctl(
        &d,
        &[
            "repo",
            "sync",
            &a,
            &c,
            "--export",
            "disk",
            "--keep-last",
            "1",
        ],
    ));
    assert!(
        out.starts_with(&format!("copied  {b2}\nchunks: 3 chunks copied")),
        "{out}"
    );
    restores_exactly(&d, &c, &b2, ref2);

    // Refusals: a policy without an export; a repository of another chunk size; no repository.
    let line = failed(
        &cowctl(&d, &["repo", "sync", &a, &c, "--keep-last", "1"]),
        2,
    );
    assert!(line.contains("need --export"), "{line}");
    let small = path_str(&d.dir().join("small")).to_owned();
    ok(&cowctl(
        &d,
        &["repo", "init", &small, "--chunk-size", "64K"],
    ));
    let line = failed(&cowctl(&d, &["repo", "sync", &a, &small]), 1);
    assert!(line.contains("both must use the same chunk size"), "{line}");
    let none = path_str(&d.dir().join("none")).to_owned();
    let line = failed(&cowctl(&d, &["repo", "sync", &a, &none]), 1);
    assert!(line.contains("no repository at"), "{line}");
}

#[test]
fn a_damaged_repository_is_repaired_from_its_synced_copy() {
    let Setup { d, a, b, backups } = setup();
    ok(&cowctl(&d, &["repo", "sync", &a, &b]));
    let chunks = chunk_files(&a);
    assert_eq!(chunks.len(), 4, "{chunks:?}");
    flip_last_byte(&chunks[0]);
    fs::remove_file(&chunks[1]).unwrap();
    failed(&cowctl(&d, &["verify", "--repo", &a]), 1);

    let out = ok(&cowctl(
        &d,
        &["repo", "repair", "--repo", &a, "--from", &b, "--dry-run"],
    ));
    assert_eq!(out.matches("would repair chunk ").count(), 2, "{out}");
    failed(&cowctl(&d, &["verify", "--repo", &a]), 1);
    let out = ok(&cowctl(&d, &["repo", "repair", "--repo", &a, "--from", &b]));
    assert_eq!(out.matches(&format!("from {b}\n")).count(), 2, "{out}");
    assert!(out.ends_with("every backup verifies now\n"), "{out}");
    ok(&cowctl(&d, &["verify", "--repo", &a]));
    for (id, reference) in &backups {
        restores_exactly(&d, &a, id, reference);
    }

    // A chunk damaged in both: the backups naming it are named, exit 1; removed when asked.
    let chunks_b = chunk_files(&b);
    let name = chunks[2].file_name().unwrap();
    let twin = chunks_b
        .iter()
        .find(|p| p.file_name() == Some(name))
        .unwrap();
    flip_last_byte(&chunks[2]);
    flip_last_byte(twin);
    let o = cowctl(&d, &["repo", "repair", "--repo", &a, "--from", &b]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("cannot repair chunk "), "{out}");
    let damaged = out.lines().filter(|l| l.starts_with("damaged ")).count();
    assert!(damaged >= 1, "{out}");
    let out = ok(&cowctl(
        &d,
        &[
            "repo",
            "repair",
            "--repo",
            &a,
            "--from",
            &b,
            "--remove-broken",
        ],
    ));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("removed ")).count(),
        damaged,
        "{out}"
    );
    ok(&cowctl(&d, &["verify", "--repo", &a]));

    // The repository itself is no copy of itself.
    let line = failed(
        &cowctl(&d, &["repo", "repair", "--repo", &a, "--from", &a]),
        1,
    );
    assert!(line.contains("is the repository being repaired"), "{line}");
}
