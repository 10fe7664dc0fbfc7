//! EXTENDED COPY parameter lists through `parse` / `encode` (see `cowd_fuzz::check_xcopy`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cowd_fuzz::fuzz_xcopy(data));
