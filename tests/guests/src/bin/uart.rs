//! The domain's COM1 (a 16550A at 0x3F8): first the checks Linux's 8250
//! driver makes when it probes a port (scratch register, IER read-back,
//! loopback modem lines, FIFO identification), then it writes a banner by
//! polling the transmitter and reads lines by polling the receiver —
//! sleeping `poll_ms=` (default 5) ms on the single-shot timer while nothing
//! came — printing each as `uart: got '<line>'` through the UART itself.
//! `quit` ends the test (pass).

#![no_std]
#![no_main]

use basalt_test_guests::Checks;
use basalt_test_guests::cpu::{inb, outb};
use basalt_test_guests::hypercall::{Wait, sleep_until, system_time_ns};
use basalt_test_guests::{arg_u64, fail, pass, println};

basalt_test_guests::entry!(main);

const COM1: u16 = 0x3f8;
const LINE_MAX: usize = 120;

fn reg(offset: u16) -> u16 {
    COM1 + offset
}

/// Writes `s` through the UART, waiting for THRE (LSR bit 5) before each byte.
fn uart_print(s: &[u8]) -> bool {
    for &b in s {
        let mut spins = 0u32;
        while inb(reg(5)) & 0x20 == 0 {
            spins += 1;
            if spins > 1_000_000 {
                return false;
            }
        }
        outb(reg(0), b);
    }
    true
}

/// Linux `autoconfig()`'s main checks.
fn probe(c: &mut Checks) {
    outb(reg(7), 0xa5);
    c.check(
        inb(reg(7)) == 0xa5,
        format_args!("scratch register keeps 0xa5"),
    );
    outb(reg(1), 0x0f);
    c.check(
        inb(reg(1)) == 0x0f,
        format_args!("IER reads back 0x0f (upper nibble zero)"),
    );
    outb(reg(1), 0);
    outb(reg(4), 0x1a);
    let msr = inb(reg(6)) & 0xf0;
    c.check(
        msr == 0x90,
        format_args!("loopback: MSR upper nibble 0x90 (got {msr:#x})"),
    );
    outb(reg(4), 0x03);
    outb(reg(2), 0x07);
    let iir = inb(reg(2));
    c.check(
        iir & 0xc0 == 0xc0,
        format_args!("FIFO enabled: IIR bits 7-6 = 11, a 16550A (got {iir:#x})"),
    );
    // 115200 8n1, as a console driver sets it.
    outb(reg(3), 0x80);
    outb(reg(0), 1);
    outb(reg(1), 0);
    outb(reg(3), 0x03);
    c.check(inb(reg(3)) == 0x03, format_args!("LCR 8n1 with DLAB off"));
}

fn main(cmdline: &str) -> u32 {
    let poll_ns = arg_u64(cmdline, "poll_ms", 5) * 1_000_000;
    let mut checks = Checks::new();
    probe(&mut checks);
    if checks.failures() > 0 {
        return checks.finish();
    }
    if !uart_print(b"uart: ready on COM1\r\n") {
        return fail!("the transmitter never became ready");
    }
    let mut line = [0u8; LINE_MAX];
    let mut len = 0;
    loop {
        if inb(reg(5)) & 1 == 0 {
            let now = system_time_ns();
            if now < 0 {
                return fail!("VCPUOP_get_runstate_info failed: {now}");
            }
            let r = sleep_until(now as u64 + poll_ns, Wait::Hlt);
            if r < 0 {
                return fail!("sleeping failed: {r}");
            }
            continue;
        }
        let b = inb(reg(0));
        if b != b'\r' && b != b'\n' {
            if len < LINE_MAX {
                line[len] = b;
                len += 1;
            }
            continue;
        }
        if len == 0 {
            continue;
        }
        let text = &line[..len];
        uart_print(b"uart: got '");
        uart_print(text);
        uart_print(b"'\r\n");
        if text == b"quit" {
            println!("uart: quit received");
            return pass();
        }
        len = 0;
    }
}
