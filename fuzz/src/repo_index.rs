//! The `repo_index` target: a backup's index (`Index::decode` / `encode`) and a chunk's patch
//! (`Patch::decode` / `encode` / `apply` / `merge`), the two repository formats cowd parses.
//!
//! Input: a mode byte, then a candidate. Mode 0 decodes the bytes as an index as they are; mode
//! 1 first makes the index's trailing SHA-256 good, so that the checks behind it (magic,
//! version, sizes, count, the patch table's order and bounds) see arbitrary values; any other
//! mode decodes a patch for a chunk of `mode * 509` bytes. Decoding never panics; what is
//! accepted encodes back to the same bytes; an accepted patch applies within its chunk, and
//! merged with itself is itself.

use cowd::repo::{Digest, DigestOf, Index, Patch};

/// `repo_index` fuzz input: a mode byte, then a candidate index or patch.
pub fn fuzz_repo_index(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    match mode {
        0 => check_index(bytes),
        1 => {
            let mut b = bytes.to_vec();
            if let Some(body) = b.len().checked_sub(32) {
                let sum = Digest::of(&b[..body]);
                b[body..].copy_from_slice(&sum.0);
            }
            check_index(&b);
        }
        _ => check_patch(bytes, usize::from(mode) * 509),
    }
}

/// [`Index::decode`] never panics; an accepted index is consistent and re-encodes to `bytes`.
pub fn check_index(bytes: &[u8]) {
    let Ok(index) = Index::decode(bytes) else {
        return;
    };
    assert!(index.is_consistent());
    assert_eq!(index.encode(), bytes, "accepted index does not re-encode");
    assert!(index.patches.keys().all(|&i| i < index.digests.len()));
    // Every object it names, with a length: no panic on any index.
    let _ = index.objects().count();
}

/// [`Patch::decode`] never panics; an accepted patch re-encodes to `bytes`, applies to a
/// chunk of `chunk_len` bytes, and merged with itself is unchanged.
pub fn check_patch(bytes: &[u8], chunk_len: usize) {
    let Ok(patch) = Patch::decode(bytes, chunk_len) else {
        return;
    };
    assert_eq!(patch.encode(), bytes, "accepted patch does not re-encode");
    assert!(patch.covered() <= chunk_len);
    let mut chunk = vec![0u8; chunk_len];
    patch.apply(&mut chunk);
    assert_eq!(Patch::merge(&patch, &patch), patch);
}

/// Seeds: an index without and with patches, and a patch.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use cowd::repo::PatchRef;
    let with = |mode: u8, b: Vec<u8>| [vec![mode], b].concat();
    let mut index = Index::new(65536, 3 * 65536 + 100);
    index.digests[1] = Digest::of(b"one");
    let plain = index.encode();
    index.patches.insert(
        2,
        PatchRef {
            digest: Digest::of(b"patch"),
            len: 40,
        },
    );
    let patched = index.encode();
    let chunk: Vec<u8> = (0..1018u32).map(|i| i as u8).collect();
    let patch = Patch::build(1018, &[(10, 20), (500, 700)], |s, b: &mut [u8]| {
        b.copy_from_slice(&chunk[s..s + b.len()]);
        Ok::<_, ()>(())
    })
    .unwrap()
    .encode();
    vec![
        ("repo_index", "index", with(0, plain)),
        ("repo_index", "patched", with(1, patched)),
        ("repo_index", "patch", with(2, patch)),
    ]
}
