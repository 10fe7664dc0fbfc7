//! The control API server: axum on a tokio `UnixListener`.
//!
//! The socket is created with mode 0600. Each connecting peer's credentials are checked
//! (`SO_PEERCRED`): root, the daemon's own user, or the `cowd` group may talk to it; anyone
//! else is dropped before a byte is read.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use super::api::ErrorBody;
use super::{handlers, repo};
use crate::backup::manager::Backups;
use crate::export::Exports;
use crate::nbd::kernel::Attachments;
use crate::nbd::transmission::Limits;

/// What request handlers can see.
#[derive(Debug, Clone)]
pub struct ControlState {
    pub exports: Arc<Exports>,
    pub backups: Arc<Backups>,
    pub attachments: Arc<Attachments>,
    pub restores: Arc<crate::restore::Restores>,
    /// Limits of connections served for attached kernel devices.
    pub limits: Limits,
}

/// The routes of API version 1.
pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/v1/exports", get(handlers::list_exports))
        .route("/v1/exports/{name}/backups", post(handlers::start_backup))
        .route("/v1/exports/{name}/cancel", post(handlers::cancel))
        .route("/v1/exports/{name}/prioritize", post(handlers::prioritize))
        .route("/v1/backups", get(handlers::list_backups))
        .route("/v1/backups/{id}", get(handlers::backup))
        .route("/v1/backups/{id}/wait", get(handlers::wait))
        .route("/v1/resolve", get(handlers::resolve))
        .route("/v1/exports/{name}/attach", post(handlers::attach))
        .route("/v1/detach", post(handlers::detach))
        .route("/v1/repo/init", post(repo::init))
        .route("/v1/repo/backups", get(repo::list))
        .route("/v1/repo/verify", post(repo::verify))
        .route("/v1/repo/prune", post(repo::prune))
        .route("/v1/repo/serve", post(repo::serve))
        .route("/v1/exports/{name}/unserve", post(repo::unserve))
        .route("/v1/restores", post(repo::restore).get(repo::restores))
        .route("/v1/restores/{id}", get(repo::restore_wait))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// An error response with an [`ErrorBody`].
pub fn error(status: StatusCode, msg: impl Into<String>) -> (StatusCode, Json<ErrorBody>) {
    (status, Json(ErrorBody { error: msg.into() }))
}

async fn not_found(method: Method, uri: Uri) -> (StatusCode, Json<ErrorBody>) {
    error(
        StatusCode::NOT_FOUND,
        format!("no such API path: {method} {uri}"),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> (StatusCode, Json<ErrorBody>) {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {uri}"),
    )
}

/// A Unix listener that only hands out connections from permitted peers.
#[derive(Debug)]
pub struct PeerCheckedListener {
    inner: UnixListener,
    path: PathBuf,
    own_uid: u32,
    group: Option<u32>,
}

impl PeerCheckedListener {
    /// Binds `path` (replacing a stale socket file) with mode 0600.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ctx(io::Error::new(
                io::ErrorKind::AddrInUse,
                "a daemon is already listening",
            )));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(ctx)?;
        }
        // Bind under a temporary name, restrict it, then rename it into place: the socket never
        // exists at `path` before it listens or while it still has the umask's mode.
        let tmp = path.with_file_name(format!(".cowd-control.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let inner = UnixListener::bind(&tmp).map_err(ctx)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(ctx)?;
        std::fs::rename(&tmp, path).map_err(ctx)?;
        // SAFETY: geteuid has no preconditions.
        let own_uid = unsafe { libc::geteuid() };
        Ok(PeerCheckedListener {
            inner,
            path: path.to_owned(),
            own_uid,
            group: cowd_group(),
        })
    }

    fn permitted(&self, s: &UnixStream) -> bool {
        match s.peer_cred() {
            Ok(c) => c.uid() == 0 || c.uid() == self.own_uid || Some(c.gid()) == self.group,
            Err(_) => false,
        }
    }
}

impl Drop for PeerCheckedListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The gid of the `cowd` group, if it exists.
fn cowd_group() -> Option<u32> {
    let name = c"cowd";
    // SAFETY: getgrnam takes a NUL-terminated string; the result is read immediately.
    let g = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: non-null results point to a valid group entry.
    (!g.is_null()).then(|| unsafe { (*g).gr_gid })
}

impl axum::serve::Listener for PeerCheckedListener {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((s, a)) if self.permitted(&s) => return (s, a),
                Ok((s, _)) => warn!(peer = ?s.peer_cred().ok(), "control peer not permitted"),
                Err(e) => {
                    warn!(error = %e, "control accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Serves the control API on `listener` until `stop` turns true.
pub async fn serve(
    listener: PeerCheckedListener,
    state: ControlState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    info!(socket = %listener.path.display(), "control API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
