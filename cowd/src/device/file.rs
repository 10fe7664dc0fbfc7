//! [`FileDevice`]: a regular file or a block device served with positional I/O.
//!
//! | operation     | regular file                         | block device                      |
//! |---------------|--------------------------------------|-----------------------------------|
//! | read / write  | pread / pwrite (RWF_DSYNC for FUA)   | same                              |
//! | flush         | fdatasync                            | fdatasync                         |
//! | trim          | punch hole                           | BLKDISCARD (sector-aligned part)  |
//! | write zeroes  | punch hole, or zero range (NO_HOLE)  | punch (no fallback), BLKZEROOUT   |
//! | extents       | SEEK_DATA / SEEK_HOLE                | all data                          |
//! | exclusive     | flock (shared for read-only)         | O_EXCL                            |
//!
//! Reads and writes first try `RWF_NOWAIT` when asked through `try_*`, so a caller can serve
//! page-cache hits inline and send only real waits to worker threads. Where the filesystem
//! does not support `RWF_NOWAIT` for buffered writes (ext4 today), `try_write_at` writes into
//! the page cache directly and backs off to the worker threads for a while after a slow one
//! (dirty-page throttling). With `O_DIRECT` every request goes to the worker threads.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use super::sys::{self, Fallocate};
use super::{
    BlockDevice, BlockSizes, CachedRange, Capabilities, DeviceError, ErrorKind, Extent,
    MAX_PAYLOAD, Op, Result, ZeroFlags, push_extent,
};

/// How to open a [`FileDevice`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FileOptions {
    /// Open read-only (and take a shared lock).
    pub read_only: bool,
    /// Bypass the page cache (`O_DIRECT`); requests must then be sector-aligned.
    pub direct: bool,
}

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: in use by another program (it is mounted or already served)")]
    Busy { path: PathBuf },
    #[error("{path}: not a regular file or block device")]
    NotADevice { path: PathBuf },
    #[error("{path}: size 0; nothing to serve")]
    Empty { path: PathBuf },
}

/// A file or block device behind an export.
#[derive(Debug)]
pub struct FileDevice {
    /// Shared with the [`CachedRange`]s handed out, which send from it.
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    block: bool,
    read_only: bool,
    direct: bool,
    sector: u32,
    rotational: bool,
    nowait_read: AtomicBool,
    nowait_write: AtomicBool,
    /// cachestat(2) works here (cleared at its first ENOSYS or EINVAL).
    cachestat: AtomicBool,
    page: u64,
    /// Inline page-cache writes are avoided until this time (ns after `epoch`).
    slow_until: AtomicU64,
    epoch: Instant,
}

/// A page-cache write slower than this makes writes go to worker threads for a while.
const SLOW_WRITE_NS: u64 = 8_000_000;
const SLOW_BACKOFF_NS: u64 = 100_000_000;

impl FileDevice {
    /// Opens `path` exclusively: a device already opened exclusively, mounted, or served by
    /// another cowd is refused with [`OpenError::Busy`].
    pub fn open(path: &Path, opts: FileOptions) -> std::result::Result<Self, OpenError> {
        let err = |source: io::Error| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(err)?;
        let block = meta.file_type().is_block_device();
        if !block && !meta.file_type().is_file() {
            return Err(OpenError::NotADevice {
                path: path.to_owned(),
            });
        }
        let mut flags = libc::O_CLOEXEC;
        if opts.direct {
            flags |= libc::O_DIRECT;
        }
        if block {
            flags |= libc::O_EXCL;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .custom_flags(flags)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => OpenError::Busy {
                    path: path.to_owned(),
                },
                _ => err(e),
            })?;
        let (size, sector, rotational) = if block {
            let size = sys::blk_size(&file).map_err(err)?;
            let sector = sys::blk_logical_sector(&file).unwrap_or(512);
            (size, sector, rotational(meta.rdev()))
        } else {
            sys::flock(&file, !opts.read_only).map_err(|e| match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => OpenError::Busy {
                    path: path.to_owned(),
                },
                _ => err(e),
            })?;
            (meta.len(), 4096, false)
        };
        if size == 0 {
            return Err(OpenError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(FileDevice {
            file: Arc::new(file),
            path: path.to_owned(),
            size,
            block,
            read_only: opts.read_only,
            direct: opts.direct,
            sector,
            rotational,
            nowait_read: AtomicBool::new(!opts.direct),
            nowait_write: AtomicBool::new(!opts.direct),
            cachestat: AtomicBool::new(!opts.direct),
            page: sys::page_size(),
            slow_until: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a block device, false for a regular file.
    pub fn is_block_device(&self) -> bool {
        self.block
    }

    fn write_all(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            match sys::pwrite(&self.file, &buf[done..], at, fua, false) {
                Ok(0) => return Err(self.eio(Op::Write, at, buf.len() - done, "short write")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DeviceError::io(Op::Write, offset, buf.len() as u64, e)),
            }
        }
        Ok(())
    }

    fn eio(&self, op: Op, offset: u64, len: usize, what: &str) -> DeviceError {
        let source = io::Error::other(format!("{}: {what}", self.path.display()));
        DeviceError {
            kind: ErrorKind::Io,
            op,
            offset,
            len: len as u64,
            source: Some(source),
        }
    }

    /// Writes zeroes with plain writes (the fallback of every zeroing path).
    fn write_zero_buffers(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        let chunk = len.min(1 << 20) as usize;
        let zeroes = super::IoBuf::new(chunk);
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = (end - at).min(chunk as u64) as usize;
            self.write_all(&zeroes[..n], at, false)?;
            at += n as u64;
        }
        if fua { self.flush() } else { Ok(()) }
    }

    fn fallocate(&self, mode: Fallocate, op: Op, offset: u64, len: u64) -> Result<bool> {
        match sys::fallocate(&self.file, mode, offset, len) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
                Ok(false)
            }
            Err(e) => Err(DeviceError::io(op, offset, len, e)),
        }
    }

    /// Splits a range into an unaligned head, a sector-aligned middle and an unaligned tail.
    fn sector_split(&self, offset: u64, len: u64) -> (u64, u64, u64) {
        let s = u64::from(self.sector);
        let end = offset + len;
        let mid_start = offset.next_multiple_of(s).min(end);
        let mid_end = (end / s * s).max(mid_start);
        (mid_start - offset, mid_end - mid_start, end - mid_end)
    }

    fn zero_block_device(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        let (head, mid, tail) = self.sector_split(offset, len);
        if flags.fast && (head != 0 || tail != 0) {
            return Err(DeviceError::new(
                ErrorKind::NotFast,
                Op::WriteZeroes,
                offset,
                len,
            ));
        }
        if mid > 0 {
            let m = offset + head;
            // Punching a block device never falls back to writing zeroes, so it is "fast".
            let punched = (flags.may_trim || flags.fast)
                && self.fallocate(Fallocate::PunchHole, Op::WriteZeroes, m, mid)?;
            if !punched {
                if flags.fast {
                    return Err(DeviceError::new(
                        ErrorKind::NotFast,
                        Op::WriteZeroes,
                        m,
                        mid,
                    ));
                }
                sys::blk_zeroout(&self.file, m, mid)
                    .map_err(|e| DeviceError::io(Op::WriteZeroes, m, mid, e))?;
            }
        }
        if head > 0 {
            self.write_zero_buffers(offset, head, false)?;
        }
        if tail > 0 {
            self.write_zero_buffers(offset + len - tail, tail, false)?;
        }
        if flags.fua { self.flush() } else { Ok(()) }
    }
}

fn rotational(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let p = format!("/sys/dev/block/{major}:{minor}/queue/rotational");
    std::fs::read_to_string(p)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_sizes(&self) -> BlockSizes {
        let minimum = if self.direct { self.sector } else { 1 };
        BlockSizes {
            minimum,
            preferred: 4096.max(minimum),
            maximum: MAX_PAYLOAD,
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: self.read_only,
            flush: true,
            fua: true,
            trim: true,
            zero: true,
            fast_zero: true,
            multi_conn: true,
            cache: !self.direct,
            extents: !self.block,
            rotational: self.rotational,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            match sys::pread(&self.file, &mut buf[done..], at, false) {
                Ok(0) => return Err(self.eio(Op::Read, at, buf.len() - done, "unexpected EOF")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DeviceError::io(Op::Read, offset, buf.len() as u64, e)),
            }
        }
        Ok(())
    }

    fn try_read_at(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        if !self.nowait_read.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match sys::pread(&self.file, buf, offset, true) {
            Ok(n) if n == buf.len() => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.nowait_read.store(false, Ordering::Relaxed);
                Ok(false)
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(DeviceError::io(Op::Read, offset, buf.len() as u64, e)),
        }
    }

    fn cached_range(&self, offset: u64, len: usize) -> Option<CachedRange> {
        if len == 0 || !self.cachestat.load(Ordering::Relaxed) {
            return None;
        }
        let pages = (offset + len as u64).div_ceil(self.page) - offset / self.page;
        match sys::cached_pages(&self.file, offset, len as u64) {
            Ok(cached) if cached >= pages => Some(CachedRange::new(self.file.clone(), offset, len)),
            Ok(_) => None,
            Err(e) => {
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
                ) {
                    self.cachestat.store(false, Ordering::Relaxed);
                }
                None
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.write_all(buf, offset, fua)
    }

    fn try_write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<bool> {
        if fua || self.direct {
            return Ok(false);
        }
        if self.nowait_write.load(Ordering::Relaxed) {
            match sys::pwrite(&self.file, buf, offset, false, true) {
                Ok(n) if n == buf.len() => return Ok(true),
                // Part of it is in the page cache already; finish the rest right here.
                Ok(n) => {
                    return self
                        .write_all(&buf[n..], offset + n as u64, false)
                        .map(|()| true);
                }
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    self.nowait_write.store(false, Ordering::Relaxed);
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
                Err(e) => return Err(DeviceError::io(Op::Write, offset, buf.len() as u64, e)),
            }
        }
        // The filesystem cannot say "would block" for buffered writes: write into the page
        // cache directly, which is quick unless the kernel throttles dirty pages. A write
        // that took long sends the next ones to the worker threads for a while.
        let now = self.epoch.elapsed().as_nanos() as u64;
        if now < self.slow_until.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.write_all(buf, offset, false)?;
        let took = self.epoch.elapsed().as_nanos() as u64 - now;
        if took > SLOW_WRITE_NS {
            let until = now + took + SLOW_BACKOFF_NS;
            self.slow_until.store(until, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        if self.block {
            return self.zero_block_device(offset, len, flags);
        }
        let mode = if flags.may_trim {
            Fallocate::PunchHole
        } else {
            Fallocate::ZeroRange
        };
        if self.fallocate(mode, Op::WriteZeroes, offset, len)?
            || (flags.may_trim
                && self.fallocate(Fallocate::ZeroRange, Op::WriteZeroes, offset, len)?)
        {
            return if flags.fua { self.flush() } else { Ok(()) };
        }
        if flags.fast {
            return Err(DeviceError::new(
                ErrorKind::NotFast,
                Op::WriteZeroes,
                offset,
                len,
            ));
        }
        self.write_zero_buffers(offset, len, flags.fua)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        if self.block {
            let (head, mid, _) = self.sector_split(offset, len);
            if mid > 0 {
                match sys::blk_discard(&self.file, offset + head, mid) {
                    Ok(()) => {}
                    // Trim is advisory: a device that cannot discard simply keeps the data.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP)) => {}
                    Err(e) => return Err(DeviceError::io(Op::Trim, offset, len, e)),
                }
            }
        } else {
            self.fallocate(Fallocate::PunchHole, Op::Trim, offset, len)?;
        }
        if fua { self.flush() } else { Ok(()) }
    }

    fn flush(&self) -> Result<()> {
        sys::fdatasync(&self.file).map_err(|e| DeviceError::io(Op::Flush, 0, 0, e))
    }

    fn cache(&self, offset: u64, len: u64) -> Result<()> {
        if !self.direct {
            sys::fadvise_willneed(&self.file, offset, len)
                .map_err(|e| DeviceError::io(Op::Cache, offset, len, e))?;
        }
        Ok(())
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let end = offset + len;
        if self.block {
            return Ok(vec![Extent {
                length: len,
                hole: false,
                zero: false,
            }]);
        }
        let io = |e| DeviceError::io(Op::Extents, offset, len, e);
        let mut out = Vec::new();
        let mut at = offset;
        while at < end && out.len() < 1024 {
            let data = sys::seek_data_hole(&self.file, at, true)
                .map_err(io)?
                .unwrap_or(end);
            if data > at {
                let hole_end = data.min(end);
                push_extent(
                    &mut out,
                    Extent {
                        length: hole_end - at,
                        hole: true,
                        zero: true,
                    },
                );
                at = hole_end;
                continue;
            }
            let hole = sys::seek_data_hole(&self.file, at, false)
                .map_err(io)?
                .unwrap_or(end);
            let data_end = hole.clamp(at + 1, end);
            push_extent(
                &mut out,
                Extent {
                    length: data_end - at,
                    hole: false,
                    zero: false,
                },
            );
            at = data_end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::conformance;

    fn new_file(size: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        File::create(&p).unwrap().set_len(size).unwrap();
        (dir, p)
    }

    #[test]
    fn conformance_buffered() {
        conformance::run_all(&|size| {
            let (dir, p) = new_file(size);
            let d = FileDevice::open(&p, FileOptions::default()).unwrap();
            conformance::Subject::new(d).keep(dir)
        });
    }

    #[test]
    fn conformance_direct() {
        conformance::run_all(&|size| {
            let (dir, p) = new_file(size);
            let d = FileDevice::open(
                &p,
                FileOptions {
                    direct: true,
                    ..Default::default()
                },
            );
            conformance::Subject::new(d.unwrap()).keep(dir)
        });
    }

    #[test]
    fn second_open_is_refused_as_busy() {
        let (_dir, p) = new_file(1 << 20);
        let _first = FileDevice::open(&p, FileOptions::default()).unwrap();
        let second = FileDevice::open(&p, FileOptions::default()).unwrap_err();
        assert!(matches!(second, OpenError::Busy { .. }), "{second}");
        let ro = FileDevice::open(
            &p,
            FileOptions {
                read_only: true,
                ..Default::default()
            },
        );
        assert!(matches!(ro.unwrap_err(), OpenError::Busy { .. }));
    }

    #[test]
    fn bad_paths_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = FileDevice::open(&dir.path().join("missing"), FileOptions::default());
        assert!(e.unwrap_err().to_string().contains("No such file"));
        let e = FileDevice::open(dir.path(), FileOptions::default()).unwrap_err();
        assert!(matches!(e, OpenError::NotADevice { .. }));
        let (_d2, empty) = new_file(0);
        let e = FileDevice::open(&empty, FileOptions::default()).unwrap_err();
        assert!(matches!(e, OpenError::Empty { .. }));
    }

    #[test]
    fn extents_report_holes_of_a_sparse_file() {
        let (_dir, p) = new_file(8 << 20);
        let d = FileDevice::open(&p, FileOptions::default()).unwrap();
        d.write_at(&[1u8; 4096], 2 << 20, false).unwrap();
        let ext = d.extents(0, 8 << 20).unwrap();
        assert!(ext.len() >= 3, "{ext:?}");
        assert!(ext[0].hole && ext[0].zero);
        let total: u64 = ext.iter().map(|e| e.length).sum();
        assert_eq!(total, 8 << 20);
        let mut at = 0;
        for e in &ext {
            if !e.hole {
                assert!(
                    at <= 2 << 20 && at + e.length >= (2 << 20) + 4096,
                    "{ext:?}"
                );
            }
            at += e.length;
        }
    }
}
