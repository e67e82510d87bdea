//! The virtual MC146818 RTC: reads the date as Linux does (wait for the
//! update-in-progress bit to clear, read, read again until two agree),
//! checks it is a plausible present (year 2024 or later), sleeps 1.5 s and
//! checks the clock advanced by 1 or 2 seconds, then turns on the periodic
//! interrupt (register A rate `rate=`, default 10: 32768 >> 9 = 64 Hz;
//! register B PIE) behind the slave PIC (IRQ 8, vector 0x28) and counts
//! `ticks=` (default 32) interrupts, reading register C in each, within
//! 10 % of the expected time.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{inb, init_pic_pair, outb, set_interrupt_handler};
use basalt_test_guests::hypercall::{Wait, sleep_until, system_time_ns};
use basalt_test_guests::{Checks, arg_u64, println};
use core::sync::atomic::{AtomicU32, Ordering};

basalt_test_guests::entry!(main);

const IRQ8_VECTOR: u8 = 0x28;
static TICKS: AtomicU32 = AtomicU32::new(0);
static STRAY: AtomicU32 = AtomicU32::new(0);

fn cmos(reg: u8) -> u8 {
    outb(0x70, reg);
    inb(0x71)
}

fn set_cmos(reg: u8, value: u8) {
    outb(0x70, reg);
    outb(0x71, value);
}

fn bcd(v: u8) -> u32 {
    u32::from(v >> 4) * 10 + u32::from(v & 0xf)
}

/// (year, month, day, hour, minute, second), read as Linux does.
fn read_time() -> (u32, u32, u32, u32, u32, u32) {
    let snap = || {
        while cmos(0x0a) & 0x80 != 0 {
            core::hint::spin_loop();
        }
        [
            cmos(0x00),
            cmos(0x02),
            cmos(0x04),
            cmos(0x07),
            cmos(0x08),
            cmos(0x09),
            cmos(0x32),
        ]
    };
    let mut a = snap();
    loop {
        let b = snap();
        if a == b {
            break;
        }
        a = b;
    }
    let binary = cmos(0x0b) & 0x04 != 0;
    let v = |x: u8| if binary { u32::from(x) } else { bcd(x) };
    (
        v(a[6]) * 100 + v(a[5]),
        v(a[4]),
        v(a[3]),
        v(a[2]),
        v(a[1]),
        v(a[0]),
    )
}

fn on_interrupt(vector: u8) {
    if vector == IRQ8_VECTOR {
        // Reading register C acknowledges the RTC's interrupt.
        let _ = cmos(0x0c);
        TICKS.fetch_add(1, Ordering::Relaxed);
        outb(0xa0, 0x20);
    } else {
        STRAY.fetch_add(1, Ordering::Relaxed);
    }
    outb(0x20, 0x20);
}

fn main(cmdline: &str) -> u32 {
    let ticks = arg_u64(cmdline, "ticks", 32).max(1) as u32;
    let rate = arg_u64(cmdline, "rate", 10).clamp(3, 15) as u8;
    let hz = 32_768i64 >> (rate - 1);
    let mut c = Checks::new();
    let (y, mo, d, h, mi, s) = read_time();
    println!("rtc: {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
    c.check(
        y >= 2024 && (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && s < 60,
        format_args!("the date is a plausible present"),
    );
    let before = h * 3600 + mi * 60 + s;
    let now = system_time_ns();
    let _ = sleep_until(now as u64 + 1_500_000_000, Wait::Hlt);
    let (_, _, _, h2, mi2, s2) = read_time();
    let after = h2 * 3600 + mi2 * 60 + s2;
    let step = (after + 86_400 - before) % 86_400;
    c.check(
        (1..=2).contains(&step),
        format_args!("1.5 s later the clock moved by {step} s (1 or 2 expected)"),
    );

    set_interrupt_handler(on_interrupt);
    init_pic_pair(!(1u8 << 2), 0xfe);
    let _ = cmos(0x0c);
    set_cmos(0x0a, 0x20 | rate);
    set_cmos(0x0b, cmos(0x0b) | 0x40);
    // Time from the first interrupt to the last: `ticks` periods.
    while TICKS.load(Ordering::Relaxed) < 1 {
        // SAFETY: as below.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }
    let start = system_time_ns();
    while TICKS.load(Ordering::Relaxed) < ticks + 1 {
        // SAFETY: every vector reaches `on_interrupt`; `sti; hlt` waits
        // atomically for the next one.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }
    let elapsed = system_time_ns() - start;
    set_cmos(0x0b, cmos(0x0b) & !0x40);
    let expected = i64::from(ticks) * 1_000_000_000 / hz;
    let error_permille = (elapsed - expected).abs() * 1000 / expected;
    println!(
        "rtc: {ticks} periodic interrupts at {hz} Hz in {} us (expected {} us), {} stray",
        elapsed / 1000,
        expected / 1000,
        STRAY.load(Ordering::Relaxed)
    );
    println!("BASALT-FIGURE: rtc_rate_error_permille={error_permille}");
    c.check(
        error_permille <= 100,
        format_args!("the periodic rate is within 10 % ({error_permille} per mille off)"),
    );
    c.check(
        STRAY.load(Ordering::Relaxed) == 0,
        format_args!("no other vector arrived"),
    );
    c.finish()
}
