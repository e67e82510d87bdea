//! Time since boot from the time stamp counter.
//!
//! The TSC frequency comes from CPUID leaf 0x15 (or 0x16) when the processor
//! reports it, otherwise from counting TSC ticks across a 10 ms interval of
//! the legacy PIT (channel 2, gated through port 0x61, no interrupt needed).
//! The platform bring-up refines this with the HPET and the local APIC timer.

use crate::arch::x86_64::{cpu, io};
use core::sync::atomic::{AtomicU64, Ordering};

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// Where the TSC frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TscSource {
    /// CPUID leaf 0x15 (crystal ratio).
    Cpuid15,
    /// CPUID leaf 0x16 (base frequency in MHz).
    Cpuid16,
    /// Counted against the 8254 PIT.
    Pit,
    /// Nothing worked; an assumed 1 GHz keeps timestamps monotonic.
    Assumed,
}

const PIT_HZ: u64 = 1_193_182;
const PIT_CH2_DATA: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
const PORT_61: u16 = 0x61;

/// Records the boot TSC and finds the TSC frequency.
pub fn init() -> (u64, TscSource) {
    BOOT_TSC.store(cpu::rdtsc(), Ordering::Relaxed);
    // CPUID 0x15 is exact; 0x16 is the base frequency, which only usually
    // equals the TSC rate, so the PIT measurement comes before it.
    let (hz, source) = from_cpuid15()
        .or_else(|| pit_calibrate().map(|hz| (hz, TscSource::Pit)))
        .or_else(from_cpuid16)
        .unwrap_or((1_000_000_000, TscSource::Assumed));
    TSC_HZ.store(hz, Ordering::Relaxed);
    (hz, source)
}

fn from_cpuid15() -> Option<(u64, TscSource)> {
    if cpu::max_leaves().0 < 0x15 {
        return None;
    }
    let r = cpu::cpuid(0x15);
    (r.eax != 0 && r.ebx != 0 && r.ecx != 0).then(|| {
        let hz = u64::from(r.ecx) * u64::from(r.ebx) / u64::from(r.eax);
        (hz, TscSource::Cpuid15)
    })
}

fn from_cpuid16() -> Option<(u64, TscSource)> {
    if cpu::max_leaves().0 < 0x16 {
        return None;
    }
    let mhz = cpu::cpuid(0x16).eax & 0xffff;
    (mhz != 0).then(|| (u64::from(mhz) * 1_000_000, TscSource::Cpuid16))
}

/// Counts TSC ticks while PIT channel 2 counts down 10 ms in mode 0.
fn pit_calibrate() -> Option<u64> {
    // Every port access below: ports 0x42/0x43 are the 8254 PIT's channel 2
    // and command register, and port 0x61 bits 0-1 gate channel 2 and the
    // speaker. Channel 2 drives only the speaker, which stays off.
    // SAFETY: these PIT and port-0x61 writes touch no memory (see above).
    let outb = |port, value| unsafe { io::outb(port, value) };
    // SAFETY: see above.
    let inb = |port| unsafe { io::inb(port) };
    const COUNT: u16 = (PIT_HZ / 100) as u16;
    // Gate off, speaker off; channel 2, lobyte/hibyte, mode 0, binary.
    let port61 = inb(PORT_61) & !0x03;
    outb(PORT_61, port61);
    outb(PIT_COMMAND, 0b1011_0000);
    outb(PIT_CH2_DATA, COUNT as u8);
    outb(PIT_CH2_DATA, (COUNT >> 8) as u8);
    // Gate on starts the count; OUT2 (port 0x61 bit 5) rises at terminal count.
    outb(PORT_61, port61 | 0x01);
    let start = cpu::rdtsc();
    let mut polls: u64 = 0;
    while inb(PORT_61) & 0x20 == 0 {
        polls += 1;
        if polls > 50_000_000 {
            outb(PORT_61, port61);
            return None;
        }
    }
    let ticks = cpu::rdtsc().wrapping_sub(start);
    outb(PORT_61, port61);
    (ticks > 0).then_some(ticks * 100)
}

/// The TSC frequency in Hz (0 before [`init`]).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// The TSC [`init`] read at Basalt's entry (the zero of the log's
/// timestamps; `cargo xtask bench dom0` counts dom0's boot from it).
pub fn boot_tsc() -> u64 {
    BOOT_TSC.load(Ordering::Relaxed)
}

/// Microseconds since [`init`].
pub fn micros_since_boot() -> u64 {
    now_ns() / 1000
}

/// Nanoseconds since boot: Basalt's system time (what Xen calls system
/// time: monotonic, shared by all CPUs).
pub fn now_ns() -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        return 0;
    }
    let ticks = cpu::rdtsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed));
    (u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64
}

/// The system time (ns since boot) at which the TSC read `tsc`.
pub fn ns_at_tsc(tsc: u64) -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        return 0;
    }
    let ticks = tsc.saturating_sub(BOOT_TSC.load(Ordering::Relaxed));
    u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(hz)).unwrap_or(u64::MAX)
}

/// The TSC value `ns` nanoseconds from now (`u64::MAX`, never reached,
/// for a time too far ahead to count).
pub fn deadline_tsc(ns: u64) -> u64 {
    cpu::rdtsc().saturating_add(ns_to_tsc(ns).max(1))
}

/// The TSC value at system time `ns` (nanoseconds since boot), clamped to
/// `u64::MAX`: a far-future time (a guest's `u64::MAX` deadline) stays in
/// the future instead of wrapping into the past.
pub fn tsc_at_ns(ns: u64) -> u64 {
    BOOT_TSC
        .load(Ordering::Relaxed)
        .saturating_add(ns_to_tsc(ns))
}

/// Arms this CPU's one-shot timer for system time `ns`, unless it is
/// already armed for that time or earlier.
pub fn arm_at_ns(ns: u64) {
    arm_by_tsc(tsc_at_ns(ns));
}

/// Arms this CPU's one-shot timer for TSC value `deadline`, unless it is
/// already armed for that time or earlier (SVM ends a guest's time slice
/// with it: the host timer's interrupt causes an INTR exit).
pub fn arm_by_tsc(deadline: u64) {
    let deadline = deadline.max(1);
    let Some(this) = crate::arch::x86_64::percpu::current() else {
        return;
    };
    let armed = this.timer_deadline.load(Ordering::Acquire);
    // An earlier deadline still ahead will fire first; one already behind
    // may have been swallowed (no interrupt exit under Bochs), so re-arm.
    if armed != 0 && armed <= deadline && armed > cpu::rdtsc() {
        return;
    }

    arm_tsc(deadline);
}

/// TSC ticks in `ns` nanoseconds, clamped to `u64::MAX` (with a TSC above
/// 1 GHz, `u64::MAX` ns is more ticks than 64 bits hold).
pub fn ns_to_tsc(ns: u64) -> u64 {
    let ticks = u128::from(ns) * u128::from(tsc_hz()) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Arms this CPU's one-shot timer to fire `ns` nanoseconds from now. One
/// timer per CPU: arming again moves it.
pub fn arm_oneshot_in(ns: u64) {
    arm_tsc(deadline_tsc(ns));
}

/// Arms this CPU's one-shot timer for TSC value `deadline` and notes it.
fn arm_tsc(deadline: u64) {
    if let Some(this) = crate::arch::x86_64::percpu::current() {
        this.timer_deadline.store(deadline, Ordering::Release);
    }
    crate::arch::x86_64::apic::arm_timer(
        crate::arch::x86_64::idt::vector::TIMER,
        deadline,
        tsc_hz(),
    );
}

/// The local APIC timer interrupt: counts it and clears the deadline.
pub fn timer_interrupt() {
    if let Some(this) = crate::arch::x86_64::percpu::current() {
        this.timer_ticks.fetch_add(1, Ordering::AcqRel);
        this.timer_deadline.store(0, Ordering::Release);
    }
}

/// Wall-clock time at boot, seconds since 1970 (0: unknown).
static WALL_AT_BOOT: AtomicU64 = AtomicU64::new(0);

/// Reads CMOS register `reg` of the machine's real-time clock.
fn cmos(reg: u8) -> u8 {
    // SAFETY: index port of the MC146818 RTC/CMOS; bit 7 (NMI disable)
    // stays clear; selecting a register has no other effect.
    unsafe { io::outb(0x70, reg & 0x7f) };
    // SAFETY: data port of the RTC/CMOS: reading a time register has no side
    // effect (only register C, which is not read here, clears flags).
    unsafe { io::inb(0x71) }
}

/// The RTC's date and time, once no update is in progress and two reads
/// agree (as Linux's `mc146818_get_time` does).
fn read_rtc() -> Option<basalt_devices::rtc::DateTime> {
    use basalt_devices::rtc::{self as r, from_bcd};
    let snapshot = || {
        let mut spins = 0u32;
        while cmos(r::REG_A) & r::REG_A_UIP != 0 {
            spins += 1;
            if spins > 1_000_000 {
                return None;
            }
            core::hint::spin_loop();
        }
        Some([
            cmos(r::SECONDS),
            cmos(r::MINUTES),
            cmos(r::HOURS),
            cmos(r::DAY_OF_MONTH),
            cmos(r::MONTH),
            cmos(r::YEAR),
            cmos(r::CENTURY),
            cmos(r::REG_B),
        ])
    };
    let mut regs = snapshot()?;
    for _ in 0..10 {
        let again = snapshot()?;
        if again == regs {
            break;
        }
        regs = again;
    }
    let [sec, min, hour, day, month, year, century, b] = regs;
    let binary = b & r::REG_B_DM != 0;
    let value = |v: u8| if binary { v } else { from_bcd(v) };
    let pm = hour & 0x80 != 0;
    let mut hour = u32::from(value(hour & 0x7f));
    if b & r::REG_B_24H == 0 {
        hour = hour % 12 + if pm { 12 } else { 0 };
    }
    let yy = i64::from(value(year));
    let cc = i64::from(value(century));
    let full = if (19..=21).contains(&cc) {
        cc * 100 + yy
    } else if yy < 70 {
        2000 + yy
    } else {
        1900 + yy
    };
    let t = basalt_devices::rtc::DateTime {
        year: full,
        month: u32::from(value(month)),
        day: u32::from(value(day)),
        hour,
        minute: u32::from(value(min)),
        second: u32::from(value(sec)),
        weekday: 1,
    };
    let sane = (1..=12).contains(&t.month)
        && (1..=31).contains(&t.day)
        && t.hour < 24
        && t.minute < 60
        && t.second < 60;
    sane.then_some(t)
}

/// Reads the machine's real-time clock once, at boot; guests' virtual RTCs
/// start from it. Returns the date, or `None` if the clock cannot be read.
pub fn init_wall_clock() -> Option<basalt_devices::rtc::DateTime> {
    let t = read_rtc()?;
    let secs = u64::try_from(t.to_epoch()).ok()?;
    WALL_AT_BOOT.store(
        secs.saturating_sub(now_ns() / 1_000_000_000),
        Ordering::Relaxed,
    );
    Some(t)
}

/// Seconds since 1970 at system time 0 (0 if unknown): Xen's wall clock
/// in shared_info.
pub fn wall_at_boot() -> u64 {
    WALL_AT_BOOT.load(Ordering::Relaxed)
}

/// Seconds since 1970 now (from the wall clock read at boot; 0 if unknown).
pub fn wall_clock_secs() -> u64 {
    match WALL_AT_BOOT.load(Ordering::Relaxed) {
        0 => 0,
        boot => boot + now_ns() / 1_000_000_000,
    }
}
