//! VM-exit counters per basic exit reason (all domains together for now;
//! per-domain statistics come with the monitor).

use core::sync::atomic::{AtomicU64, Ordering};

const REASONS: usize = 80;
static EXITS: [AtomicU64; REASONS] = [const { AtomicU64::new(0) }; REASONS];

/// Counts one exit.
#[inline]
pub fn count_exit(basic: u16) {
    if let Some(c) = EXITS.get(usize::from(basic)) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The counters, by basic exit reason.
pub fn snapshot() -> [u64; REASONS] {
    core::array::from_fn(|i| EXITS[i].load(Ordering::Relaxed))
}
