//! The seed corpus of all three targets (`cargo run --example gen_seeds` in `fuzz/` writes it
//! to `fuzz/seeds/<target>/`; `cowd/tests/integration/nbd_props.rs` checks the committed files
//! match and replays them).

use cowd::device::MAX_PAYLOAD;
use cowd::nbd::proto::*;
use cowd::nbd::request::{Negotiated, Request};

use super::handshake::Setup;
use super::request::request_input;
use super::wire::{info_payload, meta_payload, option_frame};

/// The seed corpus: (target, file name, input).
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut s = Vec::new();

    let opt = |code: u32, data: &[u8]| [&code.to_be_bytes()[..], data].concat();
    let infos = [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE];
    let queries = ["base:allocation", "qemu:dirty-bitmap:b"];
    let no_queries: [&str; 0] = [];
    s.push(("options", "export_name", opt(OPT_EXPORT_NAME, b"disk")));
    s.push((
        "options",
        "go_infos",
        opt(OPT_GO, &info_payload(b"disk", &infos)),
    ));
    s.push((
        "options",
        "info_default",
        opt(OPT_INFO, &info_payload(b"", &[])),
    ));
    s.push(("options", "list", opt(OPT_LIST, b"")));
    s.push((
        "options",
        "structured_reply",
        opt(OPT_STRUCTURED_REPLY, b""),
    ));
    let set = meta_payload(b"disk", &queries);
    s.push(("options", "set_meta", opt(OPT_SET_META_CONTEXT, &set)));
    let list = meta_payload(b"disk", &no_queries);
    s.push(("options", "list_meta", opt(OPT_LIST_META_CONTEXT, &list)));
    let long = info_payload(&[b'n'; MAX_STRING_LEN], &[]);
    s.push(("options", "name_4096", opt(OPT_GO, &long)));
    s.push((
        "options",
        "name_len_max",
        opt(OPT_INFO, &u32::MAX.to_be_bytes()),
    ));
    s.push(("options", "unknown", opt(0x4242, b"x")));

    let all = Negotiated {
        tflags: TFLAG_HAS_FLAGS
            | TFLAG_SEND_FLUSH
            | TFLAG_SEND_FUA
            | TFLAG_SEND_TRIM
            | TFLAG_SEND_WRITE_ZEROES
            | TFLAG_SEND_DF
            | TFLAG_SEND_CACHE
            | TFLAG_SEND_FAST_ZERO,
        structured: true,
        base_allocation: true,
        max_payload: MAX_PAYLOAD,
    };
    let req = |kind: u16, flags: u16, offset: u64, len: u32| {
        let r = Request {
            flags,
            kind,
            cookie: 0x0102_0304_0506_0708,
            offset,
            len,
        };
        request_input(&r.encode(), &all)
    };
    s.push(("request", "read_df", req(CMD_READ, CMD_FLAG_DF, 4096, 4096)));
    s.push(("request", "write_fua", req(CMD_WRITE, CMD_FLAG_FUA, 0, 512)));
    s.push(("request", "disc", req(CMD_DISC, 0, 0, 0)));
    s.push(("request", "flush", req(CMD_FLUSH, 0, 0, 0)));
    s.push(("request", "trim", req(CMD_TRIM, 0, 1 << 20, u32::MAX)));
    s.push(("request", "cache", req(CMD_CACHE, 0, 0, 1 << 16)));
    let z = CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO;
    s.push((
        "request",
        "write_zeroes",
        req(CMD_WRITE_ZEROES, z, 0, 1 << 20),
    ));
    let bs = req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 1 << 20);
    s.push(("request", "block_status", bs));
    s.push(("request", "read_huge", req(CMD_READ, 0, u64::MAX, u32::MAX)));
    s.push(("request", "unknown_command", req(9, 1 << 5, 0, 0)));
    let mut bad = req(CMD_READ, 0, 0, 512);
    bad[0] ^= 0xff;
    s.push(("request", "bad_magic", bad));

    let one = Setup {
        two_exports: false,
        read_only_backup: false,
        pipe: 0,
        stopping: false,
    };
    let two = Setup {
        two_exports: true,
        read_only_backup: true,
        pipe: 2,
        ..one
    };
    let hs = |setup: Setup, cflags: u32, frames: &[Vec<u8>]| {
        let mut v = vec![setup.to_byte()];
        v.extend_from_slice(&cflags.to_be_bytes());
        for f in frames {
            v.extend_from_slice(f);
        }
        v
    };
    let both = CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES;
    let export_name = option_frame(OPT_EXPORT_NAME, b"disk");
    s.push(("handshake", "export_name", hs(one, both, &[export_name])));
    let default_name = option_frame(OPT_EXPORT_NAME, b"");
    let tiny_pipe = Setup { pipe: 1, ..one };
    let zeroes = hs(tiny_pipe, CFLAG_FIXED_NEWSTYLE, &[default_name]);
    s.push(("handshake", "export_name_zeroes", zeroes));
    let go = option_frame(OPT_GO, &info_payload(b"backup", &infos));
    s.push(("handshake", "go_infos", hs(two, both, &[go])));
    let frames = [
        option_frame(OPT_LIST, b""),
        option_frame(OPT_INFO, &info_payload(b"disk", &[INFO_BLOCK_SIZE])),
        option_frame(OPT_INFO, &info_payload(b"nope", &[])),
        option_frame(OPT_ABORT, b""),
    ];
    s.push(("handshake", "list_info_abort", hs(two, both, &frames)));
    let frames = [
        option_frame(OPT_STRUCTURED_REPLY, b""),
        option_frame(OPT_LIST_META_CONTEXT, &meta_payload(b"disk", &no_queries)),
        option_frame(OPT_SET_META_CONTEXT, &meta_payload(b"disk", &queries)),
        option_frame(OPT_GO, &info_payload(b"disk", &[INFO_BLOCK_SIZE])),
    ];
    s.push(("handshake", "structured_meta_go", hs(two, both, &frames)));
    let mut trailing = info_payload(b"disk", &[]);
    trailing.push(0);
    let frames = [
        option_frame(OPT_STARTTLS, b""),
        option_frame(OPT_EXTENDED_HEADERS, b""),
        option_frame(42, b"data"),
        option_frame(OPT_SET_META_CONTEXT, &meta_payload(b"disk", &queries)),
        option_frame(OPT_GO, &trailing),
        option_frame(OPT_LIST, b"x"),
    ];
    s.push(("handshake", "refusals", hs(one, both, &frames)));
    let stopping = Setup {
        stopping: true,
        ..two
    };
    let frames = [
        option_frame(OPT_GO, &info_payload(b"disk", &[])),
        option_frame(OPT_EXPORT_NAME, b"disk"),
    ];
    s.push(("handshake", "stopping", hs(stopping, both, &frames)));
    s.extend(super::iscsi_pdu::seeds());
    s.extend(super::stream_record::seeds());
    s.extend(super::repo_index::seeds());
    s
}
