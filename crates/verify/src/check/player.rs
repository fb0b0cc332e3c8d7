//! The player model behind "stall": a player starts once `buffer` segments are downloaded,
//! then consumes media in real time; whenever the next segment is not there when needed, it
//! stalls until the segment arrives.
//!
//! Segments are planned in listing order and resolved (downloaded, failed, or a gap) in any
//! order; the model advances over the resolved prefix, so the order in which a shell reports
//! outcomes never changes the result.

use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Pending,
    Arrived(Duration),
    /// Nothing to play (a gap entry, a failed fetch): the player skips the media.
    Missing,
}

#[derive(Debug, Clone)]
struct Planned {
    id: u64,
    label: String,
    duration: Duration,
    outcome: Outcome,
}

/// A segment that arrived after it was needed.
#[derive(Debug, Clone, PartialEq)]
pub struct Late {
    pub id: u64,
    /// What [`Player::plan`] was told to call it.
    pub label: String,
    pub by: Duration,
}

#[derive(Debug, Clone)]
pub struct Player {
    buffer: usize,
    queue: VecDeque<Planned>,
    /// Before playback starts: segments and media buffered so far.
    buffered: usize,
    buffered_media: Duration,
    /// When the next segment is needed, once playing.
    need_next: Option<Duration>,
    stall: Duration,
    stalls: u64,
    missing: Duration,
}

impl Player {
    pub fn new(buffer: usize) -> Self {
        Self {
            buffer: buffer.max(1),
            queue: VecDeque::new(),
            buffered: 0,
            buffered_media: Duration::ZERO,
            need_next: None,
            stall: Duration::ZERO,
            stalls: 0,
            missing: Duration::ZERO,
        }
    }

    /// A segment listed after every one planned before, identified by `id`.
    pub fn plan(&mut self, id: u64, duration: Duration, label: String) {
        self.queue.push_back(Planned {
            id,
            label,
            duration,
            outcome: Outcome::Pending,
        });
    }

    /// A planned segment that will never play (a gap, a failed fetch).
    pub fn missing(&mut self, id: u64) -> Vec<Late> {
        self.resolve(id, Outcome::Missing)
    }

    /// A planned segment downloaded at `at`. Returns the segments found late.
    pub fn arrived(&mut self, id: u64, at: Duration) -> Vec<Late> {
        self.resolve(id, Outcome::Arrived(at))
    }

    fn resolve(&mut self, id: u64, outcome: Outcome) -> Vec<Late> {
        if let Some(p) = self.queue.iter_mut().find(|p| p.id == id) {
            p.outcome = outcome;
        }
        let mut late = Vec::new();
        while let Some(front) = self.queue.pop_front() {
            let Planned {
                id,
                label,
                duration,
                outcome,
            } = front;
            match outcome {
                Outcome::Pending => {
                    self.queue.push_front(Planned {
                        id,
                        label,
                        duration,
                        outcome,
                    });
                    break;
                }
                Outcome::Missing => match &mut self.need_next {
                    // Playing: the player jumps over the hole, and its clock with it.
                    Some(need) => {
                        *need += duration;
                        self.missing += duration;
                    }
                    // Not started: nothing to skip yet; it starts at the next segments.
                    None => self.missing += duration,
                },
                Outcome::Arrived(at) => match &mut self.need_next {
                    Some(need) => {
                        if at > *need {
                            let by = at - *need;
                            self.stall += by;
                            self.stalls += 1;
                            late.push(Late { id, label, by });
                            *need = at;
                        }
                        *need += duration;
                    }
                    None => {
                        self.buffered += 1;
                        self.buffered_media += duration;
                        if self.buffered >= self.buffer {
                            self.need_next = Some(at + self.buffered_media);
                        }
                    }
                },
            }
        }
        late
    }

    pub fn playing(&self) -> bool {
        self.need_next.is_some()
    }

    /// Total stall and number of stalls as of `now`, counting a stall in progress (the next
    /// segment was needed before `now` and has not arrived).
    pub fn stall(&self, now: Duration) -> (Duration, u64) {
        match self.need_next {
            Some(need) if now > need => (self.stall + (now - need), self.stalls + 1),
            _ => (self.stall, self.stalls),
        }
    }

    pub fn missing_media(&self) -> Duration {
        self.missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn starts_after_the_buffer_and_never_stalls_on_time() {
        let mut p = Player::new(3);
        for i in 0..6 {
            p.plan(i, s(1.0), format!("#{i}"));
        }
        // The first three arrive at once (the live edge), the rest one per second.
        for i in 0..3 {
            assert!(p.arrived(i, s(0.1)).is_empty());
        }
        assert!(p.playing());
        for i in 3..6 {
            assert!(p.arrived(i, s(0.1 + i as f64 - 2.0)).is_empty());
        }
        assert_eq!(p.stall(s(5.0)), (Duration::ZERO, 0));
    }

    #[test]
    fn a_late_segment_stalls_and_shifts_the_clock() {
        let mut p = Player::new(2);
        for i in 0..4 {
            p.plan(i, s(1.0), format!("#{i}"));
        }
        p.arrived(0, s(0.0));
        p.arrived(1, s(0.0)); // playing from 0; #2 needed at 2.0
        let late = p.arrived(2, s(2.5));
        assert_eq!(
            late,
            [Late {
                id: 2,
                label: "#2".into(),
                by: s(0.5)
            }]
        );
        // #3 is needed 1 s after playback resumed at 2.5.
        assert!(p.arrived(3, s(3.5)).is_empty());
        assert_eq!(p.stall(s(3.6)), (s(0.5), 1));
        // Nothing more arrives: at 5.0 the player has waited 0.5 s more.
        assert_eq!(p.stall(s(5.0)), (s(1.0), 2));
    }

    #[test]
    fn outcomes_reported_out_of_order_give_the_same_result() {
        let mut p = Player::new(1);
        for i in 0..3 {
            p.plan(i, s(1.0), format!("#{i}"));
        }
        assert!(p.arrived(2, s(0.5)).is_empty());
        assert!(p.missing(1).is_empty());
        assert!(p.arrived(0, s(0.0)).is_empty());
        assert_eq!(p.missing_media(), s(1.0));
        assert_eq!(p.stall(s(2.9)), (Duration::ZERO, 0));
        assert_eq!(p.stall(s(3.5)), (s(0.5), 1));
    }
}
