//! cowd's integration tests: one binary, one module per area, one small file per scenario
//! (in the big areas), all on the fixtures of the harness crate (`cowd_tests`, `tests/src/`).
//!
//! Every test starts its own daemon in its own temp directory, so the tests run in parallel.
//! Run one area with `cargo test -p cowd-tests -- live_backup::`, one scenario by its name.
//! Adding a scenario: a file in its area's directory, `mod` line in that area's `mod.rs` (or a
//! new area: `mod` line here), a `//!` line saying what it covers.

mod attacks;
mod backup_cli;
mod backup_copy_target;
mod bench_tools;
mod blockdev;
mod control;
mod copy_targets;
mod filesystem;
mod fs_backup;
mod generations;
mod hardening;
mod iscsi_conformance;
mod iscsi_initiator;
mod iscsi_peers;
mod live_backup;
mod movers_etcd;
mod nbd_client;
mod nbdsh;
mod peers;
mod power_loss;
mod repo_cli;
mod repo_encrypt;
mod repo_s3;
mod repo_s3_faults;
mod repo_s3_hosts;
mod repo_sync;
