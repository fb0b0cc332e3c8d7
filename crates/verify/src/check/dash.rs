//! DASH: the live MPD's `SegmentTimeline`s (`$Time$` or `$Number$` templates), followed across
//! reloads. Segments are keyed by presentation time in microseconds (Period start plus media
//! time minus `presentationTimeOffset`), the same key in every version of the MPD.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Listed;
use super::report::ErrorKind;
use super::timing::Finding;

/// More S entries than any live window holds; a bound on work for a hostile MPD.
const MAX_SEGMENTS: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Mpd {
    pub dynamic: bool,
    pub minimum_update_period: Option<Duration>,
    pub representations: Vec<Representation>,
}

/// One Representation of one Period.
#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    pub id: String,
    pub period: String,
    /// The Period whose AdaptationSet this one continues seamlessly (a period-continuity
    /// descriptor): entering it is no discontinuity.
    pub continues: Option<String>,
    pub timescale: u32,
    pub init_uri: Option<String>,
    pub segments: Vec<DashSegment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DashSegment {
    /// Presentation time in µs: the key.
    pub key: u64,
    /// The key of `t + d`, computed the same way so that `S` entries that follow each other
    /// have `end == next key` exactly.
    pub end: u64,
    /// `S@t` and `S@d`, in the timescale.
    pub t: u64,
    pub d: u64,
    pub uri: String,
}

/// `PT1S`, `PT0.5S`, `PT1H2M3.5S`, `P1DT2H`. Years and months have no fixed length: refused.
pub fn parse_xs_duration(s: &str) -> Option<Duration> {
    let rest = s.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut secs = 0.0f64;
    if !date.is_empty() {
        secs += date.strip_suffix('D')?.parse::<f64>().ok()? * 86_400.0;
    }
    if let Some(mut t) = time {
        for (unit, factor) in [('H', 3600.0), ('M', 60.0), ('S', 1.0)] {
            if let Some((v, r)) = t.split_once(unit) {
                secs += v.parse::<f64>().ok()? * factor;
                t = r;
            }
        }
        if !t.is_empty() {
            return None;
        }
    }
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Expands a SegmentTemplate: `$RepresentationID$`, `$Number$`, `$Time$`, `$Bandwidth$`
/// (with an optional `%0Nd` width) and `$$`.
pub fn expand_template(t: &str, id: &str, bandwidth: u64, number: u64, time: u64) -> String {
    let mut out = String::with_capacity(t.len() + 16);
    let mut parts = t.split('$');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    // Between each pair of `$`: an identifier; after it, a literal.
    while let Some(ident) = parts.next() {
        let literal = parts.next();
        let (name, width) = match ident.split_once('%') {
            Some((n, f)) => (
                n,
                f.strip_prefix('0')
                    .and_then(|w| w.strip_suffix('d'))
                    .and_then(|w| w.parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(32),
            ),
            None => (ident, 0),
        };
        let value = match name {
            "" => Some("$".to_string()),
            "RepresentationID" => Some(id.to_string()),
            "Number" => Some(format!("{number:0width$}")),
            "Time" => Some(format!("{time:0width$}")),
            "Bandwidth" => Some(format!("{bandwidth:0width$}")),
            _ => None,
        };
        match (value, literal) {
            (Some(v), _) => out.push_str(&v),
            // Not an identifier: keep the text as written.
            (None, _) => {
                out.push('$');
                out.push_str(ident);
                if literal.is_some() {
                    out.push('$');
                }
            }
        }
        if let Some(l) = literal {
            out.push_str(l);
        }
    }
    out
}

fn attr_u64(n: roxmltree::Node<'_, '_>, name: &str) -> Result<Option<u64>, String> {
    n.attribute(name)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{}@{name}={v:?} is not a whole number", n.tag_name().name()))
        })
        .transpose()
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.tag_name().name() == name)
}

fn children<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    n.children().filter(move |c| c.tag_name().name() == name)
}

/// DASH-IF IOP 4.3 §4.3.3.3.2: an AdaptationSet continuing the previous Period's.
const PERIOD_CONTINUITY: &str = "urn:mpeg:dash:period-continuity:2015";

/// Parses a live MPD's Periods, Representations and their SegmentTimelines.
pub fn parse_mpd(text: &str) -> Result<Mpd, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "MPD" {
        return Err(format!(
            "root element <{}>, not <MPD>",
            root.tag_name().name()
        ));
    }
    let dynamic = root.attribute("type") == Some("dynamic");
    let minimum_update_period = match root.attribute("minimumUpdatePeriod") {
        Some(v) => Some(parse_xs_duration(v).ok_or(format!("minimumUpdatePeriod {v:?}"))?),
        None => None,
    };
    let mut representations = Vec::new();
    let mut total = 0usize;
    for (pi, period) in children(root, "Period").enumerate() {
        let pid = period
            .attribute("id")
            .map_or_else(|| format!("#{pi}"), str::to_string);
        let start = match period.attribute("start") {
            Some(v) => parse_xs_duration(v).ok_or(format!("Period@start {v:?}"))?,
            None => Duration::ZERO,
        };
        for set in children(period, "AdaptationSet") {
            let continues = ["SupplementalProperty", "EssentialProperty"]
                .into_iter()
                .flat_map(|kind| children(set, kind))
                .find(|d| d.attribute("schemeIdUri") == Some(PERIOD_CONTINUITY))
                .and_then(|d| d.attribute("value"))
                .map(str::to_string);
            for rep in children(set, "Representation") {
                let id = rep
                    .attribute("id")
                    .ok_or("a Representation without @id")?
                    .to_string();
                let bandwidth = attr_u64(rep, "bandwidth")?.unwrap_or(0);
                // The Representation's SegmentTemplate refines the AdaptationSet's.
                let templates: Vec<_> =
                    [child(rep, "SegmentTemplate"), child(set, "SegmentTemplate")]
                        .into_iter()
                        .flatten()
                        .collect();
                let get = |name: &str| templates.iter().find_map(|t| t.attribute(name));
                let Some(media) = get("media") else {
                    return Err(format!("Representation {id}: no SegmentTemplate@media"));
                };
                let timescale = match get("timescale") {
                    Some(v) => v.parse::<u32>().ok().filter(|t| *t > 0).ok_or(format!(
                        "Representation {id}: SegmentTemplate@timescale {v:?}"
                    ))?,
                    None => 1,
                };
                let pto = get("presentationTimeOffset")
                    .map(|v| v.parse::<u64>())
                    .transpose()
                    .map_err(|_| format!("Representation {id}: presentationTimeOffset"))?
                    .unwrap_or(0);
                let start_number = get("startNumber")
                    .map(|v| v.parse::<u64>())
                    .transpose()
                    .map_err(|_| format!("Representation {id}: startNumber"))?
                    .unwrap_or(1);
                let init_uri = get("initialization")
                    .map(|t| expand_template(t, &id, bandwidth, start_number, 0));
                let Some(timeline) = templates.iter().find_map(|t| child(*t, "SegmentTimeline"))
                else {
                    return Err(format!(
                        "Representation {id}: no SegmentTimeline (only timelines are checked)"
                    ));
                };
                let mut segments = Vec::new();
                let (mut t, mut number) = (0u64, start_number);
                for s in children(timeline, "S") {
                    if let Some(st) = attr_u64(s, "t")? {
                        t = st;
                    }
                    let d = attr_u64(s, "d")?
                        .filter(|d| *d > 0)
                        .ok_or(format!("Representation {id}: an S without a positive @d"))?;
                    let r = match s.attribute("r") {
                        None => 0,
                        Some(v) => v.trim().parse::<u64>().map_err(|_| {
                            format!(
                                "Representation {id}: S@r={v:?} (open-ended repeats unsupported)"
                            )
                        })?,
                    };
                    for _ in 0..=r {
                        total += 1;
                        if total > MAX_SEGMENTS {
                            return Err(format!("more than {MAX_SEGMENTS} segments"));
                        }
                        let end_t = t.checked_add(d).ok_or("S@t + S@d overflows")?;
                        let key_of = |t: u64| {
                            let media = u128::from(t.saturating_sub(pto));
                            let us = start.as_micros() + media * 1_000_000 / u128::from(timescale);
                            u64::try_from(us).map_err(|_| "a time beyond u64 µs")
                        };
                        segments.push(DashSegment {
                            key: key_of(t)?,
                            end: key_of(end_t)?,
                            t,
                            d,
                            uri: expand_template(media, &id, bandwidth, number, t),
                        });
                        t = end_t;
                        number += 1;
                    }
                }
                representations.push(Representation {
                    id,
                    period: pid.clone(),
                    continues: continues.clone(),
                    timescale,
                    init_uri,
                    segments,
                });
            }
        }
    }
    Ok(Mpd {
        dynamic,
        minimum_update_period,
        representations,
    })
}

#[derive(Debug, Clone, PartialEq)]
struct Known {
    end: u64,
    t: u64,
    d: u64,
    timescale: u32,
    period: String,
    continues: Option<String>,
}

impl Known {
    /// The same segment: a segment the origin moves into a new Period that continues its old
    /// one (its Period began at a header change of another Representation) is not rewritten.
    fn same_as(&self, before: &Known) -> bool {
        let moved_on = self.continues.as_ref() == Some(&before.period);
        (self.end, self.t, self.d, self.timescale)
            == (before.end, before.t, before.d, before.timescale)
            && (moved_on || (self.period == before.period && self.continues == before.continues))
    }
}

/// What one MPD version said about one Representation.
#[derive(Debug, Default)]
pub struct Reload {
    pub new: Vec<Listed>,
    pub findings: Vec<Finding>,
    pub broke_chain: bool,
}

/// One Representation (by id, across Periods), followed across reloads.
#[derive(Debug)]
pub struct DashTrack {
    buffer: usize,
    /// The last version's segments, by key.
    known: BTreeMap<u64, Known>,
    /// Key just past the last segment handed out; `None` before the first load.
    next: Option<u64>,
    last_period: Option<String>,
    longest: Duration,
    last_advance: Duration,
    stale_reported: bool,
    loaded: bool,
}

fn ticks_secs(ticks: u64, timescale: u32) -> f64 {
    ticks as f64 / f64::from(timescale)
}

impl DashTrack {
    pub fn new(buffer: usize) -> Self {
        Self {
            buffer: buffer.max(1),
            known: BTreeMap::new(),
            next: None,
            last_period: None,
            longest: Duration::ZERO,
            last_advance: Duration::ZERO,
            stale_reported: false,
            loaded: false,
        }
    }

    /// This Representation's entries (from every Period that has it) in one MPD version.
    pub fn on_mpd(&mut self, parts: &[&Representation], now: Duration) -> Reload {
        let mut out = Reload::default();
        // (key, end key, known, uri, init) in presentation order.
        let mut all: Vec<(u64, u64, Known, &str, Option<&str>)> = Vec::new();
        for rep in parts {
            for s in &rep.segments {
                let end = s.end;
                let k = Known {
                    end,
                    t: s.t,
                    d: s.d,
                    timescale: rep.timescale,
                    period: rep.period.clone(),
                    continues: rep.continues.clone(),
                };
                self.longest = self
                    .longest
                    .max(Duration::from_secs_f64(ticks_secs(s.d, rep.timescale)));
                all.push((s.key, end, k, &s.uri, rep.init_uri.as_deref()));
            }
        }
        all.sort_by_key(|e| e.0);
        let now_end = all.last().map_or(0, |e| e.1);
        let prev_end = self.known.values().next_back().map_or(0, |v| v.end);

        if !self.known.is_empty() {
            let first = all.first().map_or(u64::MAX, |e| e.0);
            for (key, k) in self.known.range(first..) {
                match all.binary_search_by_key(key, |e| e.0) {
                    Ok(i) if all.get(i).is_some_and(|e| e.2.same_as(k)) => {}
                    Ok(i) => {
                        let now = all.get(i).map(|e| e.2.d).unwrap_or_default();
                        out.findings.push((
                            ErrorKind::Rewritten,
                            format!("S t={} rewritten: d={} → d={now}", k.t, k.d),
                        ));
                    }
                    Err(_) if *key < now_end => out.findings.push((
                        ErrorKind::Rewritten,
                        format!("S t={} d={} is no longer in the timeline", k.t, k.d),
                    )),
                    Err(_) => {}
                }
            }
            if now_end < prev_end {
                out.findings.push((
                    ErrorKind::Dropped,
                    format!(
                        "the timeline ended at {:.3} s and now ends at {:.3} s",
                        prev_end as f64 / 1e6,
                        now_end as f64 / 1e6
                    ),
                ));
            }
        }

        let advanced = !self.loaded || now_end > prev_end;
        self.loaded = true;
        if advanced {
            self.last_advance = now;
            self.stale_reported = false;
        } else {
            let age = now.saturating_sub(self.last_advance);
            if age > self.longest.max(Duration::from_secs(1)) * 3 / 2 && !self.stale_reported {
                self.stale_reported = true;
                out.findings.push((
                    ErrorKind::Stale,
                    format!(
                        "no new segment for {:.3} s (longest segment {:.3} s)",
                        age.as_secs_f64(),
                        self.longest.as_secs_f64()
                    ),
                ));
            }
        }

        let from = match self.next {
            Some(next) => {
                if let Some(first) = all.first().filter(|e| e.0 > next) {
                    out.broke_chain = true;
                    out.findings.push((
                        ErrorKind::Skipped,
                        format!(
                            "{:.3} s of segments before t={} were never listed",
                            (first.0 - next) as f64 / 1e6,
                            first.2.t
                        ),
                    ));
                }
                next
            }
            // A player joins `buffer` segments back from the live edge.
            None => all
                .len()
                .checked_sub(self.buffer)
                .and_then(|i| all.get(i))
                .or(all.first())
                .map_or(0, |e| e.0),
        };

        let mut prev: Option<(u64, &Known)> = None;
        for (key, end, k, uri, init) in &all {
            if let Some((prev_end, pk)) = prev
                && pk.period == k.period
                && *key > prev_end
                && prev_end >= from
            {
                // A hole in time inside one Period: listed as a gap the player skips.
                let secs = (key - prev_end) as f64 / 1e6;
                out.findings.push((
                    ErrorKind::Gap,
                    format!("a hole of {secs:.3} s in the timeline before t={}", k.t),
                ));
                out.new.push(Listed {
                    key: prev_end,
                    uri: String::new(),
                    init_uri: None,
                    duration: secs,
                    discontinuity: false,
                    gap: true,
                    timeline: None,
                });
            }
            prev = Some((*end, k));
            if *key < from {
                continue;
            }
            let discontinuity = self
                .last_period
                .as_ref()
                .is_some_and(|p| *p != k.period && k.continues.as_ref() != Some(p));
            self.last_period = Some(k.period.clone());
            out.new.push(Listed {
                key: *key,
                uri: (*uri).to_string(),
                init_uri: init.map(str::to_string),
                duration: ticks_secs(k.d, k.timescale),
                discontinuity,
                gap: false,
                timeline: Some((k.t, k.d, k.timescale)),
            });
        }
        if let Some(last) = all.last() {
            self.next = Some(self.next.unwrap_or(0).max(last.1));
        }
        self.known = all.into_iter().map(|(key, _, k, _, _)| (key, k)).collect();
        out
    }
}
