//! `parse_option` on any option code and payload (see `cowd_fuzz::check_options`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cowd_fuzz::fuzz_options(data));
