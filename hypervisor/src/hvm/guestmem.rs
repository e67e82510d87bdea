//! Guest-virtual memory access for hypercall arguments: the guest's own page
//! tables are walked (paging off, or 4-level long-mode paging) through the
//! domain's memory. Anything else fails with EFAULT, as do a range that
//! wraps past 2^64 and, in long mode, one that is not canonical (hardware
//! raises #GP for such an access, so no guest buffer can live there; a
//! walk that ignored bits 63:48 would reach the guest's memory through an
//! alias).

use super::memory::GuestRam;
use crate::vcpu::Loaded;

const PRESENT: u64 = 1;
const PS: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Translates a guest-virtual address to guest-physical.
fn translate(arch: &Loaded<'_>, ram: &GuestRam, gva: u64) -> Result<u64, ()> {
    let (cr0, cr3, cr4, efer) = arch.paging_state();
    if cr0 & (1 << 31) == 0 {
        return Ok(gva & 0xffff_ffff);
    }
    // Long mode with 4-level paging only (CR4.PAE, EFER.LMA).
    if cr4 & (1 << 5) == 0 || efer & (1 << 10) == 0 {
        return Err(());
    }
    let mut table = cr3 & ADDR;
    for level in (1..=4u32).rev() {
        let index = (gva >> (12 + 9 * (level - 1))) & 0x1ff;
        let mut entry = [0u8; 8];
        ram.read(table + index * 8, &mut entry).map_err(|_| ())?;
        let entry = u64::from_le_bytes(entry);
        if entry & PRESENT == 0 {
            return Err(());
        }
        if level > 1 && level < 4 && entry & PS != 0 {
            let size = 1u64 << (12 + 9 * (level - 1));
            return Ok((entry & ADDR & !(size - 1)) | (gva & (size - 1)));
        }
        table = entry & ADDR;
    }
    Ok(table | (gva & 0xfff))
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
    let (_, _, _, efer) = arch.paging_state();
    if efer & (1 << 10) == 0 {
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
