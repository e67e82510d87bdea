//! The hypervisor console: the serial ports chosen by `console=`, the
//! output queues in front of them, and the `log` backend that writes every
//! line with the time since boot and the CPU number. What the ports receive
//! is queued by [`input`].
//!
//! **Output is asynchronous** (docs/console.md). Every source has its own
//! bounded queue (`basalt_console::out::OutRing`): Basalt's own lines
//! ([`LOG_QUEUE`] bytes) and each domain's console ([`Source`],
//! [`DOMAIN_QUEUE`] bytes). Writers only queue; the drainer ([`pump`]) moves
//! bytes to the UARTs as their transmitters accept them — up to 16 (the
//! FIFO) per port each time LSR.THRE is set — and returns at once when they
//! are busy. It runs from the UART's transmit interrupt (IER.THRE, enabled
//! while output waits, on the receive interrupt's vector), from every local
//! APIC timer interrupt, from the idle loop and after each write; it never
//! spins with a lock held. The drainer switches between sources only at the
//! end of a unit (a line, a multi-line report), so units are never
//! interleaved. A full queue: Basalt's own writer helps drain (its lines
//! are never dropped); the domain with the console is slowed (its callers
//! retry, see `GuestConsole::write`); any other domain's line is dropped
//! whole and counted.
//!
//! Before the scheduler starts ([`start_async`]), and in a panic or fatal
//! fault report, output is synchronous. [`flush`] drains every queue before
//! the test verdict ends the emulator.
//!
//! A port whose transmitter stays busy for [`STALL_NS`] is declared stuck
//! and skipped from then on, so a dead or unplugged UART cannot hang the
//! hypervisor.
//!
//! One lock (`CONSOLE`) serialises every access to the UARTs, output and
//! input, and is only ever held with interrupts off, briefly (one FIFO's
//! worth of bytes per port). The drainer, the receive interrupt and
//! [`poll_input`] only ever *try* it; input that finds it held is left to
//! its holder (see [`input`]), so input never waits for output and never
//! deadlocks on it.

mod input;

pub(crate) use input::{IOAPIC_LOCK, rx_interrupt, timer_poll};
pub use input::{console_gsis, enable_input, input_is_polled, input_stats, poll_input, read_input};

use crate::time;
use alloc::sync::Arc;
use alloc::vec::Vec;
use basalt_boot::cmdline::{Consoles, LogLevel, Parity as CmdParity, SerialParams};
use basalt_console::out::{OutRing, OutStats};
use basalt_console::ratelimit::RateLimit;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::{FifoTriggerLevel, IER, LSR, Parity, WordLength};
use uart_16550::{BaudRate, Config, Uart16550};
use x86_64::instructions::interrupts::without_interrupts;

/// System time a transmitter may stay busy before its port is declared
/// stuck (a 16-byte FIFO drains in 14 ms even at 9600 baud).
const STALL_NS: u64 = 1_000_000_000;
/// Polls of a busy transmitter before a port is declared stuck, in the
/// synchronous paths (before the clock runs, in a panic report).
const STALL_SPINS: u32 = 1_000_000;
/// Bytes of Basalt's own output that may wait for the serial line.
pub const LOG_QUEUE: usize = 16 * 1024;
/// Bytes of a domain's console output that may wait for the serial line.
pub const DOMAIN_QUEUE: usize = 4096;
/// The transmit FIFO of a 16550A.
const FIFO: usize = 16;

const COM1_BASE: u16 = 0x3f8;
const COM2_BASE: u16 = 0x2f8;

struct Port {
    uart: Uart16550<PioBackend>,
    /// I/O port base.
    base: u16,
    stuck: bool,
    /// Whether the UART's receive interrupt is on (else input is polled);
    /// its transmit interrupt then comes on the same line.
    rx_irq: bool,
    /// Whether the transmit FIFO is on (16 bytes per THRE, else 1).
    fifo: bool,
    /// Whether the transmit interrupt (IER.THRE) is on.
    tx_irq: bool,
    /// System time the transmitter last accepted bytes or was seen empty.
    last_ready: u64,
}

impl Port {
    /// Synchronous: spins until the transmitter takes `byte` (bounded).
    fn write_byte_sync(&mut self, byte: u8) {
        if self.stuck {
            return;
        }
        for _ in 0..STALL_SPINS {
            if self.uart.try_send_byte(byte).is_ok() {
                return;
            }
            core::hint::spin_loop();
        }
        self.stuck = true;
    }

    /// Waits until the transmitter has sent every byte (LSR.TEMT), bounded.
    fn drain(&mut self) {
        for _ in 0..STALL_SPINS {
            if self.stuck || self.uart.lsr().contains(LSR::TRANSMITTER_EMPTY) {
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// Turns the transmit interrupt on or off (only where the port
    /// interrupts at all).
    fn set_tx_irq(&mut self, on: bool) {
        let on = on && self.rx_irq && !self.stuck;
        if on != self.tx_irq {
            if on {
                self.uart.enable_interrupts(IER::THR_EMPTY);
            } else {
                self.uart.disable_interrupts(IER::THR_EMPTY);
            }
            self.tx_irq = on;
        }
    }
}

struct Console {
    ports: [Option<Port>; 2],
    /// The source the drainer takes from: 0 = Basalt's log, `i` = the
    /// `i - 1`th of [`SOURCES`].
    current: usize,
}

impl Console {
    /// Synchronous output (boot before the scheduler, panic reports).
    fn write_bytes_sync(&mut self, bytes: &[u8]) {
        for i in 0..self.ports.len() {
            for &b in bytes {
                // Input the receive interrupt left for the lock holder
                // (cheap to check; taken between bytes of long output).
                if input::rx_pending() {
                    input::drain_held(self);
                }
                let Some(port) = self.ports[i].as_mut() else {
                    break;
                };
                if b == b'\n' {
                    port.write_byte_sync(b'\r');
                }
                port.write_byte_sync(b);
            }
        }
    }

    /// Bytes every working port accepts now (0: some transmitter is busy);
    /// with no working port, output is discarded in 64-byte steps.
    fn room(&mut self, now: u64) -> (usize, Option<u16>) {
        let mut room = 64;
        let mut newly_stuck = None;
        for port in self.ports.iter_mut().flatten().filter(|p| !p.stuck) {
            if port.uart.lsr().contains(LSR::THR_EMPTY) {
                port.last_ready = now;
                room = room.min(if port.fifo { FIFO } else { 1 });
            } else if now.saturating_sub(port.last_ready) > STALL_NS {
                port.stuck = true;
                port.set_tx_irq(false);
                newly_stuck = Some(port.base);
            } else {
                room = 0;
            }
        }
        (room, newly_stuck)
    }

    /// Sends what the transmitters accept now, at most `budget` bytes per
    /// port; returns the bytes sent and a port that was found stuck.
    fn transmit(&mut self, mut budget: usize) -> (usize, Option<u16>) {
        let mut sent = 0;
        let mut stuck = None;
        let now = time::now_ns();
        while budget > 0 {
            if input::rx_pending() {
                input::drain_held(self);
            }
            let (room, newly) = self.room(now);
            stuck = stuck.or(newly);
            let room = room.min(budget);
            if room == 0 {
                break;
            }
            let mut buf = [0u8; 64];
            let n = self.next_bytes(&mut buf[..room]);
            if n == 0 {
                break;
            }
            for port in self.ports.iter_mut().flatten().filter(|p| !p.stuck) {
                port.uart.send_bytes(&buf[..n]);
            }
            sent += n;
            budget -= n.min(budget);
        }
        // Cleared before the queues are looked at: a writer that queues
        // after the look sets it again after its push.
        QUEUED.store(false, Ordering::SeqCst);
        let waiting = without_interrupts(queues_hold_output);
        if waiting {
            QUEUED.store(true, Ordering::SeqCst);
        }
        for port in self.ports.iter_mut().flatten() {
            port.set_tx_irq(waiting);
        }
        (sent, stuck)
    }

    /// The next bytes for the line: the unit in progress first, else the
    /// oldest unit of any source.
    fn next_bytes(&mut self, out: &mut [u8]) -> usize {
        let mut sources = SOURCES.lock();
        // Sources of ended domains with nothing left go (never the one in
        // the middle of a unit: `current` keeps pointing at it).
        let mut i = 0;
        while i < sources.len() {
            let idle = Arc::strong_count(&sources[i]) == 1 && {
                let q = sources[i].queue.lock();
                q.is_empty() && q.at_boundary()
            };
            if idle {
                sources.remove(i);
                if self.current > i + 1 {
                    self.current -= 1;
                } else if self.current == i + 1 {
                    self.current = 0;
                }
            } else {
                i += 1;
            }
        }
        let count = sources.len() + 1;
        if self.current >= count {
            self.current = 0;
        }
        // Stay with the current source in the middle of a unit, and while a
        // domain's line goes on (the focused domain's raw output comes in
        // pieces). Basalt's own units are whole lines or a prompt that ends
        // without one: those never hold the drainer.
        let mid_unit = if self.current == 0 {
            !LOG.lock().at_boundary()
        } else {
            let q = sources[self.current - 1].queue.lock();
            !q.at_boundary() || q.in_line()
        };
        if !mid_unit {
            // The source whose next unit is the oldest.
            let mut best: Option<(u64, usize)> = LOG.lock().next_seq().map(|seq| (seq, 0));
            for (i, source) in sources.iter().enumerate() {
                if let Some(seq) = source.queue.lock().next_seq()
                    && best.is_none_or(|(b, _)| seq < b)
                {
                    best = Some((seq, i + 1));
                }
            }
            match best {
                Some((_, index)) => self.current = index,
                None => return 0,
            }
        }
        if self.current == 0 {
            LOG.lock().pull(out)
        } else {
            sources[self.current - 1].queue.lock().pull(out)
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes_sync(s.as_bytes());
        Ok(())
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    ports: [None, None],
    current: 0,
});

/// Runs `f` on the console under its lock, interrupts off; after letting
/// go, takes the input left for the holder while it had the lock (see
/// [`input`]).
fn with_console<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    let r = without_interrupts(|| f(&mut CONSOLE.lock()));
    input::after_unlock();
    r
}

/// Basalt's own output waiting for the line. Held only with interrupts off.
static LOG: Mutex<OutRing<LOG_QUEUE>> = Mutex::new(OutRing::new());
/// Every domain's output queue (held only with interrupts off).
static SOURCES: Mutex<Vec<Arc<Source>>> = Mutex::new(Vec::new());
/// Whether output is queued and drained ([`start_async`]); before, it is
/// written synchronously.
static ASYNC: AtomicBool = AtomicBool::new(false);
/// Whether some port's transmit interrupt is on (then writers need not
/// kick the drainer).
static TX_ARMED: AtomicBool = AtomicBool::new(false);
/// Whether output may be waiting in a queue: set after every push, cleared
/// by the drainer just before it looks at the queues and set again if it
/// finds bytes left. Only [`pump`] reads it, to skip the queue locks at
/// every timer interrupt when nothing was written; a pump that finds it
/// clear for that moment leaves the bytes to the next one.
static QUEUED: AtomicBool = AtomicBool::new(false);

/// The next unit's sequence number, shared by all sources: the drainer
/// sends units in this order. Taken under the unit's queue lock.
static SEQ: AtomicU64 = AtomicU64::new(0);

fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Times a writer of Basalt's own output waited for room.
static LOG_WAITS: AtomicU64 = AtomicU64::new(0);

/// One domain's console output on its way to the serial line, with its
/// budget of log lines the guest can cause.
pub struct Source {
    queue: Mutex<OutRing<DOMAIN_QUEUE>>,
    limit: Mutex<RateLimit>,
}

impl Source {
    /// A new source, registered with the drainer.
    pub fn new() -> Arc<Self> {
        let source = Arc::new(Self {
            queue: Mutex::new(OutRing::new()),
            limit: Mutex::new(RateLimit::new()),
        });
        without_interrupts(|| SOURCES.lock().push(source.clone()));
        source
    }

    /// Queues one whole line (or other unit) of output nobody waits for:
    /// refused whole and counted when it does not fit.
    pub fn push_unit(&self, unit: &[u8]) {
        without_interrupts(|| self.queue.lock().push_unit(unit, next_seq()));
        QUEUED.store(true, Ordering::SeqCst);
        kick();
    }

    /// Queues what fits of `bytes` (the domain with the console): returns
    /// how many were taken; the caller keeps the rest.
    pub fn push_partial(&self, bytes: &[u8]) -> usize {
        let mut n = without_interrupts(|| self.queue.lock().push_partial(bytes, next_seq()));
        QUEUED.store(true, Ordering::SeqCst);
        if n < bytes.len() {
            // Make room if the line can take bytes now, and try once more.
            pump();
            n += without_interrupts(|| self.queue.lock().push_partial(&bytes[n..], next_seq()));
            QUEUED.store(true, Ordering::SeqCst);
        }
        kick();
        n
    }

    /// Bytes that fit now.
    pub fn free(&self) -> usize {
        without_interrupts(|| self.queue.lock().free())
    }

    /// The queue's counters.
    pub fn stats(&self) -> OutStats {
        without_interrupts(|| self.queue.lock().stats())
    }

    /// Whether a log line the guest caused may be printed now: `Some(n)`
    /// with `n` lines suppressed before it, or `None` (counted).
    pub fn log_allowed(&self) -> Option<u64> {
        let now = time::now_ns();
        without_interrupts(|| self.limit.lock().check(now))
    }

    /// Log lines the guest caused that were suppressed, ever.
    pub fn log_suppressed(&self) -> u64 {
        without_interrupts(|| self.limit.lock().total_suppressed())
    }
}

/// Logs a line a guest can cause (an unhandled MSR or port, a refused
/// operation) at `level`, within the domain's budget
/// (`basalt_console::ratelimit`); the first line after suppressed ones says
/// how many were suppressed.
#[macro_export]
macro_rules! guest_log {
    ($domain:expr, $level:expr, $($arg:tt)*) => {{
        use $crate::console::GuestLog as _;
        let __d = &$domain;
        if log::log_enabled!($level) {
            if let Some(__n) = __d.log_allowed() {
                if __n == 0 {
                    log::log!($level, $($arg)*);
                } else {
                    log::log!($level, "{} ({} similar lines of d{} suppressed)",
                        format_args!($($arg)*), __n, __d.log_id());
                }
            }
        }
    }};
}

/// What [`guest_log!`] needs of whatever stands for a domain (the domain,
/// its platform, its console): its id and its budget of log lines.
pub trait GuestLog {
    /// The domain's id.
    fn log_id(&self) -> u32;
    /// Whether a line it caused may be printed now ([`Source::log_allowed`]).
    fn log_allowed(&self) -> Option<u64>;
}

/// Whether any output waits for the line.
pub fn output_pending() -> bool {
    // Not [`QUEUED`]: the drainer clears it for a moment while bytes still
    // wait, and the final flush before the emulator exits must not stop
    // there (it did: a verdict line was lost).
    without_interrupts(queues_hold_output)
}

/// Whether any queue holds bytes. LOG and SOURCES are never held together
/// here: the drainer takes SOURCES, then LOG (`next_bytes`), and a guard
/// of the first operand of `||` would live until the end of the
/// expression, so holding LOG while taking SOURCES could deadlock two CPUs.
fn queues_hold_output() -> bool {
    let log = !LOG.lock().is_empty();
    log || SOURCES.lock().iter().any(|s| !s.queue.lock().is_empty())
}

/// Moves what the transmitters accept now from the queues to the UARTs.
/// Never waits: returns at once when another CPU drains or the
/// transmitters are busy. Any CPU, any context but an NMI.
pub fn pump() -> usize {
    if !QUEUED.load(Ordering::SeqCst) {
        return 0;
    }
    let (sent, stuck) = without_interrupts(|| {
        let Some(mut c) = CONSOLE.try_lock() else {
            return (0, None);
        };
        let r = c.transmit(usize::MAX);
        TX_ARMED.store(
            c.ports.iter().flatten().any(|p| p.tx_irq),
            Ordering::Relaxed,
        );
        r
    });
    input::after_unlock();
    if let Some(base) = stuck {
        log::warn!(
            "console: the UART at I/O port {base:#x} has not taken a byte for {} ms; \
             it is skipped from now on",
            STALL_NS / 1_000_000
        );
    }
    sent
}

/// After a write: drains now unless the transmit interrupt will.
fn kick() {
    if !TX_ARMED.load(Ordering::Relaxed) {
        pump();
    }
}

/// The I/O bases of the UARTs Basalt's console uses (the control domain
/// never reaches them).
pub fn uart_bases() -> [Option<u16>; 2] {
    with_console(|c| c.ports.each_ref().map(|p| p.as_ref().map(|p| p.base)))
}

/// Turns on asynchronous output (the scheduler starts: the timer and the
/// transmit interrupt drive the drainer from now on).
pub fn start_async() {
    let ports = with_console(|c| {
        c.ports
            .each_ref()
            .map(|p| p.as_ref().map(|p| (p.base, p.fifo, p.rx_irq)))
    });
    for (base, fifo, irq) in ports.into_iter().flatten() {
        log::info!(
            "console: output to the UART at {base:#x} is queued: {} per transmitter-empty, {}",
            if fifo {
                "16 bytes (FIFO)"
            } else {
                "1 byte (no FIFO)"
            },
            if irq {
                "drained by its transmit interrupt, the timer and the idle loop"
            } else {
                "drained by the timer and the idle loop"
            }
        );
    }
    ASYNC.store(true, Ordering::SeqCst);
    pump();
}

/// Counters of Basalt's own output queue, and the times a writer waited
/// for room in it.
pub fn log_stats() -> (OutStats, u64) {
    (
        without_interrupts(|| LOG.lock().stats()),
        LOG_WAITS.load(Ordering::Relaxed),
    )
}

/// Queues a unit of Basalt's own output; when it does not fit, helps drain
/// until it does (Basalt's lines are never dropped). A unit larger than
/// the queue goes in pieces.
fn queue_log(bytes: &[u8]) {
    for piece in bytes.chunks(LOG_QUEUE / 2) {
        let mut waited = false;
        let mut last_progress = time::now_ns();
        loop {
            if without_interrupts(|| LOG.lock().push_unit_or_keep(piece, next_seq())) {
                QUEUED.store(true, Ordering::SeqCst);
                break;
            }
            if !waited {
                waited = true;
                LOG_WAITS.fetch_add(1, Ordering::Relaxed);
            }
            if pump() > 0 {
                last_progress = time::now_ns();
            } else if time::now_ns().saturating_sub(last_progress) > 2 * STALL_NS {
                // Nothing moves (no working port, or the drainer is stuck
                // elsewhere): this unit is dropped and counted.
                without_interrupts(|| LOG.lock().push_unit(piece, next_seq()));
                QUEUED.store(true, Ordering::SeqCst);
                break;
            }
            core::hint::spin_loop();
        }
    }
    if ASYNC.load(Ordering::Relaxed) {
        kick();
    } else {
        // Before the scheduler: synchronous, as the boot log must get out
        // even if Basalt stops right after.
        while without_interrupts(|| !LOG.lock().is_empty()) {
            if pump() == 0 {
                core::hint::spin_loop();
                if time_stalled() {
                    break;
                }
            }
        }
    }
}

/// Before the clock runs, `time::now_ns` stands still: the synchronous
/// drain bounds itself by spins instead.
fn time_stalled() -> bool {
    static SPINS: AtomicU32 = AtomicU32::new(0);
    if SPINS.fetch_add(1, Ordering::Relaxed) > STALL_SPINS {
        SPINS.store(0, Ordering::Relaxed);
        return true;
    }
    false
}

/// Set once a CPU panics or faults: from then on only that CPU prints, and it
/// takes the console lock by force so its report always gets out.
static PANICKING: AtomicBool = AtomicBool::new(false);
/// The CPU that prints the report.
static PANIC_OWNER: AtomicUsize = AtomicUsize::new(usize::MAX);

fn uart_config(params: &SerialParams) -> Config {
    Config {
        baud_rate: BaudRate::from_integer(params.baud),
        data_bits: match params.data_bits {
            5 => WordLength::FiveBits,
            6 => WordLength::SixBits,
            7 => WordLength::SevenBits,
            _ => WordLength::EightBits,
        },
        parity: match params.parity {
            CmdParity::None => Parity::Disabled,
            CmdParity::Odd => Parity::Odd,
            CmdParity::Even => Parity::Even,
            CmdParity::Mark => Parity::Forced1,
            CmdParity::Space => Parity::Forced0,
        },
        extra_stop_bits: params.stop_bits == 2,
        // The receive interrupt (when enabled) fires for every byte: a
        // keystroke is taken at once and the 16-byte FIFO absorbs the rest.
        fifo_trigger_level: Some(FifoTriggerLevel::One),
        ..Config::DEFAULT
    }
}

/// Why a requested console port is not in use.
#[derive(Debug, Clone, Copy)]
pub enum PortError {
    /// The scratch-register probe found no UART at the port.
    NotPresent(u16),
    /// The UART rejected the configuration.
    BadConfig(u16),
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPresent(base) => write!(
                f,
                "no UART answers at I/O port {base:#x}; check `console=` and the `comN=` I/O base"
            ),
            Self::BadConfig(base) => write!(
                f,
                "the UART at I/O port {base:#x} rejected the settings; check `comN=` (BAUD must divide 115200)"
            ),
        }
    }
}

fn open(base: u16, params: &SerialParams) -> Result<Port, PortError> {
    // SAFETY: `base` is a standard COM port base (or one the operator named
    // with `comN=...,IO-BASE`); a 16550 occupies 8 ports from it, and the
    // console lock gives this driver exclusive use of it.
    let mut uart = unsafe { Uart16550::new_port(base) }.map_err(|_| PortError::BadConfig(base))?;
    uart.init(uart_config(params)).map_err(|e| match e {
        uart_16550::InitError::DeviceNotPresent => PortError::NotPresent(base),
        _ => PortError::BadConfig(base),
    })?;
    let fifo = uart.isr().fifo_enabled();
    Ok(Port {
        uart,
        base,
        stuck: false,
        rx_irq: false,
        fifo,
        tx_irq: false,
        last_ready: time::now_ns(),
    })
}

/// Opens COM1 with the default settings, before the command line is read, so
/// that boot errors can be reported.
pub fn init_early() {
    let port = open(COM1_BASE, &SerialParams::default()).ok();
    with_console(|c| c.ports = [port, None]);
}

/// Reopens the console on the ports and settings from the command line.
/// Returns the ports that could not be used, for the caller to report once
/// the console works.
pub fn configure(
    consoles: Consoles,
    com1: &SerialParams,
    com2: &SerialParams,
) -> [Option<PortError>; 2] {
    let mut errors = [None, None];
    let mut ports = [None, None];
    let wanted = [
        (consoles.com1, COM1_BASE, com1),
        (consoles.com2, COM2_BASE, com2),
    ];
    for (i, (on, default_base, params)) in wanted.into_iter().enumerate() {
        if on {
            match open(params.io_base.unwrap_or(default_base), params) {
                Ok(port) => ports[i] = Some(port),
                Err(e) => errors[i] = Some(e),
            }
        }
    }
    // The new ports start with their receive interrupts off: call
    // `enable_input` after this.
    with_console(|c| c.ports = ports);
    errors
}

/// Formats into a fixed buffer, then the rest in further pieces.
struct Chunker<'a> {
    buf: [u8; 512],
    len: usize,
    flush: &'a mut dyn FnMut(&[u8]),
}

impl Write for Chunker<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                (self.flush)(&self.buf);
                self.len = 0;
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Writes formatted text to the console as it is (no log prefix): queued
/// as one unit (text longer than 512 bytes in 512-byte units).
pub fn print(args: fmt::Arguments<'_>) {
    if PANICKING.load(Ordering::Acquire) {
        print_forced(args);
        return;
    }
    let mut flush = |bytes: &[u8]| queue_log(bytes);
    let mut c = Chunker {
        buf: [0; 512],
        len: 0,
        flush: &mut flush,
    };
    let _ = c.write_fmt(args);
    let len = c.len;
    queue_log(&c.buf[..len]);
}

/// The panic or fault report: synchronous, by force (see [`PANICKING`]).
fn print_forced(args: fmt::Arguments<'_>) {
    if PANIC_OWNER.load(Ordering::Acquire) != crate::arch::x86_64::percpu::index() {
        // Another CPU is reporting; this one's output would only mix in.
        return;
    }
    // SAFETY: only the reporting CPU gets here; the others are stopped
    // or print nothing, and a lock held by code that was interrupted by
    // the fault must not silence the report.
    unsafe { CONSOLE.force_unlock() };
    let mut c = CONSOLE.lock();
    // Basalt's lines queued before the report go first (unless the fault
    // interrupted a writer of the queue).
    if let Some(mut q) = LOG.try_lock() {
        let mut buf = [0u8; 64];
        loop {
            let n = q.pull(&mut buf);
            if n == 0 {
                break;
            }
            for port in c.ports.iter_mut().flatten() {
                for &b in &buf[..n] {
                    port.write_byte_sync(b);
                }
            }
        }
    }
    let _ = c.write_fmt(args);
}

/// A multi-line report of one source (a crashed domain's diagnostics and
/// VMCS dump): collected, then queued as one unit, so no other source's
/// output comes in between.
pub struct Report(alloc::string::String);

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self(alloc::string::String::new())
    }

    /// Queues the report as one unit.
    pub fn emit(self) {
        if PANICKING.load(Ordering::Acquire) {
            print_forced(format_args!("{}", self.0));
        } else {
            queue_log(self.0.as_bytes());
        }
    }
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Report {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.push_str(s);
        Ok(())
    }
}

/// Whose output goes to the console as it is while the monitor has the
/// input: the control domain (domain 0), as dom0's console is the serial
/// line on Xen. Its output is then slowed, never dropped, and unprefixed;
/// other domains' lines come whole between its writes.
const NO_DOMAIN: u32 = 0;

/// The domain whose output goes to the console as it is (the one with the
/// console input); [`NO_DOMAIN`] (the control domain) while the monitor
/// has it.
static RAW_DOMAIN: AtomicU32 = AtomicU32::new(NO_DOMAIN);

/// Whether domain `id` has the console (its output is written raw).
pub fn is_raw(id: u32) -> bool {
    RAW_DOMAIN.load(Ordering::Relaxed) == id
}

/// Gives the console to domain `id` (`None`: the monitor).
pub fn set_raw(id: Option<u32>) {
    RAW_DOMAIN.store(id.unwrap_or(NO_DOMAIN), Ordering::SeqCst);
}

/// Drains every queue and waits until every console port has sent its last
/// byte, so that a run ending right after (emulator exit, reset) does not
/// cut the last line (the verdict). Bounded: output that other CPUs keep
/// adding is drained up to what was waiting plus [`LOG_QUEUE`] bytes.
pub fn flush() {
    if !PANICKING.load(Ordering::Acquire) {
        let waiting = without_interrupts(|| {
            // One lock at a time (see `queues_hold_output`).
            let log = LOG.lock().len();
            log + SOURCES
                .lock()
                .iter()
                .map(|s| s.queue.lock().len())
                .sum::<usize>()
        });
        // Line ends double: `\n` goes out as `\r\n`.
        let mut budget = 2 * (waiting + LOG_QUEUE);
        let mut idle_spins = 0u32;
        while budget > 0 && output_pending() {
            let n = pump();
            budget = budget.saturating_sub(n);
            if n == 0 {
                idle_spins += 1;
                if idle_spins > 50 * STALL_SPINS {
                    break;
                }
                core::hint::spin_loop();
            } else {
                idle_spins = 0;
            }
        }
    }
    with_console(|c| {
        for port in c.ports.iter_mut().flatten() {
            port.drain();
        }
    });
}

/// Marks the start of a panic report (see [`print`]).
pub fn enter_panic() -> bool {
    let first = PANIC_OWNER
        .compare_exchange(
            usize::MAX,
            crate::arch::x86_64::percpu::index(),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok();
    PANICKING.store(true, Ordering::Release);
    first
}

/// `print!` to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// `println!` to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let micros = time::micros_since_boot();
        let level = match record.level() {
            log::Level::Error => "ERROR",
            log::Level::Warn => "WARN ",
            log::Level::Info => "INFO ",
            log::Level::Debug => "DEBUG",
            log::Level::Trace => "TRACE",
        };
        print(format_args!(
            "[{:5}.{:06}] cpu{} {} {}\n",
            micros / 1_000_000,
            micros % 1_000_000,
            crate::arch::x86_64::percpu::index(),
            level,
            record.args()
        ));
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the log backend at the command line's level.
pub fn init_log(level: LogLevel) {
    let _ = log::set_logger(&LOGGER);
    set_level(level);
}

/// Changes the log level.
pub fn set_level(level: LogLevel) {
    log::set_max_level(match level {
        LogLevel::None => log::LevelFilter::Off,
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warning => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::All => log::LevelFilter::Trace,
    });
}
