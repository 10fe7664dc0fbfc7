//! [`Abort`]: how a transport's task management reaches a command that is running. A long
//! command (EXTENDED COPY) looks at it between pieces of its work and stops early; every other
//! command runs to its end, and the transport drops its answer.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a running command is aborted (ABORT TASK, a task set or unit reset, or the loss
/// of its I_T nexus); never cleared.
#[derive(Debug, Default)]
pub struct Abort(AtomicBool);

/// The abort of commands nobody can abort.
static NEVER: Abort = Abort::new();

impl Abort {
    pub const fn new() -> Abort {
        Abort(AtomicBool::new(false))
    }

    /// One that is never set.
    pub fn never() -> &'static Abort {
        &NEVER
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
