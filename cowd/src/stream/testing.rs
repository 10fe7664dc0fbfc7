//! Shared fixtures of the stream tests: source data, stream descriptions, media in a
//! temporary directory, and a stream written and read back whole.

use std::path::Path;

use super::medium::MediumSpec;
use super::reader::{ReadError, StreamReader};
use super::writer::{StreamInfo, StreamWriter, WriteError};
use super::{RecordKind, StreamSummary, record};

/// The NAA designator the test streams name as their source.
pub const NAA: [u8; 16] = [
    0x60, 0x01, 0x40, 0x5f, 0xa0, 0xb1, 0xc2, 0xd3, 0, 0, 0, 0, 0, 0, 0x12, 0x34,
];

/// `len` bytes of reproducible noise.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// A stream of 512-byte blocks in records of `record_size`.
pub fn info(record_size: u32) -> StreamInfo {
    StreamInfo {
        record_size,
        label: "test stream".into(),
        source_length: Some(64 << 20),
        ..StreamInfo::new(&NAA, 512)
    }
}

/// `n` File media `m0.stream`, `m1.stream`, … in `dir`, each of `capacity` bytes if given.
pub fn files(dir: &Path, n: usize, capacity: Option<u64>) -> Vec<MediumSpec> {
    (0..n)
        .map(|i| {
            let spec = MediumSpec::new(dir.join(format!("m{i}.stream")));
            match capacity {
                Some(c) => spec.with_capacity(c),
                None => spec,
            }
        })
        .collect()
}

/// Writes `data` as the source from offset 0, in writes of varying whole-block sizes.
pub fn write(
    media: &[MediumSpec],
    info: StreamInfo,
    data: &[u8],
) -> Result<StreamSummary, WriteError> {
    let mut w = StreamWriter::new(media.to_vec(), info)?;
    write_into(&mut w, data)?;
    w.finish()
}

/// Feeds `data` to `w` from offset 0 in writes of 1, 2, 3, … 17 blocks.
pub fn write_into(w: &mut StreamWriter, data: &[u8]) -> Result<(), WriteError> {
    let mut at = 0;
    let mut blocks = 1;
    while at < data.len() {
        let n = (blocks * 512).min(data.len() - at);
        w.write_blocks(at as u64, &data[at..at + n])?;
        at += n;
        blocks = blocks % 17 + 1;
    }
    Ok(())
}

/// Reads a stream back whole: the Data bytes, placed at their offsets (inline bytes passed
/// over), and the summary.
pub fn read(media: &[MediumSpec]) -> Result<(Vec<u8>, StreamSummary), ReadError> {
    let mut r = StreamReader::open(media.to_vec())?;
    let mut out = Vec::new();
    while let Some(chunk) = r.next_chunk()? {
        let Some((offset, payload)) = chunk.placed() else {
            continue;
        };
        let end = offset as usize + payload.len();
        if out.len() < end {
            out.resize(end, 0);
        }
        out[offset as usize..end].copy_from_slice(payload);
    }
    Ok((out, r.summary()))
}

/// The kinds of the records in a stream file of `record_size`-byte records.
pub fn kinds(path: &Path, record_size: u32) -> Vec<RecordKind> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len() % record_size as usize, 0, "{}", path.display());
    bytes
        .chunks(record_size as usize)
        .map(|r| record::decode(r).unwrap().0.kind)
        .collect()
}
