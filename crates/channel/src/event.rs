//! Structured events: every input loss, encoder start or restart, lock and failover is one
//! [`Event`], written to the log as JSON and kept in the catalog for the events API.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A publisher connected to an input.
    InputStarted,
    /// A publisher left or went silent.
    InputEnded,
    /// A pipeline's decoder locked an input session to the epoch grid, with its lock mode.
    InputLocked,
    /// A decoder died, stalled or saw the input's timestamps jump, and is being restarted.
    DecoderRestarted,
    /// A pipeline's failover policy counts an input as failing (loss, black, silence).
    InputFailed,
    /// A pipeline now takes its pictures from another input.
    InputSwitched,
    /// A pipeline has no input left: it fills or pauses.
    InputLost,
    /// An encoder started on a segment boundary.
    EncoderStarted,
    /// An encoder died or hung and is being restarted.
    EncoderRestarted,
    /// The encoders stopped: the channel pauses while no input delivers.
    EncoderStopped,
    /// The two pipelines' CMAF headers for a rendition differ.
    HeaderMismatch,
    /// A segment was listed with another header than the one before it: announced to players
    /// as a discontinuity (HLS) and a new Period (DASH).
    Discontinuity,
    /// The two pipelines' copies of a segment differ in time or sample count.
    CopiesMisaligned,
    /// At start-up, catalog and store disagreed and were brought back in line.
    StoreRepaired,
    /// A write to the blob store or the catalog failed (full disk, unreachable object store):
    /// new segments are not listed until it recovers; what is listed is still served.
    StoreFailed,
    /// Writes succeed again after a failure.
    StoreRecovered,
    /// A node took the lease of one of the channel's pipelines and started it there.
    LeaseClaimed,
    /// A node gave a pipeline's lease up (a drain, a rebalance) and stopped the pipeline.
    LeaseReleased,
    /// A node found its lease taken over or expired and stopped that pipeline at once.
    LeaseLost,
    /// The packager refused an upload from a pipeline whose lease epoch is no longer current.
    UploadFenced,
    /// A change made through the control API, naming the token that made it.
    ApiChange,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    pub channel: String,
    /// What reported it: `input main`, `pipeline a`, `packager`.
    pub source: String,
    pub kind: EventKind,
    pub detail: String,
}

/// Where events go. Cheap to clone; a node wires it to its log and catalog.
#[derive(Clone, Default)]
pub struct Events(Option<Arc<dyn Fn(Event) + Send + Sync>>);

impl Events {
    pub fn new(sink: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(sink)))
    }

    /// Emits an event stamped now (the one clock read of this crate: an event happens when it
    /// is reported).
    pub fn emit(&self, channel: &str, source: &str, kind: EventKind, detail: impl Into<String>) {
        if let Some(sink) = &self.0 {
            let at_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            sink(Event {
                at_ms: at_ms as u64,
                channel: channel.to_string(),
                source: source.to_string(),
                kind,
                detail: detail.into(),
            });
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Events(sink)"
        } else {
            "Events(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn events_reach_the_sink_stamped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let events = Events::new(move |e| sink.lock().unwrap().push(e));
        events.emit(
            "demo",
            "pipeline a",
            EventKind::EncoderRestarted,
            "ffmpeg exited",
        );
        Events::default().emit(
            "demo",
            "pipeline b",
            EventKind::EncoderStarted,
            "nobody listens",
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].kind, EventKind::EncoderRestarted);
        assert!(seen[0].at_ms > 1_700_000_000_000);
        let json = serde_json::to_string(&seen[0]).unwrap();
        assert!(json.contains("\"kind\":\"encoder_restarted\""), "{json}");
    }
}
