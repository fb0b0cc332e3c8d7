//! Just enough MPEG-TS (ISO 13818-1) to reject garbage and read the first PTS of a stream,
//! which the clock lock unwraps into Unix time.

use crate::{Error, Result};

pub const PACKET_LEN: usize = 188;
pub const SYNC_BYTE: u8 = 0x47;

/// One 188-byte transport packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsPacket<'a> {
    pub pid: u16,
    /// `payload_unit_start_indicator`: a PES packet or section starts in this payload.
    pub unit_start: bool,
    /// The payload after any adaptation field (may be empty).
    pub payload: &'a [u8],
}

/// Splits `buf` into packets. The buffer must be whole packets, each starting with the
/// sync byte; there is no resynchronisation, a miss means the input is not what we expect.
pub fn split_packets(buf: &[u8]) -> Result<Vec<TsPacket<'_>>> {
    if !buf.len().is_multiple_of(PACKET_LEN) {
        return Err(Error::NotMpegTs(format!(
            "{} bytes is not a whole number of {PACKET_LEN}-byte packets",
            buf.len()
        )));
    }
    let mut out = Vec::with_capacity(buf.len() / PACKET_LEN);
    for (i, p) in buf.chunks_exact(PACKET_LEN).enumerate() {
        out.push(parse_packet(p, i * PACKET_LEN)?);
    }
    Ok(out)
}

fn parse_packet(p: &[u8], offset: usize) -> Result<TsPacket<'_>> {
    let &[sync, b1, b2, b3, ..] = p else {
        return Err(Error::NotMpegTs(format!("short packet at offset {offset}")));
    };
    if sync != SYNC_BYTE {
        return Err(Error::NotMpegTs(format!(
            "sync byte missing at offset {offset}"
        )));
    }
    let pid = (u16::from(b1 & 0x1f) << 8) | u16::from(b2);
    let unit_start = b1 & 0x40 != 0;
    let control = (b3 >> 4) & 0x03;
    let mut start = 4;
    if control & 0x02 != 0 {
        let af_len = p.get(4).copied().map_or(0, usize::from);
        start = 5 + af_len;
        if start > PACKET_LEN {
            return Err(Error::NotMpegTs(format!(
                "adaptation field of {af_len} bytes overruns the packet at offset {offset}"
            )));
        }
    }
    let payload = if control & 0x01 != 0 {
        p.get(start..).unwrap_or(&[])
    } else {
        &[]
    };
    Ok(TsPacket {
        pid,
        unit_start,
        payload,
    })
}

/// What kinds of elementary streams start PES packets in `buf`: (video PES starts, whether an
/// audio PES started). Stream ids 0xE0–0xEF are video; 0xC0–0xDF (MPEG audio, AAC) and 0xBD
/// (private stream 1: AC-3 and friends) are audio.
pub fn pes_starts(buf: &[u8]) -> Result<(usize, bool)> {
    let (mut video, mut audio) = (0, false);
    for p in split_packets(buf)? {
        let &[0, 0, 1, stream_id, ..] = p.payload else {
            continue;
        };
        if !p.unit_start {
            continue;
        }
        match stream_id {
            0xE0..=0xEF => video += 1,
            0xC0..=0xDF | 0xBD => audio = true,
            _ => {}
        }
    }
    Ok((video, audio))
}

/// The 33-bit PTS of the first PES packet that starts in `buf`, preferring video (PES
/// `stream_id` 0xE0–0xEF, which every H.264/H.265 muxer uses) and falling back to the first
/// PTS of any stream. `Ok(None)` when no PES start carries a PTS.
pub fn first_pts(buf: &[u8]) -> Result<Option<u64>> {
    let mut fallback = None;
    for p in split_packets(buf)? {
        if !p.unit_start {
            continue;
        }
        let Some((stream_id, pts)) = pes_pts(p.payload) else {
            continue;
        };
        if (0xE0..=0xEF).contains(&stream_id) {
            return Ok(Some(pts));
        }
        fallback = fallback.or(Some(pts));
    }
    Ok(fallback)
}

/// `(stream_id, PTS)` of a PES header at the start of `payload`, if it has one.
fn pes_pts(payload: &[u8]) -> Option<(u8, u64)> {
    let &[
        0,
        0,
        1,
        stream_id,
        _,
        _,
        flags1,
        flags2,
        _header_len,
        ref pts @ ..,
    ] = payload
    else {
        return None;
    };
    // Streams without the optional PES header: program_stream_map, padding, private_2,
    // ECM, EMM, directory, DSMCC, H.222.1 type E.
    if matches!(
        stream_id,
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    ) {
        return None;
    }
    if flags1 & 0xC0 != 0x80 || flags2 & 0x80 == 0 {
        return None;
    }
    let &[a, b, c, d, e, ..] = pts else {
        return None;
    };
    let pts = (u64::from(a >> 1) & 0x07) << 30
        | u64::from(b) << 22
        | u64::from(c >> 1) << 15
        | u64::from(d) << 7
        | u64::from(e >> 1);
    Some((stream_id, pts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pes_packet(pid: u16, stream_id: u8, pts: u64, with_af: bool) -> Vec<u8> {
        let mut p = vec![SYNC_BYTE, 0x40 | (pid >> 8) as u8, pid as u8];
        if with_af {
            p.push(0x30);
            p.extend_from_slice(&[7, 0x10, 0, 0, 0, 0, 0, 0]); // PCR-flagged adaptation field
        } else {
            p.push(0x10);
        }
        p.extend_from_slice(&[0, 0, 1, stream_id, 0, 0, 0x80, 0x80, 5]);
        p.extend_from_slice(&[
            0x21 | ((pts >> 29) & 0x0e) as u8,
            (pts >> 22) as u8,
            0x01 | ((pts >> 14) & 0xfe) as u8,
            (pts >> 7) as u8,
            0x01 | ((pts << 1) & 0xfe) as u8,
        ]);
        p.resize(PACKET_LEN, 0xff);
        p
    }

    fn null_packet() -> Vec<u8> {
        let mut p = vec![SYNC_BYTE, 0x1f, 0xff, 0x10];
        p.resize(PACKET_LEN, 0xff);
        p
    }

    #[test]
    fn prefers_video_pts_near_the_wrap() {
        let audio = (1u64 << 33) - 1;
        let video = (1u64 << 33) - 3003;
        let mut buf = null_packet();
        buf.extend(pes_packet(0x101, 0xC0, audio, false));
        buf.extend(pes_packet(0x100, 0xE0, video, true));
        assert_eq!(first_pts(&buf).unwrap(), Some(video));
        let audio_only = pes_packet(0x101, 0xC0, audio, false);
        assert_eq!(first_pts(&audio_only).unwrap(), Some(audio));
        assert_eq!(first_pts(&null_packet()).unwrap(), None);
        assert_eq!(first_pts(&[]).unwrap(), None);
    }

    #[test]
    fn counts_video_starts_and_sees_audio() {
        let mut buf = null_packet();
        buf.extend(pes_packet(0x100, 0xE0, 1, true));
        buf.extend(pes_packet(0x100, 0xE0, 2, false));
        assert_eq!(pes_starts(&buf).unwrap(), (2, false));
        buf.extend(pes_packet(0x101, 0xC0, 3, false));
        assert_eq!(pes_starts(&buf).unwrap(), (2, true));
        buf.extend(pes_packet(0x102, 0xBD, 4, false));
        assert_eq!(pes_starts(&buf).unwrap(), (2, true));
        assert!(pes_starts(&[0u8; 188]).is_err());
    }

    #[test]
    fn round_trips_every_bit() {
        for pts in [
            0,
            1,
            0x1_0000_0000,
            (1 << 33) - 1,
            0x1_5555_5555,
            0xAAAA_AAAA,
        ] {
            assert_eq!(
                first_pts(&pes_packet(0x100, 0xE0, pts, false)).unwrap(),
                Some(pts)
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        let mut buf = pes_packet(0x100, 0xE0, 1, false);
        buf.extend(null_packet());
        buf[PACKET_LEN] = 0x48;
        let e = first_pts(&buf).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an MPEG-TS stream: sync byte missing at offset 188"
        );
        assert!(first_pts(&buf[..100]).is_err());
        assert!(first_pts(b"GET / HTTP/1.1\r\n").is_err());
        let mut bad_af = null_packet();
        bad_af[3] = 0x30;
        bad_af[4] = 200;
        assert!(split_packets(&bad_af).is_err());
        // A PES header cut short yields no PTS, not a panic.
        let mut short = null_packet();
        short[1] = 0x41;
        short[3] = 0x3f;
        short[4] = 176;
        short[181..188].copy_from_slice(&[0, 0, 1, 0xE0, 0, 0, 0x80]);
        assert_eq!(first_pts(&short).unwrap(), None);
    }

    /// Whatever a publisher sends is split or refused, never a panic; what is split is what
    /// was given, and a PTS has 33 bits.
    #[test]
    fn fuzz_ts() {
        fuzzing::Target::new("ts").run(|data| {
            let split = split_packets(data);
            if let Ok(packets) = &split {
                assert_eq!(packets.len() * PACKET_LEN, data.len());
                for (p, raw) in packets.iter().zip(data.chunks_exact(PACKET_LEN)) {
                    assert!(raw.ends_with(p.payload) && p.payload.len() <= PACKET_LEN - 4);
                }
            }
            let pts = first_pts(data);
            assert_eq!(pts.is_ok(), split.is_ok());
            assert!(pts.is_ok_and(|p| p.is_none_or(|p| p < 1 << 33)) || split.is_err());
            match (pes_starts(data), &split) {
                (Ok((video, _)), Ok(packets)) => assert!(video <= packets.len()),
                (starts, _) => assert!(starts.is_err() && split.is_err()),
            }
        });
    }
}
