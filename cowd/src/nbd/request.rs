//! Transmission requests: decoding the 28-byte header and checking it against what was
//! negotiated (pure; fuzzed).
//!
//! Range, alignment and read-only checks belong to the device's `Checked` layer; this module
//! checks what only the protocol knows: magic, command, flags, payload size, contexts.

use super::proto::*;

/// A decoded request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

/// A command cowd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Read,
    Write,
    Disc,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
    BlockStatus,
}

/// The bad request magic: the stream cannot be resynchronised and the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad request magic {0:#010x}")]
pub struct BadMagic(pub u32);

/// What the connection negotiated, as far as request checks need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Transmission flags sent to the client.
    pub tflags: u16,
    /// Structured replies are on.
    pub structured: bool,
    /// `base:allocation` was selected.
    pub base_allocation: bool,
    /// Largest READ/WRITE payload.
    pub max_payload: u32,
}

impl Request {
    /// Decodes a header; only the magic can make it undecodable.
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<Request, BadMagic> {
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
        let magic = u32_at(0);
        if magic != REQUEST_MAGIC {
            return Err(BadMagic(magic));
        }
        Ok(Request {
            flags: u16_at(4),
            kind: u16_at(6),
            cookie: u64_at(8),
            offset: u64_at(16),
            len: u32_at(24),
        })
    }

    /// Encodes a header (for clients and tests).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Bytes of payload that follow this header on the wire.
    pub fn payload_len(&self) -> u32 {
        if self.kind == CMD_WRITE { self.len } else { 0 }
    }

    /// Checks the request against the negotiation; `Err` is the NBD errno to reply with.
    pub fn validate(&self, n: &Negotiated) -> Result<Command, u32> {
        let (cmd, allowed) = match self.kind {
            CMD_READ => (
                Command::Read,
                if n.tflags & TFLAG_SEND_DF != 0 {
                    CMD_FLAG_DF
                } else {
                    0
                },
            ),
            CMD_WRITE => (Command::Write, 0),
            CMD_DISC => (Command::Disc, 0),
            CMD_FLUSH => (Command::Flush, 0),
            CMD_TRIM => (Command::Trim, 0),
            CMD_CACHE => (Command::Cache, 0),
            CMD_WRITE_ZEROES => {
                let fast = if n.tflags & TFLAG_SEND_FAST_ZERO != 0 {
                    CMD_FLAG_FAST_ZERO
                } else {
                    0
                };
                (Command::WriteZeroes, CMD_FLAG_NO_HOLE | fast)
            }
            CMD_BLOCK_STATUS => (Command::BlockStatus, CMD_FLAG_REQ_ONE),
            _ => return Err(EINVAL),
        };
        let fua = if n.tflags & TFLAG_SEND_FUA != 0 {
            CMD_FLAG_FUA
        } else {
            0
        };
        if self.flags & !(allowed | fua) != 0 {
            return Err(EINVAL);
        }
        match cmd {
            Command::Read if self.len > n.max_payload => Err(EINVAL),
            Command::Write if self.len > n.max_payload => Err(EOVERFLOW),
            Command::Flush if self.offset != 0 || self.len != 0 => Err(EINVAL),
            Command::BlockStatus if !n.base_allocation => Err(EINVAL),
            _ => Ok(cmd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Negotiated = Negotiated {
        tflags: TFLAG_HAS_FLAGS
            | TFLAG_SEND_FLUSH
            | TFLAG_SEND_FUA
            | TFLAG_SEND_DF
            | TFLAG_SEND_FAST_ZERO
            | TFLAG_SEND_WRITE_ZEROES
            | TFLAG_SEND_TRIM,
        structured: true,
        base_allocation: true,
        max_payload: 32 << 20,
    };

    fn req(kind: u16, flags: u16, len: u32) -> Request {
        Request {
            flags,
            kind,
            cookie: 7,
            offset: 0,
            len,
        }
    }

    #[test]
    fn round_trip_and_bad_magic() {
        let r = Request {
            flags: 1,
            kind: CMD_WRITE,
            cookie: u64::MAX,
            offset: 1 << 40,
            len: 9,
        };
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        let mut b = r.encode();
        b[0] = 0;
        assert!(Request::decode(&b).is_err());
        assert_eq!(r.payload_len(), 9);
        assert_eq!(req(CMD_READ, 0, 9).payload_len(), 0);
    }

    #[test]
    fn flags_are_checked_per_command() {
        assert_eq!(
            req(CMD_READ, CMD_FLAG_DF, 512).validate(&ALL),
            Ok(Command::Read)
        );
        assert_eq!(req(CMD_WRITE, CMD_FLAG_DF, 512).validate(&ALL), Err(EINVAL));
        assert_eq!(
            req(CMD_TRIM, CMD_FLAG_FUA, 512).validate(&ALL),
            Ok(Command::Trim)
        );
        assert_eq!(
            req(CMD_CACHE, CMD_FLAG_FUA, 512).validate(&ALL),
            Ok(Command::Cache)
        );
        let z = CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO | CMD_FLAG_FUA;
        assert_eq!(
            req(CMD_WRITE_ZEROES, z, 512).validate(&ALL),
            Ok(Command::WriteZeroes)
        );
        assert_eq!(
            req(CMD_BLOCK_STATUS, CMD_FLAG_NO_HOLE, 512).validate(&ALL),
            Err(EINVAL)
        );
        assert_eq!(req(CMD_READ, 1 << 9, 512).validate(&ALL), Err(EINVAL));
        assert_eq!(req(9, 0, 512).validate(&ALL), Err(EINVAL));
        let no_df = Negotiated {
            tflags: TFLAG_HAS_FLAGS,
            ..ALL
        };
        assert_eq!(
            req(CMD_READ, CMD_FLAG_DF, 512).validate(&no_df),
            Err(EINVAL)
        );
        assert_eq!(
            req(CMD_WRITE, CMD_FLAG_FUA, 512).validate(&no_df),
            Err(EINVAL)
        );
        let z = req(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 512);
        assert_eq!(z.validate(&no_df), Err(EINVAL));
    }

    #[test]
    fn sizes_and_contexts() {
        assert_eq!(req(CMD_READ, 0, u32::MAX).validate(&ALL), Err(EINVAL));
        assert_eq!(
            req(CMD_WRITE, 0, (32 << 20) + 1).validate(&ALL),
            Err(EOVERFLOW)
        );
        assert_eq!(
            req(CMD_WRITE, 0, 32 << 20).validate(&ALL),
            Ok(Command::Write)
        );
        assert_eq!(req(CMD_TRIM, 0, u32::MAX).validate(&ALL), Ok(Command::Trim));
        assert_eq!(req(CMD_FLUSH, 0, 1).validate(&ALL), Err(EINVAL));
        let no_ctx = Negotiated {
            base_allocation: false,
            ..ALL
        };
        assert_eq!(req(CMD_BLOCK_STATUS, 0, 512).validate(&no_ctx), Err(EINVAL));
    }
}
