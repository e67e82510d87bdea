//! Guest-virtual memory access for hypercall arguments: the guest's own page
//! tables are walked (any paging mode: `basalt_x86emul::translate`) through
//! the domain's memory. An address that does not translate fails with
//! EFAULT, as do a range that wraps past 2^64 and, in long mode, one that is
//! not canonical (hardware raises #GP for such an access, so no guest buffer
//! can live there; a walk that ignored bits 63:48 would reach the guest's
//! memory through an alias).

use super::memory::GuestRam;
use crate::vcpu::Loaded;

/// Translates a guest-virtual address to guest-physical.
fn translate(arch: &Loaded<'_>, ram: &GuestRam, gva: u64) -> Result<u64, ()> {
    basalt_x86emul::translate(&super::mmio::Phys(ram), &arch.paging_state(), gva).map_err(|_| ())
}

/// Whether `[gva, gva + len)` is a range a guest access could use: it does
/// not wrap past 2^64; in long mode (EFER.LMA) it lies within one canonical
/// half of the 48-bit address space, otherwise below 4 GiB (a 32-bit
/// linear address would wrap to 0).
fn range_ok(arch: &Loaded<'_>, gva: u64, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let Some(last) = gva.checked_add(len as u64 - 1) else {
        return false;
    };
    if arch.paging_state().efer & (1 << 10) == 0 {
        return last <= u64::from(u32::MAX);
    }
    let canonical = |a: u64| ((a as i64) << 16 >> 16) as u64 == a;
    canonical(gva) && canonical(last) && (gva >> 63) == (last >> 63)
}

/// Reads `out.len()` bytes at guest-virtual `gva`, page by page.
pub fn read_virt(arch: &Loaded<'_>, ram: &GuestRam, gva: u64, out: &mut [u8]) -> Result<(), ()> {
    if !range_ok(arch, gva, out.len()) {
        return Err(());
    }
    let mut done = 0;
    while done < out.len() {
        let at = gva.wrapping_add(done as u64);
        let n = (4096 - (at & 0xfff) as usize).min(out.len() - done);
        let gpa = translate(arch, ram, at)?;
        ram.read(gpa, &mut out[done..done + n]).map_err(|_| ())?;
        done += n;
    }
    Ok(())
}

/// Writes `bytes` at guest-virtual `gva`, page by page.
pub fn write_virt(arch: &Loaded<'_>, ram: &GuestRam, gva: u64, bytes: &[u8]) -> Result<(), ()> {
    if !range_ok(arch, gva, bytes.len()) {
        return Err(());
    }
    let mut done = 0;
    while done < bytes.len() {
        let at = gva.wrapping_add(done as u64);
        let n = (4096 - (at & 0xfff) as usize).min(bytes.len() - done);
        let gpa = translate(arch, ram, at)?;
        ram.write(gpa, &bytes[done..done + n]).map_err(|_| ())?;
        done += n;
    }
    Ok(())
}

/// The guest-physical address of `[gva, gva + len)` when the range is one
/// guest-physical run (within a page, or pages that happen to be adjacent),
/// for an area Basalt writes later without the guest's page tables.
pub fn translate_range(arch: &Loaded<'_>, ram: &GuestRam, gva: u64, len: usize) -> Option<u64> {
    if len == 0 || !range_ok(arch, gva, len) {
        return None;
    }
    let first = translate(arch, ram, gva).ok()?;
    let last = translate(arch, ram, gva + len as u64 - 1).ok()?;
    (last.checked_sub(first) == Some(len as u64 - 1)).then_some(first)
}
