//! The control socket of a lazyfs process: one request line, one answer line.
//!
//! | request        | answer      | effect                                               |
//! |----------------|-------------|------------------------------------------------------|
//! | `ops`          | `N`         | durability-relevant operations admitted since mount  |
//! | `cut-after N`  | `ok`        | N more operations happen, the next one cuts power    |
//! | `cut`          | `lost N`    | cuts power now; N dirty bytes were discarded         |
//! | `state`        | `on`/`off`  | whether the power is still on                        |

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fs::LazyFs;

/// Answers requests on `listener` until the process exits (run it on its own thread).
pub fn serve(listener: UnixListener, fs: LazyFs) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let fs = fs.clone();
        std::thread::spawn(move || {
            let Ok(mut out) = conn.try_clone() else {
                return;
            };
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { return };
                let answer = answer(&fs, line.trim());
                if writeln!(out, "{answer}").is_err() {
                    return;
                }
            }
        });
    }
}

fn answer(fs: &LazyFs, request: &str) -> String {
    let mut words = request.split_whitespace();
    match (words.next(), words.next().map(str::parse::<u64>)) {
        (Some("ops"), None) => fs.ops().to_string(),
        (Some("cut-after"), Some(Ok(n))) => {
            fs.cut_after(n);
            "ok".into()
        }
        (Some("cut"), None) => format!("lost {}", fs.cut_now()),
        (Some("state"), None) => if fs.is_off() { "off" } else { "on" }.into(),
        _ => format!("error: unknown request {request:?}"),
    }
}

/// The client side, used by the harness.
#[derive(Debug, Clone)]
pub struct Control {
    path: PathBuf,
}

impl Control {
    pub fn new(path: &Path) -> Control {
        Control {
            path: path.to_owned(),
        }
    }

    /// Sends one request and returns the answer line, or the I/O error.
    pub fn try_request(&self, request: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.path)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        writeln!(s, "{request}")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    /// Sends one request; panics unless it is answered.
    pub fn request(&self, request: &str) -> String {
        let a = self
            .try_request(request)
            .unwrap_or_else(|e| panic!("lazyfs control {}: {e}", self.path.display()));
        assert!(!a.starts_with("error"), "lazyfs: {a}");
        a
    }

    pub fn ops(&self) -> u64 {
        let a = self.request("ops");
        a.parse().unwrap_or_else(|_| panic!("lazyfs ops: {a:?}"))
    }

    pub fn cut_after(&self, n: u64) {
        self.request(&format!("cut-after {n}"));
    }

    /// Cuts the power; returns the dirty bytes lost.
    pub fn cut(&self) -> u64 {
        let a = self.request("cut");
        a.strip_prefix("lost ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("lazyfs cut: {a:?}"))
    }

    pub fn is_off(&self) -> bool {
        self.request("state") == "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LazyFs::new(dir.path()).unwrap();
        let sock = dir.path().join("ctl.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let f2 = fs.clone();
        std::thread::spawn(move || serve(l, f2));
        let c = Control::new(&sock);
        assert_eq!(c.ops(), 0);
        assert!(!c.is_off());
        c.cut_after(3);
        assert_eq!(
            c.try_request("bogus").unwrap(),
            "error: unknown request \"bogus\""
        );
        assert_eq!(c.cut(), 0);
        assert!(c.is_off() && fs.is_off());
    }
}
