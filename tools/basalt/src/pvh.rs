//! Building a PVH guest from dom0 (`basalt create` with an ELF `kernel`):
//! `basalt-guest`'s builders, as ring 0 runs them for a PVH boot module
//! (hypervisor/src/common/domain.rs, `build`): [`elf::parse`] checks the
//! kernel (ELF64 or ELF32 with Xen's PVH entry note, `XEN_ELFNOTE_PHYS32_ENTRY`)
//! against the memory, [`si::plan_layout`] places the start info and the
//! initrd after the image, [`elf::load`] writes the segments, and
//! [`si::write_start_info`] the `hvm_start_info` with the initrd as its
//! module, the e820 map and the ACPI RSDP (the tables written as for a
//! bzImage, `bzimage.rs`). vCPU 0 then starts at the entry in 32-bit
//! protected mode with EBX = the start info (Xen's PVH boot ABI).

use crate::bzimage::e820;
use basalt_guest::start_info::{self as si, BootModule};
use basalt_guest::{GuestMemory, acpi, elf};

/// The longest command line a definition takes.
pub const CMDLINE_MAX: usize = 2048;

/// An ELF kernel checked against the domain, before it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The kernel's segments and entry.
    pub image: elf::GuestImage,
    /// Where the start info and the initrd go.
    pub layout: si::Layout,
}

/// The start info's module list: the initrd of `size` bytes at `gpa`.
fn modules(initrd_size: u64, gpa: u64) -> Vec<BootModule<'static>> {
    (initrd_size > 0)
        .then_some(BootModule {
            gpa,
            size: initrd_size,
            cmdline: "",
        })
        .into_iter()
        .collect()
}

/// Plans `file` in `memory` bytes with `cmdline` and an initrd of
/// `initrd_size` bytes (0: none).
pub fn plan(file: &[u8], memory: u64, cmdline: &str, initrd_size: u64) -> Result<Plan, String> {
    let image = elf::parse(file, memory).map_err(|e| e.to_string())?;
    let sizes: Vec<u64> = modules(initrd_size, 0).iter().map(|m| m.size).collect();
    let info = si::start_info_size(cmdline, &modules(initrd_size, 0), e820(memory).len());
    let layout = si::plan_layout(&image, memory, &sizes, info).map_err(|e| e.to_string())?;
    Ok(Plan { image, layout })
}

/// Writes the guest into `mem`: ACPI tables, segments, initrd, start info.
/// Returns the entry and the start info's address (EBX).
pub fn load(
    mem: &mut impl GuestMemory,
    plan: &Plan,
    file: &[u8],
    cmdline: &str,
    vcpus: u32,
    initrd: &[u8],
) -> Result<(u64, u64), String> {
    let tables =
        acpi::write_acpi_tables(mem, acpi::GUEST_TABLES_GPA, &acpi::AcpiConfig::new(vcpus))
            .map_err(|e| format!("the ACPI tables: {e}"))?;
    elf::load(&plan.image, file, mem).map_err(|e| e.to_string())?;
    let gpa = plan.layout.initrds().first().map_or(0, |r| r.gpa);
    if !initrd.is_empty() {
        mem.write(gpa, initrd)
            .map_err(|e| format!("the initrd: {e}"))?;
    }
    let info = si::write_start_info(
        mem,
        plan.layout.start_info,
        cmdline,
        &modules(initrd.len() as u64, gpa),
        &e820(mem.size()),
        tables.rsdp,
    )
    .map_err(|e| format!("the start info: {e}"))?;
    Ok((u64::from(plan.image.entry), info.start_info_gpa))
}

#[cfg(test)]
mod tests;
