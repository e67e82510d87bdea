//! Port I/O to ports nothing emulates: reads return all ones in every width,
//! writes are ignored (and do not latch).
//!
//! Options: `ports=0x80,0x2e8` (the default; e.g. add `0x3f8` when the
//! hypervisor emulates no UART for the guest).

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{inb, inl, inw, outb, outl, outw};
use basalt_test_guests::{Checks, arg, println};

basalt_test_guests::entry!(main);

const DEFAULT_PORTS: &str = "0x80,0x2e8";

fn parse_port(text: &str) -> Option<u16> {
    match text.strip_prefix("0x") {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn check_reads(checks: &mut Checks, port: u16, when: &str) {
    let (b, w, l) = (inb(port), inw(port), inl(port));
    println!("port {port:#x} {when}: inb {b:#04x}, inw {w:#06x}, inl {l:#010x}");
    checks.check(
        b == 0xff && w == 0xffff && l == 0xffff_ffff,
        format_args!("reads of unhandled port {port:#x} {when} return all ones"),
    );
}

fn main(cmdline: &str) -> u32 {
    let mut checks = Checks::new();
    let ports = arg(cmdline, "ports").unwrap_or(DEFAULT_PORTS);
    for text in ports.split(',').filter(|t| !t.is_empty()) {
        let Some(port) = parse_port(text) else {
            println!("io: {text:?} is not a port number; skipped");
            continue;
        };
        check_reads(&mut checks, port, "before writes");
        outb(port, 0x5a);
        outw(port, 0x1234);
        outl(port, 0xdead_beef);
        println!("port {port:#x}: wrote 0x5a, 0x1234, 0xdeadbeef (must be ignored)");
        check_reads(&mut checks, port, "after writes");
    }
    checks.finish()
}
