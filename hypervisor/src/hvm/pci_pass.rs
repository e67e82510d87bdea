//! The control domain's PCI configuration accesses (docs/control-domain.md,
//! "PCI configuration"): its port exits at 0xCF8-0xCFF go through
//! `basalt_devices::pci_pass`, which keeps its CONFIG_ADDRESS latch, hides
//! MSI-X, shadows MSI and refuses host-bridge writes, and forwards the rest to
//! the host's configuration mechanism #1 here.
//!
//! One lock holds both dom0's latch and the host's ports: a forwarded access
//! is the host's CONFIG_ADDRESS write followed by its data access, and no
//! other CPU's access may come between the two. Nothing else in Basalt
//! touches the host's 0xCF8 or 0xCFC-0xCFF.

use crate::arch::x86_64::io;
use basalt_devices::pci_pass::{CONFIG_ADDRESS, CONFIG_DATA, HostConfig, PciEventKind, PciPass};
use log::Level;
use spin::Mutex;

/// The host's mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2); only reachable
/// through [`STATE`]'s lock.
struct HostConf1;

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
// configuration space itself (host bridge, MSI-X; an MSI gets only Basalt's
// host message).
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
}

/// dom0's latch and the host's ports, under one lock.
static STATE: Mutex<(PciPass, HostConf1)> = Mutex::new((PciPass::new(), HostConf1));

/// Host MSIs go to APIC id `dest` (the boot CPU's; `pirq::init`).
pub fn set_msi_destination(dest: u8) {
    STATE.lock().0.set_msi_destination(dest);
}

/// dom0's MSI message (address, data) of MSI slot `slot`, if enabled.
pub fn msi_message(slot: usize) -> Option<(u64, u32)> {
    STATE.lock().0.msi_message(slot)
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
    pass.read(host, port, size)
}

/// dom0 writes `size` bytes of `value` at `port`.
pub fn io_out(port: u16, size: u8, value: u32) {
    let event = {
        let (pass, host) = &mut *STATE.lock();
        pass.write(host, port, size, value)
    };
    let Some(e) = event else { return };
    // Linux sizes every function's BARs, the host bridge's included.
    let probe = (0x10..0x28).contains(&e.reg) || e.reg == 0x30;
    let (level, what) = match e.kind {
        PciEventKind::BarWritten => (Level::Debug, "BAR written"),
        PciEventKind::HiddenWriteDropped => (Level::Warn, "dropped: MSI-X is not bound yet"),
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
}
