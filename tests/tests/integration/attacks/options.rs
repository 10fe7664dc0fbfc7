//! Option requests that lie: oversized ones drained and refused, an endless one cut by the
//! handshake timeout, lengths inconsistent with their fields, unknown and unsupported options.

use std::io::Write;
use std::time::{Duration, Instant};

use cowd::nbd::proto::*;
use cowd_tests::Daemon;
use cowd_tests::nbd::{Client, be32, info_data, meta_data, option_header};

use super::{SIZE, healthy, qemu_reads, round_trip};

#[test]
fn oversized_options_are_drained_and_refused() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = Client::haggling(&d);
    let mib = vec![0x55u8; 1 << 20];
    for opt in [OPT_INFO, OPT_GO, OPT_LIST, OPT_SET_META_CONTEXT, 0xbeef] {
        assert_eq!(c.ask_one(opt, &mib), REP_ERR_TOO_BIG, "1 MiB option {opt}");
        healthy(&mut d);
    }
    let over = vec![0u8; (64 << 10) + 1];
    assert_eq!(c.ask_one(OPT_GO, &over), REP_ERR_TOO_BIG, "64 KiB + 1");
    // The drained payloads left the stream in sync.
    c.structured_reply();
    c.go("disk", &[]);
    round_trip(&mut c, 0, 21);
    c.disconnect();
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn endless_option_is_cut_by_the_handshake_timeout() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--handshake-timeout", "2"])
        .start();
    let t = Instant::now();
    let mut c = Client::haggling(&d);
    // Announce 4 GiB, send the first MiB, then go silent. (Closing at once would be fine too.)
    c.send(&option_header(OPT_INFO, u32::MAX));
    let _ = c.s.write_all(&vec![0u8; 1 << 20]);
    healthy(&mut d);
    c.expect_closed("silent client with a 4 GiB option");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(6), "closed only after {took:?}");
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn option_lengths_inconsistent_with_their_fields() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = Client::haggling(&d);
    let go = info_data(b"disk", &[INFO_NAME, INFO_BLOCK_SIZE]);
    let edit = |mut v: Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
        f(&mut v);
        v
    };
    #[rustfmt::skip]
    let before_structured: [(&str, u32, Vec<u8>); 8] = [
        ("INFO shorter than a name length", OPT_INFO, vec![0, 0, 0]),
        ("INFO without its info count", OPT_INFO, go[..8].to_vec()),
        ("GO with half an info count", OPT_GO, go[..9].to_vec()),
        ("GO missing an info", OPT_GO, go[..go.len() - 2].to_vec()),
        ("GO with half an info", OPT_GO, go[..go.len() - 1].to_vec()),
        ("GO with a trailing byte", OPT_GO, edit(go.clone(), &|v| v.push(0))),
        ("LIST with data", OPT_LIST, vec![0; 4]),
        ("STRUCTURED_REPLY with data", OPT_STRUCTURED_REPLY, vec![1]),
    ];
    for (what, opt, data) in before_structured {
        assert_eq!(c.ask_one(opt, &data), REP_ERR_INVALID, "{what}");
        healthy(&mut d);
    }
    c.structured_reply();
    let set = meta_data("disk", &["base:allocation"]);
    let qlen = 4 + 4 + 4; // offset of the first query's length
    let all_ones = u32::MAX.to_be_bytes();
    #[rustfmt::skip]
    let meta_cases: [(&str, u32, Vec<u8>); 6] = [
        ("SET export name beyond option", OPT_SET_META_CONTEXT,
            edit(set.clone(), &|v| v[..4].copy_from_slice(&all_ones))),
        ("SET count without queries", OPT_SET_META_CONTEXT,
            edit(meta_data("disk", &[]), &|v| v[11] = 1)),
        ("SET count 2^32-1", OPT_SET_META_CONTEXT,
            edit(set.clone(), &|v| v[8..12].copy_from_slice(&all_ones))),
        ("LIST query beyond option", OPT_LIST_META_CONTEXT,
            edit(set.clone(), &|v| v[qlen + 3] = 100)),
        ("SET with a trailing byte", OPT_SET_META_CONTEXT,
            edit(set.clone(), &|v| v.push(b'x'))),
        ("LIST without a query count", OPT_LIST_META_CONTEXT, set[..8].to_vec()),
    ];
    for (what, opt, data) in meta_cases {
        assert_eq!(c.ask_one(opt, &data), REP_ERR_INVALID, "{what}");
        healthy(&mut d);
    }
    // Still in sync: LIST, then GO.
    let v = c.ask(OPT_LIST, &[]);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!((v[0].kind, v[1].kind), (REP_SERVER, REP_ACK));
    assert_eq!(be32(&v[0].data, 0), 4);
    assert_eq!(&v[0].data[4..8], b"disk");
    c.go("disk", &[]);
    round_trip(&mut c, 0, 31);
    c.disconnect();
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn unknown_and_unsupported_options() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = Client::haggling(&d);
    for opt in [0, 4, 12, 0x1234, u32::MAX] {
        assert_eq!(c.ask_one(opt, &[1, 2, 3]), REP_ERR_UNSUP, "option {opt}");
    }
    assert_eq!(c.ask_one(OPT_STARTTLS, &[]), REP_ERR_UNSUP, "STARTTLS");
    assert_eq!(
        c.ask_one(OPT_STARTTLS, &[]),
        REP_ERR_UNSUP,
        "STARTTLS again"
    );
    c.structured_reply();
    let after = c.ask_one(OPT_STARTTLS, &[]);
    assert_eq!(after, REP_ERR_UNSUP, "STARTTLS after STRUCTURED_REPLY");
    let ext = c.ask_one(OPT_EXTENDED_HEADERS, &[]);
    assert_eq!(ext, REP_ERR_UNSUP, "EXTENDED_HEADERS");
    healthy(&mut d);
    // The refused STARTTLS did not wipe the structured replies negotiated before it.
    let e = c.go("disk", &[]);
    assert_ne!(e.flags & TFLAG_SEND_DF, 0);
    let cookie = c.cookie();
    c.request(CMD_READ, 0, cookie, 0, 4096, &[]);
    let r = c.reply();
    assert!(!r.chunks.is_empty(), "READ got a simple reply");
    round_trip(&mut c, 0, 41);
    c.disconnect();

    // ABORT is acknowledged, then the server closes.
    let mut c = Client::haggling(&d);
    assert_eq!(c.ask_one(OPT_ABORT, &[]), REP_ACK);
    c.expect_closed("after ABORT");
    healthy(&mut d);
    qemu_reads(&d);
}
