//! Export names of every length (0, 4096, 4097 and 2^32-1 bytes), by every option that
//! carries one.

use cowd::nbd::proto::*;
use cowd_tests::Daemon;
use cowd_tests::nbd::{
    Client, MAX_PAYLOAD, be16, be32, be64, info_data, option_bytes, option_header,
};

use super::{SIZE, healthy, qemu_reads, round_trip};

#[test]
fn export_names_of_every_length() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .export("other", 1 << 20)
        .start();

    // Length 0 selects the default (first) export.
    let mut c = Client::haggling(&d);
    let e = c.go("", &[INFO_NAME, INFO_BLOCK_SIZE]);
    assert_eq!(e.size, SIZE);
    assert_eq!(
        e.infos.get(&INFO_NAME).map(Vec::as_slice),
        Some(&b"disk"[..])
    );
    let bs = &e.infos[&INFO_BLOCK_SIZE];
    assert_eq!((be32(bs, 4), be32(bs, 8)), (4096, MAX_PAYLOAD));
    round_trip(&mut c, 0, 11);
    c.disconnect();
    healthy(&mut d);

    // On one connection: every bad name is refused and the next option still works.
    let mut c = Client::haggling(&d);
    let n4096 = vec![b'x'; 4096];
    let n4097 = vec![b'x'; 4097];
    let mut huge = u32::MAX.to_be_bytes().to_vec();
    huge.extend_from_slice(&0u16.to_be_bytes());
    let mut beyond = info_data(b"disk", &[]);
    beyond[..4].copy_from_slice(&100u32.to_be_bytes());
    let name = |n: &[u8]| info_data(n, &[]);
    #[rustfmt::skip]
    let cases: [(&str, u32, Vec<u8>, u32); 7] = [
        ("INFO 4096-byte name", OPT_INFO, name(&n4096), REP_ERR_UNKNOWN),
        ("GO 4096-byte name", OPT_GO, name(&n4096), REP_ERR_UNKNOWN),
        ("INFO 4097-byte name", OPT_INFO, name(&n4097), REP_ERR_INVALID),
        ("GO 4097-byte name", OPT_GO, name(&n4097), REP_ERR_INVALID),
        ("GO name length 2^32-1", OPT_GO, huge, REP_ERR_INVALID),
        ("GO name beyond option", OPT_GO, beyond, REP_ERR_INVALID),
        ("GO unknown name", OPT_GO, name(b"nope"), REP_ERR_UNKNOWN),
    ];
    for (what, opt, data, want) in cases {
        assert_eq!(c.ask_one(opt, &data), want, "{what}");
        healthy(&mut d);
    }
    let e = c.go("other", &[]);
    assert_eq!(e.size, 1 << 20);
    round_trip(&mut c, 0, 12);
    c.disconnect();

    // NBD_OPT_EXPORT_NAME: the empty name works; a bad one can only be refused by closing.
    let mut c = Client::haggling(&d);
    c.send(&option_bytes(OPT_EXPORT_NAME, b""));
    let r = c.recv(10);
    assert_eq!(be64(&r, 0), SIZE);
    assert_ne!(be16(&r, 8) & TFLAG_HAS_FLAGS, 0);
    round_trip(&mut c, 4096, 13);
    c.disconnect();
    for name in [b"nope".to_vec(), n4096, n4097, b"di\0sk".to_vec()] {
        let mut c = Client::haggling(&d);
        c.send(&option_bytes(OPT_EXPORT_NAME, &name));
        c.expect_closed(&format!("EXPORT_NAME of {} bytes", name.len()));
        healthy(&mut d);
    }
    let mut c = Client::haggling(&d);
    c.send(&option_header(OPT_EXPORT_NAME, u32::MAX));
    c.expect_closed("EXPORT_NAME of 2^32-1 bytes");
    healthy(&mut d);
    qemu_reads(&d);
}
