//! `verify` finds a flipped byte and names exactly the backups it breaks.

use std::collections::BTreeSet;
use std::fs::{self};

use cowd_tests::cli::{failed, ok, start, text};
use cowd_tests::files::fill;
use cowd_tests::repo::{Ctl, chunk_path, index_digests, stored};
use cowd_tests::{Daemon, MIB, nbd_writes};

#[test]
fn verify_finds_a_flipped_byte_and_names_the_backups() {
    let size = 64 * MIB;
    let d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    fill(d.image("disk"), 0, size, 7);
    let repo = dir.join("repo");
    let ctl = Ctl::new(&d.control, &repo);
    ctl.init(None);
    let b1 = ctl.backup("disk", &["--no-quiesce"]).id;
    nbd_writes(&d.uri("disk"), &[(0x77, 13 * MIB, MIB)]);
    let b2 = ctl.backup("disk", &["--no-quiesce"]).id;
    nbd_writes(&d.uri("disk"), &[(0x88, 37 * MIB, MIB)]);
    let b3 = ctl.backup("disk", &["--no-quiesce"]).id;
    let (i1, i2, i3) = (
        stored(&index_digests(&repo, &b1)),
        stored(&index_digests(&repo, &b2)),
        stored(&index_digests(&repo, &b3)),
    );
    // Chunk 3 changed for b2 and is inherited by b3.
    let shared: Vec<&String> = i2.intersection(&i3).filter(|c| !i1.contains(*c)).collect();
    assert_eq!(shared.len(), 1, "{shared:?}");
    let digest = shared[0].clone();
    assert_eq!(index_digests(&repo, &b3)[3], digest);
    let (report, code) = ctl.verify_all();
    assert!(report.is_ok() && code == Some(0), "{report:?}");

    let path = chunk_path(&repo, &digest);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let (report, code) = ctl.verify_all();
    println!("verify after the flip: {report:?}");
    assert_eq!(code, Some(1));
    assert!(report.missing.is_empty() && report.bad_indexes.is_empty());
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    let bad = &report.corrupt[0];
    assert_eq!(bad.digest.to_string(), digest);
    assert_eq!(bad.path, path);
    let mut names = bad.backups.clone();
    names.sort();
    let mut want = vec![b2.clone(), b3.clone()];
    want.sort();
    assert_eq!(names, want, "{report:?}");
    // The table names them too; b1 alone is intact.
    let o = ctl.in_repo(&["verify"]);
    let line = failed(&o, 1);
    assert!(line.contains("1 corrupt chunk"), "{line}");
    let out = text(&o.stdout);
    assert!(out.contains(&format!("corrupt chunk {digest}\n")), "{out}");
    let breaks: BTreeSet<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("  breaks:  "))
        .unwrap_or_else(|| panic!("{out}"))
        .split(", ")
        .collect();
    assert_eq!(breaks, BTreeSet::from([b2.as_str(), b3.as_str()]), "{out}");
    ok(&ctl.in_repo(&["verify", &b1]));
    let line = failed(&ctl.in_repo(&["verify", &b3]), 1);
    assert!(line.contains("1 corrupt chunk"), "{line}");
}
