//! The two feeds of a channel and the packager's choice between their copies of a segment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the two synchronized pipelines' outputs. Player URLs never name a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    A,
    B,
}

impl Feed {
    pub const BOTH: [Feed; 2] = [Feed::A, Feed::B];

    pub fn as_str(self) -> &'static str {
        match self {
            Feed::A => "a",
            Feed::B => "b",
        }
    }
}

impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Feed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "a" => Ok(Feed::A),
            "b" => Ok(Feed::B),
            _ => Err(format!("feed must be `a` or `b`, not `{s}`")),
        }
    }
}

/// What the packager does with a complete copy of (rendition, N) that a feed delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// No copy was kept yet: this one is stored and listed.
    Keep,
    /// A copy is already kept; listed bytes never change, so this one is dropped.
    AlreadyKept { kept: Feed },
}

/// The rule for choosing between copies: the first complete copy wins, so what a manifest
/// listed is never replaced.
pub struct SegmentChoice;

impl SegmentChoice {
    pub fn offer(kept: Option<Feed>) -> Offer {
        match kept {
            None => Offer::Keep,
            Some(kept) => Offer::AlreadyKept { kept },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_copy_wins() {
        assert_eq!(SegmentChoice::offer(None), Offer::Keep);
        assert_eq!(
            SegmentChoice::offer(Some(Feed::B)),
            Offer::AlreadyKept { kept: Feed::B }
        );
    }

    #[test]
    fn feed_names() {
        assert_eq!("a".parse::<Feed>(), Ok(Feed::A));
        assert!("c".parse::<Feed>().is_err());
        assert_eq!(Feed::B.to_string(), "b");
    }
}
