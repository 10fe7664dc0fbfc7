//! The cowd crate's integration tests, one binary: the public API of the library (engine,
//! repository, NBD input paths, settings) and the `cowd` binary's command line.
//!
//! `model`, `live_restore` and `nbd_props` are property tests (`PROPTEST_CASES` overrides their case counts);
//! `nbd_props` compiles the fuzz targets' checks (`fuzz/src/`) with `#[path]`.

mod cli;
mod engine;
mod live_restore;
mod model;
mod nbd_props;
mod repo;
mod settings;
