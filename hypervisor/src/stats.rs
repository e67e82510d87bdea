//! VM-exit counters per exit reason (VT-x: the basic exit reason; SVM: the
//! exit code's counter, `basalt_svm::exit::counter`): all domains together, and each
//! domain's own (the monitor's `stats`).

use core::sync::atomic::{AtomicU64, Ordering};

/// Counters: VT-x basic exit reasons 0 to 79 (SDM Vol. 3C, Appendix C), or
/// SVM's `basalt_svm::exit::COUNTERS`.
pub const REASONS: usize = 80;
static EXITS: [AtomicU64; REASONS] = [const { AtomicU64::new(0) }; REASONS];

/// One set of counters (a domain's).
#[derive(Debug)]
pub struct ExitCounts([AtomicU64; REASONS]);

impl Default for ExitCounts {
    fn default() -> Self {
        Self([const { AtomicU64::new(0) }; REASONS])
    }
}

impl ExitCounts {
    /// Counts one exit here and in the machine-wide counters.
    #[inline]
    pub fn count(&self, basic: u16) {
        if let Some(c) = self.0.get(usize::from(basic)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        count_exit(basic);
    }

    /// The counters, by basic exit reason.
    pub fn snapshot(&self) -> [u64; REASONS] {
        core::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Counts one exit in the machine-wide counters.
#[inline]
fn count_exit(basic: u16) {
    if let Some(c) = EXITS.get(usize::from(basic)) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The machine-wide counters, by basic exit reason.
pub fn snapshot() -> [u64; REASONS] {
    core::array::from_fn(|i| EXITS[i].load(Ordering::Relaxed))
}

/// Writes the non-zero counters as `name count, name count`, each counter
/// named by `name` (the backend's: `arch::x86_64::hvm::exit_name`).
pub fn format_counts(
    counts: &[u64; REASONS],
    name: impl Fn(usize) -> &'static str,
    out: &mut impl core::fmt::Write,
) {
    let mut first = true;
    for (reason, count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        let sep = if first { "" } else { ", " };
        let _ = write!(out, "{sep}{} {count}", name(reason));
        first = false;
    }
    if first {
        let _ = out.write_str("none");
    }
}
