//! Physical interrupts of the control domain (docs/control-domain.md,
//! "Physical interrupts"): a host GSI that passes through
//! (`basalt_platform::pirq::passed_through`) is bound, when dom0 writes its
//! virtual I/O APIC entry, to the host I/O APIC pin with Basalt's vector
//! for it, to the boot CPU; the host interrupt marks it pending, and it is
//! raised in dom0's virtual I/O APIC outside interrupt context.
//!
//! * **Interrupt context** ([`interrupt`], CPU 0, from the IDT or a VM exit)
//!   touches atomics and the host I/O APIC only: edge, EOI and mark pending;
//!   level, mask the host pin, EOI and mark pending; a storm masks the pin.
//! * **Delivery** ([`deliver`]: by dom0's vCPUs before each guest entry, and
//!   by CPU 0 after every interrupt that woke it or ended a guest's run, at
//!   its scheduling points and before it sleeps): a pending edge pulses the
//!   virtual pin, a pending level asserts the virtual line; the vIOAPIC's
//!   message kicks or wakes the vCPU it targets.
//! * **MSI and MSI-X** (docs/control-domain.md, "MSI", "MSI-X"): a host
//!   vector of `basalt_devices::pci_pass`'s MSI slots or MSI-X entries is
//!   marked pending and EOIed; delivery raises it in dom0's local APICs with
//!   dom0's own message.
//! * **Level EOI** ([`eoi`], from `vapic` after dom0's EOI cleared remote
//!   IRR): the virtual line was deasserted under the APIC lock; the host
//!   pin is unmasked, and fires again if the device still asserts it.

use super::platform::Platform;
use crate::arch::x86_64::apic::{self, IoApicRegs};
use basalt_devices::pci_pass::{MESSAGES, MSI_VECTOR_BASE};
use basalt_platform::ioapic::{Polarity, RedirectionEntry, TriggerMode, physical_destination};
use basalt_platform::pirq::{self as policy, GSIS, STORM_LIMIT, Storm};
use basalt_platform::topology::Topology;
use basalt_vapic::ioapic::IoApicInterrupt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use spin::{Mutex, Once};
use x86_64::instructions::interrupts::without_interrupts;

/// The host I/O APIC pin of each GSI, and the boot CPU's APIC id.
struct Host {
    pins: [Option<(IoApicRegs, u8)>; GSIS],
    dest: u8,
}

static HOST: Once<Host> = Once::new();
/// GSIs that pass through (bit n = GSI n).
static THROUGH: AtomicU32 = AtomicU32::new(0);
/// Each GSI's host entry as bound, unmasked (`to_bits`; 0: never bound).
static ENTRY: [AtomicU64; GSIS] = [const { AtomicU64::new(0) }; GSIS];
/// Bound GSIs that are level-triggered.
static LEVEL: AtomicU32 = AtomicU32::new(0);
/// Bound GSIs that dom0's entry leaves unmasked.
static ON: AtomicU32 = AtomicU32::new(0);
/// GSIs masked for a storm, until dom0 writes their entry again.
static STORMED: AtomicU32 = AtomicU32::new(0);
/// Storms not reported yet.
static REPORT: AtomicU32 = AtomicU32::new(0);
/// Pending interrupts: edge GSIs in bits 0-23, level GSIs in bits 32-55,
/// [`STORM_REPORT`] while [`REPORT`] is not empty.
static PENDING: AtomicU64 = AtomicU64::new(0);
const STORM_REPORT: u64 = 1 << 63;
/// Pending MSIs and MSI-X entries (bit n = `PciPass::message` n).
static MSI_PENDING: AtomicU64 = AtomicU64::new(0);
/// Storm accounting per GSI; held only with interrupts off.
static STORMS: Mutex<[Storm; GSIS]> = Mutex::new([Storm::NEW; GSIS]);
/// `test-pirq`: each binding and each host EOI of a level GSI is followed
/// by a host interrupt of it (a self-IPI of its vector), as from a device
/// that never lets its line go.
static TEST: AtomicBool = AtomicBool::new(false);

/// Finds the host I/O APIC pin of GSIs 0-23 and decides which pass
/// through. Call once on the boot CPU after `console::enable_input`.
pub fn init(topology: &Topology, test: bool) {
    TEST.store(test, Ordering::Relaxed);
    let mut pins = [None; GSIS];
    let mut served = 0u32;
    for io in topology.ioapics() {
        let virt = crate::mm::map_mmio(u64::from(io.address), 4096);
        // SAFETY: `virt` maps the I/O APIC's register page uncached.
        let regs = unsafe { IoApicRegs::new(virt) };
        let n = regs.entries();
        for (gsi, slot) in pins.iter_mut().enumerate() {
            if let Some(pin) = (gsi as u32).checked_sub(io.gsi_base).filter(|p| *p < n) {
                *slot = Some((regs, pin as u8));
                served |= 1 << gsi;
            }
        }
    }
    let bsp = topology.cpus().first().copied().unwrap_or(0);
    let Ok(dest) = physical_destination(bsp).map_err(|e| {
        log::warn!("physical interrupts cannot reach the control domain: {e}");
    }) else {
        return;
    };
    let through = policy::passed_through(crate::console::console_gsis(), served);
    HOST.call_once(|| Host { pins, dest });
    super::pci_pass::with(|p, _| p.set_msi_destination(dest));
    crate::fault::set_device_interrupt(interrupt);
    THROUGH.store(through, Ordering::SeqCst);
    log::debug!("physical interrupts: GSIs {through:#08x} (bit n = GSI n) may reach dom0");
}

/// Writes `gsi`'s bound host entry, masked or not.
fn write_host(gsi: usize, masked: bool) {
    let bits = ENTRY[gsi].load(Ordering::SeqCst);
    let e = RedirectionEntry::from_bits(bits).filter(|_| bits != 0);
    if let (Some(e), Some((regs, pin))) = (e, HOST.get().and_then(|h| h.pins[gsi])) {
        without_interrupts(|| {
            let _io = crate::console::IOAPIC_LOCK.lock();
            regs.write_redirection(pin, e.with_mask(masked));
        });
    }
}

/// Host interrupt `vector` (one of `policy::vector`'s) on this CPU, with
/// interrupts off: atomics and the host I/O APIC only.
pub fn interrupt(vector: u8) {
    let slot = vector.wrapping_sub(MSI_VECTOR_BASE);
    if usize::from(slot) < MESSAGES {
        MSI_PENDING.fetch_or(1 << slot, Ordering::SeqCst);
        apic::eoi();
        return;
    }
    let Some(gsi) = policy::gsi_of(vector) else {
        apic::eoi();
        return;
    };
    let bit = 1u32 << gsi;
    let storm = STORMS.lock()[gsi].tick(crate::time::now_ns());
    let level = LEVEL.load(Ordering::SeqCst) & bit != 0;
    if level || storm {
        write_host(gsi, true);
    }
    apic::eoi();
    if storm {
        STORMED.fetch_or(bit, Ordering::SeqCst);
        REPORT.fetch_or(bit, Ordering::SeqCst);
        PENDING.fetch_or(STORM_REPORT, Ordering::SeqCst);
    } else {
        let shift = if level { 32 } else { 0 };
        PENDING.fetch_or(u64::from(bit) << shift, Ordering::SeqCst);
    }
}

/// Whether [`deliver`] has work: CPU 0 looks before it sleeps and calls it
/// after every interrupt that woke it or ended a guest's run.
pub fn pending() -> bool {
    PENDING.load(Ordering::Relaxed) != 0 || MSI_PENDING.load(Ordering::Relaxed) != 0
}

/// Raises dom0's pending physical interrupts in its virtual I/O APIC `p`
/// and reports storms (one atomic load when there is nothing). Called by
/// every vCPU before it enters its guest (another domain's leaves them
/// pending) and by CPU 0's service with dom0's platform (`None` when there
/// is no control domain: they are dropped).
pub fn deliver(p: Option<&Platform>) {
    if !pending() || p.is_some_and(|p| p.id != 0) {
        return;
    }
    let bits = PENDING.swap(0, Ordering::SeqCst);
    let msis = MSI_PENDING.swap(0, Ordering::SeqCst);
    let report = REPORT.swap(0, Ordering::SeqCst);
    for gsi in (0..GSIS).filter(|g| report & 1 << g != 0) {
        log::warn!(
            "d0: GSI {gsi} masked: more than {STORM_LIMIT} interrupts within 1 s (a device dom0 \
             does not service, or a wrong trigger mode or polarity); it stays masked until dom0 \
             writes its I/O APIC redirection entry again"
        );
    }
    let Some(p) = p else {
        return;
    };
    for gsi in (0..GSIS).filter(|g| bits & 1 << g != 0) {
        super::vapic::pulse_gsi(p, gsi);
    }
    for gsi in (0..GSIS).filter(|g| bits & 1 << (g + 32) != 0) {
        super::vapic::host_level(p, gsi, true);
    }
    for slot in (0..MESSAGES).filter(|s| msis & 1 << s != 0) {
        // Disabled since the host interrupt: dropped, as the device's would be.
        let Some((address, data)) = super::pci_pass::with(|p, _| p.message(slot)) else {
            continue;
        };
        match IoApicInterrupt::from_msi(address, data) {
            Some(msg) => super::vapic::raise_msi(p, msg),
            None => crate::guest_log!(
                p,
                log::Level::Warn,
                "d0: MSI dropped: message {address:#x}/{data:#x} is not a fixed or \
                 lowest-priority interrupt to a local APIC (vector 16-255)"
            ),
        }
    }
}

/// dom0's EOI ended the level interrupts of `gsis` (bit n = GSI n): their
/// host pins are unmasked unless dom0 masked them or they stormed.
pub fn eoi(gsis: u32) {
    let open = gsis & ON.load(Ordering::SeqCst) & !STORMED.load(Ordering::SeqCst);
    for gsi in (0..GSIS).filter(|g| open & 1 << g != 0) {
        write_host(gsi, false);
        test_interrupt(gsi);
    }
}

/// Domain `p` wrote its virtual I/O APIC entry `pin` from `old` to `new`:
/// for dom0 and a GSI that passes through, a change of mask, trigger mode
/// or polarity (or any write after a storm) programs the host pin.
pub fn entry_written(p: &Platform, pin: usize, old: u64, new: u64) {
    let bit = 1u32.checked_shl(pin as u32).unwrap_or(0);
    if p.id != 0 || THROUGH.load(Ordering::Relaxed) & bit == 0 {
        return;
    }
    let stormed = STORMED.fetch_and(!bit, Ordering::SeqCst) & bit != 0;
    let Some(h) = HOST
        .get()
        .filter(|_| stormed || policy::rebind_needed(old, new))
    else {
        return;
    };
    without_interrupts(|| STORMS.lock()[pin] = Storm::NEW);
    let e = policy::host_entry(pin, new, h.dest);
    // Masked while it changes: no interrupt of the old binding follows.
    write_host(pin, true);
    ENTRY[pin].store(e.with_mask(false).to_bits(), Ordering::SeqCst);
    let level = e.trigger == TriggerMode::Level;
    LEVEL.fetch_and(!bit, Ordering::SeqCst);
    ON.fetch_and(!bit, Ordering::SeqCst);
    LEVEL.fetch_or(if level { bit } else { 0 }, Ordering::SeqCst);
    ON.fetch_or(if e.masked { 0 } else { bit }, Ordering::SeqCst);
    PENDING.fetch_and(!(u64::from(bit) | u64::from(bit) << 32), Ordering::SeqCst);
    // A line in service ends: if the device still asserts it, the host pin
    // fires again.
    super::vapic::host_level(p, pin, false);
    write_host(pin, e.masked);
    test_interrupt(pin);
    crate::guest_log!(
        p,
        log::Level::Debug,
        "d0: GSI {pin} bound to host vector {:#x}, {}, {}{}",
        e.vector,
        if level { "level" } else { "edge" },
        if e.polarity == Polarity::ActiveLow {
            "active low"
        } else {
            "active high"
        },
        if e.masked { ", masked" } else { "" }
    );
}

/// `test-pirq`: a host interrupt of `gsi` if it is bound level and
/// unmasked, by a self-IPI to the boot CPU.
fn test_interrupt(gsi: usize) {
    let stuck = LEVEL.load(Ordering::SeqCst) & ON.load(Ordering::SeqCst) & 1 << gsi != 0;
    if let Some(h) = HOST.get().filter(|_| stuck && TEST.load(Ordering::Relaxed)) {
        let to = apic::Destination::Apic(u32::from(h.dest));
        apic::send_ipi(apic::Delivery::Fixed(policy::vector(gsi)), to);
    }
}
