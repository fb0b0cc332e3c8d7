//! The input relay's wire format, sans I/O: one publisher session as a stream of frames, each
//! `kind: u8 | length: u32 (big-endian) | payload`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ingest::Container;

/// Larger than any chunk a port carries (64 KiB) or a prologue (1 MiB in all).
pub const MAX_FRAME: usize = 1 << 20;

const HEAD: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The session's number on the publisher's node, its container and its publisher.
    Started {
        session: u64,
        container: Container,
        peer: String,
    },
    /// Bytes a decoder joining later also needs (FLV header, codec headers).
    Prologue(Bytes),
    Data(Bytes),
    Ended(String),
    /// Sent when nothing else was for a second: a silent relay is a dead one.
    Alive,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown relay frame kind {0}")]
    UnknownKind(u8),
    #[error("relay frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed relay frame: {0}")]
    Malformed(&'static str),
}

impl Frame {
    pub fn encode(&self) -> Bytes {
        let (kind, payload) = match self {
            Frame::Started {
                session,
                container,
                peer,
            } => {
                let mut p = BytesMut::with_capacity(9 + peer.len());
                p.put_u64(*session);
                p.put_u8(match container {
                    Container::MpegTs => 0,
                    Container::Flv => 1,
                });
                p.put_slice(peer.as_bytes());
                (1, p.freeze())
            }
            Frame::Prologue(b) => (2, b.clone()),
            Frame::Data(b) => (3, b.clone()),
            Frame::Ended(reason) => (4, Bytes::copy_from_slice(reason.as_bytes())),
            Frame::Alive => (5, Bytes::new()),
        };
        let mut out = BytesMut::with_capacity(HEAD + payload.len());
        out.put_u8(kind);
        out.put_u32(payload.len() as u32);
        out.put_slice(&payload);
        out.freeze()
    }

    fn decode(kind: u8, mut payload: Bytes) -> Result<Frame, WireError> {
        Ok(match kind {
            1 => {
                if payload.len() < 9 {
                    return Err(WireError::Malformed("short session start"));
                }
                let session = payload.get_u64();
                let container = match payload.get_u8() {
                    0 => Container::MpegTs,
                    1 => Container::Flv,
                    _ => return Err(WireError::Malformed("unknown container")),
                };
                let peer = String::from_utf8_lossy(&payload).into_owned();
                Frame::Started {
                    session,
                    container,
                    peer,
                }
            }
            2 => Frame::Prologue(payload),
            3 => Frame::Data(payload),
            4 => Frame::Ended(String::from_utf8_lossy(&payload).into_owned()),
            5 => Frame::Alive,
            other => return Err(WireError::UnknownKind(other)),
        })
    }
}

/// Cuts frames out of the bytes as they arrive, however they are split. Holds at most one
/// frame and a head.
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// Adds bytes; refuses them if they would hold more than one whole frame needs.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        if self.buf.len() + bytes.len() > MAX_FRAME + HEAD + (64 << 10) {
            return Err(WireError::TooLarge(self.buf.len() + bytes.len()));
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < HEAD {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        if self.buf.len() < HEAD + len {
            return Ok(None);
        }
        self.buf.advance(HEAD);
        let payload = self.buf.split_to(len).freeze();
        Frame::decode(kind, payload).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Started {
                session: 7,
                container: Container::Flv,
                peer: "10.0.0.1:5000".into(),
            },
            Frame::Prologue(Bytes::from_static(b"FLV\x01")),
            Frame::Data(Bytes::from(vec![0x47; 188 * 7])),
            Frame::Alive,
            Frame::Data(Bytes::new()),
            Frame::Ended("publisher left".into()),
        ]
    }

    #[test]
    fn frames_survive_any_split() {
        let wire: Vec<u8> = frames().iter().flat_map(|f| f.encode()).collect();
        for step in [1, 2, 5, 7, 100, wire.len()] {
            let mut reader = FrameReader::default();
            let mut out = Vec::new();
            for piece in wire.chunks(step) {
                reader.push(piece).unwrap();
                while let Some(frame) = reader.next_frame().unwrap() {
                    out.push(frame);
                }
            }
            assert_eq!(out, frames(), "split every {step} bytes");
        }
    }

    #[test]
    fn hostile_frames_are_refused_without_buffering_them() {
        let mut reader = FrameReader::default();
        reader.push(&[3, 0xff, 0xff, 0xff, 0xff]).unwrap();
        assert_eq!(reader.next_frame(), Err(WireError::TooLarge(0xffff_ffff)));
        let mut reader = FrameReader::default();
        reader.push(&[9, 0, 0, 0, 0]).unwrap();
        assert_eq!(reader.next_frame(), Err(WireError::UnknownKind(9)));
        let mut reader = FrameReader::default();
        reader.push(&[1, 0, 0, 0, 3, 0, 0, 0]).unwrap();
        assert!(matches!(reader.next_frame(), Err(WireError::Malformed(_))));
        let mut reader = FrameReader::default();
        assert!(reader.push(&vec![0; MAX_FRAME * 2]).is_err());
    }

    /// Every frame read, and the error that ends the relay, if any.
    fn read_all(data: &[u8], piece: usize) -> (Vec<Frame>, Option<WireError>) {
        let mut reader = FrameReader::default();
        let mut frames = Vec::new();
        for chunk in data.chunks(piece) {
            if let Err(e) = reader.push(chunk) {
                return (frames, Some(e));
            }
            loop {
                match reader.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, None)
    }

    /// Whatever an ingest node (or anyone holding the cluster credential) sends is read as the
    /// same frames however it arrives, and each frame read encodes to one that reads back the
    /// same.
    #[test]
    fn fuzz_relay_wire() {
        fuzzing::Target::new("relay_wire").run(|data| {
            let whole = read_all(data, data.len().max(1));
            assert_eq!(read_all(data, 1 + data.len() % 13), whole);
            for frame in whole.0 {
                let mut reader = FrameReader::default();
                reader.push(&frame.encode()).unwrap();
                assert_eq!(reader.next_frame(), Ok(Some(frame)));
                assert_eq!(reader.next_frame(), Ok(None));
            }
        });
    }
}
