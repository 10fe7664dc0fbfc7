//! lazyfs: a FUSE filesystem that loses, at a power cut, every write not yet made durable.
//!
//! Modelled on LazyFS (used by Jepsen): a passthrough over a backing directory with its own
//! page cache. File data stays in [`cache`] until fsync/fdatasync (or a write to an
//! O_SYNC/O_DSYNC file) writes it to the backing directory; metadata operations go to the
//! backing directory at once. [`power`] counts durability-relevant operations and cuts at a
//! chosen one; [`fs`] is the FUSE filesystem; [`control`] is its control socket; [`mount`]
//! runs the `lazyfs` binary for a test and always unmounts it.

pub mod cache;
pub mod control;
pub mod fs;
pub mod mount;
pub mod power;
