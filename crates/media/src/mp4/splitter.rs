//! Cuts a byte stream (ffmpeg's stdout, an upload) into top-level boxes without I/O.

use bytes::{Bytes, BytesMut};

use super::{BoxHeader, FourCc};
use crate::{Error, Result};

/// A complete top-level box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mp4Box {
    pub kind: [u8; 4],
    /// The whole box, header included.
    pub bytes: Bytes,
}

impl Mp4Box {
    pub fn fourcc(&self) -> FourCc {
        FourCc(self.kind)
    }
}

/// Push arbitrary chunks, pull complete boxes.
///
/// A box announcing more than `max_box_size` bytes is refused as soon as its header arrives,
/// before its body is buffered, so a peer cannot make us hold unbounded data. `size == 0`
/// ("to the end of the file") is refused too: on a live stream there is no end to wait for.
/// After an error the framing is lost; the splitter keeps returning that error.
#[derive(Debug)]
pub struct BoxSplitter {
    buf: BytesMut,
    max_box_size: u64,
}

impl BoxSplitter {
    pub fn new(max_box_size: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_box_size: max_box_size as u64,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as a box.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn next_box(&mut self) -> Result<Option<Mp4Box>> {
        let header = match BoxHeader::parse(&self.buf) {
            Ok(h) => h,
            Err(Error::Truncated { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let kind = FourCc(header.kind);
        let Some(size) = header.size else {
            return Err(Error::Unsupported(format!(
                "box `{kind}` with size 0 (to end of file) in a stream"
            )));
        };
        if size > self.max_box_size {
            return Err(Error::BoxTooLarge {
                kind,
                size,
                max: self.max_box_size,
            });
        }
        if (self.buf.len() as u64) < size {
            // Reserve once for the whole box rather than growing chunk by chunk; `size` is
            // bounded by `max_box_size` here.
            self.buf.reserve(size as usize - self.buf.len());
            return Ok(None);
        }
        let bytes = self.buf.split_to(size as usize).freeze();
        Ok(Some(Mp4Box {
            kind: header.kind,
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"\0\0\0\x0cftypiso6");
        v.extend_from_slice(b"\0\0\0\x01mdat\0\0\0\0\0\0\0\x13xyz");
        v.extend_from_slice(b"\0\0\0\x08free");
        v
    }

    #[test]
    fn splits_at_any_chunking() {
        let s = stream();
        for chunk in 1..=s.len() {
            let mut sp = BoxSplitter::new(1024);
            let mut got = Vec::new();
            for c in s.chunks(chunk) {
                sp.push(c);
                while let Some(b) = sp.next_box().unwrap() {
                    got.push(b);
                }
            }
            let kinds: Vec<_> = got.iter().map(|b| b.kind).collect();
            assert_eq!(kinds, [*b"ftyp", *b"mdat", *b"free"], "chunk {chunk}");
            assert_eq!(&got[1].bytes[16..], b"xyz");
            assert_eq!(sp.buffered(), 0);
        }
    }

    #[test]
    fn refuses_oversized_and_open_ended_boxes() {
        let mut sp = BoxSplitter::new(100);
        sp.push(b"\0\0\x10\0mdat");
        assert!(matches!(
            sp.next_box(),
            Err(Error::BoxTooLarge {
                size: 4096,
                max: 100,
                ..
            })
        ));
        let mut sp = BoxSplitter::new(100);
        sp.push(b"\0\0\0\x01mdat\xff\xff\xff\xff\xff\xff\xff\xff");
        assert!(matches!(sp.next_box(), Err(Error::BoxTooLarge { .. })));
        let mut sp = BoxSplitter::new(100);
        sp.push(b"\0\0\0\0mdat");
        assert!(matches!(sp.next_box(), Err(Error::Unsupported(_))));
        let mut sp = BoxSplitter::new(100);
        sp.push(b"\0\0\0\x03moov");
        assert!(matches!(sp.next_box(), Err(Error::BadBoxSize { .. })));
    }
}
