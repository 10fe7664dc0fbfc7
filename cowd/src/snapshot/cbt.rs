//! Changed-block tracking: which blocks of an export were written since its last complete
//! backup (the map's *base*), so the next backup can read only those.
//!
//! ```text
//!  write ──> mark blocks ──> changed
//!  T of backup B:   checkpoint: (base, changed) set aside, changed = {} counted from T
//!  B completes:     base = B          B fails: changed |= set-aside, base = set-aside base
//! ```
//!
//! The map is only as good as its history: it is *invalid* (no incremental allowed) after an
//! unclean stop (writes may have reached the device unseen), after the device changed while
//! cowd was not serving it, or before the first complete backup. It survives a clean restart:
//! [`CbtFile`] saves it with the device's identity; a marker file exists while cowd runs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

/// The state of the map at a snapshot point.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The complete backup the map counts from, if the map is valid.
    pub base: Option<String>,
    /// Why it cannot be trusted, if it cannot.
    pub invalid: Option<String>,
    /// Blocks written since `base`'s snapshot point.
    pub changed: RoaringBitmap,
}

#[derive(Debug)]
struct State {
    base: Option<String>,
    invalid: Option<String>,
    changed: RoaringBitmap,
    /// The backup in progress and what its checkpoint set aside.
    in_flight: Option<(String, Checkpoint)>,
}

/// The changed-block map of one export, at `block_size` granularity.
#[derive(Debug)]
pub struct Cbt {
    block_size: u32,
    state: Mutex<State>,
}

impl Cbt {
    /// A map without history: invalid until the first complete backup.
    pub fn new(block_size: u32) -> Cbt {
        let state = State {
            base: None,
            invalid: Some(
                "no complete backup of this export is known to the change map yet".into(),
            ),
            changed: RoaringBitmap::new(),
            in_flight: None,
        };
        Cbt {
            block_size,
            state: Mutex::new(state),
        }
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Records a write of `len > 0` bytes at `offset`.
    pub fn mark(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let bs = u64::from(self.block_size);
        let (first, last) = (offset / bs, (offset + len - 1) / bs);
        let mut s = self.state.lock().unwrap();
        if first == last {
            s.changed.insert(first as u32);
        } else {
            s.changed.insert_range(first as u32..=last as u32);
        }
    }

    /// Marks the map untrustworthy (`why` is shown in manifests of the next full backup).
    pub fn invalidate(&self, why: &str) {
        let mut s = self.state.lock().unwrap();
        s.base = None;
        s.invalid = Some(why.to_owned());
    }

    /// At T of backup `id` (writes held): returns the map so far and starts counting from T.
    pub fn checkpoint(&self, id: &str) -> Checkpoint {
        let mut s = self.state.lock().unwrap();
        let cp = Checkpoint {
            base: s.base.take(),
            invalid: s.invalid.clone(),
            changed: std::mem::take(&mut s.changed),
        };
        s.in_flight = Some((id.to_owned(), cp.clone()));
        cp
    }

    /// Backup `id` completed: the map now counts from its T.
    pub fn complete(&self, id: &str) {
        let mut s = self.state.lock().unwrap();
        if s.in_flight.as_ref().is_some_and(|f| f.0 == id) {
            s.in_flight = None;
            s.base = Some(id.to_owned());
            s.invalid = None;
        }
    }

    /// Backup `id` did not complete: the writes before its T still count.
    pub fn abort(&self, id: &str) {
        let mut s = self.state.lock().unwrap();
        if s.in_flight.as_ref().is_some_and(|f| f.0 == id) {
            let (_, cp) = s.in_flight.take().unwrap();
            s.changed |= cp.changed;
            // An invalidation that happened meanwhile wins over the restored base.
            if s.invalid.is_none() || cp.invalid.is_some() {
                s.base = cp.base;
                s.invalid = cp.invalid;
            }
        }
    }

    /// The current state (for saving and reports).
    pub fn snapshot(&self) -> Checkpoint {
        let s = self.state.lock().unwrap();
        let mut changed = s.changed.clone();
        let (mut base, mut invalid) = (s.base.clone(), s.invalid.clone());
        if let Some((_, cp)) = &s.in_flight {
            // Saved while a backup runs: it did not complete, so count from the older base.
            changed |= &cp.changed;
            base = cp.base.clone();
            invalid = cp.invalid.clone();
        }
        Checkpoint {
            base,
            invalid,
            changed,
        }
    }

    fn restore(&self, base: Option<String>, invalid: Option<String>, changed: RoaringBitmap) {
        let mut s = self.state.lock().unwrap();
        (s.base, s.invalid, s.changed) = (base, invalid, changed);
    }
}

/// Identity of a device, to notice changes made while cowd was not serving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub path: String,
    pub size: u64,
    /// Regular files: inode and modification time (ns). Block devices: none (only the
    /// unclean-stop marker protects them).
    pub inode: Option<u64>,
    pub mtime_ns: Option<i128>,
}

impl DeviceIdentity {
    pub fn of(path: &Path) -> std::io::Result<DeviceIdentity> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(path)?;
        let file = m.file_type().is_file();
        let size = if file { m.len() } else { 0 };
        Ok(DeviceIdentity {
            path: path.display().to_string(),
            size,
            inode: file.then(|| m.ino()),
            mtime_ns: (file && !m.file_type().is_block_device())
                .then(|| i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    export: String,
    block_size: u32,
    base: Option<String>,
    invalid: Option<String>,
    device: DeviceIdentity,
    /// Roaring bitmap, portable serialization, hex.
    changed: String,
}

/// The files of one export's map in the state directory: `cbt/EXPORT.json` (saved at a
/// clean stop) and `cbt/EXPORT.running` (exists while cowd serves the export).
#[derive(Debug, Clone)]
pub struct CbtFile {
    saved: PathBuf,
    running: PathBuf,
    export: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// `export` as a file name: letters, digits and '-' kept, anything else '_'.
pub(crate) fn file_safe(export: &str) -> String {
    export
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl CbtFile {
    pub fn new(state_dir: &Path, export: &str) -> CbtFile {
        let dir = state_dir.join("cbt");
        let name = file_safe(export);
        CbtFile {
            saved: dir.join(format!("{name}.json")),
            running: dir.join(format!("{name}.running")),
            export: export.to_owned(),
        }
    }

    /// The export whose map this is.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// Loads the map at daemon start and sets the "running" marker. The map comes back valid
    /// only if the last stop was clean and the device is unchanged since.
    pub fn load(&self, cbt: &Cbt, device: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(self.saved.parent().unwrap())?;
        let unclean = self.running.exists();
        let saved: Option<Saved> = std::fs::read(&self.saved)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let _ = std::fs::remove_file(&self.saved);
        // The marker and the removal are durable (write_atomic syncs the directory) before
        // any write is served: else a power cut could bring back the old map without the
        // marker, and it would be trusted.
        crate::files::write_atomic(&self.running, b"cowd is serving this export\n")?;
        let Some(saved) = saved else {
            if unclean {
                cbt.invalidate(
                    "cowd did not stop cleanly: writes may have reached the device unrecorded",
                );
            }
            return Ok(());
        };
        let now = DeviceIdentity::of(device)?;
        let changed = unhex(&saved.changed)
            .and_then(|b| RoaringBitmap::deserialize_from(&b[..]).ok())
            .unwrap_or_default();
        if unclean {
            cbt.invalidate(
                "cowd did not stop cleanly: writes may have reached the device unrecorded",
            );
        } else if saved.device != now {
            cbt.invalidate("the device changed while cowd was not serving it");
        } else if saved.block_size != cbt.block_size() || saved.export != self.export {
            cbt.invalidate("the change map was kept at another block size");
        } else {
            cbt.restore(saved.base, saved.invalid, changed);
        }
        Ok(())
    }

    /// Saves the map at a clean stop (after the final flush) and removes the marker.
    pub fn save(&self, cbt: &Cbt, device: &Path) -> std::io::Result<()> {
        let cp = cbt.snapshot();
        let mut bytes = Vec::new();
        cp.changed.serialize_into(&mut bytes)?;
        let saved = Saved {
            export: self.export.clone(),
            block_size: cbt.block_size(),
            base: cp.base,
            invalid: cp.invalid,
            device: DeviceIdentity::of(device)?,
            changed: hex(&bytes),
        };
        let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        crate::files::write_atomic(&self.saved, &bytes)?;
        std::fs::remove_file(&self.running)?;
        std::fs::File::open(self.saved.parent().unwrap())?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_complete_and_abort() {
        let c = Cbt::new(65536);
        c.mark(0, 1);
        c.mark(65535, 2);
        let cp = c.checkpoint("b1");
        assert!(cp.invalid.is_some() && cp.base.is_none());
        assert_eq!(cp.changed.iter().collect::<Vec<_>>(), vec![0, 1]);
        c.mark(5 * 65536, 10);
        c.complete("b1");
        let cp = c.checkpoint("b2");
        assert_eq!(cp.base.as_deref(), Some("b1"));
        assert!(cp.invalid.is_none());
        assert_eq!(cp.changed.iter().collect::<Vec<_>>(), vec![5]);
        c.mark(7 * 65536, 1);
        c.abort("b2");
        let s = c.snapshot();
        assert_eq!(
            s.base.as_deref(),
            Some("b1"),
            "a failed backup does not move the base"
        );
        assert_eq!(s.changed.iter().collect::<Vec<_>>(), vec![5, 7]);
        c.invalidate("test");
        assert!(c.checkpoint("b3").invalid.is_some());
    }

    #[test]
    fn survives_a_clean_restart_only() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let f = CbtFile::new(dir.path(), "disk");
        let c = Cbt::new(65536);
        f.load(&c, &img).unwrap();
        c.checkpoint("b1");
        c.complete("b1");
        c.mark(3 * 65536, 1);
        f.save(&c, &img).unwrap();
        // Clean restart: the map comes back.
        let c2 = Cbt::new(65536);
        f.load(&c2, &img).unwrap();
        let s = c2.snapshot();
        assert_eq!(s.base.as_deref(), Some("b1"));
        assert_eq!(s.changed.iter().collect::<Vec<_>>(), vec![3]);
        // Crash (no save): the marker stays, the next start invalidates.
        let c3 = Cbt::new(65536);
        f.load(&c3, &img).unwrap();
        assert!(
            c3.snapshot()
                .invalid
                .unwrap()
                .contains("did not stop cleanly")
        );
        // Clean stop, then the device is written behind cowd's back.
        let c4 = Cbt::new(65536);
        c4.checkpoint("b2");
        c4.complete("b2");
        f.save(&c4, &img).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&img, vec![1u8; 1 << 20]).unwrap();
        let c5 = Cbt::new(65536);
        f.load(&c5, &img).unwrap();
        assert!(
            c5.snapshot()
                .invalid
                .unwrap()
                .contains("changed while cowd was not serving")
        );
    }
}
