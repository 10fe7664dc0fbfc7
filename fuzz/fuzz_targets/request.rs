//! Request decode/encode/validate on any header and negotiated state (see
//! `cowd_fuzz::check_request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cowd_fuzz::fuzz_request(data));
