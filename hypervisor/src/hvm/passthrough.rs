//! The control domain owns the machine (docs/control-domain.md, "Memory
//! ownership" and "Ports and device memory"): with its RAM identity-mapped,
//! a host address it touches that is neither its RAM nor a device Basalt
//! keeps is mapped 1:1 on first touch with the type the host's MTRRs give
//! it (write-back only for firmware tables and the legacy ROM area, which
//! are RAM; uncached for device memory the MTRRs call write-back), which
//! dom0's PAT then combines with as on bare metal.

use super::memory::GuestRam;
use basalt_boot::FixedVec;
use basalt_boot::memmap::{MemoryMap, RegionKind};
use basalt_paging::MapFlags;
use basalt_platform::mtrr::{self, Mtrrs};
use spin::Once;

/// What Basalt knows of the host that dom0's pass-through needs.
struct Host {
    /// The firmware's memory map.
    map: MemoryMap,
    /// The HPET's register page (Basalt keeps it).
    hpet: Option<u64>,
    /// PCI Express configuration space (ECAM): configuration is trapped at
    /// ports 0xCF8/0xCFC only, so these ranges stay unmapped.
    ecam: FixedVec<(u64, u64), 8>,
    /// The I/O bases of Basalt's console UARTs (read once: the console
    /// lock is not taken on dom0's port exits).
    uarts: [Option<u16>; 2],
    /// The host's MTRRs.
    mtrrs: Mtrrs,
    /// The register pages of the host's I/O APICs (Basalt's; dom0 has its
    /// emulated one at 0xFEC00000).
    ioapics: FixedVec<u64, 8>,
}

/// The boot CPU's MTRRs (IA32_MTRRCAP 0xFE, IA32_MTRR_DEF_TYPE 0x2FF, the
/// fixed ranges, PHYSBASEn/PHYSMASKn from 0x200; SDM Vol. 3A §12.11.1);
/// without CPUID's MTRR bit, none (everything UC).
fn read_mtrrs() -> Mtrrs {
    use crate::arch::x86_64::msr::read_raw;
    let mut m = Mtrrs::default();
    if crate::arch::x86_64::cpu::cpuid(1).edx & 1 << 12 == 0 {
        return m;
    }
    let cap = read_raw(0xfe);
    m.def_type = read_raw(0x2ff);
    if cap & 1 << 8 != 0 {
        let regs = [
            0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
        ];
        m.fixed = Some(regs.map(read_raw));
    }
    m.count = ((cap & 0xff) as usize).min(mtrr::MAX_VARIABLE);
    for (i, v) in m.variable[..m.count].iter_mut().enumerate() {
        *v = (
            read_raw(0x200 + 2 * i as u32),
            read_raw(0x201 + 2 * i as u32),
        );
    }
    m
}

static HOST: Once<Host> = Once::new();

/// Records the host's memory map and the devices Basalt keeps (boot time,
/// before the domains are built); only when the control domain's RAM is
/// identity-mapped (`mm::dom0_ram`) does it own the machine.
pub fn init(map: &MemoryMap, acpi: Option<&crate::acpi::Platform>) {
    if crate::mm::dom0_ram().is_some() {
        HOST.call_once(|| Host {
            map: *map,
            hpet: acpi.and_then(|a| a.hpet).map(|a| a & !0xfff),
            ecam: acpi.map(|a| a.ecam).unwrap_or_default(),
            uarts: crate::console::uart_bases(),
            mtrrs: read_mtrrs(),
            ioapics: {
                let mut pages = FixedVec::new();
                for io in acpi.map_or(&[][..], |a| a.topology.ioapics()) {
                    let _ = pages.push(u64::from(io.address) & !0xfff);
                }
                pages
            },
        });
        log::warn!(
            "the control domain owns the machine's devices and no IOMMU is in use: its devices \
             can reach all memory by DMA, Basalt's and every domain's included"
        );
    }
}

/// The host's memory map, when the control domain owns the machine.
pub fn host_map() -> Option<&'static MemoryMap> {
    HOST.get().map(|h| &h.map)
}

/// Whether the control domain owns the machine.
pub fn active() -> bool {
    HOST.get().is_some()
}

/// The control domain touched `gpa`, where it has no RAM: maps the host page
/// there 1:1 unless it is host RAM from 1 MiB up (Basalt's or a guest's),
/// the HPET, PCI Express configuration space, a trapped MSI-X table
/// (`pci_pass`), or beyond the stage-2 reach. `true`: retry the access.
pub fn map_absent(ram: &GuestRam, gpa: u64) -> bool {
    let page = gpa & !0xfff;
    let trapped = || super::pci_pass::with(|p, _| p.msix_traps(page));
    device_flags(page).is_some_and(|f| !trapped() && ram.map_page(page, page, f).is_ok())
}

/// How `map_absent` maps host page `page` for the control domain, if it
/// does (not an APIC page; `pci_pass` traps MSI-X tables only where this is
/// uncached).
pub fn device_flags(page: u64) -> Option<MapFlags> {
    let h = HOST.get()?;
    let in_ram = |k: RegionKind| {
        h.map
            .regions()
            .iter()
            .any(|r| r.kind == k && r.start < page + 4096 && page < r.end)
    };
    if Some(page) == h.hpet
        || page >= 1 << 46
        || (page >= 1 << 20 && in_ram(RegionKind::Usable))
        || h.ecam.iter().any(|&(s, e)| (s..e).contains(&page))
        || crate::vcpu::is_device_page(page)
        || h.ioapics.contains(&page)
    {
        return None;
    }
    let ram_like = in_ram(RegionKind::AcpiReclaimable)
        || in_ram(RegionKind::AcpiNvs)
        || (0xc_0000..0x10_0000).contains(&page);
    let cache = match h.mtrrs.type_of(page) {
        mtrr::WB if ram_like => MapFlags::empty(),
        mtrr::WT => MapFlags::WRITE_THROUGH,
        _ => MapFlags::UNCACHEABLE,
    };
    Some(MapFlags::READ | MapFlags::WRITE | MapFlags::GUEST_PAT | cache)
}

/// Ports of devices Basalt emulates for the control domain as for guests:
/// the PICs, the PIT (and port 0x61), the RTC, COM1 and port 0xE9.
pub fn emulated(port: u16) -> bool {
    use basalt_devices::{pic::Pic, pit::Pit, rtc::Rtc};
    Pic::handles(port)
        || Pit::handles(port)
        || Rtc::handles(port)
        || (0x3f8..0x400).contains(&port)
        || port == 0xe9
}

/// Whether `port` is trapped for the control domain without being emulated:
/// PCI configuration, the reset and sleep registers (0xCF9, 0x64, 0x92, the
/// FADT's), the PM timer (emulated from Basalt's clock) and Basalt's console
/// UARTs.
fn kept(port: u16) -> bool {
    let p = crate::power::info();
    p.checked(port) || p.never_written(&uarts(), port)
}

/// The I/O bases of Basalt's console UARTs.
fn uarts() -> [Option<u16>; 2] {
    HOST.get().map(|h| h.uarts).unwrap_or_default()
}

/// Whether `port` is one of the eight registers of Basalt's console UARTs.
fn basalt_uart(port: u16) -> bool {
    uarts()
        .iter()
        .any(|u| u.is_some_and(|b| port.wrapping_sub(b) < 8))
}

/// Opens every port of the host the control domain may reach directly in
/// the I/O bitmap of `vcpu`.
pub fn open_ports(vcpu: &mut crate::vcpu::ArchVcpu) {
    for port in 0..=u16::MAX {
        if !emulated(port) && !kept(port) {
            vcpu.allow_port(port);
        }
    }
}

/// What an OUT by the control domain to a kept port (`!emulated`) does: a
/// reset or sleep request ends it (and so the host, docs/control-domain.md
/// "dom0's end"); others go to the host's port, except Basalt's UARTs and
/// the read-only PM timer.
pub fn io_out(port: u16, size: u8, value: u32) -> super::vdev::IoEffect {
    use super::vdev::IoEffect;
    use basalt_platform::power::Dom0Out;
    if super::pci_pass::handles(port, size) {
        return super::pci_pass::io_out(port, size, value);
    }
    match crate::power::info().dom0_out(&uarts(), port, size, value) {
        Dom0Out::Reset => IoEffect::Reset,
        Dom0Out::PowerOff => IoEffect::PowerOff,
        Dom0Out::Sleep(typ) => {
            log::warn!(
                "d0: ACPI sleep with SLP_TYP {typ} (not S5) refused: Basalt does not suspend the host"
            );
            IoEffect::None
        }
        Dom0Out::Drop => {
            log::debug!(
                "d0: OUT {port:#x}/{size} <- {value:#x} dropped: it reaches a register Basalt keeps"
            );
            IoEffect::None
        }
        Dom0Out::Forward => {
            // SAFETY: the host's ports, whose devices the control domain
            // owns; `dom0_out` kept what Basalt must see.
            unsafe { crate::arch::x86_64::io::write(port, size, value) };
            IoEffect::None
        }
    }
}

/// An IN by the control domain from a kept port: the PM timer counts from
/// Basalt's clock at 3.579545 MHz (24 bits), an access reaching Basalt's
/// UARTs reads all ones, others are the host's.
pub fn io_in(port: u16, size: u8) -> u32 {
    let p = crate::power::info();
    let ones = super::vdev::size_mask(size);
    if Some(port) == p.pm_tmr {
        let ticks = u128::from(crate::time::now_ns()) * 3_579_545 / 1_000_000_000;
        return ticks as u32 & 0xff_ffff & ones;
    }
    // Any byte of Basalt's UARTs (a read could take its console input).
    if (0..u16::from(size)).any(|i| basalt_uart(port.wrapping_add(i))) {
        return ones;
    }
    if super::pci_pass::handles(port, size) {
        return super::pci_pass::io_in(port, size);
    }
    // SAFETY: as in `io_out`.
    unsafe { crate::arch::x86_64::io::read(port, size) }
}
