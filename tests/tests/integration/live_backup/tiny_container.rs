//! A tiny container: writers are throttled and wait for the mover, and the backup stays exact.

use cowd::control::api::BackupState;
use cowd_tests::cli::start;
use cowd_tests::files::assert_same_image;
use cowd_tests::live::{Writers, copy, fill_random, ops, print_figures, start_backup, wait_end};
use cowd_tests::{Daemon, MIB};

#[test]
fn a_tiny_container_throttles_and_waits() {
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 2);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let to = dir.join("b.img");
    let model = dir.join("model.img");
    let writers = Writers::overwrite_on_go(&d, &reference, &model, 4, 2);
    let started = start_backup(
        &d,
        &to,
        &[
            "--container-size",
            "1M",
            "--block-size",
            "64K",
            "--on-overflow",
            "block-writes",
            "--max-rate",
            "20",
        ],
    );
    writers.go();
    let end = wait_end(&d.control, &started.id);
    let stats = writers.finish();
    print_figures("tiny container", &end);
    eprintln!(
        "tiny container: throttled_writes {}, waited_writes {}, container_peak {} of {} slots",
        end.throttled_writes, end.waited_writes, end.container_peak, end.container_slots
    );
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert!(
        end.container_slots > 0 && end.container_slots <= 16,
        "a 1 MiB container holds at most 16 blocks of 64 KiB: {end:?}"
    );
    assert!(end.container_peak <= end.container_slots, "{end:?}");
    assert!(end.copies_before_write > 0, "{end:?}");
    assert!(
        end.throttled_writes + end.waited_writes > 0,
        "writers overwrote {} pending blocks through a container of {} slots without ever being \
         throttled or waiting: {end:?}",
        end.copies_before_write,
        end.container_slots
    );
    assert!(ops(&stats, "write") > 0);
    assert_same_image(&to, &reference, "the backup (point in time)");
    assert_same_image(&image, &model, "the device (writes through NBD)");
}
