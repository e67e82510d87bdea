//! How a run ends, for people and for test harnesses (docs/testing.md).
//!
//! Basalt prints one final line, `BASALT-VERDICT: PASS` or
//! `BASALT-VERDICT: FAIL: <reason>`, then halts. With the test-only option
//! `test-exit` it also ends the emulator: QEMU through `isa-debug-exit` at
//! port 0xf4 (exit status 33 for pass, 35 for fail) and Bochs through its
//! shutdown port 0x8900. Without it Basalt never touches those ports, which
//! on a real server could belong to a device.

use crate::arch::x86_64::{cpu, io};
use crate::println;
use core::sync::atomic::{AtomicBool, Ordering};

static TEST_EXIT: AtomicBool = AtomicBool::new(false);

/// Turns on the emulator exit at the end of the run (`test-exit`).
pub fn enable_test_exit() {
    TEST_EXIT.store(true, Ordering::Relaxed);
}

/// The outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Everything Basalt was asked to do succeeded.
    Pass,
    /// Something failed; the reason is printed with the verdict.
    Fail,
}

/// QEMU `isa-debug-exit` port; the exit status is `(value << 1) | 1`.
const QEMU_EXIT_PORT: u16 = 0xf4;
const QEMU_PASS: u8 = 0x10; // exit status 33
const QEMU_FAIL: u8 = 0x11; // exit status 35
/// Bochs ends when "Shutdown" is written to this port.
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// Prints the verdict, ends the emulator when `test-exit` is on, and halts.
pub fn finish(verdict: Verdict, reason: &str) -> ! {
    match verdict {
        Verdict::Pass => println!("BASALT-VERDICT: PASS"),
        Verdict::Fail => println!("BASALT-VERDICT: FAIL: {reason}"),
    }
    crate::console::flush();
    if TEST_EXIT.load(Ordering::Relaxed) {
        let code = if verdict == Verdict::Pass {
            QEMU_PASS
        } else {
            QEMU_FAIL
        };
        // SAFETY: `test-exit` says Basalt runs in an emulator whose port 0xf4
        // is QEMU's isa-debug-exit (or nothing, under Bochs); the write ends
        // the emulator and touches no memory.
        unsafe { io::outb(QEMU_EXIT_PORT, code) };
        for &b in b"Shutdown" {
            // SAFETY: port 0x8900 is Bochs' shutdown port under `test-exit`
            // (nothing under QEMU); it only ends the emulator.
            unsafe { io::outb(BOCHS_SHUTDOWN_PORT, b) };
        }
    }
    cpu::halt_forever()
}
