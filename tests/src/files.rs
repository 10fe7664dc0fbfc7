//! Files and the machine as tests check them: two files byte-equal, a piece of a file, the
//! project's root, root and the tools a test needs, the Python scripts and their interpreter.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{KIB, MIB, pattern, require};

/// The system python the test scripts run with.
pub const PYTHON: &str = "/usr/bin/python3";

/// `tests/scripts/NAME`: the Python scripts the tests run.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Panics with a hint unless the system Python has libnbd's binding (python3-libnbd).
pub fn require_python_nbd() {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing: run scripts/test, which installs the test tools"
    );
    let ok = Command::new(PYTHON)
        .args(["-c", "import nbd"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{PYTHON} has no `nbd` module (python3-libnbd): run scripts/test"
    );
}

/// The root of the project (where `scripts/` lives).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("project root")
        .to_owned()
}

/// Panics unless running as root with `tools` and the system python.
pub fn require_root_and(tools: &[&str]) {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (loop devices, mount, FIFREEZE)"
    );
    for t in tools {
        require(t);
    }
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing: run scripts/test"
    );
}

/// `len` bytes of `path` at `offset`.
/// Creates (or truncates) `path` as a sparse file of `size` bytes.
pub fn sparse(path: &Path, size: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    b
}

/// Panics unless the two files are equal byte for byte (or if their sizes differ).
pub fn assert_same_file(a: &Path, b: &Path) {
    assert_same_image(a, b, "files");
}

/// Asserts two files are equal byte for byte; names the first differing 64 KiB block and how
/// many blocks differ.
pub fn assert_same_image(got: &Path, want: &Path, what: &str) {
    let (mut fa, mut fb) = (File::open(got).unwrap(), File::open(want).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "{what}: sizes differ");
    let bs = 64 * KIB as usize;
    let (mut ba, mut bb) = (vec![0u8; bs], vec![0u8; bs]);
    let mut differ = Vec::new();
    let mut first = None;
    let mut at = 0u64;
    while at < la {
        let n = (la - at).min(bs as u64) as usize;
        fa.read_exact(&mut ba[..n]).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            if first.is_none() {
                let i = ba.iter().zip(&bb).position(|(x, y)| x != y).unwrap();
                first = Some((at + i as u64, ba[i], bb[i], ba[..n].iter().all(|&b| b == 0)));
            }
            differ.push(at / bs as u64);
        }
        at += n as u64;
    }
    if let Some((off, g, w, zero)) = first {
        panic!(
            "{what}: {} and {} differ in {} blocks of 64 KiB (first at byte {off}, block {}: \
             got {g:#04x}, want {w:#04x}{}); blocks {:?}",
            got.display(),
            want.display(),
            differ.len(),
            off / bs as u64,
            if zero {
                ", that block reads as zeroes"
            } else {
                ""
            },
            &differ[..differ.len().min(20)]
        );
    }
}

/// Fills `[offset, offset + len)` of an image with pattern data (never a zero 4 KiB block),
/// writing the file directly.
pub fn fill(image: &Path, offset: u64, len: u64, seed: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, name: &str, len: u64) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().set_len(len).unwrap();
        p
    }

    #[test]
    fn fill_writes_pattern_data_and_read_at_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = image(dir.path(), "a.img", 20 * MIB);
        fill(&p, 4096, 9 * MIB, 3);
        assert_eq!(read_at(&p, 0, 4096), vec![0; 4096], "before the range");
        let at = 4096 + 9 * MIB;
        assert_eq!(read_at(&p, at, 4096), vec![0; 4096], "after the range");
        for block in read_at(&p, 4096, (9 * MIB) as usize).chunks(4096) {
            assert!(block.iter().any(|&b| b != 0), "a zero 4 KiB block");
        }
        assert_eq!(read_at(&p, 4096, 100), pattern(300_000, 100));
    }

    #[test]
    fn equal_files_are_the_same_image() {
        let dir = tempfile::tempdir().unwrap();
        let a = image(dir.path(), "a.img", 3 * MIB);
        fill(&a, 0, 3 * MIB, 1);
        let b = dir.path().join("b.img");
        std::fs::copy(&a, &b).unwrap();
        assert_same_image(&a, &b, "a copy");
        assert_same_file(&a, &b);
    }

    #[test]
    #[should_panic(expected = "differ in 2 blocks of 64 KiB (first at byte 65537, block 1")]
    fn different_files_name_the_first_byte_and_the_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let a = image(dir.path(), "a.img", MIB);
        let b = image(dir.path(), "b.img", MIB);
        let f = File::options().write(true).open(&b).unwrap();
        f.write_all_at(&[1], 65537).unwrap();
        f.write_all_at(&[1], 10 * 65536).unwrap();
        assert_same_image(&a, &b, "two images");
    }

    #[test]
    #[should_panic(expected = "sizes differ")]
    fn files_of_different_sizes_differ() {
        let dir = tempfile::tempdir().unwrap();
        let a = image(dir.path(), "a.img", MIB);
        let b = image(dir.path(), "b.img", MIB + 512);
        assert_same_file(&a, &b);
    }
}
