//! Point in time and no write lost (invariants 1 and 2): four libnbd writers overwrite the
//! whole export (writes, zeroes, trims) during a backup; the backup is the image at T, the
//! device is the writers' model.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;

use cowd::control::api::BackupState;
use cowd_tests::cli::{partial, start};
use cowd_tests::files::assert_same_image;
use cowd_tests::live::{Writers, copy, ops, print_figures, start_backup, status_of, wait_end};
use cowd_tests::{Daemon, KIB, MIB, pattern, require};

#[test]
fn writers_overwrite_everything_during_a_backup() {
    require("nbdcopy");
    let d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    // Fill through NBD with nbdcopy: random data with an 8 MiB run of zeroes and a few zero
    // blocks (so the backup also has holes at T that writers then fill).
    let src = dir.join("src.img");
    {
        let f = File::create(&src).unwrap();
        for i in 0..16u64 {
            let mut data = pattern(7000 + i, (8 * MIB) as usize);
            if i == 5 {
                data.fill(0);
            }
            if i == 9 {
                data[..(64 * KIB) as usize].fill(0);
                data[(200 * KIB) as usize..(328 * KIB) as usize].fill(0);
            }
            f.write_all_at(&data, i * 8 * MIB).unwrap();
        }
    }
    cowd_tests::run(Command::new("nbdcopy").arg(&src).arg(d.uri("disk")));
    let image = d.image("disk").to_owned();
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    assert_same_image(&reference, &src, "the image after nbdcopy");

    let to = dir.join("b.img");
    let model = dir.join("model.img");
    let writers = Writers::overwrite_on_go(&d, &reference, &model, 4, 1);
    let started = start_backup(&d, &to, &["--max-rate", "40"]);
    writers.go();
    let end = wait_end(&d.control, &started.id);
    let stats = writers.finish();
    print_figures("overwrite", &end);
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert!(ops(&stats, "write") > 100 && ops(&stats, "trim") > 0 && ops(&stats, "zero") > 0);
    assert_same_image(&to, &reference, "the backup (point in time)");
    assert!(!partial(&to).exists());
    assert_same_image(&image, &model, "the device (writes through NBD)");
    let s = status_of(&d.control, &started.id);
    assert!(
        s.copies_before_write > 0,
        "no copy before write: the writers did not overwrite pending blocks: {s:?}"
    );
    assert!(s.container_peak <= s.container_slots, "{s:?}");
    assert_eq!(
        (s.blocks_done, s.container_used),
        (s.blocks_total, 0),
        "{s:?}"
    );
}
