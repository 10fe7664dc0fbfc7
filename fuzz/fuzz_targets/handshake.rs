//! The real server handshake fed any client bytes over an in-memory pipe (see
//! `cowd_fuzz::check_handshake`).
#![no_main]

use std::sync::OnceLock;

use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = RUNTIME.get_or_init(cowd_fuzz::runtime);
    cowd_fuzz::fuzz_handshake(rt, data);
});
