//! ACPI discovery through the `acpi` crate (docs/smp.md): CPUs, I/O APICs,
//! interrupt overrides (MADT), HPET and MCFG. What the MADT means is decided
//! by `basalt_platform::topology` (pure, host-tested). It also keeps what
//! dom0's ACPI tables are built from ([`host_tables`]; docs/control-domain.md).
//!
//! Missing or broken ACPI is never fatal: Basalt says why and runs on the
//! boot CPU alone.

use crate::mm;
use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use basalt_boot::FixedVec;
use basalt_boot::multiboot2::Rsdp;
use basalt_guest::acpi::SourceOverride;
use basalt_guest::acpi::dom0::{HostAcpi, HostTable};
use basalt_platform::topology::{IoApic, MAX_OVERRIDES, Override, ProcessorEntry, Topology};
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
    /// PCI Express configuration regions (MCFG entries: the physical
    /// ranges of their buses' configuration space).
    pub ecam: basalt_boot::FixedVec<(u64, u64), 8>,
}

/// Why ACPI could not be used.
#[derive(Debug)]
pub enum AcpiFailure {
    /// No RSDP from the loader and none in the BIOS areas.
    NoRsdp,
    /// Booted through UEFI and the loader passed no RSDP.
    NoRsdpEfi,
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
            Self::NoRsdpEfi => write!(
                f,
                "no ACPI RSDP: the boot loader passed none, and on UEFI Basalt does not search the \
                 BIOS areas; boot with GRUB 2's `multiboot2`, which passes the firmware's"
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

/// The root table's revision (0: RSDT, else XSDT) and address.
fn root_of(r: &Rsdp) -> (u8, u64) {
    match r.xsdt_address {
        Some(xsdt) if r.revision >= 2 && xsdt != 0 => (r.revision, xsdt),
        _ => (0, u64::from(r.rsdt_address)),
    }
}

/// The tables, from the loader's RSDP or else (not on UEFI) one found in
/// the BIOS areas.
fn tables(
    rsdp: Option<Rsdp>,
    efi: bool,
) -> Result<(AcpiTables<DirectMapHandler>, Rsdp), AcpiFailure> {
    let r = match rsdp.filter(|r| r.valid) {
        Some(r) => r,
        None if efi => return Err(AcpiFailure::NoRsdpEfi),
        // SAFETY: the BIOS areas (EBDA and 0xE0000-0xFFFFF) are read through
        // the direct map, extended on demand.
        None => unsafe { acpi::rsdp::Rsdp::search_for_on_bios(DirectMapHandler) }
            .ok()
            .and_then(|m| mm::phys_slice(m.physical_start() as u64, 36))
            .and_then(Rsdp::parse)
            .ok_or(AcpiFailure::NoRsdp)?,
    };
    let (revision, address) = root_of(&r);
    // SAFETY: the address comes from a checksummed RSDP; the handler maps
    // whatever physical range the crate asks for.
    unsafe { AcpiTables::from_rsdt(DirectMapHandler, revision, address as usize) }
        .map_err(AcpiFailure::Tables)
        .map(|t| (t, r))
}

/// How many of the host's root-table entries dom0's XSDT can list.
const MAX_HOST_TABLES: usize = 128;

/// What dom0's ACPI tables take from the host's (`basalt_guest::acpi::dom0`,
/// docs/control-domain.md).
#[derive(Debug, Default)]
pub struct HostTables {
    oem_id: [u8; 6],
    tables: FixedVec<HostTable, MAX_HOST_TABLES>,
    overrides: FixedVec<SourceOverride, MAX_OVERRIDES>,
}

impl HostTables {
    /// The input of `basalt_guest::acpi::dom0::write_dom0_acpi_tables`.
    pub fn acpi(&self) -> HostAcpi<'_> {
        HostAcpi {
            oem_id: self.oem_id,
            tables: &self.tables,
            overrides: &self.overrides,
        }
    }
}

static HOST_TABLES: spin::Once<HostTables> = spin::Once::new();

/// The host's ACPI facts for dom0's tables, once [`discover`] has read them
/// (`None` on a host without usable ACPI).
pub fn host_tables() -> Option<&'static HostTables> {
    HOST_TABLES.get()
}

/// Keeps the RSDP's OEM id, the root table's entries (signature, address)
/// and the MADT's interrupt source overrides for [`host_tables`].
fn keep_host_tables(rsdp: &Rsdp, topology: &Topology) {
    let mut host = HostTables {
        oem_id: rsdp.oem_id,
        ..HostTables::default()
    };
    let (revision, root) = root_of(rsdp);
    let step = if revision == 0 { 4 } else { 8 };
    let len =
        mm::phys_bytes::<8>(root, 8).map_or(0, |h| u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
    mm::map_phys_for_read(root, u64::from(len));
    let entries = mm::phys_slice(root, len as usize).and_then(|t| t.get(36..));
    for entry in entries.unwrap_or(&[]).chunks_exact(step) {
        let address = entry.iter().rev().fold(0, |a, b| a << 8 | u64::from(*b));
        mm::map_phys_for_read(address, 4);
        if let Some(signature) = mm::phys_bytes::<4>(address, 4) {
            let _ = host.tables.push(HostTable { signature, address });
        }
    }
    if host.tables.dropped() > 0 {
        warn!("ACPI: dom0 gets only the first {MAX_HOST_TABLES} root-table entries");
    }
    for o in topology.overrides() {
        let (irq, gsi, flags) = (o.irq, o.gsi, o.flags);
        let _ = host.overrides.push(SourceOverride { irq, gsi, flags });
    }
    HOST_TABLES.call_once(|| host);
}

/// Reads the ACPI tables for a boot CPU with APIC id `boot_apic_id`.
pub fn discover(
    rsdp: Option<Rsdp>,
    efi: bool,
    boot_apic_id: u32,
    maxcpus: Option<usize>,
) -> Result<Platform, AcpiFailure> {
    let (tables, rsdp) = tables(rsdp, efi)?;
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
    keep_host_tables(&rsdp, &topology);
    let hpet = hpet_address(&tables);
    let mut ecam = basalt_boot::FixedVec::new();
    if let Ok(m) = tables.find_table::<Mcfg>() {
        for e in m.get().entries() {
            let buses = u64::from(e.bus_number_end.saturating_sub(e.bus_number_start)) + 1;
            let start = { e.base_address } + (u64::from(e.bus_number_start) << 20);
            let _ = ecam.push((start, start + (buses << 20)));
        }
    }
    Ok(Platform {
        topology,
        local_apic_address,
        hpet,
        ecam,
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
        p.ecam.len()
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
