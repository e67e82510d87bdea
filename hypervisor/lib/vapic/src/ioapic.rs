//! A virtual I/O APIC (82093AA-style, version 0x11, 24 pins) as a pure
//! state machine.
//!
//! The guest reaches it through two registers of its MMIO page:
//! IOREGSEL at offset 0x00 selects a register, IOWIN at 0x10 reads or
//! writes it ([`IoApic::read`], [`IoApic::write`]).
//!
//! | index | register |
//! |---|---|
//! | 0x00 | ID (bits 27:24 writable) |
//! | 0x01 | version: 0x00170011 (read-only) |
//! | 0x02 | arbitration ID (read-only, follows the ID) |
//! | 0x10 + 2n, 0x11 + 2n | redirection entry n, low and high dword |
//!
//! Device models drive the pins with [`IoApic::set_irq`]; the level is the
//! logical assertion (polarity, bit 13, is kept for the guest to read but
//! the board's wiring is taken as already applied). An edge pin sends on a
//! rising edge while unmasked (an edge while masked is lost). A level pin
//! sends while asserted, unmasked and its remote IRR is clear, and sets
//! remote IRR; [`IoApic::eoi`] (the caller's broadcast of a level-triggered
//! EOI) clears it and sends again if the line is still asserted. Unmasking
//! an asserted level pin sends too. Delivery is instantaneous, so the
//! delivery status bit reads 0.

use crate::lapic::{CpuSet, Delivery, DestMode, Shorthand, Target, Trigger, resolve};

/// Number of pins (redirection entries).
pub const PINS: usize = 24;
/// MMIO offset of IOREGSEL.
pub const IOREGSEL: u32 = 0x00;
/// MMIO offset of IOWIN.
pub const IOWIN: u32 = 0x10;
/// Register index of the ID.
pub const REG_ID: u8 = 0x00;
/// Register index of the version.
pub const REG_VERSION: u8 = 0x01;
/// Register index of the arbitration ID.
pub const REG_ARB: u8 = 0x02;
/// Register index of the first redirection entry's low dword.
pub const REG_REDTBL: u8 = 0x10;
/// The version register: version 0x11, highest entry 23.
pub const VERSION: u32 = 0x0017_0011;

/// Redirection entry bit 14: remote IRR (read-only).
pub const RTE_REMOTE_IRR: u64 = 1 << 14;
/// Redirection entry bit 15: level triggered.
pub const RTE_LEVEL: u64 = 1 << 15;
/// Redirection entry bit 16: masked.
pub const RTE_MASKED: u64 = 1 << 16;
/// Writable bits of a redirection entry.
const RTE_WRITABLE: u64 = 0xFF00_0000_0001_AFFF;

/// An interrupt message the I/O APIC sends; the caller resolves the
/// destinations ([`IoApicInterrupt::destinations`]) and delivers it with
/// [`crate::Lapic::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApicInterrupt {
    /// The pin.
    pub pin: u8,
    /// The destination (8 bits, xAPIC format).
    pub dest: u8,
    /// Physical or logical.
    pub dest_mode: DestMode,
    /// The vector.
    pub vector: u8,
    /// The delivery mode.
    pub delivery: Delivery,
    /// Edge or level.
    pub trigger: Trigger,
}

impl IoApicInterrupt {
    /// The interrupt an MSI message (`address`, `data`) asks for (Intel SDM
    /// Vol. 3A §11.11): destination from address bits 19:12, logical if bit
    /// 2, vector from data bits 7:0, edge. Fixed and lowest-priority
    /// delivery are taken as fixed; `None` for any other delivery mode, a
    /// vector below 16 or an address outside 0xFEExxxxx.
    pub fn from_msi(address: u64, data: u32) -> Option<Self> {
        let ok = address >> 20 == 0xFEE && data >> 8 & 7 <= 1 && data as u8 >= 16;
        ok.then_some(IoApicInterrupt {
            pin: 0,
            dest: (address >> 12) as u8,
            dest_mode: if address & 4 != 0 {
                DestMode::Logical
            } else {
                DestMode::Physical
            },
            vector: data as u8,
            delivery: Delivery::Fixed,
            trigger: Trigger::Edge,
        })
    }

    /// The vCPUs (indices into `targets`) the message goes to.
    pub fn destinations(&self, targets: &[Target]) -> CpuSet {
        resolve(
            targets,
            None,
            u32::from(self.dest),
            self.dest_mode,
            Shorthand::None,
            false,
            self.delivery == Delivery::LowestPriority,
        )
    }
}

/// Up to [`PINS`] interrupts to deliver (from [`IoApic::eoi`]).
#[derive(Debug, Clone, Copy)]
pub struct Deliveries {
    items: [Option<IoApicInterrupt>; PINS],
    len: usize,
}

impl Deliveries {
    fn new() -> Deliveries {
        Deliveries {
            items: [None; PINS],
            len: 0,
        }
    }

    fn push(&mut self, i: IoApicInterrupt) {
        if self.len < PINS {
            self.items[self.len] = Some(i);
            self.len += 1;
        }
    }

    /// How many.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The interrupts, in pin order.
    pub fn iter(&self) -> impl Iterator<Item = IoApicInterrupt> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }
}

/// A virtual I/O APIC (see the module documentation).
#[derive(Debug, Clone)]
pub struct IoApic {
    ioregsel: u8,
    id: u32,
    redirection: [u64; PINS],
    lines: u32,
}

impl Default for IoApic {
    fn default() -> Self {
        IoApic::new(0)
    }
}

impl IoApic {
    /// An I/O APIC after reset with APIC ID `id` (bits 3:0): every pin
    /// masked, edge, active high, vector 0.
    pub fn new(id: u8) -> IoApic {
        IoApic {
            ioregsel: 0,
            id: u32::from(id & 0xF) << 24,
            redirection: [RTE_MASKED; PINS],
            lines: 0,
        }
    }

    /// Redirection entry `pin` (`None` past the last pin).
    pub fn entry(&self, pin: usize) -> Option<u64> {
        self.redirection.get(pin).copied()
    }

    /// Whether `pin` is asserted.
    pub fn line(&self, pin: usize) -> bool {
        pin < PINS && self.lines & (1 << pin) != 0
    }

    /// An MMIO read at `offset` (IOREGSEL or IOWIN; others read 0).
    pub fn read(&self, offset: u32) -> u32 {
        match offset {
            IOREGSEL => u32::from(self.ioregsel),
            IOWIN => self.read_register(self.ioregsel),
            _ => 0,
        }
    }

    /// The register with index `index` (absent ones read 0).
    pub fn read_register(&self, index: u8) -> u32 {
        match index {
            REG_ID => self.id,
            REG_VERSION => VERSION,
            REG_ARB => self.id,
            0x10..=0x3F => {
                let e = self.redirection[usize::from((index - REG_REDTBL) / 2)];
                if index & 1 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    /// An MMIO write at `offset`; a write that unmasks an asserted level
    /// pin returns the interrupt it sends.
    pub fn write(&mut self, offset: u32, value: u32) -> Option<IoApicInterrupt> {
        match offset {
            IOREGSEL => {
                self.ioregsel = value as u8;
                None
            }
            IOWIN => self.write_register(self.ioregsel, value),
            _ => None,
        }
    }

    /// A write to the register with index `index`.
    pub fn write_register(&mut self, index: u8, value: u32) -> Option<IoApicInterrupt> {
        match index {
            REG_ID => self.id = value & 0x0F00_0000,
            0x10..=0x3F => {
                let pin = usize::from((index - REG_REDTBL) / 2);
                let old = self.redirection[pin];
                let new = if index & 1 == 0 {
                    (old & !0xFFFF_FFFF) | u64::from(value)
                } else {
                    (old & 0xFFFF_FFFF) | (u64::from(value) << 32)
                };
                let mut e = (new & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                if e & RTE_LEVEL == 0 {
                    e &= !RTE_REMOTE_IRR;
                }
                self.redirection[pin] = e;
                return self.service(pin);
            }
            _ => {}
        }
        None
    }

    /// Drives `pin` to `level` (asserted = true). Returns the interrupt to
    /// deliver, if this sends one. Pins past the last are ignored.
    pub fn set_irq(&mut self, pin: usize, level: bool) -> Option<IoApicInterrupt> {
        if pin >= PINS {
            return None;
        }
        let was = self.line(pin);
        if level {
            self.lines |= 1 << pin;
        } else {
            self.lines &= !(1 << pin);
        }
        let e = self.redirection[pin];
        if e & RTE_LEVEL != 0 {
            self.service(pin)
        } else if level && !was && e & RTE_MASKED == 0 {
            self.message(pin)
        } else {
            None
        }
    }

    /// A level-triggered EOI for `vector` was broadcast: clear remote IRR
    /// of the level pins with that vector, and send again from those whose
    /// line is still asserted.
    pub fn eoi(&mut self, vector: u8) -> Deliveries {
        let mut out = Deliveries::new();
        for pin in 0..PINS {
            let e = self.redirection[pin];
            if e as u8 == vector && e & RTE_REMOTE_IRR != 0 {
                self.redirection[pin] = e & !RTE_REMOTE_IRR;
                if let Some(i) = self.service(pin) {
                    out.push(i);
                }
            }
        }
        out
    }

    /// Sends from a level pin if it is asserted, unmasked and its remote
    /// IRR is clear.
    fn service(&mut self, pin: usize) -> Option<IoApicInterrupt> {
        let e = self.redirection[pin];
        if e & RTE_LEVEL == 0 || e & (RTE_MASKED | RTE_REMOTE_IRR) != 0 || !self.line(pin) {
            return None;
        }
        let msg = self.message(pin)?;
        self.redirection[pin] |= RTE_REMOTE_IRR;
        Some(msg)
    }

    fn message(&self, pin: usize) -> Option<IoApicInterrupt> {
        let e = self.redirection[pin];
        let delivery = Delivery::from_bits((e >> 8) as u32);
        if matches!(delivery, Delivery::Reserved | Delivery::StartUp) {
            return None;
        }
        Some(IoApicInterrupt {
            pin: pin as u8,
            dest: (e >> 56) as u8,
            dest_mode: if e & (1 << 11) != 0 {
                DestMode::Logical
            } else {
                DestMode::Physical
            },
            vector: e as u8,
            delivery,
            trigger: if e & RTE_LEVEL != 0 {
                Trigger::Level
            } else {
                Trigger::Edge
            },
        })
    }
}

#[cfg(test)]
mod tests;
