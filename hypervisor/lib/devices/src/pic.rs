//! The PC's 8259A programmable interrupt controller pair as a pure register
//! state machine.
//!
//! The master answers at ports 0x20/0x21 and takes IRQ 0-7; the slave
//! answers at 0xA0/0xA1, takes IRQ 8-15 and cascades into the master's
//! IR2. The edge/level control registers (ELCR, as on the PIIX) are at
//! 0x4D0 (master) and 0x4D1 (slave). The caller passes the port to
//! [`Pic::read`] and [`Pic::write`], drives the sixteen input lines with
//! [`Pic::set_irq`], watches [`Pic::output`] (the INTR line to the CPU) and
//! runs the interrupt-acknowledge cycle with [`Pic::acknowledge`].
//!
//! Modelled: the ICW1-ICW4 initialization sequence (vector base, single
//! mode, ICW4 and its auto-EOI and special-fully-nested bits), OCW1 (the
//! mask), OCW2 (non-specific and specific EOI, rotation on EOI and in
//! auto-EOI mode, set priority), OCW3 (read IRR or ISR, poll, special mask
//! mode), edge and level triggering (ELCR or ICW1's LTIM bit), priority
//! resolution with rotation, and spurious IRQ 7 / IRQ 15.
//!
//! Simplifications:
//!
//! * the cascade is wired: the slave's output is IR2 of the master, as a
//!   level (so no slave request is lost to a missing edge); ICW3 is accepted
//!   and ignored, and `set_irq(2, _)` is ignored (on a PC, ISA IRQ 2 is
//!   routed to IRQ 9);
//! * the buffered-mode and 8080-mode bits of ICW4 are ignored;
//! * a poll command (OCW3 bit 2) on the master that finds IR2 returns 0x82
//!   and acknowledges the master only, as a real master would.

/// Master command port (ICW1, OCW2, OCW3; reads IRR or ISR).
pub const MASTER_CMD: u16 = 0x20;
/// Master data port (ICW2-ICW4, OCW1; reads IMR).
pub const MASTER_DATA: u16 = 0x21;
/// Slave command port.
pub const SLAVE_CMD: u16 = 0xA0;
/// Slave data port.
pub const SLAVE_DATA: u16 = 0xA1;
/// Master edge/level control register (bit n: IRQ n is level-triggered).
pub const ELCR_MASTER: u16 = 0x4D0;
/// Slave edge/level control register (bit n: IRQ 8 + n is level-triggered).
pub const ELCR_SLAVE: u16 = 0x4D1;

/// ELCR bits that exist on the master: IRQ 0, 1 and 2 are always edge.
pub const ELCR_MASTER_MASK: u8 = 0xF8;
/// ELCR bits that exist on the slave: IRQ 8 and 13 are always edge.
pub const ELCR_SLAVE_MASK: u8 = 0xDE;

/// ICW1: this is ICW1 (bit 4 of a command-port write).
pub const ICW1_INIT: u8 = 0x10;
/// ICW1: ICW4 follows.
pub const ICW1_IC4: u8 = 0x01;
/// ICW1: single mode (no ICW3).
pub const ICW1_SNGL: u8 = 0x02;
/// ICW1: level-triggered mode for every input.
pub const ICW1_LTIM: u8 = 0x08;
/// ICW4: automatic end of interrupt.
pub const ICW4_AEOI: u8 = 0x02;
/// ICW4: special fully nested mode.
pub const ICW4_SFNM: u8 = 0x10;

/// The cascade input of the master.
pub const CASCADE_IRQ: u8 = 2;

/// Where an initialization sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Init {
    /// Not initializing: data-port writes are OCW1.
    Ready,
    /// The next data-port write is ICW2.
    Icw2,
    /// The next data-port write is ICW3.
    Icw3,
    /// The next data-port write is ICW4.
    Icw4,
}

/// One 8259A.
#[derive(Debug, Clone)]
struct Chip {
    /// Interrupt request register.
    irr: u8,
    /// In-service register.
    isr: u8,
    /// Interrupt mask register.
    imr: u8,
    /// Input line levels, as last set.
    lines: u8,
    /// Edge/level control register (1: level).
    elcr: u8,
    /// Writable ELCR bits.
    elcr_mask: u8,
    /// ICW1's LTIM: every input level-triggered.
    ltim: bool,
    /// The level with the highest priority (rotation).
    lowest_priority_plus_one: u8,
    /// ICW2's vector base (low three bits clear).
    vector_base: u8,
    /// OCW3's choice for command-port reads: ISR (true) or IRR.
    read_isr: bool,
    /// A poll command is pending: the next read is the poll byte.
    poll: bool,
    /// Special mask mode.
    special_mask: bool,
    /// Initialization state.
    init: Init,
    /// ICW1 asked for ICW4.
    ic4: bool,
    /// ICW1 single mode.
    single: bool,
    /// ICW4 auto-EOI.
    auto_eoi: bool,
    /// Rotate in auto-EOI mode (OCW2 0x80 / 0x00).
    rotate_on_auto_eoi: bool,
    /// ICW4 special fully nested mode.
    special_fully_nested: bool,
    /// Whether this is the master (special fully nested applies to IR2).
    master: bool,
}

impl Chip {
    fn new(master: bool) -> Self {
        Chip {
            irr: 0,
            isr: 0,
            imr: 0,
            lines: 0,
            elcr: 0,
            elcr_mask: if master {
                ELCR_MASTER_MASK
            } else {
                ELCR_SLAVE_MASK
            },
            ltim: false,
            lowest_priority_plus_one: 0,
            vector_base: 0,
            read_isr: false,
            poll: false,
            special_mask: false,
            init: Init::Ready,
            ic4: false,
            single: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            master,
        }
    }

    /// The level-triggered inputs.
    fn level_mask(&self) -> u8 {
        if self.ltim { 0xFF } else { self.elcr }
    }

    /// Writes the ELCR: level-triggered inputs request while high.
    fn set_elcr(&mut self, value: u8) {
        self.elcr = value & self.elcr_mask;
        let level = self.level_mask();
        self.irr = (self.irr & !level) | (self.lines & level);
    }

    /// Sets input `irq` (0..=7) to `level`.
    fn set_irq(&mut self, irq: u8, level: bool) {
        let mask = 1u8 << irq;
        if self.level_mask() & mask != 0 {
            if level {
                self.irr |= mask;
            } else {
                self.irr &= !mask;
            }
        } else if level && self.lines & mask == 0 {
            self.irr |= mask;
        }
        if level {
            self.lines |= mask;
        } else {
            self.lines &= !mask;
        }
    }

    /// Priority (0 = highest) of the best bit in `mask`, 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        (0..8)
            .find(|p| mask & (1 << ((p + self.lowest_priority_plus_one) & 7)) != 0)
            .unwrap_or(8)
    }

    /// The request that would be delivered now, if any.
    fn pending(&self) -> Option<u8> {
        let p = self.priority(self.irr & !self.imr);
        if p == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && self.master {
            in_service &= !(1 << CASCADE_IRQ);
        }
        (p < self.priority(in_service)).then_some((p + self.lowest_priority_plus_one) & 7)
    }

    /// The INTA cycle for `irq` on this chip.
    fn intack(&mut self, irq: u8) {
        let mask = 1u8 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.lowest_priority_plus_one = (irq + 1) & 7;
            }
        } else {
            self.isr |= mask;
        }
        if self.level_mask() & mask == 0 {
            self.irr &= !mask;
        }
    }

    /// ICW1: resets and starts an initialization sequence.
    fn icw1(&mut self, value: u8) {
        self.ltim = value & ICW1_LTIM != 0;
        self.irr = self.lines & self.level_mask();
        self.isr = 0;
        self.imr = 0;
        self.lowest_priority_plus_one = 0;
        self.read_isr = false;
        self.poll = false;
        self.special_mask = false;
        self.auto_eoi = false;
        self.rotate_on_auto_eoi = false;
        self.special_fully_nested = false;
        self.ic4 = value & ICW1_IC4 != 0;
        self.single = value & ICW1_SNGL != 0;
        self.init = Init::Icw2;
    }

    fn write_cmd(&mut self, value: u8) {
        if value & ICW1_INIT != 0 {
            self.icw1(value);
        } else if value & 0x08 != 0 {
            // OCW3.
            if value & 0x04 != 0 {
                self.poll = true;
            }
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            // OCW2.
            let level = value & 7;
            match value >> 5 {
                0 | 4 => self.rotate_on_auto_eoi = value & 0x80 != 0,
                cmd @ (1 | 5) => {
                    let p = self.priority(self.isr);
                    if p != 8 {
                        let irq = (p + self.lowest_priority_plus_one) & 7;
                        self.isr &= !(1 << irq);
                        if cmd == 5 {
                            self.lowest_priority_plus_one = (irq + 1) & 7;
                        }
                    }
                }
                3 => self.isr &= !(1 << level),
                6 => self.lowest_priority_plus_one = (level + 1) & 7,
                7 => {
                    self.isr &= !(1 << level);
                    self.lowest_priority_plus_one = (level + 1) & 7;
                }
                _ => {} // 2: no operation.
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init {
            Init::Ready => self.imr = value,
            Init::Icw2 => {
                self.vector_base = value & 0xF8;
                self.init = match (self.single, self.ic4) {
                    (false, _) => Init::Icw3,
                    (true, true) => Init::Icw4,
                    (true, false) => Init::Ready,
                };
            }
            Init::Icw3 => self.init = if self.ic4 { Init::Icw4 } else { Init::Ready },
            Init::Icw4 => {
                self.auto_eoi = value & ICW4_AEOI != 0;
                self.special_fully_nested = value & ICW4_SFNM != 0;
                self.init = Init::Ready;
            }
        }
    }

    /// The poll byte: bit 7 set and the level if a request was pending
    /// (which is then acknowledged), 0 otherwise.
    fn poll_read(&mut self) -> u8 {
        self.poll = false;
        match self.pending() {
            Some(irq) => {
                self.intack(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    fn read_cmd(&mut self) -> u8 {
        if self.poll {
            self.poll_read()
        } else if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }

    fn read_data(&mut self) -> u8 {
        if self.poll {
            self.poll_read()
        } else {
            self.imr
        }
    }
}

/// The master/slave 8259A pair of a PC.
#[derive(Debug, Clone)]
pub struct Pic {
    master: Chip,
    slave: Chip,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// A pair as after power-on: everything zero, no input raised, all
    /// inputs edge-triggered, not yet initialized (vector base 0).
    pub fn new() -> Self {
        Pic {
            master: Chip::new(true),
            slave: Chip::new(false),
        }
    }

    /// Back to the power-on state, input line levels included.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Whether `port` belongs to this model.
    pub fn handles(port: u16) -> bool {
        matches!(
            port,
            MASTER_CMD | MASTER_DATA | SLAVE_CMD | SLAVE_DATA | ELCR_MASTER | ELCR_SLAVE
        )
    }

    /// Propagates the slave's output to the master's cascade input.
    fn sync_cascade(&mut self) {
        let out = self.slave.pending().is_some();
        let bit = 1u8 << CASCADE_IRQ;
        if out {
            self.master.irr |= bit;
            self.master.lines |= bit;
        } else {
            self.master.irr &= !bit;
            self.master.lines &= !bit;
        }
    }

    /// A guest read of `port`; ports not in [`Pic::handles`] read 0xFF.
    pub fn read(&mut self, port: u16) -> u8 {
        let v = match port {
            MASTER_CMD => self.master.read_cmd(),
            MASTER_DATA => self.master.read_data(),
            SLAVE_CMD => self.slave.read_cmd(),
            SLAVE_DATA => self.slave.read_data(),
            ELCR_MASTER => self.master.elcr,
            ELCR_SLAVE => self.slave.elcr,
            _ => 0xFF,
        };
        self.sync_cascade();
        v
    }

    /// A guest write of `value` to `port`; other ports are ignored.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            MASTER_CMD => self.master.write_cmd(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_CMD => self.slave.write_cmd(value),
            SLAVE_DATA => self.slave.write_data(value),
            ELCR_MASTER => self.master.set_elcr(value),
            ELCR_SLAVE => self.slave.set_elcr(value),
            _ => {}
        }
        self.sync_cascade();
    }

    /// Sets input line `line` (0..=15) to `level`. An edge-triggered input
    /// requests on a rising edge; a level-triggered one requests while high.
    /// Line 2 (the cascade) and lines above 15 are ignored.
    pub fn set_irq(&mut self, line: u8, level: bool) {
        match line {
            CASCADE_IRQ => {}
            0..=7 => self.master.set_irq(line, level),
            8..=15 => self.slave.set_irq(line - 8, level),
            _ => {}
        }
        self.sync_cascade();
    }

    /// The INTR line to the CPU: high when the master has a request to
    /// deliver.
    pub fn output(&self) -> bool {
        self.master.pending().is_some()
    }

    /// The vector [`Pic::acknowledge`] would return now, or `None` when
    /// [`Pic::output`] is low.
    pub fn pending_vector(&self) -> Option<u8> {
        let irq = self.master.pending()?;
        Some(if irq == CASCADE_IRQ {
            self.slave.vector_base | self.slave.pending().unwrap_or(7)
        } else {
            self.master.vector_base | irq
        })
    }

    /// The interrupt-acknowledge cycle: moves the highest-priority request
    /// from IRR to ISR (unless in auto-EOI mode) and returns its vector.
    /// With nothing to deliver, returns the spurious vector of IRQ 7 (the
    /// master's base + 7, no ISR bit set); when the slave has nothing
    /// behind the cascade, the spurious vector of IRQ 15 (the master's IR2
    /// is in service, the slave's ISR unchanged).
    pub fn acknowledge(&mut self) -> u8 {
        let v = match self.master.pending() {
            Some(CASCADE_IRQ) => {
                self.master.intack(CASCADE_IRQ);
                match self.slave.pending() {
                    Some(irq) => {
                        self.slave.intack(irq);
                        self.slave.vector_base | irq
                    }
                    None => self.slave.vector_base | 7,
                }
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.vector_base | irq
            }
            None => self.master.vector_base | 7,
        };
        self.sync_cascade();
        v
    }

    /// The interrupt request registers, slave in the high byte.
    pub fn irr(&self) -> u16 {
        u16::from(self.master.irr) | u16::from(self.slave.irr) << 8
    }

    /// The in-service registers, slave in the high byte.
    pub fn isr(&self) -> u16 {
        u16::from(self.master.isr) | u16::from(self.slave.isr) << 8
    }

    /// The interrupt mask registers, slave in the high byte.
    pub fn imr(&self) -> u16 {
        u16::from(self.master.imr) | u16::from(self.slave.imr) << 8
    }

    /// The vector bases from ICW2: (master, slave).
    #[cfg(test)]
    pub fn vector_bases(&self) -> (u8, u8) {
        (self.master.vector_base, self.slave.vector_base)
    }

    /// Whether both chips have finished their initialization sequence.
    #[cfg(test)]
    pub fn initialized(&self) -> bool {
        self.master.init == Init::Ready && self.slave.init == Init::Ready
    }
}

#[cfg(test)]
mod tests;
