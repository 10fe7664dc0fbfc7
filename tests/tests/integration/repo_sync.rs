//! `cowctl repo sync` against a real daemon: backups copied to a second repository with only
//! the chunks it lacks, restored exactly from there; a dry run, a second sync with nothing to
//! do, a retention policy choosing what to copy, and the refusals.

use std::fs;
use std::os::unix::fs::FileExt;

use cowd::control::api::SyncReport;
use cowd_tests::cli::{cowctl, failed, ok, path_str, start};
use cowd_tests::files::assert_same_file;
use cowd_tests::{Daemon, MIB, nbd_writes, pattern};

/// Starts a backup of `disk` into `repo`, waits for it; its id.
fn backup(d: &Daemon, repo: &str) -> String {
    let out = ok(&cowctl(
        d,
        &[
            "start-backup",
            "disk",
            "--repo",
            repo,
            "--no-quiesce",
            "--wait",
        ],
    ));
    let id = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("backup "))
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{out}"));
    id.to_owned()
}

#[test]
fn backups_sync_to_a_second_repository_and_restore_from_it() {
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
    for (id, reference) in [(&b1, &ref1), (&b2, &ref2)] {
        let out = d.dir().join(format!("{id}.img"));
        ok(&cowctl(
            &d,
            &["restore", id, "--repo", &b, "--to", path_str(&out)],
        ));
        assert_same_file(&out, reference);
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
    let restored = d.dir().join("c.img");
    ok(&cowctl(
        &d,
        &["restore", &b2, "--repo", &c, "--to", path_str(&restored)],
    ));
    assert_same_file(&restored, &ref2);

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
