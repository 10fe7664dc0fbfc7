//! The storage network as the copy manager sees it: copy targets (backup devices) and the
//! paths that reach them, and the ports (target ports where commands arrive, initiator ports
//! movers reach copy targets through) with their port groups.
//!
//! - [`copy_targets`]: `[[copy_target]]` settings, checked; designators (NAA, FC names);
//! - [`paths`]: a path's URI or device, and opening it (NBD, iSCSI, file, tape, stream);
//! - [`ports`]: `[[port]]` settings and the run-time port table (`cowctl ports`).

pub mod copy_targets;
pub mod paths;
pub mod ports;

pub use copy_targets::{CopyTarget, CopyTargetSetting, TargetKind};
pub use paths::{Opened, PathError, PathSpec};
pub use ports::{Port, Ports, Role};
