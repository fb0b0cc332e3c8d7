//! HLS: the multivariant playlist's renditions, and one media playlist followed across reloads
//! (RFC 8216 §6.2.2 says what a live playlist may change between versions; §6.3.4 how often a
//! client reloads it).

use std::time::Duration;

use m3u8_rs::Playlist;

use super::Listed;
use super::report::ErrorKind;
use super::timing::Finding;

/// A rendition a multivariant playlist names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsRendition {
    /// The playlist's file name without `.m3u8` (`180p`, `audio`): what `--rendition` matches.
    pub name: String,
    /// As written in the multivariant playlist (relative to it).
    pub uri: String,
}

/// What an HLS entry URL turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HlsEntry {
    Multivariant(Vec<HlsRendition>),
    Media,
}

/// `180p` from `180p.m3u8?token=x` or `a/b/180p.m3u8`.
pub fn rendition_name(uri: &str) -> String {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".m3u8").unwrap_or(file).to_string()
}

/// Parses an HLS entry point: a multivariant playlist's variants and alternative renditions
/// (each playlist once), or a media playlist.
pub fn parse_entry(text: &str) -> Result<HlsEntry, String> {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(Playlist::MasterPlaylist(p)) => {
            let mut out: Vec<HlsRendition> = Vec::new();
            let uris = p
                .variants
                .iter()
                .filter(|v| !v.is_i_frame)
                .map(|v| v.uri.clone())
                .chain(p.alternatives.iter().filter_map(|a| a.uri.clone()));
            for uri in uris {
                if out.iter().any(|r| r.uri == uri) {
                    continue;
                }
                // Two playlists with one file name in different folders stay two renditions.
                let mut name = rendition_name(&uri);
                if out.iter().any(|r| r.name == name) {
                    name = format!("{name}#{}", out.len() + 1);
                }
                out.push(HlsRendition { name, uri });
            }
            if out.is_empty() {
                return Err("a multivariant playlist without renditions".to_string());
            }
            Ok(HlsEntry::Multivariant(out))
        }
        Ok(Playlist::MediaPlaylist(_)) => Ok(HlsEntry::Media),
        Err(_) => Err(parse_failure(text)),
    }
}

/// m3u8-rs's errors are nom's, which print the remaining input as bytes: say what the text
/// began with instead.
fn parse_failure(text: &str) -> String {
    let start: String = text.trim_start().chars().take(40).collect();
    format!("does not parse as an HLS playlist (it begins {start:?})")
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    uri: String,
    duration: f64,
    discontinuity: bool,
    gap: bool,
    map: Option<String>,
}

/// The version of the playlist seen last.
#[derive(Debug, Clone)]
struct Snapshot {
    media_sequence: u64,
    discontinuity_sequence: u64,
    entries: Vec<Entry>,
}

impl Snapshot {
    /// One past the last media sequence number listed.
    fn end(&self) -> u64 {
        self.media_sequence + self.entries.len() as u64
    }

    fn get(&self, msn: u64) -> Option<&Entry> {
        let i = msn.checked_sub(self.media_sequence)?;
        self.entries.get(usize::try_from(i).ok()?)
    }
}

/// What one reload produced.
#[derive(Debug, Default)]
pub struct Reload {
    /// Entries listed for the first time, from the starting point on, in order.
    pub new: Vec<Listed>,
    pub findings: Vec<Finding>,
    /// Segments were skipped: the next one cannot be compared with what came before.
    pub broke_chain: bool,
    pub reload_after: Duration,
}

/// One media playlist, followed across reloads.
#[derive(Debug)]
pub struct HlsTrack {
    buffer: usize,
    prev: Option<Snapshot>,
    /// The next media sequence number to hand out.
    next: Option<u64>,
    target: Duration,
    last_advance: Duration,
    stale_reported: bool,
    ended_reported: bool,
}

impl HlsTrack {
    pub fn new(buffer: usize) -> Self {
        Self {
            buffer: buffer.max(1),
            prev: None,
            next: None,
            target: Duration::from_secs(1),
            last_advance: Duration::ZERO,
            stale_reported: false,
            ended_reported: false,
        }
    }

    pub fn target_duration(&self) -> Duration {
        self.target
    }

    /// A playlist fetched at `now`. The reload comes `target duration` after a load that
    /// changed the playlist and half of it after one that did not (RFC 8216 §6.3.4).
    pub fn on_playlist(&mut self, text: &str, now: Duration) -> Reload {
        let mut out = Reload {
            reload_after: self.target / 2,
            ..Reload::default()
        };
        let playlist = match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(Playlist::MediaPlaylist(p)) => p,
            Ok(Playlist::MasterPlaylist(_)) => {
                out.findings.push((
                    ErrorKind::BadManifest,
                    "a multivariant playlist where a media playlist was expected".into(),
                ));
                return out;
            }
            Err(_) => {
                out.findings
                    .push((ErrorKind::BadManifest, parse_failure(text)));
                return out;
            }
        };
        if playlist.target_duration > 0 {
            self.target = Duration::from_secs(playlist.target_duration);
        }
        let mut map = None;
        let entries: Vec<Entry> = playlist
            .segments
            .iter()
            .map(|s| {
                // EXT-X-MAP applies to every segment after it until the next one.
                if let Some(m) = &s.map {
                    map = Some(m.uri.clone());
                }
                Entry {
                    uri: s.uri.clone(),
                    duration: f64::from(s.duration),
                    discontinuity: s.discontinuity,
                    // m3u8-rs keeps EXT-X-GAP among a segment's unknown tags.
                    gap: s.unknown_tags.iter().any(|t| t.tag == "X-GAP"),
                    map: map.clone(),
                }
            })
            .collect();
        let snap = Snapshot {
            media_sequence: playlist.media_sequence,
            discontinuity_sequence: playlist.discontinuity_sequence,
            entries,
        };
        if playlist.end_list && !self.ended_reported {
            self.ended_reported = true;
            out.findings.push((
                ErrorKind::Ended,
                "EXT-X-ENDLIST: the live presentation ended".into(),
            ));
        }

        let advanced = match &self.prev {
            None => true,
            Some(prev) => {
                self.compare(prev, &snap, &mut out);
                snap.end() > prev.end()
            }
        };
        if advanced {
            self.last_advance = now;
            self.stale_reported = false;
            out.reload_after = self.target;
        } else {
            // Only a reload that finds nothing new proves staleness: the content it saw was
            // generated after the last advance was observed, so its age is at least this.
            let age = now.saturating_sub(self.last_advance);
            if age > self.target * 3 / 2 && !self.stale_reported {
                self.stale_reported = true;
                out.findings.push((
                    ErrorKind::Stale,
                    format!(
                        "no new segment for {:.3} s (target duration {} s)",
                        age.as_secs_f64(),
                        self.target.as_secs()
                    ),
                ));
            }
        }

        // From the starting point (as a player joins: `buffer` segments back from the live
        // edge), or from where the last reload left off.
        let from = match self.next {
            Some(next) => {
                if snap.media_sequence > next {
                    out.broke_chain = true;
                    out.findings.push((
                        ErrorKind::Skipped,
                        format!(
                            "media sequence {next}..{} never listed: the playlist moved to {} \
                             between two reloads",
                            snap.media_sequence - 1,
                            snap.media_sequence
                        ),
                    ));
                }
                next.max(snap.media_sequence)
            }
            None => snap.end().saturating_sub(self.buffer as u64),
        }
        .max(snap.media_sequence);
        for msn in from..snap.end() {
            let Some(e) = snap.get(msn) else { break };
            if e.gap {
                out.findings.push((
                    ErrorKind::Gap,
                    format!("media sequence {msn} ({}) is an EXT-X-GAP", e.uri),
                ));
            }
            out.new.push(Listed {
                key: msn,
                uri: e.uri.clone(),
                init_uri: e.map.clone(),
                duration: e.duration,
                discontinuity: e.discontinuity,
                gap: e.gap,
                timeline: None,
            });
        }
        self.next = Some(self.next.unwrap_or(0).max(snap.end()));
        self.prev = Some(snap);
        out
    }

    /// The rules between two versions of a live playlist.
    fn compare(&self, prev: &Snapshot, snap: &Snapshot, out: &mut Reload) {
        if snap.media_sequence < prev.media_sequence {
            out.findings.push((
                ErrorKind::MediaSequence,
                format!(
                    "EXT-X-MEDIA-SEQUENCE went back from {} to {}",
                    prev.media_sequence, snap.media_sequence
                ),
            ));
        }
        if snap.end() < prev.end() {
            out.findings.push((
                ErrorKind::Dropped,
                format!(
                    "media sequence {}..{} was listed, then no longer (the playlist now ends \
                     at {})",
                    snap.end().max(prev.media_sequence),
                    prev.end() - 1,
                    snap.end().saturating_sub(1)
                ),
            ));
        }
        // Every segment both versions list must be the same one.
        let (lo, hi) = (
            snap.media_sequence.max(prev.media_sequence),
            snap.end().min(prev.end()),
        );
        for msn in lo..hi {
            let (Some(a), Some(b)) = (prev.get(msn), snap.get(msn)) else {
                break;
            };
            let mut what = Vec::new();
            if a.uri != b.uri {
                what.push(format!("URI {} → {}", a.uri, b.uri));
            }
            if (a.duration - b.duration).abs() > 0.001 {
                what.push(format!("duration {} → {}", a.duration, b.duration));
            }
            if a.discontinuity != b.discontinuity {
                what.push(format!(
                    "discontinuity {} → {}",
                    a.discontinuity, b.discontinuity
                ));
            }
            if a.gap != b.gap {
                what.push(format!("gap {} → {}", a.gap, b.gap));
            }
            if !what.is_empty() {
                out.findings.push((
                    ErrorKind::Rewritten,
                    format!("media sequence {msn} rewritten: {}", what.join(", ")),
                ));
            }
        }
        // The discontinuity sequence counts the discontinuities that slid out of the window;
        // checkable when every segment that slid out was seen.
        if snap.media_sequence >= prev.media_sequence && snap.media_sequence <= prev.end() {
            let slid = (snap.media_sequence - prev.media_sequence) as usize;
            let removed = prev
                .entries
                .iter()
                .take(slid)
                .filter(|e| e.discontinuity)
                .count() as u64;
            let want = prev.discontinuity_sequence + removed;
            if snap.discontinuity_sequence != want {
                out.findings.push((
                    ErrorKind::DiscontinuitySequence,
                    format!(
                        "EXT-X-DISCONTINUITY-SEQUENCE {} at media sequence {}, expected {want} \
                         ({} + {removed} discontinuities that left the window)",
                        snap.discontinuity_sequence,
                        snap.media_sequence,
                        prev.discontinuity_sequence
                    ),
                ));
            }
        }
    }
}
