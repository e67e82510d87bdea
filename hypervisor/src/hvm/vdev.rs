//! The devices a domain reaches through port I/O (docs/platform.md): the
//! debug console at port 0xE9, a 16550A UART as its COM1 at 0x3F8-0x3FF,
//! the 8259 PIC pair (0x20/0x21, 0xA0/0xA1, ELCR 0x4D0/0x4D1), the 8254
//! PIT (0x40-0x43, 0x61), the MC146818 RTC (0x70/0x71) and PCI
//! configuration mechanism #1 with a host bridge (0xCF8, 0xCFC-0xCFF),
//! models from `basalt-devices`. The PIT and the RTC count in Basalt's system time (the
//! RTC from the wall clock read at boot); each rising edge of the PIT's
//! channel 0 is IRQ 0 and the RTC's interrupt flag is IRQ 8, raised when the
//! scheduler sees their time pass (`advance_time`). COM1 is connected to the console multiplexer:
//! what the guest transmits shows as `(dN)` lines, what the operator types
//! while the domain has the console input arrives in its receive FIFO. Its
//! interrupt line is IRQ 4 of the PIC, whose INTR output is injected into
//! vCPU 0 (the scheduler's run loop, before each VM entry). Any other port reads all ones
//! and ignores writes.

use super::platform::Platform;
use basalt_devices::acpi_pm::{AcpiPm, PmAction};
use basalt_devices::pci::PciHost;
use basalt_devices::pic::Pic;
use basalt_devices::pit::Pit;
use basalt_devices::rtc::Rtc;
use basalt_devices::uart::{
    IER_RDA, IIR_FCR, LCR_DLAB, LSR as LSR_REG, RBR_THR_DLL, SerialOutput, Uart16550,
};
use core::sync::atomic::Ordering;

/// COM1's ISA interrupt line.
const COM1_IRQ: u8 = 4;

/// The guest's COM1 base port.
pub const COM1: u16 = 0x3f8;
/// Bochs/QEMU-style debug console port.
pub const DEBUG_CONSOLE: u16 = 0xe9;

/// Bytes the UART transmitted since the domain last looked.
#[derive(Debug, Default)]
pub struct Transmitted(alloc::vec::Vec<u8>);

impl SerialOutput for Transmitted {
    fn write_byte(&mut self, b: u8) {
        self.0.push(b);
    }
}

/// A domain's COM1.
pub type Serial = Uart16550<Transmitted>;

/// A new COM1 in its reset state.
pub fn new_serial() -> Serial {
    Uart16550::new(Transmitted::default())
}

fn com1_register(port: u16) -> Option<u8> {
    port.checked_sub(COM1).filter(|r| *r < 8).map(|r| r as u8)
}

/// Moves typed input into the UART's receive FIFO, as much as fits.
fn feed(p: &Platform, uart: &mut Serial) {
    let space = uart.rx_space();
    if space == 0 {
        return;
    }
    let mut buf = [0u8; 16];
    let n = p.console.input.lock().read(&mut buf[..space.min(16)]);
    if n > 0 {
        uart.receive(&buf[..n]);
    }
}

/// The RTC's ISA interrupt line (on the slave PIC).
const RTC_IRQ: u8 = 8;
/// The ACPI SCI's line (the FADT and the MADT say IRQ 9, level, active low).
const SCI_IRQ: u8 = basalt_guest::acpi::SCI_IRQ;

/// What a port write asks of the domain as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEffect {
    /// Nothing beyond the device.
    None,
    /// ACPI S5 (soft off): the domain powers off.
    PowerOff,
    /// The reset register: the domain reboots.
    Reset,
    /// The console cannot take the byte now (the domain has the console and
    /// its queue is full): the instruction is not completed; it runs again
    /// after the vCPU gave up the CPU (back-pressure, nothing lost).
    Retry,
    /// The control domain's host pages `[start, end)` (a trapped MSI-X
    /// table, `pci_pass`) leave its stage-2 tables, on every CPU.
    Unmap(u64, u64),
}

/// A domain's ACPI fixed hardware, counting from the domain's creation.
pub fn new_pm() -> AcpiPm {
    AcpiPm::new(crate::time::now_ns())
}

/// Sets ISA interrupt line `line` to `level`: an input of the PIC (which
/// notes whether it now asks for an interrupt) and of the I/O APIC. Lock
/// order: the device, then the PIC, then the APICs.
fn set_irq_line(p: &Platform, line: u8, level: bool) {
    {
        let mut pic = p.pic.lock();
        pic.set_irq(line, level);
        p.irq_pending.store(pic.output(), Ordering::SeqCst);
    }
    super::vapic::set_isa_irq(p, line, level);
}

/// A rising then falling edge on ISA line `line` (the PIT's output pulse).
fn pulse_irq_line(p: &Platform, line: u8) {
    {
        let mut pic = p.pic.lock();
        pic.set_irq(line, true);
        pic.set_irq(line, false);
        p.irq_pending.store(pic.output(), Ordering::SeqCst);
    }
    super::vapic::pulse_isa_irq(p, line);
}

/// The bits an access of `size` bytes (1, 2 or 4) carries.
pub fn size_mask(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

/// Typed input arrived for the domain of `p`: with COM1's receive interrupt on, it
/// goes into the FIFO now (and may raise IRQ 4); otherwise it waits in the
/// input ring for `console_io` or a polling read of COM1.
pub fn input_arrived(p: &Platform) {
    let mut uart = p.serial.lock();
    if uart.ier() & IER_RDA != 0 {
        feed(p, &mut uart);
        set_irq_line(p, COM1_IRQ, uart.irq_level());
    }
}

/// The toolstack asks the domain to power off: its ACPI power button is
/// pressed (`PWRBTN_STS`), and the SCI rises if the guest enabled the event.
pub fn press_power_button(p: &Platform) {
    let now = crate::time::now_ns();
    let level = {
        let mut pm = p.pm.lock();
        pm.press_power_button();
        pm.sci_level(now)
    };
    set_irq_line(p, SCI_IRQ, level);
}

/// The vector to inject into vCPU 0, if the PIC asks for one; `deliver`
/// tries to inject it and says whether it did, and only then is the
/// interrupt acknowledged (moved to the PIC's in-service register).
pub fn take_interrupt(p: &Platform, deliver: impl FnOnce(u8) -> bool) {
    let mut pic = p.pic.lock();
    match pic.pending_vector() {
        Some(vector) => {
            if deliver(vector) {
                pic.acknowledge();
                p.irq_pending.store(pic.output(), Ordering::SeqCst);
            }
        }
        None => p.irq_pending.store(false, Ordering::SeqCst),
    }
}

/// A domain's RTC, set to the wall clock now.
pub fn new_rtc() -> Rtc {
    Rtc::new(crate::time::wall_clock_secs(), crate::time::now_ns())
}

/// The shortest time between two looks at a domain's timed devices: 200 µs
/// (KVM's minimum PIT period). A guest may program the PIT with a count of
/// 2 (an edge every 1.7 µs) or the RTC at 8 kHz with every interrupt on;
/// looking at the devices for each edge would leave its vCPU no time to run
/// (a fuzzing guest found both). Edges that fall in between merge into one,
/// as edges missed by a late timer tick do: the PIT raises one IRQ 0, the
/// RTC's flags stay set.
pub const MIN_DEVICE_GAP_NS: u64 = 200_000;

/// The next time a timed device may raise an interrupt (system ns; 0 =
/// none): the PIT's next IRQ 0 edge, the RTC's next interrupt, the PM
/// timer's next SCI, no earlier than [`MIN_DEVICE_GAP_NS`] after the last
/// look.
fn update_device_deadline(p: &Platform, now: u64) {
    let pit = p.pit.lock().next_irq0_edge(now);
    let rtc = p.rtc.lock().next_irq8(now);
    let sci = p.pm.lock().next_sci(now);
    // While COM1 reports busy, look again every millisecond (16 bytes leave
    // a 115200-baud line in 1.4 ms) to raise THRE when the queue drains.
    let uart = p.serial.lock().tx_busy().then_some(now + 1_000_000);
    let next = [pit, rtc, sci, uart]
        .into_iter()
        .flatten()
        .min()
        .map_or(0, |t| {
            t.max(p.device_quiet_until.load(Ordering::SeqCst)).max(1)
        });
    p.device_deadline.store(next, Ordering::SeqCst);
}

/// Raises the interrupts whose time has come by `now`: the PIT's IRQ 0
/// edges (edges missed in between merge into one, as a late timer tick)
/// and the RTC's IRQ 8 level.
pub fn advance_time(p: &Platform, now: u64) {
    let due = p.device_deadline.load(Ordering::SeqCst);
    if due == 0 || now < due {
        return;
    }
    let last = p.pit_last_edge.swap(now, Ordering::SeqCst);
    let tick = p
        .pit
        .lock()
        .next_irq0_edge(last)
        .is_some_and(|edge| edge <= now);
    let rtc_level = p.rtc.lock().irq_level(now);
    let sci_level = {
        let pm = p.pm.lock();
        pm.enable() != 0 && pm.sci_level(now)
    };
    set_irq_line(p, SCI_IRQ, sci_level);
    refresh_tx_busy(p, &mut p.serial.lock());
    if tick {
        pulse_irq_line(p, 0);
    }
    set_irq_line(p, RTC_IRQ, rtc_level);
    // Measured from the end of this look, so the vCPU runs in between
    // however long the look took.
    p.device_quiet_until.store(
        crate::time::now_ns().saturating_add(MIN_DEVICE_GAP_NS),
        Ordering::SeqCst,
    );
    update_device_deadline(p, now);
}

/// OUT to `port`: the value's low byte for the UART and the PIC, every
/// byte for the debug console. A write to the ACPI sleep or reset
/// registers asks the caller to end or restart the p.
pub fn io_out(p: &Platform, port: u16, size: u8, value: u32) -> IoEffect {
    if p.id == 0 && super::passthrough::active() && !super::passthrough::emulated(port) {
        return super::passthrough::io_out(port, size, value);
    }
    if AcpiPm::handles(port, size) {
        let now = crate::time::now_ns();
        let (action, level) = {
            let mut pm = p.pm.lock();
            let action = pm.write(port, size, value, now);
            (action, pm.sci_level(now))
        };
        set_irq_line(p, SCI_IRQ, level);
        update_device_deadline(p, now);
        return match action {
            Some(PmAction::PowerOff) => IoEffect::PowerOff,
            Some(PmAction::Reset) => IoEffect::Reset,
            Some(PmAction::Sleep(typ)) => {
                crate::guest_log!(
                    p,
                    log::Level::Warn,
                    "d{}: ACPI sleep state with SLP_TYP {typ} is not supported; ignored",
                    p.id
                );
                IoEffect::None
            }
            None => IoEffect::None,
        };
    }
    if PciHost::handles(port, size) {
        p.pci.lock().write(port, size, value);
        return IoEffect::None;
    }
    if port == DEBUG_CONSOLE {
        if p.console.room() == 0 || p.console.write(&[value as u8]) == 0 {
            return IoEffect::Retry;
        }
        return IoEffect::None;
    }
    if Pic::handles(port) {
        let mut pic = p.pic.lock();
        pic.write(port, value as u8);
        p.irq_pending.store(pic.output(), Ordering::SeqCst);
        return IoEffect::None;
    }
    if Pit::handles(port) {
        let now = crate::time::now_ns();
        p.pit.lock().write(port, value as u8, now);
        p.pit_last_edge.store(now, Ordering::SeqCst);
        update_device_deadline(p, now);
        return IoEffect::None;
    }
    if Rtc::handles(port) {
        let now = crate::time::now_ns();
        let level = {
            let mut rtc = p.rtc.lock();
            rtc.write(port, value as u8, now);
            rtc.irq_level(now)
        };
        set_irq_line(p, RTC_IRQ, level);
        update_device_deadline(p, now);
        return IoEffect::None;
    }
    let Some(reg) = com1_register(port) else {
        return IoEffect::None;
    };
    let mut uart = p.serial.lock();
    if reg == RBR_THR_DLL && uart.lcr() & LCR_DLAB == 0 && !uart.loopback() {
        // A byte for the line: with the console full, the OUT waits (a
        // driver that ignores the busy LSR is slowed, never truncated).
        if p.console.room() == 0 {
            uart.set_tx_busy(true);
            set_irq_line(p, COM1_IRQ, uart.irq_level());
            drop(uart);
            update_device_deadline(p, crate::time::now_ns());
            return IoEffect::Retry;
        }
    }
    uart.write(reg, value as u8);
    if uart.ier() & IER_RDA != 0 {
        feed(p, &mut uart);
    }
    let sent = core::mem::take(&mut uart.output_mut().0);
    // Room was checked above: the byte is taken.
    if !sent.is_empty() {
        p.console.write(&sent);
    }
    let busy = tx_busy(p);
    uart.set_tx_busy(busy);
    set_irq_line(p, COM1_IRQ, uart.irq_level());
    drop(uart);
    if busy {
        update_device_deadline(p, crate::time::now_ns());
    }
    IoEffect::None
}

/// Whether COM1 reports its transmitter busy: the domain has the console
/// and its queue has less room than a transmit FIFO's worth (16 bytes), so
/// a driver that writes a FIFO load per THRE never meets a full queue.
fn tx_busy(p: &Platform) -> bool {
    p.console.room() < 16
}

/// Re-reads COM1's busy line (the console queue drained, or the domain lost
/// the console): when it frees, THR counts as emptied (THRE interrupt).
fn refresh_tx_busy(p: &Platform, uart: &mut Serial) {
    if uart.tx_busy() {
        uart.set_tx_busy(tx_busy(p));
        set_irq_line(p, COM1_IRQ, uart.irq_level());
    }
}

/// IN from `port`: the value read (all ones where nothing answers).
pub fn io_in(p: &Platform, port: u16, size: u8) -> u32 {
    if p.id == 0 && super::passthrough::active() && !super::passthrough::emulated(port) {
        return super::passthrough::io_in(port, size);
    }
    let ones = size_mask(size);
    if AcpiPm::handles(port, size) {
        return p.pm.lock().read(port, size, crate::time::now_ns()) & ones;
    }
    if PciHost::handles(port, size) {
        return p.pci.lock().read(port, size);
    }
    let byte = if Pic::handles(port) {
        p.pic.lock().read(port)
    } else if Pit::handles(port) {
        p.pit.lock().read(port, crate::time::now_ns())
    } else if Rtc::handles(port) {
        let now = crate::time::now_ns();
        let (value, level) = {
            let mut rtc = p.rtc.lock();
            let value = rtc.read(port, now);
            (value, rtc.irq_level(now))
        };
        // Reading register C clears the flags: IRQ 8 may drop.
        set_irq_line(p, RTC_IRQ, level);
        update_device_deadline(p, now);
        value
    } else if let Some(reg) = com1_register(port) {
        let mut uart = p.serial.lock();
        feed(p, &mut uart);
        if reg == LSR_REG || reg == IIR_FCR {
            let busy = tx_busy(p);
            uart.set_tx_busy(busy);
        }
        let value = uart.read(reg);
        set_irq_line(p, COM1_IRQ, uart.irq_level());
        value
    } else {
        return ones;
    };
    // A wider read of an 8-bit device gets the register in its low byte and
    // the bus's ones above.
    (ones & !0xff) | u32::from(byte)
}
