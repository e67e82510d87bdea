//! The guest console: bytes written to I/O port `0xE9` (Bochs' and QEMU's
//! debug port; Basalt turns them into console lines prefixed `(dN) `).

use core::fmt;

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

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    // Writing to the port cannot fail.
    let _ = fmt::Write::write_fmt(&mut Console, args);
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
