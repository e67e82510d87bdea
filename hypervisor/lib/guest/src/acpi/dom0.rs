//! The control domain's firmware view: its ACPI tables and its e820 map
//! (docs/control-domain.md, "dom0's ACPI tables and e820").
//!
//! dom0's memory is identity-mapped (guest-physical = host-physical), so the host's own tables
//! (FADT, FACS, DSDT, SSDTs, ...) are valid for it as they are. [`write_dom0_acpi_tables`]
//! writes only what must differ, from a 64-byte aligned address:
//!
//! ```text
//! at + 0x00  RSDP  36 bytes, revision 2, the host RSDP's OEM id, XSDT address
//! at + 0x40  XSDT  the host's root-table entries but [`DROPPED_TABLES`], then the new MADT
//! next 16    MADT  dom0's vCPUs, Basalt's I/O APIC, the host's source overrides
//! ```
//!
//! [`dom0_memmap`] builds dom0's e820 from the host's map: host RAM dom0 owns stays RAM, the
//! rest (Basalt's memory, the guests' pool) becomes reserved, and the pages of these tables
//! become ACPI data.

use super::{
    AcpiConfig, AcpiError, PIT_OVERRIDE, SDT_HEADER_SIZE, SourceOverride, Table, align16,
    madt_bytes, place, write_madt, write_rsdp,
};
use crate::mem::GuestMemory;
use crate::start_info::{
    MEMMAP_TYPE_ACPI, MEMMAP_TYPE_NVS, MEMMAP_TYPE_RAM, MEMMAP_TYPE_RESERVED, MEMMAP_TYPE_UNUSABLE,
    MemmapEntry, PAGE_SIZE,
};
use core::fmt;

/// The host's tables dom0's XSDT leaves out, and why:
///
/// - `APIC`: replaced by dom0's MADT (its vCPUs and Basalt's emulated I/O APIC, not the host's
///   CPUs and I/O APICs, which Basalt keeps);
/// - `HPET`: the HPET is Basalt's (dom0 has the emulated PIT and local APIC timers);
/// - `DMAR`, `IVRS`: the IOMMUs (Intel, AMD) are Basalt's to program, not dom0's;
/// - `MCFG`: PCI configuration is trapped only on ports 0xCF8/0xCFC, so dom0 must not find the
///   memory-mapped (ECAM) window, where its BAR and MSI writes would pass unseen;
/// - `SRAT`, `SLIT`: they place the host's CPUs (by APIC id) and memory in NUMA nodes; dom0's
///   vCPU APIC ids do not name those CPUs (Xen's PVH dom0 does not get them either).
pub const DROPPED_TABLES: [&[u8; 4]; 7] = [
    b"APIC", b"HPET", b"DMAR", b"IVRS", b"MCFG", b"SRAT", b"SLIT",
];

/// One entry of the host's XSDT (or RSDT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostTable {
    /// The table's signature.
    pub signature: [u8; 4],
    /// Its physical address.
    pub address: u64,
}

/// What dom0's tables take from the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostAcpi<'a> {
    /// The host RSDP's OEM id.
    pub oem_id: [u8; 6],
    /// The host's root-table entries, in order.
    pub tables: &'a [HostTable],
    /// The host MADT's interrupt source overrides.
    pub overrides: &'a [SourceOverride],
}

impl HostAcpi<'_> {
    fn kept_tables(&self) -> impl Iterator<Item = &HostTable> {
        self.tables
            .iter()
            .filter(|t| !DROPPED_TABLES.contains(&&t.signature))
    }

    /// [`PIT_OVERRIDE`] (dom0's PIT is Basalt's, on pin 2, whatever the host wires), then the
    /// host's overrides but those of IRQ 0 or to GSI 2.
    fn overrides(&self) -> impl Iterator<Item = SourceOverride> + '_ {
        let host = self.overrides.iter().copied();
        core::iter::once(PIT_OVERRIDE).chain(host.filter(|o| o.irq != 0 && o.gsi != 2))
    }
}

/// Where [`write_dom0_acpi_tables`] put each table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dom0AcpiLayout {
    /// The RSDP: dom0's `hvm_start_info.rsdp_paddr`.
    pub rsdp: u64,
    /// The XSDT.
    pub xsdt: u64,
    /// The MADT.
    pub madt: u64,
    /// First byte used (= `rsdp`).
    pub start: u64,
    /// One past the last byte used.
    pub end: u64,
}

const XSDT_OFFSET: u64 = 0x40;

fn madt_offset(host: &HostAcpi<'_>) -> u64 {
    align16(XSDT_OFFSET + SDT_HEADER_SIZE + 8 * (host.kept_tables().count() as u64 + 1))
}

/// Bytes [`write_dom0_acpi_tables`] uses from a 64-byte aligned `at`.
pub fn dom0_acpi_size(config: &AcpiConfig, host: &HostAcpi<'_>) -> u64 {
    madt_offset(host) + madt_bytes(config.vcpus, host.overrides().count())
}

/// Writes dom0's RSDP, XSDT and MADT from `at` rounded up to 64 bytes (see the module
/// documentation); the MADT describes `config.vcpus` vCPUs (processor UID = APIC id = vCPU id,
/// as Xen does) and the I/O APIC `config.ioapic_id`. Nothing is written unless the whole range
/// fits in `mem`.
pub fn write_dom0_acpi_tables(
    mem: &mut impl GuestMemory,
    at: u64,
    config: &AcpiConfig,
    host: &HostAcpi<'_>,
) -> Result<Dom0AcpiLayout, AcpiError> {
    let size = dom0_acpi_size(config, host);
    let start = place(mem, at, size, config, u64::MAX)?;
    let (xsdt, madt) = (start + XSDT_OFFSET, start + madt_offset(host));
    mem.fill(start, size, 0)?;
    write_rsdp(mem, start, &host.oem_id, xsdt)?;
    let mut t = Table::new(mem, xsdt, b"XSDT", 1)?;
    for table in host.kept_tables() {
        t.u64(table.address)?;
    }
    t.u64(madt)?;
    t.finish()?;
    let end = write_madt(mem, madt, config, host.overrides())?;
    Ok(Dom0AcpiLayout {
        rsdp: start,
        xsdt,
        madt,
        start,
        end,
    })
}

/// Why dom0's e820 could not be built. Every one is a bug in the domain builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dom0MemmapError {
    /// dom0's RAM range `[.0, .1)` is empty, unaligned or out of order.
    BadRam(u64, u64),
    /// The host map is not sorted, disjoint and without empty regions at the region `.0`.
    HostMapUnsorted(u64),
    /// dom0's RAM `[.0, .1)` (up to the end of its range) is not host usable RAM.
    RamNotUsable(u64, u64),
    /// The ACPI tables' pages `[.0, .1)` are not page-aligned inside one of dom0's RAM ranges.
    TablesOutsideRam(u64, u64),
    /// The map needs more entries than the output holds (`.0`).
    TooManyEntries(usize),
}

impl fmt::Display for Dom0MemmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadRam(start, end) => write!(
                f,
                "dom0's RAM range [0x{start:x}, 0x{end:x}) is empty, unaligned or out of order: \
                 pass sorted, disjoint, page-aligned ranges"
            ),
            Self::HostMapUnsorted(start) => write!(
                f,
                "the host memory map is not sorted and disjoint at 0x{start:x}: pass the \
                 normalised map"
            ),
            Self::RamNotUsable(start, end) => write!(
                f,
                "dom0's RAM [0x{start:x}, 0x{end:x}) is not host usable RAM: take dom0's RAM only \
                 from usable regions"
            ),
            Self::TablesOutsideRam(start, end) => write!(
                f,
                "dom0's ACPI tables [0x{start:x}, 0x{end:x}) are not whole pages of dom0's RAM: \
                 place them in its RAM"
            ),
            Self::TooManyEntries(capacity) => write!(
                f,
                "dom0's e820 needs more than {capacity} entries: give a larger table"
            ),
        }
    }
}

/// Appends `[start, end)` of `kind` to `out[..*n]`, merged with the last entry when adjacent
/// and of the same kind.
fn push(
    out: &mut [MemmapEntry],
    n: &mut usize,
    (start, end, kind): (u64, u64, u32),
) -> Result<(), Dom0MemmapError> {
    if let Some(last) = n.checked_sub(1).and_then(|i| out.get_mut(i))
        && last.kind == kind
        && last.addr + last.size == start
    {
        last.size += end - start;
        return Ok(());
    }
    let capacity = out.len();
    *out.get_mut(*n)
        .ok_or(Dom0MemmapError::TooManyEntries(capacity))? = MemmapEntry {
        addr: start,
        size: end - start,
        kind,
    };
    *n += 1;
    Ok(())
}

/// dom0's e820 into `out`; returns the number of entries (sorted, disjoint, adjacent entries of
/// one type merged). `host` is the host's map as `(start, end, e820 type)`, sorted and
/// disjoint; `ram` is dom0's RAM, sorted, disjoint, page-aligned `(start, end)` ranges, all
/// host usable RAM; `tables` the pages of [`write_dom0_acpi_tables`]' output, inside `ram`.
///
/// Host usable RAM in `ram` is RAM (but `tables`: ACPI), outside it reserved (Basalt's memory
/// and the guests' pool); ACPI data, ACPI NVS and bad memory keep their type; any other type
/// is reserved. Ranges the host map does not list stay unlisted.
pub fn dom0_memmap<I>(
    host: I,
    ram: &[(u64, u64)],
    tables: (u64, u64),
    out: &mut [MemmapEntry],
) -> Result<usize, Dom0MemmapError>
where
    I: IntoIterator<Item = (u64, u64, u32)> + Clone,
{
    let ((p, q), mut n, mut prev) = (tables, 0, 0);
    for (start, end, kind) in host.clone() {
        if start < prev || end <= start {
            return Err(Dom0MemmapError::HostMapUnsorted(start));
        }
        let mut at = start;
        prev = end;
        while at < end {
            let (kind, next) = if kind != MEMMAP_TYPE_RAM {
                let keep = matches!(
                    kind,
                    MEMMAP_TYPE_ACPI | MEMMAP_TYPE_NVS | MEMMAP_TYPE_UNUSABLE
                );
                (if keep { kind } else { MEMMAP_TYPE_RESERVED }, end)
            } else if let Some(&(_, e)) = ram.iter().find(|&&(s, e)| s <= at && at < e) {
                match at {
                    _ if p <= at && at < q => (MEMMAP_TYPE_ACPI, q),
                    _ if at < p => (MEMMAP_TYPE_RAM, e.min(p)),
                    _ => (MEMMAP_TYPE_RAM, e),
                }
            } else {
                let next_ram = ram.iter().map(|r| r.0).find(|&s| s > at);
                (MEMMAP_TYPE_RESERVED, next_ram.unwrap_or(end))
            };
            let next = next.min(end);
            push(out, &mut n, (at, next, kind))?;
            at = next;
        }
    }
    prev = 0;
    for &(start, end) in ram {
        if end <= start || (start | end) % PAGE_SIZE != 0 || start < prev {
            return Err(Dom0MemmapError::BadRam(start, end));
        }
        prev = end;
        let mut at = start;
        for (s, e, kind) in host.clone() {
            if kind == MEMMAP_TYPE_RAM && s <= at && at < e {
                at = e;
            }
        }
        if at < end {
            return Err(Dom0MemmapError::RamNotUsable(at, end));
        }
    }
    if p >= q || (p | q) % PAGE_SIZE != 0 || !ram.iter().any(|&(s, e)| s <= p && q <= e) {
        return Err(Dom0MemmapError::TablesOutsideRam(p, q));
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
