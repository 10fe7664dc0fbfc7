//! Requests in flight: reused cookies and 64 pipelined requests, NBD_CMD_DISC with writes in
//! flight, a disconnect in the middle of a write payload frees the connection.

use std::collections::HashSet;
use std::io::Read;
use std::time::{Duration, Instant};

use cowd::nbd::proto::*;
use cowd_tests::files::read_at;
use cowd_tests::nbd::{Client, be64};
use cowd_tests::{Daemon, pattern};

use super::{SIZE, healthy, qemu_reads, ready, round_trip};

#[test]
fn reused_cookies_and_64_pipelined_requests() {
    let mut d = Daemon::with_disk(SIZE);
    for structured in [false, true] {
        let mut c = ready(&d, structured);
        let base = if structured { 8 << 20 } else { 0 };
        let len = 64u32 << 10;
        let block = |i: u64| pattern(1000 * u64::from(structured) + i, len as usize);
        // 64 WRITEs sent before reading any reply.
        let mut batch = Vec::new();
        for i in 0..64 {
            let off = base + i * u64::from(len);
            batch.extend(c.encode(CMD_WRITE, 0, 100 + i, off, len, &block(i)));
        }
        c.send(&batch);
        let mut seen = HashSet::new();
        for _ in 0..64 {
            let r = c.reply();
            assert_eq!(r.error, 0, "pipelined WRITE {}", r.cookie);
            assert!(seen.insert(r.cookie), "cookie {} answered twice", r.cookie);
        }
        // 64 READs sent before reading any reply, matched by cookie.
        let mut batch = Vec::new();
        for i in 0..64 {
            let off = base + i * u64::from(len);
            batch.extend(c.encode(CMD_READ, 0, 200 + i, off, len, &[]));
        }
        c.send(&batch);
        let mut seen = HashSet::new();
        for _ in 0..64 {
            let r = c.reply();
            let i = r.cookie - 200;
            assert!(r.error == 0 && r.data == block(i), "pipelined READ {i}");
            assert!(seen.insert(i), "cookie {} answered twice", r.cookie);
        }
        // Two READs in flight with the same cookie: both answered.
        let mut batch = c.encode(CMD_READ, 0, 7, base, len, &[]);
        batch.extend(c.encode(CMD_READ, 0, 7, base, len, &[]));
        c.send(&batch);
        for _ in 0..2 {
            let r = c.reply();
            assert!(
                r.cookie == 7 && r.error == 0 && r.data == block(0),
                "reused cookie"
            );
        }
        c.disconnect();
        healthy(&mut d);
    }
    qemu_reads(&d);
}

#[test]
fn disc_with_writes_in_flight() {
    let mut d = Daemon::with_disk(SIZE);
    let len = 64usize << 10;
    for structured in [false, true] {
        let base = if structured { 4u64 << 20 } else { 0 };
        let block = |i: u64| pattern(2000 + 100 * u64::from(structured) + i, len);
        let mut c = ready(&d, structured);
        let mut batch = Vec::new();
        for i in 0..32 {
            let off = base + i * len as u64;
            batch.extend(c.encode(CMD_WRITE, 0, 1 + i, off, len as u32, &block(i)));
        }
        batch.extend(c.encode(CMD_DISC, 0, 99, 0, 0, &[]));
        c.send(&batch);
        let mut seen = HashSet::new();
        for _ in 0..32 {
            let r = c.reply();
            assert_eq!(r.error, 0, "WRITE {} before DISC", r.cookie);
            assert!(seen.insert(r.cookie));
        }
        c.expect_closed("after DISC (no reply to DISC)");
        let img = read_at(d.image("disk"), base, 32 * len);
        for (i, got) in img.chunks(len).enumerate() {
            assert!(got == block(i as u64), "write {i} before DISC did not land");
        }
        healthy(&mut d);
    }
    qemu_reads(&d);
}

/// A connection admitted (greeted) by the daemon within `limit`, retrying refused ones.
fn admitted_within(d: &Daemon, limit: Duration) -> Client {
    let deadline = Instant::now() + limit;
    loop {
        let mut c = Client::connect(d);
        let mut g = [0u8; 18];
        if c.s.read_exact(&mut g).is_ok() {
            assert_eq!(be64(&g, 0), NBDMAGIC);
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no connection admitted within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client gone halfway through a WRITE payload must not keep its connection (thread,
/// connection slot) alive: with two slots, two clients must fit again soon after.
#[test]
fn disconnect_mid_write_payload_frees_the_connection() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--max-connections", "2"])
        .start();
    for structured in [false, true] {
        let mut c = ready(&d, structured);
        let cookie = c.cookie();
        let mut b = c.encode(CMD_WRITE, 0, cookie, 0, 64 << 10, &[]);
        b.extend_from_slice(&[7u8; 1000]);
        c.send(&b);
        drop(c);
        let both = [0, 1].map(|_| admitted_within(&d, Duration::from_secs(3)));
        for (i, mut c) in both.into_iter().enumerate() {
            c.send(&(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES).to_be_bytes());
            c.go("disk", &[]);
            round_trip(&mut c, i as u64 * 4096, 101);
            c.disconnect();
        }
        healthy(&mut d);
    }
    qemu_reads(&d);
}
