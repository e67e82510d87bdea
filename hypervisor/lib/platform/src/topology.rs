//! CPUs, I/O APICs and interrupt overrides from the ACPI MADT (ACPI 6.5
//! §5.2.12), interpreted.
//!
//! Rules:
//! * A processor entry is usable when its "enabled" flag (bit 0) is set, or
//!   its "online capable" flag (bit 1) is set (hot-pluggable CPU present at
//!   boot per firmware). Entries with neither are absent CPUs and skipped.
//! * APIC ids 0xFF in local APIC entries and 0xFFFF_FFFF in x2APIC entries
//!   are not real CPUs. A CPU listed twice (local APIC and x2APIC entry with
//!   the same id) counts once.
//! * The boot CPU is CPU 0 whether or not the MADT lists it first; the others
//!   follow in MADT order.
//! * `maxcpus=N` keeps the first N of that order; CPUs over the compiled-in
//!   maximum are skipped and counted.

/// The most CPUs a [`Topology`] holds.
pub const MAX_CPUS: usize = 256;
/// The most I/O APICs.
pub const MAX_IOAPICS: usize = 16;
/// The most interrupt source overrides.
pub const MAX_OVERRIDES: usize = 32;

/// A processor entry from the MADT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessorEntry {
    /// APIC id (8-bit for local APIC entries, 32-bit for x2APIC entries).
    pub apic_id: u32,
    /// The entry's flags (bit 0 enabled, bit 1 online capable).
    pub flags: u32,
}

/// An I/O APIC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoApic {
    /// I/O APIC id.
    pub id: u8,
    /// Physical address of its registers.
    pub address: u32,
    /// First global system interrupt it serves.
    pub gsi_base: u32,
}

/// An ISA IRQ routed to another global system interrupt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Override {
    /// ISA IRQ.
    pub irq: u8,
    /// Global system interrupt.
    pub gsi: u32,
    /// MPS INTI flags (polarity bits 1:0, trigger mode bits 3:2).
    pub flags: u16,
}

/// What the MADT describes, interpreted.
#[derive(Debug, Clone)]
pub struct Topology {
    cpus: [u32; MAX_CPUS],
    cpu_count: usize,
    /// Disabled CPUs.
    pub disabled: usize,
    /// CPUs left out by `maxcpus=`.
    pub over_maxcpus: usize,
    /// CPUs over [`MAX_CPUS`].
    pub over_limit: usize,
    ioapics: [IoApic; MAX_IOAPICS],
    ioapic_count: usize,
    overrides: [Override; MAX_OVERRIDES],
    override_count: usize,
    /// Whether the boot CPU's APIC id was missing from the MADT (it is
    /// used anyway, as CPU 0).
    pub boot_cpu_unlisted: bool,
}

impl Topology {
    /// Interprets processor entries (in MADT order) for a boot CPU with APIC
    /// id `boot_apic_id`, keeping at most `maxcpus` CPUs (`None`: all).
    pub fn new(
        processors: impl IntoIterator<Item = ProcessorEntry>,
        boot_apic_id: u32,
        maxcpus: Option<usize>,
    ) -> Self {
        let mut t = Self {
            cpus: [0; MAX_CPUS],
            cpu_count: 1,
            disabled: 0,
            over_maxcpus: 0,
            over_limit: 0,
            ioapics: [IoApic::default(); MAX_IOAPICS],
            ioapic_count: 0,
            overrides: [Override::default(); MAX_OVERRIDES],
            override_count: 0,
            boot_cpu_unlisted: true,
        };
        t.cpus[0] = boot_apic_id;
        let limit = maxcpus.unwrap_or(MAX_CPUS).clamp(1, MAX_CPUS);
        let mut seen_other = [0u32; MAX_CPUS];
        let mut seen_count = 0;
        for p in processors {
            if p.apic_id == 0xff || p.apic_id == u32::MAX {
                continue;
            }
            if p.apic_id == boot_apic_id {
                t.boot_cpu_unlisted = false;
                continue;
            }
            if seen_other[..seen_count].contains(&p.apic_id) {
                continue;
            }
            if p.flags & 0b11 == 0 {
                t.disabled += 1;
                continue;
            }
            if seen_count < MAX_CPUS {
                seen_other[seen_count] = p.apic_id;
                seen_count += 1;
            }
            if t.cpu_count >= MAX_CPUS {
                t.over_limit += 1;
            } else if t.cpu_count >= limit {
                t.over_maxcpus += 1;
            } else {
                t.cpus[t.cpu_count] = p.apic_id;
                t.cpu_count += 1;
            }
        }
        t
    }

    /// A topology with the boot CPU only (no ACPI).
    pub fn boot_cpu_only(boot_apic_id: u32) -> Self {
        Self::new([], boot_apic_id, None)
    }

    /// APIC ids of the CPUs to run, the boot CPU first.
    pub fn cpus(&self) -> &[u32] {
        &self.cpus[..self.cpu_count]
    }

    /// Records an I/O APIC (extra ones past [`MAX_IOAPICS`] are dropped).
    pub fn add_ioapic(&mut self, ioapic: IoApic) {
        if let Some(slot) = self.ioapics.get_mut(self.ioapic_count) {
            *slot = ioapic;
            self.ioapic_count += 1;
        }
    }

    /// The I/O APICs.
    pub fn ioapics(&self) -> &[IoApic] {
        &self.ioapics[..self.ioapic_count]
    }

    /// Records an interrupt source override.
    pub fn add_override(&mut self, o: Override) {
        if let Some(slot) = self.overrides.get_mut(self.override_count) {
            *slot = o;
            self.override_count += 1;
        }
    }

    /// The interrupt source overrides.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides[..self.override_count]
    }

    /// The global system interrupt of ISA IRQ `irq` (identity unless overridden).
    #[cfg(test)]
    pub fn isa_gsi(&self, irq: u8) -> u32 {
        self.overrides()
            .iter()
            .find(|o| o.irq == irq)
            .map_or(u32::from(irq), |o| o.gsi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(apic_id: u32, flags: u32) -> ProcessorEntry {
        ProcessorEntry { apic_id, flags }
    }

    #[test]
    fn boot_cpu_first_then_madt_order() {
        let t = Topology::new([p(0, 1), p(1, 1), p(2, 1), p(3, 1)], 2, None);
        assert_eq!(t.cpus(), &[2, 0, 1, 3]);
        assert!(!t.boot_cpu_unlisted);
    }

    #[test]
    fn disabled_and_online_capable() {
        let t = Topology::new([p(0, 1), p(1, 0), p(2, 2), p(3, 0)], 0, None);
        assert_eq!(t.cpus(), &[0, 2]);
        assert_eq!(t.disabled, 2);
    }

    #[test]
    fn maxcpus_limits_and_counts() {
        let entries = (0..8).map(|i| p(i, 1));
        let t = Topology::new(entries, 0, Some(3));
        assert_eq!(t.cpus(), &[0, 1, 2]);
        assert_eq!(t.over_maxcpus, 5);
        assert_eq!(Topology::new([p(0, 1), p(1, 1)], 0, Some(0)).cpus(), &[0]);
    }

    #[test]
    fn duplicates_and_invalid_ids() {
        let t = Topology::new(
            [p(0, 1), p(1, 1), p(1, 1), p(0xff, 1), p(u32::MAX, 1)],
            0,
            None,
        );
        assert_eq!(t.cpus(), &[0, 1]);
    }

    #[test]
    fn unlisted_boot_cpu_still_runs() {
        let t = Topology::new([p(1, 1)], 0, None);
        assert_eq!(t.cpus(), &[0, 1]);
        assert!(t.boot_cpu_unlisted);
        assert_eq!(Topology::boot_cpu_only(5).cpus(), &[5]);
    }

    #[test]
    fn too_many_cpus_are_counted() {
        let entries = (0..(MAX_CPUS as u32 + 10)).map(|i| p(i + 1, 1));
        let t = Topology::new(entries, 0, None);
        assert_eq!(t.cpus().len(), MAX_CPUS);
        // 266 entries, minus id 0xff (not a CPU), minus 255 slots after the boot CPU.
        assert_eq!(t.over_limit, 10);
    }

    #[test]
    fn isa_overrides() {
        let mut t = Topology::boot_cpu_only(0);
        t.add_override(Override {
            irq: 0,
            gsi: 2,
            flags: 0,
        });
        assert_eq!(t.isa_gsi(0), 2);
        assert_eq!(t.isa_gsi(4), 4);
        t.add_ioapic(IoApic {
            id: 0,
            address: 0xfec0_0000,
            gsi_base: 0,
        });
        assert_eq!(t.ioapics().len(), 1);
    }
}
