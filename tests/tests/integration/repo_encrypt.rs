//! An encrypted repository through the real daemon and `cowctl`: `repo init --encrypt` with a
//! passphrase, backups and an exact restore, nothing of the data readable in the repository;
//! a daemon without the key refuses clearly, a wrong passphrase is refused, `repo unlock` and
//! `cowd --repo-key-file` open it; key slots added, listed, changed and removed; a changed
//! byte named by verify and by restore; a sync from an unencrypted repository.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cowd_tests::cli::{backup_into, cowctl, failed, ok, path_str, start};
use cowd_tests::files::assert_same_file;
use cowd_tests::{Daemon, MIB, pattern};

/// A backup of `disk` into `repo`; its id.
fn backup(d: &Daemon, repo: &str) -> String {
    backup_into(d, "disk", repo)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn write_secret(d: &Daemon, name: &str, text: &str) -> String {
    let p = d.dir().join(name);
    fs::write(&p, text).unwrap();
    path_str(&p).to_owned()
}

#[test]
fn an_encrypted_repository_backs_up_restores_and_keeps_its_secrets() {
    let d = start(Daemon::builder().export("disk", 16 * MIB));
    let image = d.image("disk").to_owned();
    let data = pattern(7, (5 * MIB) as usize);
    let f = fs::File::options().write(true).open(&image).unwrap();
    f.write_all_at(&data, 0).unwrap();
    // Text too: a compressible chunk, sealed after compression.
    let text = "the quick brown fox jumps over the lazy dog\n".repeat(40_000);
    f.write_all_at(text.as_bytes(), 8 * MIB).unwrap();
    drop(f);
    let repo = path_str(&d.dir().join("enc")).to_owned();
    let pass = write_secret(&d, "pass", "correct horse battery staple\n");

    // Without a passphrase source and without a terminal: refused before anything is sent.
    let line = failed(&cowctl(&d, &["repo", "init", &repo, "--encrypt"]), 1);
    assert!(line.contains("--passphrase-file"), "{line}");
    let out = ok(&cowctl(
        &d,
        &[
            "repo",
            "init",
            &repo,
            "--encrypt",
            "--passphrase-file",
            &pass,
        ],
    ));
    assert!(out.contains("encrypted with key "), "{out}");

    let id = backup(&d, &repo);
    let restored = d.dir().join("restored.img");
    ok(&cowctl(
        &d,
        &["restore", &id, "--repo", &repo, "--to", path_str(&restored)],
    ));
    assert_same_file(&restored, &image);
    fs::remove_file(&restored).unwrap();
    ok(&cowctl(&d, &["verify", "--repo", &repo]));
    // Nothing readable: not the data, not the text, not the manifest's fields.
    for f in files(Path::new(&repo)) {
        let bytes = fs::read(&f).unwrap();
        for needle in [&data[..32], b"quick brown fox".as_slice(), b"\"export\""] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plain text",
                f.display()
            );
        }
    }

    // Key slots: a key file (created by the daemon), listed; a passphrase changed.
    let key_file = path_str(&d.dir().join("robot.key")).to_owned();
    let out = ok(&cowctl(
        &d,
        &[
            "repo",
            "key",
            "add",
            "--repo",
            &repo,
            "--key-file",
            &key_file,
            "--label",
            "robot",
        ],
    ));
    assert!(out.contains("(key-file)"), "{out}");
    assert_eq!(fs::read_to_string(&key_file).unwrap().trim().len(), 64);
    let list = ok(&cowctl(&d, &["repo", "key", "list", "--repo", &repo]));
    assert!(
        list.contains("passphrase") && list.contains("key-file") && list.contains("robot"),
        "{list}"
    );
    let new_pass = write_secret(&d, "new-pass", "a new passphrase\n");
    ok(&cowctl(
        &d,
        &[
            "repo",
            "key",
            "passwd",
            "--repo",
            &repo,
            "--passphrase-file",
            &pass,
            "--new-passphrase-file",
            &new_pass,
        ],
    ));

    // Locked: requests say how to unlock; the old passphrase no longer opens it.
    ok(&cowctl(&d, &["repo", "lock", "--repo", &repo]));
    let info = ok(&cowctl(&d, &["repo", "info", "--repo", &repo]));
    assert!(
        info.contains("format       2\n")
            && info.contains("chunk names  blake3-keyed:")
            && info.contains("locked (cowctl repo unlock)"),
        "{info}"
    );
    let line = failed(&cowctl(&d, &["backups", "--repo", &repo]), 1);
    assert!(
        line.contains("encrypted and locked") && line.contains("cowctl repo unlock"),
        "{line}"
    );
    let line = failed(
        &cowctl(
            &d,
            &[
                "repo",
                "unlock",
                "--repo",
                &repo,
                "--passphrase-file",
                &pass,
            ],
        ),
        1,
    );
    assert!(
        line.contains("no key slot opens with this passphrase"),
        "{line}"
    );
    ok(&cowctl(
        &d,
        &[
            "repo",
            "unlock",
            "--repo",
            &repo,
            "--passphrase-file",
            &new_pass,
        ],
    ));
    assert!(ok(&cowctl(&d, &["backups", "--repo", &repo])).contains(&id));

    // Another daemon opens it at start with the key file.
    let other = start(Daemon::builder().export("other", MIB).args(&[
        "--repo",
        &repo,
        "--repo-key-file",
        &key_file,
    ]));
    assert!(ok(&cowctl(&other, &["backups"])).contains(&id));
    let line = failed(&cowctl(&other, &["repo", "key", "remove", "nope"]), 1);
    assert!(line.contains("no key slot"), "{line}");
    drop(other);

    // One changed byte in a chunk: verify and restore name it.
    let chunk = files(&Path::new(&repo).join("chunks"))[0].clone();
    let mut bytes = fs::read(&chunk).unwrap();
    bytes[100] ^= 1;
    fs::write(&chunk, &bytes).unwrap();
    let name = chunk.file_name().unwrap().to_str().unwrap().to_owned();
    let out = cowctl(&d, &["verify", "--repo", &repo]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains(&name[..16]) && all.contains("authentication failed"),
        "{all}"
    );
    let line = failed(
        &cowctl(
            &d,
            &["restore", &id, "--repo", &repo, "--to", path_str(&restored)],
        ),
        1,
    );
    assert!(
        line.contains(&name[..16]) || line.contains("authentication"),
        "{line}"
    );
    bytes[100] ^= 1;
    fs::write(&chunk, &bytes).unwrap();

    // A sync from an unencrypted repository: the chunks are renamed and sealed on the way.
    let plain = path_str(&d.dir().join("plain")).to_owned();
    ok(&cowctl(&d, &["repo", "init", &plain]));
    let info = ok(&cowctl(&d, &["repo", "info", "--repo", &plain]));
    assert!(
        info.contains("chunk names  blake3\n") && info.contains("encryption   none\n"),
        "{info}"
    );
    let pid = backup(&d, &plain);
    ok(&cowctl(&d, &["repo", "sync", &plain, &repo]));
    ok(&cowctl(
        &d,
        &[
            "restore",
            &pid,
            "--repo",
            &repo,
            "--to",
            path_str(&restored),
        ],
    ));
    assert_same_file(&restored, &image);
    ok(&cowctl(&d, &["verify", "--repo", &repo]));
}
