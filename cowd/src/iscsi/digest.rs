//! CRC32C header and data digests (RFC 7143 §13.1, RFC 3385): the 4 bytes a connection puts
//! after the header (BHS and AHS) and after the padded data segment once `HeaderDigest=CRC32C`
//! or `DataDigest=CRC32C` is negotiated.
//!
//! The function is CRC-32C (Castagnoli, reflected, initial value and final XOR `0xFFFFFFFF`),
//! which the `crc32c` crate computes with the CPU's CRC instruction where there is one. On the
//! wire the digest is the CRC value least significant byte first: RFC 3720 Appendix B.4 prints
//! the CRC of 32 zero bytes as the bytes `aa 36 91 8a`, the value `0x8a9136aa`; libiscsi
//! (`lib/pdu.c`) assembles the received digest from bytes 0..3 as bits 0..31, and Linux sends
//! the crypto API's `__le32` result as it is. Padding bytes are covered by the data digest.

/// Bytes of one digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// The digests negotiated on a connection (both off until the login says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// `HeaderDigest=CRC32C`: a digest follows the BHS and AHS of every PDU.
    pub header: bool,
    /// `DataDigest=CRC32C`: a digest follows every non-empty data segment.
    pub data: bool,
}

impl Digests {
    /// Neither digest (the value during login).
    pub const NONE: Digests = Digests {
        header: false,
        data: false,
    };
    /// Both digests.
    pub const BOTH: Digests = Digests {
        header: true,
        data: true,
    };
}

/// CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The header digest of a BHS and the AHS that follows it, as sent on the wire.
pub fn header_digest(bhs: &[u8], ahs: &[u8]) -> [u8; DIGEST_LEN] {
    crc32c::crc32c_append(crc32c::crc32c(bhs), ahs).to_le_bytes()
}

/// The data digest of a data segment (unpadded; the zero padding to a multiple of 4 is added
/// here), as sent on the wire.
pub fn data_digest(data: &[u8]) -> [u8; DIGEST_LEN] {
    let pad = (4 - data.len() % 4) % 4;
    crc32c::crc32c_append(crc32c::crc32c(data), &[0u8; 3][..pad]).to_le_bytes()
}

/// The CRC value that digest bytes received on the wire stand for.
pub fn from_wire(bytes: [u8; DIGEST_LEN]) -> u32 {
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3720 Appendix B.4 "CRC Examples", CRC bytes as the RFC prints them.
    #[test]
    fn rfc3720_known_answers() {
        let incrementing: Vec<u8> = (0u8..32).collect();
        let decrementing: Vec<u8> = (0u8..32).rev().collect();
        let cases: [(&[u8], [u8; 4]); 4] = [
            (&[0u8; 32], [0xaa, 0x36, 0x91, 0x8a]),
            (&[0xffu8; 32], [0x43, 0xab, 0xa8, 0x62]),
            (&incrementing, [0x4e, 0x79, 0xdd, 0x46]),
            (&decrementing, [0x5c, 0xdb, 0x3f, 0x11]),
        ];
        for (bytes, wire) in cases {
            assert_eq!(data_digest(bytes), wire);
            assert_eq!(crc32c(bytes), from_wire(wire));
        }
    }

    /// The iSCSI READ(10) command PDU of RFC 3720 Appendix B.4 and its header digest.
    #[test]
    fn rfc3720_read_command_header_digest() {
        let bhs: [u8; 48] = [
            0x01, 0xc0, 0x00, 0x00, // SCSI Command, F R, ATTR untagged
            0x00, 0x00, 0x00, 0x00, // TotalAHSLength 0, DataSegmentLength 0
            0x00, 0x00, 0x00, 0x00, // LUN 0
            0x00, 0x00, 0x00, 0x00, //
            0x14, 0x00, 0x00, 0x00, // ITT 0x14000000
            0x00, 0x00, 0x04, 0x00, // Expected Data Transfer Length 1024
            0x00, 0x00, 0x00, 0x14, // CmdSN 0x14
            0x00, 0x00, 0x00, 0x18, // ExpStatSN 0x18
            0x28, 0x00, 0x00, 0x00, // CDB: READ(10), LBA 0
            0x00, 0x00, 0x00, 0x00, //   transfer length 2 (bytes 7..8)
            0x02, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, //
        ];
        assert_eq!(header_digest(&bhs, &[]), [0x56, 0x3a, 0x96, 0xd9]);
    }

    #[test]
    fn data_digest_covers_zero_padding() {
        assert_eq!(data_digest(b"abc"), data_digest(b"abc\0"));
        assert_eq!(data_digest(b"abcd"), crc32c(b"abcd").to_le_bytes());
        assert_eq!(data_digest(b""), [0, 0, 0, 0]);
        assert_eq!(header_digest(b"ab", b"cd"), crc32c(b"abcd").to_le_bytes());
    }
}
