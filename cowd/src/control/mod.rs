//! The control API: HTTP/1.1 + JSON over a Unix socket, for `cowctl` and `curl --unix-socket`.
//!
//! [`api`] holds the request and response types (shared with `cowctl`); [`server`] binds the
//! socket (mode 0600, peers checked) and routes requests.

pub mod api;
pub mod handlers;
pub mod repo;
pub mod server;
