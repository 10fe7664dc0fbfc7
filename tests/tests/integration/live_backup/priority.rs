//! Prioritized ranges are copied before the rest.

use std::time::{Duration, Instant};

use cowd::control::api::BackupState;
use cowd_tests::cli::{cowctl_at, ok, partial, start};
use cowd_tests::files::read_at;
use cowd_tests::live::{fill_random, start_backup, status_of};
use cowd_tests::{Daemon, MIB};

#[test]
fn prioritized_ranges_are_copied_first() {
    let d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 8);
    let to = dir.join("b.img");
    let started = start_backup(&d, &to, &["--max-rate", "10"]);
    ok(&cowctl_at(
        &d.control,
        &["prioritize", "disk", "120M", "4M"],
    ));
    let prioritized = read_at(&image, 120 * MIB, (4 * MIB) as usize);
    let deadline = Instant::now() + Duration::from_secs(6);
    let target = partial(&to);
    loop {
        if read_at(&target, 120 * MIB, (4 * MIB) as usize) == prioritized {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the prioritized range 120M+4M is not in the target after 6 s: {:?}",
            status_of(&d.control, &started.id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = status_of(&d.control, &started.id);
    eprintln!(
        "prioritized range copied at {}/{} blocks",
        s.blocks_done, s.blocks_total
    );
    assert_eq!(s.state, BackupState::Running, "{s:?}");
    assert!(
        s.blocks_done * 2 < s.blocks_total,
        "progress is already {}/{}",
        s.blocks_done,
        s.blocks_total
    );
    // The range just before it was not copied yet: it really came first.
    assert!(
        read_at(&target, 112 * MIB, (4 * MIB) as usize)
            .iter()
            .all(|&b| b == 0),
        "112M+4M is in the target already"
    );
    ok(&cowctl_at(&d.control, &["cancel", "disk"]));
}
