//! The control API: HTTP/1.1 + JSON over a Unix socket, for `cowctl` and `curl --unix-socket`.
//!
//! The request and answer types are the `cowd-api` crate's (shared with `cowctl`, which links
//! only that); [`api`] re-exports them at their old paths. [`server`] binds the socket (mode
//! 0600, peers checked) and builds the router from its route table; [`handlers`], [`repo`],
//! [`keys`], [`files`] and [`copies`] answer the requests, sharing [`request`] (state, extractors, error replies).

pub mod api;
pub mod copies;
pub mod files;
pub mod handlers;
pub mod keys;
pub mod repo;
pub mod request;
pub mod server;
