//! The ACPI fixed hardware the guest's FADT describes (`basalt-guest`'s `acpi.rs`), as a pure
//! state machine with an explicit clock: the PM1a event and control blocks, the PM timer and
//! the reset control register.
//!
//! | port | size | register | ACPI 6.0 |
//! |---|---|---|---|
//! | 0x600 | 2 | PM1 status: write 1 to clear | §4.8.3.1.1, Table 4-16 |
//! | 0x602 | 2 | PM1 enable | §4.8.3.1.2, Table 4-17 |
//! | 0x604 | 2 | PM1 control: `SCI_EN`, `BM_RLD`, `GBL_RLS`, `SLP_TYP`, `SLP_EN` | §4.8.3.2.1, Table 4-18 |
//! | 0x608 | 4 | PM timer: 24 bits at 3.579545 MHz, read only | §4.8.3.3, Table 4-19 |
//! | 0xCF9 | 1 | reset control (`RST_CNT` of Intel's I/O controller hubs) | FADT `RESET_REG`, §5.2.9 |
//!
//! Every access takes `now_ns`, a monotonic time in nanoseconds from the caller; nothing here
//! reads a clock. The timer is computed, not ticked: it reads 0 at the `now_ns` given to
//! [`AcpiPm::new`] and counts `floor(elapsed_ns * 3579545 / 10^9)` clocks after it, modulo
//! 2^24 (the FADT leaves `TMR_VAL_EXT` clear, so bits 31:24 read 0).
//!
//! Accesses of 1, 2 or 4 bytes at any port of the PM blocks (0x600-0x605, 0x608-0x60B) act
//! like that many byte accesses in increasing address order, as on the chipsets the
//! specification was modelled on: Linux uses 2-byte accesses for PM1 and 4 for the timer, but
//! ACPICA or AML may use others. Bytes of an access that fall outside every register (0x606,
//! 0x607, 0x60C and up) read as 0xFF and ignore writes. The reset register is claimed only for
//! a 1-byte access to 0xCF9 exactly: 0xCF8 as a dword and 0xCFC-0xCFF are PCI configuration
//! mechanism #1 ([`crate::pci`]), so a dword access at 0xCF8 is not this model's.
//!
//! The events:
//!
//! * `TMR_STS` (status bit 0) is set whenever bit 23 of the counter changes (every 2^23 clocks,
//!   2.34 s), as the specification says; it is computed from the clock, so it is set at the
//!   exact moment without anything ticking. [`AcpiPm::next_sci`] tells the caller when to look
//!   again if `TMR_EN` is set (Linux leaves it clear).
//! * `PWRBTN_STS` (bit 8) is set by [`AcpiPm::press_power_button`]: the toolstack's request
//!   that the guest shut down cleanly.
//! * The other status bits (`BM_STS`, `GBL_STS`, `SLPBTN_STS`, `RTC_STS`, `PCIEXP_WAKE_STS`,
//!   `WAK_STS`) are never set: there is no bus master monitor, no firmware to release the global
//!   lock, no fixed sleep button (the FADT makes it a control method), no RTC alarm wired to
//!   ACPI and no sleep to wake from. Their enable bits are stored all the same, because ACPICA
//!   checks that an enable bit it sets reads back (otherwise Linux logs "No response from
//!   Global Lock hardware, disabling lock").
//! * The SCI (IRQ 9, level, active low at the I/O APIC as the MADT says) is asserted while any
//!   status bit is set with its enable bit ([`AcpiPm::sci_level`]). `SCI_EN` always reads 1: the
//!   platform has no SMI command port and is always in ACPI mode.
//!
//! Writing `SLP_EN` (control bit 13, write only) returns a [`PmAction`]: power off for the
//! `SLP_TYP` [`S5_SLP_TYP`] that the DSDT's `\_S5` gives, [`PmAction::Sleep`] for any other
//! type (the hypervisor supports no sleeping state). Writing 0xCF9 with `RST_CPU` (bit 2) set
//! returns [`PmAction::Reset`]. What to do is the caller's business: the model only reports.
//!
//! Simplifications: `GBL_RLS` (control bit 2) is accepted and ignored (there is no firmware to
//! signal); `BM_RLD` is stored and does nothing; the reset type bits of 0xCF9 (`SYS_RST`,
//! `FULL_RST`) are stored for reads but do not change [`PmAction::Reset`].

/// PM1a event block, first half: PM1 status (2 bytes).
pub const PM1_STATUS: u16 = 0x600;
/// PM1a event block, second half: PM1 enable (2 bytes).
pub const PM1_ENABLE: u16 = 0x602;
/// PM1a control block (2 bytes).
pub const PM1_CONTROL: u16 = 0x604;
/// The PM timer (4 bytes).
pub const PM_TIMER: u16 = 0x608;
/// The reset control register (1 byte), the FADT's `RESET_REG`.
pub const RESET_CONTROL: u16 = 0xCF9;

/// The PM timer's clock, in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// The timer's width: it counts modulo 2^24.
pub const PM_TIMER_MASK: u32 = 0x00FF_FFFF;

/// PM1 status: the timer's bit 23 changed.
pub const TMR_STS: u16 = 1 << 0;
/// PM1 status: firmware released the global lock (never set here).
pub const GBL_STS: u16 = 1 << 5;
/// PM1 status: the power button was pressed.
pub const PWRBTN_STS: u16 = 1 << 8;
/// PM1 status: the fixed sleep button was pressed (never set here).
pub const SLPBTN_STS: u16 = 1 << 9;
/// PM1 status: the RTC alarm fired (never set here).
pub const RTC_STS: u16 = 1 << 10;

/// PM1 enable: SCI on `TMR_STS`.
pub const TMR_EN: u16 = 1 << 0;
/// PM1 enable: SCI on `GBL_STS`.
pub const GBL_EN: u16 = 1 << 5;
/// PM1 enable: SCI on `PWRBTN_STS`.
pub const PWRBTN_EN: u16 = 1 << 8;
/// PM1 enable: SCI on `SLPBTN_STS`.
pub const SLPBTN_EN: u16 = 1 << 9;
/// PM1 enable: SCI on `RTC_STS`.
pub const RTC_EN: u16 = 1 << 10;
/// PM1 enable: PCI Express wake events disabled.
pub const PCIEXP_WAKE_DIS: u16 = 1 << 14;
/// The PM1 enable bits that are stored (the others read 0).
pub const PM1_ENABLE_BITS: u16 = TMR_EN | GBL_EN | PWRBTN_EN | SLPBTN_EN | RTC_EN | PCIEXP_WAKE_DIS;
/// The status bits that have an enable bit, and raise the SCI with it.
const SCI_EVENTS: u16 = TMR_STS | GBL_STS | PWRBTN_STS | SLPBTN_STS | RTC_STS;

/// PM1 control: SCI (rather than SMI) events; always reads 1.
pub const SCI_EN: u16 = 1 << 0;
/// PM1 control: bus master requests wake from C3.
pub const BM_RLD: u16 = 1 << 1;
/// PM1 control: release the global lock to firmware (write only).
pub const GBL_RLS: u16 = 1 << 2;
/// PM1 control: the sleeping type, bits 10-12.
pub const SLP_TYP_MASK: u16 = 7 << SLP_TYP_SHIFT;
/// PM1 control: the first bit of `SLP_TYP`.
pub const SLP_TYP_SHIFT: u32 = 10;
/// PM1 control: enter the sleeping state `SLP_TYP` (write only, reads 0).
pub const SLP_EN: u16 = 1 << 13;
/// The PM1 control bits that are stored (`SCI_EN` is added on reads).
const PM1_CONTROL_BITS: u16 = BM_RLD | SLP_TYP_MASK;

/// `SLP_TYP` of S5 (soft off), as the DSDT's `\_S5` package gives it.
pub const S5_SLP_TYP: u8 = 5;

/// Reset control: `SYS_RST`, the reset is a full system reset rather than a CPU-only one.
pub const SYS_RST: u8 = 1 << 1;
/// Reset control: `RST_CPU`, writing it set resets (the register reads it back as 0).
pub const RST_CPU: u8 = 1 << 2;
/// Reset control: `FULL_RST`, power is cycled during the reset.
pub const FULL_RST: u8 = 1 << 3;
/// The reset control bits that are stored (the others read 0).
const RESET_CONTROL_BITS: u8 = SYS_RST | FULL_RST;

const NS_PER_S: u128 = 1_000_000_000;

/// Timer clocks counted in `ns` nanoseconds.
fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PM_TIMER_HZ) / NS_PER_S) as u64
}

/// The least number of nanoseconds in which `ticks` clocks are counted.
fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * NS_PER_S)
        .div_ceil(u128::from(PM_TIMER_HZ))
        .min(u128::from(u64::MAX)) as u64
}

/// Replaces byte `n` (0 or 1) of `word` with `byte`.
fn set_byte(word: u16, n: u16, byte: u8) -> u16 {
    (word & !(0xFF << (8 * n))) | (u16::from(byte) << (8 * n))
}

/// All ones in `size` bytes: what a read of nothing returns.
fn ones(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => u32::MAX,
    }
}

/// What the guest asked the platform to do, returned by [`AcpiPm::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmAction {
    /// `SLP_EN` with `SLP_TYP` = [`S5_SLP_TYP`]: enter S5, soft off. The guest is done.
    PowerOff,
    /// A write to the reset control register with `RST_CPU`: reset the machine (the guest's
    /// `reboot`, ACPI's `RESET_VALUE` 0x06, or Linux's `reboot=pci`).
    Reset,
    /// `SLP_EN` with another `SLP_TYP` (given): a sleeping state this platform does not
    /// describe, as no `\_S1`-`\_S4` object exists.
    Sleep(u8),
}

/// The PM1a event and control blocks, the PM timer and the reset control register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiPm {
    /// When the timer read 0.
    origin_ns: u64,
    /// Latched status bits (all but `TMR_STS`, which is computed).
    status: u16,
    /// The count of bit-23 changes (`ticks >> 23`) when `TMR_STS` was last cleared: it reads
    /// set once the count has moved on.
    timer_epoch: u64,
    /// PM1 enable ([`PM1_ENABLE_BITS`] only).
    enable: u16,
    /// PM1 control as stored (`BM_RLD`, `SLP_TYP`).
    control: u16,
    /// The reset control register as stored (`SYS_RST`, `FULL_RST`).
    reset_control: u8,
}

impl AcpiPm {
    /// The registers as after power-on at `now_ns`: no status, nothing enabled, `SLP_TYP` 0, the
    /// timer at 0.
    pub const fn new(now_ns: u64) -> Self {
        AcpiPm {
            origin_ns: now_ns,
            status: 0,
            timer_epoch: 0,
            enable: 0,
            control: 0,
            reset_control: 0,
        }
    }

    /// Whether a `size`-byte access (1, 2 or 4) at `port` belongs to this model: one that starts
    /// in the PM1 event block (0x600-0x603), the PM1 control block (0x604-0x605) or the PM timer
    /// (0x608-0x60B), or a 1-byte access to 0xCF9 exactly.
    pub fn handles(port: u16, size: u8) -> bool {
        matches!(size, 1 | 2 | 4)
            && (matches!(port, PM1_STATUS..=0x605 | PM_TIMER..=0x60B)
                || (port == RESET_CONTROL && size == 1))
    }

    /// Timer clocks since power-on.
    fn ticks(&self, now_ns: u64) -> u64 {
        ns_to_ticks(now_ns.saturating_sub(self.origin_ns))
    }

    /// The PM timer at `now_ns`: 24 bits.
    pub fn timer(&self, now_ns: u64) -> u32 {
        self.ticks(now_ns) as u32 & PM_TIMER_MASK
    }

    /// PM1 status as a read at `now_ns` returns it.
    pub fn status(&self, now_ns: u64) -> u16 {
        let timer = if self.ticks(now_ns) >> 23 != self.timer_epoch {
            TMR_STS
        } else {
            0
        };
        self.status | timer
    }

    /// PM1 enable.
    pub fn enable(&self) -> u16 {
        self.enable
    }

    /// PM1 control as a read returns it (`SCI_EN` set, `SLP_EN` clear).
    pub fn control(&self) -> u16 {
        self.control | SCI_EN
    }

    /// The level of the SCI at `now_ns`: whether a status bit is set with its enable bit.
    pub fn sci_level(&self, now_ns: u64) -> bool {
        self.status(now_ns) & self.enable & SCI_EVENTS != 0
    }

    /// The first time strictly after `now_ns` at which an enabled status bit will be set without
    /// further guest action, so the caller can arm a timer and then look at
    /// [`AcpiPm::sci_level`]: when `TMR_EN` is set and `TMR_STS` clear, the next change of the
    /// timer's bit 23. `None` when nothing enabled sets itself (`TMR_EN` clear, or `TMR_STS`
    /// already set). The SCI may already be up for another event; the level is what counts.
    pub fn next_sci(&self, now_ns: u64) -> Option<u64> {
        if self.enable & TMR_EN == 0 || self.status(now_ns) & TMR_STS != 0 {
            return None;
        }
        let at = self
            .origin_ns
            .saturating_add(ticks_to_ns((self.timer_epoch + 1) << 23));
        Some(at.max(now_ns + 1))
    }

    /// Sets `PWRBTN_STS`, as pressing the power button does: the guest gets an SCI if it enabled
    /// `PWRBTN_EN`, and then normally shuts down (Linux sends `KEY_POWER` to user space).
    pub fn press_power_button(&mut self) {
        self.status |= PWRBTN_STS;
    }

    /// The register byte at `port` (a PM block port), or `None` outside every register.
    fn read_byte(&self, port: u16, now_ns: u64) -> Option<u8> {
        let (word, n) = match port {
            0x600..=0x601 => (self.status(now_ns), port - PM1_STATUS),
            0x602..=0x603 => (self.enable, port - PM1_ENABLE),
            0x604..=0x605 => (self.control(), port - PM1_CONTROL),
            0x608..=0x60B => {
                return Some((self.timer(now_ns) >> (8 * (port - PM_TIMER))) as u8);
            }
            _ => return None,
        };
        Some((word >> (8 * n)) as u8)
    }

    /// Writes `byte` to `port` (a PM block port).
    fn write_byte(&mut self, port: u16, byte: u8, now_ns: u64) -> Option<PmAction> {
        match port {
            0x600..=0x601 => {
                let clear = u16::from(byte) << (8 * (port - PM1_STATUS));
                self.status &= !clear;
                if clear & TMR_STS != 0 {
                    self.timer_epoch = self.ticks(now_ns) >> 23;
                }
            }
            0x602..=0x603 => {
                self.enable = set_byte(self.enable, port - PM1_ENABLE, byte) & PM1_ENABLE_BITS;
            }
            0x604..=0x605 => {
                let n = port - PM1_CONTROL;
                self.control = set_byte(self.control, n, byte) & PM1_CONTROL_BITS;
                if (u16::from(byte) << (8 * n)) & SLP_EN != 0 {
                    let typ = ((self.control & SLP_TYP_MASK) >> SLP_TYP_SHIFT) as u8;
                    return Some(if typ == S5_SLP_TYP {
                        PmAction::PowerOff
                    } else {
                        PmAction::Sleep(typ)
                    });
                }
            }
            // The timer is read only; 0x606, 0x607 and beyond are nothing.
            _ => {}
        }
        None
    }

    /// A guest read of `size` bytes (1, 2 or 4) at `port` at `now_ns`, little-endian. Reads have
    /// no side effect. An access [`AcpiPm::handles`] refuses reads all ones.
    pub fn read(&self, port: u16, size: u8, now_ns: u64) -> u32 {
        if !Self::handles(port, size) {
            return ones(size);
        }
        if port == RESET_CONTROL {
            return u32::from(self.reset_control);
        }
        (0..u16::from(size)).fold(0, |value, i| {
            let byte = self.read_byte(port + i, now_ns).unwrap_or(0xFF);
            value | u32::from(byte) << (8 * i)
        })
    }

    /// A guest write of the low `size` bytes (1, 2 or 4) of `value` at `port` at `now_ns`.
    /// Returns what the guest asked the platform to do, if anything: [`PmAction::PowerOff`] or
    /// [`PmAction::Sleep`] for `SLP_EN`, [`PmAction::Reset`] for `RST_CPU`. An access
    /// [`AcpiPm::handles`] refuses is ignored.
    pub fn write(&mut self, port: u16, size: u8, value: u32, now_ns: u64) -> Option<PmAction> {
        if !Self::handles(port, size) {
            return None;
        }
        if port == RESET_CONTROL {
            let byte = value as u8;
            self.reset_control = byte & RESET_CONTROL_BITS;
            return (byte & RST_CPU != 0).then_some(PmAction::Reset);
        }
        let mut action = None;
        for i in 0..u16::from(size) {
            if let Some(a) = self.write_byte(port + i, (value >> (8 * i)) as u8, now_ns) {
                action = Some(a);
            }
        }
        action
    }
}

#[cfg(test)]
mod tests;
