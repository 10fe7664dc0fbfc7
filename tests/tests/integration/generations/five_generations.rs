//! Five generations of a live ext4 (nbdfuse + loop, a writer running throughout, `--freeze`)
//! each restore exactly: e2fsck clean, the test's own files as they were at that generation,
//! the writer's files as `scripts/lib/fscheck.py` expects them for that freeze window, and a
//! restore done twice is the same byte for byte.

use std::collections::BTreeMap;
use std::fs::{self};
use std::process::Command;
use std::time::{Duration, Instant};

use cowd::control::api::BackupStatus;
use cowd::repo::{Blocks, Mode};
use cowd_tests::cli::{ok, path_str, start};
use cowd_tests::files::{assert_same_file, require_root_and};
use cowd_tests::fswriter;
use cowd_tests::mounts::Attached;
use cowd_tests::repo::{Ctl, figures};
use cowd_tests::{Daemon, MIB, run};

use super::{StaticFiles, assert_same_files, change_files, files_under, rng};

/// What one generation must hold.
#[derive(Debug)]
struct Generation {
    id: String,
    frozen_at: String,
    thawed_at: String,
    files: BTreeMap<String, String>,
}

#[test]
fn five_generations_of_a_live_ext4_restore_exactly() {
    require_root_and(&[
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount",
    ]);
    let began = Instant::now();
    let mut rng = rng("five_generations");
    let d = start(Daemon::builder().export("disk", 512 * MIB));
    let dir = d.dir().to_owned();
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    // Declared after the daemon: dropped (unmounted, detached) while cowd still serves.
    let mut att = Attached::default();
    let mnt = dir.join("mnt");
    let dev = att.ext4_on_export(&d.uri("disk"), &dir.join("fuse"), &mnt);

    let mut files = StaticFiles::new(&mnt.join("static"));
    for (i, len) in [0, 1, 4095, 4096, 65537, 300_000, 1 << 20, 3 << 20]
        .into_iter()
        .enumerate()
    {
        files.add(&format!("file{i}.bin"), len);
    }
    for i in 0..8 {
        files.add(&format!("sub/file{i}.bin"), rng.usize(1..(2 << 20)));
    }

    // The writer runs from before the first backup to after the last one.
    let (log, stop) = (dir.join("writer.log"), dir.join("stop-writer"));
    let mut writer = fswriter::start_paced(&mnt.join("live"), &log, &stop, &dir.join("writer.out"));
    std::thread::sleep(Duration::from_millis(500));
    let first_renames = fswriter::renames(&log);
    assert!(first_renames > 0, "the writer renamed no file in 0.5 s");

    let mut gens: Vec<Generation> = Vec::new();
    for g in 0..5 {
        if g > 0 {
            change_files(&mut files, g, &mut rng);
        }
        let before = fswriter::renames(&log);
        // Paced, so that the writer overwrites blocks the backup still has to copy.
        let s = ctl.backup("disk", &["--freeze", path_str(&mnt), "--max-rate", "10"]);
        // The same window as `cowctl status --json` lists it.
        let listed: Vec<BackupStatus> =
            serde_json::from_str(&ok(&ctl.run(&["--json", "status", "disk"]))).unwrap();
        let listed = listed.into_iter().find(|x| x.id == s.id).expect("listed");
        assert_eq!(listed.quiesce, format!("freeze {}", mnt.display()));
        let (frozen_at, thawed_at) = (
            listed.frozen_at.clone().expect("frozen_at"),
            listed.thawed_at.clone().expect("thawed_at"),
        );
        assert_eq!(
            (s.frozen_at.as_deref(), s.thawed_at.as_deref()),
            (Some(frozen_at.as_str()), Some(thawed_at.as_str()))
        );
        println!(
            "generation {g}: {} frozen {frozen_at} .. {thawed_at}; {:.2} s, cbw {}, moved {:.1} MiB; \
             {} files of the test, {} renames by the writer so far",
            s.id,
            s.elapsed_s,
            s.copies_before_write,
            s.moved_bytes as f64 / MIB as f64,
            files.content.len(),
            before
        );
        gens.push(Generation {
            id: s.id.clone(),
            frozen_at,
            thawed_at,
            files: files.manifest(),
        });
        std::thread::sleep(Duration::from_millis(700));
    }
    fs::write(&stop, b"").unwrap();
    writer.finish(Duration::from_secs(10));
    let renames = fswriter::renames(&log);
    assert!(
        renames > first_renames + 50,
        "the writer did not keep writing: {renames} renames, {first_renames} before the first \
         backup"
    );

    // The manifests: the first full (there was no earlier backup), then incremental, each on
    // the one before; all used blocks of ext4 (frozen, so the journal is clean).
    let list = ctl.manifests();
    let ids: Vec<&str> = list.iter().map(|m| m.id.as_str()).collect();
    let want: Vec<&str> = gens.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, want);
    for (g, m) in list.iter().enumerate() {
        println!("  {}", figures(m));
        assert_eq!(
            (m.blocks, m.filesystem.as_deref()),
            (Blocks::Used, Some("ext4")),
            "generation {g}"
        );
        if g == 0 {
            assert_eq!((m.mode, m.parent.as_deref()), (Mode::Full, None));
            assert_eq!(
                m.full_reason.as_deref(),
                Some("no earlier backup of this export in the repository")
            );
        } else {
            assert_eq!(
                (m.mode, m.parent.as_deref(), m.full_reason.as_deref()),
                (Mode::Incremental, Some(gens[g - 1].id.as_str()), None),
                "generation {g}"
            );
            assert!(m.counts.chunks_inherited > 0, "{}", figures(m));
        }
    }
    // The live filesystem is clean too once unmounted.
    att.umount(&mnt);
    run(Command::new("e2fsck").arg("-fn").arg(&dev));

    // Each generation restored twice, in a shuffled order.
    let mut order: Vec<(usize, usize)> = (0..5).flat_map(|g| [(g, 0), (g, 1)]).collect();
    rng.shuffle(&mut order);
    println!("restore order: {order:?}");
    for &(g, k) in &order {
        let gen_ = &gens[g];
        let img = dir.join(format!("restored-{g}-{k}.img"));
        let t = Instant::now();
        ctl.restore(&gen_.id, &img);
        let took = t.elapsed();
        run(Command::new("e2fsck").arg("-fn").arg(&img));
        let at = dir.join(format!("restored-{g}-{k}"));
        att.mount(&["-o", "ro,noload,loop", path_str(&img)], &at);
        assert_same_files(
            &files_under(&at.join("static")),
            &gen_.files,
            &format!("generation {g} (restore {k})"),
        );
        let summary = fswriter::fscheck(&at.join("live"), &log, &gen_.frozen_at, &gen_.thawed_at);
        att.umount(&at);
        println!("restore {k} of generation {g} in {took:.2?}: {summary}");
    }
    for g in 0..5 {
        assert_same_file(
            &dir.join(format!("restored-{g}-0.img")),
            &dir.join(format!("restored-{g}-1.img")),
        );
    }
    let (report, code) = ctl.verify_all();
    assert!(report.is_ok() && code == Some(0), "{report:?}");
    println!(
        "five generations: {renames} renames by the writer; verified {} chunks; took {:.1?}",
        report.chunks_checked,
        began.elapsed()
    );
}
