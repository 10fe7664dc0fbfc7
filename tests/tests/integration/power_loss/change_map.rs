//! The change map across a power cut. The cut is swept over an incremental backup, writes
//! after it (flushed), and a clean stop (SIGTERM: final flush, map saved, marker removed).
//! After the restart the next auto backup restores exactly to the image at its snapshot
//! point, whether the map let it be incremental or it is full with the reason given: the map
//! never calls a changed block unchanged.

use cowd::repo::Mode;
use cowd_tests::power::{PowerRig, cut_points};

use super::*;

/// A rig with a full backup of v1, then v2 written; returns (rig, known, v2, v3).
fn setup() -> (PowerRig, Known, Vec<u8>, Vec<u8>) {
    let rig = PowerRig::new(SIZE);
    repo_init(&rig);
    let v1 = content(1);
    write_image(&rig, &vec![0; SIZE as usize], &v1);
    let mut known = Known::new();
    known.insert(backup(&rig, "full"), v1.clone());
    let v2 = changed(&v1, 2);
    write_image(&rig, &v1, &v2);
    let v3 = changed(&v2, 3);
    (rig, known, v2, v3)
}

/// Incremental backup (of v2), v3 written and flushed, clean stop: each step may fail once
/// the power is off.
fn action(rig: &mut PowerRig, v2: &[u8], v3: &[u8]) {
    let _ = rig.cowctl(&strs(&backup_args(rig, "incremental")));
    let block = 64 * KIB as usize;
    let mut ops: Vec<NbdOp> = v2
        .chunks(block)
        .zip(v3.chunks(block))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (_, b))| NbdOp::write((i * block) as u64, b))
        .collect();
    ops.push(NbdOp::Flush);
    rig.nbd(&ops);
    rig.stop_cowd();
}

#[test]
fn change_map_after_a_power_cut() {
    let total = {
        let (mut rig, _, v2, v3) = setup();
        let n = rig.count(|r| action(r, &v2, &v3));
        rig.boot();
        n
    };
    let points = cut_points(total, POINTS);
    println!("incremental, writes, clean stop: {total} operations, cuts after {points:?}");
    let mut modes = Vec::new();
    for n in points {
        let (mut rig, known, v2, v3) = setup();
        rig.arm(Some(n));
        action(&mut rig, &v2, &v3);
        rig.power_cycle();
        let context = format!("change map, cut after {n} of {total} operations");
        let at_t = std::fs::read(rig.image()).unwrap();
        let id = backup(&rig, "auto");
        let m = manifests(&rig).into_iter().find(|m| m.id == id).unwrap();
        if m.mode == Mode::Full {
            assert!(m.full_reason.is_some(), "{context}: full without a reason");
        }
        modes.push(format!("{n}: {:?}", m.mode));
        check_repo(
            &rig,
            &|b| {
                let image = if b == id { &at_t } else { &v2 };
                Some(known.get(b).unwrap_or(image).clone())
            },
            &context,
        );
    }
    println!("the backup after the restart: {modes:?}");
}
