//! Loss and duplicate accounting from the sequence numbers in payloads.
//!
//! A [`SeqTracker`] follows one publisher as seen by one receiver (a subscriber, or a shared
//! subscription group). MQTT keeps the order of one publisher's messages on one topic, so the
//! common case is `seq == next`; a jump leaves a gap that a late arrival may fill, and a
//! sequence number that is neither new nor a gap is a duplicate.

use serde::{Deserialize, Serialize};

/// How one received message was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The next message, or one beyond a gap.
    New,
    /// A message that fills a gap (arrived out of order).
    Late,
    /// A message seen before.
    Duplicate,
}

/// Which sequence numbers of one publisher a receiver has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeqTracker {
    /// Every sequence number below this was either received or is listed in `gaps`.
    next: u64,
    /// Sorted, disjoint, half-open ranges of missing sequence numbers below `next`.
    gaps: Vec<(u64, u64)>,
    /// Messages received, duplicates included.
    received: u64,
}

impl SeqTracker {
    /// Records the arrival of `seq`.
    pub(crate) fn record(&mut self, seq: u64) -> Arrival {
        self.received += 1;
        if seq == self.next {
            self.next += 1;
            return Arrival::New;
        }
        if seq > self.next {
            self.gaps.push((self.next, seq));
            self.next = seq + 1;
            return Arrival::New;
        }
        // Below `next`: find the gap holding `seq`, if any.
        let idx = self.gaps.partition_point(|&(_, end)| end <= seq);
        match self.gaps.get(idx).copied() {
            Some((start, end)) if start <= seq => {
                match (seq == start, seq + 1 == end) {
                    (true, true) => {
                        self.gaps.remove(idx);
                    }
                    (true, false) => self.gaps[idx].0 = seq + 1,
                    (false, true) => self.gaps[idx].1 = seq,
                    (false, false) => {
                        self.gaps[idx].1 = seq;
                        self.gaps.insert(idx + 1, (seq + 1, end));
                    }
                }
                Arrival::Late
            }
            _ => Arrival::Duplicate,
        }
    }

    /// Returns the number of distinct sequence numbers received.
    pub(crate) fn unique(&self) -> u64 {
        self.next
            - self
                .gaps
                .iter()
                .map(|&(start, end)| end - start)
                .sum::<u64>()
    }

    /// Returns the number of messages received, duplicates included.
    #[cfg(test)]
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Returns the sequence numbers received, as sorted half-open ranges.
    pub(crate) fn to_ranges(&self) -> RangeSet {
        let mut ranges = Vec::with_capacity(self.gaps.len() + 1);
        let mut start = 0;
        for &(gap_start, gap_end) in &self.gaps {
            if gap_start > start {
                ranges.push((start, gap_start));
            }
            start = gap_end;
        }
        if self.next > start {
            ranges.push((start, self.next));
        }
        RangeSet {
            ranges,
            received: self.received,
        }
    }
}

/// Received sequence numbers of one publisher as sorted, disjoint, half-open ranges, plus the
/// count of messages behind them; the form in which shared-subscription members are merged
/// across worker processes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RangeSet {
    pub(crate) ranges: Vec<(u64, u64)>,
    pub(crate) received: u64,
}

impl RangeSet {
    /// Returns the number of distinct sequence numbers.
    pub(crate) fn unique(&self) -> u64 {
        self.ranges.iter().map(|&(start, end)| end - start).sum()
    }

    /// Adds another receiver's set: messages both received are duplicates.
    pub(crate) fn merge(&mut self, other: &RangeSet) {
        let mut all: Vec<(u64, u64)> = self
            .ranges
            .iter()
            .chain(other.ranges.iter())
            .copied()
            .collect();
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
        self.received += other.received;
    }
}

/// The message accounting of a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    /// Deliveries the subscriptions call for: each publisher's sent count times the number of
    /// subscriptions (shared groups count once) matching its topic.
    pub expected: u64,
    /// Deliveries received, duplicates included.
    pub received: u64,
    /// Distinct deliveries received.
    pub unique: u64,
    /// `received - unique`.
    pub duplicates: u64,
    /// `expected - unique`, never negative.
    pub lost: u64,
}

impl Accounting {
    /// Builds the accounting from expected, received and distinct counts.
    pub(crate) fn new(expected: u64, received: u64, unique: u64) -> Accounting {
        Accounting {
            expected,
            received,
            unique,
            duplicates: received.saturating_sub(unique),
            lost: expected.saturating_sub(unique),
        }
    }

    /// Returns the lost fraction of the expected deliveries in percent.
    pub fn loss_pct(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        self.lost as f64 * 100.0 / self.expected as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_loss_or_duplicates() {
        let mut tracker = SeqTracker::default();
        for seq in 0..1000 {
            assert_eq!(tracker.record(seq), Arrival::New);
        }
        assert_eq!(tracker.unique(), 1000);
        assert_eq!(tracker.received(), 1000);
        assert_eq!(Accounting::new(1000, 1000, 1000).lost, 0);
    }

    #[test]
    fn gaps_count_as_loss_until_filled() {
        let mut tracker = SeqTracker::default();
        for seq in [0, 1, 5, 6, 9] {
            tracker.record(seq);
        }
        assert_eq!(tracker.unique(), 5);
        assert_eq!(tracker.record(3), Arrival::Late);
        assert_eq!(tracker.record(2), Arrival::Late);
        assert_eq!(tracker.record(4), Arrival::Late);
        assert_eq!(tracker.unique(), 8);
        let accounting = Accounting::new(10, tracker.received(), tracker.unique());
        assert_eq!(accounting.lost, 2, "7 and 8 never arrived");
        assert_eq!(accounting.duplicates, 0);
    }

    #[test]
    fn repeated_and_filled_sequence_numbers_are_duplicates() {
        let mut tracker = SeqTracker::default();
        for seq in [0, 1, 2, 1, 4, 3, 3, 0] {
            tracker.record(seq);
        }
        assert_eq!(tracker.unique(), 5);
        assert_eq!(tracker.received(), 8);
        let accounting = Accounting::new(5, tracker.received(), tracker.unique());
        assert_eq!(accounting.duplicates, 3);
        assert_eq!(accounting.lost, 0);
    }

    #[test]
    fn tail_loss_shows_only_against_the_expected_count() {
        let mut tracker = SeqTracker::default();
        for seq in 0..90 {
            tracker.record(seq);
        }
        let accounting = Accounting::new(100, tracker.received(), tracker.unique());
        assert_eq!(accounting.lost, 10);
        assert!((accounting.loss_pct() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn shared_group_members_merge_without_double_counting() {
        // Two members of one shared group each got part of the stream; 4 reached both.
        let mut first = SeqTracker::default();
        let mut second = SeqTracker::default();
        for seq in [0, 2, 4, 6] {
            first.record(seq);
        }
        for seq in [1, 3, 4, 5] {
            second.record(seq);
        }
        let mut merged = first.to_ranges();
        merged.merge(&second.to_ranges());
        assert_eq!(merged.unique(), 7);
        assert_eq!(merged.received, 8);
        let accounting = Accounting::new(8, merged.received, merged.unique());
        assert_eq!(accounting.duplicates, 1);
        assert_eq!(accounting.lost, 1, "7 reached nobody");
    }

    #[test]
    fn ranges_of_a_tracker_skip_its_gaps() {
        let mut tracker = SeqTracker::default();
        for seq in [1, 2, 5] {
            tracker.record(seq);
        }
        assert_eq!(tracker.to_ranges().ranges, vec![(1, 3), (5, 6)]);
    }
}
