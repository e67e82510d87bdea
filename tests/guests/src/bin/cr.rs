//! Control registers in a guest: CR4 bits a guest may own toggle and read
//! back; CR4.VMXE raises #GP (VMX is hidden); CR0 round trips.
//!
//! Options: `vmxe=0` skips the CR4.VMXE write (QEMU 7.2 TCG hangs on a
//! write of a reserved CR4 bit instead of raising #GP).

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{self, GP, show_unit};
use basalt_test_guests::{Checks, arg_u64, println};

basalt_test_guests::entry!(main);

const CR0_WP: u64 = 1 << 16;
const CR4_DE: u64 = 1 << 3;
const CR4_PGE: u64 = 1 << 7;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_VMXE: u64 = 1 << 13;

/// Sets `bit` in CR4, reads back, clears it, reads back, restores CR4.
fn toggle_cr4(checks: &mut Checks, bit: u64, name: &str) {
    let original = cpu::read_cr4();
    // SAFETY: the bits toggled here (DE, PGE, OSFXSR, OSXMMEXCPT) do not
    // affect code that uses no SSE, debug registers or global pages, and
    // CR4 is restored before returning.
    let set = unsafe { cpu::write_cr4_checked(original | bit) };
    let with = cpu::read_cr4();
    // SAFETY: as above.
    let cleared = unsafe { cpu::write_cr4_checked(original & !bit) };
    let without = cpu::read_cr4();
    // SAFETY: the value read at the start.
    let restored = unsafe { cpu::write_cr4_checked(original) };
    println!(
        "CR4.{name}: set -> {with:#x} ({}), clear -> {without:#x} ({})",
        show_unit(set),
        show_unit(cleared)
    );
    checks.check(
        set.is_ok()
            && cleared.is_ok()
            && restored.is_ok()
            && with & bit != 0
            && without & bit == 0
            && cpu::read_cr4() == original,
        format_args!("CR4.{name} sets, clears and reads back"),
    );
}

fn main(cmdline: &str) -> u32 {
    let mut checks = Checks::new();
    let cr0 = cpu::read_cr0();
    let cr4 = cpu::read_cr4();
    println!("CR0 {cr0:#x} CR3 {:#x} CR4 {cr4:#x}", cpu::read_cr3());

    // SAFETY: writes back the value just read.
    let same = unsafe { cpu::write_cr0_checked(cr0) };
    checks.check(
        same.is_ok() && cpu::read_cr0() == cr0,
        format_args!("CR0 written with its own value reads back the same"),
    );
    // SAFETY: CR0.WP only matters for writes to read-only pages at CPL 0,
    // and the guest maps none; CR0 is restored.
    let wp = unsafe { cpu::write_cr0_checked(cr0 ^ CR0_WP) };
    let toggled = cpu::read_cr0();
    // SAFETY: the value read at the start.
    let back = unsafe { cpu::write_cr0_checked(cr0) };
    println!("CR0.WP toggled: {toggled:#x} ({})", show_unit(wp));
    checks.check(
        wp.is_ok() && back.is_ok() && toggled == cr0 ^ CR0_WP && cpu::read_cr0() == cr0,
        format_args!("CR0.WP toggles and CR0 round trips"),
    );

    toggle_cr4(&mut checks, CR4_OSFXSR, "OSFXSR");
    toggle_cr4(&mut checks, CR4_OSXMMEXCPT, "OSXMMEXCPT");
    toggle_cr4(&mut checks, CR4_DE, "DE");
    toggle_cr4(&mut checks, CR4_PGE, "PGE");

    if arg_u64(cmdline, "vmxe", 1) == 0 {
        println!("vmxe=0: not trying CR4.VMXE");
        return checks.finish();
    }
    // SAFETY: setting VMXE must fault; if it does not, CR4 is restored at
    // once and nothing runs VMX instructions.
    let vmxe = unsafe { cpu::write_cr4_checked(cpu::read_cr4() | CR4_VMXE) };
    let after = cpu::read_cr4();
    println!("set CR4.VMXE: {}, CR4 now {after:#x}", show_unit(vmxe));
    if after & CR4_VMXE != 0 {
        // SAFETY: clears the bit that should never have been set.
        let _ = unsafe { cpu::write_cr4_checked(after & !CR4_VMXE) };
    }
    checks.check(
        vmxe == Err(GP) && after & CR4_VMXE == 0,
        format_args!("setting CR4.VMXE raises #GP and leaves it clear"),
    );
    checks.finish()
}
