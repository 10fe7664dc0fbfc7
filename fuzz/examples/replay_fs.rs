//! Runs `fs_tree` inputs outside libFuzzer, timing each (run from `fuzz/`:
//! `cargo run --release --example replay_fs -- FILE...`), to study a slow or crashing unit.

use std::time::Instant;

fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let started = Instant::now();
        cowd_fuzz::fuzz_fs_tree(&data);
        println!("{path}: {:.3} s", started.elapsed().as_secs_f64());
    }
}
