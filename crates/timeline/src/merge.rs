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

    /// The channel's other pipeline.
    pub fn other(self) -> Feed {
        match self {
            Feed::A => Feed::B,
            Feed::B => Feed::A,
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

/// A complete copy of (rendition, N) from one feed, with its pipeline's quality score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOffer {
    pub feed: Feed,
    /// 0-100; 100 when the pipeline gave none.
    pub quality: u8,
    /// Whether it decodes with the header of the segment listed before it. A copy that does
    /// not would cost viewers a discontinuity, so it counts as flawed, and below any copy that
    /// continues.
    pub continues: bool,
}

impl CopyOffer {
    fn rank(self) -> (bool, u8) {
        (self.continues, self.quality)
    }
}

/// What the packager does with a complete copy a feed delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// List this copy now.
    Keep,
    /// Hold this flawed copy for the grace time: the other feed's may be better.
    Hold,
    /// The held copy from the other feed is no worse than this one: list the held copy now.
    KeepHeld,
    /// A copy is already listed; listed bytes never change, so this one is dropped.
    AlreadyKept { kept: Feed },
}

/// The rule for choosing between copies: a flawless copy that continues the header is listed at
/// once; any other waits up to a grace time for the other feed's, and the better of the two is
/// listed (the first on a tie), continuity first, then quality. Whatever a manifest listed is
/// never replaced, and a segment is always one whole copy.
pub struct SegmentChoice;

impl SegmentChoice {
    pub const FLAWLESS: u8 = 100;

    /// `kept`: the feed of the listed copy; `held`: the copy waiting out its grace time.
    pub fn offer(kept: Option<Feed>, held: Option<CopyOffer>, offered: CopyOffer) -> Offer {
        if let Some(kept) = kept {
            return Offer::AlreadyKept { kept };
        }
        match held {
            // A retry of the held copy's feed replaces it and waits on.
            Some(held) if held.feed == offered.feed => Offer::Hold,
            Some(held) if offered.rank() > held.rank() => Offer::Keep,
            Some(_) => Offer::KeepHeld,
            None if offered.continues && offered.quality >= Self::FLAWLESS => Offer::Keep,
            None => Offer::Hold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(feed: Feed, quality: u8) -> CopyOffer {
        CopyOffer {
            feed,
            quality,
            continues: true,
        }
    }

    fn new_header(feed: Feed, quality: u8) -> CopyOffer {
        CopyOffer {
            continues: false,
            ..copy(feed, quality)
        }
    }

    #[test]
    fn a_copy_that_changes_the_header_waits_for_one_that_continues() {
        assert_eq!(
            SegmentChoice::offer(None, None, new_header(Feed::A, 100)),
            Offer::Hold
        );
        let held = Some(new_header(Feed::A, 100));
        // Continuity beats quality: a discontinuity costs every viewer a decoder reset.
        assert_eq!(
            SegmentChoice::offer(None, held, copy(Feed::B, 60)),
            Offer::Keep
        );
        assert_eq!(
            SegmentChoice::offer(None, held, new_header(Feed::B, 100)),
            Offer::KeepHeld
        );
        // A held continuing copy is never beaten by one that breaks continuity.
        assert_eq!(
            SegmentChoice::offer(None, Some(copy(Feed::A, 40)), new_header(Feed::B, 100)),
            Offer::KeepHeld
        );
    }

    #[test]
    fn a_flawless_first_copy_is_kept_and_never_replaced() {
        assert_eq!(
            SegmentChoice::offer(None, None, copy(Feed::A, 100)),
            Offer::Keep
        );
        assert_eq!(
            SegmentChoice::offer(Some(Feed::A), None, copy(Feed::B, 100)),
            Offer::AlreadyKept { kept: Feed::A }
        );
    }

    #[test]
    fn a_flawed_copy_waits_for_a_better_one() {
        assert_eq!(
            SegmentChoice::offer(None, None, copy(Feed::A, 40)),
            Offer::Hold
        );
        let held = Some(copy(Feed::A, 40));
        assert_eq!(
            SegmentChoice::offer(None, held, copy(Feed::B, 100)),
            Offer::Keep
        );
        assert_eq!(
            SegmentChoice::offer(None, held, copy(Feed::B, 41)),
            Offer::Keep
        );
        // No better: the held copy (the first) goes out at once, nothing left to wait for.
        assert_eq!(
            SegmentChoice::offer(None, held, copy(Feed::B, 40)),
            Offer::KeepHeld
        );
        assert_eq!(
            SegmentChoice::offer(None, held, copy(Feed::B, 0)),
            Offer::KeepHeld
        );
        assert_eq!(
            SegmentChoice::offer(None, held, copy(Feed::A, 90)),
            Offer::Hold
        );
        // Once listed, even a flawless copy is too late.
        assert_eq!(
            SegmentChoice::offer(Some(Feed::A), held, copy(Feed::B, 100)),
            Offer::AlreadyKept { kept: Feed::A }
        );
    }

    #[test]
    fn feed_names() {
        assert_eq!("a".parse::<Feed>(), Ok(Feed::A));
        assert!("c".parse::<Feed>().is_err());
        assert_eq!(Feed::B.to_string(), "b");
    }
}
