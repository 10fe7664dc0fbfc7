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
mod tests {
    //! Checked against ntfs-3g (package `ntfs-3g`: mkntfs, ntfsinfo, the FUSE driver): the used
    //! cluster count must be the one ntfsinfo reports, and filling or zeroing everything outside
    //! the map must leave a volume that mounts and holds every file intact.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    use super::*;
    use crate::device::{FileDevice, MemoryDevice, ZeroFlags};
    use crate::fs::{open_image, probe as probe_any};

    const MIB: u64 = 1 << 20;

    fn require(tool: &str) {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file());
        assert!(
            found,
            "{tool} is missing: the NTFS tests need the ntfs-3g package (apt-get install ntfs-3g)"
        );
    }

    fn tools() {
        for t in ["mkntfs", "ntfsinfo", "ntfs-3g"] {
            require(t);
        }
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "the NTFS tests need root (FUSE mounts)");
    }

    fn output(cmd: &str, args: &[&str]) -> Output {
        Command::new(cmd)
            .args(args)
            .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    fn run(cmd: &str, args: &[&str]) -> String {
        let out = output(cmd, args);
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// An image of `file_size` bytes with an NTFS volume of `sectors` 512-byte sectors (or the
    /// whole file).
    fn mkntfs(dir: &Path, file_size: u64, sectors: Option<u64>, args: &[&str]) -> PathBuf {
        let img = dir.join("ntfs.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(file_size).unwrap();
        drop(f);
        let mut a = vec!["-q", "-F", "-Q"];
        a.extend_from_slice(args);
        a.push(s(&img));
        let n = sectors.map(|n| n.to_string());
        if let Some(n) = &n {
            a.push(n);
        }
        run("mkntfs", &a);
        img
    }

    /// Unmounts on drop, also when the test fails.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = output("umount", &[s(&self.0)]);
        }
    }

    fn mount(img: &Path, mnt: &Path, ro: bool) -> Mounted {
        std::fs::create_dir_all(mnt).unwrap();
        let mut a = vec![s(img), s(mnt)];
        if ro {
            a.extend(["-o", "ro"]);
        }
        run("ntfs-3g", &a);
        Mounted(mnt.to_owned())
    }

    /// Writes files through ntfs-3g, removes some, writes more; returns what remains.
    fn populate(dir: &Path, img: &Path, budget: u64, seed: u64) -> BTreeMap<String, Vec<u8>> {
        let mnt = dir.join("mnt");
        let guard = mount(img, &mnt, false);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut files = BTreeMap::new();
        std::fs::create_dir(mnt.join("d")).unwrap();
        let write = |files: &mut BTreeMap<String, Vec<u8>>,
                     rng: &mut fastrand::Rng,
                     name: String,
                     size: u64| {
            let mut data = vec![0u8; size as usize];
            rng.fill(&mut data);
            std::fs::write(mnt.join(&name), &data).unwrap();
            files.insert(name, data);
        };
        // Small files stay resident in their MFT records; the large ones get clusters.
        for (i, size) in [0, 100, 700, 5000, 65536, budget / 8, budget / 5]
            .into_iter()
            .enumerate()
        {
            write(&mut files, &mut rng, format!("d/f{i}"), size);
        }
        for i in 7..30 {
            let size = rng.u64(0..budget / 40);
            write(&mut files, &mut rng, format!("d/f{i}"), size);
        }
        let names: Vec<String> = files.keys().cloned().collect();
        for name in names.iter().step_by(3) {
            std::fs::remove_file(mnt.join(name)).unwrap();
            files.remove(name);
        }
        for i in 30..40 {
            let size = rng.u64(0..budget / 30);
            write(&mut files, &mut rng, format!("d/f{i}"), size);
        }
        drop(guard);
        files
    }

    /// ntfsinfo's cluster size, volume clusters and free clusters.
    fn ntfsinfo(img: &Path) -> (u64, u64, u64) {
        let text = run("ntfsinfo", &["-m", "-f", s(img)]);
        let field = |key: &str| -> u64 {
            let line = text
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("ntfsinfo: no {key}"));
            line.split_whitespace().next().unwrap().parse().unwrap()
        };
        (
            field("Cluster Size:"),
            field("Volume Size in Clusters:"),
            field("Free Clusters:"),
        )
    }

    fn open(img: &Path) -> FileDevice {
        open_image(img, true)
    }

    fn map_of(dev: &dyn BlockDevice) -> UsedMap {
        match probe_any(dev).unwrap() {
            Probe::Used(m) => m,
            other => panic!("expected a used map, got {other:?}"),
        }
    }

    fn check_against_ntfsinfo(img: &Path) -> UsedMap {
        let dev = open(img);
        let map = map_of(&dev);
        let (cluster, clusters, free) = ntfsinfo(img);
        assert_eq!(map.filesystem, "ntfs");
        assert_eq!(u64::from(map.fs_block_size), cluster);
        assert_eq!(map.fs_bytes, clusters * cluster);
        assert_eq!(map.total_bytes, dev.size());
        let beyond = map.total_bytes - map.fs_bytes;
        assert!(
            beyond > 0,
            "the backup boot sector lies past the last cluster"
        );
        assert_eq!(
            map.used_bytes - beyond,
            (clusters - free) * cluster,
            "used bytes of {map}"
        );
        for w in map.used.windows(2) {
            assert!(w[0].1 < w[1].0, "ranges not merged: {w:?}");
        }
        assert_eq!(map.used.last().unwrap().1, map.total_bytes);
        map
    }

    fn free_ranges(used: &[(u64, u64)], end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        for &(s, e) in used {
            if s > at {
                out.push((at, s));
            }
            at = e;
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    fn files_intact(dir: &Path, img: &Path, files: &BTreeMap<String, Vec<u8>>) {
        let mnt = dir.join("check");
        let guard = mount(img, &mnt, true);
        let mut listed: Vec<String> = std::fs::read_dir(mnt.join("d"))
            .unwrap()
            .map(|e| format!("d/{}", e.unwrap().file_name().to_str().unwrap()))
            .collect();
        listed.sort();
        let want: Vec<String> = files.keys().cloned().collect();
        assert_eq!(listed, want, "{}", img.display());
        for (name, data) in files {
            let got = std::fs::read(mnt.join(name)).unwrap();
            assert!(got == *data, "{}: {name} differs", img.display());
        }
        drop(guard);
    }

    /// Garbage, then zeroes, over everything outside the map: the volume is the same.
    fn free_space_is_free(
        dir: &Path,
        img: &Path,
        map: &UsedMap,
        files: &BTreeMap<String, Vec<u8>>,
    ) {
        files_intact(dir, img, files);
        let free = free_ranges(&map.used, map.total_bytes);
        for garbage in [true, false] {
            let copy = dir.join(if garbage { "garbage.img" } else { "zeroed.img" });
            run("cp", &["--sparse=always", s(img), s(&copy)]);
            let dev = open_image(&copy, false);
            for &(start, end) in &free {
                if garbage {
                    let data: Vec<u8> = (start..end).map(|i| 0x5A ^ (i as u8)).collect();
                    dev.write_at(&data, start, false).unwrap();
                } else {
                    let flags = ZeroFlags {
                        may_trim: true,
                        ..ZeroFlags::default()
                    };
                    dev.write_zeroes(start, end - start, flags).unwrap();
                }
            }
            dev.flush().unwrap();
            drop(dev);
            assert_eq!(map_of(&open(&copy)), *map);
            assert_eq!(ntfsinfo(&copy), ntfsinfo(img));
            files_intact(dir, &copy, files);
            std::fs::remove_file(&copy).unwrap();
        }
    }

    fn layout(file_size: u64, sectors: Option<u64>, args: &[&str]) -> UsedMap {
        tools();
        let dir = tempfile::tempdir().unwrap();
        let img = mkntfs(dir.path(), file_size, sectors, args);
        check_against_ntfsinfo(&img);
        let fs_bytes = map_of(&open(&img)).fs_bytes;
        let files = populate(dir.path(), &img, fs_bytes / 3, file_size);
        let map = check_against_ntfsinfo(&img);
        free_space_is_free(dir.path(), &img, &map, &files);
        map
    }

    #[test]
    fn ntfs_default() {
        let m = layout(64 * MIB, None, &[]);
        assert_eq!(m.fs_block_size, 4096);
    }

    #[test]
    fn ntfs_small_clusters() {
        let m = layout(32 * MIB, None, &["-c", "512"]);
        assert_eq!(m.fs_block_size, 512);
    }

    #[test]
    fn ntfs_large_clusters() {
        let m = layout(128 * MIB, None, &["-c", "65536"]);
        assert_eq!(m.fs_block_size, 65536);
    }

    #[test]
    fn ntfs_smaller_than_device() {
        // 40 MiB of the 64 MiB file.
        let m = layout(64 * MIB, Some(40 * 2048), &[]);
        assert!(m.fs_bytes < 40 * MIB);
        assert_eq!(m.total_bytes, 64 * MIB);
        assert!(m.used.last().unwrap().0 <= 40 * MIB);
    }

    /// A device that counts the bytes read from it.
    #[derive(Debug)]
    struct Counting {
        inner: FileDevice,
        read: std::sync::atomic::AtomicU64,
    }

    impl BlockDevice for Counting {
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn capabilities(&self) -> crate::device::Capabilities {
            self.inner.capabilities()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> crate::device::Result<()> {
            self.read
                .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, _: &[u8], _: u64, _: bool) -> crate::device::Result<()> {
            unreachable!("read only")
        }
        fn write_zeroes(&self, _: u64, _: u64, _: ZeroFlags) -> crate::device::Result<()> {
            unreachable!("read only")
        }
        fn trim(&self, _: u64, _: u64, _: bool) -> crate::device::Result<()> {
            unreachable!("read only")
        }
        fn flush(&self) -> crate::device::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn ntfs_one_tib_reads_only_metadata() {
        tools();
        let dir = tempfile::tempdir().unwrap();
        let img = mkntfs(dir.path(), 1 << 40, None, &[]);
        let dev = Counting {
            inner: open(&img),
            read: Default::default(),
        };
        let start = std::time::Instant::now();
        let map = map_of(&dev);
        let took = start.elapsed();
        let read = dev.read.load(std::sync::atomic::Ordering::Relaxed);
        let (cluster, clusters, free) = ntfsinfo(&img);
        let beyond = map.total_bytes - map.fs_bytes;
        assert_eq!(map.used_bytes - beyond, (clusters - free) * cluster);
        // The bitmap is 32 MiB; the rest is the boot sector and a few MFT records.
        assert!(read <= 40 * MIB, "read {read} bytes");
        eprintln!("{map}; read {read} bytes in {took:?}");
    }

    #[test]
    fn ntfs_dirty_is_refused() {
        tools();
        let dir = tempfile::tempdir().unwrap();
        let img = mkntfs(dir.path(), 32 * MIB, None, &[]);
        map_of(&open(&img));
        // Set VOLUME_IS_DIRTY in $Volume's $VOLUME_INFORMATION, found through the parser.
        let dev = MemoryDevice::new(32 * MIB);
        dev.write_at(&std::fs::read(&img).unwrap(), 0, false)
            .unwrap();
        let mut r = DevReader::new(&dev);
        let ntfs = Ntfs::new(&mut r).unwrap();
        let file = ntfs
            .file(&mut r, KnownNtfsFileRecordNumber::Volume as u64)
            .unwrap();
        let record = file.position().value().unwrap().get();
        drop(r);
        let mut rec = vec![0u8; ntfs.file_record_size() as usize];
        dev.read_at(&mut rec, record).unwrap();
        // $VOLUME_INFORMATION (type 0x70), resident: flags at value offset + 10.
        let mut at = usize::from(le16(&rec, 0x14));
        let mut patched = false;
        while at + 8 < rec.len() && le32(&rec, at) != 0xFFFF_FFFF {
            let len = le32(&rec, at + 4) as usize;
            if le32(&rec, at) == 0x70 {
                let value = at + usize::from(le16(&rec, at + 0x14));
                dev.write_at(&[0x01], record + value as u64 + 10, false)
                    .unwrap();
                patched = true;
                break;
            }
            at += len;
        }
        assert!(patched);
        match probe_any(&dev).unwrap() {
            Probe::Unsupported { reason, .. } => assert!(reason.contains("dirty"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ntfs_logfile_needing_replay_is_refused() {
        tools();
        let dir = tempfile::tempdir().unwrap();
        let img = mkntfs(dir.path(), 32 * MIB, None, &[]);
        let dev = MemoryDevice::new(32 * MIB);
        dev.write_at(&std::fs::read(&img).unwrap(), 0, false)
            .unwrap();
        // Where $LogFile's data starts.
        let mut r = DevReader::new(&dev);
        let ntfs = Ntfs::new(&mut r).unwrap();
        let file = ntfs
            .file(&mut r, KnownNtfsFileRecordNumber::LogFile as u64)
            .unwrap();
        let item = file.data(&mut r, "").unwrap().unwrap();
        let attr = item.to_attribute().unwrap();
        let value = attr.value(&mut r).unwrap();
        let at = value.data_position().value().unwrap().get();
        drop(r);
        // A restart page with a client in use and no "clean" flag.
        let mut page = vec![0u8; 4096];
        page[..4].copy_from_slice(b"RSTR");
        page[0x10..0x14].copy_from_slice(&4096u32.to_le_bytes());
        page[0x18..0x1A].copy_from_slice(&0x30u16.to_le_bytes());
        page[0x30 + 0x0C..0x30 + 0x0E].copy_from_slice(&0u16.to_le_bytes());
        dev.write_at(&page, at, false).unwrap();
        match probe_any(&dev).unwrap() {
            Probe::Unsupported { reason, .. } => assert!(reason.contains("replay"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // The same page marked clean is fine.
        page[0x30 + 0x0E] = RESTART_VOLUME_IS_CLEAN as u8;
        dev.write_at(&page, at, false).unwrap();
        map_of(&dev);
    }

    #[test]
    fn ntfs_truncated_or_garbage_never_panics() {
        tools();
        let dir = tempfile::tempdir().unwrap();
        let img = mkntfs(dir.path(), 16 * MIB, None, &[]);
        let data = std::fs::read(&img).unwrap();
        // Shorter than the volume.
        let dev = MemoryDevice::new(8 * MIB);
        dev.write_at(&data[..8 * MIB as usize], 0, false).unwrap();
        assert!(matches!(
            probe_any(&dev).unwrap(),
            Probe::Unsupported { .. }
        ));
        // Random bytes over the first 64 KiB (boot sector, MFT start), keeping the OEM id.
        let mut rng = fastrand::Rng::with_seed(3);
        for round in 0..200 {
            let dev = MemoryDevice::new(16 * MIB);
            dev.write_at(&data, 0, false).unwrap();
            for _ in 0..rng.usize(1..16) {
                let at = if round % 2 == 0 {
                    rng.u64(11..512)
                } else {
                    rng.u64(512..64 * 1024)
                };
                dev.write_at(&[rng.u8(..)], at, false).unwrap();
            }
            if let Probe::Used(m) = probe_any(&dev).unwrap() {
                assert!(m.used.iter().all(|(s, e)| s < e && *e <= m.total_bytes));
            }
        }
    }
}
