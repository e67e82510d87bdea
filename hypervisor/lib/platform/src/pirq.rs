//! Physical interrupts of the control domain (docs/control-domain.md,
//! "Physical interrupts"): which host GSIs pass through to dom0, the host
//! I/O APIC entry that binds one to Basalt's vector for it, and the storm
//! accounting that masks a line nobody services.

use crate::ioapic::RedirectionEntry;

/// GSIs that may pass through: the pins of dom0's one virtual I/O APIC.
pub const GSIS: usize = 24;
/// Basalt's vector for GSI n is `VECTOR_BASE + n` (priority classes 3-4).
pub const VECTOR_BASE: u8 = 0x30;
/// The last of those vectors.
pub const VECTOR_LAST: u8 = VECTOR_BASE + GSIS as u8 - 1;
/// GSIs Basalt keeps whatever the console does: 0 and 2 (the timer, ISA IRQ
/// 0 and its usual override; dom0's emulated PIT is on pin 2), 4 (dom0's
/// emulated COM1 is on pin 4) and 8 (the RTC, emulated for dom0).
pub const KEPT: u32 = 1 << 0 | 1 << 2 | 1 << 4 | 1 << 8;
/// More interrupts than this on one GSI within [`STORM_WINDOW_NS`] is a
/// storm: far above any device's useful rate (an e1000 moderates to
/// ~8,000/s), and low enough that a stuck line costs a CPU under 5% for a
/// second before it is masked.
pub const STORM_LIMIT: u32 = 50_000;
/// The storm-accounting window: one second of system time.
pub const STORM_WINDOW_NS: u64 = 1_000_000_000;

/// The GSIs that pass through (bit n = GSI n): 0-23 except [`KEPT`] and
/// `console` (the GSIs of Basalt's console UARTs), among those a host I/O
/// APIC serves (`served`).
pub const fn passed_through(console: u32, served: u32) -> u32 {
    ((1 << GSIS) - 1) & !KEPT & !console & served
}

/// Basalt's vector for `gsi`.
pub const fn vector(gsi: usize) -> u8 {
    VECTOR_BASE + gsi as u8
}

/// The GSI whose vector is `vector`, if it is one of them.
pub fn gsi_of(vector: u8) -> Option<usize> {
    let gsi = usize::from(vector.wrapping_sub(VECTOR_BASE));
    (gsi < GSIS).then_some(gsi)
}

/// Redirection-entry bits that a change of makes the host pin be
/// programmed again: mask (16), trigger mode (15), polarity (13).
const BINDING_BITS: u64 = 1 << 16 | 1 << 15 | 1 << 13;

/// Whether dom0's write of its entry from `old` to `new` changes the host
/// binding.
pub const fn rebind_needed(old: u64, new: u64) -> bool {
    (old ^ new) & BINDING_BITS != 0
}

/// The host entry for `gsi` after dom0 wrote `virt` to its virtual entry:
/// fixed delivery of [`vector`]`(gsi)` to APIC id `dest` (physical), with
/// the trigger mode, polarity and mask `virt` has.
pub fn host_entry(gsi: usize, virt: u64, dest: u8) -> RedirectionEntry {
    // Only the binding bits: the delivery mode is then fixed, always valid.
    let v = RedirectionEntry::from_bits(virt & BINDING_BITS).unwrap_or(RedirectionEntry::MASKED);
    RedirectionEntry::fixed(vector(gsi), dest, v.polarity, v.trigger).with_mask(v.masked)
}

/// One GSI's interrupt count in the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Storm {
    /// When the window began (system ns).
    pub start_ns: u64,
    /// Interrupts in it.
    pub count: u32,
}

impl Storm {
    /// No interrupt counted yet.
    pub const NEW: Storm = Storm {
        start_ns: 0,
        count: 0,
    };

    /// Counts an interrupt at `now`; true exactly once per window, at the
    /// interrupt that goes past [`STORM_LIMIT`].
    pub fn tick(&mut self, now: u64) -> bool {
        if self.count == 0 || now.saturating_sub(self.start_ns) >= STORM_WINDOW_NS {
            *self = Storm {
                start_ns: now,
                count: 1,
            };
            return false;
        }
        self.count = self.count.saturating_add(1);
        self.count == STORM_LIMIT + 1
    }
}

#[cfg(test)]
mod tests;
