//! Attacks on a live cowd over raw Unix sockets.
//!
//! Every test starts its own daemon and talks to it through `Client`, the harness's raw NBD
//! client (`cowd_tests::nbd`), which writes each byte by hand, so it can send what well-behaved
//! clients never do: the inputs of past NBD-server CVEs (names of 0, 4096, 4097 and 2^32-1
//! bytes, option lengths that lie, options out of order, bad magics, requests wrapping 2^64, oversized payloads, unknown
//! commands and flags, reused cookies, idle sockets, disconnects at every byte). After each
//! attack the daemon must still run and serve a well-behaved client ([`healthy`]); at the end
//! of each test a real NBD client (qemu-io) must still read from it ([`qemu_reads`]).
//!
//! Test sockets have read and write timeouts: a server that stops answering fails the test
//! instead of hanging it. One file per kind of attack; the fixtures below are shared.

mod export_names;
mod handshake;
mod in_flight;
mod meta_context;
mod options;
mod requests;
mod resources;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cowd::nbd::proto::*;
use cowd_tests::nbd::Client;
use cowd_tests::{Daemon, pattern, require, run};

/// Size of the test exports.
const SIZE: u64 = 16 << 20;

// Fixtures of the attack scenarios: well-behaved usage after each attack.

/// A client in the transmission phase on export `disk`.
fn ready(d: &Daemon, structured: bool) -> Client {
    let mut c = Client::haggling(d);
    if structured {
        c.structured_reply();
    }
    c.go("disk", &[INFO_BLOCK_SIZE]);
    c
}

/// Writes 4 KiB of pattern `seed` at `offset` and reads it back.
fn round_trip(c: &mut Client, offset: u64, seed: u64) {
    let data = pattern(seed, 4096);
    let w = c.cookie();
    c.request(CMD_WRITE, 0, w, offset, 4096, &data);
    let r = c.reply();
    assert_eq!((r.cookie, r.error), (w, 0), "round trip write");
    let rd = c.cookie();
    c.request(CMD_READ, 0, rd, offset, 4096, &[]);
    let r = c.reply();
    assert_eq!((r.cookie, r.error), (rd, 0), "round trip read");
    assert!(r.data == data, "round trip read returned other data");
}

static SEED: AtomicU64 = AtomicU64::new(1);

/// The daemon runs, nothing panicked, and a fresh well-behaved client promptly negotiates and
/// does a write + read round trip (alternately with simple and structured replies).
fn healthy(d: &mut Daemon) {
    assert!(d.running(), "cowd died:\n{}", d.log());
    let t = Instant::now();
    let seed = SEED.fetch_add(1, Ordering::Relaxed);
    let mut c = ready(d, seed % 2 == 0);
    round_trip(&mut c, SIZE - (1 << 20) + (seed % 256) * 4096, seed);
    c.disconnect();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "good client took {took:?}");
    assert!(d.running(), "cowd died:\n{}", d.log());
    assert!(!d.log().contains("panicked"), "cowd panicked:\n{}", d.log());
}

/// qemu-io can still read through the daemon.
fn qemu_reads(d: &Daemon) {
    require("qemu-io");
    let out = run(Command::new("qemu-io")
        .args(["-f", "raw", "-c", "read 0 4k"])
        .arg(d.uri("disk")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("read 4096/4096 bytes"),
        "qemu-io said: {text}"
    );
}

/// A request that must fail: (what, command, flags, offset, length, payload, errno).
type Bad<'a> = (&'a str, u16, u16, u64, u32, &'a [u8], u32);

/// Sends a request that must fail with its errno (and nothing else: no data, one final error
/// chunk when structured), then checks the connection still works.
fn expect_error(c: &mut Client, bad: Bad<'_>) {
    let (what, cmd, flags, offset, len, payload, errno) = bad;
    let cookie = c.cookie();
    c.request(cmd, flags, cookie, offset, len, payload);
    let r = c.reply();
    assert_eq!(r.cookie, cookie, "{what}");
    assert_eq!(r.error, errno, "{what}: errno");
    assert!(r.data.is_empty(), "{what}: data with an error");
    if c.structured {
        let want = vec![(REPLY_FLAG_DONE, REPLY_TYPE_ERROR)];
        assert_eq!(r.chunks, want, "{what}: expected one final error chunk");
    }
    round_trip(c, 64 << 10, cookie);
}
