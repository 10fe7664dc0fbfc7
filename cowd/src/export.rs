//! Exports: named devices served over NBD, and the table that holds them.
//!
//! An [`Export`] owns the top of its device stack (always a [`Checked`] layer) and counts its
//! connections. [`Exports`] keeps them in declaration order; the first one is the default
//! export that an empty export name selects.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::device::{BlockDevice, Checked};

/// One named device served over NBD.
#[derive(Debug)]
pub struct Export {
    name: String,
    description: String,
    path: PathBuf,
    device: Arc<dyn BlockDevice>,
    connections: AtomicUsize,
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
    /// An export of `device` (wrapped in [`Checked`]) under `name`.
    pub fn new(name: &str, path: &Path, device: Arc<dyn BlockDevice>, read_only: bool) -> Self {
        Export {
            name: name.to_owned(),
            description: format!("cowd export of {}", path.display()),
            path: path.to_owned(),
            device: Arc::new(Checked::new(device, read_only)),
            connections: AtomicUsize::new(0),
        }
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
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a connection until the returned guard is dropped.
    pub fn attach(self: &Arc<Self>) -> Attached {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Attached(self.clone())
    }
}

/// A connection's hold on an export (see [`Export::attach`]).
#[derive(Debug)]
pub struct Attached(Arc<Export>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
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
        let g1 = e.attach();
        let g2 = e.attach();
        assert_eq!(e.connections(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(e.connections(), 0);
    }
}
