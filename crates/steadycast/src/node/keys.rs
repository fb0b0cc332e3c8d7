//! Rotating an RTMP input's stream key: the new key opens the input at once and the old one
//! keeps opening it for a grace time, on every ingest node, so the publisher moves over
//! without a drop. A session already publishing is never cut by a rotation.

use std::time::Duration;

use channel::{ChannelSpec, InputSpec, RetiringKey};

use super::{Node, NodeError, new_secret, now_ms};

/// The longest an old key may keep working.
pub const MAX_GRACE: Duration = Duration::from_secs(86_400);

impl Node {
    /// Gives RTMP input `input` of channel `id` a new stream key; the old one keeps opening it
    /// for `grace`. Returns the channel as stored and the new key.
    pub async fn rotate_stream_key(
        &self,
        id: &str,
        input: &str,
        grace: Duration,
    ) -> Result<(ChannelSpec, String), NodeError> {
        let row = self
            .catalog
            .channel(id)
            .await?
            .ok_or_else(|| NodeError::Unknown(format!("no channel `{id}`")))?;
        let mut spec: ChannelSpec = serde_json::from_str(&row.spec)
            .map_err(|e| NodeError::Invalid(vec![format!("stored channel unreadable: {e}")]))?;
        let Some(InputSpec::Rtmp { stream_key }) = spec.inputs.get_mut(input) else {
            return Err(NodeError::Invalid(vec![format!(
                "input `{input}` of `{id}` is not an RTMP input: only stream keys rotate (an \
                 SRT passphrase cannot change under a caller without a drop)"
            )]));
        };
        let fresh = new_secret();
        let old = std::mem::replace(stream_key, fresh.clone());
        let now = now_ms();
        spec.retiring_keys.retain(|r| r.until_ms > now);
        spec.retiring_keys.push(RetiringKey {
            input: input.to_string(),
            stream_key: old,
            until_ms: now + grace.min(MAX_GRACE).as_millis() as u64,
        });
        let json = serde_json::to_string(&spec).unwrap_or_default();
        self.catalog.put_channel(id, &json).await?;
        self.apply_stream_keys(&spec)?;
        Ok((spec, fresh))
    }

    /// Sets the stream keys (current and retiring) of the channel's RTMP inputs listening
    /// here; other nodes do the same when they read the changed definition.
    pub(super) fn apply_stream_keys(&self, spec: &ChannelSpec) -> Result<(), NodeError> {
        let now = now_ms();
        for (name, input) in &spec.inputs {
            if let InputSpec::Rtmp { stream_key } = input
                && self.inputs.port(&spec.id, name).is_some()
            {
                let retiring = spec.retiring_keys_of(name, now);
                self.inputs
                    .set_stream_keys(&spec.id, name, stream_key, &retiring)?;
            }
        }
        Ok(())
    }
}
