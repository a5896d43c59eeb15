//! Loss accounting for one received stream, as RTCP receiver reports count it (RFC 3550 A.3): extended sequence
//! numbers, and a window of the last 128 so that reordering and NACK retransmissions arriving inside it are not
//! loss and duplicates are not counted twice.

/// Sequence-number bookkeeping for one received stream: extended sequence numbers (wrap-safe) and a
/// window of the last 128, so reordering inside the window is not loss and duplicates are ignored.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    pub started: bool,
    /// Highest extended sequence number so far.
    highest: u64,
    /// Bit i set: `highest - i` arrived (or predates the first packet, so was never expected).
    window: u128,
    /// Not yet published to the shared stats.
    pub expected: u64,
    pub lost: u64,
}

impl SequenceTracker {
    const WINDOW: u64 = 128;
    /// A packet this far behind is a restarted stream, not a late one (RFC 3550's MAX_DROPOUT).
    const MAX_DROPOUT: u64 = 3000;

    /// Counts one arrival; true if it came after a later one (reordered, retransmitted or duplicated).
    pub fn on_packet(&mut self, seq: u16) -> bool {
        if !self.started {
            self.begin(seq);
            return false;
        }
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        if delta > 0 {
            self.advance(delta as u64);
            return false;
        }
        let behind = u64::from(delta.unsigned_abs());
        if behind < Self::WINDOW {
            self.window |= 1u128 << behind; // late or duplicate: either way it is here now
        } else if behind >= Self::MAX_DROPOUT {
            self.finish();
            self.begin(seq);
            return false;
        }
        // Between the window and MAX_DROPOUT: too late, already counted lost. (A jump *forward* is
        // always loss: our publishers never restart their sequence, so a big gap is packets the SFU
        // dropped, e.g. for a subscriber that fell behind.)
        true
    }

    fn begin(&mut self, seq: u16) {
        self.started = true;
        self.highest = u64::from(seq);
        self.window = u128::MAX;
        self.expected += 1;
    }

    fn advance(&mut self, by: u64) {
        if by >= Self::WINDOW {
            self.lost += (Self::WINDOW - u64::from(self.window.count_ones())) + (by - Self::WINDOW);
            self.window = 1;
        } else {
            let leaving = self.window >> (Self::WINDOW - by);
            self.lost += by - u64::from(leaving.count_ones());
            self.window = (self.window << by) | 1;
        }
        self.highest += by;
        self.expected += by;
    }

    /// The stream ended: whatever is still missing in the window is lost.
    pub fn finish(&mut self) {
        self.lost += Self::WINDOW - u64::from(self.window.count_ones());
        self.window = u128::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(seqs: impl IntoIterator<Item = u16>) -> SequenceTracker {
        let mut t = SequenceTracker::default();
        for s in seqs {
            t.on_packet(s);
        }
        t
    }

    #[test]
    fn an_unbroken_stream_across_the_wrap_loses_nothing() {
        let mut t = track((65_000u32..67_000).map(|s| s as u16));
        t.finish();
        assert_eq!((t.expected, t.lost), (2000, 0));
    }

    #[test]
    fn a_gap_is_lost_once_it_leaves_the_window_or_the_stream_ends() {
        let mut t = track((0..10).chain(15..20));
        assert_eq!((t.expected, t.lost), (20, 0), "still inside the window");
        t.finish();
        assert_eq!((t.expected, t.lost), (20, 5));
        let t = track((0..10).chain(15..400));
        assert_eq!((t.expected, t.lost), (400, 5));
    }

    #[test]
    fn reordered_and_duplicated_packets_are_not_loss() {
        let mut t = track([1, 2, 4, 3, 5, 5, 6, 2, 7]);
        t.finish();
        assert_eq!((t.expected, t.lost), (7, 0));
    }

    #[test]
    fn a_long_jump_counts_everything_skipped() {
        let mut t = track([10, 11, 1000]);
        t.finish();
        assert_eq!((t.expected, t.lost), (991, 988));
    }

    #[test]
    fn a_restarted_stream_starts_a_new_count() {
        let mut t = track([40_000, 40_001, 40_002, 30_000, 30_001]);
        t.finish();
        assert_eq!((t.expected, t.lost), (5, 0));
    }
}
