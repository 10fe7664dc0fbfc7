//! Framing of whole PDUs on a byte stream (RFC 7143 §11.2): BHS, additional header segments,
//! header digest, data segment padded to 4 bytes, data digest (pure; fuzzed).
//!
//! ```text
//!  | BHS 48 | AHS 4*TotalAHSLength | [HD 4] | data DataSegmentLength | pad 0-3 | [DD 4] |
//! ```
//!
//! [`frame`] takes whatever bytes have arrived and returns a complete PDU once they hold one.
//! It checks the header digest before it trusts the lengths of the header, decodes the BHS,
//! refuses a data segment over the negotiated MaxRecvDataSegmentLength as soon as the header
//! is there (before buffering it), and checks the data digest. A data digest is present only
//! when the data segment is not empty.

use super::digest::{self, DIGEST_LEN, Digests};
use super::pdu::{BHS_LEN, Header, MAX_DATA_SEGMENT_LEN, Pdu, PduError, ReservedValue};

/// AHS types (RFC 7143 §11.2.2); 60..=63 are for non-iSCSI extensions, the rest reserved.
pub const AHS_EXTENDED_CDB: u8 = 1;
pub const AHS_BIDI_READ_LENGTH: u8 = 2;

/// Bytes a data segment of `len` bytes takes on the wire, with its padding.
pub fn padded_len(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// Bytes of a whole PDU with `ahs_words` words of AHS and a data segment of `data_len` bytes.
pub fn pdu_len(ahs_words: u8, data_len: u32, digests: Digests) -> usize {
    let header_digest = if digests.header { DIGEST_LEN } else { 0 };
    let data_digest = if digests.data && data_len > 0 {
        DIGEST_LEN
    } else {
        0
    };
    BHS_LEN
        + usize::from(ahs_words) * 4
        + header_digest
        + padded_len(data_len as usize)
        + data_digest
}

/// Bytes of the PDU a raw BHS starts, from its length fields alone: what a session skips after
/// rejecting a PDU whose header it could not decode.
pub fn wire_len(bhs: &[u8; BHS_LEN], digests: Digests) -> usize {
    pdu_len(
        bhs[4],
        u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]),
        digests,
    )
}

/// One additional header segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ahs {
    /// Type 1: the bytes of a CDB beyond its first 16 (which are in the BHS).
    ExtendedCdb(Vec<u8>),
    /// Type 2: the expected read data length of a bidirectional command.
    BidiReadLength(u32),
    /// Types 60..=63: non-iSCSI extensions, kept as they came (type-specific bytes, without
    /// padding).
    Extension { ahs_type: u8, data: Vec<u8> },
}

impl Ahs {
    /// AHSLength: bytes after the type byte, without padding.
    fn specific_len(&self) -> usize {
        match self {
            Ahs::ExtendedCdb(cdb) => 1 + cdb.len(),
            Ahs::BidiReadLength(_) => 5,
            Ahs::Extension { data, .. } => data.len(),
        }
    }

    /// Appends the segment and its padding to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&(self.specific_len() as u16).to_be_bytes());
        match self {
            Ahs::ExtendedCdb(cdb) => {
                out.extend_from_slice(&[AHS_EXTENDED_CDB, 0]);
                out.extend_from_slice(cdb);
            }
            Ahs::BidiReadLength(n) => {
                out.extend_from_slice(&[AHS_BIDI_READ_LENGTH, 0]);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Ahs::Extension { ahs_type, data } => {
                out.push(*ahs_type);
                out.extend_from_slice(data);
            }
        }
        out.resize(start + padded_len(out.len() - start), 0);
    }
}

/// Decodes the AHS area (a whole number of 4-byte words).
pub fn decode_ahs(mut b: &[u8]) -> Result<Vec<Ahs>, PduError> {
    let mut segments = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(PduError::Ahs("truncated segment header"));
        }
        let specific = usize::from(u16::from_be_bytes([b[0], b[1]]));
        let total = padded_len(3 + specific);
        if total > b.len() {
            return Err(PduError::Ahs("segment longer than TotalAHSLength"));
        }
        let data = &b[3..3 + specific];
        segments.push(match b[2] {
            AHS_EXTENDED_CDB if specific >= 1 => Ahs::ExtendedCdb(data[1..].to_vec()),
            AHS_EXTENDED_CDB => return Err(PduError::Ahs("empty extended CDB")),
            AHS_BIDI_READ_LENGTH if specific == 5 => {
                Ahs::BidiReadLength(u32::from_be_bytes([data[1], data[2], data[3], data[4]]))
            }
            AHS_BIDI_READ_LENGTH => {
                return Err(PduError::Ahs("bidirectional read length is not 5"));
            }
            ahs_type @ 60..=63 => Ahs::Extension {
                ahs_type,
                data: data.to_vec(),
            },
            value => {
                let field = "AHS type";
                return Err(ReservedValue { field, value }.into());
            }
        });
        b = &b[total..];
    }
    Ok(segments)
}

/// A complete PDU: its header, additional header segments and data segment (without padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub ahs: Vec<Ahs>,
    pub data: Vec<u8>,
}

impl Frame {
    /// A PDU without AHS; the header's lengths are set from `data`.
    pub fn new(header: Header, data: Vec<u8>) -> Frame {
        let mut f = Frame {
            header,
            ahs: Vec::new(),
            data,
        };
        f.fix_lengths();
        f
    }

    /// Sets TotalAHSLength and DataSegmentLength from the segments this frame holds.
    pub fn fix_lengths(&mut self) {
        let ahs: usize = self
            .ahs
            .iter()
            .map(|a| padded_len(3 + a.specific_len()))
            .sum();
        self.header.ahs_words = (ahs / 4).min(255) as u8;
        self.header.data_len = self.data.len().min(MAX_DATA_SEGMENT_LEN as usize) as u32;
    }

    /// The whole CDB of a SCSI Command: the 16 bytes of the BHS and any extended CDB AHS.
    pub fn cdb(&self) -> Option<Vec<u8>> {
        let Pdu::ScsiCommand(cmd) = &self.header.pdu else {
            return None;
        };
        let mut cdb = cmd.cdb.to_vec();
        for a in &self.ahs {
            if let Ahs::ExtendedCdb(more) = a {
                cdb.extend_from_slice(more);
            }
        }
        Some(cdb)
    }

    /// The PDU as sent on the wire, with TotalAHSLength and DataSegmentLength computed from
    /// the segments (whatever the header says). Errors if the segments do not fit the fields.
    pub fn encode(&self, digests: Digests) -> Result<Vec<u8>, PduError> {
        let mut out = Vec::new();
        self.encode_into(digests, &mut out)?;
        Ok(out)
    }

    /// [`encode`](Self::encode), appended to `out`.
    pub fn encode_into(&self, digests: Digests, out: &mut Vec<u8>) -> Result<(), PduError> {
        let mut ahs = Vec::new();
        for a in &self.ahs {
            a.encode_into(&mut ahs);
        }
        encode_pdu(&self.header, &ahs, &self.data, digests, out)
    }
}

/// Appends the PDU of `header`, the encoded additional header segments `ahs` and the data
/// segment `data` to `out`, the lengths taken from the segments; digests as negotiated.
pub fn encode_pdu(
    header: &Header,
    ahs: &[u8],
    data: &[u8],
    digests: Digests,
    out: &mut Vec<u8>,
) -> Result<(), PduError> {
    out.reserve(pdu_len((ahs.len() / 4) as u8, data.len() as u32, digests));
    encode_head(header, ahs, data.len(), digests, out)?;
    out.extend_from_slice(data);
    encode_tail(data, digests, out);
    Ok(())
}

/// The part of [`encode_pdu`] before the data segment (BHS, AHS, header digest), for a data
/// segment of `data_len` bytes sent from where it is.
pub fn encode_head(
    header: &Header,
    ahs: &[u8],
    data_len: usize,
    digests: Digests,
    out: &mut Vec<u8>,
) -> Result<(), PduError> {
    if ahs.len() > usize::from(u8::MAX) * 4 {
        return Err(PduError::Ahs("segments longer than 1020 bytes"));
    }
    if data_len > MAX_DATA_SEGMENT_LEN as usize {
        return Err(PduError::DataSegmentTooLong {
            len: data_len.min(u32::MAX as usize) as u32,
            max: MAX_DATA_SEGMENT_LEN,
        });
    }
    let mut header = *header;
    header.ahs_words = (ahs.len() / 4) as u8;
    header.data_len = data_len as u32;
    let start = out.len();
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(ahs);
    if digests.header {
        let hd = digest::header_digest(&out[start..start + BHS_LEN], ahs);
        out.extend_from_slice(&hd);
    }
    Ok(())
}

/// The part of [`encode_pdu`] after the data segment `data`: padding and data digest.
pub fn encode_tail(data: &[u8], digests: Digests, out: &mut Vec<u8>) {
    encode_padding(data.len(), out);
    if digests.data && !data.is_empty() {
        out.extend_from_slice(&digest::data_digest(data));
    }
}

/// The padding after a data segment of `data_len` bytes (to a multiple of 4).
pub fn encode_padding(data_len: usize, out: &mut Vec<u8>) {
    out.resize(out.len() + padded_len(data_len) - data_len, 0);
}

fn received_digest(b: &[u8]) -> u32 {
    digest::from_wire([b[0], b[1], b[2], b[3]])
}

/// Takes the bytes received so far and returns the first complete PDU in them and the bytes
/// it took, or `None` if more bytes are needed. `max_data_len` is our MaxRecvDataSegmentLength
/// (8192 during login).
pub fn frame(
    buf: &[u8],
    digests: Digests,
    max_data_len: u32,
) -> Result<Option<(Frame, usize)>, PduError> {
    let Some((header, header_end)) = header(buf, digests, max_data_len)? else {
        return Ok(None);
    };
    let total = pdu_len(header.ahs_words, header.data_len, digests);
    if buf.len() < total {
        return Ok(None);
    }
    let ahs = decode_ahs(&buf[BHS_LEN..BHS_LEN + usize::from(header.ahs_words) * 4])?;
    let data_len = header.data_len as usize;
    let data = &buf[header_end..header_end + data_len];
    check_data_digest(data, &buf[header_end + data_len..total], digests)?;
    let frame = Frame {
        header,
        ahs,
        data: data.to_vec(),
    };
    Ok(Some((frame, total)))
}

/// The header of the PDU that `buf` starts with, once its BHS, AHS and header digest have
/// arrived: the digest checked, the BHS decoded, its data segment within `max_data_len`; with
/// the bytes up to its data segment. The AHS is left to [`decode_ahs`].
pub fn header(
    buf: &[u8],
    digests: Digests,
    max_data_len: u32,
) -> Result<Option<(Header, usize)>, PduError> {
    let Some(bhs) = buf.first_chunk::<BHS_LEN>() else {
        return Ok(None);
    };
    let ahs_end = BHS_LEN + usize::from(bhs[4]) * 4;
    let header_end = ahs_end + if digests.header { DIGEST_LEN } else { 0 };
    if buf.len() < header_end {
        return Ok(None);
    }
    if digests.header {
        let computed = digest::from_wire(digest::header_digest(bhs, &buf[BHS_LEN..ahs_end]));
        let received = received_digest(&buf[ahs_end..]);
        if computed != received {
            return Err(PduError::HeaderDigest { computed, received });
        }
    }
    let header = Header::decode(bhs)?;
    if header.data_len > max_data_len {
        return Err(PduError::DataSegmentTooLong {
            len: header.data_len,
            max: max_data_len,
        });
    }
    Ok(Some((header, header_end)))
}

/// Checks the data digest of `data` against the bytes after it (`tail`: padding, then the
/// digest when there is one).
pub fn check_data_digest(data: &[u8], tail: &[u8], digests: Digests) -> Result<(), PduError> {
    if digests.data && !data.is_empty() {
        let computed = digest::from_wire(digest::data_digest(data));
        let received = received_digest(&tail[padded_len(data.len()) - data.len()..]);
        if computed != received {
            return Err(PduError::DataDigest { computed, received });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
