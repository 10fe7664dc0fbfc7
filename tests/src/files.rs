//! Files and the machine as tests check them: two files byte-equal, a piece of a file, the
//! project's root, root and the tools a test needs.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::require;

/// The system python the test scripts run with.
pub const PYTHON: &str = "/usr/bin/python3";

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
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    b
}

/// Panics at the first byte where the two files differ (or if their sizes differ).
pub fn assert_same_file(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "{} and {} differ in size", a.display(), b.display());
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    let mut at = 0u64;
    while at < la {
        let n = (la - at).min(ba.len() as u64) as usize;
        fa.read_exact(&mut ba[..n]).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            panic!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                at + i as u64
            );
        }
        at += n as u64;
    }
}
