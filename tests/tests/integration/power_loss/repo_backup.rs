//! A repository backup, full and incremental, cut at a spread of its operations. After the
//! restart every backup the repository lists restores exactly to its snapshot point, `verify
//! --all` passes, a backup cowctl saw complete is listed, and the next backup works and is
//! exact.

use cowd_tests::power::{PowerRig, cut_points};

use super::*;

/// A rig with a repository and the image at T of the backup to cut; for an incremental, a
/// full backup of an older image before it.
fn setup(incremental: bool) -> (PowerRig, Known, Vec<u8>) {
    let rig = PowerRig::new(SIZE);
    repo_init(&rig);
    let v1 = content(1);
    write_image(&rig, &vec![0; SIZE as usize], &v1);
    let mut known = Known::new();
    if !incremental {
        return (rig, known, v1);
    }
    known.insert(backup(&rig, "full"), v1.clone());
    let v2 = changed(&v1, 2);
    write_image(&rig, &v1, &v2);
    (rig, known, v2)
}

/// Cuts a `mode` backup after each count of operations `points(total)` chooses.
fn sweep(mode: &str, points: impl Fn(u64) -> Vec<u64>) {
    let incremental = mode == "incremental";
    let total = setup(incremental).0.count(|r| {
        backup(r, mode);
    });
    let points = points(total);
    println!("{mode} backup: {total} operations, cuts after {points:?}");
    for n in points {
        let (mut rig, mut known, at_t) = setup(incremental);
        let cut = rig.cut_during(n, &strs(&backup_args(&rig, mode)));
        let context = format!("{mode} backup cut after {n} of {total} operations");
        let listed: Vec<String> = manifests(&rig).into_iter().map(|m| m.id).collect();
        if cut.acknowledged() {
            let id = started_id(&cut.output.stdout).expect("a started backup has an id");
            assert!(
                listed.contains(&id),
                "{context}: {id} was reported done but is gone"
            );
        }
        // Any backup started in this run has the image at T (nothing is written meanwhile).
        check_repo(
            &rig,
            &|id| known.get(id).cloned().or(Some(at_t.clone())),
            &context,
        );
        known.insert(backup(&rig, "auto"), at_t.clone());
        check_repo(
            &rig,
            &|id| known.get(id).cloned().or(Some(at_t.clone())),
            &context,
        );
    }
}

#[test]
fn full_backup_into_a_repository() {
    sweep("full", |total| cut_points(total, POINTS));
}

#[test]
fn incremental_backup_into_a_repository() {
    sweep("incremental", |total| cut_points(total, POINTS));
}

/// The commit of a generation: the last operations of an incremental backup one by one (the
/// staging and index writes, the manifest, the renames and directory syncs, the record).
#[test]
fn commit_of_a_generation() {
    sweep("incremental", |total| {
        (total.saturating_sub(12)..total).collect()
    });
}
