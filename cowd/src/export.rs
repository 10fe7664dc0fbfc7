//! Exports: named devices served over NBD, and the table that holds them.
//!
//! An [`Export`] owns its device stack and counts its connections:
//!
//! ```text
//!   Checked ──> Engine (copy-before-write, idle without a backup) ──> device
//! ```
//!
//! [`Exports`] keeps them in declaration order; the first one is the default export that an
//! empty export name selects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::device::{BlockDevice, Checked};
use crate::snapshot::engine::Engine;

/// Where an export came from, which says whether it can be removed while cowd runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Given in the configuration (`--export`): stays until cowd stops.
    Configured,
    /// A backup generation served read-only (`cowctl serve`).
    Generation(String),
    /// The destination of a live restore (`cowctl restore --live`), by restore id.
    Restore(String),
    /// The image at T of running backup `id`, read-only, while the data movers copy it to a
    /// copy target (`start-backup --to copy-target:NAME`).
    Snapshot(String),
}

/// Who is connected, and whether more may connect.
#[derive(Debug, Default)]
struct Peers {
    /// Live connections: id -> peer process id (when known, Unix sockets).
    live: HashMap<u64, Option<i32>>,
    /// Removed from the table or replaced: no new connection may attach.
    retired: bool,
}

/// One named device served over NBD.
#[derive(Debug)]
pub struct Export {
    name: String,
    description: String,
    path: PathBuf,
    device: Arc<dyn BlockDevice>,
    engine: Arc<Engine>,
    origin: Origin,
    peers: Mutex<Peers>,
}

/// Why an export could not be added.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export name {0:?} is invalid: names are 1 to 4096 bytes without NUL")]
    BadName(String),
    #[error("export {0:?} is defined twice")]
    Duplicate(String),
}

impl Export {
    /// An export of `device` under `name`.
    pub fn new(name: &str, path: &Path, device: Arc<dyn BlockDevice>, read_only: bool) -> Self {
        let engine = Arc::new(Engine::new(device));
        Export {
            name: name.to_owned(),
            description: format!("cowd export of {}", path.display()),
            path: path.to_owned(),
            device: Arc::new(Checked::new(engine.clone(), read_only)),
            engine,
            origin: Origin::Configured,
            peers: Mutex::new(Peers::default()),
        }
    }

    /// An export of a backup generation (read-only; removable with [`Exports::remove`]).
    pub fn of_backup(name: &str, repo_root: &Path, id: &str, device: Arc<dyn BlockDevice>) -> Self {
        let mut e = Export::new(name, repo_root, device, true);
        e.description = format!("backup {id} from repository {}", repo_root.display());
        e.origin = Origin::Generation(id.to_owned());
        e
    }

    /// The destination `path` of live restore `id`, served read-write through `device`
    /// (removable with [`Exports::remove`]).
    pub fn of_restore(name: &str, path: &Path, id: &str, device: Arc<dyn BlockDevice>) -> Self {
        let mut e = Export::new(name, path, device, false);
        e.description = format!("{} (restored by {id})", path.display());
        e.origin = Origin::Restore(id.to_owned());
        e
    }

    /// The image at T of backup `id` of `of`, served read-only through `view` under the
    /// backup's id (removable with [`Exports::remove`]).
    pub fn of_snapshot(of: &Export, id: &str, view: Arc<dyn BlockDevice>) -> Self {
        let mut e = Export::new(id, of.path(), view, true);
        e.description = format!(
            "export {} as it was at the snapshot point of backup {id}",
            of.name()
        );
        e.origin = Origin::Snapshot(id.to_owned());
        e
    }

    /// Where the export came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The backup this export serves, if it serves one.
    pub fn backup(&self) -> Option<&str> {
        match &self.origin {
            Origin::Generation(id) => Some(id),
            _ => None,
        }
    }

    /// The copy-before-write engine of this export.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The top of the device stack; every request goes through here.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    pub fn size(&self) -> u64 {
        self.device.size()
    }

    pub fn read_only(&self) -> bool {
        self.device.capabilities().read_only
    }

    /// Connections currently in the transmission phase.
    pub fn connections(&self) -> usize {
        self.peers.lock().unwrap().live.len()
    }

    /// Process ids of the peers of live connections (where known).
    pub fn peer_pids(&self) -> Vec<i32> {
        self.peers
            .lock()
            .unwrap()
            .live
            .values()
            .flatten()
            .copied()
            .collect()
    }

    /// Counts connection `id` (peer process `pid`, if known) until the guard is dropped;
    /// `None` when the export was removed or replaced meanwhile (the connection must close:
    /// it found this export before that happened).
    pub fn attach(self: &Arc<Self>, id: u64, pid: Option<i32>) -> Option<Attached> {
        let mut peers = self.peers.lock().unwrap();
        if peers.retired {
            return None;
        }
        peers.live.insert(id, pid);
        Some(Attached(self.clone(), id))
    }

    /// Retires the export if no client is connected; otherwise says how many are.
    fn retire(&self) -> Result<(), usize> {
        let mut peers = self.peers.lock().unwrap();
        match peers.live.len() {
            0 => {
                peers.retired = true;
                Ok(())
            }
            n => Err(n),
        }
    }
}

/// A new id for a client connection, unique in this process across every target port (the
/// key of [`Export::attach`]).
pub fn connection_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Waits up to `limit` until `open()` (a target port's count of open connections) is 0;
/// whether it got there.
pub async fn wait_until_closed(open: impl Fn() -> usize, limit: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while open() > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}

/// The stable identity of an export's logical unit (its NAA designator is
/// `scsi::inquiry::naa(unit_id(name))`), from its name.
pub fn unit_id(name: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("cowd logical unit {name}"));
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// A connection's hold on an export (see [`Export::attach`]).
#[derive(Debug)]
pub struct Attached(Arc<Export>, u64);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.peers.lock().unwrap().live.remove(&self.1);
    }
}

/// The exports of a daemon, in declaration order.
#[derive(Debug, Default)]
pub struct Exports {
    list: RwLock<Vec<Arc<Export>>>,
}

impl Exports {
    /// Adds an export; names must be valid and unique.
    pub fn add(&self, export: Export) -> Result<Arc<Export>, ExportError> {
        let name = export.name();
        if name.is_empty() || name.len() > 4096 || name.contains('\0') {
            return Err(ExportError::BadName(name.to_owned()));
        }
        let mut list = self.list.write().unwrap();
        if list.iter().any(|e| e.name() == name) {
            return Err(ExportError::Duplicate(name.to_owned()));
        }
        let e = Arc::new(export);
        list.push(e.clone());
        Ok(e)
    }

    /// Removes an export cowd made (a served generation, a live restore's destination);
    /// refused for configured exports and while clients are connected.
    pub fn remove(&self, name: &str) -> Result<Arc<Export>, String> {
        let mut list = self.list.write().unwrap();
        let i = list
            .iter()
            .position(|e| e.name() == name)
            .ok_or_else(|| format!("no export named {name:?}"))?;
        if list[i].origin == Origin::Configured {
            return Err(format!(
                "export {name} serves a device, not a backup: exports of the configuration stay while cowd runs"
            ));
        }
        list[i]
            .retire()
            .map_err(|n| format!("export {name} still has {n} client(s) connected"))?;
        Ok(list.remove(i))
    }

    /// Puts `export` in the place of the export of the same name, which must have no client
    /// connected (none can connect to the old one afterwards). Returns the old one.
    pub fn replace(&self, export: Export) -> Result<(Arc<Export>, Arc<Export>), String> {
        let mut list = self.list.write().unwrap();
        let name = export.name().to_owned();
        let i = list
            .iter()
            .position(|e| e.name() == name)
            .ok_or_else(|| format!("no export named {name:?}"))?;
        list[i].retire().map_err(|n| {
            format!("export {name} has {n} client(s) connected; disconnect them first")
        })?;
        let new = Arc::new(export);
        let old = std::mem::replace(&mut list[i], new.clone());
        Ok((old, new))
    }

    /// Looks up an export by its exact name (the empty name finds none).
    pub fn named(&self, name: &str) -> Option<Arc<Export>> {
        let list = self.list.read().unwrap();
        list.iter().find(|e| e.name() == name).cloned()
    }

    /// Looks up an export by name; the empty name is the first (default) export.
    pub fn get(&self, name: &str) -> Option<Arc<Export>> {
        let list = self.list.read().unwrap();
        if name.is_empty() {
            return list.first().cloned();
        }
        list.iter().find(|e| e.name() == name).cloned()
    }

    /// All exports in declaration order.
    pub fn all(&self) -> Vec<Arc<Export>> {
        self.list.read().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;

    fn export(name: &str) -> Export {
        Export::new(
            name,
            Path::new("/x"),
            Arc::new(MemoryDevice::new(4096)),
            false,
        )
    }

    #[test]
    fn names_are_unique_and_empty_selects_the_first() {
        let t = Exports::default();
        assert!(t.get("").is_none());
        t.add(export("a")).unwrap();
        t.add(export("b")).unwrap();
        assert!(matches!(t.add(export("a")), Err(ExportError::Duplicate(_))));
        assert!(matches!(t.add(export("")), Err(ExportError::BadName(_))));
        assert_eq!(t.get("").unwrap().name(), "a");
        assert_eq!(t.get("b").unwrap().name(), "b");
        assert!(t.get("c").is_none());
    }

    #[test]
    fn attach_counts_connections() {
        let t = Exports::default();
        let e = t.add(export("a")).unwrap();
        let g1 = e.attach(1, Some(42));
        let g2 = e.attach(2, None);
        assert_eq!(e.connections(), 2);
        assert_eq!(e.peer_pids(), vec![42]);
        drop(g1);
        drop(g2);
        assert_eq!(e.connections(), 0);
    }

    #[test]
    fn a_replaced_or_removed_export_takes_no_new_connection() {
        let t = Exports::default();
        let old = t.add(export("a")).unwrap();
        let g = old.attach(1, None);
        let e = t.replace(export("a")).unwrap_err();
        assert!(e.contains("1 client(s) connected"), "{e}");
        drop(g);
        let (was, new) = t.replace(export("a")).unwrap();
        assert!(Arc::ptr_eq(&was, &old) && Arc::ptr_eq(&t.get("a").unwrap(), &new));
        // A handshake that found the old export before the swap must not attach to it.
        assert!(old.attach(2, None).is_none());
        assert!(new.attach(3, None).is_some());
        let served = t
            .add(Export::of_backup(
                "g",
                Path::new("/r"),
                "b-1",
                Arc::new(MemoryDevice::new(4096)),
            ))
            .unwrap();
        assert!(t.remove("a").unwrap_err().contains("configuration"));
        t.remove("g").unwrap();
        assert!(served.attach(4, None).is_none());
    }
}
