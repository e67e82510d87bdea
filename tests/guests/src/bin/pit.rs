//! Timer interrupts from the virtual 8254: programs the PICs (only IRQ 0
//! open) and PIT channel 0 in mode 2 at `hz=` (default 1000) interrupts a
//! second, as Linux's periodic tick does, then sleeps in `sti; hlt` until
//! `ticks=` (default 100) interrupts came, and compares the time they
//! took (system time) with what the rate says: within 10 % passes. Also
//! reads the count back with the latch command and checks it counts down.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{inb, init_pic_pair, outb, set_interrupt_handler};
use basalt_test_guests::hypercall::system_time_ns;
use basalt_test_guests::{Checks, arg_u64, println};
use core::sync::atomic::{AtomicU32, Ordering};

basalt_test_guests::entry!(main);

const PIT_HZ: u64 = 1_193_182;
const IRQ0_VECTOR: u8 = 0x20;

static TICKS: AtomicU32 = AtomicU32::new(0);
static STRAY: AtomicU32 = AtomicU32::new(0);

fn on_interrupt(vector: u8) {
    if vector == IRQ0_VECTOR {
        TICKS.fetch_add(1, Ordering::Relaxed);
    } else {
        STRAY.fetch_add(1, Ordering::Relaxed);
    }
    outb(0x20, 0x20);
}

/// The channel 0 count, latched.
fn read_count() -> u16 {
    outb(0x43, 0x00);
    let lo = inb(0x40);
    let hi = inb(0x40);
    u16::from_le_bytes([lo, hi])
}

fn main(cmdline: &str) -> u32 {
    let hz = arg_u64(cmdline, "hz", 1000).clamp(19, 100_000);
    let ticks = arg_u64(cmdline, "ticks", 100).max(1) as u32;
    let divisor = (PIT_HZ / hz) as u16;
    let mut c = Checks::new();
    set_interrupt_handler(on_interrupt);
    init_pic_pair(0xfe, 0xff);
    // Channel 0, lobyte/hibyte, mode 2 (rate generator), binary.
    outb(0x43, 0x34);
    outb(0x40, divisor as u8);
    outb(0x40, (divisor >> 8) as u8);
    let first = read_count();
    let mut second = first;
    for _ in 0..200 {
        second = read_count();
        if second != first {
            break;
        }
    }
    c.check(
        first <= divisor && second <= divisor && second != first,
        format_args!(
            "the latched count moves within the divisor {divisor} ({first}, then {second})"
        ),
    );
    println!("pit: channel 0 at {hz} Hz (divisor {divisor}); waiting for {ticks} interrupts");
    let start = system_time_ns();
    while TICKS.load(Ordering::Relaxed) < ticks {
        // SAFETY: every vector reaches `on_interrupt`; `sti; hlt` waits
        // atomically for the next one.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }
    let elapsed = system_time_ns() - start;
    let expected = i64::from(ticks) * 1_000_000_000 / hz as i64;
    println!(
        "pit: {ticks} interrupts in {} us (expected {} us), {} stray",
        elapsed / 1000,
        expected / 1000,
        STRAY.load(Ordering::Relaxed)
    );
    let error_permille = (elapsed - expected).abs() * 1000 / expected;
    println!("BASALT-FIGURE: pit_rate_error_permille={error_permille}");
    c.check(
        error_permille <= 100,
        format_args!("the interrupt rate is within 10 % ({error_permille} per mille off)"),
    );
    c.check(
        STRAY.load(Ordering::Relaxed) == 0,
        format_args!("no other vector arrived"),
    );
    c.finish()
}
