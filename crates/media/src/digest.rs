//! `Content-Digest` (RFC 9530) of an upload: a pipeline states the SHA-256 of what it sent, so
//! the packager refuses bytes damaged on the way even when they still parse as CMAF.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The header value for `body`: `sha-256=:<base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    let hash = Sha256::digest(body);
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// A 64-bit name for `body` (the first bytes of its SHA-256): the same on every node, and
/// collision-free in practice for the handful of headers a rendition ever has.
pub fn content_id(body: &[u8]) -> u64 {
    let hash = Sha256::digest(body);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// Whether `header` (a `Content-Digest` value, possibly listing several algorithms) holds a
/// SHA-256 digest, and whether it matches `body`. `None` when it has no SHA-256 entry.
pub fn matches_digest(header: &str, body: &[u8]) -> Option<bool> {
    let want = content_digest(body);
    let entries = header.split(',').map(str::trim);
    let sha = entries
        .filter(|e| e.starts_with("sha-256="))
        .collect::<Vec<_>>();
    if sha.is_empty() {
        return None;
    }
    Some(sha.contains(&want.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_matching() {
        // RFC 9530 appendix example body `{"hello": "world"}`.
        let body = br#"{"hello": "world"}"#;
        assert_eq!(
            content_digest(body),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
        let header = format!("sha-512=:abc:, {}", content_digest(body));
        assert_eq!(matches_digest(&header, body), Some(true));
        assert_eq!(
            matches_digest(&header, b"{\"hello\": \"world!\"}"),
            Some(false)
        );
        assert_eq!(matches_digest("md5=:abc:", body), None);
    }
}
