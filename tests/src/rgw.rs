//! Ceph's RADOS Gateway for tests: a real S3 server on a one-node Ceph cluster (Debian's
//! `ceph-mon`, `ceph-osd`, `radosgw`), in a temp directory on free loopback ports, killed on
//! drop.
//!
//! The cluster is as small as Ceph allows: one monitor, one OSD whose object store is in memory
//! (`memstore`: the tests' data is small, and a disk-backed BlueStore would need a device
//! file and more memory), pools of one replica, no authentication inside the cluster (the
//! gateway still checks S3 signatures), no manager. Nothing in /etc/ceph or /var/lib/ceph is
//! touched, so clusters of several tests run side by side. Ready once an S3 user exists and a
//! signed request answers; that takes about 1 s with the monitor committing each change at
//! once (`paxos propose interval`), 12–17 s with Ceph's default.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::Background;
use crate::{DaemonBuilder, free_port, require};

/// A new random UUID, from the kernel.
fn uuid() -> String {
    let u = fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
    u.trim().to_owned()
}

/// The S3 user every gateway has.
pub const ACCESS_KEY: &str = "cowdtest";
pub const SECRET_KEY: &str = "cowdtestsecret";

/// A running one-node Ceph cluster with its gateway.
#[derive(Debug)]
pub struct Rgw {
    /// Gateway, OSD, monitor: killed in this order on drop.
    daemons: Vec<Background>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Rgw {
    /// Starts the cluster and waits until S3 answers on loopback.
    pub fn start() -> Rgw {
        Rgw::start_on("127.0.0.1")
    }

    /// Starts the cluster with its gateway listening on `host` (an address of this
    /// namespace, such as a test network's [`server`](crate::netns::Net::server)); the
    /// cluster itself stays on loopback.
    pub fn start_on(host: &str) -> Rgw {
        for tool in [
            "ceph-mon",
            "ceph-osd",
            "ceph-authtool",
            "radosgw",
            "radosgw-admin",
            "monmaptool",
            "curl",
            "timeout",
        ] {
            require(tool);
        }
        // Ports come from `free_port`, which another test may be handed too before either
        // binds it: a cluster that finds its monitor is another's, or a daemon that exits, is
        // started again on new ports.
        let mut why = String::new();
        for _ in 0..3 {
            match Rgw::try_start(host) {
                Ok(rgw) => return rgw,
                Err(e) => {
                    eprintln!("rgw: starting again on new ports: {e}");
                    why = e;
                }
            }
        }
        panic!("the RADOS Gateway does not start: {why}");
    }

    fn try_start(host: &str) -> Result<Rgw, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let d = d.as_path();
        let (mon_port, s3_port) = (free_port(), free_port());
        for sub in ["run", "log", "mon.a", "osd.0", "rgw"] {
            fs::create_dir(d.join(sub)).unwrap();
        }
        let fsid = uuid();
        let conf = d.join("ceph.conf");
        fs::write(&conf, config(d, &fsid, mon_port, host, s3_port)).unwrap();
        let mut rgw = Rgw {
            daemons: Vec::new(),
            endpoint: format!("http://{host}:{s3_port}"),
            dir,
        };
        let ceph = |tool: &str| {
            let mut c = Command::new(tool);
            c.arg("-c").arg(&conf);
            c
        };
        rgw.setup(
            Command::new("ceph-authtool")
                .arg("--create-keyring")
                .arg(d.join("keyring"))
                .args(["--gen-key", "-n", "mon.", "--cap", "mon", "allow *"]),
        )?;
        rgw.setup(
            ceph("monmaptool")
                .args(["--create", "--addv", "a"])
                .arg(format!("[v1:127.0.0.1:{mon_port}]"))
                .args(["--fsid", &fsid])
                .arg(d.join("monmap")),
        )?;
        rgw.setup(
            ceph("ceph-mon")
                .args(["--mkfs", "-i", "a", "--monmap"])
                .arg(d.join("monmap")),
        )?;
        rgw.spawn(ceph("ceph-mon").args(["-f", "-i", "a"]));
        let answered = rgw.setup(ceph("ceph").args(["--connect-timeout", "30", "fsid"]))?;
        if answered.trim() != fsid {
            return Err(format!(
                "the monitor on port {mon_port} is another cluster's ({answered})"
            ));
        }
        // The OSD registered with the uuid it is made with (one registered without kept
        // failing to come up about one start in six).
        let osd_uuid = &uuid();
        let id =
            rgw.setup(ceph("ceph").args(["--connect-timeout", "30", "osd", "create", osd_uuid]))?;
        if id.trim() != "0" {
            return Err(format!("osd create answered {id:?}, not 0"));
        }
        rgw.setup(ceph("ceph-osd").args(["--mkfs", "-i", "0", "--osd-uuid", osd_uuid]))?;
        rgw.spawn(ceph("ceph-osd").args(["-f", "-i", "0"]));
        // The OSD up before the gateway needs it (one that joined nothing never will be). At
        // times its first command to the monitor is refused ("wrong fsid") and it exits: it is
        // started again, as a service manager would.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut osd_starts = 1;
        loop {
            // The OSD is the daemon spawned last: the first.
            if osd_starts < 5 && rgw.daemons[0].0.try_wait().unwrap().is_some() {
                eprintln!("rgw: the OSD exited at start; starting it again");
                rgw.daemons.remove(0);
                rgw.spawn(ceph("ceph-osd").args(["-f", "-i", "0"]));
                osd_starts += 1;
            }
            rgw.exited()?;
            let stat = rgw.setup(ceph("ceph").args(["--connect-timeout", "30", "osd", "stat"]))?;
            if stat.contains("1 up") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the OSD is not up: {stat}\n{}", rgw.logs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        rgw.spawn(ceph("radosgw").args(["-f", "-n", "client.rgw"]));
        rgw.setup(ceph("radosgw-admin").args([
            "user",
            "create",
            "--uid",
            "cowd",
            "--display-name",
            "cowd tests",
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ]))?;
        rgw.wait_ready()?;
        Ok(rgw)
    }

    /// Kills the gateway (SIGKILL); the cluster keeps its data.
    pub fn kill_gateway(&mut self) {
        let gateway = self.daemons.remove(0);
        drop(gateway);
    }

    /// Starts the gateway again (after [`kill_gateway`](Rgw::kill_gateway)) and waits until it
    /// answers.
    pub fn restart_gateway(&mut self) {
        let conf = self.dir.path().join("ceph.conf");
        self.spawn(
            Command::new("radosgw")
                .arg("-c")
                .arg(&conf)
                .args(["-f", "-n", "client.rgw"]),
        );
        if let Err(e) = self.wait_ready() {
            panic!("{e}");
        }
    }

    /// Runs a set-up step; its standard output, or why it failed, with the logs. Every step
    /// is bounded (coreutils' `timeout`): a tool waiting for a cluster that never becomes
    /// healthy must fail the test, not hang it.
    fn setup(&self, cmd: &mut Command) -> Result<String, String> {
        let out = Command::new("timeout")
            .arg("120")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::null())
            .output()
            .expect("run a ceph tool");
        if !out.status.success() {
            return Err(format!(
                "{cmd:?}: {}\n{}{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn spawn(&mut self, cmd: &mut Command) {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a ceph daemon");
        self.daemons.insert(0, Background(child));
    }

    /// `b` reaching S3 at `endpoint` (this gateway, or a proxy in front of it) with the
    /// gateway's credentials and region.
    pub fn client(&self, b: DaemonBuilder, endpoint: &str) -> DaemonBuilder {
        let mut b = b.args(&["--s3-endpoint", endpoint]);
        for (k, v) in self.env() {
            if k != "AWS_ENDPOINT_URL" {
                b = b.env(k, &v);
            }
        }
        b
    }

    /// Fails when a daemon of the cluster has exited.
    fn exited(&mut self) -> Result<(), String> {
        match self
            .daemons
            .iter_mut()
            .find_map(|b| b.0.try_wait().unwrap())
        {
            Some(st) => Err(format!("a ceph daemon exited: {st}\n{}", self.logs())),
            None => Ok(()),
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            self.exited()?;
            // A signed request that needs the user and the gateway's pools.
            let out = self.s3(&["-o", "/dev/null", "-w", "%{http_code}"], "/");
            if out == "200" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the RADOS Gateway does not answer (HTTP {out})\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A signed S3 request with curl (`--aws-sigv4`); its standard output.
    fn s3(&self, args: &[&str], path: &str) -> String {
        let out = self
            .curl()
            .args(args)
            .arg(format!("{}{path}", self.endpoint))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// curl signing as the S3 user; each request bounded to 20 s (a gateway still waiting for
    /// its cluster accepts connections and may not answer).
    fn curl(&self) -> Command {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "--max-time",
            "20",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
        ])
        .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
        c
    }

    /// Creates bucket `name`.
    pub fn create_bucket(&self, name: &str) {
        let code = self.s3(
            &["-X", "PUT", "-o", "/dev/null", "-w", "%{http_code}"],
            &format!("/{name}"),
        );
        assert_eq!(code, "200", "create bucket {name}\n{}", self.logs());
    }

    /// The keys under `prefix` of bucket `bucket` (the listing's first 1000).
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let prefix = prefix.replace('/', "%2F");
        let xml = self.s3(&[], &format!("/{bucket}?list-type=2&prefix={prefix}"));
        assert!(xml.contains("<ListBucketResult"), "list {bucket}: {xml}");
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    /// The bytes of object `key`.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let out = self
            .curl()
            .arg("-f")
            .arg(format!("{}/{bucket}/{key}", self.endpoint))
            .output()
            .expect("run curl");
        assert!(out.status.success(), "GET {bucket}/{key}: {}", out.status);
        out.stdout
    }

    /// Replaces object `key` with `bytes`.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let file = self.dir.path().join("put.tmp");
        fs::write(&file, bytes).unwrap();
        let code = self.s3(
            &[
                "-X",
                "PUT",
                "--data-binary",
                &format!("@{}", file.display()),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ],
            &format!("/{bucket}/{key}"),
        );
        assert_eq!(code, "200", "PUT {bucket}/{key}");
    }

    /// The environment a cowd daemon needs to reach this gateway.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    /// The tails of the daemons' logs.
    /// How many `method` requests for keys starting with `bucket/prefix` the gateway has
    /// answered so far (from its access log).
    pub fn requests(&self, method: &str, bucket: &str, prefix: &str) -> usize {
        let log =
            fs::read_to_string(self.dir.path().join("log/client.rgw.log")).unwrap_or_default();
        let needle = format!("\"{method} /{bucket}/{prefix}");
        log.lines().filter(|l| l.contains(&needle)).count()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["mon.a", "osd.0", "client.rgw"] {
            let p: PathBuf = self.dir.path().join("log").join(format!("{name}.log"));
            let text = fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- {name}.log (last lines)\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// The cluster's configuration: everything under `d`, nothing shared with a system cluster.
fn config(d: &Path, fsid: &str, mon_port: u16, s3_host: &str, s3_port: u16) -> String {
    let d = d.display();
    format!(
        "[global]
fsid = {fsid}
mon host = v1:127.0.0.1:{mon_port}
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 2000
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 8589934592
mon data avail warn = 1
mon data avail crit = 0
# A one-monitor cluster commits each map change at once, not after the default 1 s wait:
# setting up pools and the gateway takes ~1 s instead of ~15 s.
paxos propose interval = 0.01
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
pid file = {d}/run/$name.pid
mon data = {d}/mon.$id
osd data = {d}/osd.$id
keyring = {d}/keyring
[client.rgw]
# Without tcp_nodelay the gateway writes a response's header and body apart and Nagle holds
# the body until the header is acknowledged: over a veth, where acknowledgements are delayed,
# every request then takes 40 ms.
rgw frontends = beast endpoint={s3_host}:{s3_port} tcp_nodelay=1
rgw data = {d}/rgw
"
    )
}
