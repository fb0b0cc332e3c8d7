//! Checks on the raw RTMP chunk stream before rml_rtmp sees it: bounded message and chunk sizes
//! and AMF0 nesting, since rml_rtmp panics or recurses without limit on hostile input.

use std::collections::HashMap;

use super::{
    MAX_AMF_DEPTH, MAX_AMF_MESSAGE, MAX_CHUNK_SIZE, MAX_MEDIA_MESSAGE,
    MAX_MEDIA_MESSAGE_UNPUBLISHED,
};

/// Follows the RTMP chunk framing of what a peer sends (without keeping payloads) and refuses
/// what `rml_rtmp` cannot handle safely: oversized messages, chunk sizes out of range, headers
/// that reference unknown chunk streams, a new message header before the previous message on
/// that chunk stream is complete, and chunk streams interleaved mid-message (rml_rtmp assembles
/// one message at a time).
pub(super) struct ChunkGuard {
    chunk_size: u32,
    publishing: bool,
    streams: HashMap<u32, ChunkStream>,
    /// The chunk stream whose message is partly received, if any.
    in_progress: Option<u32>,
    header: Vec<u8>,
    /// Payload bytes left in the current chunk, once its header is read.
    payload: Option<(u32, u32)>,
    /// The payload so far of the message in progress unless it is audio/video (bounded by
    /// [`MAX_AMF_MESSAGE`]).
    captured: Vec<u8>,
}

#[derive(Clone, Copy, Default)]
struct ChunkStream {
    length: u32,
    type_id: u8,
    extended_timestamp: bool,
    remaining: u32,
}

impl ChunkGuard {
    pub(super) fn new() -> Self {
        Self {
            chunk_size: 128,
            publishing: false,
            streams: HashMap::new(),
            in_progress: None,
            header: Vec::with_capacity(18),
            payload: None,
            captured: Vec::new(),
        }
    }

    pub(super) fn set_publishing(&mut self, publishing: bool) {
        self.publishing = publishing;
    }

    pub(super) fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            if let Some((csid, left)) = self.payload {
                let take = (left as usize).min(data.len());
                let (chunk, rest) = data.split_at(take);
                data = rest;
                let stream = self.streams.entry(csid).or_default();
                if !is_media(stream.type_id) {
                    self.captured.extend_from_slice(chunk);
                }
                stream.remaining -= take as u32;
                let left = left - take as u32;
                if left > 0 {
                    self.payload = Some((csid, left));
                } else {
                    self.payload = None;
                    self.chunk_done(csid)?;
                }
                continue;
            }
            // Header bytes: take one at a time until the header is complete (headers are tiny).
            self.header.push(data[0]);
            data = &data[1..];
            self.try_header()?;
        }
        Ok(())
    }

    fn try_header(&mut self) -> Result<(), String> {
        let h = &self.header;
        let fmt = h[0] >> 6;
        let basic = match h[0] & 0x3F {
            0 => 2,
            1 => 3,
            _ => 1,
        };
        let message_header = [11, 7, 3, 0][fmt as usize];
        if h.len() < basic + message_header {
            return Ok(());
        }
        let csid = match basic {
            2 => u32::from(h[1]) + 64,
            3 => u32::from(h[2]) * 256 + u32::from(h[1]) + 64,
            _ => u32::from(h[0] & 0x3F),
        };
        let previous = self.streams.get(&csid).copied();
        if fmt != 0 && previous.is_none() {
            return Err(format!("chunk on unknown chunk stream {csid}"));
        }
        let mh = &h[basic..basic + message_header];
        let extended = if fmt < 3 {
            u24(&mh[0..3]) == 0x00FF_FFFF
        } else {
            previous.is_some_and(|p| p.extended_timestamp)
        };
        if h.len() < basic + message_header + if extended { 4 } else { 0 } {
            return Ok(());
        }
        let mut stream = previous.unwrap_or_default();
        if fmt <= 1 {
            if stream.remaining != 0 {
                return Err(format!(
                    "new message on chunk stream {csid} before the previous one was complete"
                ));
            }
            stream.length = u24(&mh[3..6]);
            stream.type_id = mh[6];
        }
        if fmt < 3 {
            stream.extended_timestamp = extended;
        }
        if stream.remaining == 0 {
            // The first chunk of a message.
            if let Some(other) = self.in_progress
                && other != csid
            {
                return Err(format!(
                    "chunk stream {csid} interleaved with the incomplete message on {other}"
                ));
            }
            let limit = match stream.type_id {
                8 | 9 if self.publishing => MAX_MEDIA_MESSAGE,
                8 | 9 => MAX_MEDIA_MESSAGE_UNPUBLISHED,
                22 => MAX_MEDIA_MESSAGE,
                _ => MAX_AMF_MESSAGE,
            };
            if stream.length > limit {
                return Err(format!(
                    "message of type {} and {} bytes exceeds the {limit}-byte limit",
                    stream.type_id, stream.length
                ));
            }
            stream.remaining = stream.length;
            self.captured.clear();
        } else if self.in_progress != Some(csid) {
            return Err(format!(
                "chunk stream {csid} interleaved with the incomplete message on {:?}",
                self.in_progress
            ));
        }
        let left = stream.remaining.min(self.chunk_size);
        self.streams.insert(csid, stream);
        self.header.clear();
        if left == 0 {
            self.chunk_done(csid)
        } else {
            self.payload = Some((csid, left));
            self.in_progress = Some(csid);
            Ok(())
        }
    }

    fn chunk_done(&mut self, csid: u32) -> Result<(), String> {
        let Some(stream) = self.streams.get(&csid).copied() else {
            return Ok(());
        };
        if stream.remaining > 0 {
            self.in_progress = Some(csid);
            return Ok(());
        }
        self.in_progress = None;
        let captured = std::mem::take(&mut self.captured);
        let word = captured
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match (stream.type_id, word) {
            (1, Some(value)) => {
                let size = value & 0x7FFF_FFFF;
                if !(1..=MAX_CHUNK_SIZE).contains(&size) {
                    return Err(format!("chunk size {size} out of range"));
                }
                self.chunk_size = size;
            }
            (1, None) => return Err("short set-chunk-size message".into()),
            (2, Some(value)) => {
                // Abort: the peer drops the partial message on that chunk stream.
                if let Some(s) = self.streams.get_mut(&value) {
                    s.remaining = 0;
                }
            }
            // AMF3 command/data: a format byte, then AMF0.
            (15 | 17, _) => check_amf0_depth(captured.get(1..).unwrap_or_default())?,
            (16 | 18 | 19 | 20, _) => check_amf0_depth(&captured)?,
            _ => {}
        }
        self.captured = captured;
        self.captured.clear();
        Ok(())
    }
}

fn is_media(type_id: u8) -> bool {
    matches!(type_id, 8 | 9 | 22)
}

/// Refuses AMF0 nested deeper than [`MAX_AMF_DEPTH`], following `rml_amf0`'s grammar without
/// recursion. Where the grammar stops making sense the scan stops: `rml_amf0` fails there too,
/// no deeper than the scan got.
fn check_amf0_depth(data: &[u8]) -> Result<(), String> {
    enum Frame {
        Object,
        Array(u32),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Option<&[u8]> {
        let s = data.get(*pos..pos.checked_add(n)?)?;
        *pos += n;
        Some(s)
    };
    loop {
        // What comes next: a property of an object, an element of an array, or a top value.
        match stack.last_mut() {
            Some(Frame::Object) => {
                let Some(len) = take(&mut pos, 2) else {
                    return Ok(());
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len == 0 {
                    // Object end: 00 00 09.
                    if take(&mut pos, 1) != Some(&[9]) {
                        return Ok(());
                    }
                    stack.pop();
                    continue;
                }
                if take(&mut pos, len).is_none() {
                    return Ok(());
                }
            }
            Some(Frame::Array(0)) => {
                stack.pop();
                continue;
            }
            Some(Frame::Array(n)) => *n -= 1,
            None => {}
        }
        let Some(&[marker]) = take(&mut pos, 1) else {
            return Ok(());
        };
        match marker {
            0 => {
                if take(&mut pos, 8).is_none() {
                    return Ok(());
                }
            }
            1 => {
                if take(&mut pos, 1).is_none() {
                    return Ok(());
                }
            }
            2 => {
                let Some(len) = take(&mut pos, 2) else {
                    return Ok(());
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if take(&mut pos, len).is_none() {
                    return Ok(());
                }
            }
            5 | 6 => {}
            3 => stack.push(Frame::Object),
            8 => {
                if take(&mut pos, 4).is_none() {
                    return Ok(());
                }
                stack.push(Frame::Object);
            }
            10 => {
                let Some(n) = take(&mut pos, 4) else {
                    return Ok(());
                };
                stack.push(Frame::Array(u32::from_be_bytes([n[0], n[1], n[2], n[3]])));
            }
            // An end marker as a value ends an array early (or the top level); elsewhere, and
            // any other marker, rml_amf0 stops with an error.
            9 => match stack.last() {
                Some(Frame::Array(_)) => {
                    stack.pop();
                }
                None => return Ok(()),
                Some(Frame::Object) => return Ok(()),
            },
            _ => return Ok(()),
        }
        if stack.len() > MAX_AMF_DEPTH {
            return Err(format!(
                "AMF0 value nested deeper than {MAX_AMF_DEPTH} levels"
            ));
        }
    }
}

fn u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkSerializer;
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::rml_amf0::{self, Amf0Value};
    use rml_rtmp::time::RtmpTimestamp;

    fn payload(type_id: u8, stream_id: u32, ts: u32, data: Vec<u8>) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            message_stream_id: stream_id,
            type_id,
            data: data.into(),
        }
    }

    #[test]
    fn guard_follows_what_rml_rtmp_serializes() {
        let mut ser = ChunkSerializer::new();
        let mut bytes = Vec::new();
        // Starts at 128-byte chunks, switches to 4096, with extended timestamps.
        bytes.extend(
            ser.serialize(&payload(9, 1, 10, vec![7; 60_000]), false, false)
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.set_max_chunk_size(4096, RtmpTimestamp::new(0))
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.serialize(&payload(9, 1, 40, vec![7; 100_000]), false, false)
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.serialize(&payload(8, 1, 0x0100_0000, vec![1; 300]), false, false)
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.serialize(&payload(8, 1, 0x0100_0020, vec![1; 5000]), false, false)
                .unwrap()
                .bytes,
        );
        bytes.extend(
            ser.serialize(&payload(20, 0, 0, vec![2; 100]), false, false)
                .unwrap()
                .bytes,
        );
        let mut guard = ChunkGuard::new();
        guard.set_publishing(true);
        // Byte by byte and all at once.
        for b in &bytes {
            guard.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(guard.chunk_size, 4096);
        let mut guard = ChunkGuard::new();
        guard.set_publishing(true);
        guard.feed(&bytes).unwrap();
        assert!(guard.payload.is_none() && guard.in_progress.is_none());
    }

    #[test]
    fn guard_refuses_oversize_and_nonsense() {
        let mut ser = ChunkSerializer::new();
        let big_amf = ser
            .serialize(&payload(20, 0, 0, vec![2; 70_000]), false, false)
            .unwrap()
            .bytes;
        assert!(ChunkGuard::new().feed(&big_amf).is_err());
        let media = ser
            .serialize(&payload(9, 1, 0, vec![2; 100_000]), false, false)
            .unwrap()
            .bytes;
        assert!(
            ChunkGuard::new().feed(&media).is_err(),
            "large media before publish"
        );
        // A continuation header on a chunk stream never seen.
        assert!(ChunkGuard::new().feed(&[0xC5, 1, 2, 3]).is_err());
        // Chunk size zero.
        let zero = [0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(ChunkGuard::new().feed(&zero).is_err());
        // A second full header on csid 4 before its 300-byte message is complete.
        let mut g = ChunkGuard::new();
        let first = [0x04, 0, 0, 0, 0, 0x01, 0x2C, 8, 1, 0, 0, 0];
        g.feed(&first).unwrap();
        g.feed(&[0; 128]).unwrap();
        assert!(g.feed(&first).is_err());
    }

    fn deep_object(levels: usize) -> Vec<u8> {
        // Object marker, then property "a" -> object ... (4 bytes a level).
        [0x03, 0x00, 0x01, b'a'].repeat(levels)
    }

    fn deep_array(levels: usize) -> Vec<u8> {
        [0x0A, 0, 0, 0, 1].repeat(levels)
    }

    /// What the guard lets through decodes on a 2 MiB stack (a tokio worker's default); what
    /// would overflow it (and abort the process) is refused.
    #[test]
    fn amf_nesting_is_bounded() {
        for bytes in [deep_object(MAX_AMF_DEPTH), deep_array(MAX_AMF_DEPTH)] {
            check_amf0_depth(&bytes).unwrap();
            let handle = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || {
                    let _ = rml_amf0::deserialize(&mut std::io::Cursor::new(bytes));
                })
                .unwrap();
            handle.join().unwrap();
        }
        assert!(check_amf0_depth(&deep_object(MAX_AMF_DEPTH + 1)).is_err());
        assert!(check_amf0_depth(&deep_array(MAX_AMF_DEPTH + 1)).is_err());
        // Wide is fine: an onMetaData-like object and a connect command.
        let values = vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(
                (0..200)
                    .map(|i| (format!("k{i}"), Amf0Value::Number(f64::from(i))))
                    .collect(),
            ),
            Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::Boolean(true)]),
        ];
        check_amf0_depth(&rml_amf0::serialize(&values).unwrap()).unwrap();

        // Through the guard, as a command message of 16 KiB.
        let mut ser = ChunkSerializer::new();
        let deep = ser
            .serialize(&payload(20, 0, 0, deep_object(4000)), false, false)
            .unwrap()
            .bytes;
        let err = ChunkGuard::new().feed(&deep).unwrap_err();
        assert!(err.contains("nested"), "{err}");
    }
}
