//! The devices a domain reaches through port I/O (docs/platform.md): the
//! debug console at port 0xE9 and a 16550A UART as its COM1 at 0x3F8-0x3FF
//! (`basalt-devices`), connected to the console multiplexer: what the guest
//! transmits shows as `(dN)` lines, what the operator types while the domain
//! has the console input arrives in its receive FIFO. The UART raises no
//! interrupt yet (no virtual interrupt controller): drivers poll it, as
//! early consoles do. Any other port reads all ones and ignores writes.

use crate::domain::Domain;
use basalt_devices::uart::{SerialOutput, Uart16550};

/// The guest's COM1 base port.
pub const COM1: u16 = 0x3f8;
/// Bochs/QEMU-style debug console port.
pub const DEBUG_CONSOLE: u16 = 0xe9;

/// Bytes the UART transmitted since the domain last looked.
#[derive(Debug, Default)]
pub struct Transmitted(alloc::vec::Vec<u8>);

impl SerialOutput for Transmitted {
    fn write_byte(&mut self, b: u8) {
        self.0.push(b);
    }
}

/// A domain's COM1.
pub type Serial = Uart16550<Transmitted>;

/// A new COM1 in its reset state.
pub fn new_serial() -> Serial {
    Uart16550::new(Transmitted::default())
}

fn com1_register(port: u16) -> Option<u8> {
    port.checked_sub(COM1).filter(|r| *r < 8).map(|r| r as u8)
}

/// Moves typed input into the UART's receive FIFO, as much as fits.
fn feed(domain: &Domain, uart: &mut Serial) {
    let space = uart.rx_space();
    if space == 0 {
        return;
    }
    let mut buf = [0u8; 16];
    let n = domain.input.lock().read(&mut buf[..space.min(16)]);
    if n > 0 {
        uart.receive(&buf[..n]);
    }
}

/// OUT to `port`: the value's low byte for the UART, every byte for the
/// debug console.
pub fn io_out(domain: &Domain, port: u16, size: u8, value: u32) {
    if port == DEBUG_CONSOLE {
        domain.console_write(&[value as u8]);
        return;
    }
    let Some(reg) = com1_register(port) else {
        return;
    };
    let sent = {
        let mut uart = domain.serial.lock();
        uart.write(reg, value as u8);
        core::mem::take(&mut uart.output_mut().0)
    };
    let _ = size;
    if !sent.is_empty() {
        domain.console_write(&sent);
    }
}

/// IN from `port`: the value read (all ones where nothing answers).
pub fn io_in(domain: &Domain, port: u16, size: u8) -> u32 {
    let ones = match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    };
    let Some(reg) = com1_register(port) else {
        return ones;
    };
    let mut uart = domain.serial.lock();
    feed(domain, &mut uart);
    // A wider read gets the register in its low byte, the bus's ones above.
    (ones & !0xff) | u32::from(uart.read(reg))
}
