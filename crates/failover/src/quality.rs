//! How good each segment turned out, as a 0-100 score the packager and the status page use to
//! prefer one pipeline's segment over another's.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotQuality {
    /// A real frame from a healthy input.
    Source,
    /// A real frame from an input failing by black or silence.
    Degraded,
    /// A fill frame.
    Filled,
    /// Emitted after its deadline because the switcher fell behind.
    Late,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SegmentTally {
    pub slots: u32,
    pub source: u32,
    pub degraded: u32,
    pub filled: u32,
    pub late: u32,
}

impl SegmentTally {
    pub fn record(&mut self, q: SlotQuality) {
        let count = match q {
            SlotQuality::Source => &mut self.source,
            SlotQuality::Degraded => &mut self.degraded,
            SlotQuality::Filled => &mut self.filled,
            SlotQuality::Late => &mut self.late,
        };
        *count = count.saturating_add(1);
        self.slots = self.slots.saturating_add(1);
    }

    /// A degraded frame counts half; fill and late slots count nothing. Only a segment that is
    /// entirely source scores 100, so that any flaw shows when two pipelines' segments are
    /// compared, however long the segment. An empty tally had nothing wrong with it.
    pub fn score(&self) -> u8 {
        if self.source >= self.slots {
            return 100;
        }
        let halves = 2 * u64::from(self.source) + u64::from(self.degraded);
        let score = 100 * halves / (2 * u64::from(self.slots));
        u8::try_from(score.min(99)).unwrap_or(99)
    }
}

/// The tallies of the most recent segments; older ones are forgotten so that a long-running
/// pipeline's memory stays flat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QualityBook {
    capacity: usize,
    tallies: BTreeMap<u64, SegmentTally>,
}

impl QualityBook {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tallies: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, n: u64, q: SlotQuality) {
        self.tallies.entry(n).or_default().record(q);
        while self.tallies.len() > self.capacity {
            self.tallies.pop_first();
        }
    }

    pub fn score(&self, n: u64) -> Option<u8> {
        self.tallies.get(&n).map(SegmentTally::score)
    }

    pub fn tally(&self, n: u64) -> Option<SegmentTally> {
        self.tallies.get(&n).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tally(source: u32, degraded: u32, filled: u32, late: u32) -> SegmentTally {
        let mut t = SegmentTally::default();
        let counts = [
            (SlotQuality::Source, source),
            (SlotQuality::Degraded, degraded),
            (SlotQuality::Filled, filled),
            (SlotQuality::Late, late),
        ];
        for (q, count) in counts {
            (0..count).for_each(|_| t.record(q));
        }
        t
    }

    #[test]
    fn record_counts_each_kind() {
        let t = tally(3, 2, 1, 4);
        let expected = SegmentTally {
            slots: 10,
            source: 3,
            degraded: 2,
            filled: 1,
            late: 4,
        };
        assert_eq!(t, expected);
    }

    #[test]
    fn scores() {
        assert_eq!(SegmentTally::default().score(), 100, "empty");
        assert_eq!(tally(50, 0, 0, 0).score(), 100);
        assert_eq!(tally(0, 0, 50, 0).score(), 0, "fully filled");
        assert_eq!(tally(0, 0, 0, 50).score(), 0, "fully late");
        assert_eq!(tally(0, 50, 0, 0).score(), 50, "degraded counts half");
        assert_eq!(tally(25, 0, 25, 0).score(), 50);
        assert_eq!(tally(30, 10, 5, 5).score(), 70, "(30 + 5) / 50");
        assert_eq!(tally(1, 1, 1, 0).score(), 50, "(1 + 0.5) / 3");
        assert_eq!(tally(2, 0, 1, 0).score(), 66, "floored");
        assert_eq!(tally(999, 0, 1, 0).score(), 99, "capped below 100");
    }

    #[test]
    fn book_forgets_the_oldest_segments() {
        let mut book = QualityBook::new(3);
        for n in [5, 1, 2, 3, 4] {
            book.record(n, SlotQuality::Source);
        }
        book.record(4, SlotQuality::Filled);
        assert_eq!((book.score(1), book.score(2)), (None, None));
        assert_eq!(book.score(3), Some(100));
        assert_eq!(book.score(4), Some(50));
        assert_eq!(book.tally(5).map(|t| t.slots), Some(1));
        book.record(0, SlotQuality::Source);
        assert_eq!(book.score(0), None, "older than everything held");
    }

    proptest! {
        #[test]
        fn score_is_100_only_when_all_source(
            source in 0u32..500, degraded in 0u32..500, filled in 0u32..500, late in 0u32..500,
        ) {
            let t = tally(source, degraded, filled, late);
            let score = t.score();
            prop_assert!(score <= 100);
            prop_assert_eq!(score == 100, t.source == t.slots);
            let better = tally(source + 1, degraded, filled, late).score();
            prop_assert!(better >= score, "one more source frame never lowers it");
        }

        #[test]
        fn book_holds_the_highest_segments(
            ns in prop::collection::vec(0u64..50, 0..200), capacity in 0usize..10,
        ) {
            let mut book = QualityBook::new(capacity);
            ns.iter().for_each(|&n| book.record(n, SlotQuality::Source));
            let mut distinct: Vec<u64> = ns.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let split = distinct.len().saturating_sub(capacity);
            for (i, n) in distinct.iter().enumerate() {
                prop_assert_eq!(book.tally(*n).is_some(), i >= split, "segment {}", n);
            }
        }
    }
}
