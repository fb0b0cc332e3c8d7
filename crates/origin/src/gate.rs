//! Who may play a channel: its CDN header and its signed URLs, checked on every playlist, MPD,
//! header and segment request before anything is read. A refusal says only that a valid token
//! (or the CDN's header) is needed; why it failed goes to the metrics.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use access::{Denied, TOKEN_PARAM};
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;

use crate::live::LiveChannel;
use crate::{Origin, OriginError};

/// The token a request was admitted with, to be carried into every URL its answer names.
pub(crate) type Token = Option<String>;

pub(crate) fn admit(
    origin: &Origin,
    channel: &LiveChannel,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    peer: Option<ConnectInfo<SocketAddr>>,
) -> Result<Token, OriginError> {
    let access = &channel.spec.playback;
    if let Some(name) = &access.cdn_header {
        let given = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
        if !given.is_some_and(|v| access.cdn_value_matches(v)) {
            return Err(refuse(channel, "cdn_header"));
        }
    }
    if !access.signed_urls {
        return Ok(None);
    }
    let token = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(TOKEN_PARAM)?.strip_prefix('='))
        .ok_or_else(|| refuse(channel, Denied::Missing.as_str()))?;
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let client = access::client_address(peer, forwarded, &origin.viewers.trusted_proxies);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    origin
        .viewers
        .playback_keys
        .verify(token, path, client, now)
        .map_err(|denied| refuse(channel, denied.as_str()))?;
    Ok(Some(token.to_string()))
}

fn refuse(channel: &LiveChannel, reason: &'static str) -> OriginError {
    metrics::counter!("steadycast_playback_refused_total",
        "channel" => channel.spec.id.clone(), "reason" => reason)
    .increment(1);
    OriginError::Forbidden("playback of this channel needs a valid, unexpired token".into())
}

/// The query a rendered manifest gives every URL it names: the admitting token, if any.
pub(crate) fn child_query(token: &Token) -> String {
    token
        .as_ref()
        .map(|t| format!("?{TOKEN_PARAM}={t}"))
        .unwrap_or_default()
}
