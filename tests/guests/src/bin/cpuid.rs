//! CPUID as a guest sees it: VMX hidden (leaf 1 ECX bit 5 clear) and
//! Basalt's hypervisor leaf 0x40000000 ("BasaltBasalt", max leaf
//! >= 0x40000000).

#![no_std]
#![no_main]

use basalt_test_guests::cpu::cpuid;
use basalt_test_guests::{Checks, println};

basalt_test_guests::entry!(main);

/// Four little-endian register values as the 4-byte text they spell.
fn text(regs: &[u32]) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    for (chunk, reg) in out.chunks_mut(4).zip(regs) {
        chunk.copy_from_slice(&reg.to_le_bytes());
    }
    (out, regs.len() * 4)
}

fn ascii(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("(not ASCII)")
}

fn main(_cmdline: &str) -> u32 {
    let mut checks = Checks::new();

    let (max, ebx, ecx, edx) = cpuid(0, 0);
    let (vendor, len) = text(&[ebx, edx, ecx]);
    println!(
        "vendor {:?}, max basic leaf {max:#x}",
        ascii(&vendor[..len])
    );

    let (eax1, _, ecx1, _) = cpuid(1, 0);
    println!(
        "leaf 1: eax {eax1:#x} ecx {ecx1:#x} (hypervisor bit 31: {})",
        ecx1 >> 31
    );
    checks.check(
        ecx1 & (1 << 5) == 0,
        format_args!("CPUID.1:ECX.VMX (bit 5) is clear (VMX hidden from guests)"),
    );

    let (hmax, hb, hc, hd) = cpuid(0x4000_0000, 0);
    let (signature, len) = text(&[hb, hc, hd]);
    let signature = &signature[..len];
    println!(
        "leaf 0x40000000: max {hmax:#x}, signature {:?} ({signature:02x?})",
        ascii(signature)
    );
    checks.check(
        signature == b"BasaltBasalt",
        format_args!("hypervisor signature is \"BasaltBasalt\""),
    );
    checks.check(
        hmax >= 0x4000_0000,
        format_args!("hypervisor max leaf {hmax:#x} >= 0x40000000"),
    );
    checks.finish()
}
