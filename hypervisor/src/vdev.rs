//! The devices a domain reaches through port I/O (docs/platform.md): the
//! debug console at port 0xE9, a 16550A UART as its COM1 at 0x3F8-0x3FF,
//! the 8259 PIC pair (0x20/0x21, 0xA0/0xA1, ELCR 0x4D0/0x4D1) and the 8254
//! PIT (0x40-0x43, 0x61), models from `basalt-devices`. The PIT counts in
//! Basalt's system time; each rising edge of its channel 0 is IRQ 0, raised
//! when the scheduler sees the edge's time pass (`advance_time`). COM1 is connected to the console multiplexer:
//! what the guest transmits shows as `(dN)` lines, what the operator types
//! while the domain has the console input arrives in its receive FIFO. Its
//! interrupt line is IRQ 4 of the PIC, whose INTR output is injected into
//! vCPU 0 (`sched.rs`, before each VM entry). Any other port reads all ones
//! and ignores writes.

use crate::domain::Domain;
use basalt_devices::pic::Pic;
use basalt_devices::pit::Pit;
use basalt_devices::uart::{IER_RDA, SerialOutput, Uart16550};
use core::sync::atomic::Ordering;

/// COM1's ISA interrupt line.
const COM1_IRQ: u8 = 4;

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

/// Follows COM1's interrupt line into the PIC and notes whether the PIC
/// now asks for an interrupt. Lock order: serial, then PIC.
fn sync_irq(domain: &Domain, uart: &Serial) {
    let mut pic = domain.pic.lock();
    pic.set_irq(COM1_IRQ, uart.irq_level());
    domain.irq_pending.store(pic.output(), Ordering::SeqCst);
}

/// Typed input arrived for `domain`: with COM1's receive interrupt on, it
/// goes into the FIFO now (and may raise IRQ 4); otherwise it waits in the
/// input ring for `console_io` or a polling read of COM1.
pub fn input_arrived(domain: &Domain) {
    let mut uart = domain.serial.lock();
    if uart.ier() & IER_RDA != 0 {
        feed(domain, &mut uart);
        sync_irq(domain, &uart);
    }
}

/// The vector to inject into vCPU 0, if the PIC asks for one; `deliver`
/// tries to inject it and says whether it did, and only then is the
/// interrupt acknowledged (moved to the PIC's in-service register).
pub fn take_interrupt(domain: &Domain, deliver: impl FnOnce(u8) -> bool) {
    let mut pic = domain.pic.lock();
    match pic.pending_vector() {
        Some(vector) => {
            if deliver(vector) {
                pic.acknowledge();
                domain.irq_pending.store(pic.output(), Ordering::SeqCst);
            }
        }
        None => domain.irq_pending.store(false, Ordering::SeqCst),
    }
}

/// The PIT's next IRQ 0 edge after `now` (system ns; 0 = none).
fn update_pit_edge(domain: &Domain, pit: &Pit, now: u64) {
    let next = pit.next_irq0_edge(now).unwrap_or(0);
    domain.pit_edge.store(next, Ordering::SeqCst);
}

/// Raises the interrupts whose time has come by `now` (the PIT's IRQ 0
/// edges; edges missed in between merge into one, as a late timer tick).
pub fn advance_time(domain: &Domain, now: u64) {
    let edge = domain.pit_edge.load(Ordering::SeqCst);
    if edge == 0 || now < edge {
        return;
    }
    let pit = domain.pit.lock();
    update_pit_edge(domain, &pit, now);
    drop(pit);
    let mut pic = domain.pic.lock();
    pic.set_irq(0, true);
    pic.set_irq(0, false);
    domain.irq_pending.store(pic.output(), Ordering::SeqCst);
}

/// OUT to `port`: the value's low byte for the UART and the PIC, every
/// byte for the debug console.
pub fn io_out(domain: &Domain, port: u16, size: u8, value: u32) {
    let _ = size;
    if port == DEBUG_CONSOLE {
        domain.console_write(&[value as u8]);
        return;
    }
    if Pic::handles(port) {
        let mut pic = domain.pic.lock();
        pic.write(port, value as u8);
        domain.irq_pending.store(pic.output(), Ordering::SeqCst);
        return;
    }
    if Pit::handles(port) {
        let now = crate::time::now_ns();
        let mut pit = domain.pit.lock();
        pit.write(port, value as u8, now);
        update_pit_edge(domain, &pit, now);
        return;
    }
    let Some(reg) = com1_register(port) else {
        return;
    };
    let sent = {
        let mut uart = domain.serial.lock();
        uart.write(reg, value as u8);
        if uart.ier() & IER_RDA != 0 {
            feed(domain, &mut uart);
        }
        sync_irq(domain, &uart);
        core::mem::take(&mut uart.output_mut().0)
    };
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
    if Pic::handles(port) {
        let value = domain.pic.lock().read(port);
        return (ones & !0xff) | u32::from(value);
    }
    if Pit::handles(port) {
        let value = domain.pit.lock().read(port, crate::time::now_ns());
        return (ones & !0xff) | u32::from(value);
    }
    let Some(reg) = com1_register(port) else {
        return ones;
    };
    let mut uart = domain.serial.lock();
    feed(domain, &mut uart);
    // A wider read gets the register in its low byte, the bus's ones above.
    let value = uart.read(reg);
    sync_irq(domain, &uart);
    (ones & !0xff) | u32::from(value)
}
