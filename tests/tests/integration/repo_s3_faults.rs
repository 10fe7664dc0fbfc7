//! Faults between cowd and its object store (the RADOS Gateway of `cowd_tests::rgw`, behind
//! the fault-injecting proxy of `cowd_tests::faultproxy`, or across a test network): every
//! third request answered 503 SlowDown, slow answers and a network blip are retried through;
//! 503s that outlast the retry time and a network cut fail the running backup, saying why.
//! Then nothing half-written lists as a backup or stays pinned, and the next backup, prune with
//! gc, verify and exact restores work. (The store killed mid-backup: `repo_s3`.)

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cowd_tests::cli::{backup_into, cowctl, ok, start};
use cowd_tests::faultproxy::{Counts, Fault, FaultProxy};
use cowd_tests::netns::Net;
use cowd_tests::rgw::Rgw;
use cowd_tests::{Daemon, DaemonBuilder, MIB, nbd_writes, pattern};

use crate::repo_s3::{both, restore, snapshot};

/// The bucket and the repository of every test here.
const BUCKET: &str = "faults";
const REPO: &str = "s3://faults/r";

/// A gateway with the bucket, and a fault proxy in front of it.
fn proxied() -> (Rgw, FaultProxy) {
    let rgw = Rgw::start();
    rgw.create_bucket(BUCKET);
    let proxy = FaultProxy::start(&rgw.endpoint);
    (rgw, proxy)
}

/// A daemon with export `disk` (16 MiB, pseudo-random data in its first 12 MiB) whose S3
/// requests go to `endpoint` and are retried for `retry_timeout`.
fn daemon(rgw: &Rgw, b: DaemonBuilder, endpoint: &str, retry_timeout: &str, seed: u64) -> Daemon {
    let b = b
        .export("disk", 16 * MIB)
        .args(&["--s3-retry-timeout", retry_timeout]);
    let d = start(rgw.client(b, endpoint));
    let f = fs::File::options()
        .write(true)
        .open(d.image("disk"))
        .unwrap();
    f.write_all_at(&pattern(seed, (12 * MIB) as usize), 0)
        .unwrap();
    d
}

/// New data through NBD (so that the change map sees it): each 4 MiB chunk of the first
/// 12 MiB filled with a byte of its own, from `first`.
fn change_chunks(d: &Daemon, first: u8) {
    nbd_writes(
        &d.uri("disk"),
        &[
            (first, 0, 4 * MIB),
            (first + 1, 4 * MIB, 4 * MIB),
            (first + 2, 8 * MIB, 4 * MIB),
        ],
    );
}

/// Starts a backup of `disk` into the repository held to `rate` MiB/s: its id.
fn start_backup(d: &Daemon, rate: &str) -> String {
    let args = [
        "start-backup",
        "disk",
        "--repo",
        REPO,
        "--no-quiesce",
        "--max-rate",
        rate,
    ];
    let out = ok(&cowctl(d, &args));
    out.split(' ').nth(1).unwrap().to_owned()
}

/// The state of backup `id` of `d` (running, done, failed, cancelled).
fn state(d: &Daemon, id: &str) -> String {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&cowctl(d, &["status", "--json", "disk"]))).unwrap();
    let b = all
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no backup {id}: {all:?}"));
    b["state"].as_str().unwrap().to_owned()
}

/// The chunk objects in the bucket (read from the gateway, around any fault).
fn chunks(rgw: &Rgw) -> Vec<String> {
    rgw.keys(BUCKET, "r/chunks/")
}

/// Waits until the bucket holds a chunk it did not hold at the call: the backup under way
/// stored one.
fn wait_for_a_chunk(rgw: &Rgw) {
    let stored = chunks(rgw).len();
    wait_until("the backup's first chunk", || chunks(rgw).len() > stored);
}

/// Polls `done` until it holds (panics after 30 s, naming `what`).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "waited 30 s for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `step`, asserting that the proxy injected faults while it ran.
fn faulted<T>(proxy: &FaultProxy, what: &str, step: impl FnOnce() -> T) -> T {
    let before = proxy.counts();
    let r = step();
    let after = proxy.counts();
    let injected = |c: Counts| c.unavailable + c.delayed;
    assert!(
        injected(after) > injected(before),
        "no fault injected during {what}: {before:?} -> {after:?}"
    );
    r
}

/// Follows backup `id` to its end (giving up after 60 s: a retry that never ends is a
/// failure too), asserting that it failed: the text of its failure.
fn wait_failed(d: &Daemon, id: &str) -> String {
    let out = cowctl(d, &["wait", id, "--timeout", "60s"]);
    let text = both(&out);
    assert!(
        !out.status.success() && text.contains(&format!("backup {id} of disk failed")),
        "{text}"
    );
    text
}

/// After a failed backup: only the `complete` backups list, and the bucket holds no object of
/// another backup.
fn only_complete_backups_list(rgw: &Rgw, d: &Daemon, complete: &[&str]) {
    let list = ok(&cowctl(d, &["backups", "--repo", REPO]));
    let listed = list.lines().filter(|l| l.starts_with("disk-")).count();
    assert_eq!(listed, complete.len(), "{list}");
    for id in complete {
        assert!(list.contains(id), "{list}");
    }
    let keys = rgw.keys(BUCKET, "r/backups/");
    assert!(
        keys.iter().all(|k| complete
            .iter()
            .any(|id| k.starts_with(&format!("r/backups/{id}/")))),
        "{keys:?}"
    );
}

/// Every backup of `all` (id, image at its time) verifies and restores exactly, and no pin
/// stays in the bucket.
fn all_verify_and_restore(rgw: &Rgw, d: &Daemon, all: &[(&str, &Path)]) {
    let out = ok(&cowctl(d, &["verify", "--repo", REPO]));
    assert!(
        out.contains(&format!("{} backups verified", all.len())),
        "{out}"
    );
    for (id, image) in all {
        restore(d, REPO, id, image);
    }
    assert_eq!(rgw.keys(BUCKET, "r/pins/"), Vec::<String>::new());
}

#[test]
fn every_third_request_answered_503_is_retried_through() {
    let (rgw, proxy) = proxied();
    let d = daemon(&rgw, Daemon::builder(), &proxy.endpoint, "60s", 1);
    proxy.set(Fault::ServiceUnavailable { every: 3 });

    faulted(&proxy, "init", || ok(&cowctl(&d, &["repo", "init", REPO])));
    let full = faulted(&proxy, "a full backup", || backup_into(&d, "disk", REPO));
    let at_full = snapshot(&d, "full.img");
    nbd_writes(&d.uri("disk"), &[(0x11, 0, 65536), (0x22, 13 * MIB, 4096)]);
    let incr = faulted(&proxy, "an incremental backup", || {
        backup_into(&d, "disk", REPO)
    });
    let at_incr = snapshot(&d, "incr.img");
    let list = ok(&cowctl(&d, &["backups", "--repo", REPO]));
    assert!(list.contains("incr"), "{list}");
    let out = faulted(&proxy, "verify", || {
        ok(&cowctl(&d, &["verify", "--repo", REPO]))
    });
    assert!(out.contains("2 backups verified"), "{out}");
    faulted(&proxy, "restores", || {
        restore(&d, REPO, &full, &at_full);
        restore(&d, REPO, &incr, &at_incr);
    });
    // About one request in three was refused.
    let c = proxy.counts();
    assert!(c.unavailable * 4 > c.requests, "{c:?}");
}

#[test]
fn slow_answers_hold_a_backup_and_a_restore_up_but_not_off() {
    let (rgw, proxy) = proxied();
    // Each request is slower than object_store's first backoff, far from its timeout.
    let d = daemon(&rgw, Daemon::builder(), &proxy.endpoint, "10s", 2);
    ok(&cowctl(&d, &["repo", "init", REPO]));
    proxy.set(Fault::Delay {
        min: Duration::from_millis(150),
        max: Duration::from_millis(300),
    });
    let id = faulted(&proxy, "a backup", || backup_into(&d, "disk", REPO));
    let image = snapshot(&d, "backup.img");
    faulted(&proxy, "a restore", || restore(&d, REPO, &id, &image));
    let c = proxy.counts();
    assert_eq!(c.unavailable, 0, "{c:?}");
    assert!(c.delayed > 10, "{c:?}");
}

#[test]
fn a_backup_answered_503_past_its_retry_time_fails_cleanly() {
    let (rgw, proxy) = proxied();
    let d = daemon(&rgw, Daemon::builder(), &proxy.endpoint, "5s", 3);
    ok(&cowctl(&d, &["repo", "init", REPO]));
    let first = backup_into(&d, "disk", REPO);
    let at_first = snapshot(&d, "first.img");

    // A backup of new data held to 2 MiB/s; every request answered 503 from its first stored
    // chunk on.
    change_chunks(&d, 0x41);
    let stored = chunks(&rgw);
    let id = start_backup(&d, "2");
    wait_for_a_chunk(&rgw);
    proxy.set(Fault::ServiceUnavailable { every: 1 });
    assert_eq!(state(&d, &id), "running", "it ended before the fault");
    let refused = proxy.counts().unavailable;
    let text = wait_failed(&d, &id);
    assert!(
        text.contains(REPO) && text.contains("503 Service Unavailable"),
        "{text}"
    );
    assert!(proxy.counts().unavailable > refused + 5);
    // What it stored no backup uses (the next one changes every chunk again).
    let orphans: Vec<String> = chunks(&rgw)
        .into_iter()
        .filter(|k| !stored.contains(k))
        .collect();
    assert!(!orphans.is_empty());

    // The store answers again: the next backup works, gc removes the failed one's chunks.
    proxy.set(Fault::None);
    only_complete_backups_list(&rgw, &d, &[&first]);
    change_chunks(&d, 0x61);
    let next = backup_into(&d, "disk", REPO);
    let at_next = snapshot(&d, "next.img");
    let out = ok(&cowctl(
        &d,
        &["prune", "disk", "--keep-last", "9", "--repo", REPO],
    ));
    assert!(
        out.contains("nothing to remove") && out.contains("gc: removed"),
        "{out}"
    );
    let left = chunks(&rgw);
    assert!(
        orphans.iter().all(|k| !left.contains(k)),
        "the failed backup's chunks stay: {orphans:?}\n{out}"
    );
    all_verify_and_restore(&rgw, &d, &[(&first, &at_first), (&next, &at_next)]);
}

#[test]
fn a_network_blip_is_ridden_out_and_a_cut_fails_the_backup_cleanly() {
    // Dropped last: the daemon in its namespace is gone by then.
    let net = Net::new(1);
    let rgw = Rgw::start_on(&net.server());
    rgw.create_bucket(BUCKET);
    // A request unanswered for 1 s times out and is retried, for up to 8 s.
    let builder = Daemon::builder()
        .namespace(net.namespace(0))
        .args(&["--s3-timeout", "1s"]);
    let d = daemon(&rgw, builder, &rgw.endpoint, "8s", 4);
    ok(&cowctl(&d, &["repo", "init", REPO]));
    let first = backup_into(&d, "disk", REPO);
    let at_first = snapshot(&d, "first.img");

    // A backup of new data held to 2 MiB/s (a chunk stored every 2 s); the host's link down
    // for 3 s once it stored one: what is sent meanwhile is lost and connecting fails, so the
    // backup's requests time out or fail, then succeed when retried after the blip. (A blip
    // shorter than the request timeout TCP's retransmissions ride out by themselves.)
    change_chunks(&d, 0x41);
    let blipped = start_backup(&d, "2");
    wait_for_a_chunk(&rgw);
    net.cut(0);
    std::thread::sleep(Duration::from_secs(3));
    net.mend(0);
    assert_eq!(
        state(&d, &blipped),
        "running",
        "it ended before the blip did"
    );
    ok(&cowctl(&d, &["wait", &blipped, "--timeout", "60s"]));
    // object_store logs each retry: the blip did fail requests.
    let log = d.log();
    assert!(log.contains("backing off"), "no request retried:\n{log}");
    let at_blipped = snapshot(&d, "blipped.img");

    // The same, but the link stays down past the retry time: the backup fails, and says why.
    change_chunks(&d, 0x51);
    let cut = start_backup(&d, "2");
    wait_for_a_chunk(&rgw);
    net.cut(0);
    assert_eq!(state(&d, &cut), "running", "it ended before the cut");
    let text = wait_failed(&d, &cut);
    assert!(
        text.contains(REPO) && text.contains("error sending request"),
        "{text}"
    );

    // The link back: the next backup works, and every complete one restores exactly.
    net.mend(0);
    only_complete_backups_list(&rgw, &d, &[&first, &blipped]);
    change_chunks(&d, 0x61);
    let next = backup_into(&d, "disk", REPO);
    let at_next = snapshot(&d, "next.img");
    all_verify_and_restore(
        &rgw,
        &d,
        &[
            (&first, &at_first),
            (&blipped, &at_blipped),
            (&next, &at_next),
        ],
    );
}
