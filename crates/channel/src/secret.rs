//! Credentials held in memory: compared in constant time, never printed, never serialized.

use serde::Deserialize;

/// A credential (the cluster's, an ingest credential). `Debug` shows no byte of it and it has
/// no `Serialize`, so it cannot slip into a log line or an API response by accident.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it (an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is this secret, in time that depends only on the lengths. An empty
    /// secret matches nothing.
    pub fn matches(&self, given: &str) -> bool {
        !self.0.is_empty() && constant_time_eq(&self.0, given)
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_itself_and_never_prints() {
        let secret = Secret::new("cluster-credential-0123");
        assert!(secret.matches("cluster-credential-0123"));
        assert!(!secret.matches("cluster-credential-0124"));
        assert!(!secret.matches("cluster-credential-012"));
        assert!(!secret.matches(""));
        assert!(
            !Secret::new("").matches(""),
            "an empty secret opens nothing"
        );
        assert_eq!(format!("{secret:?}"), "Secret(redacted)");
        let parsed: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert!(parsed.matches("abc"));
    }
}
