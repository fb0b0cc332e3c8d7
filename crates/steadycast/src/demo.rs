//! The demo channel: a built-in test pattern on both pipelines, with a ladder light enough to
//! run in real time twice on a 2-core machine while viewers watch.

use std::collections::BTreeMap;

use channel::{AudioSpec, ChannelSpec, InputSpec, RenditionSpec};

pub fn channel() -> ChannelSpec {
    let rendition = |name: &str, width, height, bitrate_kbps| RenditionSpec {
        name: name.to_string(),
        width,
        height,
        bitrate_kbps,
    };
    ChannelSpec {
        id: "demo".to_string(),
        inputs: BTreeMap::from([(
            "pattern".to_string(),
            InputSpec::TestPattern {
                size: "640x360".to_string(),
                frame_rate: "30".to_string(),
            },
        )]),
        pipelines: None,
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
        failover: Default::default(),
        ingest_credential: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_channel_is_valid() {
        assert_eq!(super::channel().validate(), Ok(()));
    }
}
