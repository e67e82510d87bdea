//! Console input: the bytes the console UARTs receive, queued in ring 0 for
//! whoever owns the input (the monitor or the focused domain,
//! docs/console.md).
//!
//! * **Queue.** One bounded ring ([`QUEUE_BYTES`] bytes,
//!   `basalt_console::ring::Ring`) behind a spin lock that is only ever held
//!   with interrupts off, so the receive interrupt on the boot CPU and a
//!   consumer on any CPU never deadlock on it. When nobody reads, the oldest
//!   bytes are overwritten and counted ([`InputStats::dropped`]).
//! * **Receive interrupt.** [`enable_input`] routes COM1's ISA IRQ 4 (COM2's
//!   IRQ 3), after the MADT's interrupt source overrides, through the I/O
//!   APIC that serves its GSI to [`vector::CONSOLE_RX`] on the boot CPU, and
//!   turns on the UART's received-data interrupt (IER bit 0). The handler
//!   ([`rx_interrupt`]) runs from the IDT (the CPU in Basalt with IF=1) and
//!   from a VM exit on an external interrupt (acknowledged on exit,
//!   `fault::external_interrupt`).
//! * **Polling.** A port that cannot interrupt (no I/O APIC, an APIC id an I/O
//!   APIC cannot address, an I/O base without a known ISA IRQ) is read by
//!   [`poll_input`], which any CPU may call at any time; every local APIC
//!   timer interrupt calls it while some port is polled ([`timer_poll`]).
//! * **UART access.** The UARTs are reached only under the console lock,
//!   which output holds with interrupts enabled. The interrupt and the poll
//!   only *try* the lock; when it is held they set [`RX_PENDING`] (and, for a
//!   level-triggered route, mask the pin so it does not fire again and
//!   again), and the holder drains the UARTs before it lets go: between two
//!   output bytes ([`drain_held`]) or right after unlocking
//!   ([`after_unlock`]). The flag is a Dekker pair with the lock (store,
//!   fence, look at the other side), so a byte is never left behind.
//! * **Consumer.** CPU 0 reads the queue at its scheduling points and
//!   when an interrupt wakes it from idle (the monitor, `crate::common::monitor`).
//!
//! [`vector::CONSOLE_RX`]: crate::arch::x86_64::idt::vector::CONSOLE_RX

use super::{COM1_BASE, COM2_BASE, CONSOLE, Console, PANICKING};
use crate::arch::x86_64::apic::{self, IoApicRegs};
use crate::arch::x86_64::idt::vector;
use crate::mm;
use basalt_console::ring::Ring;
use basalt_platform::ioapic::{PinRoute, Polarity, TriggerMode};
use basalt_platform::topology::Topology;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use spin::{Mutex, Once};
use uart_16550::spec::registers::{IER, LSR};
use x86_64::instructions::interrupts::without_interrupts;

/// Bytes the input queue holds.
pub const QUEUE_BYTES: usize = 1024;
/// Most bytes taken from one UART in one go (the receive FIFO holds 16): a
/// sender faster than Basalt cannot keep a CPU in the handler.
const DRAIN_BOUND: usize = 64;

/// The input queue. Held only with interrupts off.
static QUEUE: Mutex<Ring<QUEUE_BYTES>> = Mutex::new(Ring::new());
/// Set when a UART may hold input that could not be taken because the
/// console lock was held; cleared by whoever drains under the lock.
static RX_PENDING: AtomicBool = AtomicBool::new(false);
/// Whether some console port is read by polling.
static POLLED: AtomicBool = AtomicBool::new(false);
/// Receive interrupts taken.
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// Receiver overruns the UARTs reported (bytes lost in the hardware).
static OVERRUNS: AtomicU64 = AtomicU64::new(0);
/// Times the interrupt or a poll found the console lock held and left the
/// input to its holder.
static DEFERRED: AtomicU64 = AtomicU64::new(0);
/// Whether the first input was logged.
static FIRST_LOGGED: AtomicBool = AtomicBool::new(false);

/// A level-triggered route, masked while its UART waits for the lock holder.
#[derive(Debug, Clone, Copy)]
struct LevelPin {
    regs: IoApicRegs,
    route: PinRoute,
}

/// The level-triggered routes (none on PCs, where ISA IRQs are edge).
static LEVEL_PINS: Once<[Option<LevelPin>; 2]> = Once::new();
/// Serialises I/O APIC register access after boot; held with interrupts off.
pub(crate) static IOAPIC_LOCK: Mutex<()> = Mutex::new(());
/// The GSIs of the console UARTs (bit n = GSI n), which Basalt keeps.
static GSIS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// The GSIs the console UARTs interrupt on (bit n = GSI n; known after
/// [`enable_input`]).
pub fn console_gsis() -> u32 {
    GSIS.load(Ordering::Relaxed)
}
/// Whether the level-triggered pins are masked.
static LEVEL_MASKED: AtomicBool = AtomicBool::new(false);

/// Counters of the console input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputStats {
    /// Bytes queued, ever.
    pub received: u64,
    /// Bytes overwritten in the queue before anyone read them.
    pub dropped: u64,
    /// Receiver overruns reported by the UARTs (input lost in hardware).
    pub overruns: u64,
    /// Receive interrupts taken.
    pub interrupts: u64,
    /// Times input was left to the holder of the console lock.
    pub deferred: u64,
    /// Bytes waiting in the queue.
    pub queued: usize,
}

/// Takes up to `buf.len()` bytes of input, oldest first; returns how many.
/// Never blocks; any CPU, any context but an NMI.
pub fn read_input(buf: &mut [u8]) -> usize {
    without_interrupts(|| QUEUE.lock().read(buf))
}

/// Whether some console port is read by polling (the scheduler should then
/// call [`poll_input`] every few milliseconds on some CPU).
pub fn input_is_polled() -> bool {
    POLLED.load(Ordering::Relaxed)
}

/// The console input counters.
pub fn input_stats() -> InputStats {
    let (received, dropped, queued) = without_interrupts(|| {
        let q = QUEUE.lock();
        (q.written(), q.dropped(), q.len())
    });
    InputStats {
        received,
        dropped,
        overruns: OVERRUNS.load(Ordering::Relaxed),
        interrupts: INTERRUPTS.load(Ordering::Relaxed),
        deferred: DEFERRED.load(Ordering::Relaxed),
        queued,
    }
}

/// Moves what the console UARTs hold into the queue; returns the bytes
/// queued. Any CPU, any time, interrupts on or off: when the console lock
/// is held (output in progress, here or elsewhere) the holder takes the
/// input before it lets go and this returns 0.
pub fn poll_input() -> usize {
    take(|| {})
}

/// The local APIC timer's share: polls input while some port is polled,
/// and drains output (the polled budget of the transmit side).
pub(crate) fn timer_poll() {
    if input_is_polled() {
        poll_input();
    }
    if !PANICKING.load(Ordering::Acquire) {
        super::pump();
    }
}

/// The console UARTs' interrupt ([`vector::CONSOLE_RX`]: received data, or
/// the transmitter ready for more), from the IDT or a VM exit, interrupts
/// off: drains the UARTs into the input queue, moves waiting output to
/// them, and signals the end of interrupt.
pub(crate) fn rx_interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    if !PANICKING.load(Ordering::Acquire) {
        take(mask_level_pins);
        super::pump();
    }
    apic::eoi();
}

/// Drains the UARTs if the console lock is free, else leaves the input to
/// its holder (calling `on_busy` first). Logs what it took (safe: the lock
/// was free, so this CPU's interrupted code does not hold it).
fn take(on_busy: fn()) -> usize {
    let guard = match CONSOLE.try_lock() {
        Some(guard) => guard,
        None => {
            DEFERRED.fetch_add(1, Ordering::Relaxed);
            on_busy();
            // Dekker with `after_unlock`: flag, fence, look at the lock.
            RX_PENDING.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let Some(guard) = CONSOLE.try_lock() else {
                return 0;
            };
            guard
        }
    };
    let mut c = guard;
    let n = drain_held(&mut c);
    drop(c);
    after_unlock();
    if n > 0 {
        log::trace!("console: received {n} bytes");
        if !FIRST_LOGGED.swap(true, Ordering::Relaxed) {
            log::debug!(
                "console: first input: {n} bytes ({} receive interrupts so far)",
                INTERRUPTS.load(Ordering::Relaxed)
            );
        }
    }
    n
}

/// Whether input is waiting for the console lock's holder.
pub(super) fn rx_pending() -> bool {
    RX_PENDING.load(Ordering::Relaxed)
}

/// With the console lock held: takes the input left for the holder.
pub(super) fn drain_held(c: &mut Console) -> usize {
    RX_PENDING.store(false, Ordering::SeqCst);
    let n = drain(c);
    if LEVEL_MASKED.swap(false, Ordering::SeqCst) {
        // The UARTs are drained: a level still asserted fires at once.
        set_level_pins_masked(false);
    }
    n
}

/// Right after the console lock was let go: takes the input left while it
/// was held, unless another CPU holds the lock again (it will look too).
pub(super) fn after_unlock() {
    fence(Ordering::SeqCst);
    while RX_PENDING.load(Ordering::SeqCst) {
        let Some(mut c) = CONSOLE.try_lock() else {
            break;
        };
        drain_held(&mut c);
        drop(c);
        fence(Ordering::SeqCst);
    }
}

/// Reads every console UART while it has data (bounded) into the queue.
fn drain(c: &mut Console) -> usize {
    let mut total = 0;
    for port in c.ports.iter_mut().flatten() {
        let mut buf = [0u8; DRAIN_BOUND];
        let mut n = 0;
        let mut more = false;
        loop {
            let lsr = port.uart.lsr();
            if lsr.contains(LSR::OVERRUN_ERROR) {
                OVERRUNS.fetch_add(1, Ordering::Relaxed);
            }
            if !lsr.contains(LSR::DATA_READY) {
                break;
            }
            if n == buf.len() {
                more = true;
                break;
            }
            match port.uart.try_receive_byte() {
                Ok(b) => {
                    buf[n] = b;
                    n += 1;
                }
                Err(_) => break,
            }
        }
        if more && port.rx_irq {
            // The UART still asserts its interrupt: an edge-triggered pin
            // would never see another edge. Turning the interrupt off and
            // on makes a new one, and the handler comes back for the rest.
            port.uart.disable_interrupts(IER::DATA_READY);
            port.uart.enable_interrupts(IER::DATA_READY);
        }
        if n > 0 {
            without_interrupts(|| QUEUE.lock().write(&buf[..n]));
        }
        total += n;
    }
    total
}

fn mask_level_pins() {
    if LEVEL_PINS
        .get()
        .is_some_and(|p| p.iter().any(Option::is_some))
    {
        LEVEL_MASKED.store(true, Ordering::SeqCst);
        set_level_pins_masked(true);
    }
}

fn set_level_pins_masked(masked: bool) {
    let Some(pins) = LEVEL_PINS.get() else {
        return;
    };
    without_interrupts(|| {
        let _io = IOAPIC_LOCK.lock();
        for p in pins.iter().flatten() {
            p.regs
                .write_redirection(p.route.pin, p.route.entry.with_mask(masked));
        }
    });
}

/// The ISA IRQ of a UART at a standard I/O base.
fn isa_irq(base: u16) -> Option<u8> {
    match base {
        COM1_BASE => Some(4),
        COM2_BASE => Some(3),
        _ => None,
    }
}

fn name(index: usize) -> &'static str {
    ["COM1", "COM2"].get(index).copied().unwrap_or("COM?")
}

/// Turns on console input: routes each console UART's ISA IRQ through its
/// I/O APIC to [`vector::CONSOLE_RX`] on the boot CPU (`topology.cpus()[0]`)
/// and enables its receive interrupt; ports that cannot interrupt are
/// polled, with a warning. Call once on the boot CPU, after
/// `console::configure`, the local APIC set-up and the masking of the I/O
/// APICs, with interrupts off.
pub fn enable_input(topology: &Topology) {
    let bsp = topology.cpus().first().copied().unwrap_or(0);
    let bases = without_interrupts(|| {
        let c = CONSOLE.lock();
        c.ports.each_ref().map(|p| p.as_ref().map(|p| p.base))
    });
    let regs_of = |io: &basalt_platform::topology::IoApic| {
        let virt = mm::map_mmio(u64::from(io.address), 4096);
        // SAFETY: `virt` maps the I/O APIC's register page uncached (the
        // same mapping the platform set-up made when it masked the pins).
        unsafe { IoApicRegs::new(virt) }
    };
    let mut irq_on = [false; 2];
    let mut level = [None; 2];
    let mut polled = false;
    for (i, base) in bases.iter().enumerate() {
        let Some(base) = *base else {
            continue;
        };
        let Some(irq) = isa_irq(base) else {
            log::info!(
                "console: {} at I/O port {base:#x} has no known ISA IRQ; its input is polled",
                name(i)
            );
            polled = true;
            continue;
        };
        GSIS.fetch_or(
            1u32.checked_shl(topology.isa_route(irq).gsi).unwrap_or(0),
            Ordering::Relaxed,
        );
        match topology.route_isa_irq(irq, vector::CONSOLE_RX, bsp, |io| regs_of(io).entries()) {
            Ok(route) => {
                let regs = regs_of(&route.ioapic);
                let written = without_interrupts(|| {
                    let _io = IOAPIC_LOCK.lock();
                    regs.write_redirection(route.pin, route.entry);
                    regs.read_redirection(route.pin)
                });
                // Delivery status (12) and remote IRR (14) are the hardware's.
                if written & !(1 << 12 | 1 << 14) != route.entry.to_bits() {
                    log::warn!(
                        "console: I/O APIC {} pin {} reads back {written:#x} after writing {:#x}; \
                         {} input is polled instead",
                        route.ioapic.id,
                        route.pin,
                        route.entry.to_bits(),
                        name(i)
                    );
                    without_interrupts(|| {
                        let _io = IOAPIC_LOCK.lock();
                        regs.write_redirection(route.pin, route.entry.with_mask(true));
                    });
                    polled = true;
                    continue;
                }
                log::info!(
                    "console: {} input on ISA IRQ {irq} -> GSI {}{} -> I/O APIC {} pin {} ({}, {}) \
                     -> vector {:#x} on APIC id {bsp}",
                    name(i),
                    route.isa.gsi,
                    if route.isa.overridden {
                        " (MADT override)"
                    } else {
                        ""
                    },
                    route.ioapic.id,
                    route.pin,
                    match route.isa.trigger {
                        TriggerMode::Edge => "edge",
                        TriggerMode::Level => "level",
                    },
                    match route.isa.polarity {
                        Polarity::ActiveHigh => "active high",
                        Polarity::ActiveLow => "active low",
                    },
                    vector::CONSOLE_RX
                );
                if route.isa.trigger == TriggerMode::Level {
                    level[i] = Some(LevelPin { regs, route });
                }
                irq_on[i] = true;
            }
            Err(e) => {
                log::warn!(
                    "console: {} input cannot interrupt: {e}; it is polled instead",
                    name(i)
                );
                polled = true;
            }
        }
    }
    LEVEL_PINS.call_once(|| level);
    POLLED.store(polled, Ordering::Relaxed);
    without_interrupts(|| {
        let mut c = CONSOLE.lock();
        for (port, on) in c.ports.iter_mut().zip(irq_on) {
            if let Some(port) = port.as_mut().filter(|_| on) {
                port.rx_irq = true;
                port.uart.enable_interrupts(IER::DATA_READY);
            }
        }
    });
    // Whatever arrived before the interrupt was on.
    poll_input();
}
