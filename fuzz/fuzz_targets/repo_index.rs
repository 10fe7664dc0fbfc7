//! Repository indexes and patches through `decode` / `encode`, raw and with the index's
//! checksum made good (see `cowd_fuzz::fuzz_repo_index`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cowd_fuzz::fuzz_repo_index(data));
