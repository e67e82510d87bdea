//! VMX instructions in a guest raise #UD: the hypervisor hides VMX (and
//! CR4.VMXE is clear). VMXON first, then the other VMX instructions (the
//! hypervisor sees most of them as VM exits and must inject #UD).
//!
//! Options: `all=0` tests VMXON only.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{self, UD, show_unit};
use basalt_test_guests::{Checks, arg_u64, println};
use core::arch::asm;

basalt_test_guests::entry!(main);

/// A 4 KiB-aligned page standing for a VMXON region / VMCS.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut REGION: Page = Page([0; 4096]);

/// The memory operand of the instructions below: the region's address (as
/// VMXON, VMCLEAR and VMPTRLD read it), and room for INVEPT's and INVVPID's
/// 16-byte descriptors.
#[repr(C, align(16))]
struct Operand([u64; 2]);

/// Runs one VMX instruction given as bytes, with RAX = `operand` and RCX = 0.
macro_rules! vmx {
    ($operand:expr, $len:literal, $bytes:literal) => {{
        let operand: *mut Operand = $operand;
        let f = || {
            // SAFETY: with VMX hidden this raises #UD; were it to run, it
            // would only read or write the 16-byte operand (or RCX), which
            // the asm block declares.
            unsafe {
                asm!(
                    $bytes,
                    inout("rax") operand => _,
                    inout("rcx") 0u64 => _,
                    options(nostack),
                )
            }
        };
        // SAFETY: `f` is the one instruction `$bytes`, `$len` bytes long.
        unsafe { cpu::checked($len, f) }
    }};
}

fn main(cmdline: &str) -> u32 {
    let mut checks = Checks::new();
    let region = core::ptr::addr_of_mut!(REGION) as u64;

    let result = cpu::vmxon_checked(region);
    println!("VMXON [{region:#x}]: {}", show_unit(result));
    if result.is_ok() {
        // Somehow in VMX operation: leave it again before anything else.
        let mut operand = Operand([region, 0]);
        let _ = vmx!(&mut operand, 3, ".byte 0x0f, 0x01, 0xc4");
    }
    checks.check(result == Err(UD), format_args!("VMXON raises #UD"));

    if arg_u64(cmdline, "all", 1) != 0 {
        let mut operand = Operand([region, 0]);
        let op = &mut operand as *mut Operand;
        let others: [(&str, Result<(), u8>); 11] = [
            ("VMXOFF", vmx!(op, 3, ".byte 0x0f, 0x01, 0xc4")),
            ("VMCLEAR [rax]", vmx!(op, 4, ".byte 0x66, 0x0f, 0xc7, 0x30")),
            ("VMPTRLD [rax]", vmx!(op, 3, ".byte 0x0f, 0xc7, 0x30")),
            ("VMPTRST [rax]", vmx!(op, 3, ".byte 0x0f, 0xc7, 0x38")),
            ("VMREAD rcx, rax", vmx!(op, 3, ".byte 0x0f, 0x78, 0xc1")),
            ("VMWRITE rax, rcx", vmx!(op, 3, ".byte 0x0f, 0x79, 0xc1")),
            ("VMLAUNCH", vmx!(op, 3, ".byte 0x0f, 0x01, 0xc2")),
            ("VMRESUME", vmx!(op, 3, ".byte 0x0f, 0x01, 0xc3")),
            (
                "INVEPT rcx, [rax]",
                vmx!(op, 5, ".byte 0x66, 0x0f, 0x38, 0x80, 0x08"),
            ),
            (
                "INVVPID rcx, [rax]",
                vmx!(op, 5, ".byte 0x66, 0x0f, 0x38, 0x81, 0x08"),
            ),
            (
                "VMFUNC (eax=0)",
                vmx!(core::ptr::null_mut(), 3, ".byte 0x0f, 0x01, 0xd4"),
            ),
        ];
        for (name, result) in others {
            println!("{name}: {}", show_unit(result));
            checks.check(result == Err(UD), format_args!("{name} raises #UD"));
        }
    }
    checks.finish()
}
