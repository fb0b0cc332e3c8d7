//! Deciding how an input session's timestamps map onto the epoch grid, from its first bytes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ingest::{Container, flv};
use timeline::LockMode;

/// A session that carries no timestamp within this many bytes is not a stream we can lock.
const MAX_HEAD: usize = 8 << 20;

/// The mapping of one encoder run: input timestamp + `offset_us` = Unix time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub mode: LockMode,
    pub offset_us: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("no timestamp in the first {0} bytes of the input")]
    NoTimestamp(usize),
    #[error("malformed input: {0}")]
    Malformed(String),
}

/// The bytes of a session seen before its lock is known: the prologue (replayed on an encoder
/// restart) and the first live chunks. They are all fed to the encoder once the lock is known.
pub struct SessionHead {
    container: Container,
    prologue: Vec<Bytes>,
    live: Vec<Bytes>,
    buf: BytesMut,
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
        }
    }

    /// Adds a live chunk; returns the lock once the head holds a timestamp to decide it.
    pub fn push(&mut self, chunk: Bytes, now: Duration) -> Result<Option<Lock>, LockError> {
        if self.buf.len() + chunk.len() > MAX_HEAD {
            return Err(LockError::NoTimestamp(MAX_HEAD));
        }
        self.buf.extend_from_slice(&chunk);
        self.live.push(chunk);
        match self.container {
            Container::MpegTs => {
                let pts = media::ts::first_pts(&self.buf)
                    .map_err(|e| LockError::Malformed(e.to_string()))?;
                Ok(pts.map(|pts| {
                    let (mode, offset_us) = timeline::lock_mpegts(pts, now);
                    Lock { mode, offset_us }
                }))
            }
            // FLV timestamps start anywhere (usually 0) and the prologue's codec headers carry
            // old ones: map the newest audio/video tag to now.
            Container::Flv => {
                let newest = flv::tags(&self.buf)
                    .filter(|t| t.tag_type == flv::TAG_AUDIO || t.tag_type == flv::TAG_VIDEO)
                    .last()
                    .map(|t| t.timestamp_ms);
                let prologue_only =
                    self.buf.len() == self.prologue.iter().map(Bytes::len).sum::<usize>();
                if self.buf.len() >= 3 && &self.buf[..3] != b"FLV" {
                    return Err(LockError::Malformed(
                        "FLV stream without a file header".to_string(),
                    ));
                }
                Ok(newest.filter(|_| !prologue_only).map(|ms| Lock {
                    mode: LockMode::Clock,
                    offset_us: timeline::clock_lock_offset(Duration::from_millis(ms.into()), now),
                }))
            }
        }
    }

    /// The chunks to feed the encoder (prologue first), and the prologue alone.
    pub fn into_parts(self) -> (Vec<Bytes>, Vec<Bytes>) {
        let mut replay = self.prologue.clone();
        replay.extend(self.live);
        (replay, self.prologue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_795_616_148);

    fn flv_tag(tag_type: u8, ms: u32) -> Bytes {
        flv::tag(tag_type, ms, &[0x17, 1, 0, 0, 0]).unwrap()
    }

    #[test]
    fn flv_is_clock_locked_on_its_newest_tag() {
        let mut head = SessionHead::new(Container::Flv, Vec::new());
        assert_eq!(head.push(flv::file_header(true, true), NOW).unwrap(), None);
        let lock = head
            .push(flv_tag(flv::TAG_VIDEO, 1_000), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(lock.mode, LockMode::Clock);
        assert_eq!(lock.offset_us + 1_000_000, NOW.as_micros() as i64);
    }

    #[test]
    fn a_restart_ignores_the_prologue_timestamps() {
        let prologue = vec![flv::file_header(true, true), flv_tag(flv::TAG_VIDEO, 0)];
        let mut head = SessionHead::new(Container::Flv, prologue.clone());
        let lock = head
            .push(flv_tag(flv::TAG_VIDEO, 60_000), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(lock.offset_us + 60_000_000, NOW.as_micros() as i64);
        let (replay, kept) = head.into_parts();
        assert_eq!(replay.len(), 3);
        assert_eq!(kept, prologue);
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
