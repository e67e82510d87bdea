//! ACPI discovery through the `acpi` crate (docs/smp.md): CPUs, I/O APICs,
//! interrupt overrides (MADT), HPET and MCFG. What the MADT means is decided
//! by `basalt_platform::topology` (pure, host-tested).
//!
//! Missing or broken ACPI is never fatal: Basalt says why and runs on the
//! boot CPU alone.

use crate::mm;
use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use basalt_boot::multiboot2::Rsdp;
use basalt_platform::topology::{IoApic, Override, ProcessorEntry, Topology};
use core::ptr::NonNull;
use log::{info, warn};

/// Maps ACPI tables through the direct map (extended on demand for tables
/// outside the RAM regions the firmware listed).
#[derive(Debug, Clone, Copy)]
struct DirectMapHandler;

impl AcpiHandler for DirectMapHandler {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = mm::map_phys_for_read(physical_address as u64, size as u64);
        let ptr = NonNull::new(virt as *mut T).unwrap_or(NonNull::dangling());
        // SAFETY: `virt` maps `size` bytes at `physical_address` for reading
        // for the rest of Basalt's life (the direct map is never torn down).
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// What ACPI told Basalt.
#[derive(Debug)]
pub struct Platform {
    /// CPUs, I/O APICs, overrides.
    pub topology: Topology,
    /// The local APIC address the MADT gives.
    pub local_apic_address: u64,
    /// HPET registers, when there is an HPET.
    pub hpet: Option<u64>,
    /// PCI Express configuration regions (MCFG entries).
    pub mcfg_regions: usize,
}

/// Why ACPI could not be used.
#[derive(Debug)]
pub enum AcpiFailure {
    /// No RSDP from the loader and none in the BIOS areas.
    NoRsdp,
    /// The tables could not be read.
    Tables(acpi::AcpiError),
    /// No MADT.
    NoMadt(acpi::AcpiError),
}

impl core::fmt::Display for AcpiFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoRsdp => write!(
                f,
                "no ACPI RSDP (none from the boot loader, none in the BIOS areas): the firmware has \
                 no ACPI or it is disabled (e.g. QEMU -no-acpi)"
            ),
            Self::Tables(e) => write!(
                f,
                "the ACPI root table is unreadable ({e:?}): broken firmware tables"
            ),
            Self::NoMadt(e) => write!(
                f,
                "no usable ACPI MADT ({e:?}), so the CPUs cannot be listed"
            ),
        }
    }
}

fn tables(rsdp: Option<Rsdp>) -> Result<AcpiTables<DirectMapHandler>, AcpiFailure> {
    if let Some(r) = rsdp.filter(|r| r.valid) {
        let (revision, address) = match r.xsdt_address {
            Some(xsdt) if r.revision >= 2 && xsdt != 0 => (r.revision, xsdt as usize),
            _ => (0, r.rsdt_address as usize),
        };
        // SAFETY: the address comes from a checksummed RSDP copy; the
        // handler maps whatever physical range the crate asks for.
        return unsafe { AcpiTables::from_rsdt(DirectMapHandler, revision, address) }
            .map_err(AcpiFailure::Tables);
    }
    // SAFETY: the BIOS areas (EBDA and 0xE0000-0xFFFFF) are read through the
    // direct map, extended on demand.
    unsafe { AcpiTables::search_for_rsdp_bios(DirectMapHandler) }.map_err(|e| match e {
        acpi::AcpiError::NoValidRsdp => AcpiFailure::NoRsdp,
        other => AcpiFailure::Tables(other),
    })
}

/// Reads the ACPI tables for a boot CPU with APIC id `boot_apic_id`.
pub fn discover(
    rsdp: Option<Rsdp>,
    boot_apic_id: u32,
    maxcpus: Option<usize>,
) -> Result<Platform, AcpiFailure> {
    let tables = tables(rsdp)?;
    crate::power::learn(power_info(&tables));
    let mut names = crate::StackString::<160>::new();
    for header in tables.headers() {
        names.push_fmt(format_args!("{} ", header.signature));
    }
    info!(
        "ACPI {}: tables {}",
        if tables.revision() == 0 {
            "1.0"
        } else {
            "2.0+"
        },
        names.as_str()
    );

    let madt = tables.find_table::<Madt>().map_err(AcpiFailure::NoMadt)?;
    let local_apic_address = u64::from(madt.get().local_apic_address);
    let entries = || madt.get().entries();
    let processors = entries().filter_map(|e| match e {
        MadtEntry::LocalApic(l) => Some(ProcessorEntry {
            apic_id: u32::from(l.apic_id),
            flags: l.flags,
        }),
        MadtEntry::LocalX2Apic(x) => Some(ProcessorEntry {
            apic_id: x.x2apic_id,
            flags: x.flags,
        }),
        _ => None,
    });
    let mut topology = Topology::new(processors, boot_apic_id, maxcpus);
    for e in entries() {
        match e {
            MadtEntry::IoApic(io) => topology.add_ioapic(IoApic {
                id: io.io_apic_id,
                address: io.io_apic_address,
                gsi_base: io.global_system_interrupt_base,
            }),
            MadtEntry::InterruptSourceOverride(o) => topology.add_override(Override {
                irq: o.irq,
                gsi: o.global_system_interrupt,
                flags: o.flags,
            }),
            _ => {}
        }
    }
    let hpet = hpet_address(&tables);
    let mcfg_regions = tables
        .find_table::<Mcfg>()
        .map(|m| m.get().entries().len())
        .unwrap_or(0);
    Ok(Platform {
        topology,
        local_apic_address,
        hpet,
        mcfg_regions,
    })
}

/// The HPET's register address, read from the raw table (the `acpi` crate's
/// `HpetInfo::new` asserts on a table that points outside system memory).
fn hpet_address(tables: &AcpiTables<DirectMapHandler>) -> Option<u64> {
    let table = tables.find_table::<acpi::hpet::HpetTable>().ok()?;
    let phys = table.physical_start() as u64;
    let bytes: [u8; 56] = mm::phys_bytes(phys, 56)?;
    // Generic address structure at offset 40: address space 0 = memory.
    if bytes[40] != 0 {
        warn!("ACPI: the HPET is not in memory space; ignored");
        return None;
    }
    Some(u64::from_le_bytes(bytes[44..52].try_into().ok()?))
}

/// Logs what was found.
pub fn log_platform(p: &Platform) {
    let t = &p.topology;
    info!(
        "ACPI MADT: {} CPUs to run (APIC ids {:?}), local APIC at {:#x}",
        t.cpus().len(),
        t.cpus(),
        p.local_apic_address
    );
    if t.disabled + t.over_maxcpus + t.over_limit > 0 {
        info!(
            "ACPI MADT: {} CPUs disabled by firmware, {} left out by maxcpus=, {} over the limit of {}",
            t.disabled,
            t.over_maxcpus,
            t.over_limit,
            basalt_platform::topology::MAX_CPUS
        );
    }
    if t.boot_cpu_unlisted {
        warn!("ACPI MADT does not list the boot CPU; using it anyway");
    }
    for io in t.ioapics() {
        info!(
            "ACPI MADT: I/O APIC {} at {:#x}, GSIs from {}",
            io.id, io.address, io.gsi_base
        );
    }
    for o in t.overrides() {
        info!(
            "ACPI MADT: ISA IRQ {} -> GSI {} (flags {:#x})",
            o.irq, o.gsi, o.flags
        );
    }
    match p.hpet {
        Some(a) => info!("ACPI: HPET at {a:#x}"),
        None => info!("ACPI: no HPET"),
    }
    info!(
        "ACPI: {} PCI Express configuration regions (MCFG)",
        p.mcfg_regions
    );
}

/// How to turn the machine off and reset it, from the FADT and the DSDT's
/// `\_S5_` (docs/control-domain.md, "dom0's end").
fn power_info(tables: &AcpiTables<DirectMapHandler>) -> crate::power::PowerInfo {
    use acpi::address::AddressSpace;
    let mut info = crate::power::PowerInfo::default();
    let Ok(fadt) = tables.find_table::<acpi::fadt::Fadt>() else {
        return info;
    };
    let port = |a: acpi::address::GenericAddress| {
        (a.address_space == AddressSpace::SystemIo)
            .then(|| u16::try_from(a.address).ok())
            .flatten()
    };
    info.pm1a_cnt = fadt.pm1a_control_block().ok().and_then(port);
    info.pm1b_cnt = fadt.pm1b_control_block().ok().flatten().and_then(port);
    info.pm_tmr = fadt.pm_timer_block().ok().flatten().and_then(port);
    let flags = fadt.flags;
    if flags.supports_system_reset_via_fadt() {
        info.reset = fadt
            .reset_register()
            .ok()
            .and_then(port)
            .map(|p| (p, { fadt.reset_value }));
    }
    if let Ok(dsdt) = tables.dsdt()
        && mm::map_phys_for_read(dsdt.address as u64, u64::from(dsdt.length)) != 0
        && let Some(aml) = mm::phys_slice(dsdt.address as u64, dsdt.length as usize)
    {
        info.s5 = basalt_platform::power::s5_sleep_types(aml);
    }
    info
}
