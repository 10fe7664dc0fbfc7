//! The change map: after kill -9 the next auto backup is full (and says why), after a clean stop
//! incremental, after the image changed while cowd was stopped full with the change in it; after
//! a raw backup in between the map counts from that one, so an incremental is refused.

use std::fs::{self};
use std::process::Command;
use std::time::{Duration, Instant};

use cowd::repo::Mode;
use cowd_tests::cli::{failed, kill_9, path_str, restart, start};
use cowd_tests::files::{assert_same_file, fill, read_at};
use cowd_tests::repo::{Ctl, figures};
use cowd_tests::{Daemon, MIB, nbd_writes, pattern, run};

use super::BLOCK;

#[test]
fn kill_9_between_backups_makes_the_next_auto_backup_full() {
    let began = Instant::now();
    let size = 64 * MIB;
    let mut d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill(&image, 0, size, 3);
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let b1 = ctl.backup("disk", &["--no-quiesce"]).id;
    nbd_writes(&d.uri("disk"), &[(0x11, 5 * MIB, BLOCK)]);

    // kill -9: the next auto backup is full, and says why.
    kill_9(&mut d);
    let mut cowd = restart(&d, &image, "cowd2.log");
    let b2 = ctl.backup("disk", &["--no-quiesce"]).id;
    let m2 = ctl.manifest(&b2);
    println!("after kill -9: {}", figures(&m2));
    assert_eq!((m2.mode, m2.parent.as_deref()), (Mode::Full, None));
    let reason = m2.full_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("cowd did not stop cleanly"),
        "full_reason {reason:?}"
    );
    assert_eq!(m2.counts.bytes_read, size);
    let r2 = dir.join("r2.img");
    ctl.restore(&b2, &r2);
    assert_same_file(&r2, &image);

    // A clean stop keeps the map: writes before the stop and after the restart are all that
    // the next auto backup reads.
    nbd_writes(&d.uri("disk"), &[(0x22, 9 * MIB, 2 * BLOCK)]);
    let st = cowd.terminate();
    assert!(st.success(), "cowd after SIGTERM: {st}");
    let mut cowd = restart(&d, &image, "cowd3.log");
    nbd_writes(&d.uri("disk"), &[(0x33, 40 * MIB, BLOCK)]);
    let b3 = ctl.backup("disk", &["--no-quiesce"]).id;
    let m3 = ctl.manifest(&b3);
    println!("after a clean restart: {}", figures(&m3));
    assert_eq!(
        (m3.mode, m3.parent.as_deref(), m3.full_reason.as_deref()),
        (Mode::Incremental, Some(b2.as_str()), None)
    );
    assert_eq!(m3.counts.bytes_read, 3 * BLOCK);
    let r3 = dir.join("r3.img");
    ctl.restore(&b3, &r3);
    assert_same_file(&r3, &image);

    // A clean stop, then the image changes behind cowd's back: full, and the change is in.
    let st = cowd.terminate();
    assert!(st.success(), "cowd after SIGTERM: {st}");
    let changed = dir.join("4k");
    fs::write(&changed, pattern(99, 4096)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    run(Command::new("dd")
        .arg(format!("if={}", changed.display()))
        .arg(format!("of={}", image.display()))
        .args([
            "bs=4096",
            "seek=3000",
            "count=1",
            "conv=notrunc",
            "status=none",
        ]));
    let _cowd = restart(&d, &image, "cowd4.log");
    let b4 = ctl.backup("disk", &["--no-quiesce"]).id;
    let m4 = ctl.manifest(&b4);
    println!("after a change while stopped: {}", figures(&m4));
    assert_eq!((m4.mode, m4.parent.as_deref()), (Mode::Full, None));
    let reason = m4.full_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("changed while cowd was not serving it"),
        "full_reason {reason:?}"
    );
    let r4 = dir.join("r4.img");
    ctl.restore(&b4, &r4);
    assert_eq!(read_at(&r4, 3000 * 4096, 4096), pattern(99, 4096));
    assert_same_file(&r4, &image);
    assert_eq!(ctl.manifests().len(), 4);
    println!(
        "kill -9 and restarts: b1 {b1}; took {:.1?}",
        began.elapsed()
    );
}

#[test]
fn incremental_refused_when_the_map_counts_from_another_backup() {
    let size = 64 * MIB;
    let d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill(&image, 0, size, 4);
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let b1 = ctl.backup("disk", &["--no-quiesce"]).id;
    nbd_writes(&d.uri("disk"), &[(0x44, 20 * MIB, BLOCK)]);
    let raw = dir.join("raw.img");
    let raw_id = ctl
        .backup_with("disk", &["--to", path_str(&raw), "--no-quiesce"])
        .id;
    assert_same_file(&raw, &image);
    nbd_writes(&d.uri("disk"), &[(0x55, 30 * MIB, BLOCK)]);

    let o = ctl.in_repo(&[
        "start-backup",
        "disk",
        "--mode",
        "incremental",
        "--no-quiesce",
    ]);
    let line = failed(&o, 1);
    println!("refused: {line}");
    assert!(
        line.contains("an incremental backup is not possible"),
        "{line}"
    );
    assert!(
        line.contains(&raw_id) && line.contains(&b1),
        "the refusal does not name both {raw_id} and {b1}: {line}"
    );
    assert_eq!(ctl.manifests().len(), 1);

    let b2 = ctl.backup("disk", &["--mode", "auto", "--no-quiesce"]).id;
    let m2 = ctl.manifest(&b2);
    println!("{}", figures(&m2));
    assert_eq!((m2.mode, m2.parent.as_deref()), (Mode::Full, None));
    let reason = m2.full_reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&raw_id) && reason.contains(&b1),
        "full_reason {reason:?}"
    );
    let r2 = dir.join("r2.img");
    ctl.restore(&b2, &r2);
    assert_same_file(&r2, &image);

    // The map now counts from b2 again.
    nbd_writes(&d.uri("disk"), &[(0x66, 50 * MIB, BLOCK)]);
    let b3 = ctl
        .backup("disk", &["--mode", "incremental", "--no-quiesce"])
        .id;
    let m3 = ctl.manifest(&b3);
    assert_eq!(
        (m3.mode, m3.parent.as_deref(), m3.counts.bytes_read),
        (Mode::Incremental, Some(b2.as_str()), BLOCK)
    );
}
