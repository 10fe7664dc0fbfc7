//! [`FaultDevice`]: a layer that injects errors and latency, for fault tests.
//!
//! A shared [`FaultControl`] decides, per operation, whether to fail it (at a rate, for the
//! next N operations, or whenever a range is touched) and how long to delay it. Stack it under
//! an engine or under a target to see how failures propagate.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{BlockDevice, BlockSizes, Capabilities, DeviceError, Extent, Op, Result, ZeroFlags};

/// A set of operations that faults apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpMask(u8);

impl OpMask {
    pub const NONE: OpMask = OpMask(0);
    pub const READ: OpMask = OpMask(1);
    pub const WRITE: OpMask = OpMask(2);
    pub const ZERO: OpMask = OpMask(4);
    pub const TRIM: OpMask = OpMask(8);
    pub const FLUSH: OpMask = OpMask(16);
    /// Prefetch hints (CACHE): advisory, so their failures are ignored by their callers; kept
    /// apart from READ so that "reads fail" means reads whose data someone needs.
    pub const HINT: OpMask = OpMask(32);
    pub const ALL: OpMask = OpMask(63);

    fn of(op: Op) -> OpMask {
        match op {
            Op::Cache => OpMask::HINT,
            Op::Read | Op::Extents => OpMask::READ,
            Op::Write => OpMask::WRITE,
            Op::WriteZeroes => OpMask::ZERO,
            Op::Trim => OpMask::TRIM,
            Op::Flush => OpMask::FLUSH,
        }
    }

    fn has(self, op: Op) -> bool {
        self.0 & OpMask::of(op).0 != 0
    }
}

impl std::ops::BitOr for OpMask {
    type Output = OpMask;
    fn bitor(self, o: OpMask) -> OpMask {
        OpMask(self.0 | o.0)
    }
}

#[derive(Debug)]
struct State {
    rate_mask: OpMask,
    rate: f64,
    next_mask: OpMask,
    next: u64,
    after_mask: OpMask,
    after: Option<u64>,
    range_mask: OpMask,
    range: (u64, u64),
    delay_mask: OpMask,
    delay: Duration,
    errno: i32,
    injected: u64,
    rng: fastrand::Rng,
}

/// The knobs of a [`FaultDevice`]; cheap to share and change while I/O runs.
#[derive(Debug)]
pub struct FaultControl {
    state: Mutex<State>,
}

impl Default for FaultControl {
    fn default() -> Self {
        FaultControl {
            state: Mutex::new(State {
                rate_mask: OpMask::NONE,
                rate: 0.0,
                next_mask: OpMask::NONE,
                next: 0,
                after_mask: OpMask::NONE,
                after: None,
                range_mask: OpMask::NONE,
                range: (0, 0),
                delay_mask: OpMask::NONE,
                delay: Duration::ZERO,
                errno: libc::EIO,
                injected: 0,
                rng: fastrand::Rng::with_seed(0x5eed),
            }),
        }
    }
}

impl FaultControl {
    /// Fails each operation in `mask` with probability `rate`.
    pub fn fail_rate(&self, mask: OpMask, rate: f64) {
        let mut s = self.state.lock().unwrap();
        (s.rate_mask, s.rate) = (mask, rate);
    }

    /// Fails the next `n` operations in `mask`.
    pub fn fail_next(&self, mask: OpMask, n: u64) {
        let mut s = self.state.lock().unwrap();
        (s.next_mask, s.next) = (mask, n);
    }

    /// Lets `ok` operations in `mask` succeed, then fails every later one.
    pub fn fail_after(&self, mask: OpMask, ok: u64) {
        let mut s = self.state.lock().unwrap();
        (s.after_mask, s.after) = (mask, Some(ok));
    }

    /// Fails every operation in `mask` that touches `offset..offset + len`.
    pub fn fail_range(&self, mask: OpMask, offset: u64, len: u64) {
        let mut s = self.state.lock().unwrap();
        (s.range_mask, s.range) = (mask, (offset, offset.saturating_add(len)));
    }

    /// Delays every operation in `mask` by `delay`.
    pub fn delay(&self, mask: OpMask, delay: Duration) {
        let mut s = self.state.lock().unwrap();
        (s.delay_mask, s.delay) = (mask, delay);
    }

    /// The errno injected failures carry (default EIO).
    pub fn errno(&self, errno: i32) {
        self.state.lock().unwrap().errno = errno;
    }

    /// Stops injecting anything.
    pub fn clear(&self) {
        let injected = self.injected();
        *self.state.lock().unwrap() = FaultControl::default().state.into_inner().unwrap();
        self.state.lock().unwrap().injected = injected;
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        self.state.lock().unwrap().injected
    }

    /// Decides the fate of one operation: the delay to apply and whether it fails.
    fn decide(&self, op: Op, offset: u64, len: u64) -> (Duration, Option<i32>) {
        let mut s = self.state.lock().unwrap();
        let delay = if s.delay_mask.has(op) {
            s.delay
        } else {
            Duration::ZERO
        };
        let touches = offset < s.range.1 && offset.saturating_add(len.max(1)) > s.range.0;
        let mut fail = s.range_mask.has(op) && touches;
        if !fail && s.next_mask.has(op) && s.next > 0 {
            s.next -= 1;
            fail = true;
        }
        if !fail && s.after_mask.has(op) {
            match &mut s.after {
                Some(0) => fail = true,
                Some(n) => *n -= 1,
                None => {}
            }
        }
        if !fail && s.rate_mask.has(op) && s.rate > 0.0 {
            fail = s.rng.f64() < s.rate;
        }
        if fail {
            s.injected += 1;
        }
        (delay, fail.then_some(s.errno))
    }
}

/// A layer that fails or slows operations as its [`FaultControl`] says.
#[derive(Debug)]
pub struct FaultDevice {
    inner: Arc<dyn BlockDevice>,
    control: Arc<FaultControl>,
}

impl FaultDevice {
    /// Wraps `inner`; returns the layer and its control handle.
    pub fn new(inner: Arc<dyn BlockDevice>) -> (Self, Arc<FaultControl>) {
        let control = Arc::new(FaultControl::default());
        (
            FaultDevice {
                inner,
                control: control.clone(),
            },
            control,
        )
    }

    fn gate(&self, op: Op, offset: u64, len: u64) -> Result<()> {
        let (delay, fail) = self.control.decide(op, offset, len);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        match fail {
            None => Ok(()),
            Some(errno) => {
                let e = io::Error::from_raw_os_error(errno);
                Err(DeviceError::io(op, offset, len, e))
            }
        }
    }
}

impl BlockDevice for FaultDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_sizes(&self) -> BlockSizes {
        self.inner.block_sizes()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.gate(Op::Read, offset, buf.len() as u64)?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.gate(Op::Write, offset, buf.len() as u64)?;
        self.inner.write_at(buf, offset, fua)
    }
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        self.gate(Op::WriteZeroes, offset, len)?;
        self.inner.write_zeroes(offset, len, flags)
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        self.gate(Op::Trim, offset, len)?;
        self.inner.trim(offset, len, fua)
    }
    fn flush(&self) -> Result<()> {
        self.gate(Op::Flush, 0, 0)?;
        self.inner.flush()
    }
    fn cache(&self, offset: u64, len: u64) -> Result<()> {
        self.gate(Op::Cache, offset, len)?;
        self.inner.cache(offset, len)
    }
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.gate(Op::Extents, offset, len)?;
        self.inner.extents(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{ErrorKind, MemoryDevice, conformance};
    use std::time::Instant;

    fn dev() -> (FaultDevice, Arc<FaultControl>) {
        FaultDevice::new(Arc::new(MemoryDevice::new(1 << 20)))
    }

    #[test]
    fn conformance_without_faults() {
        conformance::run_all(&|size| {
            let (d, _) = FaultDevice::new(Arc::new(MemoryDevice::new(size)));
            conformance::Subject::new(d)
        });
    }

    #[test]
    fn fail_next_fails_exactly_n_matching_operations() {
        let (d, c) = dev();
        c.fail_next(OpMask::WRITE, 2);
        d.read_at(&mut [0; 8], 0).unwrap();
        assert_eq!(
            d.write_at(&[1; 8], 0, false).unwrap_err().kind,
            ErrorKind::Io
        );
        assert!(d.write_at(&[1; 8], 0, false).is_err());
        d.write_at(&[1; 8], 0, false).unwrap();
        assert_eq!(c.injected(), 2);
    }

    #[test]
    fn fail_range_hits_only_overlapping_requests_with_the_chosen_errno() {
        let (d, c) = dev();
        c.errno(libc::ENOSPC);
        c.fail_range(OpMask::ALL, 4096, 4096);
        d.write_at(&[1; 4096], 0, false).unwrap();
        d.write_at(&[1; 4096], 8192, false).unwrap();
        let e = d.read_at(&mut [0; 2], 8191).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoSpace);
        c.clear();
        d.read_at(&mut [0; 2], 8191).unwrap();
        assert_eq!(c.injected(), 1);
        c.fail_after(OpMask::WRITE, 2);
        d.write_at(&[1], 0, false).unwrap();
        d.read_at(&mut [0; 1], 0).unwrap();
        d.write_at(&[1], 0, false).unwrap();
        assert!(d.write_at(&[1], 0, false).is_err() && d.write_at(&[1], 0, false).is_err());
    }

    #[test]
    fn rate_and_delay() {
        let (d, c) = dev();
        c.fail_rate(OpMask::READ, 0.5);
        let fails = (0..1000)
            .filter(|_| d.read_at(&mut [0; 1], 0).is_err())
            .count();
        assert!(
            (350..650).contains(&fails),
            "{fails} of 1000 failed at rate 0.5"
        );
        c.clear();
        c.delay(OpMask::FLUSH, Duration::from_millis(30));
        let t = Instant::now();
        d.flush().unwrap();
        assert!(t.elapsed() >= Duration::from_millis(30));
    }
}
