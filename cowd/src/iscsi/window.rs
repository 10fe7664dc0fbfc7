//! The command window of a session (RFC 7143 §4.2.2.1): which CmdSN the target expects next
//! (ExpCmdSN) and the highest it accepts (MaxCmdSN), in serial number arithmetic (RFC 1982).
//!
//! ```text
//!   ... done ... | ExpCmdSN ........ MaxCmdSN | beyond: silently ignored
//!                  └── at most `depth` commands the target has not answered yet
//! ```
//!
//! MaxCmdSN only grows: it moves up by one each time a non-immediate command is answered, so
//! at any time at most `depth` such commands are in the target (the initiator may not send
//! beyond MaxCmdSN, and one that does is ignored). Immediate commands carry ExpCmdSN without
//! advancing it and are not counted.

/// `a < b` in 32-bit serial number arithmetic.
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 1 << 31
}

/// `a <= b` in 32-bit serial number arithmetic.
pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

/// What to do with a command's CmdSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The next command in order: run it (ExpCmdSN has moved past it).
    Next,
    /// An immediate command: run it now; ExpCmdSN does not move.
    Immediate,
    /// Outside the window, or a CmdSN already used: ignore the PDU without an answer.
    Ignore,
}

/// ExpCmdSN and MaxCmdSN of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
}

impl Window {
    /// The window after a login whose first request carried `cmd_sn`, letting `depth` (at
    /// least 1) commands be outstanding.
    pub fn new(cmd_sn: u32, depth: u32) -> Window {
        Window {
            exp_cmd_sn: cmd_sn,
            max_cmd_sn: cmd_sn.wrapping_add(depth.max(1) - 1),
        }
    }

    pub fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
    }

    pub fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn
    }

    /// Admits a command with `cmd_sn`. A single connection delivers commands in order, so a
    /// non-immediate command is either the next one or not acceptable (ERL 0 keeps no queue
    /// of early commands).
    pub fn admit(&mut self, cmd_sn: u32, immediate: bool) -> Admit {
        if immediate {
            return Admit::Immediate;
        }
        if cmd_sn == self.exp_cmd_sn && sn_le(cmd_sn, self.max_cmd_sn) {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            return Admit::Next;
        }
        Admit::Ignore
    }

    /// A non-immediate command has been answered: one more may come.
    pub fn answered(&mut self) {
        self.max_cmd_sn = self.max_cmd_sn.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(sn_lt(1, 2));
        assert!(!sn_lt(2, 1));
        assert!(!sn_lt(5, 5));
        assert!(sn_lt(u32::MAX, 0));
        assert!(sn_lt(u32::MAX - 10, 5));
        assert!(!sn_lt(5, u32::MAX - 10));
        assert!(sn_le(7, 7));
    }

    #[test]
    fn commands_in_order_within_the_window() {
        let mut w = Window::new(10, 2);
        assert_eq!((w.exp_cmd_sn(), w.max_cmd_sn()), (10, 11));
        assert_eq!(w.admit(10, false), Admit::Next);
        assert_eq!(w.admit(11, false), Admit::Next);
        // Two outstanding: the third is beyond MaxCmdSN until one is answered.
        assert_eq!(w.admit(12, false), Admit::Ignore);
        assert_eq!(w.exp_cmd_sn(), 12);
        w.answered();
        assert_eq!(w.max_cmd_sn(), 12);
        assert_eq!(w.admit(12, false), Admit::Next);
    }

    #[test]
    fn too_low_too_high_and_immediate() {
        let mut w = Window::new(100, 8);
        assert_eq!(w.admit(99, false), Admit::Ignore, "already used");
        assert_eq!(w.admit(108, false), Admit::Ignore, "beyond MaxCmdSN");
        assert_eq!(w.admit(101, false), Admit::Ignore, "not the next");
        assert_eq!(w.admit(100, true), Admit::Immediate);
        assert_eq!(w.exp_cmd_sn(), 100, "immediate commands do not advance");
        assert_eq!(w.admit(100, false), Admit::Next);
    }

    #[test]
    fn the_window_wraps_around_zero() {
        let mut w = Window::new(u32::MAX, 4);
        assert_eq!(w.max_cmd_sn(), 2);
        assert_eq!(w.admit(u32::MAX, false), Admit::Next);
        assert_eq!(w.admit(0, false), Admit::Next);
        assert_eq!(w.exp_cmd_sn(), 1);
    }
}
