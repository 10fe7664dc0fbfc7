//! Thin, checked wrappers around the Linux calls the file device needs
//! (positional vectored I/O with flags, fallocate, block-device ioctls, SEEK_DATA/SEEK_HOLE,
//! cachestat).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

const RWF_DSYNC: libc::c_int = 0x2;
const RWF_NOWAIT: libc::c_int = 0x8;

const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127f;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn cvt0(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `preadv2` of one buffer; `nowait` asks the kernel not to block (page cache only).
pub fn pread(f: &File, buf: &mut [u8], offset: u64, nowait: bool) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let flags = if nowait { RWF_NOWAIT } else { 0 };
    // SAFETY: iov describes a live, writable buffer for the duration of the call.
    cvt(unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, offset as i64, flags) })
}

/// cachestat(2)'s number on every architecture but alpha (new calls share one table since 424;
/// the libc crate does not name it for x86_64 yet).
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Pages of `len` bytes at `offset` of `f` that are in the page cache (cachestat(2), Linux
/// 6.5; ENOSYS before).
pub fn cached_pages(f: &File, offset: u64, len: u64) -> io::Result<u64> {
    let range = CachestatRange { off: offset, len };
    let mut st = Cachestat::default();
    // SAFETY: both structs are live, laid out as the kernel's, and `st` is writable.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            f.as_raw_fd(),
            &range as *const CachestatRange,
            &mut st as *mut Cachestat,
            0,
        )
    };
    cvt(r as isize).map(|_| st.nr_cache)
}

/// The size of a memory page.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// `pwritev2` of one buffer; `dsync` makes it durable, `nowait` refuses to block.
pub fn pwrite(f: &File, buf: &[u8], offset: u64, dsync: bool, nowait: bool) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut _,
        iov_len: buf.len(),
    };
    let flags = if dsync { RWF_DSYNC } else { 0 } | if nowait { RWF_NOWAIT } else { 0 };
    // SAFETY: iov describes a live buffer; the kernel only reads from it.
    cvt(unsafe { libc::pwritev2(f.as_raw_fd(), &iov, 1, offset as i64, flags) })
}

/// How `fallocate` should change a range.
#[derive(Debug, Clone, Copy)]
pub enum Fallocate {
    /// Deallocate; the range reads as zeroes.
    PunchHole,
    /// Make the range read as zeroes, keeping it allocated.
    ZeroRange,
}

pub fn fallocate(f: &File, mode: Fallocate, offset: u64, len: u64) -> io::Result<()> {
    let m = libc::FALLOC_FL_KEEP_SIZE
        | match mode {
            Fallocate::PunchHole => libc::FALLOC_FL_PUNCH_HOLE,
            Fallocate::ZeroRange => libc::FALLOC_FL_ZERO_RANGE,
        };
    // SAFETY: plain syscall on an owned fd.
    cvt0(unsafe { libc::fallocate(f.as_raw_fd(), m, offset as i64, len as i64) })
}

pub fn fdatasync(f: &File) -> io::Result<()> {
    // SAFETY: plain syscall on an owned fd.
    cvt0(unsafe { libc::fdatasync(f.as_raw_fd()) })
}

pub fn fadvise_willneed(f: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an owned fd.
    let r = unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::POSIX_FADV_WILLNEED,
        )
    };
    if r != 0 {
        Err(io::Error::from_raw_os_error(r))
    } else {
        Ok(())
    }
}

/// Non-blocking advisory lock of the whole file (exclusive or shared).
pub fn flock(f: &File, exclusive: bool) -> io::Result<()> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    // SAFETY: plain syscall on an owned fd.
    cvt0(unsafe { libc::flock(f.as_raw_fd(), op) })
}

/// Next data (`data = true`) or hole offset at or after `offset`; `None` at end of file.
pub fn seek_data_hole(f: &File, offset: u64, data: bool) -> io::Result<Option<u64>> {
    let whence = if data {
        libc::SEEK_DATA
    } else {
        libc::SEEK_HOLE
    };
    // SAFETY: plain syscall on an owned fd; the file position is never used for I/O here.
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset as i64, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        }
    } else {
        Ok(Some(r as u64))
    }
}

/// Size of a block device in bytes.
pub fn blk_size(f: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer.
    cvt0(unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size) })?;
    Ok(size)
}

/// Logical sector size of a block device.
pub fn blk_logical_sector(f: &File) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int to the pointer.
    cvt0(unsafe { libc::ioctl(f.as_raw_fd(), BLKSSZGET, &mut n) })?;
    Ok(n as u32)
}

fn blk_range(f: &File, req: libc::c_ulong, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKDISCARD/BLKZEROOUT read two u64 from the pointer.
    cvt0(unsafe { libc::ioctl(f.as_raw_fd(), req, range.as_ptr()) })
}

/// Discards a sector-aligned range of a block device.
pub fn blk_discard(f: &File, offset: u64, len: u64) -> io::Result<()> {
    blk_range(f, BLKDISCARD, offset, len)
}

/// Zeroes a sector-aligned range of a block device (the kernel may write zeroes).
pub fn blk_zeroout(f: &File, offset: u64, len: u64) -> io::Result<()> {
    blk_range(f, BLKZEROOUT, offset, len)
}
