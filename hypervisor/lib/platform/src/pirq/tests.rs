use super::*;
use crate::ioapic::{Polarity, TriggerMode};

#[test]
fn timer_rtc_and_console_gsis_stay_basalts() {
    let all = (1 << GSIS) - 1;
    let through = passed_through(0, all);
    for gsi in [0, 2, 4, 8] {
        assert_eq!(through & 1 << gsi, 0, "GSI {gsi}");
    }
    for gsi in [1, 3, 5, 9, 10, 11, 12, 14, 15, 16, 23] {
        assert_ne!(through & 1 << gsi, 0, "GSI {gsi}");
    }
    // COM2 as Basalt's console: GSI 3 is kept; nothing past 23 ever passes.
    assert_eq!(passed_through(1 << 3, u32::MAX) & (1 << 3 | 1 << 24), 0);
    // A GSI no host I/O APIC serves does not pass.
    assert_eq!(passed_through(0, 0xffff) & 1 << 16, 0);
}

#[test]
fn vectors_map_both_ways_and_stay_in_their_range() {
    assert_eq!(vector(0), 0x30);
    assert_eq!(vector(11), 0x3b);
    assert_eq!(VECTOR_LAST, 0x47);
    for gsi in 0..GSIS {
        assert_eq!(gsi_of(vector(gsi)), Some(gsi));
    }
    assert_eq!(gsi_of(0x2f), None);
    assert_eq!(gsi_of(0x48), None);
    assert_eq!(gsi_of(0x24), None);
}

#[test]
fn rebinds_on_mask_trigger_or_polarity_only() {
    let e = 0x0000_0000_0001_a031u64; // masked, level, active low, vector 0x31
    assert!(rebind_needed(e, e & !(1 << 16)));
    assert!(rebind_needed(e, e & !(1 << 15)));
    assert!(rebind_needed(e, e & !(1 << 13)));
    // Vector, destination and remote IRR are dom0's business.
    assert!(!rebind_needed(e, (e & !0xff) | 0x41));
    assert!(!rebind_needed(e, e | 1 << 56 | 1 << 14));
}

#[test]
fn host_entry_takes_dom0s_trigger_polarity_and_mask_and_basalts_vector() {
    // dom0: vector 0x61, level, active low, unmasked, to APIC id 1 (logical).
    let virt = 0x0100_0000_0000_a861u64;
    let h = host_entry(11, virt, 0);
    assert_eq!(
        h,
        RedirectionEntry::fixed(0x3b, 0, Polarity::ActiveLow, TriggerMode::Level)
    );
    let m = host_entry(14, 1 << 16, 3);
    assert!(m.masked);
    assert_eq!(
        m.with_mask(false),
        RedirectionEntry::fixed(0x3e, 3, Polarity::ActiveHigh, TriggerMode::Edge)
    );
}

#[test]
fn a_storm_is_reported_once_per_window_past_the_limit() {
    let mut s = Storm::default();
    let t0 = 5_000_000_000;
    let mut hits = 0;
    for i in 0..(STORM_LIMIT + 100) {
        if s.tick(t0 + u64::from(i)) {
            hits += 1;
            assert_eq!(i, STORM_LIMIT, "reported at the interrupt past the limit");
        }
    }
    assert_eq!(hits, 1);
    // A new window starts counting again.
    assert!(!s.tick(t0 + STORM_WINDOW_NS));
    assert_eq!(s.count, 1);
}

#[test]
fn a_busy_line_below_the_limit_never_storms() {
    let mut s = Storm::default();
    // 40,000 per second for 5 seconds, evenly spread.
    let step = STORM_WINDOW_NS / 40_000;
    for i in 0..200_000u64 {
        assert!(!s.tick(1 + i * step));
    }
}
