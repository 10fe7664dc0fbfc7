//! Whole PDUs over a blocking byte stream: [`PduReader`] frames what arrives (many PDUs per
//! `read`), [`encode_all`] turns PDUs into one buffer for a single `write`.
//!
//! A PDU with a large data segment (a Data-Out of a big write) that has not all arrived yet
//! is read straight into its frame's buffer rather than through the reader's.
//!
//! A PDU whose header cannot be decoded, or whose data digest is wrong, is skipped whole
//! (its length is in the BHS) and reported as [`Incoming::Bad`], so that the connection can
//! answer it with a Reject; a wrong header digest, or a data segment beyond what we declared,
//! leaves nothing to trust and is an error.

use std::io::{self, Read};

use super::digest::{DIGEST_LEN, Digests};
use super::frame::{self, Frame, frame, wire_len};
use super::pdu::{BHS_LEN, Header, PduError};

/// What one read of a PDU gives.
#[derive(Debug)]
pub enum Incoming {
    Pdu(Frame),
    /// A PDU that was skipped: why, and its BHS (for the Reject's data segment).
    Bad(PduError, Box<[u8; BHS_LEN]>),
    /// The peer closed the stream at a PDU boundary.
    Closed,
}

/// What [`PduReader::read_placing`] gives.
#[derive(Debug)]
pub enum Received {
    Incoming(Incoming),
    /// A PDU whose `len` bytes of data were written into the buffer lent for it (at the
    /// offset given with it), given back.
    Placed {
        header: Header,
        buf: Vec<u8>,
        len: usize,
    },
}

/// Lends, for a PDU's header, a buffer and the offset in it where its data segment goes
/// (see [`PduReader::read_placing`]).
pub type Lender<'a> = dyn FnMut(&Header) -> Option<(Vec<u8>, usize)> + 'a;

/// Why reading PDUs must stop.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{0}")]
    Pdu(PduError),
    #[error("the connection closed inside a PDU")]
    Truncated,
}

/// Frames PDUs out of a stream.
#[derive(Debug)]
pub struct PduReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last PDU was read straight from the stream (see `read_large`): read little next,
    /// for another large PDU likely follows, and what is read through the buffer is copied.
    after_large: bool,
}

/// Bytes asked of the stream at a time (more when one PDU is larger).
const READ_SIZE: usize = 256 << 10;
/// Data segments from this size on are read straight into their frame (see `read_large`).
const DIRECT_MIN: usize = 32 << 10;
/// Bytes asked of the stream after a PDU read straight from it: a header and some data (a
/// full read would copy most of the next large data segment through the buffer: 7 % of the
/// target's CPU on 1 MiB writes).
const READ_AFTER_LARGE: usize = 4 << 10;

impl<R: Read> PduReader<R> {
    pub fn new(inner: R) -> PduReader<R> {
        PduReader {
            inner,
            buf: vec![0; READ_SIZE],
            start: 0,
            end: 0,
            after_large: false,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next PDU. `max_data_len` is our MaxRecvDataSegmentLength.
    pub fn read(&mut self, digests: Digests, max_data_len: u32) -> Result<Incoming, WireError> {
        match self.read_placing(digests, max_data_len, &mut |_| None)? {
            Received::Incoming(i) => Ok(i),
            Received::Placed { .. } => unreachable!("nothing was placed"),
        }
    }

    /// The next PDU, like [`read`](Self::read); but a large data segment (at least
    /// [`DIRECT_MIN`] bytes, not all arrived, no AHS, no data digest) for which `place` lends
    /// a buffer and an offset in it is read there straight from the stream and given back as
    /// [`Received::Placed`] (a Data-Out read into its command's buffer: no copy at all).
    pub fn read_placing(
        &mut self,
        digests: Digests,
        max_data_len: u32,
        place: &mut Lender<'_>,
    ) -> Result<Received, WireError> {
        let pdu = |i| Ok(Received::Incoming(i));
        loop {
            match frame(&self.buf[self.start..self.end], digests, max_data_len) {
                Ok(Some((f, used))) => {
                    self.start += used;
                    return pdu(Incoming::Pdu(f));
                }
                Ok(None) => {}
                Err(e @ (PduError::HeaderDigest { .. } | PduError::DataSegmentTooLong { .. })) => {
                    return Err(WireError::Pdu(e));
                }
                Err(e) => {
                    // The BHS is here (a header error) or the whole PDU is (a data digest
                    // error): skip the PDU once all of it has arrived, if it is not longer
                    // than any we accept.
                    let bhs = self.bhs().expect("an error needs a whole BHS");
                    let data_len = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]);
                    if data_len > max_data_len {
                        let max = max_data_len;
                        return Err(WireError::Pdu(PduError::DataSegmentTooLong {
                            len: data_len,
                            max,
                        }));
                    }
                    let total = wire_len(&bhs, digests);
                    if self.end - self.start >= total {
                        self.start += total;
                        return pdu(Incoming::Bad(e, Box::new(bhs)));
                    }
                }
            }
            if let Some(r) = self.read_large(digests, max_data_len, place)? {
                self.after_large = true;
                return Ok(r);
            }
            let want = match self.bhs() {
                Some(bhs) => wire_len(&bhs, digests),
                None => BHS_LEN,
            };
            if self.buf.len() - self.start < want || self.end == self.buf.len() {
                self.make_room(want);
            }
            let until = match std::mem::take(&mut self.after_large) {
                true => self.buf.len().min(self.end + READ_AFTER_LARGE),
                false => self.buf.len(),
            };
            let n = match self.inner.read(&mut self.buf[self.end..until]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                if self.start == self.end {
                    return pdu(Incoming::Closed);
                }
                return Err(WireError::Truncated);
            }
            self.end += n;
        }
    }

    /// A PDU with a data segment of at least [`DIRECT_MIN`] bytes, its header buffered but not
    /// all of its data: the data is read from the stream straight into the frame's own buffer,
    /// not through ours (no copy to make room for it, none out of
    /// ours into the frame). `None` when that does not apply; errors of the header are left to
    /// `frame`.
    fn read_large(
        &mut self,
        digests: Digests,
        max_data_len: u32,
        place: &mut Lender<'_>,
    ) -> Result<Option<Received>, WireError> {
        let buffered = &self.buf[self.start..self.end];
        let Some(bhs) = self.bhs() else {
            return Ok(None);
        };
        let total = wire_len(&bhs, digests);
        let data_len = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]);
        if (data_len as usize) < DIRECT_MIN || data_len > max_data_len || buffered.len() >= total {
            return Ok(None);
        }
        let Ok(Some((header, header_end))) = frame::header(buffered, digests, max_data_len) else {
            return Ok(None);
        };
        let ahs = match frame::decode_ahs(&buffered[BHS_LEN..BHS_LEN + usize::from(bhs[4]) * 4]) {
            Ok(a) => a,
            Err(_) => return Ok(None),
        };
        let data_len = data_len as usize;
        let lent = if ahs.is_empty() && !digests.data {
            place(&header)
        } else {
            None
        };
        let placed = lent.is_some();
        // Everything buffered belongs to this PDU: data first, then padding and digest.
        let (mut data, at) = match lent {
            Some((mut buf, at)) => {
                if buf.len() < at + data_len {
                    debug_assert!(false, "a lent buffer too short for its data");
                    buf.resize(at + data_len, 0);
                }
                (buf, at)
            }
            // Not from the SCSI buffer pool: frames come in every size, and pooling them
            // filled the pool with sizes the commands' buffers then did not fit.
            None => (vec![0; data_len], 0),
        };
        let mut tail = [0u8; 3 + DIGEST_LEN];
        let tail = &mut tail[..total - header_end - data_len];
        let have = &buffered[header_end..];
        let in_data = have.len().min(data_len);
        data[at..at + in_data].copy_from_slice(&have[..in_data]);
        tail[..have.len() - in_data].copy_from_slice(&have[in_data..]);
        let tail_have = have.len() - in_data;
        self.start = 0;
        self.end = 0;
        let truncated = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => WireError::Truncated,
            _ => WireError::Io(e),
        };
        self.inner
            .read_exact(&mut data[at + in_data..at + data_len])
            .map_err(truncated)?;
        self.inner
            .read_exact(&mut tail[tail_have..])
            .map_err(truncated)?;
        if placed {
            // No data digest (placing needs none to check).
            return Ok(Some(Received::Placed {
                header,
                buf: data,
                len: data_len,
            }));
        }
        if let Err(e) = frame::check_data_digest(&data, tail, digests) {
            return Ok(Some(Received::Incoming(Incoming::Bad(e, Box::new(bhs)))));
        }
        Ok(Some(Received::Incoming(Incoming::Pdu(Frame {
            header,
            ahs,
            data,
        }))))
    }

    /// Whether a whole PDU is buffered: the next read returns without waiting for the stream.
    pub fn holds_whole_pdu(&self, digests: Digests) -> bool {
        self.bhs()
            .is_some_and(|bhs| self.end - self.start >= wire_len(&bhs, digests))
    }

    /// The BHS at the front of the buffered bytes, if it has arrived.
    fn bhs(&self) -> Option<[u8; BHS_LEN]> {
        self.buf[self.start..self.end]
            .first_chunk::<BHS_LEN>()
            .copied()
    }

    /// Moves the buffered bytes to the front, and grows the buffer to hold `pdu` bytes.
    fn make_room(&mut self, pdu: usize) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() < pdu {
            self.buf.resize(pdu, 0);
        } else if self.buf.len() > READ_SIZE && pdu <= READ_SIZE && self.end <= READ_SIZE {
            // A large PDU is gone: do not keep its buffer.
            self.buf.truncate(READ_SIZE);
            self.buf.shrink_to_fit();
        }
    }
}

/// The PDUs as one buffer, ready for one `write_all`.
pub fn encode_all(frames: &[Frame], digests: Digests) -> Result<Vec<u8>, PduError> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&f.encode(digests)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::pdu::{Header, Lun, NopOut, Pdu};

    fn nop(itt: u32, data: Vec<u8>) -> Frame {
        let h = Header {
            ahs_words: 0,
            data_len: 0,
            pdu: Pdu::NopOut(NopOut {
                immediate: true,
                lun: Lun::ZERO,
                itt,
                ttt: 0xffff_ffff,
                cmd_sn: 1,
                exp_stat_sn: 1,
            }),
        };
        Frame::new(h, data)
    }

    /// Without digests, and with both.
    const BOTH_DIGESTS: [Digests; 2] = [
        Digests::NONE,
        Digests {
            header: true,
            data: true,
        },
    ];

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle(Vec<u8>, usize, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.2.min(buf.len()).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn frames_whatever_the_read_sizes() {
        let frames: Vec<Frame> = (0..20)
            .map(|i| nop(i, vec![i as u8; (i as usize * 977) % 5000]))
            .chain([nop(99, vec![7; 600_000])])
            .collect();
        for digests in BOTH_DIGESTS {
            let bytes = encode_all(&frames, digests).unwrap();
            for step in [1, 7, 48, 4096, 1 << 20] {
                let mut r = PduReader::new(Trickle(bytes.clone(), 0, step));
                for f in &frames {
                    match r.read(digests, 1 << 20).unwrap() {
                        Incoming::Pdu(got) => assert_eq!(&got, f),
                        other => panic!("{other:?}"),
                    }
                }
                assert!(matches!(
                    r.read(digests, 1 << 20).unwrap(),
                    Incoming::Closed
                ));
            }
        }
    }

    #[test]
    fn a_whole_pdu_buffered_is_read_without_the_stream() {
        let frames: Vec<Frame> = (0..30)
            .map(|i| nop(i, vec![i as u8; (i as usize * 331) % 3000]))
            .collect();
        for digests in BOTH_DIGESTS {
            let bytes = encode_all(&frames, digests).unwrap();
            for step in [1, 100, 4096, 1 << 20] {
                let mut r = PduReader::new(Trickle(bytes.clone(), 0, step));
                let mut without_stream = 0;
                for f in &frames {
                    let (whole, at) = (r.holds_whole_pdu(digests), r.get_ref().1);
                    match r.read(digests, 1 << 20).unwrap() {
                        Incoming::Pdu(got) => assert_eq!(&got, f),
                        other => panic!("{other:?}"),
                    }
                    if whole {
                        assert_eq!(r.get_ref().1, at, "read from the stream");
                        without_stream += 1;
                    }
                }
                assert!(!r.holds_whole_pdu(digests));
                // Reads of a byte never bring more than the PDU; large reads bring many.
                if step == 1 {
                    assert_eq!(without_stream, 0);
                }
                if step >= 4096 {
                    assert!(without_stream > 0, "step {step}");
                }
            }
        }
    }

    #[test]
    fn large_data_segments_read_straight_into_their_frames_keep_padding_and_digests() {
        let d = Digests {
            header: true,
            data: true,
        };
        let big = |itt: u32, len: usize| {
            nop(
                itt,
                (0..len).map(|i| (i * 7 + itt as usize) as u8).collect(),
            )
        };
        let frames = [
            big(1, DIRECT_MIN),
            big(2, 40_001),
            nop(3, vec![3; 5]),
            big(4, 65_537),
        ];
        let mut bytes = encode_all(&frames, d).unwrap();
        // The second PDU's data digest is wrong: it is skipped whole, the rest still frames.
        let second_end = frames[..2]
            .iter()
            .map(|f| f.encode(d).unwrap().len())
            .sum::<usize>();
        bytes[second_end - 1] ^= 0x40;
        for step in [1000, 4096, 70_000] {
            let mut r = PduReader::new(Trickle(bytes.clone(), 0, step));
            let mut got = Vec::new();
            loop {
                match r.read(d, 1 << 20).unwrap() {
                    Incoming::Pdu(f) => got.push(Some(f)),
                    Incoming::Bad(PduError::DataDigest { .. }, _) => got.push(None),
                    Incoming::Closed => break,
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(
                got,
                vec![
                    Some(frames[0].clone()),
                    None,
                    Some(frames[2].clone()),
                    Some(frames[3].clone())
                ],
                "step {step}"
            );
        }
        // Cut inside a large data segment: an error, not a frame.
        let cut = encode_all(&frames[..1], d).unwrap();
        let mut r = PduReader::new(Trickle(cut[..cut.len() - 100].to_vec(), 0, 4096));
        assert!(matches!(r.read(d, 1 << 20), Err(WireError::Truncated)));
    }

    #[test]
    fn a_large_data_segment_goes_into_the_buffer_lent_for_it() {
        let data: Vec<u8> = (0..40_001u32).map(|i| (i % 253) as u8).collect();
        let frames = [nop(1, data.clone()), nop(2, vec![2; 9])];
        for digests in BOTH_DIGESTS {
            let bytes = encode_all(&frames, digests).unwrap();
            let mut r = PduReader::new(Trickle(bytes, 0, 4096));
            let mut lend = |h: &Header| (h.data_len > 1000).then(|| (vec![9u8; 3 + 40_001 + 5], 3));
            match r.read_placing(digests, 1 << 20, &mut lend).unwrap() {
                Received::Placed { header, buf, len } if !digests.data => {
                    assert_eq!((header, len), (frames[0].header, data.len()));
                    assert_eq!(&buf[..3], &[9, 9, 9]);
                    assert_eq!(&buf[3..3 + len], &data[..]);
                    assert_eq!(&buf[3 + len..], &[9; 5]);
                }
                // With a data digest to check, nothing is placed.
                Received::Incoming(Incoming::Pdu(f)) if digests.data => assert_eq!(f, frames[0]),
                other => panic!("{other:?}"),
            }
            match r.read_placing(digests, 1 << 20, &mut lend).unwrap() {
                Received::Incoming(Incoming::Pdu(f)) => assert_eq!(f, frames[1]),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_bad_data_digest_skips_the_pdu_and_a_cut_one_is_an_error() {
        let d = Digests {
            header: true,
            data: true,
        };
        let mut bytes = nop(1, vec![1; 100]).encode(d).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        bytes.extend_from_slice(&nop(2, vec![2; 10]).encode(d).unwrap());
        let mut r = PduReader::new(Trickle(bytes.clone(), 0, 13));
        assert!(matches!(
            r.read(d, 8192).unwrap(),
            Incoming::Bad(PduError::DataDigest { .. }, _)
        ));
        match r.read(d, 8192).unwrap() {
            Incoming::Pdu(f) => assert_eq!(f.data, vec![2; 10]),
            other => panic!("{other:?}"),
        }
        let mut cut = PduReader::new(Trickle(bytes[..60].to_vec(), 0, 1000));
        assert!(matches!(cut.read(d, 8192), Err(WireError::Truncated)));
        let mut long = PduReader::new(Trickle(bytes, 0, 1000));
        assert!(matches!(long.read(d, 64), Err(WireError::Pdu(_))));
    }
}
