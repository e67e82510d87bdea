//! A domain's virtual machine below the core (docs/architecture.md,
//! "Layers"): its devices (port I/O bus, interrupt controllers) and the
//! emulation of the instructions that reach them (MMIO, string port I/O,
//! guest-virtual memory access). Nothing here names [`crate::common`]: an
//! interrupt that must wake a vCPU goes through the `IrqSink` the domain's
//! platform was handed.

pub mod fep;
pub mod guest_console;
pub mod guestmem;
pub mod ioreq;
pub mod irq;
pub mod memory;
pub mod mmio;
pub mod passthrough;
pub mod pci_pass;
pub mod pirq;
pub mod platform;
pub mod strio;
pub mod vapic;
pub mod vdev;
pub mod xen;
