//! The power switch of a lazyfs mount: counts durability-relevant operations and cuts the
//! power at a chosen one.
//!
//! ```text
//!          admit() x N            admit() number N+1 (armed with cut_after(N))
//!  On ─────────────────────> On ──────────────────────> Off: cache discarded, EIO from then on
//!   └── cut_now() ─────────────────────────────────────> Off
//! ```
//!
//! Operations are counted in the order the filesystem admits them (under its state lock), so
//! "cut after N" means: the first N operations happened, the N+1-th and all later ones did not.

/// The switch; kept inside the filesystem's state lock.
#[derive(Debug, Default)]
pub struct Power {
    /// Operations admitted so far (since mount).
    ops: u64,
    /// Cut when an operation would make `ops` exceed this.
    cut_at: Option<u64>,
    off: bool,
}

/// What the filesystem must do with the operation it asked to admit.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Perform it.
    Go,
    /// The power went off just now: discard the cache, then fail the operation.
    CutNow,
    /// The power is off: fail the operation.
    Off,
}

impl Power {
    /// Counts one durability-relevant operation and says whether it may happen.
    pub fn admit(&mut self) -> Admit {
        if self.off {
            return Admit::Off;
        }
        if self.cut_at.is_some_and(|at| self.ops >= at) {
            self.off = true;
            return Admit::CutNow;
        }
        self.ops += 1;
        Admit::Go
    }

    /// Arms the switch: `n` more operations happen, the next one cuts the power.
    pub fn cut_after(&mut self, n: u64) {
        self.cut_at = Some(self.ops + n);
    }

    /// Cuts the power now; true if it was on (the caller then discards the cache).
    pub fn cut_now(&mut self) -> bool {
        !std::mem::replace(&mut self.off, true)
    }

    pub fn ops(&self) -> u64 {
        self.ops
    }

    pub fn is_off(&self) -> bool {
        self.off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_until_armed_then_cuts_exactly_after_n() {
        let mut p = Power::default();
        for _ in 0..5 {
            assert_eq!(p.admit(), Admit::Go);
        }
        p.cut_after(2);
        assert_eq!(p.admit(), Admit::Go);
        assert_eq!(p.admit(), Admit::Go);
        assert_eq!(p.admit(), Admit::CutNow);
        assert_eq!(p.admit(), Admit::Off);
        assert_eq!(p.ops(), 7);
        assert!(p.is_off());
    }

    #[test]
    fn cut_after_zero_fails_the_next_operation_and_cut_now_is_once() {
        let mut p = Power::default();
        p.cut_after(0);
        assert_eq!(p.admit(), Admit::CutNow);
        assert!(!p.cut_now());
        let mut q = Power::default();
        assert!(q.cut_now());
        assert_eq!(q.admit(), Admit::Off);
        assert_eq!(q.ops(), 0);
    }
}
