//! `cowd mover`: a data mover on another host, serving the jobs of one cowd through etcd.
//!
//! ```text
//!   host B: cowd mover --name b ──── etcd: the job table (EtcdTable: lease, claim, progress)
//!             │  mover::spawn (the same mover as the daemon's threads; only its Reach differs)
//!             ├─ exports:      nbd://COWDHOST:PORT/EXPORT   (the daemon's NBD server)
//!             └─ copy targets: their paths, from this host's --config ([[copy_target]], [[port]])
//! ```
//!
//! An export is reached through the daemon's NBD server under its own name, so what the mover
//! writes to an export goes through the export's whole device stack (copy-before-write
//! included), as a mover thread's writes do. Copy targets and initiator ports come from a
//! cowd.toml of this host (the daemon's own file is fine: its other settings are not used):
//! the paths a mover reaches depend on where it runs.
//!
//! The process stops on SIGTERM or SIGINT: the mover stops copying at its next piece and
//! leaves the table (its lease is revoked, so another mover may take its job at once).
//! Killed, it leaves its jobs to the others when its lease runs out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::etcd::{self, EtcdTable};
use super::mover::{self, MoverConfig, Reach};
use super::service::PATH_TIMEOUT;
use crate::config::Settings;
use crate::device::BlockDevice;
use crate::nbd::client::NbdDevice;
use crate::nbd::uri::NbdUri;
use crate::san::copy_targets::CopyTarget;
use crate::san::paths::{self, Opened, PathError};
use crate::san::ports::{Port, Ports};

/// What `cowd mover` was asked to do.
#[derive(Debug, Clone)]
pub struct RemoteMover {
    pub name: String,
    /// etcd's client URL; `None`: the `etcd` setting of `config`.
    pub etcd: Option<String>,
    /// The job table's key prefix; `None`: `etcd_prefix` of `config`, or the default.
    pub prefix: Option<String>,
    /// The daemon's NBD server (`nbd://HOST:PORT`, no export).
    pub source: String,
    /// A cowd.toml with the copy targets and ports this mover reaches.
    pub config: Option<PathBuf>,
    /// Its initiator ports, in the order tried (empty: all).
    pub ports: Vec<String>,
    pub lease: Duration,
}

/// How a mover on another host reaches things: exports over NBD from the daemon, copy
/// targets through the paths of its own configuration.
#[derive(Debug)]
pub struct RemoteReach {
    /// The daemon's NBD server; the export is set per request.
    source: NbdUri,
    targets: Vec<CopyTarget>,
    ports: Ports,
}

impl RemoteReach {
    /// Reaches exports at `source` (`nbd://HOST:PORT` or `nbd+unix:///?socket=PATH`).
    pub fn new(
        source: &str,
        targets: Vec<CopyTarget>,
        ports: Ports,
    ) -> Result<RemoteReach, String> {
        let source: NbdUri = source.parse().map_err(|e| format!("--source {e}"))?;
        if !source.export.is_empty() {
            return Err(format!(
                "--source {source}: give the daemon's NBD server without an export \
                 (nbd://HOST:PORT): jobs name the exports"
            ));
        }
        Ok(RemoteReach {
            source,
            targets,
            ports,
        })
    }
}

impl Reach for RemoteReach {
    fn export(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String> {
        let uri = NbdUri {
            export: name.to_owned(),
            ..self.source.clone()
        };
        let dev = NbdDevice::connect(&uri, PATH_TIMEOUT).map_err(|e| e.to_string())?;
        Ok(Arc::new(dev))
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

/// Runs the mover until SIGTERM or SIGINT.
pub fn run(m: RemoteMover) -> Result<(), String> {
    let settings = match &m.config {
        Some(p) => Settings::load(p)?,
        None => Settings::default(),
    };
    let copy = settings.copy_config()?;
    let endpoint =
        m.etcd.clone().or_else(|| settings.etcd.clone()).ok_or(
            "no etcd: give --etcd http://HOST:2379 (or etcd = \"...\" in the --config file)",
        )?;
    let prefix = m
        .prefix
        .clone()
        .or_else(|| settings.etcd_prefix.clone())
        .unwrap_or_else(|| etcd::DEFAULT_PREFIX.to_owned());
    let ports = Ports::new(copy.ports).map_err(|e| format!("--config: {e}"))?;
    for p in &m.ports {
        if ports.initiators(std::slice::from_ref(p), None).is_empty() {
            return Err(format!(
                "--port {p}: not an initiator port of the --config file"
            ));
        }
    }
    if m.name.is_empty() {
        return Err("--name: a mover needs a name".into());
    }
    let table = EtcdTable::new(&endpoint, &prefix)?;
    let reach = RemoteReach::new(&m.source, copy.targets, ports)?;
    let signals = Signals::install().map_err(|e| format!("cannot catch signals: {e}"))?;
    let config = MoverConfig {
        ports: m.ports.clone(),
        lease: m.lease,
        ..MoverConfig::new(&m.name)
    };
    info!(mover = %m.name, etcd = %endpoint, prefix = %prefix, source = %reach.source,
        targets = reach.targets.len(), lease = ?m.lease, "cowd mover ready");
    let handle = mover::spawn(config, Arc::new(table), Arc::new(reach));
    signals.wait();
    info!("stopping: leaving the job table");
    // Stops the threads, then revokes the lease: the mover's jobs are open to others now.
    drop(handle);
    info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, caught from `install` on (on a small runtime of their own: the mover
/// itself is plain threads).
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int) = {
            let _in = rt.enter();
            (
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )
        };
        Ok(Signals { rt, term, int })
    }

    fn wait(mut self) {
        let got = self.rt.block_on(async {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        });
        info!("{got}");
    }
}
