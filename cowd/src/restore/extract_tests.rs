//! Tests of [`extract`]'s file copy (several reader threads, one writer) on an ext4
//! filesystem made by `mke2fs -d`: a file of many pieces with holes comes out byte for byte,
//! and a read error in one piece fails the extraction with that error instead of hanging or
//! writing a short file quietly.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::device::{BlockDevice, FileDevice, FileOptions};
use crate::device::{FaultDevice, OpMask};
use crate::fs::ext4::tree::Ext4Tree;

const MIB: u64 = 1 << 20;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// A filesystem holding `/big` (37 MiB: data, a 5 MiB hole, data, a hole at the end) and a
/// small file; returns the image and the source file.
fn image(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big = src.join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.write_all_at(&pattern(1, (13 * MIB + 4096) as usize), 0)
        .unwrap();
    f.write_all_at(&pattern(2, (15 * MIB) as usize), 18 * MIB)
        .unwrap();
    f.set_len(37 * MIB).unwrap();
    std::fs::write(src.join("small"), pattern(3, 5000)).unwrap();
    let img = dir.join("fs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(96 * MIB)
        .unwrap();
    let out = Command::new("mke2fs")
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&src)
        .arg(&img)
        .output()
        .expect("mke2fs (e2fsprogs) runs");
    assert!(out.status.success(), "{out:?}");
    (img, big)
}

fn device(img: &Path) -> Arc<dyn BlockDevice> {
    let options = FileOptions {
        read_only: true,
        direct: false,
    };
    Arc::new(FileDevice::open(img, options).unwrap())
}

#[test]
fn a_file_of_many_pieces_comes_out_whole_with_its_holes() {
    let dir = tempfile::tempdir().unwrap();
    let (img, big) = image(dir.path());
    let tree = Ext4Tree::open(device(&img)).unwrap();
    let to = dir.path().join("out");
    let report = extract(&tree, &["/big".into(), "/small".into()], &to).unwrap();
    assert_eq!(report.files, 2);
    assert_eq!(
        std::fs::read(to.join("big")).unwrap(),
        std::fs::read(&big).unwrap()
    );
    // The hole stays a hole: fewer blocks than the size, and only data bytes counted.
    let meta = std::fs::metadata(to.join("big")).unwrap();
    assert_eq!(meta.len(), 37 * MIB);
    assert!(meta.blocks() * 512 < 30 * MIB, "{} blocks", meta.blocks());
    assert_eq!(report.bytes, 13 * MIB + 4096 + 15 * MIB + 5000);
}

#[test]
fn a_read_error_in_one_piece_fails_the_extraction() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = image(dir.path());
    let (faulty, control) = FaultDevice::new(device(&img));
    let tree = Ext4Tree::open(Arc::new(faulty)).unwrap();
    let ino = crate::fs::tree::lookup(&tree, b"/big").unwrap();
    // Somewhere in the second data extent's middle.
    let extents = tree.extents(ino).unwrap();
    let e = extents
        .iter()
        .find(|e| e.logical >= 18 * MIB)
        .expect("an extent of the second run");
    let at = e.physical.unwrap() + e.len / 2;
    control.fail_range(OpMask::READ, at, 4096);
    let err = extract(&tree, &["/big".into()], &dir.path().join("out")).unwrap_err();
    assert!(
        matches!(err, FilesError::Tree(_)),
        "a reading error, not {err:?}"
    );
    assert!(control.injected() >= 1);
}
