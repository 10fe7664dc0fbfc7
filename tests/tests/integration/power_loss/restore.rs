//! A restore (`cowctl restore ID --to PATH`) into a new file on the mount, cut at a spread of
//! its operations. After the restart a target under its own name is exact (a cut restore stays
//! `.partial`), one cowctl saw done is there, and the restore run again is exact.

use cowd_tests::power::{PowerRig, cut_points};

use super::*;

/// A rig with one backup of a known image; returns its id and image.
fn setup() -> (PowerRig, String, Vec<u8>) {
    let rig = PowerRig::new(SIZE);
    repo_init(&rig);
    let v1 = content(1);
    write_image(&rig, &vec![0; SIZE as usize], &v1);
    let id = backup(&rig, "full");
    (rig, id, v1)
}

fn restore_args(rig: &PowerRig, id: &str) -> Vec<String> {
    let to = rig.on("restored.img");
    ["restore", id, "--to", s(&to), "--repo", &repo(rig)]
        .map(String::from)
        .to_vec()
}

#[test]
fn restore_into_a_new_file() {
    let total = {
        let (mut rig, id, _) = setup();
        let args = restore_args(&rig, &id);
        rig.count(|r| {
            ok(&r.cowctl(&strs(&args)));
        })
    };
    let points = cut_points(total, POINTS);
    println!("restore: {total} operations, cuts after {points:?}");
    for n in points {
        let (mut rig, id, image) = setup();
        let args = restore_args(&rig, &id);
        let cut = rig.cut_during(n, &strs(&args));
        let context = format!("restore cut after {n} of {total} operations");
        let target = rig.on("restored.img");
        if cut.acknowledged() {
            assert!(
                target.exists(),
                "{context}: a restore reported done is gone"
            );
        }
        if target.exists() {
            let got = std::fs::read(&target).unwrap();
            assert!(
                got == image,
                "{context}: target {}",
                first_difference(&got, &image)
            );
        }
        // Run again: over what the first left, or into a new file.
        let again = rig.cowctl(&strs(&args));
        assert!(again.status.success(), "{context}: {}", stderr(&again));
        let got = std::fs::read(&target).unwrap();
        assert!(
            got == image,
            "{context}: rerun {}",
            first_difference(&got, &image)
        );
    }
}
