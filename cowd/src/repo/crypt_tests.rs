//! An encrypted repository end to end: backups read back exactly, nothing of the data or the
//! manifests readable on disk, every stored object changed in one byte detected by verify and
//! by reads (naming what is damaged), locked and wrong-key refusals, and sync across namings.

use std::path::{Path, PathBuf};

use super::testutil::{backup, data, patched_backup, read_back};
use super::*;

pub(crate) const CHEAP: KdfCost = KdfCost {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

fn pass(p: &str) -> Secret {
    Secret::Passphrase(zeroize::Zeroizing::new(p.as_bytes().to_vec()))
}

/// An encrypted repository at `root` whose key is passphrase `p`.
fn encrypted(root: &Path, p: &str) -> Repo {
    let secret = pass(p);
    let init = InitKey {
        secret: &secret,
        label: "test",
        cost: CHEAP,
        key: None,
    };
    Repo::create(root, MIN_CHUNK_SIZE, 3, VERSION, Some(init)).unwrap()
}

/// Random chunks and compressible ones (text), so both stored forms are sealed.
fn image(seed: u64) -> Vec<u8> {
    let mut v = data(4, seed);
    let text = format!("seed {seed}: the quick brown fox jumps over the lazy dog\n");
    while v.len() < 8 * MIN_CHUNK_SIZE as usize {
        v.extend_from_slice(text.as_bytes());
    }
    v.truncate(8 * MIN_CHUNK_SIZE as usize - 100);
    v
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

#[test]
fn backups_read_back_and_nothing_is_readable_on_disk() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("enc");
    let r = encrypted(&root, "secret words");
    assert!(r.is_encrypted());
    let img = image(1);
    let ix = backup(&r, "b1", None, 100, &img);
    // Names are keyed: not the SHA-256 of the data.
    let first = &img[..MIN_CHUNK_SIZE as usize];
    assert_eq!(ix.digests[0], r.name_of(first));
    assert_ne!(ix.digests[0], Digest::of(first));
    assert_eq!(read_back(&r, "b1").unwrap(), img);
    let v = r.verify(None, &|_, _| {}).unwrap();
    assert!(v.corrupt.is_empty() && v.bad_indexes.is_empty() && v.missing.is_empty());
    assert_eq!(v.chunks_checked, 8);

    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["version"], 2);
    assert_eq!(cfg["encryption"]["cipher"], "aes-256-gcm");

    let needles: [&[u8]; 5] = [
        &img[..64],
        b"quick brown fox",
        b"\"export\"",
        b"disk",
        b"(\xb5/\xfd",
    ];
    for f in files(&root) {
        let bytes = fs::read(&f).unwrap();
        for n in needles {
            let found = bytes.windows(n.len()).any(|w| w == n);
            // The zstd magic (28 b5 2f fd) would show an unsealed frame.
            assert!(
                !found,
                "{} holds {:?}",
                f.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
}

#[test]
fn every_stored_object_changed_in_one_byte_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("enc");
    let r = encrypted(&root, "pw");
    let img = image(2);
    backup(&r, "b1", None, 100, &img);
    let objects: Vec<PathBuf> = files(&root.join("chunks"))
        .into_iter()
        .chain(files(&root.join("backups")))
        .collect();
    assert_eq!(objects.len(), 8 + 2);
    for f in &objects {
        let good = fs::read(f).unwrap();
        // A byte of the header (chunks), of the sealed body's start, middle and tag.
        for at in [9, 40, 60, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            fs::write(f, &bad).unwrap();
            let v = r.verify(None, &|_, _| {}).unwrap();
            let named = v.corrupt.iter().any(|c| &c.path == f)
                || v.bad_indexes
                    .iter()
                    .any(|(id, p)| id == "b1" && p.contains(&f.display().to_string()))
                || !r.listing().unwrap().damaged.is_empty();
            assert!(
                named,
                "{} changed at {at}: not detected: {v:?}",
                f.display()
            );
            assert!(
                read_back(&r, "b1").is_err(),
                "{} changed at {at}: read back",
                f.display()
            );
        }
        fs::write(f, &good).unwrap();
    }
    assert_eq!(read_back(&r, "b1").unwrap(), img);
    // A chunk file under another chunk's name does not open as that chunk.
    let chunks = files(&root.join("chunks"));
    let (a, b) = (&chunks[0], &chunks[1]);
    let keep = fs::read(b).unwrap();
    fs::copy(a, b).unwrap();
    let v = r.verify(None, &|_, _| {}).unwrap();
    assert!(v.corrupt.iter().any(|c| &c.path == b), "{v:?}");
    fs::write(b, keep).unwrap();
}

#[test]
fn locked_and_wrong_keys_are_refused_clearly() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("enc");
    let r = encrypted(&root, "right");
    backup(&r, "b1", None, 100, &image(3));
    drop(r);
    assert!(Repo::lock(&root).unwrap());
    let e = Repo::open(&root).unwrap_err();
    assert!(matches!(e, RepoError::Locked(_)), "{e}");
    assert!(e.to_string().contains("cowctl repo unlock"), "{e}");
    let e = Repo::unlock(&root, &pass("wrong")).unwrap_err();
    assert!(matches!(e, RepoError::WrongKey(_)), "{e}");
    let (r, _slot) = Repo::unlock(&root, &pass("right")).unwrap();
    assert_eq!(read_back(&r, "b1").unwrap(), image(3));

    // Slots: add one, change its passphrase, remove the first; the last one stays.
    let added = r.add_key(&pass("second"), "other host", CHEAP).unwrap();
    let (changed, removed) = r
        .change_key(&pass("second"), &pass("third"), CHEAP)
        .unwrap();
    assert_eq!(
        (removed.as_str(), changed.label.as_str()),
        (added.id.as_str(), "other host")
    );
    let first = r.key_slots().unwrap()[0].id.clone();
    r.remove_key(&first).unwrap();
    assert!(
        r.remove_key(&changed.id)
            .unwrap_err()
            .to_string()
            .contains("last")
    );
    assert!(Repo::unlock(&root, &pass("right")).is_err());
    assert!(Repo::unlock(&root, &pass("third")).is_ok());

    // An unencrypted repository has nothing to unlock; an old-format reader's refusal.
    let plain = Repo::init(&d.path().join("plain"), MIN_CHUNK_SIZE).unwrap();
    assert!(!plain.is_encrypted() && plain.key_slots().unwrap().is_empty());
    let e = Repo::unlock(plain.root(), &pass("x"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not encrypted"), "{e}");
    let cfg_path = root.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    cfg["version"] = 1.into();
    fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let e = Repo::open(&root).unwrap_err().to_string();
    assert!(e.contains("in a version 1 repository"), "{e}");
}

#[test]
fn sync_between_namings_rewrites_the_index_and_a_shared_key_moves_objects_as_they_are() {
    let d = tempfile::tempdir().unwrap();
    let plain = Repo::init(&d.path().join("plain"), MIN_CHUNK_SIZE).unwrap();
    let enc = encrypted(&d.path().join("enc"), "a");
    let (img1, img2) = (image(4), image(5));
    backup(&plain, "b1", None, 100, &img1);
    backup(&plain, "b2", Some("b1"), 200, &img2);
    // b3: a few blocks of b2 changed, stored as patches.
    let mut img3 = img2.clone();
    for k in [1, 50, 100] {
        img3[k * 4096..k * 4096 + 100].fill(k as u8);
    }
    let patched = patched_backup(&plain, "b3", "b2", 300, &img3);
    assert_eq!(patched.patches.len(), 3);
    let ids = vec!["b1".to_string(), "b2".to_string(), "b3".to_string()];
    let r = plain
        .sync_to(&enc, &ids, false, &|| false, &|_| {})
        .unwrap();
    assert_eq!(r.synced, ids);
    assert_eq!(read_back(&enc, "b1").unwrap(), img1);
    assert_eq!(read_back(&enc, "b2").unwrap(), img2);
    assert_eq!(read_back(&enc, "b3").unwrap(), img3);
    let (e3, p3) = (enc.index("b3").unwrap(), plain.index("b3").unwrap());
    assert!(e3.patches.keys().eq(p3.patches.keys()));
    assert!(
        e3.patches
            .values()
            .zip(p3.patches.values())
            .all(|(a, b)| a != b)
    );
    assert_ne!(
        enc.index("b1").unwrap().digests,
        plain.index("b1").unwrap().digests
    );
    // The same backups again: present, nothing moves.
    let again = plain
        .sync_to(&enc, &ids, false, &|| false, &|_| {})
        .unwrap();
    assert_eq!((again.present.len(), again.chunks_copied), (3, 0));

    // A second repository with the same master key: names agree, sealed chunks are copied
    // without rewriting the index, and back to an unencrypted one.
    let secret = pass("b");
    let twin = Repo::create(
        &d.path().join("twin"),
        MIN_CHUNK_SIZE,
        1,
        VERSION,
        Some(InitKey {
            secret: &secret,
            label: "twin",
            cost: CHEAP,
            key: Some(enc.master_key().unwrap().clone()),
        }),
    )
    .unwrap();
    assert_eq!(twin.chunk_naming(), enc.chunk_naming());
    enc.sync_to(&twin, &ids, false, &|| false, &|_| {}).unwrap();
    assert_eq!(
        twin.index("b2").unwrap().digests,
        enc.index("b2").unwrap().digests
    );
    let back = Repo::init(&d.path().join("back"), MIN_CHUNK_SIZE).unwrap();
    twin.sync_to(&back, &ids, false, &|| false, &|_| {})
        .unwrap();
    assert_eq!(
        back.index("b2").unwrap().digests,
        plain.index("b2").unwrap().digests
    );
    assert_eq!(read_back(&back, "b2").unwrap(), img2);
    assert_eq!(back.index("b3").unwrap(), plain.index("b3").unwrap());
    assert_eq!(read_back(&back, "b3").unwrap(), img3);
    for r in [&enc, &twin, &back] {
        let v = r.verify(None, &|_, _| {}).unwrap();
        assert!(v.corrupt.is_empty() && v.bad_indexes.is_empty() && v.missing.is_empty());
    }
}
