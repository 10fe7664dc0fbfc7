//! A fault-injecting HTTP proxy between cowd's S3 client and an upstream server (the RADOS
//! Gateway of [`crate::rgw`]): it relays each request and its answer unchanged, or injects the
//! fault the test has set, switchable while the client runs.
//!
//! ```text
//!   cowd ──keep-alive──> FaultProxy ──one upstream connection per client connection──> rgw
//!                          │  Fault::None                relay the request, then the answer
//!                          │  Fault::ServiceUnavailable  every n-th request answered
//!                          │                             503 SlowDown here, never forwarded
//!                          └─ Fault::Delay               the request held back min..=max first
//! ```
//!
//! HTTP is hyper's, on both sides (a server connection per client, a client connection to the
//! upstream beside it): bodies stream through as they come, in whatever framing. The request
//! keeps its `Host` header, which the client signed for the proxy's address and a path-style
//! S3 server checks the signature against. [`Counts`] says what the proxy did, so that a test
//! asserts that its faults really happened. The proxy runs on a runtime of its own; dropping
//! the [`FaultProxy`] shuts that down, which closes every connection and ends every request
//! held back at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the requests it receives from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relay every request and its answer.
    None,
    /// Answer every `every`-th request (counted from when this fault is set: the `every`-th,
    /// the `2 * every`-th …) with S3's `503 SlowDown`, without forwarding it; relay the others.
    /// `every: 1` answers every request so.
    ServiceUnavailable { every: u64 },
    /// Hold each request back for a time drawn uniformly from `min..=max` before forwarding
    /// it: a slow store.
    Delay { min: Duration, max: Duration },
}

/// What the proxy has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests received from clients.
    pub requests: u64,
    /// Requests forwarded whose answer's head came back (its body streams on).
    pub relayed: u64,
    /// Requests answered 503 by the proxy.
    pub unavailable: u64,
    /// Requests held back by a [`Fault::Delay`].
    pub delayed: u64,
}

/// The proxy: listening until dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://HOST:PORT`: the endpoint to give the client.
    pub endpoint: String,
    shared: Arc<Shared>,
    /// Owns every task and socket of the proxy.
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    fault: Fault,
    /// Requests received since `fault` was set.
    since_set: u64,
    counts: Counts,
}

/// What to do with one request.
enum Action {
    Forward,
    Unavailable,
    Delay(Duration),
}

type Body = Either<Incoming, Full<Bytes>>;

impl FaultProxy {
    /// A proxy on a free loopback port that forwards to `upstream` (`http://HOST:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        FaultProxy::start_on("127.0.0.1", upstream)
    }

    /// A proxy on a free port of `host` (an address of this namespace) that forwards to
    /// `upstream` (`http://HOST:PORT`).
    pub fn start_on(host: &str, upstream: &str) -> FaultProxy {
        let authority = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("not an http:// endpoint: {upstream}"))
            .trim_end_matches('/');
        let upstream: SocketAddr = authority
            .parse()
            .unwrap_or_else(|e| panic!("{authority}: not IP:PORT: {e}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("faultproxy")
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(TcpListener::bind((host, 0)))
            .unwrap_or_else(|e| panic!("bind {host}: {e}"));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State {
                fault: Fault::None,
                since_set: 0,
                counts: Counts::default(),
            }),
        });
        runtime.spawn(accept(listener, shared.clone()));
        FaultProxy {
            endpoint: format!("http://{addr}"),
            shared,
            runtime: Some(runtime),
        }
    }

    /// Sets the fault for the requests received from now on.
    pub fn set(&self, fault: Fault) {
        let mut st = self.shared.lock();
        st.fault = fault;
        st.since_set = 0;
    }

    /// What the proxy has done so far.
    pub fn counts(&self) -> Counts {
        self.shared.lock().counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Without waiting for the tasks: their sockets close as they are dropped, and a
        // proxy may also be dropped on a runtime of the test's.
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request and decides what to do with it.
    fn decide(&self) -> Action {
        let mut st = self.lock();
        st.counts.requests += 1;
        st.since_set += 1;
        match st.fault {
            Fault::ServiceUnavailable { every } if st.since_set % every.max(1) == 0 => {
                st.counts.unavailable += 1;
                Action::Unavailable
            }
            Fault::None | Fault::ServiceUnavailable { .. } => Action::Forward,
            Fault::Delay { min, max } => {
                st.counts.delayed += 1;
                let spread = max.saturating_sub(min).as_millis() as u64;
                Action::Delay(min + Duration::from_millis(fastrand::u64(0..=spread)))
            }
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            // One upstream connection serves this client connection's requests in turn (a
            // client sends the next request on a connection only after the last answer).
            let upstream = Arc::new(tokio::sync::Mutex::new(None));
            let service = hyper::service::service_fn(move |req| {
                let (shared, upstream) = (shared.clone(), upstream.clone());
                async move { Ok::<_, Infallible>(handle(&shared, &upstream, req).await) }
            });
            // A broken connection ends the task; the client sees it broken too.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(client), service)
                .await;
        });
    }
}

/// One request: answered here, or held back and then forwarded.
async fn handle(
    shared: &Shared,
    upstream: &tokio::sync::Mutex<Option<SendRequest<Incoming>>>,
    req: Request<Incoming>,
) -> Response<Body> {
    match shared.decide() {
        Action::Unavailable => return slow_down(req.uri().path()),
        Action::Delay(d) => tokio::time::sleep(d).await,
        Action::Forward => {}
    }
    let mut upstream = upstream.lock().await;
    match forward(shared, &mut upstream, req).await {
        Ok(answer) => {
            shared.lock().counts.relayed += 1;
            answer.map(Either::Left)
        }
        Err(e) => {
            *upstream = None;
            let mut r = Response::new(Either::Right(Full::from(format!("faultproxy: {e}\n"))));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    }
}

/// Sends `req` on the upstream connection, connecting first when there is none or it closed.
async fn forward(
    shared: &Shared,
    upstream: &mut Option<SendRequest<Incoming>>,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    if upstream.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = TcpStream::connect(shared.upstream).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        *upstream = Some(send);
    }
    let send = upstream.as_mut().expect("connected");
    send.ready().await?;
    Ok(send.send_request(req).await?)
}

/// S3's answer to a request it will not serve now: `503 SlowDown` with its XML error body.
fn slow_down(resource: &str) -> Response<Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
         <Message>Please reduce your request rate.</Message><Resource>{resource}</Resource>\
         <RequestId>faultproxy</RequestId></Error>"
    );
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header("content-type", "application/xml")
        .header("x-amz-request-id", "faultproxy")
        .body(Either::Right(Full::from(body)))
        .unwrap()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// An upstream that answers each request with its method, path and body, alternately
    /// whole and in two frames (chunked); the bodies it saw, in order.
    fn upstream(rt: &tokio::runtime::Runtime) -> (String, Arc<Mutex<Vec<Bytes>>>) {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let bodies = seen.clone();
        rt.spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let bodies = bodies.clone();
                tokio::spawn(async move {
                    let n = Arc::new(Mutex::new(0u32));
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (bodies, n) = (bodies.clone(), n.clone());
                        async move {
                            let head = format!("{} {} ", req.method(), req.uri().path());
                            let body = req.into_body().collect().await?.to_bytes();
                            bodies.lock().unwrap().push(body.clone());
                            let whole = [head.as_bytes(), &body].concat();
                            let mut n = n.lock().unwrap();
                            *n += 1;
                            let frames: Vec<Result<_, Infallible>> = if *n % 2 == 0 {
                                vec![Ok(hyper::body::Frame::data(Bytes::from(whole)))]
                            } else {
                                let (a, b) = whole.split_at(1);
                                vec![
                                    Ok(hyper::body::Frame::data(Bytes::copy_from_slice(a))),
                                    Ok(hyper::body::Frame::data(Bytes::copy_from_slice(b))),
                                ]
                            };
                            let body = StreamBody::new(futures_util::stream::iter(frames));
                            Ok::<_, hyper::Error>(Response::new(body))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(conn), service)
                        .await;
                });
            }
        });
        (endpoint, seen)
    }

    /// A client connection to the proxy.
    async fn connect(p: &FaultProxy) -> SendRequest<Full<Bytes>> {
        let addr = p.endpoint.strip_prefix("http://").unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    }

    /// Sends a request on `c` and reads its answer whole: (status, body).
    async fn exchange(
        c: &mut SendRequest<Full<Bytes>>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, Bytes) {
        c.ready().await.unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "proxy.test")
            .body(Full::from(body.to_vec()))
            .unwrap();
        let answer = c.send_request(req).await.unwrap();
        let status = answer.status().as_u16();
        (
            status,
            answer.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn relays_requests_and_answers_in_both_framings_on_one_connection() {
        let rt = runtime();
        let (up, seen) = upstream(&rt);
        let p = FaultProxy::start(&up);
        rt.block_on(async {
            let mut c = connect(&p).await;
            for i in 0..4 {
                let path = format!("/bucket/key{i}");
                let (status, body) =
                    exchange(&mut c, "PUT", &path, format!("data{i}").as_bytes()).await;
                assert_eq!(status, 200);
                assert_eq!(body, format!("PUT {path} data{i}"));
            }
            assert_eq!(exchange(&mut c, "GET", "/b/k", b"").await.1, "GET /b/k ");
        });
        let seen: Vec<Bytes> = seen.lock().unwrap().clone();
        assert_eq!(seen, ["data0", "data1", "data2", "data3", ""]);
        let c = p.counts();
        assert_eq!(
            (c.requests, c.relayed, c.unavailable, c.delayed),
            (5, 5, 0, 0)
        );
    }

    #[test]
    fn every_nth_request_is_answered_503_slow_down_without_forwarding() {
        let rt = runtime();
        let (up, seen) = upstream(&rt);
        let p = FaultProxy::start(&up);
        p.set(Fault::ServiceUnavailable { every: 3 });
        let statuses = rt.block_on(async {
            let mut c = connect(&p).await;
            let mut statuses = Vec::new();
            for i in 0..6u8 {
                let (status, body) = exchange(&mut c, "PUT", "/b/k", &[b'0' + i]).await;
                if status == 503 {
                    let text = String::from_utf8(body.to_vec()).unwrap();
                    assert!(text.contains("<Code>SlowDown</Code>"), "{text}");
                }
                statuses.push(status);
            }
            p.set(Fault::None);
            assert_eq!(exchange(&mut c, "GET", "/b/k", b"").await.0, 200);
            statuses
        });
        assert_eq!(statuses, [200, 200, 503, 200, 200, 503]);
        let seen: Vec<Bytes> = seen.lock().unwrap().clone();
        assert_eq!(seen, ["0", "1", "3", "4", ""]);
        assert_eq!(p.counts().unavailable, 2);
    }

    #[test]
    fn a_delay_holds_each_request_back() {
        let rt = runtime();
        let (up, _) = upstream(&rt);
        let p = FaultProxy::start(&up);
        let ms = Duration::from_millis;
        p.set(Fault::Delay {
            min: ms(100),
            max: ms(150),
        });
        let t = Instant::now();
        rt.block_on(async {
            let mut c = connect(&p).await;
            assert_eq!(exchange(&mut c, "GET", "/b/k", b"").await.0, 200);
            assert_eq!(exchange(&mut c, "GET", "/b/k", b"").await.0, 200);
        });
        assert!(t.elapsed() >= ms(200), "{:?}", t.elapsed());
        assert_eq!(p.counts().delayed, 2);
    }

    #[test]
    fn an_upstream_that_is_gone_is_answered_502() {
        // A port nobody listens on: bound, then closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let p = FaultProxy::start(&format!("http://{addr}"));
        let rt = runtime();
        let (status, body) = rt.block_on(async {
            let mut c = connect(&p).await;
            exchange(&mut c, "GET", "/b/k", b"").await
        });
        assert_eq!(status, 502, "{body:?}");
        assert_eq!(p.counts().relayed, 0);
    }

    #[test]
    fn dropped_it_stops_at_once_even_with_requests_held_back() {
        let rt = runtime();
        let (up, _) = upstream(&rt);
        let p = FaultProxy::start(&up);
        let long = Duration::from_secs(600);
        p.set(Fault::Delay {
            min: long,
            max: long,
        });
        rt.block_on(async {
            let mut c = connect(&p).await;
            c.ready().await.unwrap();
            let req = Request::get("/").body(Full::from("")).unwrap();
            let answer = tokio::spawn(c.send_request(req));
            while p.counts().delayed == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let t = Instant::now();
            drop(p);
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            // The client's connection closes without an answer.
            let answer = tokio::time::timeout(Duration::from_secs(5), answer).await;
            assert!(answer.expect("no answer, no close").unwrap().is_err());
        });
    }
}
