//! Unit tests of the core, each rule with a stream that breaks it. Streams are hand-written
//! playlists and MPDs (plus some rendered by the `manifest` crate the origin uses) over
//! synthetic CMAF segments: 1 s segments of 15 fps video at 90 kHz.

mod dash;
mod hls;
mod origin;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use media::cmaf::{init_segment, media_segment};
use media::fmp4::{Movie, NON_SYNC_SAMPLE_FLAGS, SYNC_SAMPLE_FLAGS, Sample};
use media::mp4::BoxWriter;

use super::{Checker, ErrorKind, FetchError, Options, Report, Update};

/// 90 kHz ticks per 1 s segment, and per frame at 15 fps.
pub const D: u64 = 90_000;
pub const FRAME: u64 = 6_000;
/// Segment numbers near 2026: tfdt = N·D needs 64 bits.
pub const N0: u64 = 1_795_616_830;

pub fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

/// A single-track CMAF header: video (`vide`, avc1) at 90 kHz or audio (`soun`, Opus) at 48 kHz.
pub fn init(video: bool) -> Bytes {
    let mut b = BytesMut::new();
    let moov = BoxWriter::start(&mut b, b"moov");
    let mvhd = BoxWriter::start_full(&mut b, b"mvhd", 0, 0);
    b.put_slice(&[0; 8]);
    b.put_u32(1000);
    b.put_slice(&[0; 84]);
    mvhd.finish(&mut b);
    let trak = BoxWriter::start(&mut b, b"trak");
    let tkhd = BoxWriter::start_full(&mut b, b"tkhd", 0, 0);
    b.put_slice(&[0; 8]);
    b.put_u32(1);
    b.put_slice(&[0; 68]);
    tkhd.finish(&mut b);
    let mdia = BoxWriter::start(&mut b, b"mdia");
    let mdhd = BoxWriter::start_full(&mut b, b"mdhd", 0, 0);
    b.put_slice(&[0; 8]);
    b.put_u32(if video { 90_000 } else { 48_000 });
    b.put_slice(&[0; 8]);
    mdhd.finish(&mut b);
    let hdlr = BoxWriter::start_full(&mut b, b"hdlr", 0, 0);
    b.put_u32(0);
    b.put_slice(if video { b"vide" } else { b"soun" });
    b.put_slice(&[0; 13]);
    hdlr.finish(&mut b);
    let minf = BoxWriter::start(&mut b, b"minf");
    let stbl = BoxWriter::start(&mut b, b"stbl");
    let stsd = BoxWriter::start_full(&mut b, b"stsd", 0, 0);
    b.put_u32(1);
    if video {
        let avc1 = BoxWriter::start(&mut b, b"avc1");
        b.put_slice(&[0; 24]);
        b.put_u16(320);
        b.put_u16(180);
        b.put_slice(&[0; 50]);
        let avcc = BoxWriter::start(&mut b, b"avcC");
        b.put_slice(&[1, 0x64, 0x00, 0x1f, 0xff, 0xe0, 0]);
        avcc.finish(&mut b);
        avc1.finish(&mut b);
    } else {
        let opus = BoxWriter::start(&mut b, b"Opus");
        b.put_slice(&[0; 8]);
        b.put_u16(0);
        b.put_slice(&[0; 6]);
        b.put_u16(2);
        b.put_slice(&[0; 6]);
        b.put_u32(48_000 << 16);
        opus.finish(&mut b);
    }
    stsd.finish(&mut b);
    stbl.finish(&mut b);
    minf.finish(&mut b);
    mdia.finish(&mut b);
    trak.finish(&mut b);
    let mvex = BoxWriter::start(&mut b, b"mvex");
    let trex = BoxWriter::start_full(&mut b, b"trex", 0, 0);
    b.put_u32(1);
    b.put_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
    trex.finish(&mut b);
    mvex.finish(&mut b);
    moov.finish(&mut b);
    let movie = Movie::parse(&b).expect("test moov parses");
    init_segment(&movie, 1).expect("test init segment")
}

/// `frames` video frames of `FRAME` ticks from `start`; the first is a keyframe if `key`.
pub fn video_at(start: u64, frames: u64, key: bool) -> Bytes {
    let samples: Vec<Sample> = (0..frames)
        .map(|i| Sample {
            dts: start + i * FRAME,
            duration: FRAME as u32,
            cto: 0,
            flags: if i == 0 && key {
                SYNC_SAMPLE_FLAGS
            } else {
                NON_SYNC_SAMPLE_FLAGS
            },
            data: Bytes::from(vec![i as u8; 16]),
        })
        .collect();
    media_segment(1, 1, start, &samples).expect("test segment")
}

/// Segment `n` of the grid: starts at n·D with a keyframe.
pub fn video(n: u64) -> Bytes {
    video_at(n * D, D / FRAME, true)
}

/// Audio at 48 kHz: `frames` AAC-sized (1024) sync samples from `start`.
pub fn audio_at(start: u64, frames: u64) -> Bytes {
    let samples: Vec<Sample> = (0..frames)
        .map(|i| Sample {
            dts: start + i * 1024,
            duration: 1024,
            cto: 0,
            flags: 0,
            data: Bytes::from(vec![i as u8; 8]),
        })
        .collect();
    media_segment(1, 1, start, &samples).expect("test segment")
}

/// What the fake server answers for a segment URI.
pub enum Answer {
    Bytes(Bytes),
    Status(u16),
}

/// Drives a [`Checker`] as the shell would, with downloads that complete instantly (or at a
/// chosen delay) and a server given as a function of the URI.
pub struct Sim {
    pub checker: Checker,
    pub server: Box<dyn Fn(&str) -> Answer>,
    /// How long after the manifest load each download completes.
    pub delay: Duration,
}

impl Sim {
    pub fn new(buffer: usize, server: impl Fn(&str) -> Answer + 'static) -> Self {
        Self {
            checker: Checker::new(Options {
                buffer_segments: buffer,
                renditions: Vec::new(),
            }),
            server: Box::new(server),
            delay: Duration::ZERO,
        }
    }

    fn fetch_jobs(&mut self, update: &Update, now: Duration) {
        let at = now + self.delay;
        for job in &update.jobs {
            if let Some(init_uri) = &job.init_uri
                && self.checker.needs_init(&job.rendition, init_uri)
            {
                let video = !init_uri.contains("audio");
                self.checker
                    .on_init(&job.rendition, init_uri, &init(video), at);
            }
            match (self.server)(&job.uri) {
                Answer::Bytes(b) => self.checker.on_segment(&job.rendition, &job.uri, &b, at),
                Answer::Status(code) => self.checker.on_fetch_error(
                    &job.rendition,
                    &job.uri,
                    FetchError::Status(code),
                    at,
                ),
            }
        }
    }

    /// Loads an HLS media playlist of rendition `v` at `now` and downloads what it lists.
    pub fn playlist(&mut self, text: &str, now: f64) -> Update {
        let update = self.checker.on_playlist("v", text, s(now));
        self.fetch_jobs(&update, s(now));
        update
    }

    pub fn mpd(&mut self, text: &str, now: f64) -> Update {
        let update = self.checker.on_mpd(text, s(now));
        self.fetch_jobs(&update, s(now));
        update
    }

    pub fn report(&self, now: f64) -> Report {
        self.checker.report("http://test/", s(now))
    }

    pub fn count(&self, kind: ErrorKind) -> u64 {
        self.checker.errors().count(kind)
    }

    /// Every kind found, for assertions that a stream breaks exactly one rule.
    pub fn kinds(&self) -> Vec<ErrorKind> {
        self.checker.errors().by_kind().keys().copied().collect()
    }
}

/// The segment number in a URI like `v/1795616830.m4s` or `180p/t161605514700000.m4s`.
pub fn number_in(uri: &str) -> Option<u64> {
    let file = uri.rsplit('/').next()?.split('.').next()?;
    let digits: String = file.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A server with every segment at its place on the grid: `v/N.m4s` (HLS) or `v/tT.m4s` (DASH).
pub fn good_server(uri: &str) -> Answer {
    match number_in(uri) {
        Some(t) if uri.contains("/t") => Answer::Bytes(video_at(t, D / FRAME, true)),
        Some(n) => Answer::Bytes(video(n)),
        None => Answer::Status(404),
    }
}
