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

/// One named device served over NBD.
#[derive(Debug)]
pub struct Export {
    name: String,
    description: String,
    path: PathBuf,
    device: Arc<dyn BlockDevice>,
    engine: Arc<Engine>,
    /// The backup generation served (read-only), if this export is one.
    backup: Option<String>,
    /// Live connections: id -> peer process id (when known, Unix sockets).
    peers: Mutex<HashMap<u64, Option<i32>>>,
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
            backup: None,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// An export of a backup generation (read-only; removable with [`Exports::remove`]).
    pub fn of_backup(name: &str, repo_root: &Path, id: &str, device: Arc<dyn BlockDevice>) -> Self {
        let mut e = Export::new(name, repo_root, device, true);
        e.description = format!("backup {id} from repository {}", repo_root.display());
        e.backup = Some(id.to_owned());
        e
    }

    /// The backup this export serves, if it serves one.
    pub fn backup(&self) -> Option<&str> {
        self.backup.as_deref()
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
        self.peers.lock().unwrap().len()
    }

    /// Process ids of the peers of live connections (where known).
    pub fn peer_pids(&self) -> Vec<i32> {
        self.peers
            .lock()
            .unwrap()
            .values()
            .flatten()
            .copied()
            .collect()
    }

    /// Counts connection `id` (peer process `pid`, if known) until the guard is dropped.
    pub fn attach(self: &Arc<Self>, id: u64, pid: Option<i32>) -> Attached {
        self.peers.lock().unwrap().insert(id, pid);
        Attached(self.clone(), id)
    }
}

/// A connection's hold on an export (see [`Export::attach`]).
#[derive(Debug)]
pub struct Attached(Arc<Export>, u64);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.peers.lock().unwrap().remove(&self.1);
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

    /// Removes an export that serves a backup; refused for device exports and while
    /// clients are connected.
    pub fn remove(&self, name: &str) -> Result<Arc<Export>, String> {
        let mut list = self.list.write().unwrap();
        let i = list
            .iter()
            .position(|e| e.name() == name)
            .ok_or_else(|| format!("no export named {name:?}"))?;
        if list[i].backup.is_none() {
            return Err(format!(
                "export {name} serves a device, not a backup; it cannot be removed while cowd runs"
            ));
        }
        if list[i].connections() > 0 {
            return Err(format!(
                "export {name} still has {} client(s) connected",
                list[i].connections()
            ));
        }
        Ok(list.remove(i))
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
}
