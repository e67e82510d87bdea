//! The guest console: bytes written to I/O port `0xE9` (Bochs' and QEMU's
//! debug port; Basalt turns them into console lines prefixed `(dN) `).

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

/// The debug console port.
pub const PORT: u16 = 0xe9;

/// Writes bytes to port [`PORT`]; implements [`fmt::Write`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Console;

impl Console {
    /// Writes `bytes` as they are.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            crate::cpu::outb(PORT, byte);
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Who is printing: 0 = nobody, else the vCPU id + 1. One `print!` at a
/// time, so that the lines of several vCPUs do not mix (the hypervisor
/// collects the domain's port 0xE9 bytes into lines).
static OWNER: AtomicU32 = AtomicU32::new(0);

/// Spins until this vCPU (`me` = id + 1) owns the console; yields to the
/// hypervisor now and then, in case the owner waits for this physical CPU.
fn lock(me: u32) {
    let mut spins = 0u32;
    while OWNER
        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) {
            crate::hypercall::sched_yield();
        } else {
            core::hint::spin_loop();
        }
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let me = crate::smp::cpu_id() + 1;
    // Already ours: a fault or panic while this vCPU was printing.
    let nested = OWNER.load(Ordering::Relaxed) == me;
    if !nested {
        lock(me);
    }
    // Writing to the port cannot fail.
    let _ = fmt::Write::write_fmt(&mut Console, args);
    if !nested {
        OWNER.store(0, Ordering::Release);
    }
}

/// Prints to the guest console (port `0xE9`).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::_print(format_args!($($arg)*))
    };
}

/// Prints a line to the guest console (port `0xE9`).
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::_print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
