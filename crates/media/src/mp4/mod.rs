//! ISO-BMFF boxes: headers, iteration over children, a streaming splitter and a writer.

mod reader;
mod splitter;
mod writer;

use std::fmt;

pub use reader::Reader;
pub use splitter::{BoxSplitter, Mp4Box};
pub use writer::BoxWriter;

use crate::{Error, Result};

/// A box type. `Display` shows printable ASCII as is and escapes the rest, so a garbage type
/// in an error message stays readable.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCc({self})")
    }
}

/// A parsed box header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxHeader {
    pub kind: [u8; 4],
    /// 8, or 16 with a 64-bit `largesize`.
    pub header_len: usize,
    /// Whole box size including the header; `None` for `size == 0` ("to the end of the
    /// file"), which only the caller can judge legal.
    pub size: Option<u64>,
}

impl BoxHeader {
    /// Parses the header at the start of `buf`. [`Error::Truncated`] when `buf` is too short
    /// to hold it; [`Error::BadBoxSize`] when the size is smaller than the header itself.
    pub fn parse(buf: &[u8]) -> Result<BoxHeader> {
        let mut r = Reader::new(buf);
        let size32 = r.u32("box header")?;
        let kind = r.array::<4>("box header")?;
        let (header_len, size) = match size32 {
            0 => (8, None),
            1 => (16, Some(r.u64("box largesize")?)),
            s => (8, Some(u64::from(s))),
        };
        if let Some(s) = size
            && s < header_len as u64
        {
            return Err(Error::BadBoxSize {
                kind: FourCc(kind),
                size: s,
            });
        }
        Ok(BoxHeader {
            kind,
            header_len,
            size,
        })
    }
}

/// A box inside a buffer: `data` is the whole box, header included.
#[derive(Debug, Clone, Copy)]
pub struct RawBox<'a> {
    pub kind: [u8; 4],
    pub header_len: usize,
    /// Offset of the box within the buffer iterated over.
    pub offset: usize,
    pub data: &'a [u8],
}

impl<'a> RawBox<'a> {
    pub fn body(&self) -> &'a [u8] {
        self.data.get(self.header_len..).unwrap_or(&[])
    }

    pub fn fourcc(&self) -> FourCc {
        FourCc(self.kind)
    }

    pub fn is(&self, kind: &[u8; 4]) -> bool {
        &self.kind == kind
    }
}

/// Iterates over the boxes laid end to end in a buffer. After the first error it yields
/// nothing more: framing is lost.
#[derive(Debug, Clone)]
pub struct Boxes<'a> {
    buf: &'a [u8],
    pos: usize,
    open_ended_ok: bool,
    failed: bool,
}

impl<'a> Boxes<'a> {
    /// Children of a box: `size == 0` is illegal here (ISO 14496-12 allows it only for the
    /// last box of a file).
    pub fn children(body: &'a [u8]) -> Self {
        Self {
            buf: body,
            pos: 0,
            open_ended_ok: false,
            failed: false,
        }
    }

    /// Top-level boxes of a complete file, where the last box may have `size == 0`.
    pub fn file(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            open_ended_ok: true,
            failed: false,
        }
    }

    fn next_box(&mut self) -> Result<RawBox<'a>> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let h = BoxHeader::parse(rest)?;
        let len = match h.size {
            Some(s) => s,
            None if self.open_ended_ok => rest.len() as u64,
            None => {
                return Err(Error::BadBoxSize {
                    kind: FourCc(h.kind),
                    size: 0,
                });
            }
        };
        if len > rest.len() as u64 {
            return Err(Error::Truncated {
                what: "box body",
                need: len,
                have: rest.len() as u64,
            });
        }
        let len = len as usize;
        let data = rest.get(..len).unwrap_or(&[]);
        let b = RawBox {
            kind: h.kind,
            header_len: h.header_len,
            offset: self.pos,
            data,
        };
        self.pos += len;
        Ok(b)
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<RawBox<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.next_box();
        self.failed = r.is_err();
        Some(r)
    }
}

/// The first child of `body` with type `kind`, if any.
pub fn find_child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Result<Option<RawBox<'a>>> {
    for b in Boxes::children(body) {
        let b = b?;
        if b.is(kind) {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// Like [`find_child`], but a missing box is an error naming it.
pub fn require_child<'a>(body: &'a [u8], kind: &[u8; 4], parent: &str) -> Result<RawBox<'a>> {
    find_child(body, kind)?
        .ok_or_else(|| Error::malformed(format!("{parent}: no `{}` box", FourCc(*kind))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers() {
        let h = BoxHeader::parse(b"\0\0\0\x10moofxxxxxxxx").unwrap();
        assert_eq!((h.kind, h.header_len, h.size), (*b"moof", 8, Some(16)));
        let h = BoxHeader::parse(b"\0\0\0\x01mdat\0\0\0\x01\0\0\0\0").unwrap();
        assert_eq!((h.header_len, h.size), (16, Some(1 << 32)));
        assert_eq!(BoxHeader::parse(b"\0\0\0\0mdat").unwrap().size, None);
        assert!(matches!(
            BoxHeader::parse(b"\0\0\0\x07free"),
            Err(Error::BadBoxSize { .. })
        ));
        assert!(matches!(
            BoxHeader::parse(b"\0\0\0\x01mdat\0\0\0\0\0\0\0\x0f"),
            Err(Error::BadBoxSize { .. })
        ));
        assert!(matches!(
            BoxHeader::parse(b"\0\0\0"),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            BoxHeader::parse(b"\0\0\0\x01mdat\0\0"),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn iterates_and_stops_at_errors() {
        let buf = b"\0\0\0\x08free\0\0\0\x0cskip1234\0\0\0\x20oops";
        let kinds: Vec<_> = Boxes::children(buf).collect();
        assert_eq!(kinds.len(), 3);
        assert!(kinds[0].as_ref().unwrap().is(b"free"));
        assert_eq!(kinds[1].as_ref().unwrap().body(), b"1234");
        assert!(kinds[2].is_err());
        // size 0 extends to the end of a file, never of a parent box.
        let open = b"\0\0\0\x08free\0\0\0\0mdatabc";
        assert_eq!(Boxes::file(open).last().unwrap().unwrap().body(), b"abc");
        assert!(Boxes::children(open).last().unwrap().is_err());
    }

    #[test]
    fn fourcc_display_escapes() {
        assert_eq!(FourCc(*b"moov").to_string(), "moov");
        assert_eq!(FourCc([0, b'a', 0xff, b' ']).to_string(), "\\x00a\\xff ");
    }
}
