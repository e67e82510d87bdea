//! Basalt's virtual platform (docs/platform.md): the devices an unmodified
//! guest sees, as pure register state machines.
//!
//! * [`uart::Uart16550`]: a 16550A UART — the eight registers at offsets
//!   0..=7, DLAB switching, the 16-byte receive FIFO, interrupt
//!   identification in the 16550's priority order, loopback and the modem
//!   status lines — enough for Linux's 8250 driver to probe it as a 16550A.
//! * [`pic::Pic`]: the 8259A master/slave pair with its ELCR.
//! * [`pit::Pit`]: the 8254 timer with port 0x61's channel-2 gate and output.
//! * [`rtc::Rtc`]: the MC146818 real-time clock and CMOS memory.
//! * [`pci::PciHost`]: PCI configuration mechanism #1 with a 440FX host bridge.
//! * [`pci_pass::PciPass`]: the control domain's view of the host's mechanism #1,
//!   forwarded, with MSI and MSI-X (the capability and the table) dom0's on
//!   Basalt's vectors.
//! * [`acpi_pm::AcpiPm`]: the ACPI fixed hardware the FADT describes — PM1 status,
//!   enable and control (power-off through `SLP_TYP`/`SLP_EN`, the power button),
//!   the 24-bit PM timer and the reset control register at 0xCF9.
//!
//! Each model only sees register reads and writes and the bytes its caller
//! feeds in; it reports what the guest should see (register values, the
//! level of its interrupt line) and what it sends out. Turning VM exits into
//! register accesses and levels into interrupts is the hypervisor's job;
//! nothing here touches hardware.

#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acpi_pm;
pub mod pci;
pub mod pci_pass;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod uart;

#[cfg(test)]
mod test_rng;

pub use uart::{SerialOutput, Uart16550};
