//! Copy jobs and the data movers that run them.
//!
//! ```text
//!   requesters: EXTENDED COPY naming a copy target (xcopy::remote), start-backup --to copy-target
//!        │ submit                                        ▲ wait (outcome)
//!        v                                               │
//!   table  (LocalTable in the daemon; etcd across hosts) ── jobs, claims, leases, marks
//!        ^ open_jobs / claim / progress / unavailable / finish
//!        │
//!   movers (threads of cowd; `cowd mover` processes) ── paths (san) ──> copy targets
//! ```
//!
//! - [`spec`]: what a job is (plain data, JSON in etcd) and how it ends;
//! - [`table`]: the [`JobTable`] contract and [`LocalTable`], the table in one process;
//! - [`mover`]: the mover: claim, path search per initiator port, copy, failover, report;
//! - [`service`]: the daemon's side: table, copy targets, ports, its mover threads;
//! - [`etcd`]: [`etcd::EtcdTable`], the table in etcd, shared with movers on other hosts;
//! - [`remote`]: `cowd mover`, a mover on another host (exports over NBD from the daemon).

pub mod etcd;
pub mod mover;
pub mod remote;
pub mod service;
pub mod spec;
pub mod table;

pub use service::CopyService;
pub use spec::{EndpointRef, JobError, JobId, JobSpec, Origin, Outcome, TransferSpec};
pub use table::{JobTable, JobView, LocalTable};

#[cfg(test)]
#[path = "model_tests.rs"]
mod model_tests;
#[cfg(test)]
pub(crate) mod testing;
