//! etcd for tests: one member (Debian's etcd-server) on a temp data directory and free ports,
//! killed on drop.
//!
//! It listens for clients on 127.0.0.1 and, when asked, on one more address (a test network's
//! server address, see [`crate::netns`]); its peer port stays on loopback. Ready once a read
//! of the job table answers.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cowd::jobs::etcd::EtcdTable;

use crate::cli::Background;
use crate::{free_port, require};

/// A running etcd.
#[derive(Debug)]
pub struct Etcd {
    process: Background,
    /// `http://ADDRESS:PORT`: the extra address if one was given, else loopback.
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd listening on loopback (and on `also`, an address of this machine) and
    /// waits until it answers.
    pub fn start(also: Option<&str>) -> Etcd {
        require("etcd");
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let mut listen = format!("http://127.0.0.1:{client}");
        if let Some(a) = also {
            listen.push_str(&format!(",http://{a}:{client}"));
        }
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = dir.path().join("etcd.log");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={listen}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn etcd");
        let etcd = Etcd {
            process: Background(child),
            endpoint: format!("http://{}:{client}", also.unwrap_or("127.0.0.1")),
            log,
            _dir: dir,
        };
        etcd.wait_ready();
        etcd
    }

    fn wait_ready(&self) {
        let table = self.table("/ready/");
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = table.live_movers() {
            assert!(
                Instant::now() < deadline,
                "etcd does not answer: {e}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The job table under `prefix`.
    pub fn table(&self, prefix: &str) -> EtcdTable {
        EtcdTable::new(&self.endpoint, prefix).expect("a valid endpoint and prefix")
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }
}
