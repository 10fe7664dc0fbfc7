//! Wire builders shared by the targets, their seeds and the property tests: option payloads
//! and frames as a client sends them, and big-endian readers.

use cowd::nbd::proto::*;

/// A string as NBD option payloads carry it: a u32 length, then the bytes.
pub fn nbd_string(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

/// The payload of `NBD_OPT_INFO` / `NBD_OPT_GO`.
pub fn info_payload(name: &[u8], infos: &[u16]) -> Vec<u8> {
    let mut v = nbd_string(name);
    v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

/// The payload of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
pub fn meta_payload<Q: AsRef<[u8]>>(export: &[u8], queries: &[Q]) -> Vec<u8> {
    let mut v = nbd_string(export);
    v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        v.extend_from_slice(&nbd_string(q.as_ref()));
    }
    v
}

/// One option request as a client sends it: IHAVEOPT, code, length, payload.
pub fn option_frame(code: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

pub(super) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

pub(super) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

pub(super) fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}
