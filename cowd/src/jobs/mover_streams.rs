//! Stream copy targets in a mover's job: block→stream segments write the source's blocks
//! into a [`StreamWriter`] per copy target (records carry their source offsets; the trailer
//! and filemark go out when the job's segments are done), inline data goes between them as
//! Inline records, stream→block segments read the next bytes of a [`StreamReader`] in order
//! (Data and Inline alike: a stream is its bytes in order). A stream has no failover: its path is the one
//! reached; a full medium goes on to the target's next `media`.

use tracing::info;

use super::{PIECE, Running, STREAM_BLOCK, Stop};
use crate::jobs::spec::{EndpointRef, JobError, JobSpec, TransferSpec};
use crate::san::paths::{Opened, PathSpec};
use crate::scsi::inquiry::naa;
use crate::stream::medium::{MediumKind, MediumSpec};
use crate::stream::reader::StreamReader;
use crate::stream::writer::{StreamInfo, StreamWriter};

impl Running<'_> {
    pub(super) fn is_stream(&self, ep: &EndpointRef) -> bool {
        ep.copy_target()
            .and_then(|n| self.reached.get(n))
            .is_some_and(|r| matches!(r.opened, Opened::Stream { .. }))
    }

    /// The media of a stream copy target: the path reached, then the target's further
    /// media for when one is full.
    fn media(&self, name: &str) -> Vec<MediumSpec> {
        let r = &self.reached[name];
        let Opened::Stream { path, tape } = &r.opened else {
            return Vec::new();
        };
        let kind = |tape: bool| if tape { Some(MediumKind::Tape) } else { None };
        let mut media = vec![MediumSpec {
            kind: kind(*tape),
            ..MediumSpec::new(path)
        }];
        media.extend(r.target.media.iter().filter_map(|m| match m {
            PathSpec::Tape(p) => Some(MediumSpec {
                kind: kind(true),
                ..MediumSpec::new(p)
            }),
            PathSpec::Stream(p) => Some(MediumSpec::new(p)),
            _ => None,
        }));
        media
    }

    /// A block→stream segment: the source's blocks into the stream's records, which carry
    /// their source offsets; or inline data into Inline records. No failover: a stream cannot
    /// go on through another path.
    pub(super) fn write_stream(&mut self, t: &TransferSpec, spec: &JobSpec) -> Result<(), Stop> {
        let name = t
            .dst
            .copy_target()
            .expect("a stream is a copy target")
            .to_owned();
        let failed = |reason| Stop::failed(JobError::DeviceFailure, t.segment, false, reason);
        if !self.writers.contains_key(&name) {
            // The stream's source: the first device the job copies to it.
            let source = (spec.transfers.iter())
                .filter(|s| s.dst == t.dst)
                .map(|s| &s.src)
                .find(|src| **src != EndpointRef::Inline);
            let designator = match source {
                Some(EndpointRef::Export(e)) => naa(crate::export::unit_id(e)).to_vec(),
                Some(EndpointRef::CopyTarget(c)) => c.as_bytes().iter().take(32).copied().collect(),
                Some(EndpointRef::Inline) | None => Vec::new(),
            };
            let label = match source {
                Some(src) => format!("cowd job {} from {src}", self.id),
                None => format!("cowd job {}", self.id),
            };
            let info = StreamInfo {
                record_size: self.reached[&name].target.record_size,
                label,
                ..StreamInfo::new(&designator, STREAM_BLOCK)
            };
            let w = StreamWriter::new(self.media(&name), info)
                .map_err(|e| failed(format!("copy target {name}: {e}")))?;
            self.writers.insert(name.clone(), w);
        }
        let mut done = 0;
        while done < t.bytes {
            let len = PIECE.min(t.bytes - done) as usize;
            self.check()?;
            let mut buf = std::mem::take(&mut self.buffer);
            buf.resize(len, 0);
            let mut result = self.read(t, &mut buf, t.src_offset + done);
            if result.is_ok() {
                let w = self.writers.get_mut(&name).expect("opened above");
                result = match t.src {
                    EndpointRef::Inline => w.write_inline(&buf),
                    _ => w.write_blocks(t.src_offset + done, &buf),
                }
                .map_err(|e| failed(format!("copy target {name}: {e}")));
            }
            self.buffer = buf;
            result?;
            done += len as u64;
            self.bytes += len as u64;
        }
        Ok(())
    }

    /// A stream→block segment: the next `bytes` of the stream, in order, to the destination
    /// from its offset.
    pub(super) fn read_stream(&mut self, t: &TransferSpec) -> Result<(), Stop> {
        let name = t
            .src
            .copy_target()
            .expect("a stream is a copy target")
            .to_owned();
        let failed = |reason| Stop::failed(JobError::DeviceFailure, t.segment, true, reason);
        if !self.readers.contains_key(&name) {
            let r = StreamReader::open(self.media(&name))
                .map_err(|e| failed(format!("copy target {name}: {e}")))?;
            self.readers.insert(name.clone(), (r, Vec::new()));
        }
        let mut done = 0;
        while done < t.bytes {
            self.check()?;
            let want = PIECE.min(t.bytes - done) as usize;
            let mut piece = std::mem::take(&mut self.buffer);
            piece.clear();
            {
                let (reader, left) = self.readers.get_mut(&name).expect("opened above");
                while piece.len() < want {
                    if left.is_empty() {
                        match reader.next_chunk() {
                            Ok(Some(chunk)) => left.extend_from_slice(chunk.bytes()),
                            Ok(None) => break,
                            Err(e) => {
                                self.buffer = piece;
                                return Err(failed(format!("copy target {name}: {e}")));
                            }
                        }
                        continue;
                    }
                    let take = (want - piece.len()).min(left.len());
                    piece.extend_from_slice(&left[..take]);
                    left.drain(..take);
                }
            }
            if piece.len() < want {
                self.buffer = piece;
                return Err(failed(format!(
                    "copy target {name}: the stream ended {} bytes short of the segment",
                    t.bytes - done - self.buffer.len() as u64
                )));
            }
            let result = self.write(t, &piece, t.dst_offset + done);
            self.buffer = piece;
            result?;
            done += want as u64;
            self.bytes += want as u64;
        }
        Ok(())
    }

    /// Ends the streams written: trailer and filemark.
    pub(super) fn finish_streams(&mut self) -> Result<(), Stop> {
        for (name, w) in self.writers.drain() {
            let summary = w.finish().map_err(|e| {
                let reason = format!("copy target {name}: {e}");
                Stop::failed(JobError::DeviceFailure, 0, false, reason)
            })?;
            info!(mover = %self.mover.config.name, job = self.id, target = %name,
                bytes = summary.bytes, records = summary.records, media = summary.media.len(),
                "stream written");
        }
        Ok(())
    }
}
