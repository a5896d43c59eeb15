//! Which of a publisher's recent sequence numbers have already been forwarded. A publisher may send a packet
//! twice (it answers a NACK for a packet that was only late, or repeats a retransmission), and every copy would
//! otherwise go to every subscriber: bandwidth for nothing, and a second copy of a packet a viewer's jitter
//! buffer already played. The window remembers the last 1,024 numbers.

const WINDOW: u16 = 1024;

#[derive(Default)]
pub struct SeenWindow {
    /// The highest number seen, once one was.
    highest: Option<u16>,
    bits: [u64; WINDOW as usize / 64],
}

impl SeenWindow {
    /// True the first time `seq` is seen. A number more than a window behind is a restarted stream (a publisher
    /// that reset its numbering), which starts the window afresh rather than being refused.
    pub fn first_time(&mut self, seq: u16) -> bool {
        let Some(highest) = self.highest else { return self.restart(seq) };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            return false;
        }
        if ahead < 0x8000 {
            // Newer: forget the numbers the window slides past, then take this one.
            if ahead >= WINDOW {
                return self.restart(seq);
            }
            for n in 1..=ahead {
                self.clear(highest.wrapping_add(n));
            }
            self.highest = Some(seq);
            self.set(seq);
            return true;
        }
        let behind = highest.wrapping_sub(seq);
        if behind >= WINDOW {
            return self.restart(seq);
        }
        !self.set(seq)
    }

    fn restart(&mut self, seq: u16) -> bool {
        self.bits = [0; WINDOW as usize / 64];
        self.highest = Some(seq);
        self.set(seq);
        true
    }

    /// Marks `seq`; returns whether it was marked already.
    fn set(&mut self, seq: u16) -> bool {
        let (word, bit) = (usize::from(seq % WINDOW) / 64, seq % 64);
        let was = self.bits[word] & (1 << bit) != 0;
        self.bits[word] |= 1 << bit;
        was
    }

    fn clear(&mut self, seq: u16) {
        let (word, bit) = (usize::from(seq % WINDOW) / 64, seq % 64);
        self.bits[word] &= !(1 << bit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_number_is_refused_and_a_late_one_taken_once() {
        let mut w = SeenWindow::default();
        assert!(w.first_time(100));
        assert!(w.first_time(102));
        assert!(!w.first_time(102), "a second copy");
        assert!(w.first_time(101), "late, not seen yet");
        assert!(!w.first_time(101));
        assert!(!w.first_time(100));
    }

    #[test]
    fn numbers_wrap_at_two_to_the_sixteen() {
        let mut w = SeenWindow::default();
        assert!(w.first_time(65_534));
        assert!(w.first_time(65_535));
        assert!(w.first_time(0));
        assert!(w.first_time(1));
        assert!(!w.first_time(65_535));
        assert!(!w.first_time(0));
    }

    #[test]
    fn the_window_slides_and_a_reset_stream_is_taken() {
        let mut w = SeenWindow::default();
        for seq in 0..3000u16 {
            assert!(w.first_time(seq));
        }
        // 1,000 behind: still remembered. A number the window slid past reads as a restart, not a repeat.
        assert!(!w.first_time(2000));
        assert!(w.first_time(10), "a publisher that restarted its numbering");
        assert!(w.first_time(11));
        assert!(!w.first_time(10));
        // A jump ahead by more than a window forgets everything before it.
        assert!(w.first_time(20_000));
        assert!(w.first_time(19_990));
    }
}
