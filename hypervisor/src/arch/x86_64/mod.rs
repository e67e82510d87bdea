//! The x86_64 layer: the only code that touches the processor directly.
//!
//! Every `unsafe` operation on the CPU lives in this module tree behind a safe
//! wrapper whose documentation says why it is safe to call.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod gprs;
pub mod hvm;
pub mod idt;
pub mod io;
pub mod msr;
pub mod percpu;
pub mod smp;
pub mod svm;
pub mod switch;
pub mod vmx;

core::arch::global_asm!(include_str!("entry.S"), options(att_syntax));

unsafe extern "C" {
    static __image_start_phys: u8;
    static __image_end_phys: u8;
}

/// The physical range `[start, end)` the hypervisor image occupies
/// (text, data, bss and boot tables), from the linker script.
pub fn image_phys_range() -> (u64, u64) {
    // Taking the address of a linker symbol reads nothing.
    let start = &raw const __image_start_phys as u64;
    let end = &raw const __image_end_phys as u64;
    (start, end)
}

/// Reads `len` bytes of physical memory below 4 GiB.
///
/// While Basalt runs on its boot page tables, physical memory below 4 GiB is
/// identity-mapped (docs/boot.md). Returns `None` for a range that is not
/// wholly below 4 GiB.
///
/// # Safety
///
/// The range must be memory (not MMIO) that nothing writes while the returned
/// slice lives: boot information and boot modules qualify.
pub unsafe fn boot_phys_slice(phys: u64, len: usize) -> Option<&'static [u8]> {
    let end = phys.checked_add(len as u64)?;
    if phys == 0 || end > 1 << 32 {
        return None;
    }
    // SAFETY: the boot page tables identity-map 0..4 GiB, the range is below
    // 4 GiB and non-null, and the caller guarantees it is stable memory.
    Some(unsafe { core::slice::from_raw_parts(phys as *const u8, len) })
}
