//! The control domain's view of the host's PCI configuration mechanism #1
//! (ports 0xCF8 and 0xCFC-0xCFF; PCI Local Bus Specification 3.0,
//! §3.2.2.3.2), trapped and forwarded to the host through [`HostConfig`]
//! (docs/control-domain.md, "PCI configuration").
//!
//! * CONFIG_ADDRESS is dom0's own latch: only a 32-bit access to 0xCF8
//!   reaches it (bits 1:0 and the reserved bits 30:24 read as zero, so AMD's
//!   extended-register bits never reach the host). Any other access within
//!   0xCF8-0xCFB (except a byte at 0xCF9, the reset control register, which
//!   is not this model's: [`PciPass::handles`] leaves it to the caller) reads
//!   all ones and is dropped, never forwarded: on chipsets with configuration
//!   mechanism #2 those bytes would open an untrapped configuration window
//!   at ports 0xC000-0xCFFF.
//! * A data access at 0xCFC + n (size 1, 2 or 4, not crossing 0xCFF) with
//!   the enable bit set reaches (bus, device, function, register + n) of the
//!   host; with the bit clear it reads all ones and writes are dropped.
//! * MSI-X (capability 0x11) is dom0's on the first [`MSIX_FUNCTIONS`]
//!   functions that show it ([`msix`]); on others it is hidden: the
//!   capabilities pointer (0x34, 0x14 on a CardBus bridge, only when the
//!   status register's capabilities-list bit is set) and each visible
//!   capability's next pointer read as the next capability dom0 may see,
//!   whatever the width of the read that covers them. The host's chain is walked for that, at most
//!   [`MAX_CAPS`] entries, pointers masked to dwords and at least 0x40, a
//!   revisited entry ending it, as Linux's own walk does. Reads of a hidden
//!   capability's own bytes return the host's (dom0 cannot reach them by the
//!   chain, and reading them changes nothing); writes touching any of its
//!   bytes are dropped, so dom0 never enables MSI-X on such a device.
//! * MSI (capability 0x05; PCI 3.0 §6.8.1) is visible, its message control,
//!   address, upper address and data registers dom0's own: a shadow per
//!   function (at most [`MSI_SLOTS`] functions; slot n is host vector
//!   [`MSI_VECTOR_BASE`] + n) that dom0 reads back. Multiple Message Capable
//!   reads as 0 (one message). While dom0's enable bit is set the device
//!   holds the host message (fixed, edge, the slot's vector to the boot
//!   CPU), never dom0's; the host interrupt is then raised with dom0's
//!   message ([`PciPass::message`]). Other bytes of the capability
//!   (per-vector mask and pending bits) pass through. A function beyond the
//!   table's [`MSI_SLOTS`] gets no shadow: its MSI stays disabled.
//! * Writes to a BAR or expansion-ROM register are forwarded and reported
//!   ([`PciEventKind::BarWritten`]), except while the device's MSI-X is
//!   enabled (Basalt's binding of dom0's) (dropped: its table stays where it is trapped); writes to the host bridge 00:00.0 other
//!   than to its command/status dword are dropped and reported (its other
//!   registers remap memory Basalt owns: SMRAM, PAM, TOLUD).

use crate::pci::ones;
pub use crate::pci::{CONFIG_ADDRESS, CONFIG_DATA};
pub use msix::{MSIX_ENTRIES, MSIX_FUNCTIONS};
/// The chipset's reset control register, a byte port inside CONFIG_ADDRESS.
pub const RESET_CONTROL: u16 = 0xCF9;
/// The longest capability chain walked (Linux's `PCI_FIND_CAP_TTL`).
pub const MAX_CAPS: usize = 48;
/// Capability id of MSI.
pub const CAP_MSI: u8 = 0x05;
/// Capability id of MSI-X.
pub const CAP_MSIX: u8 = 0x11;
/// Functions whose MSI dom0 may use.
pub const MSI_SLOTS: usize = 32;
/// The host vector of MSI slot n is this + n (0x50-0x6F, docs/smp.md).
pub const MSI_VECTOR_BASE: u8 = 0x50;
/// Host messages: MSI slots, then MSI-X entries ([`PciPass::message`]), on
/// vectors [`MSI_VECTOR_BASE`] + index.
pub const MESSAGES: usize = MSI_SLOTS + MSIX_FUNCTIONS * MSIX_ENTRIES;

const ENABLE: u32 = 0x8000_0000;
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);

/// The host's configuration space, one function's register at a time.
pub trait HostConfig {
    /// Reads `size` (1, 2 or 4) bytes at `reg` (< 0x100, within one dword)
    /// of function `bdf` (bus 15:8, device 7:3, function 2:0).
    fn read(&mut self, bdf: u16, reg: u16, size: u8) -> u32;
    /// Writes `size` bytes of `value` at `reg` of function `bdf`.
    fn write(&mut self, bdf: u16, reg: u16, size: u8, value: u32);
    /// Whether the host page at `page` is device memory dom0 may reach
    /// (what its first touch would map, uncached), where an MSI-X table may
    /// be trapped.
    fn device_page(&mut self, page: u64) -> bool;
    /// Reads (`write` `None`: the value is returned) or writes `size` (1, 2,
    /// 4 or 8, aligned) bytes of host memory at `addr`, in a page
    /// [`Self::device_page`] accepted.
    fn mem(&mut self, addr: u64, size: u8, write: Option<u64>) -> u64;
}

/// What a write did that the caller should log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciEventKind {
    /// A write covering a BAR or expansion-ROM register was forwarded.
    BarWritten,
    /// A write to the host bridge outside its command/status dword was dropped.
    BridgeWriteDropped,
    /// A write touching a hidden MSI-X capability was dropped.
    HiddenWriteDropped,
    /// dom0 set its MSI-X enable bit; the table was found in device memory
    /// and is trapped, in the host pages `[start, end)`.
    MsixTrapped {
        /// The first page.
        start: u64,
        /// The end of the last.
        end: u64,
    },
    /// dom0 set its MSI-X enable bit, but the table is not in device memory
    /// (a reserved BIR, an I/O or unassigned BAR): the device's stays clear.
    MsixRefused,
    /// A BAR write to a function whose MSI-X is on was dropped.
    BarFrozen,
    /// A write to an MSI capability was dropped: every MSI slot is taken.
    MsiRefused,
    /// dom0's MSI enable bit changed: the device was programmed.
    MsiEnabled(bool),
}

/// A write the caller should log: what happened, and the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciEvent {
    /// What happened.
    pub kind: PciEventKind,
    /// The function written (bus 15:8, device 7:3, function 2:0).
    pub bdf: u16,
    /// The register offset.
    pub reg: u16,
    /// The access size.
    pub size: u8,
    /// The value dom0 wrote.
    pub value: u32,
}

/// dom0's view of one function's MSI registers: control (2 bytes), address
/// (4), upper address (4), data (2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MsiShadow {
    bdf: Option<u16>,
    regs: [u8; 12],
}

impl MsiShadow {
    fn control(&self) -> u16 {
        u16::from_le_bytes([self.regs[0], self.regs[1]])
    }
}

/// dom0's configuration-mechanism state: its CONFIG_ADDRESS latch and MSI
/// shadows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciPass {
    address: u32,
    msi: [MsiShadow; MSI_SLOTS],
    /// The boot CPU's APIC id; until set, no device gets MSI enabled.
    dest: Option<u8>,
    msix: [msix::Msix; MSIX_FUNCTIONS],
    /// Set when a function is first refused an MSI-X slot: its bdf, until
    /// the caller takes it to report it.
    pub msix_full: Option<Option<u16>>,
}

impl Default for PciPass {
    fn default() -> Self {
        Self::new()
    }
}

impl PciPass {
    /// The state after reset: the address latch clear, no MSI shadow.
    pub const fn new() -> Self {
        const NONE: MsiShadow = MsiShadow {
            bdf: None,
            regs: [0; 12],
        };
        PciPass {
            address: 0,
            msi: [NONE; MSI_SLOTS],
            dest: None,
            msix: [msix::Msix::NEW; MSIX_FUNCTIONS],
            msix_full: None,
        }
    }

    /// Host MSIs go to APIC id `dest` (physical).
    pub fn set_msi_destination(&mut self, dest: u8) {
        self.dest = Some(dest);
    }

    /// dom0's message (address, data) for MSI slot `slot`, if its enable
    /// bit is set.
    pub(super) fn msi_message(&self, slot: usize) -> Option<(u64, u32)> {
        let m = self.msi.get(slot).filter(|m| m.control() & 1 != 0)?;
        let r = &m.regs;
        let lo = u32::from_le_bytes([r[2], r[3], r[4], r[5]]);
        let hi = u32::from_le_bytes([r[6], r[7], r[8], r[9]]);
        let data = u16::from_le_bytes([r[10], r[11]]);
        Some((u64::from(hi) << 32 | u64::from(lo), u32::from(data)))
    }

    fn slot_of(&self, bdf: u16) -> Option<usize> {
        self.msi.iter().position(|m| m.bdf == Some(bdf))
    }

    /// Whether an access of `size` bytes at `port` is this model's: any in
    /// 0xCF8-0xCFF except a byte at [`RESET_CONTROL`].
    pub fn handles(port: u16, size: u8) -> bool {
        (CONFIG_ADDRESS..=CONFIG_DATA + 3).contains(&port) && !(port == RESET_CONTROL && size == 1)
    }

    /// The function and register a data access of `size` bytes at `port`
    /// reaches, if the latch is enabled and the access stays in the window.
    fn target(&self, port: u16, size: u8) -> Option<(u16, u16)> {
        let fits = |o: &u16| matches!(size, 1 | 2 | 4) && o + u16::from(size) <= 4;
        let offset = port.checked_sub(CONFIG_DATA).filter(fits)?;
        let reg = (self.address & 0xFC) as u16 + offset;
        (self.address & ENABLE != 0).then_some(((self.address >> 8) as u16, reg))
    }

    /// Reads `size` bytes at `port` (a function's first walk that meets
    /// MSI-X may take an MSI-X slot).
    pub fn read(&mut self, host: &mut impl HostConfig, port: u16, size: u8) -> u32 {
        if port == CONFIG_ADDRESS && size == 4 {
            return self.address;
        }
        let Some((bdf, reg)) = self.target(port, size) else {
            return ones(size);
        };
        let mut value = host.read(bdf, reg, size);
        let end = reg + u16::from(size);
        if !(reg..end).any(|r| r == 0x14 || r == 0x34 || r > 0x40) {
            return value;
        }
        let Some(mut chain) = Chain::walk(host, bdf) else {
            return value;
        };
        let x = self.msix_slot(&mut chain, bdf);
        // Table Size capped; Enable and Function Mask dom0's.
        let size = (chain.msix.1 & 0x7FF).min(MSIX_ENTRIES as u16 - 1);
        let control = x.map(|x| (size | self.msix[x].control).to_le_bytes());
        let shadow = self.slot_of(bdf).map(|s| self.msi[s].regs);
        for r in reg..end {
            let at_msix = r.wrapping_sub(u16::from(chain.msix.0) + 2);
            let byte = match (chain.pointer(r), chain.msi_index(r), control) {
                (Some(ptr), ..) => ptr,
                (_, _, Some(c)) if at_msix < 2 => c[usize::from(at_msix)],
                // Multiple Message Capable and the extended-data bits read
                // as 0; 64-bit and per-vector masking are the host's.
                (_, Some(i), _) => {
                    let mine = shadow.map_or(0, |s| s[i]);
                    let (host_bits, dom0_bits) =
                        [(0x80, 0x71), (0x01, 0)].get(i).unwrap_or(&(0, 0xFF));
                    let host = (value >> (8 * (r - reg))) as u8;
                    host & host_bits | mine & dom0_bits
                }
                _ => continue,
            };
            let shift = 8 * (r - reg);
            value = (value & !(0xFF << shift)) | (u32::from(byte) << shift);
        }
        value
    }

    /// Writes `size` bytes of `value` at `port`; says what the caller should log.
    pub fn write(
        &mut self,
        host: &mut impl HostConfig,
        port: u16,
        size: u8,
        value: u32,
    ) -> Option<PciEvent> {
        if port == CONFIG_ADDRESS && size == 4 {
            self.address = value & 0x80FF_FFFC;
            return None;
        }
        let (bdf, reg) = self.target(port, size)?;
        let end = reg + u16::from(size);
        let event = |kind| {
            Some(PciEvent {
                kind,
                bdf,
                reg,
                size,
                value,
            })
        };
        if bdf == 0 && reg & !3 != 0x04 {
            return event(PciEventKind::BridgeWriteDropped);
        }
        let mut chain = if end > 0x40 {
            Chain::walk(host, bdf)
        } else {
            None
        };
        let x = chain.as_mut().and_then(|c| self.msix_slot(c, bdf));
        if chain.as_ref().is_some_and(|c| c.hides(reg, end)) {
            return event(PciEventKind::HiddenWriteDropped);
        }
        if let (Some(c), Some(x)) = (&chain, x) {
            let at = u16::from(c.msix.0);
            if reg < at + 12 && end > at {
                let k = (at + 3).wrapping_sub(reg);
                let high = (k < u16::from(size)).then(|| (value >> (8 * k)) as u8);
                return self.msix_config_write(host, c, x, high).and_then(event);
            }
        }
        if let Some(c) = chain.filter(|c| (reg..end).any(|r| c.msi_index(r).is_some())) {
            return self
                .msi_write(host, &c, bdf, reg, size, value)
                .and_then(event);
        }
        // PCI 3.0 §6.2.5 (type 0), PCI-to-PCI Bridge 1.2 §3.2 (type 1).
        let bars: &[(u16, u16)] = match (reg < 0x3C).then(|| host.read(bdf, 0x0E, 1) & 0x7F) {
            Some(0) => &[(0x10, 0x28), (0x30, 0x34)],
            Some(1) => &[(0x10, 0x18), (0x38, 0x3C)],
            _ => &[],
        };
        let bar = bars.iter().any(|&(lo, hi)| reg < hi && end > lo);
        // The MSI-X table stays where it is trapped while the device's
        // MSI-X is on (not dom0's bit: after a reset Linux restores BARs).
        if bar && self.msix.iter().any(|m| m.bdf == Some(bdf)) {
            let c = Chain::walk(host, bdf);
            if c.is_some_and(|c| host.read(bdf, u16::from(c.msix.0) + 2, 2) & 0x8000 != 0) {
                return event(PciEventKind::BarFrozen);
            }
        }
        host.write(bdf, reg, size, value);
        event(PciEventKind::BarWritten).filter(|_| bar)
    }
}

impl PciPass {
    /// dom0 writes `size` bytes of `value` at `reg`, some in `bdf`'s MSI
    /// shadow: those go there, the rest to the host a byte at a time; then
    /// the device's MSI follows dom0's enable bit.
    fn msi_write(
        &mut self,
        host: &mut impl HostConfig,
        c: &Chain,
        bdf: u16,
        reg: u16,
        size: u8,
        value: u32,
    ) -> Option<PciEventKind> {
        let free = || self.msi.iter().position(|m| m.bdf.is_none());
        let Some(slot) = self.slot_of(bdf).or_else(free) else {
            return Some(PciEventKind::MsiRefused);
        };
        let m = &mut self.msi[slot];
        let was = m.bdf.is_some() && m.control() & 1 != 0;
        m.bdf = Some(bdf);
        for (k, r) in (reg..reg + u16::from(size)).enumerate() {
            let byte = (value >> (8 * k)) as u8;
            match c.msi_index(r) {
                Some(i) => m.regs[i] = byte,
                None => host.write(bdf, r, 1, u32::from(byte)),
            }
        }
        let on = m.control() & 1 != 0;
        let (cap, is64) = (u16::from(c.msi.0), c.msi.1 & 0x80 != 0);
        match self.dest.filter(|_| on) {
            Some(dest) => {
                // The message first, then enable: one message (Multiple
                // Message Enable 0), nothing else dom0 chose.
                host.write(bdf, cap + 4, 4, 0xFEE0_0000 | u32::from(dest) << 12);
                if is64 {
                    host.write(bdf, cap + 8, 4, 0);
                }
                let data = MSI_VECTOR_BASE as u32 + slot as u32;
                host.write(bdf, cap + if is64 { 12 } else { 8 }, 2, data);
                host.write(bdf, cap + 2, 2, 1);
            }
            None => host.write(bdf, cap + 2, 2, 0),
        }
        (on != was).then_some(PciEventKind::MsiEnabled(on))
    }
}

/// A function's capability chain as the host has it, loops cut: each
/// entry's offset and, for a hidden one, the bytes it spans (else 0).
struct Chain {
    start: u16,
    caps: [(u8, u16); MAX_CAPS],
    len: usize,
    /// The first MSI capability's offset and message control (0: none).
    msi: (u8, u16),
    /// The first MSI-X capability's, hidden until [`Chain::show_msix`].
    msix: (u8, u16),
}

impl Chain {
    /// `None` for an absent function or one without a capabilities list.
    fn walk(host: &mut impl HostConfig, bdf: u16) -> Option<Chain> {
        let command_status = host.read(bdf, 0x04, 4);
        if command_status == u32::MAX || command_status & STATUS_CAP_LIST == 0 {
            return None;
        }
        let cardbus = host.read(bdf, 0x0E, 1) & 0x7F == 2;
        let start = if cardbus { 0x14 } else { 0x34 };
        let (mut caps, mut len, mut seen) = ([(0, 0); MAX_CAPS], 0, 0u64);
        let (mut msi, mut msix) = ((0, 0), (0, 0));
        let mut ptr = host.read(bdf, start, 1) as u8 & 0xFC;
        while len < MAX_CAPS && ptr >= 0x40 && seen & (1 << ((ptr - 0x40) / 4)) == 0 {
            seen |= 1 << ((ptr - 0x40) / 4);
            let header = host.read(bdf, u16::from(ptr), 4);
            // PCI 3.0 §6.8.2: MSI-X's header, table and PBA registers.
            caps[len] = match header as u8 {
                0xFF => break,
                CAP_MSIX if msix.0 == 0 => {
                    msix = (ptr, (header >> 16) as u16);
                    (ptr, 12)
                }
                CAP_MSIX => (ptr, 12),
                CAP_MSI if msi.0 == 0 => {
                    msi = (ptr, (header >> 16) as u16);
                    (ptr, 0)
                }
                _ => (ptr, 0),
            };
            len += 1;
            ptr = (header >> 8) as u8 & 0xFC;
        }
        Some(Chain {
            start,
            caps,
            len,
            msi,
            msix,
        })
    }

    /// Makes the first MSI-X capability visible.
    fn show_msix(&mut self) {
        let at = self.msix.0;
        if let Some(c) = self.caps.iter_mut().find(|c| c.0 == at) {
            c.1 = 0;
        }
    }

    /// The index in an MSI shadow of dom0's byte at `reg`, if it is one of
    /// the MSI registers (PCI 3.0 §6.8.1: control at +2, address at +4,
    /// then upper address and data, or data alone without 64-bit).
    fn msi_index(&self, reg: u16) -> Option<usize> {
        let o = reg
            .checked_sub(u16::from(self.msi.0))
            .filter(|_| self.msi.0 != 0)?;
        let is64 = self.msi.1 & 0x80 != 0;
        let i = match o {
            2..=7 => o - 2,
            8..=13 if is64 => o - 2,
            8..=9 => o + 2,
            _ => return None,
        };
        Some(usize::from(i))
    }

    /// The first visible capability from index `i` on, as a pointer (0: none).
    fn visible_from(&self, i: usize) -> u8 {
        self.caps[i..self.len]
            .iter()
            .find(|c| c.1 == 0)
            .map_or(0, |c| c.0)
    }

    /// What dom0 reads at `reg` if it is one of the chain's visible pointers.
    fn pointer(&self, reg: u16) -> Option<u8> {
        if reg == self.start {
            return Some(self.visible_from(0));
        }
        let caps = &self.caps[..self.len];
        let i = caps
            .iter()
            .position(|c| c.1 == 0 && u16::from(c.0) + 1 == reg)?;
        Some(self.visible_from(i + 1))
    }

    /// Whether the bytes `reg..end` touch a hidden capability.
    fn hides(&self, reg: u16, end: u16) -> bool {
        let at = |c: &(u8, u16)| u16::from(c.0);
        self.caps[..self.len]
            .iter()
            .any(|c| c.1 > 0 && reg < at(c) + c.1 && end > at(c))
    }
}

mod msix;
#[cfg(test)]
mod tests;
