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

/// A bounded cache of idle [`IoBuf`]s in power-of-two size classes (4 KiB to 32 MiB).
/// `get` takes a buffer of the request's class or allocates one; `put` keeps it while the
/// cache holds less than its byte limit.
#[derive(Debug)]
pub struct BufPool {
    classes: Vec<Mutex<Vec<IoBuf>>>,
    held: std::sync::atomic::AtomicUsize,
    max_bytes: usize,
}

const MIN_CLASS: u32 = 12; // 4 KiB
const CLASSES: usize = 14; // up to 32 MiB

fn class_of(len: usize) -> Option<usize> {
    let bits = len.max(1 << MIN_CLASS).next_power_of_two().trailing_zeros();
    let c = (bits - MIN_CLASS) as usize;
    (c < CLASSES).then_some(c)
}

impl BufPool {
    /// A cache that keeps at most `max_bytes` of idle buffers.
    pub fn new(max_bytes: usize) -> Self {
        BufPool {
            classes: (0..CLASSES).map(|_| Mutex::new(Vec::new())).collect(),
            held: std::sync::atomic::AtomicUsize::new(0),
            max_bytes,
        }
    }

    /// A buffer of exactly `len` bytes (contents unspecified).
    pub fn get(&self, len: usize) -> IoBuf {
        use std::sync::atomic::Ordering;
        let Some(c) = class_of(len) else {
            return IoBuf::new(len);
        };
        match self.classes[c].lock().unwrap().pop() {
            Some(mut b) => {
                self.held.fetch_sub(b.cap, Ordering::Relaxed);
                b.set_len(len);
                b
            }
            None => {
                let mut b = IoBuf::new(1 << (c as u32 + MIN_CLASS));
                b.set_len(len);
                b
            }
        }
    }

    /// Returns a buffer for reuse (dropped if the cache is full or the size is odd).
    pub fn put(&self, buf: IoBuf) {
        use std::sync::atomic::Ordering;
        let Some(c) = class_of(buf.cap).filter(|&c| buf.cap == 1 << (c as u32 + MIN_CLASS)) else {
            return;
        };
        if self.held.fetch_add(buf.cap, Ordering::Relaxed) + buf.cap > self.max_bytes {
            self.held.fetch_sub(buf.cap, Ordering::Relaxed);
            return;
        }
        self.classes[c].lock().unwrap().push(buf);
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
    fn pool_reuses_buffers_of_the_same_class_and_bounds_memory() {
        let pool = BufPool::new(1 << 20);
        let a = pool.get(4096);
        let p = a.as_ptr();
        pool.put(a);
        let b = pool.get(100);
        assert_eq!(b.as_ptr(), p, "a 4 KiB buffer serves a 100-byte request");
        assert_eq!(b.len(), 100);
        pool.put(b);
        let c = pool.get(5000);
        assert_ne!(c.as_ptr(), p, "a larger class is allocated anew");
        assert_eq!(c.capacity(), 8192);
        let big = pool.get(2 << 20);
        pool.put(big); // over the bound: dropped
        assert_eq!(pool.held.load(std::sync::atomic::Ordering::Relaxed), 4096);
        let huge = pool.get(64 << 20);
        assert_eq!(huge.len(), 64 << 20, "beyond the classes: plain allocation");
        pool.put(huge);
    }
}
