use super::*;

/// 2024-02-29 23:59:58 UTC, a Thursday.
const LEAP_EVE: u64 = 1_709_251_198;
const S: u64 = 1_000_000_000;

fn cmos(r: &mut Rtc, index: u8, now: u64) -> u8 {
    r.write(INDEX_PORT, index, now);
    r.read(DATA_PORT, now)
}

fn cmos_write(r: &mut Rtc, index: u8, value: u8, now: u64) {
    r.write(INDEX_PORT, index, now);
    r.write(DATA_PORT, value, now);
}

#[test]
fn calendar_conversions() {
    for (secs, y, mo, d, h, mi, s, wd) in [
        (0i64, 1970, 1, 1, 0, 0, 0, 5),
        (951_782_400, 2000, 2, 29, 0, 0, 0, 3),
        (LEAP_EVE as i64, 2024, 2, 29, 23, 59, 58, 5),
        (4_102_444_800, 2100, 1, 1, 0, 0, 0, 6),
    ] {
        let t = DateTime::from_epoch(secs);
        assert_eq!(
            (
                t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday
            ),
            (y, mo, d, h, mi, s, wd)
        );
        assert_eq!(t.to_epoch(), secs);
    }
    for v in 0..100 {
        assert_eq!(from_bcd(to_bcd(v)), v);
    }
    assert_eq!(to_bcd(59), 0x59);
}

#[test]
fn bcd_time_registers() {
    let mut r = Rtc::new(LEAP_EVE, 0);
    assert_eq!(cmos(&mut r, SECONDS, 0), 0x58);
    assert_eq!(cmos(&mut r, MINUTES, 0), 0x59);
    assert_eq!(cmos(&mut r, HOURS, 0), 0x23);
    assert_eq!(cmos(&mut r, DAY_OF_WEEK, 0), 0x05);
    assert_eq!(cmos(&mut r, DAY_OF_MONTH, 0), 0x29);
    assert_eq!(cmos(&mut r, MONTH, 0), 0x02);
    assert_eq!(cmos(&mut r, YEAR, 0), 0x24);
    assert_eq!(cmos(&mut r, CENTURY, 0), 0x20);
    // Two seconds later it is March.
    let t = 2 * S;
    assert_eq!(cmos(&mut r, SECONDS, t), 0x00);
    assert_eq!(cmos(&mut r, HOURS, t), 0x00);
    assert_eq!(cmos(&mut r, DAY_OF_MONTH, t), 0x01);
    assert_eq!(cmos(&mut r, MONTH, t), 0x03);
    assert_eq!(cmos(&mut r, DAY_OF_WEEK, t), 0x06);
}

#[test]
fn binary_mode() {
    let mut r = Rtc::new(LEAP_EVE, 0);
    cmos_write(&mut r, REG_B, REG_B_24H | REG_B_DM, 0);
    assert_eq!(cmos(&mut r, SECONDS, 0), 58);
    assert_eq!(cmos(&mut r, HOURS, 0), 23);
    assert_eq!(cmos(&mut r, YEAR, 0), 24);
    assert_eq!(cmos(&mut r, CENTURY, 0), 20);
}

#[test]
fn twelve_hour_mode() {
    let mut r = Rtc::new(LEAP_EVE, 0);
    cmos_write(&mut r, REG_B, 0, 0);
    assert_eq!(cmos(&mut r, HOURS, 0), 0x80 | 0x11, "11 PM");
    assert_eq!(cmos(&mut r, HOURS, 2 * S), 0x12, "midnight is 12 AM");
    assert_eq!(
        cmos(&mut r, HOURS, 2 * S + 12 * 3600 * S),
        0x80 | 0x12,
        "noon is 12 PM"
    );
    assert_eq!(cmos(&mut r, HOURS, 2 * S + 3600 * S), 0x01);
    cmos_write(&mut r, REG_B, REG_B_DM, 0);
    assert_eq!(cmos(&mut r, HOURS, 0), 0x80 | 11);
    // Setting the hour in 12-hour mode: 3 PM.
    cmos_write(&mut r, HOURS, 0x80 | 3, 0);
    assert_eq!(DateTime::from_epoch(r.time(0)).hour, 15);
}

#[test]
fn registers_c_and_d() {
    let mut r = Rtc::new(LEAP_EVE, 0);
    assert_eq!(cmos(&mut r, REG_D, 0), REG_D_VRT);
    cmos_write(&mut r, REG_D, 0, 0);
    assert_eq!(cmos(&mut r, REG_D, 0), REG_D_VRT);
    assert_eq!(cmos(&mut r, REG_A, 0), DEFAULT_REG_A);
    assert_eq!(cmos(&mut r, REG_B, 0), DEFAULT_REG_B);
    // Rate 6 runs even without PIE: PF is set but IRQF is not.
    let c = cmos(&mut r, REG_C, S / 100);
    assert_eq!(c, REG_C_PF);
    assert_eq!(cmos(&mut r, REG_C, S / 100), 0, "cleared by reading");
    assert!(!r.irq_level(S));
    // The update-ended flag after a second boundary.
    let c = cmos(&mut r, REG_C, 3 * S / 2);
    assert_eq!(c, REG_C_PF | REG_C_UF);
    cmos_write(&mut r, REG_C, 0xFF, 3 * S / 2);
    assert_eq!(cmos(&mut r, REG_C, 3 * S / 2), 0);
}

#[test]
fn uip_is_set_for_the_last_244_us() {
    let mut r = Rtc::new(LEAP_EVE, 0);
    assert_eq!(cmos(&mut r, REG_A, 0) & REG_A_UIP, 0);
    assert_eq!(cmos(&mut r, REG_A, S - UIP_NS - 1) & REG_A_UIP, 0);
    assert_eq!(cmos(&mut r, REG_A, S - UIP_NS) & REG_A_UIP, REG_A_UIP);
    assert_eq!(cmos(&mut r, REG_A, S - 1) & REG_A_UIP, REG_A_UIP);
    assert_eq!(cmos(&mut r, REG_A, S) & REG_A_UIP, 0);
    // Writing UIP does nothing.
    cmos_write(&mut r, REG_A, 0xA6, 0);
    assert_eq!(cmos(&mut r, REG_A, 0), 0x26);
}

/// A guest whose port accesses take 1 µs.
struct Guest {
    rtc: Rtc,
    now: u64,
}

impl Guest {
    fn read(&mut self, index: u8) -> u8 {
        self.now += 1_000;
        self.rtc.write(INDEX_PORT, index, self.now);
        self.now += 1_000;
        self.rtc.read(DATA_PORT, self.now)
    }

    /// Linux's `mc146818_get_time` through `mc146818_avoid_UIP`, as
    /// `mach_get_cmos_time` uses it: seconds since the epoch.
    fn linux_get_time(&mut self) -> i64 {
        loop {
            if self.read(REG_A) & REG_A_UIP != 0 {
                self.now += 100_000; // udelay(UIP_RECHECK_DELAY)
                continue;
            }
            let sec = self.read(SECONDS);
            let vals = [MINUTES, HOURS, DAY_OF_MONTH, MONTH, YEAR, CENTURY].map(|i| self.read(i));
            let ctrl = self.read(REG_B);
            if self.read(REG_A) & REG_A_UIP != 0 {
                continue;
            }
            if sec != self.read(SECONDS) {
                continue;
            }
            let bin = |v: u8| {
                if ctrl & REG_B_DM == 0 { from_bcd(v) } else { v }
            };
            let [min, hour, mday, mon, year, century] = vals.map(bin);
            return DateTime {
                year: i64::from(century) * 100 + i64::from(year),
                month: u32::from(mon),
                day: u32::from(mday),
                hour: u32::from(hour),
                minute: u32::from(min),
                second: u32::from(bin(sec)),
                weekday: 0,
            }
            .to_epoch();
        }
    }
}

#[test]
fn linux_mach_get_cmos_time() {
    // Start at many phases, including inside the UIP window and across the
    // midnight and month rollover.
    for start in (0..4 * S)
        .step_by(7_777_777)
        .chain([S - 200_000, S - 10_000, 2 * S - 1])
    {
        let mut g = Guest {
            rtc: Rtc::new(LEAP_EVE, 0),
            now: start,
        };
        let t = g.linux_get_time();
        let expect = LEAP_EVE as i64 + (g.now / S) as i64;
        assert!(
            t == expect || t == expect - 1,
            "start {start}: {t} vs {expect}"
        );
    }
}

#[test]
fn linux_set_time_with_set_bit() {
    // mc146818_set_time: SET, write the registers (BCD), restore B.
    let mut r = Rtc::new(LEAP_EVE, 0);
    let now = S / 2;
    let b = cmos(&mut r, REG_B, now);
    cmos_write(&mut r, REG_B, b | REG_B_SET, now);
    assert_eq!(
        cmos(&mut r, REG_A, S - 1) & REG_A_UIP,
        0,
        "no UIP while SET"
    );
    for (i, v) in [
        (YEAR, 0x99),
        (CENTURY, 0x19),
        (MONTH, 0x12),
        (DAY_OF_MONTH, 0x31),
        (HOURS, 0x23),
        (MINUTES, 0x59),
        (SECONDS, 0x50),
    ] {
        cmos_write(&mut r, i, v, now);
    }
    // Frozen: time does not move.
    assert_eq!(cmos(&mut r, SECONDS, 100 * S), 0x50);
    cmos_write(&mut r, REG_B, b, 100 * S);
    assert_eq!(cmos(&mut r, SECONDS, 100 * S), 0x50);
    assert_eq!(cmos(&mut r, SECONDS, 110 * S), 0x00);
    assert_eq!(cmos(&mut r, YEAR, 110 * S), 0x00);
    assert_eq!(cmos(&mut r, CENTURY, 110 * S), 0x20);
    assert_eq!(r.time(110 * S), 946_684_800);
}

#[test]
fn writing_a_time_register_without_set_moves_the_clock() {
    let mut r = Rtc::new(LEAP_EVE, 0);
    cmos_write(&mut r, MINUTES, 0x10, S / 4);
    assert_eq!(cmos(&mut r, MINUTES, S / 4), 0x10);
    assert_eq!(cmos(&mut r, SECONDS, S / 4), 0x58);
    assert_eq!(cmos(&mut r, SECONDS, S), 0x59, "phase kept");
}

#[test]
fn periodic_interrupt_rates() {
    let mut r = Rtc::new(LEAP_EVE, 0);
    assert_eq!(r.periodic_clocks(), 32);
    cmos_write(&mut r, REG_B, REG_B_24H | REG_B_PIE, 0);
    // 1024 Hz: 976.5625 µs.
    let mut now = 0;
    for k in 1..=1024u64 {
        let t = r.next_irq8(now).expect("periodic");
        assert_eq!(t, (k * S).div_ceil(1024));
        assert!(!r.irq_level(t - 1) || k > 1);
        assert!(r.irq_level(t));
        assert_eq!(
            cmos(&mut r, REG_C, t),
            REG_C_IRQF | REG_C_PF | if k == 1024 { REG_C_UF } else { 0 }
        );
        assert!(!r.irq_level(t));
        now = t;
    }
    assert_eq!(now, S);
    for (rs, hz_x1000) in [(1u8, 256_000u64), (2, 128_000), (3, 8_192_000), (15, 2_000)] {
        cmos_write(&mut r, REG_A, 0x20 | rs, now);
        let t = r.next_irq8(now).expect("periodic");
        let period = t - now;
        let expect = S * 1000 / hz_x1000;
        assert!(period <= expect + 1, "rs {rs}: {period} vs {expect}");
        now = t;
        cmos(&mut r, REG_C, now);
        let t2 = r.next_irq8(now).expect("periodic");
        assert!((t2 - now).abs_diff(expect) <= 1, "rs {rs}");
    }
    cmos_write(&mut r, REG_A, 0x20, now);
    assert_eq!(r.next_irq8(now), None);
}

#[test]
fn update_and_alarm_interrupts() {
    let mut r = Rtc::new(LEAP_EVE, 0);
    cmos_write(&mut r, REG_A, 0x20, 0); // no periodic
    cmos_write(&mut r, REG_B, REG_B_24H | REG_B_UIE, 0);
    assert_eq!(r.next_irq8(0), Some(S));
    assert!(!r.irq_level(S - 1));
    assert!(r.irq_level(S));
    assert_eq!(cmos(&mut r, REG_C, S), REG_C_IRQF | REG_C_UF);
    // Alarm at 00:00:05, only AIE.
    cmos_write(&mut r, HOURS_ALARM, 0x00, S);
    cmos_write(&mut r, MINUTES_ALARM, 0x00, S);
    cmos_write(&mut r, SECONDS_ALARM, 0x05, S);
    cmos_write(&mut r, REG_B, REG_B_24H | REG_B_AIE, S);
    assert_eq!(r.next_irq8(S), Some(7 * S));
    assert!(!r.irq_level(6 * S));
    assert_eq!(
        cmos(&mut r, REG_C, 6 * S),
        REG_C_UF,
        "UF without UIE: no IRQF"
    );
    assert!(r.irq_level(7 * S));
    assert_eq!(
        cmos(&mut r, REG_C, 7 * S) & (REG_C_IRQF | REG_C_AF),
        REG_C_IRQF | REG_C_AF
    );
    // Next day.
    assert_eq!(r.next_irq8(7 * S), Some((7 + 86_400) * S));
    // Don't-care seconds: every second of 00:01.
    cmos_write(&mut r, SECONDS_ALARM, 0xC0, 7 * S);
    cmos_write(&mut r, MINUTES_ALARM, 0x01, 7 * S);
    assert_eq!(r.next_irq8(7 * S), Some(62 * S));
    assert_eq!(r.next_irq8(62 * S), Some(63 * S));
    // SET stops updates and alarms.
    cmos_write(&mut r, REG_B, REG_B_24H | REG_B_AIE | REG_B_SET, 7 * S);
    assert_eq!(r.next_irq8(7 * S), None);
}

#[test]
fn nmi_bit_and_plain_cmos() {
    let mut r = Rtc::new(LEAP_EVE, 0);
    r.write(INDEX_PORT, 0x80 | 0x40, 0);
    assert!(r.nmi_disabled());
    assert_eq!(r.index(), 0x40);
    r.write(DATA_PORT, 0x5A, 0);
    assert_eq!(r.read(DATA_PORT, 0), 0x5A);
    r.write(INDEX_PORT, 0x40, 0);
    assert!(!r.nmi_disabled());
    assert_eq!(r.read(DATA_PORT, 0), 0x5A);
    assert_eq!(r.read(INDEX_PORT, 0), 0xFF);
    assert!(Rtc::handles(0x70) && Rtc::handles(0x71) && !Rtc::handles(0x72));
}

#[test]
fn memory_size_bytes() {
    const MIB: u64 = 1 << 20;
    let mut r = Rtc::with_memory(0, 0, 3 * 1024 * MIB, 5 * 1024 * MIB);
    let w = |r: &mut Rtc, lo: u8| u16::from(cmos(r, lo, 0)) | u16::from(cmos(r, lo + 1, 0)) << 8;
    assert_eq!(w(&mut r, 0x15), 640);
    assert_eq!(w(&mut r, 0x17), 0xFFFF);
    assert_eq!(w(&mut r, 0x30), 0xFFFF);
    assert_eq!(w(&mut r, 0x34), ((3 * 1024 - 16) * 16) as u16);
    let high = u32::from(cmos(&mut r, 0x5B, 0))
        | u32::from(cmos(&mut r, 0x5C, 0)) << 8
        | u32::from(cmos(&mut r, 0x5D, 0)) << 16;
    assert_eq!(high, 5 * 1024 * 16);
    let mut r = Rtc::with_memory(0, 0, 32 * MIB, 0);
    assert_eq!(w(&mut r, 0x17), 31 * 1024);
    assert_eq!(w(&mut r, 0x34), 16 * 16);
    assert_eq!(cmos(&mut r, 0x5B, 0), 0);
    let mut r = Rtc::with_memory(0, 0, 512 * 1024, 0);
    assert_eq!(w(&mut r, 0x15), 512);
    assert_eq!(w(&mut r, 0x17), 0);
    assert_eq!(w(&mut r, 0x34), 0);
}

// ------------------------------------------------------------ randomized

use crate::test_rng::Rng;

fn check_invariants(r: &Rtc, now: u64) {
    let c = r.reg_c(now);
    assert_eq!(c & 0x0F, 0);
    let enabled = r.cmos[usize::from(REG_B)] & 0x70;
    assert_eq!(c & REG_C_IRQF != 0, c & enabled != 0);
    assert_eq!(r.irq_level(now), c & REG_C_IRQF != 0);
    assert!(r.flags_ns <= now);
    if let Some(t) = r.next_irq8(now) {
        assert!(t > now);
        if !r.irq_level(now) {
            assert!(
                !r.irq_level(t - 1),
                "no enabled flag before the reported time"
            );
            assert!(r.irq_level(t), "an enabled flag at the reported time");
        }
    }
}

#[test]
fn random_operations_keep_the_invariants() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut r = Rtc::new(LEAP_EVE, 0);
    let mut now = 0u64;
    let mut irqs = 0;
    for _ in 0..20_000 {
        match rng.below(8) {
            0 => now += rng.below(3 * S),
            1 => now += rng.below(2_000_000),
            2 => {
                if let Some(t) = r.next_irq8(now)
                    && t - now < 10 * S
                {
                    now = t;
                    irqs += 1;
                }
            }
            3 => {
                cmos(&mut r, REG_C, now);
            }
            4 => {
                let b = rng.next() as u8 & (REG_B_SET | 0x70 | REG_B_DM | REG_B_24H);
                let b = if rng.below(4) == 0 { b } else { b & !REG_B_SET };
                cmos_write(&mut r, REG_B, b, now);
            }
            5 => cmos_write(&mut r, REG_A, 0x20 | (rng.below(16) as u8), now),
            6 => {
                let i = [SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM][rng.below(3) as usize];
                let v = if rng.below(2) == 0 {
                    0xC0
                } else {
                    r.read_cmos(i - 1, now)
                };
                cmos_write(&mut r, i, v, now);
            }
            _ => {
                let i = rng.below(128) as u8;
                let _ = cmos(&mut r, i, now);
            }
        }
        check_invariants(&r, now);
        if r.cmos[usize::from(REG_B)] & REG_B_SET == 0 {
            let t = DateTime::from_epoch(r.time(now));
            assert!(t.second < 60 && t.minute < 60 && t.hour < 24);
        }
    }
    assert!(irqs > 1000, "only {irqs} interrupts");
}

/// The next alarm against a second-by-second search over two days, for alarm bytes that are
/// valid times, "don't care" or junk, in BCD and binary, 12- and 24-hour formats.
#[test]
fn next_alarm_matches_a_brute_force_search() {
    let mut rng = Rng(0x5eed_a1a2_0000_0001);
    let mut r = Rtc::new(LEAP_EVE, 0);
    for _ in 0..300 {
        let format = [0, REG_B_DM, REG_B_24H, REG_B_DM | REG_B_24H][rng.below(4) as usize];
        r.cmos[usize::from(REG_B)] = format | REG_B_AIE;
        let field = |rng: &mut Rng, n: u32, hour: bool| -> u8 {
            match rng.below(4) {
                0 => 0xC0 | rng.byte(),
                1 => rng.byte(),
                _ => {
                    let v = rng.below(u64::from(n)) as u32;
                    if hour { r.encode_hour(v) } else { r.encode(v) }
                }
            }
        };
        let (h, m, s) = (
            field(&mut rng, 24, true),
            field(&mut rng, 60, false),
            field(&mut rng, 60, false),
        );
        r.cmos[usize::from(HOURS_ALARM)] = h;
        r.cmos[usize::from(MINUTES_ALARM)] = m;
        r.cmos[usize::from(SECONDS_ALARM)] = s;
        let matches = |t: i64| {
            let day = t.rem_euclid(SECS_PER_DAY);
            let (th, tm, ts) = (
                (day / 3600) as u32,
                (day / 60 % 60) as u32,
                (day % 60) as u32,
            );
            (h >= 0xC0 || r.encode_hour(th) == h)
                && (m >= 0xC0 || r.encode(tm) == m)
                && (s >= 0xC0 || r.encode(ts) == s)
        };
        let secs = LEAP_EVE as i64 + rng.below(3 * 86_400) as i64;
        let expected = (secs + 1..=secs + 2 * SECS_PER_DAY).find(|&t| matches(t));
        assert_eq!(
            r.next_alarm(secs),
            expected,
            "alarm {h:#x}:{m:#x}:{s:#x}, register B {format:#x}, at {secs}"
        );
    }
}
