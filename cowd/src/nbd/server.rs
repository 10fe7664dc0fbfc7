//! Listeners and the set of live connections.
//!
//! Each accepted socket gets a slot (refused when `max_connections` are open), runs the
//! handshake on tokio under `handshake_timeout`, and then moves to a thread of its own for the
//! transmission phase. [`Server::shutdown`] stops new handshakes and shuts the read side of
//! every live connection, so each finishes the requests it has and closes.

use std::collections::HashMap;
use std::fmt;
use std::net::Shutdown;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tracing::{Instrument, debug, info, info_span, warn};

use super::handshake::{self, Outcome};
use super::stream::Stream;
use super::transmission::{self, Limits};
use crate::export::Exports;

/// Where to listen for NBD clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            Ok(Endpoint::Unix(p.into()))
        } else if let Some(a) = s.strip_prefix("tcp:") {
            if !a.contains(':') {
                return Err(format!("tcp:{a}: expected tcp:HOST:PORT"));
            }
            Ok(Endpoint::Tcp(a.into()))
        } else {
            Err(format!("{s}: expected unix:PATH or tcp:HOST:PORT"))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Connection-level settings of the NBD server.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// A client must reach the transmission phase within this time.
    pub handshake_timeout: Duration,
    /// Open connections (in handshake or transmission) beyond which new ones are refused.
    pub max_connections: usize,
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            limits: Limits::default(),
        }
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `ep`. A stale Unix socket file (nobody listening) is replaced; a live one is not.
    pub async fn bind(ep: &Endpoint) -> std::io::Result<Listener> {
        match ep {
            Endpoint::Unix(p) => {
                if std::os::unix::net::UnixStream::connect(p).is_ok() {
                    let msg = format!("{}: another server is listening there", p.display());
                    return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, msg));
                }
                if std::fs::symlink_metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    std::fs::remove_file(p)?;
                }
                let l = UnixListener::bind(p)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                Ok(Listener::Unix(l, p.clone()))
            }
            Endpoint::Tcp(a) => {
                let l = TcpListener::bind(a.as_str())
                    .await
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{a}: {e}")))?;
                Ok(Listener::Tcp(l))
            }
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_endpoint(&self) -> Endpoint {
        match self {
            Listener::Unix(_, p) => Endpoint::Unix(p.clone()),
            Listener::Tcp(l) => {
                Endpoint::Tcp(l.local_addr().map(|a| a.to_string()).unwrap_or_default())
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The NBD server: exports, limits, and every live connection.
#[derive(Debug)]
pub struct Server {
    exports: Arc<Exports>,
    config: ServerConfig,
    open: AtomicUsize,
    stopping: AtomicBool,
    /// Turns true at shutdown; handshakes in progress watch it.
    stop: tokio::sync::watch::Sender<bool>,
    live: Mutex<HashMap<u64, Stream>>,
}

/// Holds one of the `max_connections` places until dropped.
struct Slot(Arc<Server>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Server {
    pub fn new(exports: Arc<Exports>, config: ServerConfig) -> Arc<Server> {
        Arc::new(Server {
            exports,
            config,
            open: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            stop: tokio::sync::watch::channel(false).0,
            live: Mutex::new(HashMap::new()),
        })
    }

    pub fn exports(&self) -> &Arc<Exports> {
        &self.exports
    }

    /// Connections open now (handshaking or transmitting).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Accepts connections on `l` until [`shutdown`](Self::shutdown).
    pub async fn run(self: Arc<Self>, l: Listener, mut stop: tokio::sync::watch::Receiver<bool>) {
        info!(endpoint = %l.local_endpoint(), "listening for NBD clients");
        loop {
            let accepted = tokio::select! {
                _ = stop.changed() => break,
                a = accept(&l) => a,
            };
            match accepted {
                Ok((s, peer)) => self.clone().admit(s, peer),
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        debug!(endpoint = %l.local_endpoint(), "listener closed");
    }

    fn admit(self: Arc<Self>, s: AsyncStream, peer: String) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.config.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            warn!(%peer, max = self.config.max_connections, "connection limit reached; refusing");
            return;
        }
        let slot = Slot(self.clone());
        let id = crate::export::connection_id();
        let span = info_span!("conn", id, %peer);
        tokio::spawn(self.handshake(s, slot, id).instrument(span));
    }

    async fn handshake(self: Arc<Self>, mut s: AsyncStream, slot: Slot, id: u64) {
        let peer_pid = match &s {
            AsyncStream::Unix(u) => u.peer_cred().ok().and_then(|c| c.pid()),
            AsyncStream::Tcp(_) => None,
        };
        let stopping = &self.stopping;
        let mut stop = self.stop.subscribe();
        let r = tokio::select! {
            r = tokio::time::timeout(self.config.handshake_timeout, async {
                match &mut s {
                    AsyncStream::Unix(u) => handshake::negotiate(u, &self.exports, stopping).await,
                    AsyncStream::Tcp(t) => handshake::negotiate(t, &self.exports, stopping).await,
                }
            }) => r,
            _ = stop.wait_for(|s| *s) => return debug!("handshake abandoned: shutting down"),
        };
        let agreed = match r {
            Err(_) => return debug!("handshake timed out"),
            Ok(Err(e)) => return debug!(error = %e, "handshake ended"),
            Ok(Ok(Outcome::Closed(why))) => return debug!(why, "handshake closed"),
            Ok(Ok(Outcome::Transmission(a))) => a,
        };
        let stream = match s.into_std() {
            Ok(st) => st,
            Err(e) => return warn!(error = %e, "cannot move the socket to a thread"),
        };
        let span = tracing::Span::current();
        let server = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("cowd-conn-{id}"))
            .spawn(move || {
                let _g = span.enter();
                let slot = slot;
                let export = agreed.export;
                info!(
                    export = export.name(),
                    structured = agreed.negotiated.structured,
                    "transmission"
                );
                let Some(attached) = export.attach(id, peer_pid) else {
                    // Removed or replaced (a live restore into it) after the handshake found it.
                    return info!(
                        export = export.name(),
                        "export retired during the handshake; closing"
                    );
                };
                if let Ok(c) = stream.try_clone() {
                    server.live.lock().unwrap().insert(id, c);
                }
                if server.stopping.load(Ordering::Acquire) {
                    let _ = stream.shutdown(Shutdown::Read);
                }
                transmission::serve(
                    stream,
                    export.device().clone(),
                    agreed.negotiated,
                    server.config.limits,
                );
                // Let go of the export and the connection's slot before the socket's last
                // descriptor (the clone in `live`) closes: a client that saw its connection
                // close may connect again, or roll the export back, at once.
                drop(attached);
                drop(slot);
                server.live.lock().unwrap().remove(&id);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a connection thread");
        }
    }

    /// Stops admitting clients and asks every live connection to finish and close.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.send_replace(true);
        for s in self.live.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Read);
        }
    }

    /// Waits until no connection is open, or `limit` passes; returns whether all closed.
    pub async fn wait_closed(&self, limit: Duration) -> bool {
        crate::export::wait_until_closed(|| self.open_connections(), limit).await
    }
}

enum AsyncStream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl AsyncStream {
    fn into_std(self) -> std::io::Result<Stream> {
        let s = match self {
            AsyncStream::Unix(u) => Stream::Unix(u.into_std()?),
            AsyncStream::Tcp(t) => Stream::Tcp(t.into_std()?),
        };
        s.set_nonblocking(false)?;
        Ok(s)
    }
}

async fn accept(l: &Listener) -> std::io::Result<(AsyncStream, String)> {
    match l {
        Listener::Unix(u, p) => {
            let (s, _) = u.accept().await?;
            Ok((AsyncStream::Unix(s), format!("unix:{}", p.display())))
        }
        Listener::Tcp(t) => {
            let (s, a) = t.accept().await?;
            s.set_nodelay(true)?;
            Ok((AsyncStream::Tcp(s), a.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(Endpoint::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            "tcp:127.0.0.1:10809".parse(),
            Ok(Endpoint::Tcp("127.0.0.1:10809".into()))
        );
        assert!("tcp:10809".parse::<Endpoint>().is_err());
        assert!("unix:".parse::<Endpoint>().is_err());
        assert!("/run/x.sock".parse::<Endpoint>().is_err());
    }
}
