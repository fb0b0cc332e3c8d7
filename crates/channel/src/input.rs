use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// How a channel's input receives its contribution feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum InputSpec {
    /// RTMP push to the node's RTMP listener: `rtmp://HOST:PORT/live/{stream_key}`.
    Rtmp { stream_key: String },
    /// SRT caller to the node's SRT listener with `streamid={channel}/{input}`.
    Srt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<String>,
    },
    /// MPEG-TS datagrams on `bind`; `multicast` joins a group on `interface`.
    Udp {
        bind: SocketAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        multicast: Option<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interface: Option<Ipv4Addr>,
    },
    /// MPEG-TS over a TCP connection to `bind`.
    Tcp { bind: SocketAddr },
    /// The built-in moving test pattern with a burnt-in wall clock and a tone, stamped with Unix
    /// time (source-locked).
    TestPattern {
        #[serde(default = "default_pattern_size")]
        size: String,
        #[serde(default = "default_pattern_rate")]
        frame_rate: String,
    },
}

fn default_pattern_size() -> String {
    "640x360".to_string()
}

fn default_pattern_rate() -> String {
    "30".to_string()
}
