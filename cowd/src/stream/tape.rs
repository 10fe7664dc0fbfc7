//! The two Linux st ioctls cowd uses on a tape, `<linux/mtio.h>` written out (libc does not
//! carry them): MTIOCTOP (write a filemark, rewind) and MTIOCGET (is this a tape, and its
//! block size). No tape drive is here to test them: the code is kept this small, and the
//! ioctl numbers are checked against the kernel's in `medium_tests.rs`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `struct mtop`: an operation and its count.
#[repr(C)]
struct MtOp {
    mt_op: libc::c_short,
    mt_count: libc::c_int,
}

/// `struct mtget`: the drive's status.
#[repr(C)]
#[derive(Debug, Default)]
pub(super) struct MtGet {
    pub mt_type: libc::c_long,
    pub mt_resid: libc::c_long,
    /// Block size (bits 0..24, 0 = variable) and density.
    pub mt_dsreg: libc::c_long,
    pub mt_gstat: libc::c_long,
    pub mt_erreg: libc::c_long,
    pub mt_fileno: libc::c_int,
    pub mt_blkno: libc::c_int,
}

pub(super) const MTWEOF: libc::c_short = 5;
pub(super) const MTREW: libc::c_short = 6;
pub(super) const MT_ST_BLKSIZE_MASK: u64 = 0x00ff_ffff;

// `_IOC(dir, 'm', nr, size)`: powerpc, mips and sparc lay the direction bits out
// differently from every other Linux architecture.
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
const DIR: (u32, u32, u32) = (29, 4, 2); // (shift, write, read)
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
const DIR: (u32, u32, u32) = (30, 1, 2);

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << DIR.0) | ((size as u32) << 16) | ((b'm' as u32) << 8) | nr
}

pub(super) const MTIOCTOP: u32 = ioc(DIR.1, 1, std::mem::size_of::<MtOp>());
pub(super) const MTIOCGET: u32 = ioc(DIR.2, 2, std::mem::size_of::<MtGet>());

/// MTIOCTOP: one tape operation.
pub(super) fn op(f: &File, op: libc::c_short, count: libc::c_int) -> io::Result<()> {
    let arg = MtOp {
        mt_op: op,
        mt_count: count,
    };
    // SAFETY: MTIOCTOP reads one `struct mtop`, which `arg` is (repr(C), same fields) and
    // which outlives the call; the descriptor is owned by `f`.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), MTIOCTOP as libc::Ioctl, &arg as *const MtOp) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// MTIOCGET: the drive's status; fails (ENOTTY, EINVAL) on anything but a tape.
pub(super) fn status(f: &File) -> io::Result<MtGet> {
    let mut out = MtGet::default();
    // SAFETY: MTIOCGET writes one `struct mtget` into the pointer, which is `out` (repr(C),
    // same fields and size), live and exclusively borrowed for the call.
    let r = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            MTIOCGET as libc::Ioctl,
            &mut out as *mut MtGet,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(out)
    }
}
