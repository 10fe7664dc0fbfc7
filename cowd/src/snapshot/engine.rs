//! [`Engine`]: the copy-before-write layer, always present in an export's stack.
//!
//! ```text
//!   Checked ──> Engine ──> device
//!                 │ write / zero / trim: pass the gate ─> copy pending blocks ─> forward
//!                 │ read / flush / extents: forward untouched (never blocked)
//!                 └ session: None, or the backup in progress
//! ```
//!
//! Without a session a write costs one gate pass and one lookup of the (absent) session. With
//! one, writes to blocks outside the pending set cost one bitmap lookup more; writes to
//! pending blocks first save the old contents into the container (see [`Session`]). The
//! engine also remembers when the export was last written, for the quiet-period wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::cbt::Cbt;
use super::gate::{Closed, WriteGate};

/// Granularity of the changed-block map (the default backup block size).
pub const CBT_BLOCK: u32 = 64 << 10;
use super::session::Session;
use crate::device::{
    BlockDevice, BlockSizes, CachedRange, Capabilities, Extent, Result, ZeroFlags,
};

/// The copy-before-write layer of one export.
#[derive(Debug)]
pub struct Engine {
    inner: Arc<dyn BlockDevice>,
    gate: WriteGate,
    session: RwLock<Option<Arc<Session>>>,
    epoch: Instant,
    /// Nanoseconds after `epoch` of the last write's end (0: none yet).
    last_write: AtomicU64,
    cbt: Cbt,
}

impl Engine {
    pub fn new(inner: Arc<dyn BlockDevice>) -> Engine {
        Engine {
            inner,
            gate: WriteGate::default(),
            session: RwLock::new(None),
            epoch: Instant::now(),
            last_write: AtomicU64::new(0),
            cbt: Cbt::new(CBT_BLOCK),
        }
    }

    /// The export's changed-block map.
    pub fn cbt(&self) -> &Cbt {
        &self.cbt
    }

    /// The device below the engine (what the mover and copy-before-write read).
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.inner
    }

    pub fn gate(&self) -> &WriteGate {
        &self.gate
    }

    /// The session in progress, if any.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.session.read().unwrap().clone()
    }

    /// Installs a session; the caller proves writes are held by passing the closed gate.
    pub fn install(&self, _closed: &Closed<'_>, s: Arc<Session>) {
        *self.session.write().unwrap() = Some(s);
    }

    /// Removes the session `id` once it has ended.
    pub fn remove(&self, id: &str) {
        let mut cur = self.session.write().unwrap();
        if cur.as_ref().is_some_and(|s| s.id == id) {
            *cur = None;
        }
    }

    /// Time since the last write ended (since the engine started if none).
    pub fn quiet_for(&self) -> Duration {
        let last = Duration::from_nanos(self.last_write.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Records a write of `len` bytes at `offset` (called inside the gate, so the change map
    /// attributes it to the right side of a snapshot point).
    fn wrote(&self, offset: u64, len: u64) {
        self.cbt.mark(offset, len);
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.last_write.fetch_max(now.max(1), Ordering::Relaxed);
    }

    fn active(&self) -> Option<Arc<Session>> {
        let s = self.session.read().unwrap();
        s.as_ref().filter(|s| s.running()).cloned()
    }

    /// Runs a modifying operation: gate, copy-before-write, the operation, last-write time.
    fn modify<T>(&self, offset: u64, len: u64, op: impl FnOnce() -> Result<T>) -> Result<T> {
        let _pass = self.gate.enter();
        if let Some(s) = self.active() {
            s.copy_before_write(self.inner.as_ref(), offset, len);
        }
        let r = op();
        self.wrote(offset, len);
        r
    }
}

impl BlockDevice for Engine {
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
        self.inner.read_at(buf, offset)
    }

    fn try_read_at(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        self.inner.try_read_at(buf, offset)
    }

    /// Reads pass through (the live device is the origin's current data).
    fn cached_range(&self, offset: u64, len: usize) -> Option<CachedRange> {
        self.inner.cached_range(offset, len)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.modify(offset, buf.len() as u64, || {
            self.inner.write_at(buf, offset, fua)
        })
    }

    fn try_write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<bool> {
        let Some(_pass) = self.gate.try_enter() else {
            return Ok(false);
        };
        if self
            .active()
            .is_some_and(|s| s.needs_copy(offset, buf.len() as u64))
        {
            return Ok(false);
        }
        let done = self.inner.try_write_at(buf, offset, fua)?;
        if done {
            self.wrote(offset, buf.len() as u64);
        }
        Ok(done)
    }

    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        self.modify(offset, len, || self.inner.write_zeroes(offset, len, flags))
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        // Trim is a hint: blocks still pending are left as they are instead of being copied.
        let _pass = self.gate.enter();
        let segments = match self.active() {
            Some(s) => s.unpending_segments(offset, len),
            None => vec![(offset, len)],
        };
        let mut r = Ok(());
        for (o, l) in segments {
            r = r.and(self.inner.trim(o, l, false));
            self.wrote(o, l);
        }
        if fua {
            r = r.and(self.inner.flush());
        }
        r
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn cache(&self, offset: u64, len: u64) -> Result<()> {
        self.inner.cache(offset, len)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.inner.extents(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{MemoryDevice, conformance};

    #[test]
    fn conformance_without_a_session() {
        conformance::run_all(&|size| {
            conformance::Subject::new(Engine::new(Arc::new(MemoryDevice::new(size))))
        });
    }

    #[test]
    fn quiet_time_follows_writes() {
        let e = Engine::new(Arc::new(MemoryDevice::new(1 << 20)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(e.quiet_for() >= Duration::from_millis(30));
        e.write_at(&[1; 10], 0, false).unwrap();
        assert!(e.quiet_for() < Duration::from_millis(30));
    }
}
