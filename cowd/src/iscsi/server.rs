//! The iSCSI target port: its TCP listeners, a target per export, and the live connections.
//!
//! ```text
//!  tokio: listener ─accept─> slot (max connections) ─> thread: connection::serve
//!  targets: export NAME ─> target BASE:NAME, LUN 0 = scsi::Disk over the export's device
//! ```
//!
//! Every export is a target named `BASE:NAME` ([`target_name`]) with one logical unit, LUN 0,
//! a [`Disk`] over the export's whole device stack (so writes go through copy-before-write
//! like NBD writes). The list of targets is read at each login, so exports added later are
//! offered at once. [`IscsiServer::shutdown`] stops new logins and shuts the read side of every
//! live connection: each finishes the commands it has, answers them, and closes.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{debug, info, info_span, warn};

use super::config::{AuthPolicy, MAX_NAME_LEN, TargetConfig, TargetEntry};
use super::connection::{self, ConnectionConfig, TargetTable};
use crate::export::{Export, Exports};
use crate::jobs::CopyService;
use crate::scsi::{Disk, LunIdentity, inquiry};
use crate::xcopy::{CopyManager, LocalUnit, LocalUnits};

/// The iSCSI port number (RFC 7143 §13.2).
pub const DEFAULT_PORT: u16 = 3260;

/// Settings of the iSCSI target port.
#[derive(Debug, Clone)]
pub struct IscsiConfig {
    /// `HOST[:PORT]` to listen on (port 3260 when left out).
    pub listen: Vec<String>,
    /// Targets are named `BASE:EXPORT`.
    pub base_name: String,
    /// Authentication of normal and of discovery sessions.
    pub auth: AuthPolicy,
    pub discovery_auth: AuthPolicy,
    pub connection: ConnectionConfig,
    /// Open connections beyond which new ones are refused.
    pub max_connections: usize,
}

/// The base name when none is configured: `iqn.2026-12.local.cowd.HOSTNAME`.
pub fn default_base_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = iqn_part(host.trim());
    if host.is_empty() {
        "iqn.2026-12.local.cowd".into()
    } else {
        format!("iqn.2026-12.local.cowd.{host}")
    }
}

/// `s` in the characters an iSCSI name allows (RFC 3722 stringprep, kept to ASCII):
/// lower case letters, digits, `-`, `.`; anything else becomes `-`.
fn iqn_part(s: &str) -> String {
    s.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect()
}

/// The target name of export `export` under `base`.
pub fn target_name(base: &str, export: &str) -> String {
    format!("{base}:{}", iqn_part(export))
}

/// Checks a configured base name: `iqn.` or `eui.`/`naa.` form, allowed characters, and room
/// for export names within 223 bytes.
pub fn check_base_name(base: &str) -> Result<(), String> {
    let form = base.starts_with("iqn.") || base.starts_with("eui.") || base.starts_with("naa.");
    if !form {
        return Err(format!(
            "{base}: an iSCSI name starts with iqn., eui. or naa. (e.g. iqn.2026-12.com.example:storage)"
        ));
    }
    if let Some(c) = base
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.' | ':'))
    {
        return Err(format!(
            "{base}: {c:?} is not allowed in an iSCSI name (lower case letters, digits, - . :)"
        ));
    }
    if base.len() + 2 > MAX_NAME_LEN {
        return Err(format!("{base}: longer than {MAX_NAME_LEN} bytes"));
    }
    Ok(())
}

/// The targets of a daemon's exports.
#[derive(Debug)]
pub struct ExportTargets {
    exports: Arc<Exports>,
    base: String,
    auth: AuthPolicy,
    discovery_auth: AuthPolicy,
    /// Addresses SendTargets reports (`host:port`).
    portals: Mutex<Vec<String>>,
    units: Arc<Units>,
}

/// The logical units of the exports, and how their copy managers find one another's.
#[derive(Debug)]
struct Units {
    exports: Arc<Exports>,
    /// One logical unit per export, kept while the export is the same (MODE SELECT state and
    /// held copy results last across sessions). Locked to look up or add an entry only, never
    /// while a command runs (a copy manager resolving a target comes here too).
    disks: Mutex<HashMap<String, Served>>,
    /// Shared by every unit's copy manager; it holds `Units` weakly, since each `Disk` holds
    /// its manager.
    resolver: Arc<dyn LocalUnits>,
    /// Where lists naming a copy target go.
    service: Arc<CopyService>,
}

/// The logical unit made for an export, and its copy manager.
#[derive(Debug)]
struct Served {
    export: Arc<Export>,
    disk: Arc<Disk>,
    copy: Arc<CopyManager>,
}

impl Units {
    fn new(exports: Arc<Exports>, service: Arc<CopyService>) -> Arc<Units> {
        Arc::new_cyclic(|me| Units {
            exports,
            service,
            disks: Mutex::new(HashMap::new()),
            resolver: Arc::new(ExportUnits(me.clone())),
        })
    }

    /// The logical unit of `export` and its copy manager, made on first use the same way
    /// for a session and for a copy that names it.
    fn served(&self, export: &Arc<Export>) -> Option<(Arc<Disk>, Arc<CopyManager>)> {
        let mut disks = self.disks.lock().unwrap();
        if let Some(s) = disks.get(export.name())
            && Arc::ptr_eq(&s.export, export)
        {
            return Some((s.disk.clone(), s.copy.clone()));
        }
        let copy =
            Arc::new(CopyManager::new(self.resolver.clone()).with_service(self.service.clone()));
        let disk = Disk::new(export.device().clone(), identity(export))
            .map_err(|e| warn!(export = export.name(), error = %e, "cannot serve over iSCSI"))
            .ok()?
            .with_copy(copy.clone());
        let disk = Arc::new(disk);
        let served = Served {
            export: export.clone(),
            disk: disk.clone(),
            copy: copy.clone(),
        };
        disks.insert(export.name().to_owned(), served);
        Some((disk, copy))
    }
}

/// Finds, for a copy manager, the export whose logical unit has a NAA designator: any
/// export, whether or not a session has it open.
#[derive(Debug)]
struct ExportUnits(Weak<Units>);

impl LocalUnits for ExportUnits {
    fn find(&self, naa: &[u8]) -> Option<LocalUnit> {
        let units = self.0.upgrade()?;
        let export = units
            .exports
            .all()
            .into_iter()
            .find(|e| inquiry::naa(identity(e).id).as_slice() == naa)?;
        // Attached like a connection while the copy runs: the export is not removed or
        // replaced under it.
        let hold = export.attach(crate::export::connection_id(), None)?;
        let (disk, _) = units.served(&export)?;
        Some(LocalUnit {
            disk,
            hold: Some(Box::new(hold)),
        })
    }
}

impl ExportTargets {
    pub fn new(
        exports: Arc<Exports>,
        config: &IscsiConfig,
        service: Arc<CopyService>,
    ) -> ExportTargets {
        ExportTargets {
            units: Units::new(exports.clone(), service),
            exports,
            base: config.base_name.clone(),
            auth: config.auth.clone(),
            discovery_auth: config.discovery_auth.clone(),
            portals: Mutex::new(Vec::new()),
        }
    }

    /// The export served as `target`.
    fn export(&self, target: &str) -> Option<Arc<Export>> {
        self.exports
            .all()
            .into_iter()
            .find(|e| target_name(&self.base, e.name()) == target)
    }
}

/// A stable identity of an export's logical unit, from its name.
fn identity(export: &Export) -> LunIdentity {
    let id = crate::export::unit_id(export.name());
    LunIdentity {
        id,
        serial: format!("{id:016x}"),
        product: "cowd".into(),
        name: export.name().to_owned(),
    }
}

impl TargetTable for ExportTargets {
    fn config(&self) -> TargetConfig {
        let addresses = self.portals.lock().unwrap().clone();
        let targets = self
            .exports
            .all()
            .iter()
            .map(|e| TargetEntry {
                name: target_name(&self.base, e.name()),
                alias: Some(e.name().to_owned()),
                addresses: addresses.clone(),
            })
            .collect();
        TargetConfig {
            targets,
            auth: self.auth.clone(),
            discovery_auth: self.discovery_auth.clone(),
            ..TargetConfig::default()
        }
    }

    fn open(&self, target: &str) -> Option<(Arc<Disk>, Box<dyn Send>)> {
        let export = self.export(target)?;
        let guard = export.attach(crate::export::connection_id(), None)?;
        let (disk, copy) = self.units.served(&export)?;
        // The session is an I_T nexus to the unit: copy results held for the unit last while
        // one is open.
        Some((disk, Box::new((guard, copy.nexus()))))
    }
}

/// The listeners' shared state.
#[derive(Debug)]
pub struct IscsiServer {
    targets: Arc<ExportTargets>,
    service: Arc<CopyService>,
    config: IscsiConfig,
    open: AtomicUsize,
    stopping: AtomicBool,
    next_tsih: AtomicU16,
    live: Mutex<HashMap<u64, TcpStream>>,
}

/// Binds `HOST[:PORT]` (also written `tcp:HOST[:PORT]`).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let addr = addr.strip_prefix("tcp:").unwrap_or(addr);
    let with_port = if addr.parse::<SocketAddr>().is_ok() || has_port(addr) {
        addr.to_owned()
    } else if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{addr}]:{DEFAULT_PORT}")
    } else {
        format!("{addr}:{DEFAULT_PORT}")
    };
    // The caller names `addr`; the port is worth saying only when it was left out.
    TcpListener::bind(with_port.as_str())
        .await
        .map_err(|e| match with_port == addr {
            true => e,
            false => std::io::Error::new(e.kind(), format!("{with_port}: {e}")),
        })
}

/// `host:port`, `[v6]:port`, not a bare IPv6 address.
fn has_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}

impl IscsiServer {
    pub fn new(
        exports: Arc<Exports>,
        config: IscsiConfig,
        service: Arc<CopyService>,
    ) -> Arc<IscsiServer> {
        Arc::new(IscsiServer {
            targets: Arc::new(ExportTargets::new(exports, &config, service.clone())),
            service,
            config,
            open: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            next_tsih: AtomicU16::new(1),
            live: Mutex::new(HashMap::new()),
        })
    }

    pub fn targets(&self) -> &Arc<ExportTargets> {
        &self.targets
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Accepts connections on `l` until `stop` turns true.
    pub async fn run(
        self: Arc<Self>,
        l: TcpListener,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let local = l.local_addr().ok();
        if let Some(a) = local.filter(|a| !a.ip().is_unspecified()) {
            self.targets.portals.lock().unwrap().push(a.to_string());
        }
        if let Some(a) = local {
            self.service.ports().add_portal(a);
        }
        info!(address = ?local, base = %self.config.base_name, "listening for iSCSI initiators");
        loop {
            let accepted = tokio::select! {
                r = l.accept() => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            match accepted {
                Ok((s, peer)) => self.clone().admit(s, peer),
                Err(e) => {
                    // Out of descriptors, most likely: let connections close.
                    warn!(error = %e, "iSCSI accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        debug!(address = ?local, "iSCSI listener closed");
    }

    fn admit(self: Arc<Self>, s: tokio::net::TcpStream, peer: SocketAddr) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        // A port the operator made an initiator port takes no logins.
        if let Ok(local) = s.local_addr()
            && self.service.ports().target_port(local).is_none()
        {
            return debug!(%peer, %local, "not a target port now; connection refused");
        }
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.config.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            warn!(%peer, max = self.config.max_connections, "iSCSI connection limit reached; refusing");
            return;
        }
        let stream = match s.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return warn!(error = %e, "cannot move the socket to a thread");
            }
        };
        let id = crate::export::connection_id();
        let span = info_span!("iscsi", id, %peer);
        let server = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("cowd-iscsi-{id}"))
            .spawn(move || {
                let _g = span.enter();
                server.connection(stream, id);
            });
        if let Err(e) = spawned {
            self.open.fetch_sub(1, Ordering::AcqRel);
            warn!(error = %e, "cannot start a connection thread");
        }
    }

    fn connection(&self, stream: TcpStream, id: u64) {
        if let Ok(c) = stream.try_clone() {
            self.live.lock().unwrap().insert(id, c);
        }
        if self.stopping.load(Ordering::Acquire) {
            let _ = stream.shutdown(Shutdown::Read);
        }
        let tsih = loop {
            let t = self.next_tsih.fetch_add(1, Ordering::Relaxed);
            if t != 0 {
                break t;
            }
        };
        let targets: &ExportTargets = &self.targets;
        match connection::serve(stream, targets, self.config.connection, tsih) {
            Ok(()) => debug!("iSCSI connection closed"),
            Err(e) => info!(error = %e, "iSCSI connection ended"),
        }
        self.live.lock().unwrap().remove(&id);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Stops new logins; each live connection finishes what it has and closes.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        for s in self.live.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Read);
        }
    }

    /// Waits up to `limit` for every connection to close; whether they did.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        crate::export::wait_until_closed(|| self.open_connections(), limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            target_name("iqn.2026-12.local.cowd", "Disk_1"),
            "iqn.2026-12.local.cowd:disk-1"
        );
        assert!(check_base_name("iqn.2026-12.com.example:store").is_ok());
        assert!(check_base_name("disk").is_err());
        assert!(check_base_name("iqn.2026-12.com.Example").is_err());
        assert!(check_base_name(&format!("iqn.{}", "a".repeat(230))).is_err());
        assert!(default_base_name().starts_with("iqn.2026-12.local.cowd"));
        assert!(check_base_name(&default_base_name()).is_ok());
    }

    #[test]
    fn ports() {
        assert!(has_port("127.0.0.1:3260"));
        assert!(has_port("[::1]:3260"));
        assert!(has_port("localhost:3261"));
        assert!(!has_port("127.0.0.1"));
        assert!(!has_port("::1"));
        assert!(!has_port("localhost"));
    }
}
