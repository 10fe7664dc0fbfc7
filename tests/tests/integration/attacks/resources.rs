//! Resource attacks: idle sockets neither starve clients nor outlive the handshake timeout, the
//! connection limit, SIGTERM in the middle of transmission.

use std::io::Read;
use std::time::{Duration, Instant};

use cowd::nbd::proto::*;
use cowd_tests::files::read_at;
use cowd_tests::nbd::{Client, info_data, option_bytes};
use cowd_tests::{Daemon, pattern};

use super::{SIZE, healthy, qemu_reads, ready};

/// Connections that stop at every point of the start of a handshake (flags, option header,
/// GO data).
fn stalled_clients(d: &Daemon, n: usize) -> Vec<Client> {
    let mut stream = (CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    stream.extend(option_bytes(OPT_GO, &info_data(b"disk", &[])));
    (0..n)
        .map(|i| {
            let mut c = Client::greeted(d);
            c.send(&stream[..i % stream.len()]);
            c
        })
        .collect()
}

#[test]
fn idle_sockets_do_not_starve_clients() {
    let mut d = Daemon::with_disk(SIZE);
    let idle: Vec<Client> = (0..500).map(|_| Client::connect(&d)).collect();
    let stalled = stalled_clients(&d, 50);
    let t = Instant::now();
    healthy(&mut d);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "good client took {took:?}");
    qemu_reads(&d);
    drop((idle, stalled));
    healthy(&mut d);
}

#[test]
fn idle_sockets_are_closed_by_the_handshake_timeout() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--handshake-timeout", "1"])
        .start();
    let t = Instant::now();
    let mut idle: Vec<Client> = (0..500).map(|_| Client::connect(&d)).collect();
    let mut stalled = stalled_clients(&d, 30);
    healthy(&mut d);
    for c in &mut idle {
        c.greeting();
        c.expect_closed("idle socket");
    }
    for c in &mut stalled {
        c.expect_closed("stalled handshake");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "idle sockets closed after {took:?}"
    );
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn connection_limit() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--max-connections", "8", "--handshake-timeout", "1"])
        .start();
    let t = Instant::now();
    // Greeted means admitted.
    let mut idle: Vec<Client> = (0..8).map(|_| Client::greeted(&d)).collect();
    let mut ninth = Client::connect(&d);
    ninth.expect_closed("9th connection");
    assert!(d.running());
    for c in &mut idle {
        c.expect_closed("idle connection after the handshake timeout");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "idle connections closed after {took:?}"
    );
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn sigterm_mid_transmission() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(SIZE).unwrap();
    // Connections still open after the stop timeout would make cowd exit late, not hang.
    let mut d = Daemon::builder()
        .export_path("disk", &img)
        .args(&["--stop-timeout", "10"])
        .start();
    healthy(&mut d);
    qemu_reads(&d);

    let len = 64usize << 10;
    let block = |i: u64| pattern(3000 + i, len);
    let mut c = ready(&d, true);
    let mut batch = Vec::new();
    for i in 0..16 {
        batch.extend(c.encode(CMD_WRITE, 0, i, i * len as u64, len as u32, &block(i)));
    }
    c.send(&batch);
    let mut acked = Vec::new();
    for _ in 0..16 {
        let r = c.reply();
        assert_eq!(r.error, 0);
        acked.push(r.cookie);
    }
    // One more WRITE in flight, and a second client halfway through a WRITE payload.
    let w = c.encode(CMD_WRITE, 0, 16, 16 * len as u64, len as u32, &block(16));
    c.send(&w);
    let mut half = ready(&d, false);
    let mut h = half.encode(CMD_WRITE, 0, 1, SIZE - len as u64, len as u32, &[]);
    h.extend_from_slice(&block(99)[..len / 2]);
    half.send(&h);

    let t = Instant::now();
    // An open handle keeps the log readable after stop() removes the daemon's directory.
    let mut log_file = std::fs::File::open(d.dir().join("cowd.log")).unwrap();
    let status = d.stop();
    let took = t.elapsed();
    let mut log = String::new();
    log_file.read_to_string(&mut log).unwrap();
    assert!(status.success(), "cowd exited with {status}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}:\n{log}");
    while let Some(r) = c.reply_or_eof() {
        assert_eq!(r.error, 0, "in-flight WRITE during shutdown");
        acked.push(r.cookie);
    }
    half.expect_closed("half-sent WRITE at shutdown");
    for i in acked {
        let got = read_at(&img, i * len as u64, len);
        assert!(
            got == block(i),
            "acknowledged write {i} is not in the image"
        );
    }
}

/// A connection lets go of its slot before the client sees it close: with one slot, a client
/// that disconnected can connect again at once, every time (no retry, no sleep).
#[test]
fn a_closed_connection_frees_its_slot_before_the_client_sees_it_close() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--max-connections", "1"])
        .start();
    for i in 0..300 {
        let c = ready(&d, i % 2 == 0);
        c.disconnect();
    }
    healthy(&mut d);
}
