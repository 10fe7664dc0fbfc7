//! The conformance suite every [`BlockDevice`] implementation must pass.
//!
//! Each implementation's tests call [`run_all`] with a constructor; the suite checks the
//! trait's contract (round trips at every alignment the device allows, FUA, zeroing with and
//! without holes, fast zero, trim, flush, extents, concurrency, the non-blocking paths).
//! Buffers are page-aligned so `O_DIRECT` devices run the same checks.

use std::any::Any;
use std::sync::Arc;

use super::{BlockDevice, ErrorKind, IoBuf, ZeroFlags};

/// A device under test plus whatever must live as long as it (temp dirs, loop devices).
pub struct Subject {
    pub dev: Arc<dyn BlockDevice>,
    keep: Vec<Box<dyn Any>>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

impl Subject {
    pub fn new(dev: impl BlockDevice + 'static) -> Self {
        Subject {
            dev: Arc::new(dev),
            keep: Vec::new(),
        }
    }

    pub fn from_arc(dev: Arc<dyn BlockDevice>) -> Self {
        Subject {
            dev,
            keep: Vec::new(),
        }
    }

    /// Keeps `x` alive until the subject is dropped (dropped after the device).
    pub fn keep(mut self, x: impl Any) -> Self {
        self.keep.push(Box::new(x));
        self
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        // The device goes first: a temp dir or loop device must outlive it.
        self.dev = Arc::new(super::MemoryDevice::new(1));
        while self.keep.pop().is_some() {}
    }
}

/// Size of each device the suite asks for.
pub const SIZE: u64 = 16 << 20;

/// Runs every check against fresh devices from `make(size)`.
pub fn run_all(make: &dyn Fn(u64) -> Subject) {
    type Check = fn(&dyn BlockDevice);
    let checks: [(&str, Check); 10] = [
        ("size_and_fresh_zeroes", size_and_fresh_zeroes),
        ("round_trips", round_trips),
        ("fua_writes", fua_writes),
        ("zeroes_keep_neighbours", zeroes_keep_neighbours),
        ("fast_zero_is_all_or_nothing", fast_zero_is_all_or_nothing),
        ("trim_keeps_neighbours", trim_keeps_neighbours),
        ("extents_are_consistent", extents_are_consistent),
        ("concurrent_writers", concurrent_writers),
        ("nonblocking_paths_match", nonblocking_paths_match),
        ("flush_and_cache", flush_and_cache),
    ];
    for (name, check) in checks {
        let s = make(SIZE);
        eprintln!("conformance: {name}");
        check(s.dev.as_ref());
    }
}

fn pattern(seed: u64, len: usize) -> IoBuf {
    let mut b = IoBuf::new(len);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in b.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    b
}

fn read(d: &dyn BlockDevice, offset: u64, len: usize) -> IoBuf {
    let mut b = IoBuf::new(len);
    d.read_at(&mut b, offset).unwrap();
    b
}

fn align(d: &dyn BlockDevice) -> u64 {
    u64::from(d.block_sizes().minimum.max(1))
}

fn size_and_fresh_zeroes(d: &dyn BlockDevice) {
    assert!(d.size() >= SIZE, "size {} < {SIZE}", d.size());
    let bs = d.block_sizes();
    assert!(bs.minimum >= 1 && bs.minimum <= bs.preferred && bs.preferred <= bs.maximum);
    assert!(bs.minimum.is_power_of_two());
    assert!(read(d, 0, 1 << 20).iter().all(|&b| b == 0));
    assert!(read(d, SIZE - 4096, 4096).iter().all(|&b| b == 0));
}

fn round_trips(d: &dyn BlockDevice) {
    let a = align(d);
    let cases: &[(u64, usize)] = &[
        (0, 4096),
        (4096 * 3, 65536),
        (1 << 20, 1 << 20),
        ((1 << 20) - 4096, 12288),
        (SIZE - 8192, 8192),
        (512, 512),
        (1, 1),
        (4095, 2),
        (65535, 70_001),
        (SIZE - 1, 1),
    ];
    for (i, &(off, len)) in cases.iter().enumerate() {
        if off % a != 0 || len as u64 % a != 0 {
            continue;
        }
        let before = if off >= a {
            Some(read(d, off - a, a as usize))
        } else {
            None
        };
        let p = pattern(i as u64, len);
        d.write_at(&p, off, false).unwrap();
        assert_eq!(&read(d, off, len)[..], &p[..], "round trip at {off}+{len}");
        if let Some(b) = before {
            assert_eq!(
                &read(d, off - a, a as usize)[..],
                &b[..],
                "byte before {off} changed"
            );
        }
    }
    // Overlapping rewrites keep the latest data.
    let p1 = pattern(100, 65536);
    let p2 = pattern(101, 8192);
    d.write_at(&p1, 2 << 20, false).unwrap();
    d.write_at(&p2, (2 << 20) + 16384, false).unwrap();
    let got = read(d, 2 << 20, 65536);
    assert_eq!(&got[..16384], &p1[..16384]);
    assert_eq!(&got[16384..24576], &p2[..]);
    assert_eq!(&got[24576..], &p1[24576..]);
}

fn fua_writes(d: &dyn BlockDevice) {
    let p = pattern(7, 65536);
    d.write_at(&p, 3 << 20, true).unwrap();
    assert_eq!(&read(d, 3 << 20, 65536)[..], &p[..]);
}

fn zeroes_keep_neighbours(d: &dyn BlockDevice) {
    let a = align(d);
    for (i, may_trim) in [false, true].into_iter().enumerate() {
        let base = (4 << 20) + i as u64 * (1 << 20);
        let p = pattern(i as u64 + 20, 1 << 20);
        d.write_at(&p, base, false).unwrap();
        let (zo, zl) = if a == 1 {
            (base + 1000, 300_000)
        } else {
            (base + 4096, 300 * 1024)
        };
        let flags = ZeroFlags {
            may_trim,
            fast: false,
            fua: i == 1,
        };
        d.write_zeroes(zo, zl, flags).unwrap();
        let got = read(d, base, 1 << 20);
        let (s, e) = ((zo - base) as usize, (zo - base + zl) as usize);
        assert_eq!(
            &got[..s],
            &p[..s],
            "before the zeroed range (may_trim {may_trim})"
        );
        assert!(
            got[s..e].iter().all(|&b| b == 0),
            "zeroed range (may_trim {may_trim})"
        );
        assert_eq!(
            &got[e..],
            &p[e..],
            "after the zeroed range (may_trim {may_trim})"
        );
    }
    // A large zero request (beyond any payload limit) works too.
    d.write_at(&pattern(30, 4096), SIZE - 4096, false).unwrap();
    d.write_zeroes(4 << 20, SIZE - (4 << 20), ZeroFlags::default())
        .unwrap();
    assert!(read(d, SIZE - 4096, 4096).iter().all(|&b| b == 0));
}

fn fast_zero_is_all_or_nothing(d: &dyn BlockDevice) {
    let p = pattern(40, 1 << 20);
    d.write_at(&p, 6 << 20, false).unwrap();
    let flags = ZeroFlags {
        may_trim: true,
        fast: true,
        fua: false,
    };
    match d.write_zeroes(6 << 20, 1 << 20, flags) {
        Ok(()) => assert!(read(d, 6 << 20, 1 << 20).iter().all(|&b| b == 0)),
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::NotFast, "{e}");
            assert_eq!(
                &read(d, 6 << 20, 1 << 20)[..],
                &p[..],
                "a refused fast zero wrote"
            );
        }
    }
}

fn trim_keeps_neighbours(d: &dyn BlockDevice) {
    let p = pattern(50, 1 << 20);
    d.write_at(&p, 8 << 20, false).unwrap();
    d.trim((8 << 20) + 65536, 131072, false).unwrap();
    let got = read(d, 8 << 20, 1 << 20);
    assert_eq!(&got[..65536], &p[..65536]);
    assert_eq!(&got[196608..], &p[196608..]);
}

fn extents_are_consistent(d: &dyn BlockDevice) {
    d.write_at(&pattern(60, 65536), 10 << 20, false).unwrap();
    d.write_zeroes(
        11 << 20,
        1 << 20,
        ZeroFlags {
            may_trim: true,
            ..Default::default()
        },
    )
    .unwrap();
    for (off, len) in [
        (0, SIZE),
        (10 << 20, 4096),
        ((10 << 20) + 4096, 3 << 20),
        (SIZE - 1, 1),
    ] {
        let a = align(d);
        if off % a != 0 || len % a != 0 {
            continue;
        }
        let ext = d.extents(off, len).unwrap();
        assert!(!ext.is_empty(), "no extent for {off}+{len}");
        let total: u64 = ext.iter().map(|e| e.length).sum();
        assert!(total > 0 && total <= len, "extents cover {total} of {len}");
        let mut at = off;
        for e in &ext {
            assert!(e.length > 0);
            if e.zero {
                let n = e.length.min(4 << 20) as usize;
                assert!(
                    read(d, at, n).iter().all(|&b| b == 0),
                    "zero extent at {at} has data"
                );
            }
            at += e.length;
        }
    }
    let data = d.extents(10 << 20, 65536).unwrap();
    assert!(!data[0].zero, "written data reported as zero: {data:?}");
}

fn concurrent_writers(d: &dyn BlockDevice) {
    let threads = 8;
    let per = 32;
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..per {
                    let off = (12 << 20) + ((i * threads + t) as u64) * 8192;
                    d.write_at(&pattern(1000 + off, 8192), off, false).unwrap();
                }
            });
        }
    });
    for n in 0..threads * per {
        let off = (12 << 20) + n as u64 * 8192;
        assert_eq!(
            &read(d, off, 8192)[..],
            &pattern(1000 + off, 8192)[..],
            "block at {off}"
        );
    }
}

fn nonblocking_paths_match(d: &dyn BlockDevice) {
    let p = pattern(70, 65536);
    if !d.try_write_at(&p, 15 << 20, false).unwrap() {
        d.write_at(&p, 15 << 20, false).unwrap();
    }
    let mut b = IoBuf::new(65536);
    if !d.try_read_at(&mut b, 15 << 20).unwrap() {
        d.read_at(&mut b, 15 << 20).unwrap();
    }
    assert_eq!(&b[..], &p[..]);
}

fn flush_and_cache(d: &dyn BlockDevice) {
    d.write_at(&pattern(80, 4096), 0, false).unwrap();
    d.flush().unwrap();
    d.cache(0, 1 << 20).unwrap();
    assert_eq!(&read(d, 0, 4096)[..], &pattern(80, 4096)[..]);
}
