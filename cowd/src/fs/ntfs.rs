//! NTFS: the used map from the volume's cluster allocation bitmap (`$Bitmap`).
//!
//! ```text
//!  byte 0                                             total_sectors * sector size
//!  | boot sector ("NTFS    " at 3) | clusters 0 .. n-1 (a bit each in $Bitmap) | backup boot
//! ```
//!
//! The `ntfs` crate parses the boot sector and the MFT; `$Bitmap` (MFT record 6, unnamed
//! `$DATA`) is then streamed through it: bit `i` of byte `j` is cluster `8j + i`. Everything
//! after the last whole cluster (the backup boot sector, and whatever follows a volume smaller
//! than its device) counts as used.
//!
//! The bitmap is trusted only when the volume was cleanly unmounted: `$Volume` not flagged
//! dirty, and `$LogFile` either empty (all 0xFF, as mkntfs and ntfs-3g leave it) or with a
//! restart area that has no client in use or says "clean". Anything else, or anything the
//! parser does not accept, is [`Probe::Unsupported`]. Windows keeps a client in `$LogFile`
//! while it has the volume mounted, so such a volume is refused; ntfs-3g marks neither, so a
//! volume it has mounted looks clean: read the map only when the volume is quiet.

#[path = "ntfs_tree.rs"]
pub mod tree;

use std::io::{self, Read, Seek, SeekFrom};

use ntfs::{KnownNtfsFileRecordNumber, Ntfs, NtfsReadSeek};

use super::{FsError, Probe, RangeSet, UsedMap, bit_runs, le16, le32, read_bytes};
use crate::device::{BlockDevice, DeviceError};

const FS: &str = "ntfs";
const OEM_ID: &[u8; 8] = b"NTFS    ";
/// `$Volume` flag: the volume must be checked (or is in use).
const VOLUME_IS_DIRTY: u16 = 0x0001;
/// `$LogFile` restart area: the volume was cleanly shut down.
const RESTART_VOLUME_IS_CLEAN: u16 = 0x0002;
const LOGFILE_NO_CLIENT: u16 = 0xFFFF;
/// Reads through the device are served from a window of this size.
const WINDOW: u64 = 1 << 20;

/// Reads the NTFS volume on `dev`, if there is one.
pub fn probe(dev: &dyn BlockDevice) -> Result<Probe, FsError> {
    if dev.size() < 512 {
        return Ok(Probe::Unknown);
    }
    let boot = read_bytes(dev, 0, 512, FS, || "boot sector".to_owned())?;
    if &boot[3..11] != OEM_ID {
        return Ok(Probe::Unknown);
    }
    let mut r = DevReader::new(dev);
    // The parser is given data from the device, which may be anything: a panic in it is one
    // more reason to give up, not a crash.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scan(&mut r)));
    let refuse = |reason: String| {
        Ok(Probe::Unsupported {
            filesystem: FS,
            reason,
        })
    };
    match result {
        Ok(Ok(map)) => Ok(Probe::Used(map)),
        Ok(Err(reason)) => match r.error.take() {
            // The parser saw an I/O error: that is the real failure.
            Some((what, source)) => Err(FsError::Read {
                filesystem: FS,
                what,
                source,
            }),
            None => refuse(reason),
        },
        Err(_) => refuse("the NTFS parser failed on this volume's metadata".to_owned()),
    }
}

fn scan(r: &mut DevReader<'_>) -> Result<UsedMap, String> {
    let device_size = r.dev.size();
    let ntfs = Ntfs::new(r).map_err(|e| format!("boot sector: {e}"))?;
    let cluster = u64::from(ntfs.cluster_size());
    let volume = ntfs.size();
    if volume > device_size {
        return Err(format!(
            "the volume ({volume} bytes) is larger than the device ({device_size} bytes): \
             truncated?"
        ));
    }
    let clusters = volume / cluster;
    let info = ntfs.volume_info(r).map_err(|e| format!("$Volume: {e}"))?;
    if info.flags().bits() & VOLUME_IS_DIRTY != 0 {
        return Err(
            "the volume is marked dirty: in use, or not cleanly unmounted (run \
                    chkdsk or ntfsfix)"
                .to_owned(),
        );
    }
    logfile_clean(&ntfs, r)?;

    let file = ntfs
        .file(r, KnownNtfsFileRecordNumber::Bitmap as u64)
        .map_err(|e| format!("$Bitmap: {e}"))?;
    let item = file
        .data(r, "")
        .ok_or("$Bitmap has no data")?
        .map_err(|e| format!("$Bitmap: {e}"))?;
    let attr = item.to_attribute().map_err(|e| format!("$Bitmap: {e}"))?;
    let mut value = attr.value(r).map_err(|e| format!("$Bitmap: {e}"))?;
    if value.len() < clusters.div_ceil(8) {
        return Err(format!(
            "$Bitmap has {} bytes for {clusters} clusters",
            value.len()
        ));
    }
    let mut set = RangeSet::default();
    let mut buf = vec![0u8; WINDOW as usize];
    let mut done = 0u64;
    while done < clusters {
        let bits = (clusters - done).min(WINDOW * 8);
        let want = bits.div_ceil(8) as usize;
        let mut got = 0;
        while got < want {
            let n = value
                .read(r, &mut buf[got..want])
                .map_err(|e| format!("$Bitmap: {e}"))?;
            if n == 0 {
                return Err("$Bitmap ends early".to_owned());
            }
            got += n;
        }
        // Runs crossing a window boundary are joined by the range set.
        bit_runs(&buf[..want], bits, |a, b| {
            set.add((done + a) * cluster, (done + b) * cluster)
        });
        done += bits;
    }
    // Cluster 0 holds the boot sector whatever the bitmap says; past the last cluster: the
    // backup boot sector, then whatever follows the volume.
    set.add(0, cluster.min(device_size));
    let fs_bytes = clusters * cluster;
    set.add(fs_bytes, device_size);
    let used = set.finish();
    let used_bytes = used.iter().map(|(s, e)| e - s).sum();
    Ok(UsedMap {
        filesystem: FS,
        fs_block_size: cluster as u32,
        fs_bytes,
        used,
        used_bytes,
        total_bytes: device_size,
    })
}

/// Checks that `$LogFile` holds nothing to replay.
fn logfile_clean(ntfs: &Ntfs, r: &mut DevReader<'_>) -> Result<(), String> {
    let file = ntfs
        .file(r, KnownNtfsFileRecordNumber::LogFile as u64)
        .map_err(|e| format!("$LogFile: {e}"))?;
    let item = file
        .data(r, "")
        .ok_or("$LogFile has no data")?
        .map_err(|e| format!("$LogFile: {e}"))?;
    let attr = item.to_attribute().map_err(|e| format!("$LogFile: {e}"))?;
    let mut value = attr.value(r).map_err(|e| format!("$LogFile: {e}"))?;
    // The two restart pages; their size is in the first one (4 KiB in practice).
    let mut page = vec![0u8; 4096];
    let mut offset = 0u64;
    for _ in 0..2 {
        if value.len() < offset + page.len() as u64 {
            return Err("$LogFile too short".to_owned());
        }
        value
            .seek(r, SeekFrom::Start(offset))
            .map_err(|e| format!("$LogFile: {e}"))?;
        let mut got = 0;
        while got < page.len() {
            let n = value
                .read(r, &mut page[got..])
                .map_err(|e| format!("$LogFile: {e}"))?;
            if n == 0 {
                return Err("$LogFile ends early".to_owned());
            }
            got += n;
        }
        if page.iter().all(|&b| b == 0xFF) {
            // Emptied (mkntfs, ntfs-3g): nothing to replay.
            offset = 4096;
            continue;
        }
        if &page[..4] != b"RSTR" {
            return Err(format!(
                "$LogFile restart page at {offset} has magic {:?}: unclean or being checked",
                String::from_utf8_lossy(&page[..4])
            ));
        }
        let system_page = u64::from(le32(&page, 0x10));
        let area = usize::from(le16(&page, 0x18));
        if area + 0x10 > 510 {
            return Err(format!("$LogFile restart area at {area}"));
        }
        let in_use = le16(&page, area + 0x0C);
        let flags = le16(&page, area + 0x0E);
        if in_use != LOGFILE_NO_CLIENT && flags & RESTART_VOLUME_IS_CLEAN == 0 {
            return Err(
                "$LogFile has a client in use and the volume is not marked clean: \
                        the journal needs replay (mounted, hibernated or not cleanly \
                        unmounted)"
                    .to_owned(),
            );
        }
        if !(4096..=65536).contains(&system_page) || !system_page.is_power_of_two() {
            return Err(format!("$LogFile system page size {system_page}"));
        }
        offset = system_page;
    }
    Ok(())
}

/// `Read + Seek` over a block device for the `ntfs` crate, through a window of aligned reads.
/// A device error is kept, so that it is reported as an I/O error and not as a bad volume.
struct DevReader<'d> {
    dev: &'d dyn BlockDevice,
    pos: u64,
    window: Vec<u8>,
    window_start: u64,
    error: Option<(String, DeviceError)>,
}

impl<'d> DevReader<'d> {
    fn new(dev: &'d dyn BlockDevice) -> Self {
        DevReader {
            dev,
            pos: 0,
            window: Vec::new(),
            window_start: 0,
            error: None,
        }
    }
}

impl Read for DevReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.dev.size();
        if self.pos >= size || buf.is_empty() {
            return Ok(0);
        }
        let inside = self.pos >= self.window_start
            && self.pos < self.window_start + self.window.len() as u64;
        if !inside {
            let start = self.pos / WINDOW * WINDOW;
            let len = (size - start).min(WINDOW) as usize;
            match read_bytes(self.dev, start, len, FS, || format!("bytes at {start}")) {
                Ok(chunk) => {
                    self.window.clear();
                    self.window.extend_from_slice(&chunk);
                    self.window_start = start;
                }
                Err(FsError::Read { what, source, .. }) => {
                    let e = io::Error::other(source.to_string());
                    self.error = Some((what, source));
                    return Err(e);
                }
            }
        }
        let at = (self.pos - self.window_start) as usize;
        let n = buf.len().min(self.window.len() - at);
        buf[..n].copy_from_slice(&self.window[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for DevReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let size = self.dev.size() as i128;
        let new = match to {
            SeekFrom::Start(p) => i128::from(p),
            SeekFrom::End(d) => size + i128::from(d),
            SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
        };
        if new < 0 || new > i128::from(u64::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek out of range",
            ));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}

#[cfg(test)]
#[path = "ntfs_tests.rs"]
mod tests;
