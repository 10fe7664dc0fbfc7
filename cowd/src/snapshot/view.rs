//! [`SnapshotView`]: the device as it was at the snapshot point, read-only, while the
//! session runs and before its mover starts.
//!
//! A block still pending is read from the device (nobody wrote it since T); a block saved by
//! copy-before-write is read from the container; a block that was a hole at T reads as
//! zeroes. Filesystem readers use it to find the blocks in use *at T*.

use std::sync::Arc;

use super::session::Session;
use crate::device::{BlockDevice, Capabilities, DeviceError, ErrorKind, Op, Result};

/// The image at T of a running session.
#[derive(Debug)]
pub struct SnapshotView {
    session: Arc<Session>,
    dev: Arc<dyn BlockDevice>,
}

impl SnapshotView {
    /// A view of `session` over its device `dev` (the device below the engine).
    pub fn new(session: Arc<Session>, dev: Arc<dyn BlockDevice>) -> SnapshotView {
        SnapshotView { session, dev }
    }

    fn read_block(&self, b: u32, buf: &mut [u8], in_block: usize) -> Result<()> {
        let s = &self.session;
        let (off, len) = s.block_extent(b);
        let _held = s.locks.lock(b);
        if s.pending.contains(b) {
            return self.dev.read_at(buf, off + in_block as u64);
        }
        if s.zeroes.lock().unwrap().contains(b) {
            buf.fill(0);
            return Ok(());
        }
        let mut whole = vec![0u8; len];
        match s.container.read_block(b, &mut whole) {
            Some(r) => {
                r?;
                buf.copy_from_slice(&whole[in_block..in_block + buf.len()]);
                Ok(())
            }
            None => {
                let why = std::io::Error::other(format!(
                    "block {b} is no longer available as it was at T"
                ));
                Err(DeviceError {
                    kind: ErrorKind::Io,
                    op: Op::Read,
                    offset: off,
                    len: len as u64,
                    source: Some(why),
                })
            }
        }
    }
}

impl BlockDevice for SnapshotView {
    fn size(&self) -> u64 {
        self.dev.size()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: true,
            ..Capabilities::default()
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let bs = u64::from(self.session.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let b = (at / bs) as u32;
            let in_block = (at % bs) as usize;
            let n = (bs as usize - in_block).min(buf.len() - done);
            self.read_block(b, &mut buf[done..done + n], in_block)?;
            done += n;
        }
        Ok(())
    }
}
