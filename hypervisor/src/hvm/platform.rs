//! A domain's platform (docs/platform.md): the devices its vCPUs reach by
//! port I/O ([`super::vdev`]: COM1, the PICs, the PIT, the RTC, PCI
//! configuration, ACPI fixed hardware, port 0xE9) and by MMIO
//! ([`super::vapic`]: local APICs and the I/O APIC), its console, and the
//! [`IrqSink`] through which the interrupt controllers wake its vCPUs.

use super::guest_console::GuestConsole;
use super::irq::IrqSink;
use super::vapic::DomainApic;
use super::vdev::Serial;
use core::sync::atomic::{AtomicBool, AtomicU64};
use spin::Mutex;

/// A domain's devices.
pub struct Platform {
    /// The domain's id (log lines).
    pub id: u32,
    /// Its console: COM1, port 0xE9 and `console_io` write to it.
    pub console: GuestConsole,
    /// Its COM1 (docs/platform.md).
    pub serial: Mutex<Serial>,
    /// Its 8259 PIC pair.
    pub pic: Mutex<basalt_devices::pic::Pic>,
    /// Its 8254 PIT.
    pub pit: Mutex<basalt_devices::pit::Pit>,
    /// When the PIT's IRQ 0 edges were last looked at (system ns).
    pub pit_last_edge: AtomicU64,
    /// Its RTC and CMOS.
    pub rtc: Mutex<basalt_devices::rtc::Rtc>,
    /// Its PCI configuration space (a host bridge).
    pub pci: Mutex<basalt_devices::pci::PciHost>,
    /// ACPI fixed hardware: PM1 event/control blocks, PM timer, reset
    /// register.
    pub pm: Mutex<basalt_devices::acpi_pm::AcpiPm>,
    /// System time (ns) when a timed device (PIT, RTC) may next raise an
    /// interrupt; 0: none.
    pub device_deadline: AtomicU64,
    /// System time (ns) before which the timed devices are not looked at
    /// again ([`super::vdev::MIN_DEVICE_GAP_NS`] after the last look).
    pub device_quiet_until: AtomicU64,
    /// The PIC asks for an interrupt (vCPU 0 injects it before its next
    /// entry); a cheap check for the hot path.
    pub irq_pending: AtomicBool,
    /// Its local APICs and I/O APIC.
    pub apic: DomainApic,
    /// Where its interrupt controllers send wake-ups.
    pub irq: IrqSink,
    /// Its ioreq server (device models in the control domain).
    pub ioreq: super::ioreq::IoreqState,
}

impl Platform {
    /// The devices of domain `id` with `vcpus` vCPUs, in their reset state;
    /// the APICs count time from system time `apic_base_ns`.
    pub fn new(id: u32, vcpus: u32, apic_base_ns: u64, irq: IrqSink) -> Self {
        Self {
            id,
            console: GuestConsole::new(id),
            serial: Mutex::new(super::vdev::new_serial()),
            pic: Mutex::new(basalt_devices::pic::Pic::new()),
            pit: Mutex::new(basalt_devices::pit::Pit::new()),
            pit_last_edge: AtomicU64::new(0),
            rtc: Mutex::new(super::vdev::new_rtc()),
            pci: Mutex::new(basalt_devices::pci::PciHost::new()),
            pm: Mutex::new(super::vdev::new_pm()),
            device_deadline: AtomicU64::new(0),
            device_quiet_until: AtomicU64::new(0),
            irq_pending: AtomicBool::new(false),
            apic: DomainApic::new(vcpus, apic_base_ns),
            irq,
            ioreq: super::ioreq::IoreqState::new(vcpus),
        }
    }
}

impl crate::console::GuestLog for Platform {
    fn log_id(&self) -> u32 {
        self.id
    }
    fn log_allowed(&self) -> Option<u64> {
        self.console.out.log_allowed()
    }
}
