//! I/O APIC redirection entries (Intel 82093AA datasheet §3.2.4; the same
//! layout in every chipset I/O APIC since) and the routing of an ISA IRQ to
//! one of them through the MADT's interrupt source overrides (ACPI 6.5
//! §5.2.12.5).
//!
//! A redirection entry is 64 bits, written as two 32-bit registers
//! (`0x10 + 2 * pin` low, `0x11 + 2 * pin` high):
//!
//! | bits | field |
//! | --- | --- |
//! | 0-7 | vector |
//! | 8-10 | delivery mode (0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 7 ExtINT) |
//! | 11 | destination mode (0 physical, 1 logical) |
//! | 12 | delivery status (read-only) |
//! | 13 | pin polarity (0 active high, 1 active low) |
//! | 14 | remote IRR (read-only) |
//! | 15 | trigger mode (0 edge, 1 level) |
//! | 16 | mask |
//! | 56-63 | destination (physical: an 8-bit APIC id) |
//!
//! Without interrupt remapping an I/O APIC can only name APIC ids 0-254 in
//! physical mode (255 is the broadcast id), whether the local APICs run in
//! xAPIC or x2APIC mode: a CPU with a wider id cannot be the target.

use crate::topology::{IoApic, Topology};
use core::fmt;

/// Bits 8-10: how the interrupt is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// To the destination's vector.
    Fixed,
    /// To the lowest-priority CPU among the destinations.
    LowestPriority,
    /// System management interrupt.
    Smi,
    /// Non-maskable interrupt.
    Nmi,
    /// INIT.
    Init,
    /// As from an 8259 (external interrupt).
    ExtInt,
}

impl DeliveryMode {
    const fn bits(self) -> u64 {
        match self {
            Self::Fixed => 0,
            Self::LowestPriority => 1,
            Self::Smi => 2,
            Self::Nmi => 4,
            Self::Init => 5,
            Self::ExtInt => 7,
        }
    }

    const fn from_bits(bits: u64) -> Option<Self> {
        Some(match bits {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            7 => Self::ExtInt,
            _ => return None,
        })
    }
}

/// Bit 11: how the destination field names CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationMode {
    /// One APIC id.
    Physical,
    /// A logical destination set.
    Logical,
}

/// Bit 13: the level that means "interrupt" on the pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// High (ISA's default).
    ActiveHigh,
    /// Low (PCI's default).
    ActiveLow,
}

/// Bit 15: what on the pin raises the interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerMode {
    /// A transition to the active level (ISA's default).
    Edge,
    /// The active level itself (PCI's default).
    Level,
}

const VECTOR_MASK: u64 = 0xff;
const DELIVERY_SHIFT: u32 = 8;
const LOGICAL: u64 = 1 << 11;
const ACTIVE_LOW: u64 = 1 << 13;
const LEVEL: u64 = 1 << 15;
const MASKED: u64 = 1 << 16;
const DESTINATION_SHIFT: u32 = 56;

/// One redirection entry, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedirectionEntry {
    /// The IDT vector.
    pub vector: u8,
    /// Delivery mode.
    pub delivery: DeliveryMode,
    /// Destination mode.
    pub destination_mode: DestinationMode,
    /// Pin polarity.
    pub polarity: Polarity,
    /// Trigger mode.
    pub trigger: TriggerMode,
    /// Whether the pin is masked.
    pub masked: bool,
    /// Destination: an APIC id in physical mode.
    pub destination: u8,
}

impl RedirectionEntry {
    /// A masked entry with everything else zero (what [`Self::to_bits`] of
    /// it gives is what a reset I/O APIC holds).
    pub const MASKED: Self = Self {
        vector: 0,
        delivery: DeliveryMode::Fixed,
        destination_mode: DestinationMode::Physical,
        polarity: Polarity::ActiveHigh,
        trigger: TriggerMode::Edge,
        masked: true,
        destination: 0,
    };

    /// Fixed delivery of `vector` to the CPU with APIC id `apic_id`
    /// (physical mode), unmasked.
    pub const fn fixed(vector: u8, apic_id: u8, polarity: Polarity, trigger: TriggerMode) -> Self {
        Self {
            vector,
            delivery: DeliveryMode::Fixed,
            destination_mode: DestinationMode::Physical,
            polarity,
            trigger,
            masked: false,
            destination: apic_id,
        }
    }

    /// The same entry, masked or not.
    pub const fn with_mask(self, masked: bool) -> Self {
        Self { masked, ..self }
    }

    /// The 64-bit register value (read-only bits 12 and 14 zero).
    pub const fn to_bits(self) -> u64 {
        let mut bits = self.vector as u64 & VECTOR_MASK;
        bits |= self.delivery.bits() << DELIVERY_SHIFT;
        if matches!(self.destination_mode, DestinationMode::Logical) {
            bits |= LOGICAL;
        }
        if matches!(self.polarity, Polarity::ActiveLow) {
            bits |= ACTIVE_LOW;
        }
        if matches!(self.trigger, TriggerMode::Level) {
            bits |= LEVEL;
        }
        if self.masked {
            bits |= MASKED;
        }
        bits | (self.destination as u64) << DESTINATION_SHIFT
    }

    /// Decodes a register value; `None` for a reserved delivery mode (3 or 6).
    /// The read-only bits (delivery status, remote IRR) are ignored.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        let Some(delivery) = DeliveryMode::from_bits((bits >> DELIVERY_SHIFT) & 0b111) else {
            return None;
        };
        Some(Self {
            vector: (bits & VECTOR_MASK) as u8,
            delivery,
            destination_mode: if bits & LOGICAL != 0 {
                DestinationMode::Logical
            } else {
                DestinationMode::Physical
            },
            polarity: if bits & ACTIVE_LOW != 0 {
                Polarity::ActiveLow
            } else {
                Polarity::ActiveHigh
            },
            trigger: if bits & LEVEL != 0 {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
            masked: bits & MASKED != 0,
            destination: (bits >> DESTINATION_SHIFT) as u8,
        })
    }

    /// The low register (`0x10 + 2 * pin`).
    pub const fn low(self) -> u32 {
        self.to_bits() as u32
    }

    /// The high register (`0x11 + 2 * pin`).
    pub const fn high(self) -> u32 {
        (self.to_bits() >> 32) as u32
    }
}

/// The redirection-table register index of `pin`'s low half (the high half
/// follows it).
pub const fn redirection_register(pin: u8) -> u32 {
    0x10 + 2 * pin as u32
}

/// Where an ISA IRQ arrives, and how, after the MADT's overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsaRoute {
    /// The ISA IRQ.
    pub irq: u8,
    /// Its global system interrupt.
    pub gsi: u32,
    /// Pin polarity.
    pub polarity: Polarity,
    /// Trigger mode.
    pub trigger: TriggerMode,
    /// Whether an interrupt source override gave the above.
    pub overridden: bool,
}

/// Polarity from MPS INTI flags bits 1:0 (00 and the reserved 10: as the
/// ISA bus, active high).
pub const fn inti_polarity(flags: u16) -> Polarity {
    match flags & 0b11 {
        0b11 => Polarity::ActiveLow,
        _ => Polarity::ActiveHigh,
    }
}

/// Trigger mode from MPS INTI flags bits 3:2 (00 and the reserved 10: as the
/// ISA bus, edge).
pub const fn inti_trigger(flags: u16) -> TriggerMode {
    match (flags >> 2) & 0b11 {
        0b11 => TriggerMode::Level,
        _ => TriggerMode::Edge,
    }
}

/// Why an ISA IRQ cannot be routed to a CPU through an I/O APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// The MADT lists no I/O APIC (or there was no MADT).
    NoIoApic,
    /// No I/O APIC serves the IRQ's global system interrupt.
    GsiNotServed {
        /// The ISA IRQ.
        irq: u8,
        /// Its global system interrupt.
        gsi: u32,
    },
    /// Another ISA IRQ is overridden onto the same global system interrupt.
    GsiTaken {
        /// The ISA IRQ.
        irq: u8,
        /// Its global system interrupt.
        gsi: u32,
        /// The other ISA IRQ.
        other: u8,
    },
    /// The target CPU's APIC id does not fit a physical-mode destination.
    ApicIdTooWide(u32),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoIoApic => write!(f, "no I/O APIC is known (no ACPI MADT, or it lists none)"),
            Self::GsiNotServed { irq, gsi } => write!(
                f,
                "no I/O APIC in the ACPI MADT serves ISA IRQ {irq} (GSI {gsi})"
            ),
            Self::GsiTaken { irq, gsi, other } => write!(
                f,
                "ISA IRQ {irq} would be GSI {gsi}, but the ACPI MADT overrides ISA IRQ {other} onto it"
            ),
            Self::ApicIdTooWide(id) => write!(
                f,
                "the boot CPU's APIC id {id} is beyond what an I/O APIC can address without \
                 interrupt remapping (0-254)"
            ),
        }
    }
}

/// A decided route: which I/O APIC pin to program, with what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinRoute {
    /// The I/O APIC.
    pub ioapic: IoApic,
    /// The pin on it (GSI minus its base).
    pub pin: u8,
    /// Where the IRQ arrives and how.
    pub isa: IsaRoute,
    /// The entry to write.
    pub entry: RedirectionEntry,
}

/// The physical-mode destination for APIC id `apic_id`.
pub const fn physical_destination(apic_id: u32) -> Result<u8, RouteError> {
    if apic_id < 0xff {
        Ok(apic_id as u8)
    } else {
        Err(RouteError::ApicIdTooWide(apic_id))
    }
}

impl Topology {
    /// Where ISA IRQ `irq` arrives: identity-mapped, edge-triggered and
    /// active high unless an interrupt source override says otherwise (its
    /// "conforms to the bus" settings mean ISA's).
    pub fn isa_route(&self, irq: u8) -> IsaRoute {
        match self.overrides().iter().find(|o| o.irq == irq) {
            Some(o) => IsaRoute {
                irq,
                gsi: o.gsi,
                polarity: inti_polarity(o.flags),
                trigger: inti_trigger(o.flags),
                overridden: true,
            },
            None => IsaRoute {
                irq,
                gsi: u32::from(irq),
                polarity: Polarity::ActiveHigh,
                trigger: TriggerMode::Edge,
                overridden: false,
            },
        }
    }

    /// The I/O APIC serving `gsi` and the pin on it; `entries` gives each I/O
    /// APIC's number of redirection entries (read from the hardware).
    pub fn gsi_pin(&self, gsi: u32, entries: impl Fn(&IoApic) -> u32) -> Option<(IoApic, u8)> {
        self.ioapics().iter().find_map(|io| {
            let pin = gsi.checked_sub(io.gsi_base)?;
            (pin < entries(io).min(256)).then_some((*io, pin as u8))
        })
    }

    /// Routes ISA IRQ `irq` to `vector` on the CPU with APIC id `apic_id`
    /// (fixed delivery, physical destination, unmasked).
    pub fn route_isa_irq(
        &self,
        irq: u8,
        vector: u8,
        apic_id: u32,
        entries: impl Fn(&IoApic) -> u32,
    ) -> Result<PinRoute, RouteError> {
        if self.ioapics().is_empty() {
            return Err(RouteError::NoIoApic);
        }
        let isa = self.isa_route(irq);
        if !isa.overridden
            && let Some(other) = self
                .overrides()
                .iter()
                .find(|o| o.gsi == isa.gsi && o.irq != irq)
        {
            return Err(RouteError::GsiTaken {
                irq,
                gsi: isa.gsi,
                other: other.irq,
            });
        }
        let destination = physical_destination(apic_id)?;
        let (ioapic, pin) = self
            .gsi_pin(isa.gsi, entries)
            .ok_or(RouteError::GsiNotServed { irq, gsi: isa.gsi })?;
        Ok(PinRoute {
            ioapic,
            pin,
            isa,
            entry: RedirectionEntry::fixed(vector, destination, isa.polarity, isa.trigger),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Override;

    #[test]
    fn encodes_every_field_at_its_bit() {
        let e = RedirectionEntry::fixed(0x24, 3, Polarity::ActiveHigh, TriggerMode::Edge);
        assert_eq!(e.to_bits(), 0x0300_0000_0000_0024);
        assert_eq!((e.low(), e.high()), (0x24, 0x0300_0000));
        let low = RedirectionEntry::fixed(0x24, 0, Polarity::ActiveLow, TriggerMode::Edge);
        assert_eq!(low.to_bits(), 0x24 | 1 << 13);
        let level = RedirectionEntry::fixed(0x24, 0, Polarity::ActiveHigh, TriggerMode::Level);
        assert_eq!(level.to_bits(), 0x24 | 1 << 15);
        assert_eq!(level.with_mask(true).to_bits(), 0x24 | 1 << 15 | 1 << 16);
        assert_eq!(RedirectionEntry::MASKED.to_bits(), 1 << 16);
        let all = RedirectionEntry {
            vector: 0xff,
            delivery: DeliveryMode::ExtInt,
            destination_mode: DestinationMode::Logical,
            polarity: Polarity::ActiveLow,
            trigger: TriggerMode::Level,
            masked: true,
            destination: 0xff,
        };
        assert_eq!(all.to_bits(), 0xff00_0000_0001_afff);
        for (mode, bits) in [
            (DeliveryMode::Fixed, 0),
            (DeliveryMode::LowestPriority, 1),
            (DeliveryMode::Smi, 2),
            (DeliveryMode::Nmi, 4),
            (DeliveryMode::Init, 5),
            (DeliveryMode::ExtInt, 7),
        ] {
            let e = RedirectionEntry {
                delivery: mode,
                ..RedirectionEntry::MASKED
            };
            assert_eq!((e.to_bits() >> 8) & 0b111, bits, "{mode:?}");
        }
    }

    #[test]
    fn decodes_what_it_encodes_and_ignores_read_only_bits() {
        let e = RedirectionEntry::fixed(0x31, 7, Polarity::ActiveLow, TriggerMode::Level);
        assert_eq!(RedirectionEntry::from_bits(e.to_bits()), Some(e));
        // Delivery status (12) and remote IRR (14) set by the hardware.
        let busy = e.to_bits() | 1 << 12 | 1 << 14;
        assert_eq!(RedirectionEntry::from_bits(busy), Some(e));
        assert_eq!(RedirectionEntry::from_bits(3 << 8), None);
        assert_eq!(RedirectionEntry::from_bits(6 << 8), None);
        assert_eq!(
            RedirectionEntry::from_bits(1 << 16),
            Some(RedirectionEntry::MASKED)
        );
        assert_eq!(redirection_register(0), 0x10);
        assert_eq!(redirection_register(4), 0x18);
        assert_eq!(redirection_register(23), 0x3e);
    }

    #[test]
    fn inti_flags() {
        assert_eq!(inti_polarity(0b00), Polarity::ActiveHigh);
        assert_eq!(inti_polarity(0b01), Polarity::ActiveHigh);
        assert_eq!(inti_polarity(0b10), Polarity::ActiveHigh);
        assert_eq!(inti_polarity(0b11), Polarity::ActiveLow);
        assert_eq!(inti_trigger(0b0000), TriggerMode::Edge);
        assert_eq!(inti_trigger(0b0100), TriggerMode::Edge);
        assert_eq!(inti_trigger(0b1000), TriggerMode::Edge);
        assert_eq!(inti_trigger(0b1100), TriggerMode::Level);
        // QEMU's PCI-interrupt overrides: level, active high.
        assert_eq!(inti_trigger(0xd), TriggerMode::Level);
        assert_eq!(inti_polarity(0xd), Polarity::ActiveHigh);
    }

    fn qemu_like() -> Topology {
        let mut t = Topology::boot_cpu_only(0);
        t.add_ioapic(IoApic {
            id: 0,
            address: 0xfec0_0000,
            gsi_base: 0,
        });
        t.add_override(Override {
            irq: 0,
            gsi: 2,
            flags: 0,
        });
        t.add_override(Override {
            irq: 9,
            gsi: 9,
            flags: 0xd,
        });
        t
    }

    #[test]
    fn isa_irqs_default_to_identity_edge_high() {
        let t = qemu_like();
        let com1 = t.route_isa_irq(4, 0x24, 0, |_| 24).unwrap();
        assert_eq!(com1.pin, 4);
        assert_eq!(com1.isa.gsi, 4);
        assert!(!com1.isa.overridden);
        assert_eq!(
            com1.entry,
            RedirectionEntry::fixed(0x24, 0, Polarity::ActiveHigh, TriggerMode::Edge)
        );
        let sci = t.isa_route(9);
        assert_eq!(
            (sci.gsi, sci.trigger, sci.polarity, sci.overridden),
            (9, TriggerMode::Level, Polarity::ActiveHigh, true)
        );
    }

    #[test]
    fn overrides_remap_and_change_polarity_and_trigger() {
        let mut t = Topology::boot_cpu_only(2);
        t.add_ioapic(IoApic {
            id: 1,
            address: 0xfec0_0000,
            gsi_base: 0,
        });
        t.add_ioapic(IoApic {
            id: 2,
            address: 0xfec1_0000,
            gsi_base: 24,
        });
        t.add_override(Override {
            irq: 4,
            gsi: 30,
            flags: 0b1111,
        });
        let r = t.route_isa_irq(4, 0x24, 2, |_| 24).unwrap();
        assert_eq!((r.ioapic.id, r.pin, r.isa.gsi), (2, 6, 30));
        assert_eq!(
            r.entry.to_bits(),
            0x24 | 1 << 13 | 1 << 15 | 2 << 56,
            "active low, level, to APIC id 2"
        );
    }

    #[test]
    fn routing_failures_are_named() {
        assert_eq!(
            Topology::boot_cpu_only(0).route_isa_irq(4, 0x24, 0, |_| 24),
            Err(RouteError::NoIoApic)
        );
        let t = qemu_like();
        assert_eq!(
            t.route_isa_irq(4, 0x24, 300, |_| 24),
            Err(RouteError::ApicIdTooWide(300))
        );
        assert_eq!(
            t.route_isa_irq(4, 0x24, 0xff, |_| 24),
            Err(RouteError::ApicIdTooWide(0xff))
        );
        assert!(t.route_isa_irq(4, 0x24, 0xfe, |_| 24).is_ok());
        // An I/O APIC with only 4 pins does not serve GSI 4.
        assert_eq!(
            t.route_isa_irq(4, 0x24, 0, |_| 4),
            Err(RouteError::GsiNotServed { irq: 4, gsi: 4 })
        );
        // IRQ 0 is overridden onto GSI 2, so ISA IRQ 2 cannot be identity-mapped.
        assert_eq!(
            t.route_isa_irq(2, 0x24, 0, |_| 24),
            Err(RouteError::GsiTaken {
                irq: 2,
                gsi: 2,
                other: 0
            })
        );
        for e in [
            RouteError::NoIoApic,
            RouteError::GsiNotServed { irq: 4, gsi: 4 },
            RouteError::ApicIdTooWide(300),
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn gsi_pin_respects_bases_and_sizes() {
        let mut t = Topology::boot_cpu_only(0);
        t.add_ioapic(IoApic {
            id: 0,
            address: 0,
            gsi_base: 0,
        });
        t.add_ioapic(IoApic {
            id: 1,
            address: 0x1000,
            gsi_base: 24,
        });
        let entries = |io: &IoApic| if io.id == 0 { 24 } else { 32 };
        assert_eq!(
            t.gsi_pin(23, entries).map(|(io, p)| (io.id, p)),
            Some((0, 23))
        );
        assert_eq!(
            t.gsi_pin(24, entries).map(|(io, p)| (io.id, p)),
            Some((1, 0))
        );
        assert_eq!(
            t.gsi_pin(55, entries).map(|(io, p)| (io.id, p)),
            Some((1, 31))
        );
        assert_eq!(t.gsi_pin(56, entries), None);
    }
}
