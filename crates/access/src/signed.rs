//! Signed playback URLs. A token covers a path prefix (a channel's `/live/{id}/`), until an
//! expiry, optionally for one client address; it is signed with HMAC-SHA256 under one of
//! several keys, each with an id, so keys rotate without breaking sessions (sign with the new
//! key while the origin still knows the old one).
//!
//! The token is `{payload}.{mac}`, both base64url without padding, where payload is
//! `v1|{key id}|{expires, Unix seconds}|{client address or empty}|{path prefix}` and mac the
//! HMAC-SHA256 of the payload's bytes. A CDN can check it at its edge with the same key and
//! drop the `st` parameter from its cache key.

use std::collections::BTreeMap;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The query parameter a playback token travels in.
pub const TOKEN_PARAM: &str = "st";
/// The longest token taken apart (a longer one is refused unread).
const MAX_TOKEN: usize = 1024;

/// The signing keys an origin knows, by id.
#[derive(Clone, Default)]
pub struct PlaybackKeys(BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for PlaybackKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl PlaybackKeys {
    /// Keys from `id=secret` pairs: ids of 1 to 32 of `a-z0-9_-`, secrets of at least 32
    /// characters.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (id, secret) in pairs {
            let id_ok = !id.is_empty()
                && id.len() <= 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
            if !id_ok {
                return Err(format!(
                    "playback key id `{id}`: 1 to 32 of a-z, 0-9, `_`, `-`"
                ));
            }
            if secret.len() < 32 {
                return Err(format!(
                    "playback key `{id}`: the secret must be at least 32 characters"
                ));
            }
            keys.insert(id.to_string(), secret.as_bytes().to_vec());
        }
        Ok(Self(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A token for `prefix` until `expires` (Unix seconds), for `client` only if given.
    pub fn sign(
        &self,
        key_id: &str,
        prefix: &str,
        expires: u64,
        client: Option<IpAddr>,
    ) -> Result<String, String> {
        let key = self
            .0
            .get(key_id)
            .ok_or_else(|| format!("no playback key `{key_id}`"))?;
        if prefix.contains('|') || !prefix.starts_with('/') {
            return Err(format!("`{prefix}`: a path prefix starts with `/`"));
        }
        let client = client.map(|ip| ip.to_string()).unwrap_or_default();
        let payload = format!("v1|{key_id}|{expires}|{client}|{prefix}");
        let mac = mac(key, payload.as_bytes()).finalize().into_bytes();
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(mac)
        ))
    }

    /// Whether `token` lets `client` fetch `path` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, path: &str, client: IpAddr, now: u64) -> Result<(), Denied> {
        if token.len() > MAX_TOKEN {
            return Err(Denied::Malformed);
        }
        let (payload, tag) = token.split_once('.').ok_or(Denied::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Denied::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Denied::Malformed)?;
        let text = std::str::from_utf8(&payload).map_err(|_| Denied::Malformed)?;
        let mut fields = text.splitn(5, '|');
        let (Some("v1"), Some(key_id), Some(expires), Some(bound), Some(prefix)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(Denied::Malformed);
        };
        let key = self.0.get(key_id).ok_or(Denied::UnknownKey)?;
        // The signature first: nothing unsigned is believed, not even the expiry.
        mac(key, &payload)
            .verify_slice(&tag)
            .map_err(|_| Denied::BadSignature)?;
        let expires: u64 = expires.parse().map_err(|_| Denied::Malformed)?;
        if now >= expires {
            return Err(Denied::Expired);
        }
        if !bound.is_empty() && bound.parse::<IpAddr>().ok() != Some(client) {
            return Err(Denied::OtherClient);
        }
        if !path.starts_with(prefix) {
            return Err(Denied::OtherPath);
        }
        Ok(())
    }
}

fn mac(key: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(payload);
    mac
}

/// Why a token was refused: for metrics and logs only, never for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    OtherClient,
    OtherPath,
}

impl Denied {
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Malformed => "malformed",
            Denied::UnknownKey => "unknown_key",
            Denied::BadSignature => "bad_signature",
            Denied::Expired => "expired",
            Denied::OtherClient => "other_client",
            Denied::OtherPath => "other_path",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1-secret-0123456789abcdefghijklmnop";
    const K2: &str = "k2-secret-0123456789abcdefghijklmnop";

    fn keys() -> PlaybackKeys {
        PlaybackKeys::parse([("k1", K1), ("k2", K2)]).unwrap_or_default()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn a_token_opens_its_prefix_until_it_expires() {
        let keys = keys();
        let token = keys
            .sign("k1", "/live/demo/", 1000, None)
            .unwrap_or_default();
        let me = ip("192.0.2.1");
        assert_eq!(keys.verify(&token, "/live/demo/main.m3u8", me, 999), Ok(()));
        assert_eq!(
            keys.verify(&token, "/live/demo/180p/7.m4s", me, 999),
            Ok(())
        );
        assert_eq!(
            keys.verify(&token, "/live/other/main.m3u8", me, 999),
            Err(Denied::OtherPath)
        );
        assert_eq!(
            keys.verify(&token, "/live/demo/main.m3u8", me, 1000),
            Err(Denied::Expired)
        );
    }

    #[test]
    fn a_bound_token_opens_for_its_client_only() {
        let keys = keys();
        let token = keys
            .sign("k2", "/live/demo/", 1000, Some(ip("192.0.2.1")))
            .unwrap_or_default();
        assert_eq!(
            keys.verify(&token, "/live/demo/x", ip("192.0.2.1"), 1),
            Ok(())
        );
        assert_eq!(
            keys.verify(&token, "/live/demo/x", ip("192.0.2.2"), 1),
            Err(Denied::OtherClient)
        );
    }

    #[test]
    fn tampered_unknown_and_malformed_tokens_are_refused() {
        let keys = keys();
        let token = keys
            .sign("k1", "/live/demo/", 1000, None)
            .unwrap_or_default();
        let (payload, tag) = token.split_once('.').unwrap_or_default();
        // A longer expiry under the old signature.
        let forged = URL_SAFE_NO_PAD.encode("v1|k1|9999|||/live/demo/");
        let me = ip("192.0.2.1");
        assert_eq!(
            keys.verify(&format!("{forged}.{tag}"), "/live/demo/x", me, 1),
            Err(Denied::BadSignature)
        );
        let widened = URL_SAFE_NO_PAD.encode("v1|k1|1000||/live/");
        assert_eq!(
            keys.verify(&format!("{widened}.{tag}"), "/live/other/x", me, 1),
            Err(Denied::BadSignature)
        );
        let only_k2 = PlaybackKeys::parse([("k2", K2)]).unwrap_or_default();
        assert_eq!(
            only_k2.verify(&token, "/live/demo/x", me, 1),
            Err(Denied::UnknownKey)
        );
        let other_secret = PlaybackKeys::parse([("k1", K2)]).unwrap_or_default();
        assert_eq!(
            other_secret.verify(&token, "/live/demo/x", me, 1),
            Err(Denied::BadSignature)
        );
        for bad in ["", "x", "x.y", payload, &"a".repeat(2000), "..", "v1.%%"] {
            assert!(keys.verify(bad, "/live/demo/x", me, 1).is_err(), "{bad}");
        }
    }

    /// Any `st` a viewer sends is refused or let through, never a panic; only a token signed
    /// with one of the keys lets anyone in (a mutation of a signed token forges nothing).
    #[test]
    fn fuzz_playback_token() {
        let keys = keys();
        let me = ip("192.0.2.1");
        let words = &[".", "|", "v1", "k1", "k2", "-", "_", "AAAA", "fHw"];
        fuzzing::Target::new("playback_token")
            .words(words)
            .run(|data| {
                let token = String::from_utf8_lossy(data);
                for path in ["/live/demo/main.m3u8", "/"] {
                    if keys.verify(&token, path, me, 2_000_000_000).is_err() {
                        continue;
                    }
                    // Signing again what the token says gives the token back.
                    let (payload, _) = token.split_once('.').unwrap_or_default();
                    let payload = URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
                    let text = String::from_utf8_lossy(&payload);
                    let f: Vec<&str> = text.splitn(5, '|').collect();
                    let [_, key_id, expires, client, prefix] = f.as_slice() else {
                        panic!("verified a token of {} fields", f.len());
                    };
                    let client = client.parse().ok();
                    let expires = expires.parse().unwrap_or_default();
                    assert_eq!(
                        keys.sign(key_id, prefix, expires, client).as_deref(),
                        Ok(&*token)
                    );
                }
            });
    }

    #[test]
    fn weak_keys_and_bad_ids_are_refused() {
        assert!(PlaybackKeys::parse([("k1", "short")]).is_err());
        assert!(PlaybackKeys::parse([("K 1", K1)]).is_err());
        assert!(!format!("{:?}", keys()).contains(K1));
    }
}
