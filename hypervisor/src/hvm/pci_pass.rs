//! The control domain's PCI configuration accesses (docs/control-domain.md,
//! "PCI configuration"): its port exits at 0xCF8-0xCFF go through
//! `basalt_devices::pci_pass`, which keeps its CONFIG_ADDRESS latch, shadows
//! MSI and MSI-X and refuses host-bridge writes, and forwards the rest to
//! the host's configuration mechanism #1 here. dom0's accesses to the pages
//! of a trapped MSI-X table come here too (`mmio::emulate_absent`).
//!
//! One lock holds both dom0's latch and the host's ports: a forwarded access
//! is the host's CONFIG_ADDRESS write followed by its data access, and no
//! other CPU's access may come between the two. Nothing else in Basalt
//! touches the host's 0xCF8 or 0xCFC-0xCFF.

use super::vdev::IoEffect;
use crate::arch::x86_64::io;
use basalt_devices::pci_pass::{CONFIG_ADDRESS, CONFIG_DATA, HostConfig, PciEventKind, PciPass};
use basalt_paging::MapFlags;
use log::Level;
use spin::Mutex;

/// The host's mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2); only reachable
/// through [`STATE`]'s lock.
pub struct HostConf1;

impl HostConf1 {
    /// Latches `bdf`/`reg` in the host's CONFIG_ADDRESS; the data port of `reg`.
    fn select(bdf: u16, reg: u16) -> u16 {
        debug_assert!(reg < 0x100);
        let address = 0x8000_0000 | u32::from(bdf) << 8 | u32::from(reg & 0xFC);
        // SAFETY: CONFIG_ADDRESS only selects a register; the lock held by
        // every caller keeps the selection until the data access.
        unsafe { io::write(CONFIG_ADDRESS, 4, address) };
        CONFIG_DATA + (reg & 3)
    }
}

// A configuration read has no effect on memory (`pci_pass` reads what dom0
// reads, and header and capability bytes). dom0 owns the machine's devices
// and could program them for DMA anywhere anyway (no IOMMU, said at boot);
// `pci_pass` has refused the writes that could hurt Basalt through
// configuration space itself (host bridge; an MSI or MSI-X entry gets only
// Basalt's host message). Memory is reached only in the device pages
// `device_page` accepted, which dom0 could map itself.
impl HostConfig for HostConf1 {
    fn read(&mut self, bdf: u16, reg: u16, size: u8) -> u32 {
        let port = Self::select(bdf, reg);
        // SAFETY: a configuration read, above.
        unsafe { io::read(port, size) }
    }

    fn write(&mut self, bdf: u16, reg: u16, size: u8, value: u32) {
        let port = Self::select(bdf, reg);
        // SAFETY: a configuration write `pci_pass` let through, above.
        unsafe { io::write(port, size, value) }
    }

    // Device memory dom0 may map, uncached (`pci_pass` also wants 1 MiB up).
    fn device_page(&mut self, page: u64) -> bool {
        super::passthrough::device_flags(page).is_some_and(|f| f.contains(MapFlags::UNCACHEABLE))
    }

    fn mem(&mut self, addr: u64, size: u8, write: Option<u64>) -> u64 {
        // `pci_pass` names only such pages; checked again: nothing else is
        // reached from here.
        if !self.device_page(addr & !0xfff) {
            return u64::MAX;
        }
        let p = crate::mm::map_mmio(addr, u64::from(size));
        // SAFETY (each arm): `p` maps `addr`, in a device page dom0 could
        // map itself, uncached; `pci_pass` aligns the access to its size.
        match size {
            // SAFETY: as above.
            1 => unsafe { volatile(p, write.map(|v| v as u8)) },
            // SAFETY: as above.
            2 => unsafe { volatile(p, write.map(|v| v as u16)) },
            // SAFETY: as above.
            4 => unsafe { volatile(p, write.map(|v| v as u32)) },
            // SAFETY: as above.
            _ => unsafe { volatile(p, write) },
        }
    }
}

/// One volatile access of a `T` at Basalt's address `p`.
///
/// # Safety
///
/// `p` maps device memory, aligned for `T`, that may be read and written.
unsafe fn volatile<T: Into<u64>>(p: u64, write: Option<T>) -> u64 {
    match write {
        // SAFETY: the caller's.
        Some(v) => unsafe { (p as *mut T).write_volatile(v) },
        // SAFETY: the caller's.
        None => return unsafe { (p as *const T).read_volatile() }.into(),
    }
    0
}

/// dom0's latch and the host's ports, under one lock.
static STATE: Mutex<(PciPass, HostConf1)> = Mutex::new((PciPass::new(), HostConf1));

/// Runs `f` on dom0's state and the host's ports, under the lock (not in
/// interrupt context): the MSI destination (`pirq::init`), messages
/// (`pirq::deliver`), the trapped MSI-X pages (`passthrough`, `mmio`).
pub fn with<R>(f: impl FnOnce(&mut PciPass, &mut HostConf1) -> R) -> R {
    let (pass, host) = &mut *STATE.lock();
    f(pass, host)
}

/// dom0's view of the pages of the trapped MSI-X tables.
pub struct Table;

impl basalt_x86emul::Mmio for Table {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        with(|p, h| p.msix_io(h, gpa, size, None))
    }
    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        with(|p, h| p.msix_io(h, gpa, size, Some(value)));
    }
}

/// Whether function `bdf` answers on the host (its vendor id is not all
/// ones).
pub fn present(bdf: u16) -> bool {
    STATE.lock().1.read(bdf, 0, 2) != 0xffff
}

/// Whether dom0's access of `size` bytes at `port` is this module's (not a
/// byte at 0xCF9, the reset control register).
pub fn handles(port: u16, size: u8) -> bool {
    PciPass::handles(port, size)
}

/// dom0 reads `size` bytes at `port`.
pub fn io_in(port: u16, size: u8) -> u32 {
    let (pass, host) = &mut *STATE.lock();
    let value = pass.read(host, port, size);
    if let Some(bdf) = pass.msix_full.as_mut().and_then(Option::take) {
        log::warn!("dom0: PCI {bdf:#06x} (bus:devfn): MSI-X hidden, all slots are taken");
    }
    value
}

/// dom0 writes `size` bytes of `value` at `port`; a trapped MSI-X table's
/// pages must leave its stage 2 (mapped if it touched them before).
pub fn io_out(port: u16, size: u8, value: u32) -> IoEffect {
    let Some(e) = with(|pass, host| pass.write(host, port, size, value)) else {
        return IoEffect::None;
    };
    // Linux sizes every function's BARs, the host bridge's included.
    let probe = (0x10..0x28).contains(&e.reg) || e.reg == 0x30;
    let (level, what) = match e.kind {
        PciEventKind::BarWritten => (Level::Debug, "BAR written"),
        PciEventKind::HiddenWriteDropped => (Level::Warn, "dropped: MSI-X hidden (no slot)"),
        PciEventKind::MsixTrapped { .. } => (Level::Info, "MSI-X enabled, its table trapped"),
        PciEventKind::MsixRefused => (Level::Warn, "MSI-X left off: table not in device memory"),
        PciEventKind::BarFrozen => (Level::Warn, "dropped: BAR of a function with MSI-X on"),
        PciEventKind::MsiRefused => (
            Level::Warn,
            "dropped: every MSI slot is taken, MSI stays off",
        ),
        PciEventKind::MsiEnabled(true) => (Level::Info, "MSI enabled, on a host vector"),
        PciEventKind::MsiEnabled(false) => (Level::Info, "MSI disabled"),
        PciEventKind::BridgeWriteDropped if probe => (Level::Debug, "dropped: host bridge"),
        PciEventKind::BridgeWriteDropped => (Level::Warn, "dropped: host bridge, could remap RAM"),
    };
    let (bus, dev, func) = (e.bdf >> 8, (e.bdf >> 3) & 0x1F, e.bdf & 7);
    let (reg, size, value) = (e.reg, e.size, e.value);
    log::log!(
        level,
        "dom0: PCI {bus:02x}:{dev:02x}.{func} [{reg:#04x}/{size}] <- {value:#x}: {what}"
    );
    match e.kind {
        PciEventKind::MsixTrapped { start, end } => IoEffect::Unmap(start, end),
        _ => IoEffect::None,
    }
}
