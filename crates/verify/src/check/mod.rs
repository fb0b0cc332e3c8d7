//! The sans-IO core of `steadycast verify`: manifest texts, segment bytes and the time they
//! arrived go in; what to fetch next, when to reload, and the findings come out. Time is a
//! parameter (a [`Duration`] since the run started), so every rule is tested without a clock
//! or a network.
//!
//! The shell's loop, per rendition: fetch the playlist, give it to [`Checker::on_playlist`]
//! (DASH: [`Checker::on_mpd`] for all renditions at once), fetch each returned [`Job`] in order
//! (its init first when [`Checker::needs_init`]), hand the bytes to [`Checker::on_segment`] or
//! the failure to [`Checker::on_fetch_error`], and reload after [`Update::reload_after`].

pub mod dash;
pub mod hls;
mod player;
pub mod report;
mod timing;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use player::Player;
pub use report::{ErrorKind, Errors, Format, Report};
use report::{RenditionReport, StallSummary, Verdict, secs};
use timing::{Expect, MediaState};

/// An entry a manifest listed, as the HLS and DASH trackers hand it to the checker.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Orders entries within a rendition: HLS media sequence number, DASH time in µs.
    pub key: u64,
    pub uri: String,
    pub init_uri: Option<String>,
    pub duration: f64,
    pub discontinuity: bool,
    /// A placeholder with no media (`EXT-X-GAP`, a hole in a DASH timeline).
    pub gap: bool,
    /// DASH: `(S@t, S@d, timescale)`, which the segment's `tfdt` and duration must match.
    pub timeline: Option<(u64, u64, u32)>,
}

/// A segment to fetch, relative to its manifest's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub rendition: String,
    pub uri: String,
    pub init_uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// New segments in listing order; fetch them in this order.
    pub jobs: Vec<Job>,
    /// Reload the manifest this long after the load began.
    pub reload_after: Duration,
}

/// Why a fetch produced no bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    Status(u16),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The player model's buffer, in segments, and how far back from the live edge it joins.
    pub buffer_segments: usize,
    /// DASH Representation ids to watch; empty for all. (HLS renditions are chosen by the shell
    /// from the multivariant playlist.)
    pub renditions: Vec<String>,
}

#[derive(Debug)]
enum Track {
    Hls(hls::HlsTrack),
    Dash(dash::DashTrack),
}

#[derive(Debug)]
struct Pending {
    id: u64,
    expect: Expect,
    init_uri: Option<String>,
}

/// Where the last real segment left the timeline, for the next one to continue.
#[derive(Debug, Default)]
struct Chain {
    prev: Option<u64>,
    gap_secs: f64,
    discontinuity: bool,
}

#[derive(Debug)]
struct Rendition {
    track: Track,
    media: MediaState,
    player: Player,
    pending: HashMap<String, Pending>,
    chain: Chain,
    next_id: u64,
    listed: u64,
    checked: u64,
    bytes: u64,
}

#[derive(Debug)]
pub struct Checker {
    options: Options,
    format: Format,
    errors: Errors,
    renditions: BTreeMap<String, Rendition>,
    ended_reported: bool,
}

/// Segments planned but not yet resolved, per rendition: far more than any live window, and a
/// bound on memory if a shell never reports back.
const MAX_PENDING: usize = 10_000;

/// DASH reload cadence when the MPD states no `minimumUpdatePeriod`, and the floor for one it
/// states (a 0 s period would make a busy loop).
const DEFAULT_MPD_RELOAD: Duration = Duration::from_secs(2);
const MIN_RELOAD: Duration = Duration::from_millis(100);

impl Checker {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            format: Format::Unknown,
            errors: Errors::default(),
            renditions: BTreeMap::new(),
            ended_reported: false,
        }
    }

    /// Records a finding the shell made itself (an entry URL that is neither HLS nor DASH).
    pub fn record(&mut self, kind: ErrorKind, rendition: &str, at: Duration, message: String) {
        self.errors.push(kind, rendition, at, message);
    }

    pub fn errors(&self) -> &Errors {
        &self.errors
    }

    fn rendition(&mut self, name: &str, dash: bool) -> &mut Rendition {
        let buffer = self.options.buffer_segments;
        self.renditions
            .entry(name.to_string())
            .or_insert_with(|| Rendition {
                track: if dash {
                    Track::Dash(dash::DashTrack::new(buffer))
                } else {
                    Track::Hls(hls::HlsTrack::new(buffer))
                },
                media: MediaState::default(),
                player: Player::new(buffer),
                pending: HashMap::new(),
                chain: Chain::default(),
                next_id: 0,
                listed: 0,
                checked: 0,
                bytes: 0,
            })
    }

    /// An HLS media playlist of `rendition`, loaded at `now`.
    pub fn on_playlist(&mut self, rendition: &str, text: &str, now: Duration) -> Update {
        self.format = Format::Hls;
        let r = self.rendition(rendition, false);
        let Track::Hls(track) = &mut r.track else {
            return Update {
                jobs: Vec::new(),
                reload_after: DEFAULT_MPD_RELOAD,
            };
        };
        let reload = track.on_playlist(text, now);
        let reload_after = reload.reload_after;
        let findings = reload.findings;
        let jobs = r.plan(rendition, reload.new, reload.broke_chain);
        for (kind, message) in findings {
            self.errors.push(kind, rendition, now, message);
        }
        Update { jobs, reload_after }
    }

    /// A DASH MPD loaded at `now`: every Representation (or those in
    /// [`Options::renditions`]) at once.
    pub fn on_mpd(&mut self, text: &str, now: Duration) -> Update {
        self.format = Format::Dash;
        let mpd = match dash::parse_mpd(text) {
            Ok(mpd) => mpd,
            Err(e) => {
                self.errors.push(ErrorKind::BadManifest, "mpd", now, e);
                return Update {
                    jobs: Vec::new(),
                    reload_after: DEFAULT_MPD_RELOAD,
                };
            }
        };
        if !mpd.dynamic && !self.ended_reported {
            self.ended_reported = true;
            let msg = "a static MPD: the live presentation ended (or never was live)".into();
            self.errors.push(ErrorKind::Ended, "mpd", now, msg);
        }
        let reload_after = mpd
            .minimum_update_period
            .unwrap_or(DEFAULT_MPD_RELOAD)
            .max(MIN_RELOAD);
        let mut ids: Vec<&str> = Vec::new();
        for rep in &mpd.representations {
            if !ids.contains(&rep.id.as_str()) {
                ids.push(&rep.id);
            }
        }
        // Renditions seen before and absent now are reloaded empty: their tracker notices.
        let known: Vec<String> = self.renditions.keys().cloned().collect();
        for k in &known {
            if !ids.contains(&k.as_str()) {
                ids.push(k);
            }
        }
        let wanted = |id: &str| {
            self.options.renditions.is_empty() || self.options.renditions.iter().any(|r| r == id)
        };
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| wanted(id))
            .map(str::to_string)
            .collect();
        let mut jobs = Vec::new();
        for id in ids {
            let parts: Vec<&dash::Representation> =
                mpd.representations.iter().filter(|r| r.id == id).collect();
            let r = self.rendition(&id, true);
            let Track::Dash(track) = &mut r.track else {
                continue;
            };
            let reload = track.on_mpd(&parts, now);
            jobs.extend(r.plan(&id, reload.new, reload.broke_chain));
            for (kind, message) in reload.findings {
                self.errors.push(kind, &id, now, message);
            }
        }
        Update { jobs, reload_after }
    }

    /// Whether the shell should fetch the init segment `uri` before the next job.
    pub fn needs_init(&self, rendition: &str, uri: &str) -> bool {
        self.renditions
            .get(rendition)
            .is_some_and(|r| r.media.needs_init(uri))
    }

    pub fn on_init(&mut self, rendition: &str, uri: &str, bytes: &[u8], at: Duration) {
        let Some(r) = self.renditions.get_mut(rendition) else {
            return;
        };
        if let Some((kind, message)) = r.media.on_init(uri, bytes) {
            self.errors.push(kind, rendition, at, message);
        }
    }

    /// A segment's bytes, downloaded completely at `at`. The bytes are not kept.
    pub fn on_segment(&mut self, rendition: &str, uri: &str, bytes: &[u8], at: Duration) {
        let Some(r) = self.renditions.get_mut(rendition) else {
            return;
        };
        let Some(p) = r.pending.remove(uri) else {
            return;
        };
        r.checked += 1;
        r.bytes += bytes.len() as u64;
        let findings = r
            .media
            .on_segment(uri, p.init_uri.as_deref(), &p.expect, bytes);
        let late = r.player.arrived(p.id, at);
        let buffer = self.options.buffer_segments;
        for (kind, message) in findings {
            self.errors.push(kind, rendition, at, message);
        }
        for l in late {
            let message = format!(
                "{} arrived {:.3} s after a player with a {buffer}-segment buffer needed it",
                l.label,
                l.by.as_secs_f64()
            );
            self.errors.push(ErrorKind::Late, rendition, at, message);
        }
    }

    /// A manifest, init or segment `uri` that could not be fetched at `at`.
    pub fn on_fetch_error(&mut self, rendition: &str, uri: &str, error: FetchError, at: Duration) {
        let (kind, message) = match error {
            FetchError::Status(s) => (ErrorKind::Http, format!("{uri}: HTTP {s}")),
            FetchError::Failed(e) => (ErrorKind::Fetch, format!("{uri}: {e}")),
        };
        self.errors.push(kind, rendition, at, message);
        let Some(r) = self.renditions.get_mut(rendition) else {
            return;
        };
        if let Some(p) = r.pending.remove(uri) {
            r.media.segment_failed();
            r.player.missing(p.id);
        } else if r.media.needs_init(uri) {
            r.media.init_failed(uri);
        }
    }

    /// The report as of `now`.
    pub fn report(&self, url: &str, now: Duration) -> Report {
        let mut errors = self.errors.clone();
        let mut renditions = Vec::new();
        for (name, r) in &self.renditions {
            if r.checked == 0 {
                let message = format!("no segment of {name} could be checked");
                errors.push(ErrorKind::NoSegments, name, now, message);
            }
        }
        for name in &self.options.renditions {
            if self.format == Format::Dash && !self.renditions.contains_key(name) {
                let message = format!("no Representation {name} in the MPD");
                errors.push(ErrorKind::NoSegments, name, now, message);
            }
        }
        if self.renditions.is_empty() && errors.total() == 0 {
            let message = "no rendition was watched".to_string();
            errors.push(ErrorKind::NoSegments, "entry", now, message);
        }
        let mut stall = StallSummary {
            seconds: 0.0,
            count: 0,
        };
        for (name, r) in &self.renditions {
            let (s, n) = r.player.stall(now);
            let seconds = secs(s);
            if seconds > stall.seconds || (seconds == stall.seconds && n > stall.count) {
                stall = StallSummary { seconds, count: n };
            }
            renditions.push(RenditionReport {
                name: name.clone(),
                segments_listed: r.listed,
                segments_checked: r.checked,
                bytes: r.bytes,
                errors: errors.of_rendition(name),
                playing: r.player.playing(),
                stall_seconds: seconds,
                stalls: n,
                missing_seconds: secs(r.player.missing_media()),
            });
        }
        // A stall is a violation even when it is still going on (and so had no late segment).
        if stall.count > 0 && errors.count(ErrorKind::Late) == 0 {
            for r in renditions.iter_mut().filter(|r| r.stalls > 0) {
                let message = format!(
                    "stalled {:.3} s waiting for a segment that had not arrived",
                    r.stall_seconds
                );
                errors.push(ErrorKind::Late, &r.name, now, message);
                r.errors += 1;
            }
        }
        let violations = errors.total();
        let verdict = if violations == 0 && !renditions.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        Report {
            url: url.to_string(),
            format: self.format,
            watched_seconds: secs(now),
            buffer_segments: self.options.buffer_segments,
            verdict,
            violations,
            renditions,
            errors: errors.by_kind().clone(),
            stall,
        }
    }
}

impl Rendition {
    /// Turns newly listed entries into jobs, the player's plan and continuity expectations.
    fn plan(&mut self, name: &str, new: Vec<Listed>, broke_chain: bool) -> Vec<Job> {
        if broke_chain {
            self.chain = Chain::default();
        }
        let mut jobs = Vec::new();
        for l in new {
            if self.pending.len() >= MAX_PENDING {
                break;
            }
            self.listed += 1;
            let id = self.next_id;
            self.next_id += 1;
            let duration = Duration::try_from_secs_f64(l.duration).unwrap_or_default();
            self.player.plan(id, duration, l.uri.clone());
            if l.gap {
                self.chain.gap_secs += l.duration;
                self.chain.discontinuity |= l.discontinuity;
                self.player.missing(id);
                continue;
            }
            let expect = Expect {
                key: l.key,
                follows: self.chain.prev,
                gap_before_secs: self.chain.gap_secs,
                discontinuity: self.chain.discontinuity || l.discontinuity,
                timeline: l.timeline,
            };
            self.chain = Chain {
                prev: Some(l.key),
                ..Chain::default()
            };
            jobs.push(Job {
                rendition: name.to_string(),
                uri: l.uri.clone(),
                init_uri: l.init_uri.clone(),
            });
            self.pending.insert(
                l.uri,
                Pending {
                    id,
                    expect,
                    init_uri: l.init_uri,
                },
            );
        }
        jobs
    }
}
