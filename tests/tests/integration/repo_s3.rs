//! Repositories in object storage: the real daemon and `cowctl` against Ceph's RADOS Gateway on
//! a one-node cluster (`cowd_tests::rgw`). `repo init s3://BUCKET/PREFIX`, full and incremental
//! backups, verify, exact restores, prune and gc, sync to and from a directory, an encrypted
//! repository with nothing readable in the bucket, a changed byte in an object named by
//! verify; gc refused while a backup (of this or another daemon) runs, and two daemons backing
//! up into one repository at once.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::thread;

use cowd::control::api::Manifest;
use cowd_tests::cli::{backup_into, cowctl, failed, ok, path_str, start};
use cowd_tests::files::assert_same_file;
use cowd_tests::rgw::Rgw;
use cowd_tests::{Daemon, MIB, nbd_writes, pattern};

/// A daemon with export `disk` (16 MiB of data) that reaches `rgw`.
fn daemon(rgw: &Rgw, seed: u64) -> Daemon {
    let d = start(rgw.client(Daemon::builder().export("disk", 16 * MIB), &rgw.endpoint));
    let f = fs::File::options()
        .write(true)
        .open(d.image("disk"))
        .unwrap();
    f.write_all_at(&pattern(seed, (6 * MIB) as usize), 0)
        .unwrap();
    let text = "the quick brown fox jumps over the lazy dog\n".repeat(40_000);
    f.write_all_at(text.as_bytes(), 9 * MIB).unwrap();
    d
}

/// A copy of `d`'s image as it is now, to compare a restore with.
pub(crate) fn snapshot(d: &Daemon, name: &str) -> std::path::PathBuf {
    let p = d.dir().join(name);
    fs::copy(d.image("disk"), &p).unwrap();
    p
}

pub(crate) fn restore(d: &Daemon, repo: &str, id: &str, expect: &Path) {
    let to = d.dir().join("restored.img");
    ok(&cowctl(
        d,
        &["restore", id, "--repo", repo, "--to", path_str(&to)],
    ));
    assert_same_file(&to, expect);
    fs::remove_file(&to).unwrap();
}

/// Standard output and standard error of a command, together.
pub(crate) fn both(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn a_repository_in_s3_backs_up_restores_prunes_and_syncs() {
    let rgw = Rgw::start();
    rgw.create_bucket("cowd");
    let d = daemon(&rgw, 1);
    let repo = "s3://cowd/site-a";

    // Not a repository yet; a missing bucket is named.
    let line = failed(&cowctl(&d, &["backups", "--repo", repo]), 1);
    assert!(line.contains("no config.json"), "{line}");
    let line = failed(&cowctl(&d, &["repo", "init", "s3://no-such-bucket/x"]), 1);
    assert!(line.contains("no-such-bucket"), "{line}");

    let out = ok(&cowctl(&d, &["repo", "init", repo]));
    assert!(out.contains("created (format 2"), "{out}");
    let line = failed(&cowctl(&d, &["repo", "init", repo]), 1);
    assert!(line.contains("already a repository"), "{line}");

    let full = backup_into(&d, "disk", repo);
    let at_full = snapshot(&d, "full.img");
    // Scattered writes through NBD: the incremental reads only those blocks and stores them as
    // patches over chunks 0, 1 and 3; chunk 2 is rewritten whole (stored whole: the full's
    // chunk 2 is then used by the full alone, for the gc below).
    nbd_writes(
        &d.uri("disk"),
        &[
            (0x11, 0, 65536),
            (0x22, 5 * MIB, 4096),
            (0x44, 8 * MIB, 4 * MIB),
            (0x33, 15 * MIB, 65536),
        ],
    );
    let incr = backup_into(&d, "disk", repo);
    let at_incr = snapshot(&d, "incr.img");
    let listed = ok(&cowctl(&d, &["--json", "backups", "--repo", repo]));
    let manifests: Vec<Manifest> = serde_json::from_str(&listed).unwrap();
    let m = manifests
        .iter()
        .find(|m| m.id == incr)
        .expect("the incremental");
    assert_eq!(
        (
            m.counts.chunks_patched,
            m.counts.chunks_new,
            m.counts.chunks_inherited
        ),
        (3, 1, 0),
        "{:?}",
        m.counts
    );
    let list = ok(&cowctl(&d, &["backups", "--repo", repo]));
    assert!(list.contains(&full) && list.contains(&incr), "{list}");
    assert!(list.contains("incr"), "{list}");
    let out = ok(&cowctl(&d, &["verify", "--repo", repo]));
    assert!(out.contains("2 backups verified"), "{out}");
    restore(&d, repo, &full, &at_full);
    restore(&d, repo, &incr, &at_incr);
    // Served as a read-only export, chunks read from the store on demand, each kept in the
    // daemon's local cache (by its writer thread, soon after the read).
    let gets = || rgw.requests("GET", "cowd", "site-a/chunks/");
    let cache = d.dir().join("state/cache");
    let cached = || -> Vec<std::path::PathBuf> {
        fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap() != "tmp")
            .flat_map(|dir| fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()))
            .collect()
    };
    // Restores read through: nothing kept.
    assert!(cached().is_empty(), "{:?}", cached());
    let copy = d.dir().join("served.img");
    let serve_and_copy = || {
        ok(&cowctl(
            &d,
            &["serve", &full, "--export", "old", "--repo", repo],
        ));
        let _ = fs::remove_file(&copy);
        cowd_tests::run(
            std::process::Command::new("nbdcopy")
                .arg(d.uri("old"))
                .arg(&copy),
        );
        assert_same_file(&copy, &at_full);
        ok(&cowctl(&d, &["unserve", "old"]));
    };
    let before = gets();
    serve_and_copy();
    let fetched = gets() - before;
    assert!(fetched > 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cached().len() < fetched {
        assert!(
            std::time::Instant::now() < deadline,
            "{fetched} fetched, kept: {:?}",
            cached()
        );
        thread::sleep(std::time::Duration::from_millis(10));
    }
    // Served again: every chunk comes from the cache, none from the store.
    serve_and_copy();
    assert_eq!(gets() - before, fetched, "chunks fetched again");
    // A damaged cache entry is fetched again, and the copy is still exact.
    let entry = cached().pop().expect("a cached chunk");
    let mut bytes = fs::read(&entry).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    fs::write(&entry, &bytes).unwrap();
    serve_and_copy();
    assert_eq!(
        gets() - before,
        fetched + 1,
        "the damaged entry, and only it, fetched again"
    );

    // The objects: one layout with a directory repository, nothing left in progress.
    let keys = rgw.keys("cowd", "site-a/");
    assert!(keys.contains(&"site-a/config.json".to_owned()), "{keys:?}");
    for id in [&full, &incr] {
        for f in ["manifest.json", "index.bin"] {
            let k = format!("site-a/backups/{id}/{f}");
            assert!(keys.contains(&k), "{k} missing: {keys:?}");
        }
    }
    assert!(keys.iter().any(|k| k.starts_with("site-a/chunks/")));
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with("site-a/pins/") || k.starts_with("site-a/locks/")),
        "{keys:?}"
    );

    // A sync to a directory and back into another prefix: exact restores from both.
    let local = path_str(&d.dir().join("local")).to_owned();
    ok(&cowctl(&d, &["repo", "init", &local]));
    let out = ok(&cowctl(&d, &["repo", "sync", repo, &local]));
    assert!(out.contains("copied"), "{out}");
    restore(&d, &local, &incr, &at_incr);
    let back = "s3://cowd/site-b";
    ok(&cowctl(&d, &["repo", "init", back]));
    ok(&cowctl(&d, &["repo", "sync", &local, back]));
    restore(&d, back, &full, &at_full);

    // Prune keeps the newest; gc deletes the chunks only the removed backup used.
    let chunks_before = rgw.keys("cowd", "site-a/chunks/").len();
    let out = ok(&cowctl(
        &d,
        &["prune", "disk", "--keep-last", "1", "--repo", repo],
    ));
    assert!(out.contains(&format!("removed  {full}")), "{out}");
    let chunks_after = rgw.keys("cowd", "site-a/chunks/").len();
    assert!(
        chunks_after < chunks_before,
        "{chunks_before} -> {chunks_after}\n{out}"
    );
    let out = ok(&cowctl(&d, &["verify", "--repo", repo]));
    assert!(out.contains("1 backup verified"), "{out}");
    restore(&d, repo, &incr, &at_incr);
    assert!(
        !rgw.keys("cowd", "site-a/")
            .iter()
            .any(|k| k.starts_with(&format!("site-a/backups/{full}/"))),
        "the removed backup's objects stay"
    );

    // A changed byte in a chunk object: named by verify and refused by restore.
    let chunk = rgw
        .keys("cowd", "site-a/chunks/")
        .into_iter()
        .next()
        .unwrap();
    let mut bytes = rgw.get("cowd", &chunk);
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    rgw.put("cowd", &chunk, &bytes);
    let out = cowctl(&d, &["verify", "--repo", repo]);
    let text = both(&out);
    let name = chunk.rsplit('/').next().unwrap();
    assert!(!out.status.success() && text.contains(name), "{text}");
}

#[test]
fn an_encrypted_repository_in_s3_leaves_nothing_readable_in_the_bucket() {
    let rgw = Rgw::start();
    rgw.create_bucket("vault");
    let d = daemon(&rgw, 2);
    let repo = "s3://vault/enc";
    let pass = d.dir().join("pass");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    let out = ok(&cowctl(
        &d,
        &[
            "repo",
            "init",
            repo,
            "--encrypt",
            "--passphrase-file",
            path_str(&pass),
        ],
    ));
    assert!(out.contains("encrypted with key"), "{out}");
    let id = backup_into(&d, "disk", repo);
    let image = snapshot(&d, "at-backup.img");
    let data = pattern(2, 32);
    let keys = rgw.keys("vault", "enc/");
    assert!(
        keys.iter().any(|k| k.contains("/chunks/")) && keys.iter().any(|k| k.contains("/keys/")),
        "{keys:?}"
    );
    for key in keys {
        let bytes = rgw.get("vault", &key);
        for needle in [&data[..], b"quick brown fox".as_slice(), b"\"export\""] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{key} holds plain text"
            );
        }
    }
    ok(&cowctl(&d, &["repo", "lock", "--repo", repo]));
    let line = failed(&cowctl(&d, &["backups", "--repo", repo]), 1);
    assert!(line.contains("locked"), "{line}");
    let wrong = d.dir().join("wrong");
    fs::write(&wrong, "not it\n").unwrap();
    let unlock = |file: &Path| {
        let args = ["repo", "unlock", "--repo", repo, "--passphrase-file"];
        cowctl(&d, &[&args[..], &[path_str(file)]].concat())
    };
    let line = failed(&unlock(&wrong), 1);
    assert!(line.contains("no key slot opens"), "{line}");
    ok(&unlock(&pass));
    restore(&d, repo, &id, &image);
    // The manifest changed by one byte: the backup is named damaged.
    let key = format!("enc/backups/{id}/manifest.json");
    let mut bytes = rgw.get("vault", &key);
    bytes[40] ^= 1;
    rgw.put("vault", &key, &bytes);
    let out = cowctl(&d, &["verify", "--repo", repo]);
    let text = both(&out);
    assert!(!out.status.success() && text.contains(&id), "{text}");
}

#[test]
fn two_daemons_share_an_s3_repository_and_gc_waits_for_their_backups() {
    let rgw = Rgw::start();
    rgw.create_bucket("fleet");
    let (a, b) = (daemon(&rgw, 3), daemon(&rgw, 4));
    let repo = "s3://fleet/shared";
    ok(&cowctl(&a, &["repo", "init", repo]));
    // Both back up at once, deduplicating the text they share.
    let (ida, idb) = thread::scope(|s| {
        let ta = s.spawn(|| backup_into(&a, "disk", repo));
        let tb = s.spawn(|| backup_into(&b, "disk", repo));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let (img_a, img_b) = (snapshot(&a, "a.img"), snapshot(&b, "b.img"));
    let list = ok(&cowctl(&b, &["backups", "--repo", repo]));
    assert!(list.contains(&ida) && list.contains(&idb), "{list}");

    // A backup of daemon B held slow: daemon A's gc is refused while it runs, and says why.
    nbd_writes(&b.uri("disk"), &[(0x55, 0, 8 * MIB)]);
    ok(&cowctl(
        &b,
        &[
            "start-backup",
            "disk",
            "--repo",
            repo,
            "--no-quiesce",
            "--max-rate",
            "1",
        ],
    ));
    // (Both daemons' exports are called disk: a policy that keeps five removes nothing.)
    let out = cowctl(&a, &["prune", "disk", "--keep-last", "5", "--repo", repo]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && text.contains("gc refused") && text.contains("is running"),
        "{text}"
    );
    ok(&cowctl(&b, &["cancel", "disk"]));
    // Once it ended, gc runs; both complete backups restore exactly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = cowctl(&a, &["prune", "disk", "--keep-last", "5", "--repo", repo]);
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        thread::sleep(std::time::Duration::from_millis(200));
    }
    ok(&cowctl(&a, &["verify", "--repo", repo]));
    restore(&a, repo, &ida, &img_a);
    restore(&b, repo, &idb, &img_b);
}

#[test]
fn a_backup_cut_off_from_the_store_fails_cleanly_and_the_next_one_works() {
    let mut rgw = Rgw::start();
    rgw.create_bucket("flaky");
    let d = start(
        Daemon::builder()
            .export("disk", 16 * MIB)
            .args(&["--s3-endpoint", &rgw.endpoint, "--s3-retry-timeout", "2s"])
            .env("AWS_ACCESS_KEY_ID", cowd_tests::rgw::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", cowd_tests::rgw::SECRET_KEY),
    );
    let f = fs::File::options()
        .write(true)
        .open(d.image("disk"))
        .unwrap();
    f.write_all_at(&pattern(5, (12 * MIB) as usize), 0).unwrap();
    let repo = "s3://flaky/r";
    ok(&cowctl(&d, &["repo", "init", repo]));
    let first = backup_into(&d, "disk", repo);
    let at_first = snapshot(&d, "first.img");

    // The gateway killed while a backup (held to 2 MiB/s) stores its chunks.
    nbd_writes(&d.uri("disk"), &[(0x77, 0, 12 * MIB)]);
    let args = [
        "start-backup",
        "disk",
        "--repo",
        repo,
        "--no-quiesce",
        "--max-rate",
        "2",
    ];
    let out = ok(&cowctl(&d, &args));
    let cut = out.split(' ').nth(1).unwrap().to_owned();
    thread::sleep(std::time::Duration::from_millis(1500));
    rgw.kill_gateway();
    let out = cowctl(&d, &["wait", &cut]);
    let text = both(&out);
    // Failed once the retries ran out (2 s), naming the request.
    assert!(
        !out.status.success() && text.contains("failed") && text.contains("retries"),
        "{text}"
    );

    // Back again: only the complete backup lists, the next backup, gc and verify work.
    rgw.restart_gateway();
    let list = ok(&cowctl(&d, &["backups", "--repo", repo]));
    assert_eq!(list.matches("disk-").count(), 1, "{list}");
    assert!(list.contains(&first), "{list}");
    let second = backup_into(&d, "disk", repo);
    let at_second = snapshot(&d, "second.img");
    let out = ok(&cowctl(
        &d,
        &["prune", "disk", "--keep-last", "5", "--repo", repo],
    ));
    assert!(out.contains("gc: removed"), "{out}");
    let out = ok(&cowctl(&d, &["verify", "--repo", repo]));
    assert!(out.contains("2 backups verified"), "{out}");
    restore(&d, repo, &first, &at_first);
    restore(&d, repo, &second, &at_second);
    assert!(
        !rgw.keys("flaky", "r/")
            .iter()
            .any(|k| k.starts_with("r/pins/")),
        "a pin stays"
    );
}
