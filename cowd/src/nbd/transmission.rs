//! The transmission phase of one connection, on plain threads.
//!
//! ```text
//!  reader thread ── recv (many headers per read) ── validate ── ≤ 256 KiB and a page-cache hit?
//!        yes ──> reply batch            no ──> worker pool (may block, or large) ──> reply
//! ```
//!
//! Replies go out in completion order, each frame written whole under the connection's writer
//! lock. Replies produced inline by the reader are batched and sent when the reader is about to
//! wait for more requests, so a burst of cache hits costs one `writev`. A budget bounds the
//! requests and payload bytes in flight; when it is exhausted the reader stops reading. At the
//! end (DISC, EOF, server shutdown) the reader waits for every request in flight, then returns.

use std::collections::VecDeque;
use std::io::{self, BufReader, IoSlice, Read};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tracing::{debug, trace, warn};

use super::proto::*;
use super::reply;
use super::request::{Command, Negotiated, Request};
use super::stream::Stream;
use crate::device::{BlockDevice, BufPool, DeviceError, Extent, IoBuf, ZeroFlags, is_zero};

/// Per-connection resource limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Worker threads per connection for requests that may block.
    pub io_threads: usize,
    /// Payload bytes in flight per connection.
    pub inflight_bytes: usize,
    /// Requests in flight per connection.
    pub inflight_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            io_threads: 32,
            inflight_bytes: 64 << 20,
            inflight_requests: 512,
        }
    }
}

/// Inline replies up to this size are batched; larger ones are written directly.
const BATCH_FRAME_MAX: usize = 64 << 10;
const BATCH_FLUSH_AT: usize = 256 << 10;
/// Writes up to this size are tried inline; larger ones go to a worker, so that receiving the
/// next payload overlaps copying this one into the page cache.
const INLINE_WRITE_MAX: usize = 256 << 10;
/// Reads up to this size are tried inline (a page-cache hit); larger ones go to a worker, so
/// that one read's copy out of the page cache overlaps another's send.
const INLINE_READ_MAX: usize = 256 << 10;
/// Idle I/O buffers kept for reuse, shared by every connection of the process.
const BUFFER_CACHE: usize = 32 << 20;

fn buffers() -> &'static BufPool {
    static POOL: std::sync::OnceLock<BufPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| BufPool::new(BUFFER_CACHE))
}

/// An invalid WRITE's payload up to this size is drained; a larger one closes the connection.
const DISCARD_MAX: u32 = 64 << 20;
const READ_BUFFER: usize = 128 << 10;

/// The successful result of a request.
enum Done {
    Ok,
    Data(IoBuf),
    Extents(Vec<Extent>),
}

/// A failed request: from the device, or refused by the protocol checks.
enum Failed {
    Device(DeviceError),
    Protocol(u32, &'static str),
}

impl From<DeviceError> for Failed {
    fn from(e: DeviceError) -> Self {
        Failed::Device(e)
    }
}

struct Job {
    req: Request,
    cmd: Command,
    buf: Option<IoBuf>,
    cost: usize,
}

struct Budget {
    used: Mutex<(usize, usize)>,
    freed: Condvar,
    limits: Limits,
}

struct Conn {
    dev: Arc<dyn BlockDevice>,
    neg: Negotiated,
    writer: Mutex<Stream>,
    /// A second handle on the socket, to shut it down without taking the writer lock.
    control: Stream,
    budget: Budget,
    bufs: &'static BufPool,
    broken: AtomicBool,
}

impl Conn {
    /// Waits until `bytes` more may be in flight (flushing pending replies first).
    fn acquire(&self, bytes: usize, batch: &mut Vec<u8>) -> io::Result<()> {
        let b = &self.budget;
        let fits = |u: &(usize, usize)| {
            u.0 < b.limits.inflight_requests && (u.1 == 0 || u.1 + bytes <= b.limits.inflight_bytes)
        };
        let mut used = b.used.lock().unwrap();
        if !fits(&used) {
            drop(used);
            self.flush(batch)?;
            used = b.used.lock().unwrap();
            while !fits(&used) {
                used = b.freed.wait(used).unwrap();
            }
        }
        used.0 += 1;
        used.1 += bytes;
        Ok(())
    }

    fn release(&self, bytes: usize) {
        let mut used = self.budget.used.lock().unwrap();
        used.0 -= 1;
        used.1 -= bytes;
        drop(used);
        self.budget.freed.notify_all();
    }

    fn wait_idle(&self) {
        let mut used = self.budget.used.lock().unwrap();
        while used.0 > 0 {
            used = self.budget.freed.wait(used).unwrap();
        }
    }

    fn execute(&self, req: &Request, cmd: Command, buf: Option<IoBuf>) -> Result<Done, Failed> {
        let fua = req.flags & CMD_FLAG_FUA != 0;
        let (off, len) = (req.offset, u64::from(req.len));
        let d = &self.dev;
        match (cmd, buf) {
            (Command::Read, Some(mut b)) => d.read_at(&mut b, off).map(|()| Done::Data(b)),
            (Command::Write, Some(b)) => {
                let r = d.write_at(&b, off, fua);
                self.bufs.put(b);
                r.map(|()| Done::Ok)
            }
            (Command::Flush, _) => d.flush().map(|()| Done::Ok),
            (Command::Trim, _) => d.trim(off, len, fua).map(|()| Done::Ok),
            (Command::WriteZeroes, _) => {
                let flags = ZeroFlags {
                    may_trim: req.flags & CMD_FLAG_NO_HOLE == 0,
                    fast: req.flags & CMD_FLAG_FAST_ZERO != 0,
                    fua,
                };
                d.write_zeroes(off, len, flags).map(|()| Done::Ok)
            }
            (Command::Cache, _) => d.cache(off, len).map(|()| Done::Ok),
            (Command::BlockStatus, _) => d.extents(off, len).map(Done::Extents),
            _ => Err(Failed::Protocol(
                EINVAL,
                "internal: request without its buffer",
            ))?,
        }
        .map_err(Failed::from)
    }

    /// Sends the reply of `req` and gives back its budget.
    fn finish(
        &self,
        req: &Request,
        r: Result<Done, Failed>,
        cost: usize,
        batch: Option<&mut Vec<u8>>,
    ) {
        self.respond(req, r, batch);
        self.release(cost);
    }

    fn respond(&self, req: &Request, r: Result<Done, Failed>, batch: Option<&mut Vec<u8>>) {
        let cookie = req.cookie;
        let structured = self.neg.structured;
        match r {
            Ok(Done::Data(buf)) => {
                if structured && is_zero(&buf) {
                    self.emit(&[&reply::hole_chunk(cookie, req.offset, req.len)], batch);
                } else if structured {
                    self.emit(
                        &[&reply::data_chunk(cookie, req.offset, req.len), &buf],
                        batch,
                    );
                } else {
                    self.emit(&[&reply::simple(cookie, 0), &buf], batch);
                }
                self.bufs.put(buf);
            }
            Ok(Done::Extents(mut ext)) => {
                if req.flags & CMD_FLAG_REQ_ONE != 0 {
                    ext.truncate(1);
                }
                let id = CONTEXT_ID_BASE_ALLOCATION;
                self.emit(&[&reply::block_status_chunk(cookie, id, &ext)], batch);
            }
            Ok(Done::Ok) => self.emit(&[&reply::simple(cookie, 0)], batch),
            Err(f) => {
                let (errno, msg) = match &f {
                    Failed::Device(e) => (e.nbd_errno(), e.to_string()),
                    Failed::Protocol(errno, msg) => (*errno, (*msg).to_owned()),
                };
                trace!(target: "cowd::data", cookie, errno, %msg, "request failed");
                if structured {
                    self.emit(&[&reply::error_chunk(cookie, errno, &msg)], batch);
                } else {
                    self.emit(&[&reply::simple(cookie, errno)], batch);
                }
            }
        }
    }

    /// Queues one reply frame in `batch`, or writes it now.
    fn emit(&self, parts: &[&[u8]], batch: Option<&mut Vec<u8>>) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        match batch {
            Some(b) if total <= BATCH_FRAME_MAX => {
                for p in parts {
                    b.extend_from_slice(p);
                }
                if b.len() >= BATCH_FLUSH_AT {
                    let _ = self.flush(b);
                }
            }
            _ => {
                let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
                let r = self.writer.lock().unwrap().write_all_vectored(&mut slices);
                let _ = self.check_write(r);
            }
        }
    }

    /// Sends the batched replies.
    fn flush(&self, batch: &mut Vec<u8>) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let r = self
            .writer
            .lock()
            .unwrap()
            .write_all_vectored(&mut [IoSlice::new(batch)]);
        batch.clear();
        self.check_write(r)
    }

    fn check_write(&self, r: io::Result<()>) -> io::Result<()> {
        if let Err(e) = &r {
            if !self.broken.swap(true, Ordering::Relaxed) {
                debug!(error = %e, "reply could not be sent; closing the connection");
                let _ = self.control.shutdown(Shutdown::Both);
            }
        }
        r
    }
}

/// The job queue of one connection's workers.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    idle: usize,
    closed: bool,
}

/// Lazily grown worker threads of one connection. Idle workers sleep on a condition variable
/// (no spinning: on a small machine spinning idle threads steal the CPU from the busy ones).
struct Pool {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    workers: Vec<JoinHandle<()>>,
    max: usize,
    span: tracing::Span,
}

impl Pool {
    /// Queues a job; returns it if no thread can run it (run it inline then).
    fn submit(&mut self, conn: &Arc<Conn>, job: Job) -> Option<Job> {
        let (lock, wake) = &*self.queue;
        let mut q = lock.lock().unwrap();
        if q.idle > 0 {
            q.jobs.push_back(job);
            drop(q);
            wake.notify_one();
            return None;
        }
        if self.workers.len() < self.max {
            let (conn, queue, span) = (conn.clone(), self.queue.clone(), self.span.clone());
            let spawned = std::thread::Builder::new()
                .name("cowd-io".into())
                .stack_size(256 << 10)
                .spawn(move || worker(conn, queue, span));
            match spawned {
                Ok(h) => self.workers.push(h),
                Err(e) if self.workers.is_empty() => {
                    warn!(error = %e, "cannot start an I/O thread; serving inline");
                    return Some(job);
                }
                Err(_) => {}
            }
        }
        q.jobs.push_back(job);
        None
    }

    fn close(self) {
        let (lock, wake) = &*self.queue;
        lock.lock().unwrap().closed = true;
        wake.notify_all();
        for w in self.workers {
            let _ = w.join();
        }
    }
}

fn worker(conn: Arc<Conn>, queue: Arc<(Mutex<Queue>, Condvar)>, span: tracing::Span) {
    let _g = span.enter();
    let (lock, wake) = &*queue;
    loop {
        let job = {
            let mut q = lock.lock().unwrap();
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if q.closed {
                    return;
                }
                q.idle += 1;
                q = wake.wait(q).unwrap();
                q.idle -= 1;
            }
        };
        let r = conn.execute(&job.req, job.cmd, job.buf);
        conn.finish(&job.req, r, job.cost, None);
    }
}

fn discard(rd: &mut impl Read, n: u32) -> io::Result<()> {
    io::copy(&mut rd.take(u64::from(n)), &mut io::sink()).and_then(|copied| {
        if copied == u64::from(n) {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    })
}

/// Serves requests on `stream` until the client disconnects or the socket is shut down.
/// Blocks; returns once every request in flight has been answered (or could not be).
pub fn serve(stream: Stream, dev: Arc<dyn BlockDevice>, neg: Negotiated, limits: Limits) {
    let span = tracing::Span::current();
    let (reader, control) = match (stream.try_clone(), stream.try_clone()) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(e), _) | (_, Err(e)) => return warn!(error = %e, "cannot clone the connection socket"),
    };
    let conn = Arc::new(Conn {
        dev,
        neg,
        writer: Mutex::new(stream),
        control,
        budget: Budget {
            used: Mutex::new((0, 0)),
            freed: Condvar::new(),
            limits,
        },
        bufs: buffers(),
        broken: AtomicBool::new(false),
    });
    let mut pool = Pool {
        queue: Arc::default(),
        workers: Vec::new(),
        max: limits.io_threads.max(1),
        span,
    };
    let mut rd = BufReader::with_capacity(READ_BUFFER, reader);
    let mut batch = Vec::with_capacity(BATCH_FLUSH_AT + BATCH_FRAME_MAX);
    let end = read_loop(&conn, &mut rd, &mut pool, &mut batch);
    let _ = conn.flush(&mut batch);
    conn.wait_idle();
    pool.close();
    match end {
        Ok(why) => debug!(why, "connection closed"),
        Err(e) => debug!(error = %e, "connection closed"),
    }
}

fn read_loop(
    conn: &Arc<Conn>,
    rd: &mut BufReader<Stream>,
    pool: &mut Pool,
    batch: &mut Vec<u8>,
) -> io::Result<&'static str> {
    loop {
        if rd.buffer().is_empty() {
            conn.flush(batch)?;
        }
        let mut hdr = [0u8; REQUEST_LEN];
        match rd.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok("client closed the socket");
            }
            Err(e) => return Err(e),
        }
        if conn.broken.load(Ordering::Relaxed) {
            return Ok("reply stream broken");
        }
        let req = match Request::decode(&hdr) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "protocol violation; closing the connection");
                return Ok("bad request magic");
            }
        };
        trace!(target: "cowd::data", ?req, "request");
        let cmd = match req.validate(&conn.neg) {
            Ok(c) => c,
            Err(errno) => {
                let n = req.payload_len();
                if n > DISCARD_MAX {
                    warn!(
                        len = n,
                        "write payload too large to drain; closing the connection"
                    );
                    return Ok("oversized write");
                }
                discard(rd, n)?;
                conn.acquire(0, batch)?;
                conn.finish(
                    &req,
                    Err(Failed::Protocol(errno, "request refused")),
                    0,
                    Some(batch),
                );
                continue;
            }
        };
        let len = req.len as usize;
        let job = match cmd {
            Command::Disc => return Ok("client sent NBD_CMD_DISC"),
            Command::Write => {
                conn.acquire(len, batch)?;
                let mut buf = conn.bufs.get(len);
                if let Err(e) = rd.read_exact(&mut buf) {
                    conn.release(len);
                    return Err(e);
                }
                let fua = req.flags & CMD_FLAG_FUA != 0;
                let inline = if len <= INLINE_WRITE_MAX {
                    conn.dev.try_write_at(&buf, req.offset, fua)
                } else {
                    Ok(false)
                };
                match inline {
                    Ok(false) => Job {
                        req,
                        cmd,
                        buf: Some(buf),
                        cost: len,
                    },
                    done => {
                        conn.bufs.put(buf);
                        conn.finish(
                            &req,
                            done.map(|_| Done::Ok).map_err(Failed::from),
                            len,
                            Some(batch),
                        );
                        continue;
                    }
                }
            }
            Command::Read => {
                conn.acquire(len, batch)?;
                let mut buf = conn.bufs.get(len);
                let inline = if len <= INLINE_READ_MAX {
                    conn.dev.try_read_at(&mut buf, req.offset)
                } else {
                    Ok(false)
                };
                match inline {
                    Ok(false) => Job {
                        req,
                        cmd,
                        buf: Some(buf),
                        cost: len,
                    },
                    Ok(true) => {
                        conn.finish(&req, Ok(Done::Data(buf)), len, Some(batch));
                        continue;
                    }
                    Err(e) => {
                        conn.bufs.put(buf);
                        conn.finish(&req, Err(e.into()), len, Some(batch));
                        continue;
                    }
                }
            }
            _ => {
                conn.acquire(0, batch)?;
                Job {
                    req,
                    cmd,
                    buf: None,
                    cost: 0,
                }
            }
        };
        if let Some(job) = pool.submit(conn, job) {
            let r = conn.execute(&job.req, job.cmd, job.buf);
            conn.finish(&job.req, r, job.cost, Some(batch));
        }
    }
}
