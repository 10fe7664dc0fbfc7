//! Writing a gather list whole: what `Write::write_all_vectored` will do once it is stable.
//! The NBD server and client and the iSCSI target and initiator send headers and data that
//! stay where they are with it.

use std::io::{self, IoSlice, Write};

/// Writes every byte of every slice (one `writev` in the common case).
pub fn write_all(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most 3 bytes per call, and is interrupted every other call.
    struct Stingy(Vec<u8>, bool);

    impl Write for Stingy {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = b.len().min(3);
            self.0.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_byte_of_every_slice_in_order() {
        let mut w = Stingy(Vec::new(), false);
        let (a, b, c) = (b"hello".to_vec(), Vec::new(), b", world".to_vec());
        write_all(
            &mut w,
            &mut [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)],
        )
        .unwrap();
        assert_eq!(w.0, b"hello, world");
    }
}
