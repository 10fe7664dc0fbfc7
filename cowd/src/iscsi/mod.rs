//! iSCSI target port (RFC 7143), the pure layer: PDU headers and framing, digests, text keys,
//! and the login with its key negotiation. Sessions and SCSI block commands come next.
//!
//! ```text
//!  bytes ─frame─> Frame { Header (pdu, opcodes), AHS, data }     digest: CRC32C
//!                    │ Login Request + data
//!                    v
//!  login: stages, transit, status ─> negotiate: keys -> SessionParams ─> chap: security
//!                    │                    │ config: what the target offers
//!  text: key=value\0, the C bit           values: numbers, binary, booleans, lists
//! ```
//!
//! Nothing here does I/O: every function takes bytes or values and returns values. Randomness
//! (CHAP challenges) and sequence numbers come from the caller.

pub mod chap;
pub mod config;
pub mod digest;
pub mod frame;
pub mod login;
pub mod negotiate;
pub mod opcodes;
pub mod pdu;
pub mod text;
pub mod values;
