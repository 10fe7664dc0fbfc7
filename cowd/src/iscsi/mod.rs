//! iSCSI target port (RFC 7143): every export a target with one logical unit, served by
//! [`scsi::Disk`](crate::scsi::Disk).
//!
//! ```text
//!  server: listeners, a target per export ─> connection: login ─> full_feature: commands
//!                                                │                    │ window (CmdSN), dataout (R2T),
//!  wire: whole PDUs over a socket                │                    │ datain (Data-In, status), workers
//!  ────────────────────── pure below ────────────┼────────────────────┼──────────────────────────────
//!  bytes ─frame─> Frame { Header (pdu, opcodes), AHS, data }     digest: CRC32C
//!  login: stages, transit, status ─> negotiate: keys -> SessionParams ─> chap: security
//!  text: key=value\0, the C bit      values: numbers, binary, booleans, lists      config: limits
//! ```
//!
//! The pure modules do no I/O: every function takes bytes or values and returns values.
//! Randomness (CHAP challenges) and sequence numbers come from the caller. `wire`,
//! `connection`, `full_feature`, `workers` and `server` run them over sockets and threads.
//!
//! The other direction: `initiator` logs in to a target (cowd's or another) with the same
//! PDU codec and sends it SCSI commands, `initiator::IscsiDevice` is a logical unit there as a
//! block device, and `url` parses the `iscsi://` URLs that name one.

pub mod chap;
pub mod config;
pub mod connection;
pub mod datain;
pub mod dataout;
pub mod digest;
pub mod frame;
pub mod full_feature;
pub mod initiator;
pub mod login;
pub mod negotiate;
pub mod opcodes;
pub mod pdu;
pub mod server;
pub mod text;
pub mod url;
pub mod values;
pub mod window;
pub mod wire;
pub mod workers;
