//! Stream (tape) records through `decode` / `encode`, raw and with their checksums made good
//! (see `cowd_fuzz::fuzz_stream_record`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cowd_fuzz::fuzz_stream_record(data));
