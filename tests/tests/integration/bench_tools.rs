//! The benchmarks' own tools: `codec` times only codecs that round-trip (the AES-GCM seals
//! open again), skips chunks of zeroes as the repository does, and refuses bad usage.

use std::process::Command;

use cowd_tests::bin;

#[test]
fn codec_times_real_chunks_and_refuses_what_it_cannot_measure() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = 64 << 10;
    // A chunk of text, one of random bytes, one of zeroes (not stored by cowd: not measured).
    let mut data: Vec<u8> = (0..chunk)
        .map(|i| b"cowd keeps a roaring bitmap of blocks not yet backed up. "[i % 57])
        .collect();
    let mut rng = fastrand::Rng::with_seed(9);
    data.extend((0..chunk).map(|_| rng.u8(..)));
    data.extend(std::iter::repeat_n(0u8, chunk));
    let sample = dir.path().join("sample");
    std::fs::write(&sample, &data).unwrap();
    let run = |args: &[&str]| Command::new(bin("codec")).args(args).output().unwrap();
    let path = sample.to_str().unwrap();
    let o = run(&[
        path,
        "--chunk-size",
        "65536",
        "--sample-mib",
        "1",
        "--passes",
        "1",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(err.contains("2 chunks of 65536 bytes"), "{err}");
    for stage in [
        "SHA-256",
        "BLAKE3 keyed",
        "zstd -3",
        "zstd 1",
        "zstd 3",
        "LZ4",
        "AES-256-GCM seal (ring)",
        "AES-256-GCM seal (aes-gcm)",
    ] {
        assert!(
            out.contains(&format!("| {stage}")),
            "{stage} missing:\n{out}"
        );
    }
    // Half text, half random: every compressor stores between half and all of it.
    let zstd1 = out.lines().find(|l| l.starts_with("| zstd 1 ")).unwrap();
    let ratio: f64 = zstd1.split('|').nth(3).unwrap().trim().parse().unwrap();
    assert!(ratio > 0.45 && ratio < 0.55, "{zstd1}");

    let zeroes = dir.path().join("zeroes");
    std::fs::write(&zeroes, vec![0u8; chunk]).unwrap();
    let o = run(&[zeroes.to_str().unwrap(), "--chunk-size", "65536"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no chunk that is not all zero"));
    for bad in [
        &[][..],
        &[path, "--passes", "0"],
        &[path, "--chunk-size", "big"],
    ] {
        assert_eq!(run(bad).status.code(), Some(64), "{bad:?}");
    }
}
