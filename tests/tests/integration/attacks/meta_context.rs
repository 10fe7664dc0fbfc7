//! Metadata contexts and BLOCK_STATUS: listing and selecting contexts, block status with and
//! without a selected context, a failed SET_META_CONTEXT clearing the selection.

use cowd::nbd::proto::*;
use cowd_tests::nbd::{Client, REP_ERR, be32, meta_data};
use cowd_tests::{Daemon, pattern};

use super::{SIZE, expect_error, healthy, qemu_reads, round_trip};

#[test]
fn metadata_contexts_and_block_status() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = Client::haggling(&d);
    let set = meta_data("disk", &["base:allocation"]);
    let before = c.ask_one(OPT_SET_META_CONTEXT, &set);
    assert_eq!(
        before, REP_ERR_INVALID,
        "SET_META_CONTEXT before STRUCTURED_REPLY"
    );
    healthy(&mut d);
    c.structured_reply();
    for queries in [
        &[][..],
        &["base:"][..],
        &["base:allocation", "qemu:nope"][..],
    ] {
        let v = c.ask(OPT_LIST_META_CONTEXT, &meta_data("disk", queries));
        let (last, contexts) = v.split_last().unwrap();
        assert_eq!(last.kind, REP_ACK, "LIST_META_CONTEXT {queries:?}");
        let names: Vec<_> = contexts
            .iter()
            .map(|r| {
                assert_eq!(r.kind, REP_META_CONTEXT);
                String::from_utf8(r.data[4..].to_vec()).unwrap()
            })
            .collect();
        assert!(
            names.iter().any(|n| n == "base:allocation"),
            "{queries:?}: {names:?}"
        );
    }
    let unknown = c.ask(OPT_LIST_META_CONTEXT, &meta_data("nope", &[]));
    assert_ne!(
        unknown.last().unwrap().kind & REP_ERR,
        0,
        "LIST for an unknown export"
    );
    let v = c.ask(OPT_SET_META_CONTEXT, &set);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!((v[0].kind, v[1].kind), (REP_META_CONTEXT, REP_ACK));
    assert_eq!(&v[0].data[4..], b"base:allocation");
    let id = be32(&v[0].data, 0);
    c.go("disk", &[]);

    let data = pattern(51, 64 << 10);
    let w = c.cookie();
    c.request(CMD_WRITE, 0, w, 1 << 20, 64 << 10, &data);
    assert_eq!(c.reply().error, 0);
    let bs = c.cookie();
    c.request(CMD_BLOCK_STATUS, 0, bs, 0, 4 << 20, &[]);
    let r = c.reply();
    assert_eq!(r.error, 0, "BLOCK_STATUS");
    assert_eq!(r.chunks, vec![(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS)]);
    assert_eq!(r.context, id, "BLOCK_STATUS for another context id");
    let total: u64 = r.extents.iter().map(|e| u64::from(e.0)).sum();
    assert!(!r.extents.is_empty() && total <= 4 << 20, "{:?}", r.extents);
    // REQ_ONE on the written range: one descriptor, and it is data, not a hole.
    let one = c.cookie();
    c.request(
        CMD_BLOCK_STATUS,
        CMD_FLAG_REQ_ONE,
        one,
        1 << 20,
        64 << 10,
        &[],
    );
    let r = c.reply();
    assert_eq!((r.error, r.extents.len()), (0, 1), "{r:?}");
    assert!(r.extents[0].0 > 0 && r.extents[0].0 <= 64 << 10, "{r:?}");
    assert_eq!(
        r.extents[0].1 & STATE_HOLE,
        0,
        "written data reported as a hole"
    );
    let past_end = (
        "BLOCK_STATUS past the end",
        CMD_BLOCK_STATUS,
        0,
        SIZE,
        4096,
        &[][..],
        EINVAL,
    );
    expect_error(&mut c, past_end);
    round_trip(&mut c, 0, 52);
    c.disconnect();
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn block_status_without_a_selected_context() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .export("other", 1 << 20)
        .start();
    type Setup = fn(&mut Client);
    let setups: [(&str, Setup); 4] = [
        ("no SET_META_CONTEXT", |_| {}),
        ("unknown namespace only", |c| {
            let v = c.ask_one(OPT_SET_META_CONTEXT, &meta_data("disk", &["qemu:nope"]));
            assert_eq!(v, REP_ACK);
        }),
        ("selection replaced by an empty one", |c| {
            let v = c.ask(
                OPT_SET_META_CONTEXT,
                &meta_data("disk", &["base:allocation"]),
            );
            assert_eq!(v.len(), 2);
            assert_eq!(
                c.ask_one(OPT_SET_META_CONTEXT, &meta_data("disk", &[])),
                REP_ACK
            );
        }),
        ("context selected on another export", |c| {
            let v = c.ask(
                OPT_SET_META_CONTEXT,
                &meta_data("other", &["base:allocation"]),
            );
            assert_eq!(v.len(), 2);
        }),
    ];
    for (what, setup) in setups {
        let mut c = Client::haggling(&d);
        c.structured_reply();
        setup(&mut c);
        c.go("disk", &[]);
        expect_error(&mut c, (what, CMD_BLOCK_STATUS, 0, 0, 4096, &[], EINVAL));
        c.disconnect();
        healthy(&mut d);
    }
    qemu_reads(&d);
}

/// "Issuing this command replaces all previously-set metadata contexts (including when this
/// command fails)" (NBD_OPT_SET_META_CONTEXT in the protocol).
#[test]
fn failed_set_meta_context_clears_the_selection() {
    let mut d = Daemon::with_disk(SIZE);
    let set = meta_data("disk", &["base:allocation"]);
    let mut truncated = set.clone();
    truncated.pop();
    let unknown = meta_data("nope", &["base:allocation"]);
    let failing: [(&str, Vec<u8>, u32); 2] = [
        ("malformed SET", truncated, REP_ERR_INVALID),
        ("SET for an unknown export", unknown, REP_ERR_UNKNOWN),
    ];
    for (what, data, err) in failing {
        let mut c = Client::haggling(&d);
        c.structured_reply();
        assert_eq!(c.ask(OPT_SET_META_CONTEXT, &set).len(), 2);
        assert_eq!(c.ask_one(OPT_SET_META_CONTEXT, &data), err, "{what}");
        c.go("disk", &[]);
        let what = format!("BLOCK_STATUS after a {what}");
        expect_error(&mut c, (&what, CMD_BLOCK_STATUS, 0, 0, 4096, &[], EINVAL));
        c.disconnect();
        healthy(&mut d);
    }
    qemu_reads(&d);
}
