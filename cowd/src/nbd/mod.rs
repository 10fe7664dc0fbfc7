//! The NBD protocol, server side: wire constants, option parsing, the handshake, request
//! decoding, reply encoding, the transmission phase and the listeners.
//!
//! ```text
//!  listener (tokio) ─accept─> handshake (tokio, timeout) ─GO─> transmission (threads)
//! ```
//!
//! This layer knows exports and the `BlockDevice` trait; it knows nothing of backups.
//!
//! The client side ([`client`], addressed by [`uri`]) reaches other NBD servers as a
//! `BlockDevice`: copy targets that cowd's data movers write to.

pub mod client;
pub mod handshake;
pub mod kernel;
pub mod options;
pub mod proto;
pub mod reply;
pub mod request;
pub mod server;
pub mod stream;
pub mod transmission;
pub mod uri;

pub use server::{Endpoint, Server, ServerConfig};
