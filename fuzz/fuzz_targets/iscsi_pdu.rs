//! The iSCSI target's pure layer on a stream of PDUs: framing, the BHS codec, text keys and a
//! login (see `cowd_fuzz::fuzz_iscsi_pdu`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cowd_fuzz::fuzz_iscsi_pdu(data));
