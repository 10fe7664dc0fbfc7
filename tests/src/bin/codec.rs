//! `codec`: what hashing and compressing a repository's chunks cost on this CPU, one thread,
//! for choosing the second repository format (issue 10: hash, keyed naming, compression).
//!
//! ```text
//! codec FILE [--chunk-size BYTES] [--sample-mib N] [--passes N]
//! ```
//!
//! Takes up to `--sample-mib` MiB of FILE's chunks that are not all zero (cowd never stores
//! those), spread evenly over the file, into memory; then runs each candidate over all of them
//! `--passes` times and keeps the fastest pass (the others are the machine's noise). Prints a
//! markdown table: MiB/s of plain data one thread processes, and for compressors the stored
//! size over the plain size and the speed of decompressing. Every compressed chunk is
//! decompressed and compared, every hash computed twice and compared: a wrong codec is an
//! error, not a fast row.
//!
//! Candidates: SHA-256 (`sha2`, the first format's hash; it uses the CPU's SHA extensions when
//! present), BLAKE3 plain and keyed (`blake3`, one thread: keyed naming costs nothing more),
//! zstd at levels -3, 1 and 3 (`zstd`, the first format's compressor at level 1), LZ4
//! (`lz4_flex`), and AES-256-GCM sealing as an encrypted repository does it (`ring`, what cowd
//! uses) beside RustCrypto's `aes-gcm` (a random nonce per chunk, 52 bytes of associated data;
//! the "stored / plain" column then shows the seal's overhead, "decompress" the opening).

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sha2::Digest;

const USAGE: &str = "usage: codec FILE [--chunk-size BYTES] [--sample-mib N] [--passes N]";

struct Args {
    file: String,
    chunk: usize,
    sample_mib: u64,
    passes: u32,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        file: String::new(),
        chunk: 4 << 20,
        sample_mib: 256,
        passes: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        match arg.as_str() {
            "--chunk-size" => a.chunk = value("--chunk-size")? as usize,
            "--sample-mib" => a.sample_mib = value("--sample-mib")?,
            "--passes" => a.passes = value("--passes")? as u32,
            f if !f.starts_with("--") && a.file.is_empty() => a.file = f.to_owned(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.file.is_empty() || a.chunk == 0 || a.sample_mib == 0 || a.passes == 0 {
        return Err("a file, and sizes and counts above 0".into());
    }
    Ok(a)
}

/// Up to `sample_mib` MiB of non-zero chunks spread evenly over the file.
fn sample(a: &Args) -> std::io::Result<Vec<Vec<u8>>> {
    let f = File::open(&a.file)?;
    let size = f.metadata()?.len();
    let chunks = size / a.chunk as u64;
    let want = ((a.sample_mib << 20) / a.chunk as u64).max(1);
    let step = (chunks / want).max(1);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chunks && (out.len() as u64) < want {
        let mut buf = vec![0u8; a.chunk];
        f.read_exact_at(&mut buf, i * a.chunk as u64)?;
        if buf.iter().any(|&b| b != 0) {
            out.push(buf);
        }
        i += step;
    }
    Ok(out)
}

/// The fastest of `passes` runs of `f` over every chunk.
fn fastest(passes: u32, chunks: &[Vec<u8>], mut f: impl FnMut(&[u8])) -> Duration {
    (0..passes)
        .map(|_| {
            let start = Instant::now();
            for c in chunks {
                f(c);
            }
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64().max(1e-9)
}

struct Row {
    name: &'static str,
    speed: f64,
    /// Stored / plain, and decompression MiB/s (compressors only).
    compressed: Option<(f64, f64)>,
}

fn hash_row(
    name: &'static str,
    passes: u32,
    chunks: &[Vec<u8>],
    total: u64,
    hash: impl Fn(&[u8]) -> [u8; 32],
) -> Result<Row, String> {
    for c in chunks.iter().take(4) {
        if hash(c) != hash(c) {
            return Err(format!("{name} is not deterministic"));
        }
    }
    let d = fastest(passes, chunks, |c| {
        black_box(hash(black_box(c)));
    });
    Ok(Row {
        name,
        speed: mib_s(total, d),
        compressed: None,
    })
}

fn compress_row(
    name: &'static str,
    passes: u32,
    chunks: &[Vec<u8>],
    total: u64,
    compress: impl Fn(&[u8]) -> Vec<u8>,
    decompress: impl Fn(&[u8], usize) -> Vec<u8>,
) -> Result<Row, String> {
    let stored: Vec<Vec<u8>> = chunks.iter().map(|c| compress(c)).collect();
    for (c, s) in chunks.iter().zip(&stored) {
        if decompress(s, c.len()) != *c {
            return Err(format!("{name}: a chunk does not decompress to itself"));
        }
    }
    let stored_bytes: u64 = stored.iter().map(|s| s.len() as u64).sum();
    let d = fastest(passes, chunks, |c| {
        black_box(compress(black_box(c)));
    });
    let plain_len = chunks.first().map_or(0, Vec::len);
    let back = fastest(passes, &stored, |s| {
        black_box(decompress(black_box(s), plain_len));
    });
    Ok(Row {
        name,
        speed: mib_s(total, d),
        compressed: Some((stored_bytes as f64 / total as f64, mib_s(total, back))),
    })
}

fn zstd_row(
    name: &'static str,
    level: i32,
    passes: u32,
    chunks: &[Vec<u8>],
    total: u64,
) -> Result<Row, String> {
    let c = |b: &[u8]| zstd::bulk::compress(b, level).expect("zstd compresses");
    let d = |b: &[u8], n: usize| zstd::bulk::decompress(b, n).expect("zstd decompresses");
    compress_row(name, passes, chunks, total, c, d)
}

/// Seals and opens with ring's AES-256-GCM, `nonce ‖ ciphertext ‖ tag`, as `cowd::repo` does.
fn ring_row(passes: u32, chunks: &[Vec<u8>], total: u64) -> Result<Row, String> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9u8; 32]).expect("a key"));
    let seal = |c: &[u8]| {
        let nonce: [u8; 12] = cowd::repo::random_bytes();
        let mut out = nonce.to_vec();
        out.extend_from_slice(c);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([0u8; 52]),
                &mut out[12..],
            )
            .expect("seals");
        out.extend_from_slice(tag.as_ref());
        out
    };
    let open = |s: &[u8], _: usize| {
        let nonce: [u8; 12] = s[..12].try_into().expect("a nonce");
        let mut body = s[12..].to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([0u8; 52]),
                &mut body,
            )
            .expect("opens")
            .len();
        body.truncate(plain);
        body
    };
    compress_row("AES-256-GCM seal (ring)", passes, chunks, total, seal, open)
}

/// The same with RustCrypto's `aes-gcm`.
fn rustcrypto_row(passes: u32, chunks: &[Vec<u8>], total: u64) -> Result<Row, String> {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    let key = aes_gcm::Aes256Gcm::new(&[9u8; 32].into());
    let seal = |c: &[u8]| {
        let nonce: [u8; 12] = cowd::repo::random_bytes();
        let mut out = nonce.to_vec();
        out.extend_from_slice(c);
        let tag = key
            .encrypt_in_place_detached((&nonce).into(), &[0u8; 52], &mut out[12..])
            .expect("seals");
        out.extend_from_slice(&tag);
        out
    };
    let open = |s: &[u8], _: usize| {
        let (body, tag) = s[12..].split_at(s.len() - 12 - 16);
        let mut body = body.to_vec();
        key.decrypt_in_place_detached(s[..12].into(), &[0u8; 52], &mut body, tag.into())
            .expect("opens");
        body
    };
    compress_row(
        "AES-256-GCM seal (aes-gcm)",
        passes,
        chunks,
        total,
        seal,
        open,
    )
}

fn run(a: &Args) -> Result<Vec<Row>, String> {
    let chunks = sample(a).map_err(|e| format!("{}: {e}", a.file))?;
    if chunks.is_empty() {
        return Err(format!("{}: no chunk that is not all zero", a.file));
    }
    let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let p = a.passes;
    eprintln!(
        "codec: {} chunks of {} bytes ({} MiB) from {}",
        chunks.len(),
        a.chunk,
        total >> 20,
        a.file
    );
    let key = [7u8; 32];
    Ok(vec![
        hash_row("SHA-256 (sha2)", p, &chunks, total, |c| {
            sha2::Sha256::digest(c).into()
        })?,
        hash_row("BLAKE3 (blake3, one thread)", p, &chunks, total, |c| {
            *blake3::hash(c).as_bytes()
        })?,
        hash_row("BLAKE3 keyed", p, &chunks, total, |c| {
            *blake3::keyed_hash(&key, c).as_bytes()
        })?,
        zstd_row("zstd -3 (fast)", -3, p, &chunks, total)?,
        zstd_row("zstd 1", 1, p, &chunks, total)?,
        zstd_row("zstd 3", 3, p, &chunks, total)?,
        compress_row(
            "LZ4 (lz4_flex)",
            p,
            &chunks,
            total,
            lz4_flex::block::compress,
            |s, n| lz4_flex::block::decompress(s, n).expect("lz4 decompresses"),
        )?,
        ring_row(p, &chunks, total)?,
        rustcrypto_row(p, &chunks, total)?,
    ])
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("codec: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let rows = match run(&a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("codec: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("| stage | MiB/s, one thread | stored / plain | decompress MiB/s |");
    println!("|---|---:|---:|---:|");
    for r in rows {
        let (ratio, back) = match r.compressed {
            Some((ratio, back)) => (format!("{ratio:.3}"), format!("{back:.0}")),
            None => ("–".into(), "–".into()),
        };
        println!("| {} | {:.0} | {ratio} | {back} |", r.name, r.speed);
    }
    ExitCode::SUCCESS
}
