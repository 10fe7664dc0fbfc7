//! Broken handshakes: bad client flags and option magic close the connection; a disconnect at
//! every byte of the handshake leaves the daemon healthy.

use std::io::Write;
use std::time::Duration;

use cowd::nbd::proto::*;
use cowd_tests::nbd::{Client, info_data, meta_data, option_bytes};
use cowd_tests::{Daemon, pattern};

use super::{SIZE, healthy, qemu_reads};

#[test]
fn bad_client_flags_and_option_magic_close_the_connection() {
    let mut d = Daemon::with_disk(SIZE);
    for flags in [
        1 << 2,
        1 << 31,
        u32::MAX,
        CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES | 1 << 5,
    ] {
        let mut c = Client::greeted(&d);
        c.send(&flags.to_be_bytes());
        c.expect_closed(&format!("client flags {flags:#x}"));
        healthy(&mut d);
    }
    let mut bad = option_bytes(OPT_GO, &info_data(b"disk", &[]));
    bad[7] ^= 0x20;
    let mut c = Client::haggling(&d);
    c.send(&bad);
    c.expect_closed("bad IHAVEOPT magic");
    healthy(&mut d);
    // Also after a successful option.
    let mut c = Client::haggling(&d);
    c.structured_reply();
    c.send(&[0u8; 16]);
    c.expect_closed("zero option magic");
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn disconnect_at_every_byte_of_the_handshake() {
    let mut d = Daemon::with_disk(SIZE);
    // A whole valid session; checked once in full so the prefixes below are of something real.
    let mut full = Client::greeted(&d);
    let mut stream = (CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    stream.extend(option_bytes(OPT_STRUCTURED_REPLY, &[]));
    stream.extend(option_bytes(
        OPT_SET_META_CONTEXT,
        &meta_data("disk", &["base:allocation"]),
    ));
    let infos = [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE];
    stream.extend(option_bytes(OPT_GO, &info_data(b"disk", &infos)));
    let payload = pattern(61, 16);
    stream.extend(full.encode(CMD_WRITE, 0, 1, 0, 16, &payload));
    stream.extend(full.encode(CMD_BLOCK_STATUS, 0, 2, 0, 4096, &[]));
    full.send(&stream);
    assert_eq!(full.replies(OPT_STRUCTURED_REPLY).len(), 1);
    full.structured = true;
    assert_eq!(full.replies(OPT_SET_META_CONTEXT).len(), 2);
    let go = full.replies(OPT_GO);
    assert_eq!(go.last().unwrap().kind, REP_ACK);
    let mut replies = [full.reply(), full.reply()];
    replies.sort_by_key(|r| r.cookie);
    assert_eq!((replies[0].cookie, replies[0].error), (1, 0), "WRITE");
    assert_eq!(
        (replies[1].cookie, replies[1].error),
        (2, 0),
        "BLOCK_STATUS"
    );
    assert!(!replies[1].extents.is_empty());
    full.disconnect();

    for k in 0..=stream.len() {
        for read_greeting in [false, true] {
            let mut c = Client::connect(&d);
            if read_greeting {
                c.greeting();
            }
            let _ = c.s.write_all(&stream[..k]);
        }
    }
    healthy(&mut d);
    std::thread::sleep(Duration::from_millis(200));
    healthy(&mut d);
    qemu_reads(&d);
}
