//! Two exports with the same data are stored once.

use std::fs::File;
use std::os::unix::fs::FileExt;

use cowd::repo::Mode;
use cowd_tests::cli::start;
use cowd_tests::files::{assert_same_file, fill};
use cowd_tests::repo::{Ctl, chunk_files, du, figures, index_digests};
use cowd_tests::{Daemon, MIB};

use super::CHUNK;

#[test]
fn two_exports_with_the_same_data_are_stored_once() {
    let size = 128 * MIB;
    let d = start(
        Daemon::builder()
            .export("a", size)
            .export("b", size)
            .export("c", size),
    );
    let dir = d.dir().to_owned();
    // 40 MiB of random data, 24 MiB of zeroes, 32 MiB of compressible text, 32 MiB random.
    let text_data: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
        .iter()
        .copied()
        .cycle()
        .take(32 * MIB as usize)
        .collect();
    for name in ["a", "b"] {
        let image = d.image(name).to_owned();
        fill(&image, 0, 40 * MIB, 6);
        File::options()
            .write(true)
            .open(&image)
            .unwrap()
            .write_all_at(&text_data, 64 * MIB)
            .unwrap();
        fill(&image, 96 * MIB, 32 * MIB, 7);
    }
    assert_same_file(d.image("a"), d.image("b"));
    let repo = dir.join("repo");
    let ctl = Ctl::new(&d.control, &repo);
    ctl.init(None);
    let ba = ctl.backup("a", &["--no-quiesce"]).id;
    let after_a = du(&repo.join("chunks"));
    let files_a = chunk_files(&repo);
    let bb = ctl.backup("b", &["--no-quiesce"]).id;
    let after_b = du(&repo.join("chunks"));
    let (ma, mb) = (ctl.manifest(&ba), ctl.manifest(&bb));
    println!(
        "{}\n{}\ndu chunks: {after_a} bytes after a, {after_b} after b",
        figures(&ma),
        figures(&mb)
    );
    let nonzero = mb.counts.chunks_total - mb.counts.chunks_zero;
    assert_eq!((mb.mode, mb.counts.chunks_zero), (Mode::Full, 6));
    assert_eq!(mb.counts.chunks_new, 0, "{}", figures(&mb));
    assert_eq!(mb.counts.chunks_reused, nonzero, "{}", figures(&mb));
    assert!(mb.counts.bytes_new_stored <= 4096, "{}", figures(&mb));
    assert_eq!(chunk_files(&repo), files_a);
    assert_eq!(after_b, after_a);
    // One copy: the non-zero data, the text compressed.
    assert!(
        (72 * MIB..80 * MIB).contains(&after_a),
        "{after_a} bytes of chunks for one copy of 72 MiB of random data and 32 of text"
    );
    assert_eq!(index_digests(&repo, &ba), index_digests(&repo, &bb));

    // A third export with the same data shifted by one chunk: chunk-aligned dedup still finds
    // every chunk.
    let image_c = d.image("c").to_owned();
    {
        let (fa, fc) = (
            File::open(d.image("a")).unwrap(),
            File::options().write(true).open(&image_c).unwrap(),
        );
        let mut buf = vec![0u8; CHUNK as usize];
        for at in (0..size - CHUNK).step_by(CHUNK as usize) {
            fa.read_exact_at(&mut buf, at).unwrap();
            fc.write_all_at(&buf, at + CHUNK).unwrap();
        }
    }
    let bc = ctl.backup("c", &["--no-quiesce"]).id;
    let mc = ctl.manifest(&bc);
    println!("{}", figures(&mc));
    assert_eq!(mc.counts.chunks_new, 0, "{}", figures(&mc));
    assert_eq!(du(&repo.join("chunks")), after_a);
    let r = dir.join("restored-b.img");
    ctl.restore(&bb, &r);
    assert_same_file(&r, d.image("b"));
}
