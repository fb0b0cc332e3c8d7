//! Who may play a channel: signed playback URLs and a CDN's shared-secret header, each off
//! unless the channel asks for it.

use serde::{Deserialize, Serialize};

use crate::REDACTED;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybackAccess {
    /// Every playlist, MPD, header and segment request carries a token (`?st=`) signed with
    /// one of the node's `playback_keys`; the origin writes it into every URL it renders.
    #[serde(default)]
    pub signed_urls: bool,
    /// Requests must carry this header with one of `cdn_values`: only the CDN knows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdn_header: Option<String>,
    /// The accepted values, several so that one is rotated without downtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdn_values: Vec<String>,
}

impl PlaybackAccess {
    pub(crate) fn validate(&self, errors: &mut Vec<String>) {
        match &self.cdn_header {
            Some(name) => {
                let token = !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !token {
                    errors.push(format!(
                        "playback.cdn_header `{name}`: a header name of 1-64 letters, digits, \
                         `-`, `_`"
                    ));
                }
                if self.cdn_values.is_empty() || self.cdn_values.len() > 8 {
                    errors.push("playback.cdn_values: give 1 to 8 values".into());
                }
                if self.cdn_values.iter().any(|v| {
                    v.len() < 16 || v.len() > 256 || !v.bytes().all(|b| b.is_ascii_graphic())
                }) {
                    errors.push(
                        "playback.cdn_values: each 16 to 256 printable ASCII characters".into(),
                    );
                }
            }
            None if !self.cdn_values.is_empty() => {
                errors.push("playback.cdn_values: give cdn_header too".into());
            }
            None => {}
        }
    }

    pub(crate) fn redact(&mut self) {
        for value in &mut self.cdn_values {
            *value = REDACTED.into();
        }
    }

    /// Whether `given` (the CDN header's value) is one of the accepted values, compared in
    /// time that does not depend on where they differ.
    pub fn cdn_value_matches(&self, given: &str) -> bool {
        // Every value compared, so the time says nothing of which one matched.
        self.cdn_values.iter().fold(false, |found, v| {
            crate::secret::constant_time_eq(v, given) | found
        })
    }
}
