//! The daemon's copy service: its job table, copy targets, ports and local movers, and how a
//! mover thread of the daemon reaches exports and paths ([`DaemonReach`]).
//!
//! ```text
//!   copy manager (EXTENDED COPY) ─┐                        ┌─ mover thread "local-0" ─┐
//!   start-backup --to copy-target ┼─> CopyService::run ─> table <─ mover thread ...      ├─> paths
//!   cowctl copies / ports ────────┘        (submit, wait)   └─ `cowd mover` (etcd) ─────┘
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::mover::{self, MoverConfig, MoverHandle, Reach};
use super::spec::{JobId, JobSpec, Outcome};
use super::table::{self, JobTable, JobView};
use crate::device::BlockDevice;
use crate::export::Exports;
use crate::san::copy_targets::CopyTarget;
use crate::san::paths::{self, Opened, PathError};
use crate::san::ports::{Port, Ports};

/// How long opening one path may take before the next is tried.
pub const PATH_TIMEOUT: Duration = Duration::from_secs(5);

/// The daemon's copy service.
#[derive(Debug)]
pub struct CopyService {
    table: Arc<dyn JobTable>,
    ports: Arc<Ports>,
    targets: Arc<Vec<CopyTarget>>,
    movers: std::sync::Mutex<Vec<MoverHandle>>,
}

/// A mover of the daemon, as configured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoverSetting {
    pub name: String,
    /// Its initiator ports, in the order it tries them (empty: all).
    #[serde(default)]
    pub ports: Vec<String>,
}

impl CopyService {
    pub fn new(
        table: Arc<dyn JobTable>,
        ports: Arc<Ports>,
        targets: Vec<CopyTarget>,
    ) -> Arc<CopyService> {
        Arc::new(CopyService {
            table,
            ports,
            targets: Arc::new(targets),
            movers: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A service with no copy target, no port and no mover (a daemon that serves no copies;
    /// tests of other parts).
    pub fn idle() -> Arc<CopyService> {
        CopyService::new(
            Arc::new(super::LocalTable::new()),
            Arc::default(),
            Vec::new(),
        )
    }

    /// Starts the daemon's mover threads, reaching exports in `exports`.
    pub fn start_movers(&self, exports: Arc<Exports>, movers: &[MoverSetting]) {
        let reach: Arc<dyn Reach> = Arc::new(DaemonReach {
            exports,
            ports: self.ports.clone(),
            targets: self.targets.clone(),
        });
        let mut handles = self.movers.lock().unwrap();
        for m in movers {
            let config = MoverConfig {
                ports: m.ports.clone(),
                ..MoverConfig::new(&m.name)
            };
            handles.push(mover::spawn(config, self.table.clone(), reach.clone()));
        }
    }

    /// Stops the daemon's movers (their jobs go to other movers, if any).
    pub fn stop_movers(&self) {
        self.movers.lock().unwrap().clear();
    }

    pub fn table(&self) -> &Arc<dyn JobTable> {
        &self.table
    }

    pub fn ports(&self) -> &Arc<Ports> {
        &self.ports
    }

    pub fn targets(&self) -> &[CopyTarget] {
        &self.targets
    }

    /// The port group of the target port at `local` (`None`: no group, every initiator port).
    pub fn group_of(&self, local: Option<SocketAddr>) -> Option<String> {
        local
            .and_then(|l| self.ports.target_port(l))
            .and_then(|p| p.group)
    }

    /// Submits a job and waits for its end; once `aborted` says so, cancels it (its mover
    /// sees that at its next progress report, within a piece) and returns that outcome.
    pub fn run(
        &self,
        spec: JobSpec,
        aborted: &dyn Fn() -> bool,
    ) -> Result<(JobId, Outcome), table::TableError> {
        let id = self.table.submit(spec)?;
        let outcome = table::wait_settled_or(self.table.as_ref(), id, aborted)?;
        Ok((id, outcome))
    }

    pub fn list(&self) -> Result<Vec<JobView>, table::TableError> {
        self.table.list()
    }
}

/// How the daemon's own movers reach things: exports in process, paths from its ports.
#[derive(Debug)]
pub struct DaemonReach {
    exports: Arc<Exports>,
    ports: Arc<Ports>,
    targets: Arc<Vec<CopyTarget>>,
}

/// An export's device, attached like a connection while a mover uses it.
#[derive(Debug)]
struct Attached {
    device: Arc<dyn BlockDevice>,
    _hold: crate::export::Attached,
}

impl BlockDevice for Attached {
    fn size(&self) -> u64 {
        self.device.size()
    }
    fn block_sizes(&self) -> crate::device::BlockSizes {
        self.device.block_sizes()
    }
    fn capabilities(&self) -> crate::device::Capabilities {
        self.device.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> crate::device::Result<()> {
        self.device.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> crate::device::Result<()> {
        self.device.write_at(buf, offset, fua)
    }
    fn flush(&self) -> crate::device::Result<()> {
        self.device.flush()
    }
}

impl Reach for DaemonReach {
    fn export(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String> {
        let export = self
            .exports
            .get(name)
            .ok_or_else(|| format!("no export named {name}"))?;
        let hold = export
            .attach(crate::export::connection_id(), None)
            .ok_or_else(|| format!("export {name} is going away"))?;
        Ok(Arc::new(Attached {
            device: export.device().clone(),
            _hold: hold,
        }))
    }

    fn copy_target(&self, name: &str) -> Option<CopyTarget> {
        self.targets.iter().find(|t| t.name == name).cloned()
    }

    fn ports(&self, names: &[String], group: Option<&str>) -> Vec<Port> {
        self.ports.initiators(names, group)
    }

    fn open(&self, target: &CopyTarget, path: usize, port: &Port) -> Result<Opened, PathError> {
        paths::open(&target.paths[path].spec, port.source(), PATH_TIMEOUT)
    }
}
