//! Writing boxes: open with a placeholder size, patch it when the box is closed, so nested
//! boxes need no size arithmetic by hand.

use bytes::{BufMut, BytesMut};

/// An open box inside a [`BytesMut`]; [`BoxWriter::finish`] patches its 32-bit size.
#[derive(Debug)]
#[must_use = "a box must be finished to get its size"]
pub struct BoxWriter {
    start: usize,
}

impl BoxWriter {
    pub fn start(buf: &mut BytesMut, kind: &[u8; 4]) -> Self {
        let start = buf.len();
        buf.put_u32(0);
        buf.put_slice(kind);
        Self { start }
    }

    pub fn start_full(buf: &mut BytesMut, kind: &[u8; 4], version: u8, flags: u32) -> Self {
        let w = Self::start(buf, kind);
        buf.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        w
    }

    /// Patches the size. Boxes we write are bounded far below 4 GiB by the callers (only
    /// `mdat` could grow that big, and it is written with an explicit size instead).
    pub fn finish(self, buf: &mut BytesMut) {
        let size = buf.len() - self.start;
        debug_assert!(size <= u32::MAX as usize);
        if let Some(slot) = buf.get_mut(self.start..self.start + 4) {
            slot.copy_from_slice(&(size as u32).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4::Boxes;

    #[test]
    fn nested_sizes_are_patched() {
        let mut buf = BytesMut::new();
        let outer = BoxWriter::start(&mut buf, b"moov");
        let inner = BoxWriter::start_full(&mut buf, b"mvhd", 1, 0x20);
        buf.put_u32(7);
        inner.finish(&mut buf);
        outer.finish(&mut buf);
        assert_eq!(buf.len(), 24);
        let moov = Boxes::children(&buf).next().unwrap().unwrap();
        assert_eq!(moov.data.len(), 24);
        let mvhd = Boxes::children(moov.body()).next().unwrap().unwrap();
        assert_eq!(mvhd.body(), &[1, 0, 0, 0x20, 0, 0, 0, 7]);
    }
}
