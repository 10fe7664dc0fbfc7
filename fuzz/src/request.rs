//! The `request` target: [`Request::decode`] / [`Request::encode`] / [`Request::validate`] on
//! any 28-byte header and any [`Negotiated`] state.
//!
//! Input: [`REQUEST_INPUT_LEN`] bytes, the header then the negotiated state. Decoding and
//! encoding round-trip; `validate` accepts exactly the allowed requests and refuses the rest
//! with EINVAL or EOVERFLOW.

use cowd::nbd::proto::*;
use cowd::nbd::request::{Command, Negotiated, Request};

use super::wire::{be16, be32, be64};

/// Bytes of a `request` fuzz input: the 28-byte header, then the negotiated state: tflags
/// (u16), a flags byte (bit 0 structured replies, bit 1 base:allocation) and max_payload (u32).
/// Shorter inputs are padded with zeroes.
pub const REQUEST_INPUT_LEN: usize = REQUEST_LEN + 7;

/// Encodes a `request` fuzz input (see [`REQUEST_INPUT_LEN`]).
pub fn request_input(header: &[u8; REQUEST_LEN], n: &Negotiated) -> Vec<u8> {
    let mut v = header.to_vec();
    v.extend_from_slice(&n.tflags.to_be_bytes());
    v.push(u8::from(n.structured) | u8::from(n.base_allocation) << 1);
    v.extend_from_slice(&n.max_payload.to_be_bytes());
    v
}

/// `request` fuzz input (see [`REQUEST_INPUT_LEN`]).
pub fn fuzz_request(data: &[u8]) {
    let mut b = [0u8; REQUEST_INPUT_LEN];
    let k = data.len().min(b.len());
    b[..k].copy_from_slice(&data[..k]);
    let header: [u8; REQUEST_LEN] = b[..REQUEST_LEN].try_into().unwrap();
    let n = Negotiated {
        tflags: be16(&b[28..]),
        structured: b[30] & 1 != 0,
        base_allocation: b[30] & 2 != 0,
        max_payload: be32(&b[31..]),
    };
    check_request(&header, &n);
}

/// Decoding refuses exactly the bad magics and round-trips everything else; the header's
/// fields (behind a good magic) satisfy [`check_request_fields`].
pub fn check_request(header: &[u8; REQUEST_LEN], n: &Negotiated) {
    let magic = be32(header);
    match Request::decode(header) {
        Ok(r) => {
            assert_eq!(magic, REQUEST_MAGIC, "decoded despite a bad magic");
            assert_eq!(&r.encode(), header, "encode(decode(b)) != b");
        }
        Err(e) => {
            assert_ne!(magic, REQUEST_MAGIC, "the request magic was refused");
            assert_eq!(e.0, magic, "BadMagic reports another magic");
        }
    }
    let r = Request {
        flags: be16(&header[4..]),
        kind: be16(&header[6..]),
        cookie: be64(&header[8..]),
        offset: be64(&header[16..]),
        len: be32(&header[24..]),
    };
    check_request_fields(&r, n);
}

/// Command flags a client may set on command `kind` after being sent `tflags`.
fn allowed_flags(kind: u16, tflags: u16) -> u16 {
    let mut f = 0;
    if tflags & TFLAG_SEND_FUA != 0 {
        f |= CMD_FLAG_FUA;
    }
    match kind {
        CMD_READ if tflags & TFLAG_SEND_DF != 0 => f |= CMD_FLAG_DF,
        CMD_WRITE_ZEROES => {
            f |= CMD_FLAG_NO_HOLE;
            if tflags & TFLAG_SEND_FAST_ZERO != 0 {
                f |= CMD_FLAG_FAST_ZERO;
            }
        }
        CMD_BLOCK_STATUS => f |= CMD_FLAG_REQ_ONE,
        _ => {}
    }
    f
}

/// `decode(encode(r)) == r`; only WRITE has a payload; `validate` accepts exactly the known
/// commands with allowed flags, payloads within the maximum, a FLUSH without range and
/// BLOCK_STATUS only with base:allocation selected; it refuses with EINVAL, or EOVERFLOW for
/// an oversized WRITE.
pub fn check_request_fields(r: &Request, n: &Negotiated) {
    assert_eq!(
        Request::decode(&r.encode()),
        Ok(*r),
        "decode(encode(r)) != r"
    );
    let payload = if r.kind == CMD_WRITE { r.len } else { 0 };
    assert_eq!(r.payload_len(), payload, "payload_len of {r:?}");
    let command = match r.kind {
        CMD_READ => Some(Command::Read),
        CMD_WRITE => Some(Command::Write),
        CMD_DISC => Some(Command::Disc),
        CMD_FLUSH => Some(Command::Flush),
        CMD_TRIM => Some(Command::Trim),
        CMD_CACHE => Some(Command::Cache),
        CMD_WRITE_ZEROES => Some(Command::WriteZeroes),
        CMD_BLOCK_STATUS => Some(Command::BlockStatus),
        _ => None,
    };
    let data_command = r.kind == CMD_READ || r.kind == CMD_WRITE;
    let acceptable = command.is_some()
        && r.flags & !allowed_flags(r.kind, n.tflags) == 0
        && !(data_command && r.len > n.max_payload)
        && !(r.kind == CMD_FLUSH && (r.offset != 0 || r.len != 0))
        && (r.kind != CMD_BLOCK_STATUS || n.base_allocation);
    match r.validate(n) {
        Ok(c) => {
            assert!(acceptable, "{r:?} accepted under {n:?}");
            assert_eq!(Some(c), command, "{r:?} validated as {c:?}");
        }
        Err(e) => {
            assert!(!acceptable, "{r:?} refused with errno {e} under {n:?}");
            assert!(
                e == EINVAL || e == EOVERFLOW,
                "{r:?} refused with errno {e}"
            );
            if e == EOVERFLOW {
                assert!(
                    r.kind == CMD_WRITE && r.len > n.max_payload,
                    "EOVERFLOW for {r:?} under {n:?}"
                );
            }
        }
    }
}
