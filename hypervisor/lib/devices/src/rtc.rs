//! The PC's MC146818 real-time clock and CMOS memory as a pure state
//! machine with an explicit clock.
//!
//! Port 0x70 selects one of 128 CMOS bytes (bits 0-6; bit 7 set disables
//! NMI) and port 0x71 reads or writes it. Every access takes `now_ns`, a
//! monotonic time in nanoseconds from the caller; nothing here reads a
//! clock. The time of day is computed, not ticked: the model is created
//! with a wall-clock time (seconds since 1970-01-01 00:00:00 UTC) that
//! holds at a given `now_ns`, and seconds advance every 10^9 ns after it.
//!
//! | index | register |
//! |---|---|
//! | 0x00, 0x02, 0x04 | seconds, minutes, hours (alarm at 0x01, 0x03, 0x05) |
//! | 0x06 | day of week (1 = Sunday) |
//! | 0x07, 0x08, 0x09 | day of month, month, year within the century |
//! | 0x0A | A: UIP (bit 7, read only), divider (bits 4-6), rate (bits 0-3) |
//! | 0x0B | B: SET, PIE, AIE, UIE, SQWE, DM (binary), 24/12, DSE |
//! | 0x0C | C: IRQF, PF, AF, UF; read only, cleared by reading |
//! | 0x0D | D: VRT (always set), read only |
//! | 0x32 | century (as the ACPI FADT's `CENTURY` field names it) |
//! | others | plain CMOS memory |
//!
//! Modelled: BCD or binary registers and 12- or 24-hour mode (register B),
//! UIP for the last 244 µs of every second, the SET bit freezing the time
//! (which restarts from the registers when SET is cleared), setting the
//! time by writing the registers, the periodic (rate from register A),
//! alarm (with "don't care" values 0xC0-0xFF) and update-ended interrupt
//! flags in register C with IRQF and the IRQ 8 level, and the memory-size
//! bytes firmware reads ([`Rtc::with_memory`]).
//!
//! Simplifications:
//!
//! * the divider bits of register A are stored but not obeyed: the clock
//!   always runs from a 32.768 kHz time base (unless SET);
//! * daylight saving (DSE) and the square-wave output (SQWE) do nothing;
//! * the update-ended and alarm flags are raised at the second boundary
//!   itself, not 244 µs + 1984 µs later;
//! * the time is UTC, years 1970 and later; the guest may set any date,
//!   which is kept as an offset from the caller's clock.

/// Index port (bit 7: NMI disable).
pub const INDEX_PORT: u16 = 0x70;
/// Data port.
pub const DATA_PORT: u16 = 0x71;

/// Seconds register.
pub const SECONDS: u8 = 0x00;
/// Seconds alarm register.
pub const SECONDS_ALARM: u8 = 0x01;
/// Minutes register.
pub const MINUTES: u8 = 0x02;
/// Minutes alarm register.
pub const MINUTES_ALARM: u8 = 0x03;
/// Hours register.
pub const HOURS: u8 = 0x04;
/// Hours alarm register.
pub const HOURS_ALARM: u8 = 0x05;
/// Day of week register (1 = Sunday).
pub const DAY_OF_WEEK: u8 = 0x06;
/// Day of month register.
pub const DAY_OF_MONTH: u8 = 0x07;
/// Month register.
pub const MONTH: u8 = 0x08;
/// Year register (within the century).
pub const YEAR: u8 = 0x09;
/// Register A.
pub const REG_A: u8 = 0x0A;
/// Register B.
pub const REG_B: u8 = 0x0B;
/// Register C.
pub const REG_C: u8 = 0x0C;
/// Register D.
pub const REG_D: u8 = 0x0D;
/// Century register.
pub const CENTURY: u8 = 0x32;

/// Register A: update in progress.
pub const REG_A_UIP: u8 = 0x80;
/// Register B: SET (updates frozen).
pub const REG_B_SET: u8 = 0x80;
/// Register B: periodic interrupt enable.
pub const REG_B_PIE: u8 = 0x40;
/// Register B: alarm interrupt enable.
pub const REG_B_AIE: u8 = 0x20;
/// Register B: update-ended interrupt enable.
pub const REG_B_UIE: u8 = 0x10;
/// Register B: data mode binary (clear: BCD).
pub const REG_B_DM: u8 = 0x04;
/// Register B: 24-hour mode (clear: 12-hour).
pub const REG_B_24H: u8 = 0x02;
/// Register C: interrupt request flag.
pub const REG_C_IRQF: u8 = 0x80;
/// Register C: periodic interrupt flag.
pub const REG_C_PF: u8 = 0x40;
/// Register C: alarm flag.
pub const REG_C_AF: u8 = 0x20;
/// Register C: update-ended flag.
pub const REG_C_UF: u8 = 0x10;
/// Register D: valid RAM and time.
pub const REG_D_VRT: u8 = 0x80;

/// Register A after reset as firmware leaves it: 32.768 kHz time base,
/// rate 6 (1024 Hz).
pub const DEFAULT_REG_A: u8 = 0x26;
/// Register B after reset: 24-hour mode, BCD.
pub const DEFAULT_REG_B: u8 = REG_B_24H;

/// How long UIP is set before each second boundary, in ns.
pub const UIP_NS: u64 = 244_000;

const NS_PER_S: u64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Binary to BCD (0..=99).
pub fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// BCD to binary.
pub fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0x0F)
}

/// A broken-down time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2024.
    pub year: i64,
    /// 1-12.
    pub month: u32,
    /// 1-31.
    pub day: u32,
    /// 0-23.
    pub hour: u32,
    /// 0-59.
    pub minute: u32,
    /// 0-59.
    pub second: u32,
    /// 1-7, 1 = Sunday.
    pub weekday: u32,
}

impl DateTime {
    /// The broken-down form of `secs` seconds since the epoch.
    pub fn from_epoch(secs: i64) -> Self {
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
            // 1970-01-01 was a Thursday (5).
            weekday: ((days + 4).rem_euclid(7) + 1) as u32,
        }
    }

    /// Seconds since the epoch (the weekday is ignored).
    pub fn to_epoch(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

/// The MC146818 and its 128 bytes of CMOS.
#[derive(Debug, Clone)]
pub struct Rtc {
    cmos: [u8; 128],
    index: u8,
    nmi_disabled: bool,
    /// Wall-clock seconds at `ref_ns`.
    ref_secs: i64,
    /// The start of a second of the time base.
    ref_ns: u64,
    /// Register C flags folded in up to `flags_ns`.
    reg_c: u8,
    flags_ns: u64,
}

impl Rtc {
    /// An RTC reading `epoch_secs` (seconds since 1970-01-01 UTC) at
    /// `now_ns`, with register A 0x26, B 0x02 (24-hour, BCD), D 0x80 and
    /// the rest of CMOS zero.
    pub fn new(epoch_secs: u64, now_ns: u64) -> Self {
        let mut cmos = [0; 128];
        cmos[usize::from(REG_A)] = DEFAULT_REG_A;
        cmos[usize::from(REG_B)] = DEFAULT_REG_B;
        cmos[usize::from(REG_D)] = REG_D_VRT;
        Rtc {
            cmos,
            index: 0,
            nmi_disabled: false,
            ref_secs: epoch_secs as i64,
            ref_ns: now_ns,
            reg_c: 0,
            flags_ns: now_ns,
        }
    }

    /// Like [`Rtc::new`], with the memory-size bytes set as QEMU's
    /// `pc_cmos_init` sets them for SeaBIOS: `below_4g` bytes of RAM under
    /// 4 GiB and `above_4g` above it.
    ///
    /// * 0x15/0x16: base memory in KiB (at most 640);
    /// * 0x17/0x18 and 0x30/0x31: KiB above 1 MiB (at most 65535);
    /// * 0x34/0x35: 64 KiB blocks above 16 MiB under 4 GiB (at most 65535);
    /// * 0x5B-0x5D: 64 KiB blocks above 4 GiB.
    pub fn with_memory(epoch_secs: u64, now_ns: u64, below_4g: u64, above_4g: u64) -> Self {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let mut rtc = Self::new(epoch_secs, now_ns);
        let c = &mut rtc.cmos;
        let base = (below_4g / KIB).min(640);
        c[0x15] = base as u8;
        c[0x16] = (base >> 8) as u8;
        let ext = (below_4g.saturating_sub(MIB) / KIB).min(0xFFFF);
        c[0x17] = ext as u8;
        c[0x18] = (ext >> 8) as u8;
        c[0x30] = ext as u8;
        c[0x31] = (ext >> 8) as u8;
        let ext16 = (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF);
        c[0x34] = ext16 as u8;
        c[0x35] = (ext16 >> 8) as u8;
        let high = above_4g / (64 * KIB);
        c[0x5B] = high as u8;
        c[0x5C] = (high >> 8) as u8;
        c[0x5D] = (high >> 16) as u8;
        rtc
    }

    /// Whether `port` belongs to this model.
    pub fn handles(port: u16) -> bool {
        matches!(port, INDEX_PORT | DATA_PORT)
    }

    fn reg_b(&self) -> u8 {
        self.cmos[usize::from(REG_B)]
    }

    fn frozen(&self) -> bool {
        self.reg_b() & REG_B_SET != 0
    }

    /// Wall-clock seconds and the ns into the current second at `now_ns`.
    fn clock(&self, now_ns: u64) -> (i64, u64) {
        let e = now_ns.saturating_sub(self.ref_ns);
        (self.ref_secs + (e / NS_PER_S) as i64, e % NS_PER_S)
    }

    /// The wall-clock time (seconds since the epoch) the RTC holds at
    /// `now_ns`; with SET, the time in the frozen registers.
    pub fn time(&self, now_ns: u64) -> i64 {
        if self.frozen() {
            self.registers_time()
        } else {
            self.clock(now_ns).0
        }
    }

    /// Encodes `v` (0..=99) per register B's data mode.
    fn encode(&self, v: u32) -> u8 {
        if self.reg_b() & REG_B_DM != 0 {
            v as u8
        } else {
            to_bcd(v as u8)
        }
    }

    fn decode(&self, v: u8) -> u32 {
        u32::from(if self.reg_b() & REG_B_DM != 0 {
            v
        } else {
            from_bcd(v)
        })
    }

    /// Encodes an hour (0..=23) per register B (12-hour: 1-12, bit 7 PM).
    fn encode_hour(&self, h: u32) -> u8 {
        if self.reg_b() & REG_B_24H != 0 {
            self.encode(h)
        } else {
            let pm = if h >= 12 { 0x80 } else { 0 };
            let h12 = match h % 12 {
                0 => 12,
                x => x,
            };
            self.encode(h12) | pm
        }
    }

    fn decode_hour(&self, v: u8) -> u32 {
        if self.reg_b() & REG_B_24H != 0 {
            self.decode(v)
        } else {
            let h = self.decode(v & 0x7F) % 12;
            if v & 0x80 != 0 { h + 12 } else { h }
        }
    }

    /// The time registers (0x00, 0x02, 0x04, 0x06-0x09, 0x32) for `secs`.
    fn time_registers(&self, secs: i64) -> [(u8, u8); 8] {
        let t = DateTime::from_epoch(secs);
        let year = t.year.rem_euclid(10_000);
        [
            (SECONDS, self.encode(t.second)),
            (MINUTES, self.encode(t.minute)),
            (HOURS, self.encode_hour(t.hour)),
            (DAY_OF_WEEK, self.encode(t.weekday)),
            (DAY_OF_MONTH, self.encode(t.day)),
            (MONTH, self.encode(t.month)),
            (YEAR, self.encode((year % 100) as u32)),
            (CENTURY, self.encode((year / 100) as u32)),
        ]
    }

    fn is_time_register(index: u8) -> bool {
        matches!(
            index,
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK..=YEAR | CENTURY
        )
    }

    /// The time the (frozen) CMOS time registers hold.
    fn registers_time(&self) -> i64 {
        let r = |i: u8| self.cmos[usize::from(i)];
        let century = i64::from(self.decode(r(CENTURY)));
        let t = DateTime {
            year: century * 100 + i64::from(self.decode(r(YEAR))),
            month: self.decode(r(MONTH)).clamp(1, 12),
            day: self.decode(r(DAY_OF_MONTH)).clamp(1, 31),
            hour: self.decode_hour(r(HOURS)),
            minute: self.decode(r(MINUTES)),
            second: self.decode(r(SECONDS)),
            weekday: 0,
        };
        t.to_epoch()
    }

    /// Copies the running time into the CMOS time registers.
    fn store_time(&mut self, now_ns: u64) {
        let secs = self.clock(now_ns).0;
        for (i, v) in self.time_registers(secs) {
            self.cmos[usize::from(i)] = v;
        }
    }

    /// The periodic interrupt period in 32.768 kHz clocks, 0 for none.
    pub fn periodic_clocks(&self) -> u64 {
        match self.cmos[usize::from(REG_A)] & 0x0F {
            0 => 0,
            rs @ (1 | 2) => 1 << (rs + 6),
            rs => 1 << (rs - 1),
        }
    }

    /// Periodic boundaries in (0, `ns`] after `ref_ns`.
    fn periodic_count(&self, ns: u64) -> u128 {
        let p = u128::from(self.periodic_clocks());
        u128::from(ns) * 32_768 / (p * u128::from(NS_PER_S))
    }

    /// The flags register C will hold at `now_ns` (without IRQF).
    fn flags_at(&self, now_ns: u64) -> u8 {
        let mut flags = self.reg_c;
        let (a, b) = (
            self.flags_ns.saturating_sub(self.ref_ns),
            now_ns.saturating_sub(self.ref_ns),
        );
        if b <= a {
            return flags;
        }
        if self.periodic_clocks() != 0 && self.periodic_count(b) > self.periodic_count(a) {
            flags |= REG_C_PF;
        }
        if !self.frozen() && b / NS_PER_S > a / NS_PER_S {
            flags |= REG_C_UF;
            let first = self.ref_secs + (a / NS_PER_S) as i64;
            let last = self.ref_secs + (b / NS_PER_S) as i64;
            if self.next_alarm(first).is_some_and(|t| t <= last) {
                flags |= REG_C_AF;
            }
        }
        flags
    }

    /// Which values of a field match alarm register `reg` ("don't care"
    /// values 0xC0-0xFF match all).
    /// What alarm register `reg` matches among `0..n`: every value ("don't
    /// care", 0xC0-0xFF: `Some(None)`), the one value that encodes to it
    /// (`Some(Some(v))`), or none (`None`: a byte no time encodes to).
    /// Decoded once per call, so the next alarm costs a few hundred
    /// instructions, not one encoding per candidate time.
    fn alarm_match(&self, reg: u8, n: u32, hour: bool) -> Option<Option<u32>> {
        let a = self.cmos[usize::from(reg)];
        if a >= 0xC0 {
            return Some(None);
        }
        let v = if hour {
            self.decode_hour(a)
        } else {
            self.decode(a)
        };
        let back = if hour {
            self.encode_hour(v)
        } else {
            self.encode(v)
        };
        (v < n && back == a).then_some(Some(v))
    }

    /// The first second after `secs` that matches the alarm, within two
    /// days (the alarm repeats daily), if any.
    fn next_alarm(&self, secs: i64) -> Option<i64> {
        let hours = self.alarm_match(HOURS_ALARM, 24, true)?;
        let minutes = self.alarm_match(MINUTES_ALARM, 60, false)?;
        let seconds = self.alarm_match(SECONDS_ALARM, 60, false)?;
        let range = |m: Option<u32>, n: u32| match m {
            Some(v) => v..v + 1,
            None => 0..n,
        };
        let day0 = secs.div_euclid(SECS_PER_DAY) * SECS_PER_DAY;
        for day in [day0, day0 + SECS_PER_DAY] {
            for h in range(hours, 24) {
                let hs = day + i64::from(h) * 3600;
                if hs + 3599 <= secs {
                    continue;
                }
                for m in range(minutes, 60) {
                    let ms = hs + i64::from(m) * 60;
                    if ms + 59 <= secs {
                        continue;
                    }
                    for s in range(seconds, 60) {
                        let t = ms + i64::from(s);
                        if t > secs {
                            return Some(t);
                        }
                    }
                }
            }
        }
        None
    }

    /// Folds the flags up to `now_ns` into register C.
    fn sync(&mut self, now_ns: u64) {
        self.reg_c = self.flags_at(now_ns);
        self.flags_ns = self.flags_ns.max(now_ns);
    }

    /// Register C as a read at `now_ns` would return it (without clearing).
    pub fn reg_c(&self, now_ns: u64) -> u8 {
        let flags = self.flags_at(now_ns);
        let enabled = self.reg_b() & (REG_B_PIE | REG_B_AIE | REG_B_UIE);
        if flags & enabled != 0 {
            flags | REG_C_IRQF
        } else {
            flags
        }
    }

    /// The level of IRQ 8 at `now_ns`: IRQF, until register C is read.
    pub fn irq_level(&self, now_ns: u64) -> bool {
        self.reg_c(now_ns) & REG_C_IRQF != 0
    }

    /// The first time strictly after `now_ns` at which an enabled
    /// interrupt flag (PF with PIE, UF with UIE, AF with AIE) will be set,
    /// so the caller can arm a timer and then look at
    /// [`Rtc::irq_level`]. `None` when no enabled source will fire.
    pub fn next_irq8(&self, now_ns: u64) -> Option<u64> {
        let b = self.reg_b();
        let e = now_ns.saturating_sub(self.ref_ns);
        let mut next: Option<u64> = None;
        let mut consider = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        let p = u128::from(self.periodic_clocks());
        if b & REG_B_PIE != 0 && p != 0 {
            let k = self.periodic_count(e) + 1;
            let off = (k * p * u128::from(NS_PER_S)).div_ceil(32_768);
            consider(self.ref_ns + off as u64);
        }
        if !self.frozen() {
            let next_second = (e / NS_PER_S + 1) * NS_PER_S;
            if b & REG_B_UIE != 0 {
                consider(self.ref_ns + next_second);
            }
            if b & REG_B_AIE != 0 {
                let secs = self.ref_secs + (e / NS_PER_S) as i64;
                if let Some(t) = self.next_alarm(secs) {
                    let off = (t - self.ref_secs) as u64 * NS_PER_S;
                    consider(self.ref_ns + off);
                }
            }
        }
        next.map(|t| t.max(now_ns + 1))
    }

    /// Whether the last write to port 0x70 disabled NMI (bit 7).
    #[cfg(test)]
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// The CMOS index selected through port 0x70.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// A guest read of `port` at `now_ns`. Port 0x70 is write-only and
    /// reads 0xFF, as do unknown ports.
    pub fn read(&mut self, port: u16, now_ns: u64) -> u8 {
        if port != DATA_PORT {
            return 0xFF;
        }
        self.read_cmos(self.index, now_ns)
    }

    /// A guest write of `value` to `port` at `now_ns`.
    pub fn write(&mut self, port: u16, value: u8, now_ns: u64) {
        match port {
            INDEX_PORT => {
                self.index = value & 0x7F;
                self.nmi_disabled = value & 0x80 != 0;
            }
            DATA_PORT => self.write_cmos(self.index, value, now_ns),
            _ => {}
        }
    }

    /// Reads CMOS byte `index` (0..=127) at `now_ns`, with its side
    /// effects (reading register C clears it).
    pub fn read_cmos(&mut self, index: u8, now_ns: u64) -> u8 {
        let index = index & 0x7F;
        match index {
            REG_A => {
                let (_, frac) = self.clock(now_ns);
                let uip = !self.frozen() && frac >= NS_PER_S - UIP_NS;
                self.cmos[usize::from(REG_A)] | if uip { REG_A_UIP } else { 0 }
            }
            REG_C => {
                let v = self.reg_c(now_ns);
                self.sync(now_ns);
                self.reg_c = 0;
                v
            }
            REG_D => REG_D_VRT,
            i if Self::is_time_register(i) && !self.frozen() => {
                let secs = self.clock(now_ns).0;
                self.time_registers(secs)
                    .iter()
                    .find(|(r, _)| *r == i)
                    .map_or(0, |&(_, v)| v)
            }
            i => self.cmos[usize::from(i)],
        }
    }

    /// Writes CMOS byte `index` (0..=127) at `now_ns`. Registers C and D
    /// and UIP are read only; writing a time register sets the clock.
    pub fn write_cmos(&mut self, index: u8, value: u8, now_ns: u64) {
        let index = index & 0x7F;
        self.sync(now_ns);
        match index {
            REG_A => self.cmos[usize::from(REG_A)] = value & !REG_A_UIP,
            REG_B => {
                let was_frozen = self.frozen();
                let set = value & REG_B_SET != 0;
                if set && !was_frozen {
                    self.store_time(now_ns);
                }
                // Setting SET clears UIE, as on the MC146818.
                let value = if set { value & !REG_B_UIE } else { value };
                self.cmos[usize::from(REG_B)] = value;
                if !set && was_frozen {
                    self.ref_secs = self.registers_time();
                    self.ref_ns = now_ns;
                    self.flags_ns = now_ns;
                }
            }
            REG_C | REG_D => {}
            i if Self::is_time_register(i) => {
                if self.frozen() {
                    self.cmos[usize::from(i)] = value;
                } else {
                    // Set the clock, keeping the phase within the second.
                    self.store_time(now_ns);
                    self.cmos[usize::from(i)] = value;
                    let (secs, _) = self.clock(now_ns);
                    self.ref_secs += self.registers_time() - secs;
                }
            }
            i => self.cmos[usize::from(i)] = value,
        }
    }
}

#[cfg(test)]
mod tests;
