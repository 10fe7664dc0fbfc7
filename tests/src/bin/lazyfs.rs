//! `lazyfs BACKING MOUNTPOINT --control SOCKET`: mounts the power-loss test filesystem
//! (`cowd_tests::lazyfs`) and serves it until unmounted (`fusermount3 -u MOUNTPOINT`).
//! Mounting uses fusermount3 (Debian's fuse3); no libfuse is linked.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use cowd_tests::lazyfs::control;
use cowd_tests::lazyfs::fs::LazyFs;

fn usage() -> ! {
    eprintln!("usage: lazyfs BACKING MOUNTPOINT --control SOCKET");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backing, mountpoint, flag, socket] = &args[..] else {
        usage()
    };
    if flag != "--control" {
        usage()
    }
    let fs = LazyFs::new(&PathBuf::from(backing)).unwrap_or_else(|e| {
        eprintln!("lazyfs: backing directory {backing}: {e}");
        std::process::exit(1)
    });
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).unwrap_or_else(|e| {
        eprintln!("lazyfs: control socket {socket}: {e}");
        std::process::exit(1)
    });
    let shared = fs.clone();
    std::thread::spawn(move || control::serve(listener, shared));
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("lazyfs".into()),
        fuser::MountOption::Subtype("lazyfs".into()),
    ];
    config.n_threads = Some(4);
    if let Err(e) = fuser::mount(fs, mountpoint, &config) {
        eprintln!("lazyfs: {mountpoint}: {e}");
        std::process::exit(1)
    }
}
