//! A per-domain limit on log lines a guest can cause (unhandled MSRs or
//! ports, refused operations): a token bucket of [`BURST`] lines refilled
//! at one line per [`REFILL_NS`]. A suppressed line is counted, and the
//! next line let through says how many were suppressed before it.

/// Lines a domain may cause in a burst.
pub const BURST: u32 = 20;
/// Time for one more line, in ns (5 lines per second on average).
pub const REFILL_NS: u64 = 200_000_000;

/// One domain's budget of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    tokens: u32,
    /// System time (ns) the tokens were counted at.
    stamp: u64,
    /// Lines suppressed since the last one let through.
    suppressed: u64,
    /// Lines suppressed, ever.
    total_suppressed: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimit {
    /// A full bucket (the first call fixes the time base).
    pub const fn new() -> Self {
        Self {
            tokens: BURST,
            stamp: u64::MAX,
            suppressed: 0,
            total_suppressed: 0,
        }
    }

    /// Whether a line may be logged at system time `now_ns`: `Some(n)`,
    /// where `n` lines were suppressed since the last one let through (say
    /// so in the line), or `None` (suppress it; it is counted).
    pub fn check(&mut self, now_ns: u64) -> Option<u64> {
        if self.stamp == u64::MAX || now_ns < self.stamp {
            self.stamp = now_ns;
        }
        let earned = (now_ns - self.stamp) / REFILL_NS;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens) + earned).min(u64::from(BURST)) as u32;
            self.stamp += earned * REFILL_NS;
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            self.total_suppressed += 1;
            return None;
        }
        self.tokens -= 1;
        Some(core::mem::take(&mut self.suppressed))
    }

    /// Lines suppressed, ever.
    pub fn total_suppressed(&self) -> u64 {
        self.total_suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_line_per_refill_with_the_count() {
        let mut r = RateLimit::new();
        for _ in 0..BURST {
            assert_eq!(r.check(1_000), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(r.check(2_000), None);
        }
        assert_eq!(r.check(1_000 + REFILL_NS - 1), None);
        assert_eq!(r.check(1_000 + REFILL_NS), Some(6));
        assert_eq!(r.check(1_000 + REFILL_NS), None);
        assert_eq!(r.total_suppressed(), 7);
        // A long pause refills up to the burst, no further.
        let later = 1_000 + REFILL_NS * 1000;
        for _ in 0..BURST {
            assert_eq!(r.check(later).map(|_| ()), Some(()));
        }
        assert_eq!(r.check(later), None);
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_refill() {
        let mut r = RateLimit::new();
        for _ in 0..BURST {
            r.check(5_000_000_000);
        }
        assert_eq!(r.check(0), None);
        assert_eq!(r.check(REFILL_NS - 1), None);
        assert!(r.check(REFILL_NS).is_some());
    }
}
