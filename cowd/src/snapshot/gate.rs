//! [`WriteGate`]: counts writes in flight and can close to define a snapshot point.
//!
//! ```text
//!  open ──close()──> closing (new writes wait; in-flight drain) ──drained──> closed
//!   ^                                                                         │
//!   └─────────────────────────────── open() ───────────────────────────────────┘
//! ```
//!
//! Reads never pass the gate. A write holds a [`Pass`] from before its copy-before-write check
//! until its device write has completed, so "closed" means "no write is between check and
//! completion": the instant at which a pending set may be installed.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    closed: bool,
}

/// The gate of one export's writes.
#[derive(Debug, Default)]
pub struct WriteGate {
    state: Mutex<State>,
    changed: Condvar,
}

/// A write's passage through the gate; dropping it ends the write.
#[derive(Debug)]
pub struct Pass<'a>(&'a WriteGate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap();
        s.in_flight -= 1;
        if s.in_flight == 0 && s.closed {
            self.0.changed.notify_all();
        }
    }
}

/// Proof that the gate is closed and drained; reopens it when dropped.
#[derive(Debug)]
pub struct Closed<'a> {
    gate: &'a WriteGate,
    /// How long draining the writes in flight took.
    pub drained_in: Duration,
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.gate.state.lock().unwrap().closed = false;
        self.gate.changed.notify_all();
    }
}

impl WriteGate {
    /// Enters a write, waiting while the gate is closed.
    pub fn enter(&self) -> Pass<'_> {
        let mut s = self.state.lock().unwrap();
        while s.closed {
            s = self.changed.wait(s).unwrap();
        }
        s.in_flight += 1;
        Pass(self)
    }

    /// Enters a write only if that needs no waiting.
    pub fn try_enter(&self) -> Option<Pass<'_>> {
        let mut s = self.state.lock().unwrap();
        if s.closed {
            return None;
        }
        s.in_flight += 1;
        Some(Pass(self))
    }

    /// Closes the gate and waits until no write is in flight. Fails (and reopens) if that takes
    /// longer than `limit`. Only one closer at a time is expected (the session starter).
    pub fn close(&self, limit: Duration) -> Option<Closed<'_>> {
        let start = Instant::now();
        let mut s = self.state.lock().unwrap();
        s.closed = true;
        while s.in_flight > 0 {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                s.closed = false;
                drop(s);
                self.changed.notify_all();
                return None;
            }
            s = self.changed.wait_timeout(s, left).unwrap().0;
        }
        Some(Closed {
            gate: self,
            drained_in: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn close_waits_for_writes_and_blocks_new_ones() {
        let g = Arc::new(WriteGate::default());
        let pass = g.enter();
        let g2 = g.clone();
        let closer =
            std::thread::spawn(move || g2.close(Duration::from_secs(5)).map(|c| c.drained_in));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            g.try_enter().is_none(),
            "a closing gate admits no new write"
        );
        drop(pass);
        let drained = closer.join().unwrap().expect("drained");
        assert!(drained >= Duration::from_millis(40));
        assert!(
            g.try_enter().is_some(),
            "the gate reopens when Closed is dropped"
        );
    }

    #[test]
    fn writes_wait_while_closed_and_close_times_out() {
        let g = Arc::new(WriteGate::default());
        let closed = g.close(Duration::from_secs(1)).unwrap();
        let entered = Arc::new(AtomicBool::new(false));
        let (g2, e2) = (g.clone(), entered.clone());
        let w = std::thread::spawn(move || {
            let _p = g2.enter();
            e2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!entered.load(Ordering::SeqCst));
        drop(closed);
        w.join().unwrap();
        assert!(entered.load(Ordering::SeqCst));
        let _p = g.enter();
        assert!(
            g.close(Duration::from_millis(30)).is_none(),
            "stuck write: close gives up"
        );
        assert!(g.try_enter().is_some(), "and reopens");
    }
}
