//! A subscriber's own RTP numbering for a track it receives.
//!
//! The subscriber sees one continuous stream per track: its own SSRC, and sequence numbers and timestamps that
//! run on without a jump even when the source behind the track changes (a publisher reconnecting with a new
//! SSRC, later a simulcast layer switch). Within one source the mapping is a fixed offset, so reordering and
//! retransmissions keep their relative order; at a switch the new source's first packet gets the next sequence
//! number, and a timestamp advanced by the wall time since the last packet (on the track's clock), so the
//! receiver's jitter buffer sees neither a gap nor time running backwards. Everything wraps modulo 2^16 and
//! 2^32 as RTP does.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct State {
    source: u32,
    seq_delta: u16,
    ts_delta: u32,
    /// The highest sequence number and the timestamp sent so far (output numbering), and when.
    last_seq: u16,
    last_ts: u32,
    last_at: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct Rewriter {
    state: Option<State>,
}

/// Whether `a` comes after `b` in RTP's circular sequence space.
fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl Rewriter {
    /// The subscriber's (sequence number, timestamp) for a source packet. `clock_hz`: the track's RTP clock.
    pub fn map(&mut self, source: u32, seq: u16, ts: u32, now: Instant, clock_hz: u32) -> (u16, u32) {
        let state = match self.state {
            Some(s) if s.source == source => s,
            Some(prev) => {
                let elapsed = now.saturating_duration_since(prev.last_at);
                let ticks = (elapsed.as_micros() as u64 * u64::from(clock_hz) / 1_000_000).max(1) as u32;
                let (out_seq, out_ts) = (prev.last_seq.wrapping_add(1), prev.last_ts.wrapping_add(ticks));
                State {
                    source,
                    seq_delta: out_seq.wrapping_sub(seq),
                    ts_delta: out_ts.wrapping_sub(ts),
                    last_seq: prev.last_seq,
                    last_ts: prev.last_ts,
                    last_at: prev.last_at,
                }
            }
            None => State {
                source,
                seq_delta: 0,
                ts_delta: 0,
                last_seq: seq.wrapping_sub(1),
                last_ts: ts,
                last_at: now,
            },
        };
        let out = (seq.wrapping_add(state.seq_delta), ts.wrapping_add(state.ts_delta));
        let mut state = state;
        if seq_after(out.0, state.last_seq) {
            state.last_seq = out.0;
            state.last_ts = out.1;
            state.last_at = now;
        }
        self.state = Some(state);
        out
    }

    /// Drops `n` sequence numbers from the output (packets deliberately not forwarded, e.g. while a viewer that
    /// fell behind waits for a keyframe), so the receiver sees no gap it would ask to have retransmitted.
    #[cfg(test)]
    fn skip(&mut self, n: u16) {
        if let Some(s) = &mut self.state {
            s.seq_delta = s.seq_delta.wrapping_sub(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_source_keeps_its_numbering() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        assert_eq!(r.map(1, 100, 9000, t0, 90_000), (100, 9000));
        assert_eq!(r.map(1, 102, 9000, t0, 90_000), (102, 9000));
        assert_eq!(r.map(1, 101, 9000, t0, 90_000), (101, 9000), "a late packet keeps its place");
    }

    #[test]
    fn a_new_source_continues_the_numbering_without_a_gap() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        for i in 0..5u16 {
            r.map(1, 1000 + i, 3000 * u32::from(i), t0 + Duration::from_millis(33 * u64::from(i)), 90_000);
        }
        // The last source packet was (1004, 12000) at 132 ms; the new source starts elsewhere entirely.
        let (seq, ts) = r.map(2, 40_000, 7_777_777, t0 + Duration::from_millis(232), 90_000);
        assert_eq!(seq, 1005);
        assert_eq!(ts, 12_000 + 9_000, "100 ms later on a 90 kHz clock");
        assert_eq!(r.map(2, 40_001, 7_780_777, t0 + Duration::from_millis(265), 90_000), (1006, 24_000));
    }

    #[test]
    fn sequence_numbers_wrap_at_2_16_across_a_switch() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        assert_eq!(r.map(1, 65_534, 0, t0, 48_000).0, 65_534);
        assert_eq!(r.map(1, 65_535, 960, t0, 48_000).0, 65_535);
        assert_eq!(r.map(1, 0, 1920, t0, 48_000).0, 0, "wraps with the source");
        let (seq, _) = r.map(2, 65_535, 5, t0 + Duration::from_millis(20), 48_000);
        assert_eq!(seq, 1);
        assert_eq!(r.map(2, 0, 965, t0 + Duration::from_millis(40), 48_000).0, 2, "the new source wraps too");
    }

    #[test]
    fn timestamps_wrap_at_2_32_across_a_switch() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        r.map(1, 10, u32::MAX - 100, t0, 90_000);
        let (_, ts) = r.map(2, 500, 42, t0 + Duration::from_millis(10), 90_000);
        assert_eq!(ts, (u32::MAX - 100).wrapping_add(900));
        assert_eq!(ts, 799);
        let (_, ts) = r.map(2, 501, 42 + 3000, t0 + Duration::from_millis(43), 90_000);
        assert_eq!(ts, 3799);
    }

    #[test]
    fn a_switch_within_the_same_instant_still_moves_time_forward() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        r.map(1, 1, 1000, t0, 90_000);
        assert_eq!(r.map(2, 9, 5, t0, 90_000), (2, 1001));
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let t0 = Instant::now();
        let mut r = Rewriter::default();
        r.map(1, 10, 0, t0, 90_000);
        r.skip(3); // 11, 12, 13 not forwarded
        assert_eq!(r.map(1, 14, 0, t0, 90_000).0, 11);
    }
}
