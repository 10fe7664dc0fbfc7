//! The control API server: axum on a tokio `UnixListener`.
//!
//! The socket is created with mode 0600. Each connecting peer's credentials are checked
//! (`SO_PEERCRED`): root, the daemon's own user, or the `cowd` group may talk to it; anyone
//! else is dropped before a byte is read.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use axum::handler::Handler;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use cowd_api::ErrorBody;
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

pub use super::request::{ControlState, error};
use super::{copies, files, handlers, keys, repo};

/// One route of the API: the method and path it answers, and its handler.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    /// In axum's syntax, which is OpenAPI's: `/v1/backups/{id}`.
    pub path: &'static str,
    handler: MethodRouter<ControlState>,
}

fn route<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, ControlState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
    let handler = on(filter, handler);
    Route {
        method,
        path,
        handler,
    }
}

/// The routes of API version 1: the one list the router is built from. A test checks it
/// against the `paths:` of `docs/openapi.yaml`; the request and answer types of each are in
/// `cowd_api`'s documentation.
pub fn routes() -> Vec<Route> {
    use Method as M;
    vec![
        route(M::GET, "/v1/exports", handlers::list_exports),
        route(
            M::POST,
            "/v1/exports/{name}/backups",
            handlers::start_backup,
        ),
        route(M::POST, "/v1/exports/{name}/cancel", handlers::cancel),
        route(
            M::POST,
            "/v1/exports/{name}/prioritize",
            handlers::prioritize,
        ),
        route(M::GET, "/v1/backups", handlers::list_backups),
        route(M::GET, "/v1/backups/{id}", handlers::backup),
        route(M::GET, "/v1/backups/{id}/wait", handlers::wait),
        route(M::GET, "/v1/resolve", handlers::resolve),
        route(M::POST, "/v1/exports/{name}/attach", handlers::attach),
        route(M::POST, "/v1/detach", handlers::detach),
        route(M::GET, "/v1/copies", copies::list),
        route(M::GET, "/v1/ports", copies::ports),
        route(M::PUT, "/v1/ports/{name}", copies::set_port),
        route(M::POST, "/v1/repo/init", repo::init),
        route(M::GET, "/v1/repo/info", repo::info),
        route(M::POST, "/v1/repo/unlock", keys::unlock),
        route(M::POST, "/v1/repo/lock", keys::lock),
        route(M::GET, "/v1/repo/keys", keys::list),
        route(M::POST, "/v1/repo/keys", keys::add),
        route(M::DELETE, "/v1/repo/keys/{id}", keys::remove),
        route(M::POST, "/v1/repo/keys/passwd", keys::passwd),
        route(M::GET, "/v1/repo/backups", repo::list),
        route(M::GET, "/v1/repo/backups/{id}/files", files::list),
        route(M::GET, "/v1/repo/backups/{id}/file", files::read),
        route(
            M::POST,
            "/v1/repo/backups/{id}/extract",
            files::extract_files,
        ),
        route(M::GET, "/v1/repo/backups/{id}/map", files::map),
        route(M::GET, "/v1/repo/backups/{id}/diff", files::diff),
        route(M::POST, "/v1/repo/verify", repo::verify),
        route(M::POST, "/v1/repo/prune", repo::prune),
        route(M::POST, "/v1/repo/sync", repo::sync),
        route(M::POST, "/v1/repo/repair", repo::repair),
        route(M::POST, "/v1/repo/serve", repo::serve),
        route(M::POST, "/v1/exports/{name}/unserve", repo::unserve),
        route(M::POST, "/v1/restores", repo::restore),
        route(M::GET, "/v1/restores", repo::restores),
        route(M::GET, "/v1/restores/{id}", repo::restore_wait),
        route(
            M::POST,
            "/v1/restores/{id}/prioritize",
            repo::restore_prioritize,
        ),
    ]
}

/// The router of API version 1: [`routes`] (two methods on one path merge), and an
/// [`ErrorBody`] for unknown paths and methods.
pub fn router(state: ControlState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |r, route| r.route(route.path, route.handler))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
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

#[cfg(test)]
mod tests {
    //! The routes served against `docs/openapi.yaml`, read with `yaml-rust2`: the router is
    //! built from [`routes`], so comparing that list with the document's `paths:` (methods
    //! under each path) finds a route added to either side only; a request to each documented
    //! route through the real router finds one the table lists but the router lost.

    use std::collections::BTreeSet;
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use yaml_rust2::YamlLoader;

    use super::*;
    use crate::backup::manager::{Backups, Defaults};
    use crate::nbd::transmission::Limits;

    const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

    /// The keys of an OpenAPI path item that are operations.
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    /// The other keys a path item may have here (`$ref` items are not supported).
    const NOT_METHODS: [&str; 4] = ["summary", "description", "parameters", "servers"];

    type Op = (String, String);

    /// (METHOD, path) of every operation under `paths:` of an OpenAPI document.
    fn documented(text: &str) -> BTreeSet<Op> {
        let docs = YamlLoader::load_from_str(text).expect("the document is YAML");
        let paths = docs[0]["paths"].as_hash().expect("a `paths:` mapping");
        let mut ops = BTreeSet::new();
        for (path, item) in paths {
            let path = path.as_str().expect("paths are strings");
            let item = item.as_hash().expect("a path item is a mapping");
            for key in item.keys().map(|k| k.as_str().expect("keys are strings")) {
                if METHODS.contains(&key) {
                    ops.insert((key.to_uppercase(), path.to_owned()));
                } else {
                    assert!(NOT_METHODS.contains(&key), "{path}: unexpected key {key:?}");
                }
            }
        }
        ops
    }

    fn served() -> BTreeSet<Op> {
        let routes = routes();
        let ops: BTreeSet<Op> = routes
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        assert_eq!(ops.len(), routes.len(), "a route is listed twice");
        ops
    }

    #[test]
    fn the_router_serves_exactly_the_documented_routes() {
        let (documented, served) = (documented(OPENAPI), served());
        let undocumented: Vec<&Op> = served.difference(&documented).collect();
        let unserved: Vec<&Op> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served, not in docs/openapi.yaml: {undocumented:?}; documented, not served: {unserved:?}"
        );
    }

    #[test]
    fn the_reader_takes_methods_and_skips_path_level_keys() {
        let doc = "paths:\n  /v1/a/{id}:\n    parameters: []\n    summary: a\n    get: {}\n    \
                   delete:\n      summary: d\n  /v1/b:\n    post: {}\ncomponents: {}\n";
        let ops: Vec<Op> = documented(doc).into_iter().collect();
        let op = |m: &str, p: &str| (m.to_owned(), p.to_owned());
        assert_eq!(
            ops,
            [
                op("DELETE", "/v1/a/{id}"),
                op("GET", "/v1/a/{id}"),
                op("POST", "/v1/b")
            ]
        );
    }

    /// Status and body of one request without a body to the socket at `path`.
    async fn request(socket: &Path, method: &str, target: &str) -> (u16, String) {
        let mut s = UnixStream::connect(socket).await.unwrap();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: cowd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        let status = answer[9..12].parse().unwrap();
        (status, answer)
    }

    #[tokio::test]
    async fn every_documented_route_reaches_a_handler() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let listener = PeerCheckedListener::bind(&socket).unwrap();
        let backups = Backups::open(Defaults::new(&dir.path().join("state"))).unwrap();
        let state = ControlState {
            exports: Arc::default(),
            backups: Arc::new(backups),
            attachments: Arc::default(),
            restores: Arc::default(),
            copies: crate::jobs::CopyService::idle(),
            limits: Limits::default(),
        };
        let (stop, rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(listener, state, rx));
        // Nothing exists: each handler refuses (unknown export or backup, no body, no
        // repository) without a side effect, and never with the router's own answers.
        for (method, path) in documented(OPENAPI) {
            let target = path.replace("{name}", "nothing").replace("{id}", "nothing");
            let (status, answer) =
                request(&socket, &method, &format!("{target}?timeout_s=0")).await;
            assert!(
                status != 405 && !answer.contains("no such API path"),
                "{method} {path}: {answer}"
            );
        }
        let (status, _) = request(&socket, "GET", "/v1/undocumented").await;
        assert_eq!(status, 404);
        let (status, _) = request(&socket, "DELETE", "/v1/exports").await;
        assert_eq!(status, 405);
        stop.send(true).unwrap();
        server.await.unwrap().unwrap();
    }
}
