//! The daemon's life: open devices, bind listeners, serve, and stop cleanly on a signal.
//!
//! ```text
//!  start: open every device (exclusive) -> exports -> bind NBD and iSCSI listeners + control socket
//!  run:   accept until SIGTERM/SIGINT
//!  stop:  refuse new clients -> connections finish in-flight requests -> flush devices -> exit 0
//! ```

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::backup::manager::{Backups, Defaults};
use crate::control::server::{ControlState, PeerCheckedListener};
use crate::device::{BlockDevice, FileDevice, FileOptions, OpenError};
use crate::export::{Export, ExportError, Exports};
use crate::iscsi::server::{IscsiConfig, IscsiServer};
use crate::nbd::kernel::Attachments;
use crate::nbd::server::Listener;
use crate::nbd::{Endpoint, Server, ServerConfig};
use crate::snapshot::cbt::CbtFile;

/// `NAME=PATH` of one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    pub name: String,
    pub path: PathBuf,
}

impl FromStr for ExportSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok(ExportSpec {
                name: n.to_owned(),
                path: p.into(),
            }),
            _ => Err(format!("{s}: expected NAME=PATH")),
        }
    }
}

/// Everything `cowd serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub exports: Vec<ExportSpec>,
    /// Names of exports served read-only.
    pub read_only: Vec<String>,
    pub nbd: Vec<Endpoint>,
    /// The iSCSI target port, if any.
    pub iscsi: Option<IscsiConfig>,
    pub control: Option<PathBuf>,
    /// Open devices with O_DIRECT.
    pub direct: bool,
    pub server: ServerConfig,
    /// How long connections may take to finish when the daemon stops.
    pub stop_timeout: Duration,
    /// Backup defaults and the state directory.
    pub backup: Defaults,
    /// Copy targets, ports and movers (server-free copies).
    pub copy: CopyConfig,
}

/// Copy targets, ports and the daemon's movers.
#[derive(Debug, Clone, Default)]
pub struct CopyConfig {
    pub ports: Vec<crate::san::Port>,
    pub targets: Vec<crate::san::CopyTarget>,
    /// Mover threads of the daemon (one, `local`, when copy targets are configured and no
    /// `[[mover]]` is).
    pub movers: Vec<crate::jobs::service::MoverSetting>,
    /// The job table in etcd (shared with `cowd mover` processes); `None`: in this process.
    pub etcd: Option<crate::jobs::etcd::EtcdConfig>,
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error("export {name}: {source}")]
    Open { name: String, source: OpenError },
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Opens every export of `cfg`.
pub fn open_exports(cfg: &Config) -> Result<Arc<Exports>, DaemonError> {
    if cfg.exports.is_empty() {
        return Err(DaemonError::Config(
            "no exports: give at least one --export NAME=PATH".into(),
        ));
    }
    for ro in &cfg.read_only {
        if !cfg.exports.iter().any(|e| &e.name == ro) {
            return Err(DaemonError::Config(format!(
                "--read-only {ro}: no such export"
            )));
        }
    }
    let exports = Exports::default();
    for spec in &cfg.exports {
        let read_only = cfg.read_only.contains(&spec.name);
        let opts = FileOptions {
            read_only,
            direct: cfg.direct,
        };
        let dev = FileDevice::open(&spec.path, opts).map_err(|source| DaemonError::Open {
            name: spec.name.clone(),
            source,
        })?;
        info!(export = %spec.name, path = %spec.path.display(), size = dev.size(), read_only, direct = cfg.direct, "export ready");
        exports.add(Export::new(
            &spec.name,
            &spec.path,
            Arc::new(dev),
            read_only,
        ))?;
    }
    Ok(Arc::new(exports))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    if cfg.nbd.is_empty() && cfg.iscsi.is_none() {
        return Err(DaemonError::Config(
            "no listener: give at least one --nbd unix:PATH|tcp:HOST:PORT or --iscsi HOST[:PORT]"
                .into(),
        ));
    }
    let exports = open_exports(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cowd-rt")
        .enable_all()
        .build()?;
    rt.block_on(serve(cfg, exports))
}

async fn serve(cfg: Config, exports: Arc<Exports>) -> Result<(), DaemonError> {
    // Before anything can be reached: a SIGTERM that arrives as soon as the sockets answer
    // (systemd right after READY, a test right after the API answers) must find the handler,
    // not the default action that kills the process and leaves the sockets behind.
    let signals = Signals::install()?;
    let mut listeners = Vec::new();
    for ep in &cfg.nbd {
        let l = Listener::bind(ep)
            .await
            .map_err(|source| DaemonError::Bind {
                endpoint: ep.to_string(),
                source,
            })?;
        listeners.push(l);
    }
    let mut iscsi_listeners = Vec::new();
    for addr in cfg.iscsi.iter().flat_map(|c| &c.listen) {
        let l = crate::iscsi::server::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                endpoint: format!("iscsi {addr}"),
                source,
            })?;
        let open_to_all = cfg
            .iscsi
            .as_ref()
            .is_some_and(|c| c.auth == crate::iscsi::config::AuthPolicy::None);
        if let Ok(local) = l.local_addr()
            && open_to_all
            && !local.ip().is_loopback()
        {
            warn!(address = %local, "iSCSI listens beyond this host without CHAP: any initiator that reaches it can read and write every export ([iscsi_auth] in the config)");
        }
        iscsi_listeners.push(l);
    }
    let control = match &cfg.control {
        Some(p) => Some(
            PeerCheckedListener::bind(p).map_err(|source| DaemonError::Bind {
                endpoint: format!("control {}", p.display()),
                source,
            })?,
        ),
        None => None,
    };
    let backups = Backups::open(cfg.backup.clone()).map_err(|e| {
        DaemonError::Config(format!(
            "state directory {}: {e}",
            cfg.backup.state_dir.display()
        ))
    })?;
    let backups = Arc::new(backups);
    let cbt_files = load_change_maps(&exports, &cfg.backup.state_dir)?;
    let restores = crate::restore::Restores::open(&cfg.backup.state_dir).map_err(|e| {
        DaemonError::Config(format!(
            "state directory {}: {e}",
            cfg.backup.state_dir.display()
        ))
    })?;
    let restores = Arc::new(restores);
    crate::repo::configure_s3(cfg.backup.s3.clone());
    let cache_dir = cfg.backup.state_dir.join("cache");
    crate::repo::configure_cache(&cache_dir, cfg.backup.cache_size)
        .map_err(|e| DaemonError::Config(format!("chunk cache {}: {e}", cache_dir.display())))?;
    unlock_default_repo(&cfg.backup)?;
    // Before any client can connect: a resumed restore puts its device under its export.
    restores.resume(&exports, crate::repo::chunk_threads());
    let server = Server::new(exports.clone(), cfg.server);
    let attachments = Arc::new(Attachments::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(server.clone().run(l, stop_rx.clone())));
    }
    let ports = crate::san::Ports::new(cfg.copy.ports.clone()).map_err(DaemonError::Config)?;
    let table: Arc<dyn crate::jobs::JobTable> = match &cfg.copy.etcd {
        Some(e) => {
            info!(etcd = %e.endpoint, prefix = %e.prefix, "the job table is in etcd");
            Arc::new(e.table().map_err(DaemonError::Config)?)
        }
        None => Arc::new(crate::jobs::LocalTable::new()),
    };
    let copies = crate::jobs::CopyService::new(table, Arc::new(ports), cfg.copy.targets.clone());
    copies.start_movers(exports.clone(), &cfg.copy.movers);
    let iscsi = cfg
        .iscsi
        .clone()
        .map(|c| IscsiServer::new(exports.clone(), c, copies.clone()));
    for l in iscsi_listeners {
        let s = iscsi.clone().expect("listeners only with a configuration");
        tasks.push(tokio::spawn(s.run(l, stop_rx.clone())));
    }
    if let Some(l) = control {
        let state = ControlState {
            exports: exports.clone(),
            backups: backups.clone(),
            attachments: attachments.clone(),
            restores: restores.clone(),
            copies: copies.clone(),
            limits: cfg.server.limits,
        };
        let rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::control::server::serve(l, state, rx).await {
                error!(error = %e, "control API failed");
            }
        }));
    }
    info!(exports = exports.all().len(), "cowd ready");
    if let Err(e) = crate::notify::notify("READY=1") {
        warn!(error = %e, "cannot notify systemd");
    }
    signals.wait().await;
    info!("stopping: no new clients; finishing requests in flight");
    let _ = crate::notify::notify("STOPPING=1");
    let _ = stop_tx.send(true);
    backups.stop_all("cowd was stopped (SIGTERM/SIGINT) during the backup");
    copies.stop_movers();
    restores.stop_all();
    attachments.detach_all();
    server.shutdown();
    if let Some(s) = &iscsi {
        s.shutdown();
    }
    if !server.wait_closed(cfg.stop_timeout).await {
        warn!(
            open = server.open_connections(),
            "connections still open at the stop timeout"
        );
    }
    if let Some(s) = &iscsi
        && !s.wait_closed(cfg.stop_timeout).await
    {
        warn!(
            open = s.open_connections(),
            "iSCSI connections still open at the stop timeout"
        );
    }
    for t in tasks {
        let _ = t.await;
    }
    backups.wait_all(Duration::from_secs(10));
    for e in exports.all() {
        // Also what makes a live restore's map final for this run.
        if let Err(err) = e.device().flush() {
            // Without a durable final state the change map cannot be trusted next time.
            error!(export = e.name(), error = %err, "final flush failed");
            continue;
        }
        let Some(file) = cbt_files.iter().find(|f| f.export() == e.name()) else {
            continue;
        };
        if let Err(err) = file.save(e.engine().cbt(), e.path()) {
            warn!(export = e.name(), error = %err, "cannot save the change map");
        }
    }
    info!("stopped");
    Ok(())
}

/// Loads each export's changed-block map (valid only after a clean stop).
/// Unlocks the default repository with its key file (`--repo-key-file`) when it is
/// encrypted, before a resumed restore or a backup needs it. A key file that does not open it
/// stops the start: a daemon that cannot write its backups should say so now.
fn unlock_default_repo(d: &crate::backup::manager::Defaults) -> Result<(), DaemonError> {
    use crate::repo::{Repo, RepoError, Secret};
    let (Some(repo), Some(file)) = (&d.repo, &d.repo_key_file) else {
        return Ok(());
    };
    let failed = |e: &dyn std::fmt::Display| {
        DaemonError::Config(format!(
            "repository {} with key file {}: {e}",
            repo.display(),
            file.display()
        ))
    };
    match Repo::open(repo) {
        Err(RepoError::Locked(_)) => {}
        // Not encrypted, or not there yet (`cowctl repo init` may come later).
        Ok(_) | Err(RepoError::Missing(_)) => return Ok(()),
        Err(e) => return Err(failed(&e)),
    }
    let bytes = std::fs::read(file).map_err(|e| failed(&e))?;
    let secret = Secret::KeyFile(zeroize::Zeroizing::new(bytes));
    let (_, slot) = Repo::unlock(repo, &secret).map_err(|e| failed(&e))?;
    tracing::info!("repository {} unlocked (key slot {slot})", repo.display());
    Ok(())
}

fn load_change_maps(
    exports: &Exports,
    state_dir: &std::path::Path,
) -> Result<Vec<CbtFile>, DaemonError> {
    let mut files = Vec::new();
    for e in exports.all() {
        let f = CbtFile::new(state_dir, e.name());
        f.load(e.engine().cbt(), e.path()).map_err(|err| {
            DaemonError::Config(format!("change map of export {}: {err}", e.name()))
        })?;
        if let Some(why) = e.engine().cbt().snapshot().invalid {
            info!(export = e.name(), reason = %why, "change map not usable: the next auto backup is full");
        }
        files.push(f);
    }
    Ok(files)
}

/// SIGTERM and SIGINT, caught from the moment `install` returns.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM"),
            _ = self.int.recv() => info!("SIGINT"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_specs_parse() {
        let s: ExportSpec = "disk=/dev/sdb".parse().unwrap();
        assert_eq!(
            s,
            ExportSpec {
                name: "disk".into(),
                path: "/dev/sdb".into()
            }
        );
        let s: ExportSpec = "a=b=c".parse().unwrap();
        assert_eq!(s.path, PathBuf::from("b=c"));
        assert!("disk".parse::<ExportSpec>().is_err());
        assert!("=x".parse::<ExportSpec>().is_err());
        assert!("x=".parse::<ExportSpec>().is_err());
    }
}
