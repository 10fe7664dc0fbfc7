//! Properties of cowd's NBD input handling, filesystem readers, iSCSI PDUs, SCSI parameter lists, stream records and repository indexes, checked on arbitrary input.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and the property tests
//! (`cowd/tests/integration/nbd_props.rs` compiles this file and its modules with `#[path]`),
//! so it uses nothing but `cowd`, `tokio` and `std`, and its modules name each other with
//! `super::`, never `crate::`. Every `check_*` function panics when a property does not hold;
//! the `fuzz_*` functions turn a fuzzer's raw bytes into a check's inputs; [`seeds()`] builds
//! the seed corpus (`cargo run --example gen_seeds` in `fuzz/` writes it to `fuzz/seeds/`).
//!
//! One module per target, plus what they share:
//!
//! - [`options`]: `parse_option` on any code and payload.
//! - [`request`]: `Request::decode` / `encode` / `validate` on any header and any `Negotiated`
//!   state.
//! - [`handshake`]: the real `negotiate` on an in-memory pipe, fed any client bytes, against a
//!   table of one or two `MemoryDevice` exports; the server's bytes are checked against a model
//!   of the fixed newstyle handshake.
//! - [`fs_tree`]: the filesystem readers (`fs::open::open_tree`, then a bounded walk calling
//!   every `FileTree` operation) on any sparse device image.
//! - [`iscsi_pdu`]: the iSCSI target's pure layer on a stream of PDUs: framing with each
//!   digest setting, the BHS codec, text keys, a login and Text requests.
//! - [`xcopy`]: EXTENDED COPY parameter lists through `parse` / `encode` under default and
//!   tiny limits.
//! - [`stream_record`]: stream (tape) records through `decode` / `encode`, raw and with their
//!   checksums made good.
//! - [`repo_index`]: repository indexes and chunk patches through `decode` / `encode`, raw
//!   and with the index's checksum made good.
//! - [`wire`]: option payloads and frames as a client sends them; [`seeds`](mod@seeds): the
//!   seed corpus.

pub mod fs_tree;
pub mod handshake;
pub mod iscsi_pdu;
pub mod options;
pub mod repo_index;
pub mod request;
pub mod seeds;
pub mod stream_record;
pub mod wire;
pub mod xcopy;

pub use fs_tree::fuzz_fs_tree;
pub use handshake::{Setup, check_handshake, fuzz_handshake, runtime};
pub use iscsi_pdu::fuzz_iscsi_pdu;
pub use options::{check_options, fuzz_options};
pub use repo_index::fuzz_repo_index;
pub use request::{check_request, check_request_fields, fuzz_request};
pub use seeds::seeds;
pub use stream_record::fuzz_stream_record;
pub use wire::{info_payload, meta_payload, option_frame};
pub use xcopy::fuzz_xcopy;
