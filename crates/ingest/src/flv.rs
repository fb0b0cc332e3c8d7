//! FLV writing (what the RTMP listener publishes) and the little FLV reading the pipeline needs.
//!
//! An FLV stream is a 9-byte file header followed by `PreviousTagSize0` (4 zero bytes), then tags:
//! an 11-byte tag header (type, 24-bit body size, 24-bit timestamp + 8-bit extension, 24-bit
//! stream id = 0), the body, and a 4-byte `PreviousTagSize` (11 + body size).

use bytes::{BufMut, Bytes, BytesMut};

/// Tag type of an audio tag.
pub const TAG_AUDIO: u8 = 8;
/// Tag type of a video tag.
pub const TAG_VIDEO: u8 = 9;
/// Tag type of a script data tag (`onMetaData`).
pub const TAG_SCRIPT: u8 = 18;

/// Length of the file header including `PreviousTagSize0`.
pub const FILE_HEADER_LEN: usize = 13;
/// Length of a tag header.
pub const TAG_HEADER_LEN: usize = 11;
/// The largest body a tag can carry (24-bit size field).
pub const MAX_TAG_BODY: usize = 0x00FF_FFFF;

/// A tag body too large for FLV's 24-bit size field.
#[derive(Debug, thiserror::Error)]
#[error("FLV tag body of {0} bytes exceeds the 16 MiB limit")]
pub struct TagTooLarge(pub usize);

/// The 9-byte FLV file header followed by `PreviousTagSize0`.
pub fn file_header(has_audio: bool, has_video: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(FILE_HEADER_LEN);
    write_file_header(&mut out, has_audio, has_video);
    out.freeze()
}

/// Appends the file header (with `PreviousTagSize0`) to `out`.
pub fn write_file_header(out: &mut BytesMut, has_audio: bool, has_video: bool) {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    out.put_slice(b"FLV");
    out.put_u8(1);
    out.put_u8(flags);
    out.put_u32(9);
    out.put_u32(0);
}

/// Appends one whole tag (header, body, `PreviousTagSize`) to `out`.
pub fn write_tag(
    out: &mut BytesMut,
    tag_type: u8,
    timestamp_ms: u32,
    body: &[u8],
) -> Result<(), TagTooLarge> {
    if body.len() > MAX_TAG_BODY {
        return Err(TagTooLarge(body.len()));
    }
    let size = body.len() as u32;
    out.reserve(TAG_HEADER_LEN + body.len() + 4);
    out.put_u8(tag_type);
    put_u24(out, size);
    put_u24(out, timestamp_ms & 0x00FF_FFFF);
    out.put_u8((timestamp_ms >> 24) as u8);
    put_u24(out, 0);
    out.put_slice(body);
    out.put_u32(TAG_HEADER_LEN as u32 + size);
    Ok(())
}

/// One whole tag as its own buffer.
pub fn tag(tag_type: u8, timestamp_ms: u32, body: &[u8]) -> Result<Bytes, TagTooLarge> {
    let mut out = BytesMut::new();
    write_tag(&mut out, tag_type, timestamp_ms, body)?;
    Ok(out.freeze())
}

/// The length of a whole tag with the given body length, `PreviousTagSize` included.
pub fn tag_len(body_len: usize) -> usize {
    TAG_HEADER_LEN + body_len + 4
}

fn put_u24(out: &mut BytesMut, v: u32) {
    out.put_u8((v >> 16) as u8);
    out.put_u8((v >> 8) as u8);
    out.put_u8(v as u8);
}

fn u24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

/// One tag seen by [`tags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagRef<'a> {
    pub tag_type: u8,
    pub timestamp_ms: u32,
    pub body: &'a [u8],
}

/// Iterates over the whole tags of an FLV byte stream that starts with the file header. Stops at
/// the first incomplete or inconsistent tag.
pub fn tags(buf: &[u8]) -> impl Iterator<Item = TagRef<'_>> {
    tags_from(buf, header_end(buf))
}

/// Iterates over the whole tags of a chunk that starts on a tag (a live chunk of a session).
pub fn chunk_tags(buf: &[u8]) -> impl Iterator<Item = TagRef<'_>> {
    tags_from(buf, Some(0))
}

fn tags_from(buf: &[u8], mut pos: Option<usize>) -> impl Iterator<Item = TagRef<'_>> {
    std::iter::from_fn(move || {
        let start = pos?;
        let header = buf.get(start..start.checked_add(TAG_HEADER_LEN)?)?;
        let size = u24(&header[1..4]) as usize;
        let body_start = start + TAG_HEADER_LEN;
        let body = buf.get(body_start..body_start + size)?;
        let prev = buf.get(body_start + size..body_start + size + 4)?;
        let prev = u32::from_be_bytes([prev[0], prev[1], prev[2], prev[3]]) as usize;
        if prev != TAG_HEADER_LEN + size {
            pos = None;
            return None;
        }
        pos = Some(body_start + size + 4);
        Some(TagRef {
            tag_type: header[0] & 0x1F,
            timestamp_ms: u24(&header[4..7]) | (u32::from(header[7]) << 24),
            body,
        })
    })
}

/// Where the first tag starts, if `buf` begins with a valid FLV file header.
fn header_end(buf: &[u8]) -> Option<usize> {
    if buf.len() < 9 || &buf[..3] != b"FLV" || buf[3] != 1 {
        return None;
    }
    let data_offset = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) as usize;
    if data_offset < 9 {
        return None;
    }
    // The header is followed by PreviousTagSize0.
    data_offset.checked_add(4)
}

/// The timestamp in milliseconds of the first audio or video tag of an FLV byte stream (file
/// header first), or `None` if `buf` is not FLV or holds no whole audio/video tag.
pub fn first_timestamp(buf: &[u8]) -> Option<u32> {
    tags(buf)
        .find(|t| t.tag_type == TAG_AUDIO || t.tag_type == TAG_VIDEO)
        .map(|t| t.timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_flags() {
        assert_eq!(
            &file_header(true, true)[..],
            b"FLV\x01\x05\0\0\0\x09\0\0\0\0"
        );
        assert_eq!(file_header(false, true)[4], 1);
        assert_eq!(file_header(true, false)[4], 4);
    }

    #[test]
    fn round_trip_with_extended_timestamp() {
        let mut out = BytesMut::new();
        write_file_header(&mut out, true, true);
        write_tag(&mut out, TAG_SCRIPT, 0, b"\x02\x00\x0aonMetaData").unwrap();
        write_tag(&mut out, TAG_VIDEO, 0x0123_4567, &[0x17, 0, 0, 0, 0]).unwrap();
        write_tag(&mut out, TAG_AUDIO, 0x0123_4580, &[0xAF, 0]).unwrap();
        let seen: Vec<_> = tags(&out).collect();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].tag_type, TAG_SCRIPT);
        assert_eq!(seen[1].tag_type, TAG_VIDEO);
        assert_eq!(seen[1].timestamp_ms, 0x0123_4567);
        assert_eq!(seen[1].body, &[0x17, 0, 0, 0, 0]);
        assert_eq!(seen[2].timestamp_ms, 0x0123_4580);
        assert_eq!(first_timestamp(&out), Some(0x0123_4567));
        // The byte layout of one tag: 11-byte header, body, PreviousTagSize.
        let one = tag(TAG_AUDIO, 0x0A0B_0C0D, &[1, 2]).unwrap();
        assert_eq!(
            &one[..],
            &[
                8, 0, 0, 2, 0x0B, 0x0C, 0x0D, 0x0A, 0, 0, 0, 1, 2, 0, 0, 0, 13
            ]
        );
        assert_eq!(one.len(), tag_len(2));
    }

    #[test]
    fn first_timestamp_needs_a_whole_av_tag() {
        assert_eq!(first_timestamp(b""), None);
        assert_eq!(first_timestamp(b"garbage garbage garbage garbage"), None);
        assert_eq!(first_timestamp(&[0xFF; 64]), None);
        let mut out = BytesMut::new();
        write_file_header(&mut out, true, true);
        assert_eq!(first_timestamp(&out), None);
        write_tag(&mut out, TAG_SCRIPT, 5, b"meta").unwrap();
        assert_eq!(first_timestamp(&out), None);
        write_tag(&mut out, TAG_VIDEO, 40, &[0x17; 100]).unwrap();
        // Torn tag: no answer.
        assert_eq!(first_timestamp(&out[..out.len() - 1]), None);
        assert_eq!(first_timestamp(&out), Some(40));
        // A lying PreviousTagSize stops the walk.
        let mut bad = out.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(first_timestamp(&bad), None);
    }

    #[test]
    fn oversized_body_is_refused() {
        let body = vec![0u8; MAX_TAG_BODY + 1];
        assert!(tag(TAG_VIDEO, 0, &body).is_err());
    }

    /// Any stream or chunk: the tags read lie end to end inside it, from where its header says
    /// they start, each as long as its header and `PreviousTagSize` say.
    #[test]
    fn fuzz_flv() {
        fuzzing::Target::new("flv").run(|data| {
            let file: Vec<_> = tags(data).collect();
            let chunk: Vec<_> = chunk_tags(data).collect();
            for (seen, start) in [(file, header_end(data)), (chunk, Some(0))] {
                let Some(mut pos) = start else {
                    assert!(seen.is_empty());
                    continue;
                };
                for t in seen {
                    let body_at = t.body.as_ptr() as usize - data.as_ptr() as usize;
                    assert_eq!(body_at, pos + TAG_HEADER_LEN);
                    pos += tag_len(t.body.len());
                    assert!(pos <= data.len());
                }
            }
            let _ = first_timestamp(data);
        });
    }
}
