//! Interrupts from a virtual device: programs the 8259 PICs as Linux does
//! (vectors 0x20-0x2F, everything masked but IRQ4), turns on COM1's
//! received-data interrupt, and waits in `sti; hlt` with no timer. Each
//! interrupt drains the UART and sends the PIC an EOI; complete lines are
//! printed as `irq: got '<line>' after N interrupts`. After the first line
//! it waits once with interrupts off until COM1 holds data, then enables
//! them and spins (no HLT), so the interrupt is pending while the guest
//! cannot take it (the hypervisor must wait for the interrupt window).
//! `quit` ends the test (pass). A hypervisor that does not inject
//! interrupts leaves it waiting.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{inb, init_pic_pair, outb, set_interrupt_handler};
use basalt_test_guests::{pass, println};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

basalt_test_guests::entry!(main);

const COM1: u16 = 0x3f8;
const IRQ4_VECTOR: u8 = 0x24;

/// Bytes received by the interrupt handler (a single-producer ring).
static RING: [core::sync::atomic::AtomicU8; 256] =
    [const { core::sync::atomic::AtomicU8::new(0) }; 256];
static HEAD: AtomicUsize = AtomicUsize::new(0);
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);
static STRAY: AtomicU32 = AtomicU32::new(0);

fn on_interrupt(vector: u8) {
    if vector != IRQ4_VECTOR {
        STRAY.fetch_add(1, Ordering::Relaxed);
        outb(0x20, 0x20);
        return;
    }
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    while inb(COM1 + 5) & 1 != 0 {
        let b = inb(COM1);
        let at = HEAD.load(Ordering::Relaxed);
        RING[at % RING.len()].store(b, Ordering::Relaxed);
        HEAD.store(at + 1, Ordering::Release);
    }
    // Non-specific EOI to the master PIC.
    outb(0x20, 0x20);
}

fn init_uart() {
    outb(COM1 + 3, 0x80);
    outb(COM1, 1);
    outb(COM1 + 1, 0);
    outb(COM1 + 3, 0x03);
    outb(COM1 + 2, 0x07);
    // DTR, RTS and OUT2 (which gates the IRQ line on PCs).
    outb(COM1 + 4, 0x0b);
    // Received-data-available interrupt.
    outb(COM1 + 1, 0x01);
}

fn main(_cmdline: &str) -> u32 {
    set_interrupt_handler(on_interrupt);
    init_pic_pair(!(1u8 << 4), 0xff);
    init_uart();
    let imr = inb(0x21);
    println!(
        "irq: PIC mask {imr:#04x}, COM1 IER {:#04x}; waiting for COM1 interrupts",
        inb(COM1 + 1)
    );
    let mut line = [0u8; 120];
    let mut len = 0;
    let mut tail = 0;
    let mut lines = 0u32;
    loop {
        if lines == 1 {
            lines += 1;
            println!("irq: interrupts off until COM1 has data");
            while inb(COM1 + 5) & 1 == 0 {
                core::hint::spin_loop();
            }
            let before = INTERRUPTS.load(Ordering::Relaxed);
            // SAFETY: as below; the handler runs as soon as IF is set.
            unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
            while INTERRUPTS.load(Ordering::Relaxed) == before {
                core::hint::spin_loop();
            }
            // SAFETY: interrupts off again for the loop below.
            unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
            println!("irq: the pending interrupt came once IF was set");
        }
        // SAFETY: the IDT sends every vector to `on_interrupt` or the
        // exception report; STI's shadow makes `sti; hlt` wait atomically.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        let head = HEAD.load(Ordering::Acquire);
        while tail < head {
            let b = RING[tail % RING.len()].load(Ordering::Relaxed);
            tail += 1;
            if b != b'\r' && b != b'\n' {
                if len < line.len() {
                    line[len] = b;
                    len += 1;
                }
                continue;
            }
            if len == 0 {
                continue;
            }
            let text = core::str::from_utf8(&line[..len]).unwrap_or("?");
            println!(
                "irq: got '{text}' after {} interrupts ({} stray)",
                INTERRUPTS.load(Ordering::Relaxed),
                STRAY.load(Ordering::Relaxed)
            );
            if text == "quit" {
                return pass();
            }
            len = 0;
            lines += 1;
        }
    }
}
