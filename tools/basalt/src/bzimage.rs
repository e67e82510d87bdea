//! Building a Linux guest from a bzImage in dom0 (`basalt create` with a
//! bzImage `kernel`, docs/toolstack.md "Domain building in dom0"): the plan
//! and the writes are `basalt-guest`'s, the same code ring 0 runs for a
//! bzImage boot module (hypervisor/src/common/domain.rs, `load_linux`), so
//! both lay a guest out alike: the ACPI tables at
//! [`acpi::GUEST_TABLES_GPA`], the e820 map of [`si::guest_memmap`], the
//! protected-mode kernel, `boot_params`, command line, identity page
//! tables and boot GDT of [`linux::load`], the initrd where
//! [`linux::plan_layout`] puts it. Every byte reaches the new domain
//! through [`GuestMemory`], which `main.rs` implements with domain
//! control's `populate`.

use basalt_guest::linux::{self, BootInfo, BzImage, Entry64, LinuxError, LinuxLayout};
use basalt_guest::start_info::{self as si, MemmapEntry};
use basalt_guest::{GuestMemory, acpi};

/// A bzImage checked against the domain: everything that can be refused is
/// refused here, before the domain is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The image's setup header.
    pub kernel: BzImage,
    /// Where everything goes.
    pub layout: LinuxLayout,
}

/// The e820 map of a guest of `memory` bytes (as ring 0 gives one, PVH or Linux).
pub fn e820(memory: u64) -> Vec<MemmapEntry> {
    let mut map = [MemmapEntry::default(); 8];
    let n = si::guest_memmap(memory, &mut map);
    map[..n].to_vec()
}

/// Plans `image` in `memory` bytes with `cmdline` and an initrd of
/// `initrd_size` bytes (0: none).
pub fn plan(
    image: &[u8],
    memory: u64,
    cmdline: &str,
    initrd_size: u64,
) -> Result<Plan, LinuxError> {
    let kernel = linux::parse_bzimage(image)?;
    let layout = linux::plan_layout(&kernel, memory, cmdline.len() as u64, initrd_size)?;
    linux::boot_params(
        &kernel,
        &BootInfo {
            cmdline_gpa: layout.cmdline,
            cmdline,
            initrd_gpa: layout.initrd_gpa,
            initrd_size: layout.initrd_size,
            e820: &e820(memory),
            acpi_rsdp: 0,
        },
    )?;
    Ok(Plan { kernel, layout })
}

/// Writes the guest into `mem`: ACPI tables, kernel and boot information,
/// then the initrd. Returns vCPU 0's state at `startup_64`.
pub fn load(
    mem: &mut impl GuestMemory,
    plan: &Plan,
    image: &[u8],
    cmdline: &str,
    vcpus: u32,
    initrd: &[u8],
) -> Result<Entry64, String> {
    let tables =
        acpi::write_acpi_tables(mem, acpi::GUEST_TABLES_GPA, &acpi::AcpiConfig::new(vcpus))
            .map_err(|e| format!("the ACPI tables: {e}"))?;
    let e820 = e820(mem.size());
    let entry = linux::load(
        mem,
        image,
        &plan.kernel,
        &plan.layout,
        cmdline,
        &e820,
        tables.rsdp,
    )
    .map_err(|e| e.to_string())?;
    if !initrd.is_empty() {
        mem.write(plan.layout.initrd_gpa, initrd)
            .map_err(|e| format!("the initrd: {e}"))?;
    }
    Ok(entry)
}

#[cfg(test)]
mod tests;
