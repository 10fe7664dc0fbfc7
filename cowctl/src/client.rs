//! The HTTP/1.1 client of the control API, over the daemon's Unix socket.
//!
//! One connection per request: the daemon is local, so a connection costs next to nothing and
//! no state is kept between requests. Each request (connect, send, the whole answer) must finish
//! within the client's timeout. Failures fall into three kinds, which decide `cowctl`'s exit code:
//!
//! ```text
//!  connect ─> http1 handshake ─> send request ─> status + body
//!     └─────────────┴──────────────────┴─ no complete HTTP answer ... Error::Unreachable (exit 2)
//!                                              non-2xx answer ....... Error::Api         (exit 1)
//!                                              2xx, body not the type Error::BadAnswer   (exit 1)
//! ```

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use cowd_api::ErrorBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// How long one request may take, from connect to the end of the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers larger than this are refused (the API's answers are small JSON documents).
const MAX_BODY: usize = 16 << 20;

/// A client of one daemon's control socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// A successful answer: the decoded value and the JSON exactly as the daemon sent it.
#[derive(Debug)]
pub struct Reply<T> {
    pub value: T,
    pub body: Bytes,
}

/// Why a request failed.
#[derive(Debug)]
pub enum Error {
    /// No complete HTTP answer came from the socket.
    Unreachable { socket: PathBuf, why: Unreachable },
    /// The daemon answered with a non-2xx status; `message` is its [`ErrorBody`] text, or a
    /// description of the status when the body is not an `ErrorBody`.
    Api { status: StatusCode, message: String },
    /// A 2xx answer whose body is not what the API promises (e.g. a daemon of another version).
    BadAnswer { request: String, reason: String },
    /// The request could not be built (a bug in the caller, e.g. an invalid path).
    BadRequest(String),
}

/// What went wrong before a complete HTTP answer arrived.
#[derive(Debug)]
pub enum Unreachable {
    /// `connect(2)` failed: no socket file, nobody listening, permission denied, ...
    Connect(io::Error),
    /// The peer closed the connection without answering.
    Closed,
    /// The peer answered something that is not HTTP/1.
    NotHttp(String),
    /// The connection broke during the exchange.
    Broken(String),
    /// No complete answer within the timeout.
    Timeout(Duration),
}

impl Error {
    /// `cowctl`'s exit code for this error (see `cowctl --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Unreachable { .. } => 2,
            Error::Api { .. } | Error::BadAnswer { .. } | Error::BadRequest(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable { socket, why } => write!(
                f,
                "cannot reach cowd at {}: {why} ({})",
                socket.display(),
                why.hint()
            ),
            Error::Api { message, .. } => f.write_str(message),
            Error::BadAnswer { request, reason } => {
                write!(f, "unexpected answer from cowd to {request}: {reason}")
            }
            Error::BadRequest(reason) => write!(f, "cannot build the request: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

impl Unreachable {
    fn hint(&self) -> &'static str {
        const RUNNING: &str = "is the daemon running? --socket / COWD_SOCKET choose another socket";
        match self {
            Unreachable::Connect(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                "run as root, as the daemon's user or as a member of the cowd group"
            }
            Unreachable::Closed => {
                "cowd answers only root, its own user and the cowd group; is this cowd's socket?"
            }
            Unreachable::NotHttp(_) => {
                "is this cowd's control socket? --socket / COWD_SOCKET choose another socket"
            }
            Unreachable::Timeout(_) => "the daemon may be overloaded or stuck",
            Unreachable::Connect(_) | Unreachable::Broken(_) => RUNNING,
        }
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Connect(e) => f.write_str(&io_reason(e)),
            Unreachable::Closed => f.write_str("the connection was closed without an answer"),
            Unreachable::NotHttp(e) => write!(f, "the answer is not HTTP: {e}"),
            Unreachable::Broken(e) => write!(f, "the connection broke: {e}"),
            Unreachable::Timeout(t) => write!(f, "no answer within {} s", t.as_secs_f64()),
        }
    }
}

/// An I/O error's text without the " (os error N)" suffix that std appends.
fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match (e.raw_os_error(), s.rfind(" (os error ")) {
        (Some(_), Some(at)) => s[..at].to_owned(),
        _ => s,
    }
}

/// A hyper error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

fn classify(e: &hyper::Error) -> Unreachable {
    if e.is_parse() || e.is_parse_status() {
        Unreachable::NotHttp(chain(e))
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() || reset(e) {
        Unreachable::Closed
    } else {
        Unreachable::Broken(chain(e))
    }
}

/// True when the peer closed the connection under a write or a read (as cowd does to peers it
/// does not permit, before reading their request).
fn reset(e: &hyper::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if let Some(io) = inner.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            );
        }
        src = inner.source();
    }
    false
}

/// Aborts the task driving a connection when the request ends, however it ends.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    /// A client of the control socket at `socket`, with the default timeout.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `GET path`, decoding a 2xx answer as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Reply<T>, Error> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with `body` as JSON, decoding a 2xx answer as `T` (an empty answer decodes as
    /// JSON `null`, so `T = ()` accepts `204 No Content`).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, Error> {
        let json = serde_json::to_vec(body).map_err(|e| Error::BadRequest(e.to_string()))?;
        self.request(Method::POST, path, Some(json)).await
    }

    /// `PUT path` with `body` as JSON, decoding a 2xx answer as `T`.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, Error> {
        let json = serde_json::to_vec(body).map_err(|e| Error::BadRequest(e.to_string()))?;
        self.request(Method::PUT, path, Some(json)).await
    }

    /// `DELETE path`, decoding a 2xx answer as `T`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<Reply<T>, Error> {
        self.request(Method::DELETE, path, None).await
    }

    /// `GET path` of raw bytes (a file's content): a 2xx answer's body as it is.
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes, Error> {
        let what = format!("GET {path}");
        let (status, bytes) = self.raw(Method::GET, path, None).await?;
        if status.is_success() {
            return Ok(bytes);
        }
        decode::<()>(&what, status, bytes).map(|_| Bytes::new())
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply<T>, Error> {
        let what = format!("{method} {path}");
        let (status, bytes) = self.raw(method, path, body).await?;
        decode(&what, status, bytes)
    }

    /// One request: the status and the body, whatever they are.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let what = format!("{method} {path}");
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("cowctl/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::BadRequest(format!("{what}: {e}")))?;
        let (status, bytes) = tokio::time::timeout(self.timeout, self.exchange(req))
            .await
            .map_err(|_| Unreachable::Timeout(self.timeout))
            .and_then(|r| r)
            .map_err(|why| Error::Unreachable {
                socket: self.socket.clone(),
                why,
            })?;
        Ok((status, bytes))
    }

    /// One request on a fresh connection: the status and the whole body.
    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), Unreachable> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(Unreachable::Connect)?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| classify(&e))?;
        // Errors of the connection also reach `send_request` or the body; the task only drives I/O.
        let _driver = Driver(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let resp = send.send_request(req).await.map_err(|e| classify(&e))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    Unreachable::Broken(format!("the answer is larger than {MAX_BODY} bytes"))
                } else if let Some(h) = e.downcast_ref::<hyper::Error>() {
                    classify(h)
                } else {
                    Unreachable::Broken(chain(&*e))
                }
            })?
            .to_bytes();
        Ok((status, body))
    }
}

/// Turns an answer into `T` or an [`Error`].
fn decode<T: DeserializeOwned>(
    what: &str,
    status: StatusCode,
    body: Bytes,
) -> Result<Reply<T>, Error> {
    if !status.is_success() {
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => b.error,
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let first = text.lines().map(str::trim).find(|l| !l.is_empty());
                match first {
                    Some(line) => format!("{what}: {status}: {}", truncate(line, 200)),
                    None => format!("{what}: {status}"),
                }
            }
        };
        return Err(Error::Api { status, message });
    }
    let json: &[u8] = if body.is_empty() { b"null" } else { &body };
    match serde_json::from_slice(json) {
        Ok(value) => Ok(Reply { value, body }),
        Err(e) => Err(Error::BadAnswer {
            request: what.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// `s` percent-encoded for a path segment or a query value: every byte but the unreserved
/// characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixListener as StdListener;
    use std::path::Path;
    use std::sync::Arc;

    use cowd::control::server::{ControlState, PeerCheckedListener, serve};
    use cowd::device::MemoryDevice;
    use cowd::export::{Export, Exports};
    use cowd_api::exports::ExportInfo;
    use serde::Deserialize;

    /// The real control server of the daemon, in-process, on a socket in a temp dir.
    struct Daemon {
        dir: tempfile::TempDir,
        stop: tokio::sync::watch::Sender<bool>,
    }

    impl Daemon {
        fn start(exports: Exports) -> Daemon {
            let dir = tempfile::tempdir().unwrap();
            let listener = PeerCheckedListener::bind(&dir.path().join("control.sock")).unwrap();
            let (stop, rx) = tokio::sync::watch::channel(false);
            let defaults = cowd::backup::manager::Defaults::new(&dir.path().join("state"));
            let backups = Arc::new(cowd::backup::manager::Backups::open(defaults).unwrap());
            let state = ControlState {
                exports: Arc::new(exports),
                backups,
                attachments: Default::default(),
                restores: Default::default(),
                copies: cowd::jobs::CopyService::idle(),
                limits: Default::default(),
            };
            tokio::spawn(serve(listener, state, rx));
            Daemon { dir, stop }
        }

        fn client(&self) -> Client {
            Client::new(self.dir.path().join("control.sock"))
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.stop.send(true);
        }
    }

    /// A fake server that reads one request and runs `answer` on the connection.
    fn fake(
        answer: impl FnOnce(String, &mut std::os::unix::net::UnixStream) + Send + 'static,
    ) -> (tempfile::TempDir, Client) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let l = StdListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let req = read_request(&mut s);
            answer(req, &mut s);
        });
        (dir, Client::new(path))
    }

    /// Head and body of one request.
    fn read_request(s: &mut std::os::unix::net::UnixStream) -> String {
        let mut r = BufReader::new(s);
        let mut head = String::new();
        let mut len = 0;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        head + &String::from_utf8(body).unwrap()
    }

    fn respond(s: &mut std::os::unix::net::UnixStream, status: &str, body: &str) {
        let msg = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(msg.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn get_decodes_the_exports_of_the_real_server() {
        let exports = Exports::default();
        let disk = Export::new(
            "disk",
            Path::new("/dev/x"),
            Arc::new(MemoryDevice::new(1 << 20)),
            true,
        );
        let disk = exports.add(disk).unwrap();
        let _conn = disk.attach(1, None);
        let d = Daemon::start(exports);
        let r: Reply<Vec<ExportInfo>> = d.client().get("/v1/exports").await.unwrap();
        assert_eq!(r.value.len(), 1);
        let e = &r.value[0];
        assert_eq!((e.name.as_str(), e.path.as_str()), ("disk", "/dev/x"));
        assert_eq!((e.size, e.read_only, e.connections), (1 << 20, true, 1));
        let again: Vec<ExportInfo> = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(again, r.value);
    }

    #[tokio::test]
    async fn empty_export_list() {
        let d = Daemon::start(Exports::default());
        let r: Reply<Vec<ExportInfo>> = d.client().get("/v1/exports").await.unwrap();
        assert!(r.value.is_empty());
        assert_eq!(&r.body[..], b"[]");
    }

    #[tokio::test]
    async fn post_to_an_unknown_route_of_the_real_server_is_an_api_error() {
        let d = Daemon::start(Exports::default());
        let err = d
            .client()
            .post::<_, serde_json::Value>("/v1/no-such-route", &serde_json::json!({"x": 1}))
            .await
            .unwrap_err();
        match &err {
            Error::Api { status, message } => {
                assert_eq!(*status, StatusCode::NOT_FOUND);
                // Today "POST /v1/no-such-route: 404 Not Found"; with a JSON fallback in the
                // daemon, its ErrorBody, which should name the path too.
                assert!(message.contains("/v1/no-such-route"), "{message}");
            }
            e => panic!("expected an API error, got {e:?}"),
        }
        assert_eq!(err.exit_code(), 1);
        // A known route with the wrong method.
        let err = d
            .client()
            .post::<_, serde_json::Value>("/v1/exports", &())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Api { status, .. } if status == StatusCode::METHOD_NOT_ALLOWED),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn post_sends_json_and_decodes_the_answer() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Started {
            id: u32,
        }
        let (_dir, c) = fake(|req, s| {
            assert!(req.starts_with("POST /v1/backups HTTP/1.1\r\n"), "{req}");
            let lower = req.to_ascii_lowercase();
            assert!(
                lower.contains("content-type: application/json\r\n"),
                "{req}"
            );
            assert!(lower.contains("host: localhost\r\n"), "{req}");
            assert!(req.ends_with("\r\n\r\n{\"export\":\"disk\"}"), "{req}");
            respond(s, "201 Created", r#"{"id":7}"#);
        });
        let r: Reply<Started> = c
            .post("/v1/backups", &serde_json::json!({"export": "disk"}))
            .await
            .unwrap();
        assert_eq!(r.value, Started { id: 7 });
    }

    #[tokio::test]
    async fn an_empty_answer_decodes_as_unit() {
        let (_dir, c) = fake(|_, s| {
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        });
        let r: Reply<()> = c.post("/v1/x", &()).await.unwrap();
        assert!(r.body.is_empty());
    }

    #[tokio::test]
    async fn error_body_is_the_message() {
        let (_dir, c) = fake(|_, s| {
            respond(s, "409 Conflict", r#"{"error":"export disk is busy"}"#);
        });
        let err = c.get::<serde_json::Value>("/v1/x").await.unwrap_err();
        assert_eq!(err.to_string(), "export disk is busy");
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn a_2xx_answer_of_the_wrong_shape_is_a_bad_answer() {
        let (_dir, c) = fake(|_, s| respond(s, "200 OK", r#"{"not":"a list"}"#));
        let err = c.get::<Vec<ExportInfo>>("/v1/exports").await.unwrap_err();
        assert!(matches!(err, Error::BadAnswer { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("unexpected answer from cowd to GET /v1/exports: ")
        );
        assert_eq!(err.exit_code(), 1);
    }

    fn assert_unreachable(err: &Error, reason: &str) {
        let text = err.to_string();
        assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 2);
        assert!(text.starts_with("cannot reach cowd at "), "{text}");
        assert!(text.contains(reason), "{text} does not contain {reason:?}");
        assert!(!text.contains('\n'), "{text:?}");
    }

    #[tokio::test]
    async fn missing_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let err = Client::new(&path)
            .get::<()>("/v1/exports")
            .await
            .unwrap_err();
        assert_unreachable(
            &err,
            &format!(
                "{}: No such file or directory (is the daemon running?",
                path.display()
            ),
        );
    }

    #[tokio::test]
    async fn stale_socket_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(StdListener::bind(&path).unwrap());
        let err = Client::new(&path)
            .get::<()>("/v1/exports")
            .await
            .unwrap_err();
        assert_unreachable(&err, ": Connection refused (is the daemon running?");
    }

    #[tokio::test]
    async fn closed_without_an_answer() {
        let (_dir, c) = fake(|_, _| {});
        let err = c.get::<()>("/v1/exports").await.unwrap_err();
        assert_unreachable(&err, "closed without an answer");
    }

    #[tokio::test]
    async fn closed_before_the_request_is_read() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("drop.sock");
            let l = StdListener::bind(&path).unwrap();
            std::thread::spawn(move || drop(l.accept().unwrap()));
            let err = Client::new(&path)
                .get::<()>("/v1/exports")
                .await
                .unwrap_err();
            assert_unreachable(&err, "closed without an answer");
        }
    }

    #[tokio::test]
    async fn not_http() {
        let (_dir, c) = fake(|_, s| {
            s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        });
        let err = c.get::<()>("/v1/exports").await.unwrap_err();
        assert_unreachable(&err, "the answer is not HTTP");
    }

    #[tokio::test]
    async fn timeout() {
        let (_dir, c) = fake(|_, s| {
            std::thread::sleep(Duration::from_millis(500));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]");
        });
        let err = c
            .with_timeout(Duration::from_millis(100))
            .get::<()>("/v1/exports")
            .await
            .unwrap_err();
        assert_unreachable(&err, "no answer within 0.1 s");
    }

    #[test]
    fn encoding() {
        assert_eq!(encode("disk-1_a.b~"), "disk-1_a.b~");
        assert_eq!(encode("/dev/nbd0"), "%2Fdev%2Fnbd0");
        assert_eq!(encode("a b?c&d=é"), "a%20b%3Fc%26d%3D%C3%A9");
        assert_eq!(encode(""), "");
    }

    #[test]
    fn permission_denied_has_its_own_hint() {
        let err = Error::Unreachable {
            socket: "/run/cowd/control.sock".into(),
            // EACCES
            why: Unreachable::Connect(io::Error::from_raw_os_error(13)),
        };
        assert_eq!(
            err.to_string(),
            "cannot reach cowd at /run/cowd/control.sock: Permission denied \
             (run as root, as the daemon's user or as a member of the cowd group)"
        );
    }
}
