//! Prune with garbage collection (`cowctl prune disk --keep-last 1`), cut at a spread of its
//! operations, on a repository of three generations. After the restart the backups still
//! listed restore exactly, the newest is among them, `verify --all` passes, a prune cowctl saw
//! done removed what it said, and prune run again finishes the work.

use cowd_tests::power::{PowerRig, cut_points};

use super::*;

/// A rig with three generations (full, incremental, incremental) of known images.
fn setup() -> (PowerRig, Known, String) {
    let rig = PowerRig::new(SIZE);
    repo_init(&rig);
    let mut known = Known::new();
    let mut old = vec![0; SIZE as usize];
    let mut newest = String::new();
    for (generation, mode) in [(1, "full"), (2, "incremental"), (3, "incremental")] {
        let image = if generation == 1 {
            content(1)
        } else {
            changed(&old, generation)
        };
        write_image(&rig, &old, &image);
        newest = backup(&rig, mode);
        known.insert(newest.clone(), image.clone());
        old = image;
    }
    (rig, known, newest)
}

fn prune_args(rig: &PowerRig) -> Vec<String> {
    ["prune", "disk", "--keep-last", "1", "--repo", &repo(rig)]
        .map(String::from)
        .to_vec()
}

#[test]
fn prune_and_gc() {
    let total = {
        let (mut rig, _, _) = setup();
        let args = prune_args(&rig);
        rig.count(|r| {
            ok(&r.cowctl(&strs(&args)));
        })
    };
    let points = cut_points(total, POINTS);
    println!("prune + GC: {total} operations, cuts after {points:?}");
    for n in points {
        let (mut rig, known, newest) = setup();
        let cut = rig.cut_during(n, &strs(&prune_args(&rig)));
        let context = format!("prune + GC cut after {n} of {total} operations");
        let listed: Vec<String> = manifests(&rig).into_iter().map(|m| m.id).collect();
        assert!(
            listed.contains(&newest),
            "{context}: the kept backup is gone"
        );
        if cut.acknowledged() {
            assert_eq!(
                listed,
                std::slice::from_ref(&newest),
                "{context}: pruned backups listed"
            );
        }
        check_repo(&rig, &|id| known.get(id).cloned(), &context);
        ok(&rig.cowctl(&strs(&prune_args(&rig))));
        let listed: Vec<String> = manifests(&rig).into_iter().map(|m| m.id).collect();
        assert_eq!(
            listed,
            std::slice::from_ref(&newest),
            "{context}: prune run again"
        );
        check_repo(&rig, &|id| known.get(id).cloned(), &context);
    }
}
