//! [`Ending`]: how a restore ended, set once, and waiting for it.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use cowd_api::restores::RestoreState;

/// How a restore ended.
#[derive(Debug, Clone)]
pub struct RestoreEnd {
    pub state: RestoreState,
    pub reason: Option<String>,
    pub elapsed: Duration,
}

/// The end of one restore: unset while it runs, set once, signalled to waiters.
#[derive(Debug, Default)]
pub struct Ending {
    end: Mutex<Option<RestoreEnd>>,
    ended: Condvar,
}

impl Ending {
    /// The end, if the restore has ended.
    pub fn get(&self) -> Option<RestoreEnd> {
        self.end.lock().unwrap().clone()
    }

    /// Records the end (the first one counts) and wakes waiters.
    pub fn set(&self, end: RestoreEnd) {
        self.end.lock().unwrap().get_or_insert(end);
        self.ended.notify_all();
    }

    /// Waits until the restore ends or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let end = self.end.lock().unwrap();
        drop(
            self.ended
                .wait_timeout_while(end, timeout, |e| e.is_none())
                .unwrap(),
        );
    }
}
