//! `rgw BUCKET`: starts the tests' one-node Ceph RADOS Gateway (`cowd_tests::rgw`) for a
//! benchmark or by hand, creates BUCKET, prints the environment a cowd daemon needs to reach it
//! (`AWS_ENDPOINT_URL=…` and the credentials, one `KEY=value` a line, then `ready`), and keeps
//! the cluster running until its standard input closes; then it stops the cluster.

use std::io::{Read, Write};

use cowd_tests::rgw::Rgw;

fn main() {
    let Some(bucket) = std::env::args().nth(1) else {
        eprintln!("usage: rgw BUCKET  (runs until stdin closes)");
        std::process::exit(2);
    };
    let rgw = Rgw::start();
    rgw.create_bucket(&bucket);
    let mut out = std::io::stdout().lock();
    for (k, v) in rgw.env() {
        writeln!(out, "{k}={v}").unwrap();
    }
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    drop(out);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(rgw);
}
