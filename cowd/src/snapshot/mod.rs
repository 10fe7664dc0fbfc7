//! The copy-before-write engine: pending set, block locks, write gate, container, throttling,
//! quiescing, and the session that ties them together.
pub mod cbt;
pub mod container;
pub mod engine;
pub mod gate;
pub mod generation;
pub mod locks;
pub mod manager;
pub mod pending;
pub mod point;
pub mod quiesce;
pub mod record;
pub mod session;
pub mod view;
