//! Encoding of option replies, simple replies and structured reply chunks.
//!
//! Headers are built in fixed arrays so the data path can send header and payload with one
//! vectored write without allocating.

use super::proto::*;
use crate::device::Extent;

/// An option reply: header plus `data`.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + data.len());
    v.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&reply.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// A simple reply header (followed by the data of a successful simple READ).
pub fn simple(cookie: u64, error: u32) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured chunk header announcing `len` bytes of chunk payload.
pub fn chunk(cookie: u64, flags: u16, kind: u16, len: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = [0u8; CHUNK_HEADER_LEN];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// Header and offset of a final `OFFSET_DATA` chunk; `data_len` bytes of data follow.
pub fn data_chunk(cookie: u64, offset: u64, data_len: u32) -> [u8; CHUNK_HEADER_LEN + 8] {
    let mut b = [0u8; CHUNK_HEADER_LEN + 8];
    b[..20].copy_from_slice(&chunk(
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        data_len + 8,
    ));
    b[20..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// A final `OFFSET_HOLE` chunk: `len` bytes at `offset` read as zeroes.
pub fn hole_chunk(cookie: u64, offset: u64, len: u32) -> [u8; CHUNK_HEADER_LEN + 12] {
    let mut b = [0u8; CHUNK_HEADER_LEN + 12];
    b[..20].copy_from_slice(&chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE, 12));
    b[20..28].copy_from_slice(&offset.to_be_bytes());
    b[28..].copy_from_slice(&len.to_be_bytes());
    b
}

/// The final `NONE` chunk (success without payload).
pub fn done_chunk(cookie: u64) -> [u8; CHUNK_HEADER_LEN] {
    chunk(cookie, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 0)
}

/// A final `ERROR` chunk with a human-readable message (truncated to fit).
pub fn error_chunk(cookie: u64, errno: u32, message: &str) -> Vec<u8> {
    let mut msg = message.as_bytes();
    if msg.len() > 4096 {
        let mut end = 4096;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        msg = &msg[..end];
    }
    let mut v = Vec::with_capacity(CHUNK_HEADER_LEN + 6 + msg.len());
    v.extend_from_slice(&chunk(
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        6 + msg.len() as u32,
    ));
    v.extend_from_slice(&errno.to_be_bytes());
    v.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

/// A final `BLOCK_STATUS` chunk for context `id`. Extent lengths are clipped to u32 (the
/// request length bounds them anyway); at least one extent must be given.
pub fn block_status_chunk(cookie: u64, id: u32, extents: &[Extent]) -> Vec<u8> {
    let mut v = Vec::with_capacity(CHUNK_HEADER_LEN + 4 + 8 * extents.len());
    let len = 4 + 8 * extents.len() as u32;
    v.extend_from_slice(&chunk(
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        len,
    ));
    v.extend_from_slice(&id.to_be_bytes());
    for e in extents {
        let flags = if e.hole { STATE_HOLE } else { 0 } | if e.zero { STATE_ZERO } else { 0 };
        v.extend_from_slice(&(e.length.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let s = simple(0x0102, 22);
        assert_eq!(&s[..4], &[0x67, 0x44, 0x66, 0x98]);
        assert_eq!(u32::from_be_bytes(s[4..8].try_into().unwrap()), 22);
        let d = data_chunk(5, 4096, 512);
        assert_eq!(u16::from_be_bytes([d[4], d[5]]), REPLY_FLAG_DONE);
        assert_eq!(u16::from_be_bytes([d[6], d[7]]), REPLY_TYPE_OFFSET_DATA);
        assert_eq!(u32::from_be_bytes(d[16..20].try_into().unwrap()), 520);
        let h = hole_chunk(5, 0, 65536);
        assert_eq!(u32::from_be_bytes(h[16..20].try_into().unwrap()), 12);
        let e = error_chunk(1, 5, &"é".repeat(3000));
        let mlen = u16::from_be_bytes([e[24], e[25]]) as usize;
        assert!(mlen <= 4096 && std::str::from_utf8(&e[26..]).is_ok());
        assert_eq!(
            u32::from_be_bytes(e[16..20].try_into().unwrap()) as usize,
            6 + mlen
        );
        let ext = [Extent {
            length: 1 << 40,
            hole: true,
            zero: true,
        }];
        let b = block_status_chunk(1, 1, &ext);
        assert_eq!(b.len(), 20 + 4 + 8);
        assert_eq!(u32::from_be_bytes(b[24..28].try_into().unwrap()), u32::MAX);
        assert_eq!(u32::from_be_bytes(b[28..32].try_into().unwrap()), 3);
        let o = option_reply(OPT_GO, REP_ACK, &[]);
        assert_eq!(o.len(), 20);
    }
}
