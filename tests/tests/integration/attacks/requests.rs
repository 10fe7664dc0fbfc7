//! Bad transmission requests: a bad magic closes only that connection, writes over the maximum
//! payload, and invalid requests (wrapping 2^64, beyond the end, unknown commands and flags) get
//! EINVAL with the connection kept.

use std::io::Write;

use cowd::nbd::proto::*;
use cowd_tests::files::read_at;
use cowd_tests::nbd::{Client, MAX_PAYLOAD, request_bytes};
use cowd_tests::{Daemon, pattern};

use super::{Bad, SIZE, expect_error, healthy, qemu_reads, ready, round_trip};

#[test]
fn bad_request_magic_closes_only_that_connection() {
    let mut d = Daemon::with_disk(SIZE);
    for structured in [false, true] {
        let mut a = ready(&d, structured);
        let mut b = ready(&d, !structured);
        round_trip(&mut a, 0, 71);
        let mut bad = request_bytes(CMD_READ, 0, 9, 0, 4096);
        bad[3] ^= 1;
        a.send(&bad);
        a.expect_closed("bad request magic");
        round_trip(&mut b, 4096, 72);
        // A reply magic is no request magic either.
        let mut bad = request_bytes(CMD_READ, 0, 9, 0, 4096);
        bad[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b.send(&bad);
        b.expect_closed("reply magic in a request");
        healthy(&mut d);
    }
    qemu_reads(&d);
}

#[test]
fn writes_over_the_maximum_payload() {
    // Room for a refused 33 MiB WRITE at 64 MiB, away from what the healthy checks write.
    let mut d = Daemon::with_disk(128 << 20);
    let big = vec![0xa5u8; 33 << 20];
    for structured in [false, true] {
        let mut c = ready(&d, structured);
        let what = format!("33 MiB WRITE (structured: {structured})");
        expect_error(
            &mut c,
            (&what, CMD_WRITE, 0, 64 << 20, 33 << 20, &big, EOVERFLOW),
        );
        c.disconnect();
        healthy(&mut d);
    }
    assert!(
        read_at(d.image("disk"), 64 << 20, 33 << 20)
            .iter()
            .all(|&b| b == 0),
        "a refused WRITE changed the image"
    );
    // Exactly the maximum is fine.
    let mut c = ready(&d, true);
    let max = pattern(81, MAX_PAYLOAD as usize);
    let w = c.cookie();
    c.request(CMD_WRITE, 0, w, 32 << 20, MAX_PAYLOAD, &max);
    assert_eq!(c.reply().error, 0, "32 MiB WRITE");
    let r = c.cookie();
    c.request(CMD_READ, 0, r, 32 << 20, MAX_PAYLOAD, &[]);
    let got = c.reply();
    assert!(got.error == 0 && got.data == max, "32 MiB READ");
    // A payload of 2^32-1 bytes cannot be drained: the connection is closed.
    let cookie = c.cookie();
    let mut b = c.encode(CMD_WRITE, 0, cookie, 0, u32::MAX, &[]);
    b.extend_from_slice(&[0u8; 64 << 10]);
    let _ = c.s.write_all(&b);
    c.expect_closed("WRITE of 2^32-1 bytes");
    healthy(&mut d);
    qemu_reads(&d);
}

/// Invalid requests, each answered with its errno on a connection that stays usable.
fn invalid_requests(c: &mut Client) {
    let page = &pattern(91, 4096)[..];
    let none = &[][..];
    let wrap = u64::MAX - 4095;
    #[rustfmt::skip]
    let cases: [Bad<'_>; 14] = [
        ("command 42", 42, 0, 0, 4096, none, EINVAL),
        ("command 0xffff", 0xffff, 0, 0, 4096, none, EINVAL),
        ("READ flag bit 9", CMD_READ, 1 << 9, 0, 4096, none, EINVAL),
        ("READ flag bit 15", CMD_READ, 1 << 15, 0, 4096, none, EINVAL),
        ("READ with REQ_ONE", CMD_READ, CMD_FLAG_REQ_ONE, 0, 4096, none, EINVAL),
        ("WRITE flag bit 9", CMD_WRITE, 1 << 9, 0, 4096, page, EINVAL),
        ("WRITE with DF", CMD_WRITE, CMD_FLAG_DF, 0, 4096, page, EINVAL),
        ("READ wrapping 2^64", CMD_READ, 0, wrap, 8192, none, EINVAL),
        ("READ past the end", CMD_READ, 0, SIZE - 2048, 4096, none, EINVAL),
        ("READ at 2^63", CMD_READ, 0, 1 << 63, 4096, none, EINVAL),
        ("zero-length READ", CMD_READ, 0, 0, 0, none, EINVAL),
        ("READ of 2^32-1", CMD_READ, 0, 0, u32::MAX, none, EINVAL),
        ("READ over the maximum", CMD_READ, 0, 0, MAX_PAYLOAD + 1, none, EINVAL),
        ("WRITE wrapping 2^64", CMD_WRITE, 0, wrap, 4096, page, ENOSPC),
    ];
    for bad in cases {
        expect_error(c, bad);
    }
}

#[test]
fn invalid_requests_get_einval() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = ready(&d, false);
    invalid_requests(&mut c);
    let df = (
        "DF, no structured replies",
        CMD_READ,
        CMD_FLAG_DF,
        0,
        4096,
        &[][..],
        EINVAL,
    );
    expect_error(&mut c, df);
    c.disconnect();
    healthy(&mut d);

    let mut c = ready(&d, true);
    invalid_requests(&mut c);
    // With structured replies DF is allowed: the data comes in one chunk.
    round_trip(&mut c, 8192, 92);
    let cookie = c.cookie();
    c.request(CMD_READ, CMD_FLAG_DF, cookie, 8192, 4096, &[]);
    let r = c.reply();
    assert_eq!((r.error, r.chunks.len()), (0, 1), "READ with DF: {r:?}");
    assert!(r.data == pattern(92, 4096));
    c.disconnect();
    healthy(&mut d);
    qemu_reads(&d);
}
