//! MSI-X for the control domain (PCI 3.0 §6.8.2; docs/control-domain.md,
//! "MSI-X"): the capability of the first [`MSIX_FUNCTIONS`] functions that
//! show one is dom0's (a slot each, taken at the first walk of the chain
//! that meets it, for good); on the others it stays hidden.
//!
//! * **Message Control**: Table Size reads as the host's, at most
//!   [`MSIX_ENTRIES`] entries; Enable and Function Mask are dom0's; other
//!   writes to the capability are dropped. When dom0 writes Enable set while
//!   the device's is clear (dom0's was, or a reset cleared it), the table
//!   is looked up in its BAR (Table BIR and offset) and, if all its pages are
//!   device memory, trapped: those pages are emulated instead of mapped, and
//!   the host entries get Basalt's message (entry e of slot f: vector
//!   0x70 + f·[`MSIX_ENTRIES`] + e, fixed, edge, to the boot
//!   CPU; host entries beyond those dom0 sees are masked). The device's
//!   Enable follows dom0's while the table is trapped, its Function Mask
//!   dom0's; Basalt writes only the high byte of its Message Control.
//! * **The table**: dom0's entries are a shadow it reads back; its Vector
//!   Control mask bit also goes to the host entry. Host entries beyond
//!   [`MSIX_ENTRIES`] read 0 and drop writes; other bytes of the trapped
//!   pages (the PBA, the device's registers) are the host's. An access that
//!   is not naturally aligned reads all ones and is dropped.
//! * The table stays trapped where it was found until it is looked up
//!   again; while the device's Enable is set, its BAR writes are dropped.

use super::{Chain, HostConfig, MSI_SLOTS, MSI_VECTOR_BASE, PciEventKind, PciPass};

/// Functions whose MSI-X dom0 may use.
pub const MSIX_FUNCTIONS: usize = 8;
/// Table entries dom0 sees per function, at most.
pub const MSIX_ENTRIES: usize = 4;

const ENABLE: u16 = 1 << 15;
const FUNCTION_MASK: u16 = 1 << 14;

/// One function's MSI-X as dom0 has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Msix {
    pub(super) bdf: Option<u16>,
    /// dom0's Enable and Function Mask bits.
    pub(super) control: u16,
    /// The host table's address and entries, while trapped (else 0, 0).
    table: (u64, u64),
    /// dom0's entries: address, upper address, data, vector control.
    entries: [[u8; 16]; MSIX_ENTRIES],
}

impl Msix {
    /// No function; entries masked, as after reset.
    pub(super) const NEW: Msix = Msix {
        bdf: None,
        control: 0,
        table: (0, 0),
        entries: [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]; MSIX_ENTRIES],
    };

    /// The host pages holding the trapped table.
    fn pages(&self) -> core::ops::Range<u64> {
        let (at, n) = self.table;
        at & !0xFFF..(at + 16 * n).next_multiple_of(4096)
    }
}

impl PciPass {
    /// The MSI-X slot of `bdf`, taken if free, when `c` has MSI-X; it then
    /// shows in `c`. The first function refused one is left in
    /// [`PciPass::msix_full`] for the caller to report.
    pub(super) fn msix_slot(&mut self, c: &mut Chain, bdf: u16) -> Option<usize> {
        (c.msix.0 != 0).then_some(())?;
        let mine = self.msix.iter().position(|m| m.bdf == Some(bdf));
        let Some(s) = mine.or_else(|| self.msix.iter().position(|m| m.bdf.is_none())) else {
            self.msix_full.get_or_insert(Some(bdf));
            return None;
        };
        self.msix[s].bdf = Some(bdf);
        c.show_msix();
        Some(s)
    }

    /// dom0 wrote to the MSI-X capability of slot `s`, `high` at Message
    /// Control's high byte if it covered it: only Enable and Function Mask
    /// count; the device follows.
    pub(super) fn msix_config_write(
        &mut self,
        host: &mut impl HostConfig,
        c: &Chain,
        s: usize,
        high: Option<u8>,
    ) -> Option<PciEventKind> {
        let (bdf, at, m) = (self.msix[s].bdf?, u16::from(c.msix.0), &mut self.msix[s]);
        m.control = high.map_or(m.control, |h| u16::from(h & 0xC0) << 8);
        // Bound (again) whenever dom0 sets Enable while the device's is
        // clear: dom0's was, or a reset (FLR) cleared it and its entries.
        let bind = m.control & ENABLE != 0 && host.read(bdf, at + 2, 2) & 0x8000 == 0;
        if bind {
            self.msix_bind(host, c, s, bdf);
        }
        let m = &self.msix[s];
        let bound = m.control & ENABLE != 0 && m.table.1 != 0;
        let control = if bound { m.control >> 8 } else { 0 };
        host.write(bdf, at + 3, 1, control.into());
        let (start, end) = (m.pages().start, m.pages().end);
        match (bind, bound) {
            (true, true) => Some(PciEventKind::MsixTrapped { start, end }),
            (true, false) => Some(PciEventKind::MsixRefused),
            _ => None,
        }
    }

    /// Finds slot `s`'s table in its BAR and, if it is all in device
    /// memory, traps it and gives every host entry Basalt's message.
    fn msix_bind(&mut self, host: &mut impl HostConfig, c: &Chain, s: usize, bdf: u16) {
        self.msix[s].table = (0, 0);
        let (Some(dest), Some(at)) = (self.dest, table_address(host, bdf, c.msix.0.into())) else {
            return;
        };
        let n = u64::from(c.msix.1 & 0x7FF) + 1;
        let mut pages = (at & !0xFFF..at + 16 * n).step_by(4096);
        if !pages.all(|p| host.device_page(p)) {
            return;
        }
        // Enabled, all masked (Function Mask), while the messages change.
        let all_masked = u32::from((ENABLE | FUNCTION_MASK) >> 8);
        host.write(bdf, u16::from(c.msix.0) + 3, 1, all_masked);
        self.msix[s].table = (at, n);
        for e in 0..n {
            let a = at + 16 * e;
            let Some(entry) = self.msix[s].entries.get(e as usize) else {
                host.mem(a + 12, 4, Some(1));
                continue;
            };
            // Vector 0x70 + 4 · slot + entry, after MSI's (docs/smp.md).
            let vector = u64::from(MSI_VECTOR_BASE) + (MSI_SLOTS + s * MSIX_ENTRIES) as u64 + e;
            host.mem(a, 4, Some(0xFEE0_0000 | u64::from(dest) << 12));
            host.mem(a + 4, 4, Some(0));
            host.mem(a + 8, 4, Some(vector));
            host.mem(a + 12, 4, Some(u64::from(entry[12] & 1)));
        }
    }

    /// Whether host address `addr` is in a page of a trapped MSI-X table.
    pub fn msix_traps(&self, addr: u64) -> bool {
        self.msix.iter().any(|m| m.pages().contains(&addr))
    }

    /// dom0 reads (`w` `None`; the value returned) or writes (`w`) `size`
    /// bytes at host address `a`, in a trapped page; `h` is the host.
    pub fn msix_io(&mut self, h: &mut impl HostConfig, a: u64, size: u8, w: Option<u64>) -> u64 {
        let aligned = matches!(size, 1 | 2 | 4 | 8) && a.is_multiple_of(u64::from(size));
        let s = self.msix.iter().position(|m| m.pages().contains(&a));
        let Some(s) = s.filter(|_| aligned) else {
            return u64::MAX;
        };
        let (at, n) = self.msix[s].table;
        let Some(o) = a.checked_sub(at).filter(|o| *o < 16 * n) else {
            return h.mem(a, size, w);
        };
        let (e, o, len) = (o / 16, (o % 16) as usize, usize::from(size));
        // A host entry beyond dom0's reads 0 and ignores writes.
        let Some(entry) = self.msix[s].entries.get_mut(e as usize) else {
            return 0;
        };
        let Some(value) = w else {
            let bytes = entry[o..o + len].iter().rev();
            return bytes.fold(0, |v, b| v << 8 | u64::from(*b));
        };
        for (k, b) in entry[o..o + len].iter_mut().enumerate() {
            *b = (value >> (8 * k)) as u8;
        }
        if o + len > 12 {
            h.mem(at + 16 * e + 12, 4, Some(u64::from(entry[12] & 1)));
        }
        0
    }

    /// dom0's message (address, data) of host message `index` (on vector
    /// [`MSI_VECTOR_BASE`] + `index`), if enabled: MSI slot `index`, or
    /// MSI-X entry `index` - [`MSI_SLOTS`] (slot · [`MSIX_ENTRIES`] + entry;
    /// enabled: its Enable set and its table trapped).
    pub fn message(&self, index: usize) -> Option<(u64, u32)> {
        let Some(i) = index.checked_sub(MSI_SLOTS) else {
            return self.msi_message(index);
        };
        let m = self.msix.get(i / MSIX_ENTRIES)?;
        let x = &m.entries[i % MSIX_ENTRIES];
        let dword = |i: usize| u32::from_le_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
        let on = m.control & ENABLE != 0 && m.table.1 != 0;
        on.then(|| (u64::from(dword(4)) << 32 | u64::from(dword(0)), dword(8)))
    }
}

/// The host address of the MSI-X table of `bdf`, its capability at `cap`
/// (PCI 3.0 §6.8.2.4): the memory BAR that Table BIR names plus the offset.
/// `None` for a BIR beyond the header's BARs, an I/O or below-1-MiB BAR, a
/// 64-bit BAR in the last register, an unassigned (0) BAR, or a table below
/// 1 MiB or that could reach 2^46.
fn table_address(host: &mut impl HostConfig, bdf: u16, cap: u16) -> Option<u64> {
    let t = host.read(bdf, cap + 4, 4);
    let kind = host.read(bdf, 0x0E, 1) as usize & 0x7F;
    let bars = [6, 2].get(kind).copied().unwrap_or(0);
    let mut bar = |i: u32| (i < bars).then(|| host.read(bdf, 0x10 + 4 * i as u16, 4));
    let lo = bar(t & 7).filter(|lo| lo & 3 == 0)?;
    let hi = if lo & 4 != 0 { bar((t & 7) + 1)? } else { 0 };
    let base = u64::from(hi) << 32 | u64::from(lo & !0xF);
    let at = base.checked_add(u64::from(t & !7))?;
    (base != 0 && (1 << 20..(1 << 46) - 16 * 2048).contains(&at)).then_some(at)
}
