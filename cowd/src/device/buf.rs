//! Page-aligned I/O buffers and a small per-connection pool that reuses them.
//!
//! Buffers are aligned to 4096 bytes so the same buffer serves buffered and `O_DIRECT` I/O.
//! Reusing buffers keeps large requests from paying for fresh page faults every time.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Mutex;

const ALIGN: usize = 4096;

/// A heap buffer aligned to 4096 bytes with a fixed capacity and an adjustable length.
pub struct IoBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: IoBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for IoBuf {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for IoBuf {}

impl IoBuf {
    /// A zero-filled buffer of `len` bytes (capacity rounded up to the alignment).
    pub fn new(len: usize) -> Self {
        let cap = len.max(1).next_multiple_of(ALIGN);
        let layout = Layout::from_size_align(cap, ALIGN).expect("buffer size overflow");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        IoBuf { ptr, len, cap }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Sets the length; panics beyond the capacity. Contents are whatever was there before.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.cap,
            "IoBuf length {len} over capacity {}",
            self.cap
        );
        self.len = len;
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.cap, ALIGN).unwrap();
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for cap >= len initialised (zeroed at allocation) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

/// A bounded free list of [`IoBuf`]s. `get` returns the smallest free buffer that fits.
#[derive(Debug)]
pub struct BufPool {
    free: Mutex<Vec<IoBuf>>,
    max_bytes: usize,
}

impl BufPool {
    /// A pool that keeps at most `max_bytes` of idle buffers.
    pub fn new(max_bytes: usize) -> Self {
        BufPool {
            free: Mutex::new(Vec::new()),
            max_bytes,
        }
    }

    /// A buffer of exactly `len` bytes (contents unspecified).
    pub fn get(&self, len: usize) -> IoBuf {
        let mut free = self.free.lock().unwrap();
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.cap >= len && b.cap <= len.saturating_mul(4).max(64 << 10))
            .min_by_key(|(_, b)| b.cap)
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut b = free.swap_remove(i);
                b.set_len(len);
                b
            }
            None => {
                drop(free);
                IoBuf::new(len)
            }
        }
    }

    /// Returns a buffer for reuse (dropped if the pool is full).
    pub fn put(&self, buf: IoBuf) {
        let mut free = self.free.lock().unwrap();
        let held: usize = free.iter().map(|b| b.cap).sum();
        if held + buf.cap <= self.max_bytes {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let b = IoBuf::new(10_000);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.len(), 10_000);
        assert_eq!(b.capacity(), 12_288);
        assert!(b.iter().all(|&x| x == 0));
    }

    #[test]
    fn pool_reuses_smallest_fit_and_bounds_memory() {
        let pool = BufPool::new(1 << 20);
        let a = pool.get(4096);
        let p = a.as_ptr();
        pool.put(a);
        let b = pool.get(100);
        assert_eq!(b.as_ptr(), p, "a 4 KiB buffer fits a 100-byte request");
        pool.put(b);
        let big = pool.get(2 << 20);
        pool.put(big); // over the bound: dropped
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        let c = pool.get(1 << 20);
        assert_ne!(c.as_ptr(), p, "a small buffer never serves a large request");
    }
}
