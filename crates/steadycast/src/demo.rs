//! The demo channel: a built-in test pattern on both pipelines, with a ladder light enough to
//! run in real time twice on a 2-core machine while viewers watch.

use std::collections::BTreeMap;

use channel::{AudioSpec, ChannelSpec, InputSpec, PipelineInput, PipelineInputs, RenditionSpec};

pub fn channel() -> ChannelSpec {
    let rendition = |name: &str, width, height, bitrate_kbps| RenditionSpec {
        name: name.to_string(),
        width,
        height,
        bitrate_kbps,
    };
    ChannelSpec {
        id: "demo".to_string(),
        // Two patterns: the backup lets `steadycast chaos --scenario cut-primary-input` show
        // a failover on the demo (both carry the same wall clock, so the picture continues;
        // the backup is smaller, as backup feeds often are, and costs less).
        inputs: BTreeMap::from([
            ("pattern".to_string(), pattern("640x360")),
            ("backup".to_string(), pattern("320x180")),
        ]),
        pipelines: Some(PipelineInputs {
            a: primary_and_backup(),
            b: primary_and_backup(),
        }),
        frame_rate: "30"
            .parse()
            .unwrap_or_else(|_| unreachable!("30 is a frame rate")),
        segment_seconds: 2.0,
        ladder: vec![
            rendition("360p", 640, 360, 800),
            rendition("180p", 320, 180, 300),
        ],
        audio: AudioSpec::default(),
        preset: "veryfast".to_string(),
        live_window_seconds: 60,
        startover_window_seconds: 2 * 3600,
        max_harvest_seconds: 24 * 3600,
        failover: Default::default(),
        ingest_credential: None,
        playback: Default::default(),
        allowed_sources: Default::default(),
        retiring_keys: Vec::new(),
    }
}

fn pattern(size: &str) -> InputSpec {
    InputSpec::TestPattern {
        size: size.to_string(),
        frame_rate: "30".to_string(),
    }
}

fn primary_and_backup() -> PipelineInput {
    PipelineInput::Pair {
        primary: "pattern".to_string(),
        backup: Some("backup".to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_channel_is_valid() {
        assert_eq!(super::channel().validate(), Ok(()));
    }
}
