//! The library half of `cowctl`: the control API client and the human output, kept apart from
//! `main.rs` (flags and commands) so later commands and tests reuse them.

pub mod client;
pub mod commands;
pub mod output;
pub mod progress;
pub mod repo_report;
pub mod report;
