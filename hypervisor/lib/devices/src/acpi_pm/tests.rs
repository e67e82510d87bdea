use super::*;
use crate::pci::PciHost;
use crate::test_rng::Rng;

/// Time of `ticks` timer clocks after `origin`, as the model counts them.
fn at(origin: u64, ticks: u64) -> u64 {
    origin + ticks_to_ns(ticks)
}

/// The text of the value of `pub const NAME: type = value;` in the guest crate's ACPI table
/// builder (which this crate does not depend on), so the tests see if the two drift apart.
fn guest_constant_text(name: &str) -> &'static str {
    let source = include_str!("../../../guest/src/acpi.rs");
    let start = source
        .find(&format!("pub const {name}: "))
        .unwrap_or_else(|| panic!("{name} not in guest/src/acpi.rs"));
    let rest = &source[start..];
    rest[rest.find('=').expect("=") + 1..rest.find(';').expect(";")].trim()
}

/// The value of the integer constant `name` in the guest crate's ACPI table builder.
fn guest_constant(name: &str) -> u64 {
    let value = guest_constant_text(name).replace('_', "");
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    }
    .unwrap_or_else(|e| panic!("{name} = {value}: {e}"))
}

#[test]
fn the_ports_are_the_ones_the_fadt_names() {
    assert_eq!(guest_constant("PM1A_EVT_PORT"), u64::from(PM1_STATUS));
    assert_eq!(guest_constant("PM1_EVT_LEN"), 4);
    assert_eq!(
        PM1_ENABLE,
        PM1_STATUS + 2,
        "the second half of the event block"
    );
    assert_eq!(guest_constant("PM1A_CNT_PORT"), u64::from(PM1_CONTROL));
    assert_eq!(guest_constant("PM1_CNT_LEN"), 2);
    assert_eq!(guest_constant("PM_TMR_PORT"), u64::from(PM_TIMER));
    assert_eq!(guest_constant("PM_TMR_LEN"), 4);
    assert_eq!(guest_constant("RESET_PORT"), u64::from(RESET_CONTROL));
    assert_eq!(guest_constant("S5_SLP_TYP"), u64::from(S5_SLP_TYP));
    // The reset value resets, and the timer is 24 bits wide.
    let reset_value = guest_constant("RESET_VALUE") as u8;
    let mut pm = AcpiPm::new(0);
    assert_eq!(
        pm.write(RESET_CONTROL, 1, u32::from(reset_value), 0),
        Some(PmAction::Reset)
    );
    assert!(!guest_constant_text("FADT_FLAGS").contains("FADT_TMR_VAL_EXT"));
    assert!(guest_constant_text("FADT_FLAGS").contains("FADT_RESET_REG_SUP"));
    assert_eq!(guest_constant("SCI_IRQ"), 9);
}

#[test]
fn claimed_accesses() {
    for port in (0x600..=0x605).chain(0x608..=0x60B) {
        for size in [1, 2, 4] {
            assert!(AcpiPm::handles(port, size), "{port:#x}/{size}");
        }
        assert!(!AcpiPm::handles(port, 3) && !AcpiPm::handles(port, 8));
    }
    for port in [
        0x5FF, 0x606, 0x607, 0x60C, 0x610, 0xCF8, 0xCFA, 0xCFC, 0xCFF,
    ] {
        for size in [1, 2, 4] {
            assert!(!AcpiPm::handles(port, size), "{port:#x}/{size}");
        }
    }
    assert!(AcpiPm::handles(RESET_CONTROL, 1));
    assert!(!AcpiPm::handles(RESET_CONTROL, 2) && !AcpiPm::handles(RESET_CONTROL, 4));
}

#[test]
fn no_access_is_claimed_by_both_this_and_the_pci_host() {
    for port in 0xCF0..=0xD00 {
        for size in [1, 2, 4] {
            assert!(
                !(AcpiPm::handles(port, size) && PciHost::handles(port, size)),
                "{port:#x}/{size}"
            );
        }
    }
    assert!(PciHost::handles(0xCF8, 4) && !AcpiPm::handles(0xCF8, 4));
}

#[test]
fn a_dword_at_0xcf8_is_not_a_reset() {
    let mut pm = AcpiPm::new(0);
    // Byte 1 of this address (what 0xCF9 would see) has RST_CPU set.
    assert_eq!(pm.write(0xCF8, 4, 0x8000_0400, 0), None);
    assert_eq!(pm.write(0xCF8, 4, 0xFFFF_FFFF, 0), None);
    assert_eq!(pm.write(RESET_CONTROL, 2, 0x0606, 0), None);
    assert_eq!(pm.write(RESET_CONTROL, 4, 0x0606, 0), None);
    assert_eq!(pm.read(0xCF8, 4, 0), u32::MAX);
    assert_eq!(pm.read(RESET_CONTROL, 1, 0), 0, "untouched");
    assert_eq!(pm, AcpiPm::new(0));
}

#[test]
fn power_on_state() {
    let pm = AcpiPm::new(1_000);
    assert_eq!(pm.read(PM1_STATUS, 2, 1_000), 0);
    assert_eq!(pm.read(PM1_ENABLE, 2, 1_000), 0);
    assert_eq!(pm.read(PM1_CONTROL, 2, 1_000), u32::from(SCI_EN));
    assert_eq!(pm.read(PM_TIMER, 4, 1_000), 0);
    assert_eq!(pm.read(RESET_CONTROL, 1, 1_000), 0);
    assert!(!pm.sci_level(1_000));
    assert_eq!(pm.next_sci(1_000), None);
}

#[test]
fn pm1_status_is_write_1_to_clear() {
    let mut pm = AcpiPm::new(0);
    pm.press_power_button();
    assert_eq!(pm.read(PM1_STATUS, 2, 0), u32::from(PWRBTN_STS));
    assert_eq!(pm.read(PM1_STATUS + 1, 1, 0), 0x01);
    // Writing 0s, or 1s to other bits, changes nothing; the status cannot be set by writes.
    assert_eq!(pm.write(PM1_STATUS, 2, 0, 0), None);
    pm.write(PM1_STATUS, 2, u32::from(!PWRBTN_STS), 0);
    assert_eq!(pm.status(0), PWRBTN_STS);
    pm.write(PM1_STATUS, 1, 0xFF, 0);
    assert_eq!(pm.status(0), PWRBTN_STS, "the low byte does not hold it");
    // A 1 clears it, as a word or as the high byte.
    pm.write(PM1_STATUS, 2, u32::from(PWRBTN_STS), 0);
    assert_eq!(pm.status(0), 0);
    pm.press_power_button();
    pm.write(PM1_STATUS + 1, 1, 0x01, 0);
    assert_eq!(pm.status(0), 0);
    // ACPICA clears every fixed status bit at once.
    pm.press_power_button();
    pm.write(PM1_STATUS, 2, 0x8731, 0);
    assert_eq!(pm.status(0), 0);
}

#[test]
fn the_power_button_raises_the_sci_when_enabled() {
    let mut pm = AcpiPm::new(0);
    pm.press_power_button();
    assert!(!pm.sci_level(0), "PWRBTN_EN clear");
    // Linux: acpi_enable_event(ACPI_EVENT_POWER_BUTTON) sets the bit and checks it reads back.
    pm.write(PM1_ENABLE, 2, u32::from(PWRBTN_EN), 0);
    assert_eq!(pm.read(PM1_ENABLE, 2, 0), u32::from(PWRBTN_EN));
    assert!(pm.sci_level(0));
    // The handler clears the status: the SCI drops.
    pm.write(PM1_STATUS, 2, u32::from(PWRBTN_STS), 0);
    assert!(!pm.sci_level(0));
    // Pressed again while enabled: straight up. Disabling the event drops the line.
    pm.press_power_button();
    assert!(pm.sci_level(0));
    pm.write(PM1_ENABLE, 2, 0, 0);
    assert!(!pm.sci_level(0));
    assert_eq!(pm.status(0), PWRBTN_STS, "still pending");
}

#[test]
fn pm1_enable_keeps_the_defined_bits() {
    let mut pm = AcpiPm::new(0);
    pm.write(PM1_ENABLE, 2, 0xFFFF, 0);
    assert_eq!(pm.read(PM1_ENABLE, 2, 0), u32::from(PM1_ENABLE_BITS));
    assert_eq!(PM1_ENABLE_BITS, 0x4721);
    // Byte writes change only their byte.
    pm.write(PM1_ENABLE + 1, 1, 0x00, 0);
    assert_eq!(pm.enable(), TMR_EN | GBL_EN);
    pm.write(PM1_ENABLE, 1, 0x00, 0);
    assert_eq!(pm.enable(), 0);
    // The global lock's and the RTC's enables stick (ACPICA checks them).
    for bit in [GBL_EN, RTC_EN, SLPBTN_EN, TMR_EN, PCIEXP_WAKE_DIS] {
        pm.write(PM1_ENABLE, 2, u32::from(bit), 0);
        assert_eq!(pm.read(PM1_ENABLE, 2, 0), u32::from(bit));
    }
    // Enabling raises no SCI by itself.
    assert!(!pm.sci_level(0));
}

#[test]
fn pm1_control_bits() {
    let mut pm = AcpiPm::new(0);
    // SCI_EN cannot be cleared; GBL_RLS and the reserved bits read 0; BM_RLD and SLP_TYP stick.
    assert_eq!(pm.write(PM1_CONTROL, 2, 0xDFFE, 0), None);
    assert_eq!(pm.read(PM1_CONTROL, 2, 0), 0x1C03);
    assert_eq!(pm.control(), SCI_EN | BM_RLD | SLP_TYP_MASK);
    assert_eq!(pm.write(PM1_CONTROL, 2, 0, 0), None);
    assert_eq!(pm.read(PM1_CONTROL, 2, 0), u32::from(SCI_EN));
    // Byte access to each half.
    pm.write(PM1_CONTROL + 1, 1, 0x0C, 0);
    assert_eq!(pm.read(PM1_CONTROL, 2, 0), 0x0C01);
    pm.write(PM1_CONTROL, 1, 0x02, 0);
    assert_eq!(pm.read(PM1_CONTROL, 1, 0), 0x03);
    assert_eq!(pm.read(PM1_CONTROL + 1, 1, 0), 0x0C);
}

#[test]
fn linux_powers_off_with_two_writes() {
    // acpi_hw_legacy_sleep(): SLP_TYP first, then SLP_TYP | SLP_EN, keeping the other bits.
    let mut pm = AcpiPm::new(0);
    let control = pm.read(PM1_CONTROL, 2, 0) as u16;
    let typ = u16::from(S5_SLP_TYP) << SLP_TYP_SHIFT;
    let first = (control & !(SLP_TYP_MASK | SLP_EN)) | typ;
    assert_eq!(pm.write(PM1_CONTROL, 2, u32::from(first), 5), None);
    assert_eq!(pm.read(PM1_CONTROL, 2, 5), 0x1401);
    assert_eq!(
        pm.write(PM1_CONTROL, 2, u32::from(first | SLP_EN), 6),
        Some(PmAction::PowerOff)
    );
    assert_eq!(first | SLP_EN, 0x3401);
    // SLP_EN is write only.
    assert_eq!(pm.read(PM1_CONTROL, 2, 7), 0x1401);
}

#[test]
fn slp_en_in_any_access_width() {
    for (port, size, value) in [
        (PM1_CONTROL, 2, 0x3400),
        (PM1_CONTROL + 1, 1, 0x34),
        (PM1_CONTROL, 4, 0xFFFF_3401),
        (PM1_ENABLE, 4, 0x3400_0000),
        (PM1_CONTROL + 1, 2, 0x0034),
    ] {
        let mut pm = AcpiPm::new(0);
        assert_eq!(
            pm.write(port, size, value, 0),
            Some(PmAction::PowerOff),
            "{port:#x}/{size} {value:#x}"
        );
    }
}

#[test]
fn other_sleep_types_are_reported() {
    let mut pm = AcpiPm::new(0);
    for typ in 0..8u8 {
        let value = u32::from(typ) << SLP_TYP_SHIFT | u32::from(SLP_EN);
        let expected = if typ == S5_SLP_TYP {
            PmAction::PowerOff
        } else {
            PmAction::Sleep(typ)
        };
        assert_eq!(pm.write(PM1_CONTROL, 2, value, 0), Some(expected));
        assert_eq!(
            pm.read(PM1_CONTROL, 2, 0),
            u32::from(typ) << SLP_TYP_SHIFT | 1
        );
    }
    // SLP_TYP alone does nothing; SLP_EN takes the type written with it.
    assert_eq!(pm.write(PM1_CONTROL, 2, 5 << SLP_TYP_SHIFT, 0), None);
    assert_eq!(
        pm.write(PM1_CONTROL, 2, 3 << SLP_TYP_SHIFT | u32::from(SLP_EN), 0),
        Some(PmAction::Sleep(3))
    );
}

#[test]
fn the_timer_counts_at_3_579545_mhz() {
    let t0 = 123_456_789;
    let pm = AcpiPm::new(t0);
    assert_eq!(pm.read(PM_TIMER, 4, t0), 0);
    assert_eq!(pm.read(PM_TIMER, 4, t0 + 1_000_000_000), 3_579_545);
    assert_eq!(pm.read(PM_TIMER, 4, t0 + 1_000_000), 3_579);
    // One clock is 279.365 ns.
    assert_eq!(pm.timer(t0 + 279), 0);
    assert_eq!(pm.timer(t0 + 280), 1);
    for ticks in [1, 2, 1000, 0x7F_FFFF, 0x80_0000, 0xAB_CDEF] {
        assert_eq!(pm.timer(at(t0, ticks)), ticks as u32);
        assert_eq!(pm.timer(at(t0, ticks) - 1), ticks as u32 - 1);
    }
    // Before the origin (a caller's clock skew) it reads 0.
    assert_eq!(pm.timer(0), 0);
}

#[test]
fn the_timer_wraps_at_24_bits() {
    let pm = AcpiPm::new(0);
    let top = at(0, (1 << 24) - 1);
    assert_eq!(pm.read(PM_TIMER, 4, top), 0xFF_FFFF);
    assert_eq!(pm.read(PM_TIMER, 4, at(0, 1 << 24)), 0);
    assert_eq!(pm.read(PM_TIMER, 4, at(0, (1 << 24) + 5)), 5);
    // 2^24 clocks are 4.687 s; after an hour the count has wrapped 768 times.
    let hour = 3_600_000_000_000;
    let ticks = 3_600 * PM_TIMER_HZ;
    assert_eq!(u64::from(pm.timer(hour)), ticks % (1 << 24));
    assert_eq!(pm.read(PM_TIMER + 3, 1, hour), 0, "bits 31:24 read 0");
    // Linux's acpi_pm_read_verified(): three reads must be in order (modulo 2^24).
    let mut last = pm.timer(hour);
    for step in 1..10_000u64 {
        let v = pm.timer(hour + step * 97);
        assert!(v.wrapping_sub(last) & PM_TIMER_MASK < 1 << 23);
        last = v;
    }
}

#[test]
fn the_timer_reads_in_pieces_and_ignores_writes() {
    let mut pm = AcpiPm::new(0);
    let now = at(0, 0xAB_CDEF);
    assert_eq!(pm.read(PM_TIMER, 4, now), 0x00AB_CDEF);
    assert_eq!(pm.read(PM_TIMER, 2, now), 0xCDEF);
    assert_eq!(pm.read(PM_TIMER + 1, 2, now), 0xABCD);
    assert_eq!(pm.read(PM_TIMER + 2, 1, now), 0xAB);
    // Past the block: the bus's ones.
    assert_eq!(pm.read(PM_TIMER + 2, 4, now), 0xFFFF_00AB);
    assert_eq!(pm.write(PM_TIMER, 4, 0, now), None);
    assert_eq!(pm.read(PM_TIMER, 4, now), 0x00AB_CDEF);
}

#[test]
fn tmr_sts_follows_bit_23() {
    let mut pm = AcpiPm::new(0);
    let half = 1u64 << 23;
    assert_eq!(pm.status(at(0, half) - 1), 0);
    assert_eq!(pm.status(at(0, half)), TMR_STS);
    assert_eq!(pm.read(PM1_STATUS, 1, at(0, half)), 1);
    // Not enabled: no SCI, no deadline.
    assert!(!pm.sci_level(at(0, half)));
    assert_eq!(pm.next_sci(0), None);
    // Cleared, it stays clear until bit 23 changes again (back to 0 at the wrap).
    pm.write(PM1_STATUS, 2, u32::from(TMR_STS), at(0, half + 10));
    assert_eq!(pm.status(at(0, 2 * half) - 1), 0);
    assert_eq!(pm.status(at(0, 2 * half)), TMR_STS);
    // Clearing it late, after several changes, waits for the next one.
    pm.write(PM1_STATUS, 1, 0x01, at(0, 7 * half + 3));
    assert_eq!(pm.status(at(0, 8 * half) - 1), 0);
    assert_eq!(pm.status(at(0, 8 * half)), TMR_STS);
}

#[test]
fn the_timer_sci_and_its_deadline() {
    let t0 = 5_000;
    let mut pm = AcpiPm::new(t0);
    let half = 1u64 << 23;
    pm.write(PM1_ENABLE, 2, u32::from(TMR_EN), t0);
    let edge = pm.next_sci(t0).expect("TMR_EN set");
    assert_eq!(edge, at(t0, half));
    assert!(!pm.sci_level(edge - 1));
    assert!(pm.sci_level(edge));
    assert_eq!(pm.next_sci(edge), None, "already up");
    // The guest's handler clears TMR_STS: the next edge is one period later.
    pm.write(PM1_STATUS, 2, u32::from(TMR_STS), edge + 1_000);
    assert!(!pm.sci_level(edge + 1_000));
    assert_eq!(pm.next_sci(edge + 1_000), Some(at(t0, 2 * half)));
    // The period is 2^23 clocks: 2.343 s.
    assert_eq!((at(t0, 2 * half) - edge) / 1_000_000, 2_343);
    // Disabled: no deadline.
    pm.write(PM1_ENABLE, 2, 0, edge + 2_000);
    assert_eq!(pm.next_sci(edge + 2_000), None);
}

#[test]
fn reset_control_register() {
    let mut pm = AcpiPm::new(0);
    // Linux's reboot=pci: read, write SYS_RST, then SYS_RST | RST_CPU (0x06, warm) or with
    // FULL_RST (0x0E, cold).
    let cf9 = pm.read(RESET_CONTROL, 1, 0) as u8 & !0x0E;
    assert_eq!(
        pm.write(RESET_CONTROL, 1, u32::from(cf9 | SYS_RST), 0),
        None
    );
    assert_eq!(pm.read(RESET_CONTROL, 1, 0), u32::from(SYS_RST));
    assert_eq!(
        pm.write(RESET_CONTROL, 1, u32::from(cf9 | 0x0E), 0),
        Some(PmAction::Reset)
    );
    // RST_CPU reads back 0; the reset type is kept; reserved bits read 0.
    assert_eq!(pm.read(RESET_CONTROL, 1, 0), u32::from(SYS_RST | FULL_RST));
    assert_eq!(pm.write(RESET_CONTROL, 1, 0xF1, 0), None);
    assert_eq!(pm.read(RESET_CONTROL, 1, 0), 0);
    // ACPI's RESET_VALUE, and RST_CPU alone (a CPU-only reset is still a reset here).
    assert_eq!(pm.write(RESET_CONTROL, 1, 0x06, 0), Some(PmAction::Reset));
    assert_eq!(pm.write(RESET_CONTROL, 1, 0x04, 0), Some(PmAction::Reset));
    // Only the low byte of the value counts.
    assert_eq!(pm.write(RESET_CONTROL, 1, 0x0400, 0), None);
}

#[test]
fn wide_accesses_span_registers() {
    let mut pm = AcpiPm::new(0);
    pm.press_power_button();
    pm.write(PM1_ENABLE, 2, u32::from(PWRBTN_EN | GBL_EN), 0);
    // Status and enable as one dword; enable and control as another.
    assert_eq!(pm.read(PM1_STATUS, 4, 0), 0x0120_0100);
    assert_eq!(pm.read(PM1_ENABLE, 4, 0), 0x0001_0120);
    // Bytes past the control block (0x606, 0x607) read as ones.
    assert_eq!(pm.read(PM1_CONTROL, 4, 0), 0xFFFF_0001);
    assert_eq!(pm.read(PM1_CONTROL + 1, 2, 0), 0xFF00);
    // A dword write clears status and sets enable in one go.
    assert_eq!(pm.write(PM1_STATUS, 4, 0x0000_0100, 0), None);
    assert_eq!((pm.status(0), pm.enable()), (0, 0));
    // An odd-port word across status and enable.
    pm.press_power_button();
    pm.write(PM1_STATUS + 1, 2, 0x2001, 0);
    assert_eq!((pm.status(0), pm.enable()), (0, GBL_EN));
}

#[test]
fn random_accesses_never_panic_and_keep_the_invariants() {
    let mut rng = Rng(0xACB1_0600_0CF9_2024);
    let mut pm = AcpiPm::new(rng.next() >> 8);
    let mut now = 0;
    for _ in 0..100_000 {
        now += rng.below(5_000_000);
        let port = if rng.below(4) == 0 {
            0xCF4 + rng.below(12) as u16
        } else {
            0x5FC + rng.below(20) as u16
        };
        let size = [1u8, 2, 3, 4, 8][rng.below(5) as usize];
        match rng.below(8) {
            0 => pm.press_power_button(),
            1..=3 => {
                let value = rng.next() as u32;
                // SLP_EN shows up in the actions, RST_CPU only from (0xCF9, 1).
                if let Some(PmAction::Reset) = pm.write(port, size, value, now) {
                    assert_eq!((port, size), (RESET_CONTROL, 1));
                    assert_ne!(value & u32::from(RST_CPU), 0);
                }
            }
            _ => {
                let v = pm.read(port, size, now);
                if size <= 4 {
                    assert!(v <= ones(size));
                }
                if !AcpiPm::handles(port, size) {
                    assert_eq!(v, ones(size));
                } else if port != RESET_CONTROL {
                    // The same as byte-wise reads.
                    let bytes = (0..u16::from(size)).fold(0, |acc, i| {
                        let b = if AcpiPm::handles(port + i, 1) {
                            pm.read(port + i, 1, now)
                        } else {
                            0xFF
                        };
                        acc | b << (8 * i)
                    });
                    assert_eq!(v, bytes, "{port:#x}/{size}");
                }
            }
        }
        assert_eq!(pm.control() & (SCI_EN | SLP_EN | GBL_RLS), SCI_EN);
        assert_eq!(pm.enable() & !PM1_ENABLE_BITS, 0);
        assert_eq!(pm.status(now) & !(PWRBTN_STS | TMR_STS), 0);
        assert!(pm.timer(now) <= PM_TIMER_MASK);
        assert_eq!(pm.read(RESET_CONTROL, 1, now) & u32::from(RST_CPU), 0);
        assert_eq!(
            pm.sci_level(now),
            pm.status(now) & pm.enable() & !PCIEXP_WAKE_DIS != 0
        );
        if let Some(t) = pm.next_sci(now) {
            assert!(t > now && pm.status(now) & TMR_STS == 0);
            assert!(pm.status(t) & TMR_STS != 0 && pm.sci_level(t));
            assert!(pm.status(t - 1) & TMR_STS == 0);
        }
    }
}
