//! A filesystem that changes while it is backed up, and the check of its backup: the writer of
//! `scripts/lib/fswriter.py` (files created and renamed into place, each rename logged) and
//! `scripts/lib/fscheck.py`, which says whether a copy of the directory holds every file at the
//! version it had between a freeze and its thaw.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cli::{Background, text};
use crate::files::{PYTHON, project_root};

/// `fswriter.py DIR LOG STOP` at full speed in the background, its output in `out`, until
/// `stop` exists.
pub fn start(dir: &Path, log: &Path, stop: &Path, out: &Path) -> Background {
    spawn(
        Command::new(PYTHON)
            .arg(project_root().join("scripts/lib/fswriter.py"))
            .arg(dir),
        log,
        stop,
        out,
        "fswriter.py",
    )
}

/// The same writer at a gentler pace (`tests/scripts/paced_fswriter.py`, 20 ms between files).
pub fn start_paced(dir: &Path, log: &Path, stop: &Path, out: &Path) -> Background {
    spawn(
        Command::new(PYTHON)
            .arg(project_root().join("tests/scripts/paced_fswriter.py"))
            .arg("0.02")
            .arg(dir),
        log,
        stop,
        out,
        "paced_fswriter.py",
    )
}

fn spawn(cmd: &mut Command, log: &Path, stop: &Path, out: &Path, what: &str) -> Background {
    let out = File::create(out).unwrap();
    Background(
        cmd.arg(log)
            .arg(stop)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("run {what}: {e}")),
    )
}

/// The renames the writer has logged so far.
pub fn renames(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count()
}

/// `fscheck.py DIR LOG FROZEN_AT THAWED_AT`: panics unless it passes; returns its summary.
pub fn fscheck(dir: &Path, log: &Path, frozen_at: &str, thawed_at: &str) -> String {
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
