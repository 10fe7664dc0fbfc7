//! A backup to a raw image (`--to FILE`), cut at a spread of its operations, into a new file
//! and over an existing one. After the restart no record still says running; a target whose
//! record says done, or that cowctl saw done, is exact; a new target under its own name is
//! exact (incomplete ones stay `.partial`).

use std::path::Path;

use cowd::control::api::{BackupState, BackupStatus};
use cowd_tests::power::PowerRig;

use super::*;

fn raw_args(to: &Path) -> Vec<String> {
    [
        "--json",
        "start-backup",
        "disk",
        "--to",
        s(to),
        "--no-quiesce",
        "--wait",
    ]
    .map(String::from)
    .to_vec()
}

/// A rig with the image at T written; with `existing`, the target already holds other data
/// (durably).
fn setup(existing: bool) -> (PowerRig, Vec<u8>) {
    let rig = PowerRig::new(SIZE);
    let v1 = content(1);
    write_image(&rig, &vec![0; SIZE as usize], &v1);
    if existing {
        let f = std::fs::File::create(rig.on("raw.img")).unwrap();
        std::io::Write::write_all(&mut &f, &content(9)).unwrap();
        f.sync_all().unwrap();
    }
    (rig, v1)
}

/// The backup records cowd knows (`cowctl --json status`).
fn records(rig: &PowerRig) -> Vec<BackupStatus> {
    let text = ok(&rig.cowctl(&["--json", "status"]));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn sweep(existing: bool) {
    let what = if existing {
        "over an existing file"
    } else {
        "into a new file"
    };
    let total = {
        let (mut rig, _) = setup(existing);
        let args = raw_args(&rig.on("raw.img"));
        rig.count(|r| {
            ok(&r.cowctl(&strs(&args)));
        })
    };
    // A few dozen operations: cut after each one (the end record is one of the last).
    let points: Vec<u64> = (0..=total).collect();
    println!("raw backup {what}: {total} operations, cuts after {points:?}");
    for n in points {
        let (mut rig, at_t) = setup(existing);
        let target = rig.on("raw.img");
        let cut = rig.cut_during(n, &strs(&raw_args(&target)));
        let context = format!("raw backup {what} cut after {n} of {total} operations");
        let id = started_id(&cut.output.stdout);
        let recs = records(&rig);
        assert!(
            recs.iter().all(|r| r.state != BackupState::Running),
            "{context}: a record still says running after the restart: {recs:?}"
        );
        let state = id
            .as_ref()
            .and_then(|id| recs.iter().find(|r| &r.id == id))
            .map(|r| r.state);
        let exact = || std::fs::read(&target).is_ok_and(|b| b == at_t);
        if cut.acknowledged() {
            assert_eq!(state, Some(BackupState::Done), "{context}: acknowledged");
        }
        if state == Some(BackupState::Done) {
            assert!(
                exact(),
                "{context}: the target of a done backup is not exact"
            );
        }
        if !existing && target.exists() {
            // Its record may still say failed: the power can go between the rename that
            // completes the image and the record of the end. Failed is the safe side.
            assert!(
                exact(),
                "{context}: a new target under its own name is not exact"
            );
        }
        if existing && state != Some(BackupState::Done) {
            assert!(
                matches!(state, None | Some(BackupState::Failed)),
                "{context}: {state:?}"
            );
        }
    }
}

#[test]
fn raw_backup_into_a_new_file() {
    sweep(false);
}

#[test]
fn raw_backup_over_an_existing_file() {
    sweep(true);
}
