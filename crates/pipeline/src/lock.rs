//! Deciding how an input session's timestamps map onto the epoch grid, from its first bytes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ingest::{Container, flv};
use timeline::LockMode;

/// A session that carries no timestamp within this many bytes is not a stream we can lock.
const MAX_HEAD: usize = 8 << 20;

/// Video units (PES packets, FLV tags) seen without any audio before a session counts as
/// video-only: about a second.
const VIDEO_ONLY_AFTER: usize = 30;

/// The mapping of one encoder run: input timestamp + `offset_us` = Unix time; and whether the
/// input carries audio (without, the encoder makes silence on the grid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub mode: LockMode,
    pub offset_us: i64,
    pub has_audio: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("no timestamp in the first {0} bytes of the input")]
    NoTimestamp(usize),
    #[error("malformed input: {0}")]
    Malformed(String),
}

/// What the head shows so far: the timestamp mapping, if a timestamp arrived, and the streams.
struct HeadScan {
    timing: Option<(LockMode, i64)>,
    video_units: usize,
    has_audio: bool,
}

/// The bytes of a session seen before its lock is known: the prologue (replayed on an encoder
/// restart) and the first live chunks. They are all fed to the encoder once the lock is known.
pub struct SessionHead {
    container: Container,
    prologue: Vec<Bytes>,
    live: Vec<Bytes>,
    buf: BytesMut,
    /// The timestamp mapping, fixed when the first timestamp arrives (its arrival is "now").
    timing: Option<(LockMode, i64)>,
}

impl SessionHead {
    pub fn new(container: Container, prologue: Vec<Bytes>) -> Self {
        let mut buf = BytesMut::new();
        for chunk in &prologue {
            buf.extend_from_slice(chunk);
        }
        Self {
            container,
            prologue,
            live: Vec::new(),
            buf,
            timing: None,
        }
    }

    /// Adds a live chunk; returns the lock once the head holds a timestamp to decide it and
    /// shows whether there is audio.
    pub fn push(&mut self, chunk: Bytes, now: Duration) -> Result<Option<Lock>, LockError> {
        if self.buf.len() + chunk.len() > MAX_HEAD {
            return Err(LockError::NoTimestamp(MAX_HEAD));
        }
        self.buf.extend_from_slice(&chunk);
        self.live.push(chunk);
        let HeadScan {
            timing,
            video_units,
            has_audio,
        } = match self.container {
            Container::MpegTs => self.read_ts(now)?,
            Container::Flv => self.read_flv(now)?,
        };
        self.timing = self.timing.or(timing);
        let has_audio = match (has_audio, video_units >= VIDEO_ONLY_AFTER) {
            (true, _) => true,
            (false, true) => false,
            (false, false) => return Ok(None),
        };
        Ok(self.timing.map(|(mode, offset_us)| Lock {
            mode,
            offset_us,
            has_audio,
        }))
    }

    fn read_ts(&self, now: Duration) -> Result<HeadScan, LockError> {
        let malformed = |e: media::Error| LockError::Malformed(e.to_string());
        let pts = media::ts::first_pts(&self.buf).map_err(malformed)?;
        let (video, audio) = media::ts::pes_starts(&self.buf).map_err(malformed)?;
        let timing = pts.map(|pts| timeline::lock_mpegts(pts, now));
        Ok(HeadScan {
            timing,
            video_units: video,
            has_audio: audio,
        })
    }

    /// FLV timestamps start anywhere (usually 0) and the prologue's codec headers carry old
    /// ones: the newest audio/video tag is mapped to now.
    fn read_flv(&self, now: Duration) -> Result<HeadScan, LockError> {
        if self.buf.len() >= 3 && &self.buf[..3] != b"FLV" {
            return Err(LockError::Malformed(
                "FLV stream without a file header".to_string(),
            ));
        }
        let (mut newest, mut video, mut audio) = (None, 0, false);
        for tag in flv::tags(&self.buf) {
            match tag.tag_type {
                flv::TAG_VIDEO => video += 1,
                flv::TAG_AUDIO => audio = true,
                _ => continue,
            }
            newest = Some(tag.timestamp_ms);
        }
        let prologue_only = self.buf.len() == self.prologue.iter().map(Bytes::len).sum::<usize>();
        let timing = newest.filter(|_| !prologue_only).map(|ms| {
            (
                LockMode::Clock,
                timeline::clock_lock_offset(Duration::from_millis(ms.into()), now),
            )
        });
        Ok(HeadScan {
            timing,
            video_units: video,
            has_audio: audio,
        })
    }

    /// The chunks to feed the encoder (prologue first), and the prologue alone.
    pub fn into_parts(self) -> (Vec<Bytes>, Vec<Bytes>) {
        let mut replay = self.prologue.clone();
        replay.extend(self.live);
        (replay, self.prologue)
    }
}

/// How far the first timestamp in `chunk`, mapped to Unix time by `offset_us`, lies from `now`
/// (µs, positive when ahead), taken modulo the container's timestamp wrap. `None` when the
/// chunk shows no timestamp. A jump in the source's timestamps shows as a jump in this.
pub fn drift_us(container: Container, chunk: &[u8], offset_us: i64, now: Duration) -> Option<i64> {
    let (stamp_us, wrap_us) = match container {
        Container::MpegTs => {
            let pts = media::ts::first_pts(chunk).ok()??;
            let to_us = |ticks: u64| (u128::from(ticks) * 1_000_000 / 90_000) as i64;
            (to_us(pts), to_us(timeline::PTS_WRAP))
        }
        Container::Flv => {
            let tag = flv::chunk_tags(chunk)
                .find(|t| t.tag_type == flv::TAG_VIDEO || t.tag_type == flv::TAG_AUDIO)?;
            (i64::from(tag.timestamp_ms) * 1000, (1i64 << 32) * 1000)
        }
    };
    let drift = (stamp_us + offset_us - now.as_micros() as i64).rem_euclid(wrap_us);
    Some(if drift > wrap_us / 2 {
        drift - wrap_us
    } else {
        drift
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_795_616_148);

    fn flv_tag(tag_type: u8, ms: u32) -> Bytes {
        flv::tag(tag_type, ms, &[0x17, 1, 0, 0, 0]).unwrap()
    }

    #[test]
    fn flv_is_clock_locked_when_first_timed_and_waits_for_audio() {
        let mut head = SessionHead::new(Container::Flv, Vec::new());
        assert_eq!(head.push(flv::file_header(true, true), NOW).unwrap(), None);
        assert_eq!(
            head.push(flv_tag(flv::TAG_VIDEO, 1_000), NOW).unwrap(),
            None
        );
        let later = NOW + Duration::from_millis(40);
        let lock = head
            .push(flv_tag(flv::TAG_AUDIO, 1_040), later)
            .unwrap()
            .unwrap();
        assert_eq!(lock.mode, LockMode::Clock);
        assert!(lock.has_audio);
        // The first timestamp fixed the mapping at the moment it arrived.
        assert_eq!(lock.offset_us + 1_000_000, NOW.as_micros() as i64);
    }

    #[test]
    fn a_second_of_video_without_audio_is_video_only() {
        let mut head = SessionHead::new(Container::Flv, vec![flv::file_header(true, true)]);
        for i in 0..VIDEO_ONLY_AFTER as u32 - 1 {
            assert_eq!(
                head.push(flv_tag(flv::TAG_VIDEO, i * 33), NOW).unwrap(),
                None
            );
        }
        let lock = head
            .push(flv_tag(flv::TAG_VIDEO, 999), NOW)
            .unwrap()
            .unwrap();
        assert!(!lock.has_audio);
    }

    #[test]
    fn a_restart_ignores_the_prologue_timestamps() {
        let prologue = vec![
            flv::file_header(true, true),
            flv_tag(flv::TAG_VIDEO, 0),
            flv_tag(flv::TAG_AUDIO, 0),
        ];
        let mut head = SessionHead::new(Container::Flv, prologue.clone());
        let lock = head
            .push(flv_tag(flv::TAG_VIDEO, 60_000), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(lock.offset_us + 60_000_000, NOW.as_micros() as i64);
        assert!(lock.has_audio);
        let (replay, kept) = head.into_parts();
        assert_eq!(replay.len(), 4);
        assert_eq!(kept, prologue);
    }

    #[test]
    fn drift_follows_the_stamps_through_the_wrap() {
        let offset_us = -1_000_000;
        let tag = flv_tag(flv::TAG_VIDEO, 61_000);
        let drift = drift_us(Container::Flv, &tag, offset_us, Duration::from_secs(60));
        assert_eq!(drift, Some(0));
        // The source jumped 30 s back: so does the drift.
        let tag = flv_tag(flv::TAG_VIDEO, 31_000);
        let drift = drift_us(Container::Flv, &tag, offset_us, Duration::from_secs(60));
        assert_eq!(drift, Some(-30_000_000));
        // Near the 2^32 ms wrap, a stamp just past it is still 1 s ahead, not 49 days behind.
        let wrap_us = (1i64 << 32) * 1000;
        let now = Duration::from_micros(wrap_us as u64 - 500_000);
        let tag = flv_tag(flv::TAG_AUDIO, 500);
        assert_eq!(drift_us(Container::Flv, &tag, 0, now), Some(1_000_000));
        assert_eq!(drift_us(Container::Flv, b"no tags", 0, now), None);
    }

    #[test]
    fn garbage_is_refused() {
        let mut head = SessionHead::new(Container::MpegTs, Vec::new());
        assert!(matches!(
            head.push(Bytes::from_static(&[0u8; 376]), NOW),
            Err(LockError::Malformed(_))
        ));
        let mut head = SessionHead::new(Container::Flv, Vec::new());
        assert!(matches!(
            head.push(Bytes::from_static(b"GET / HTTP/1.1"), NOW),
            Err(LockError::Malformed(_))
        ));
    }
}
