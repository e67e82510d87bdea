//! The hypervisor console: the serial ports chosen by `console=`, and the
//! `log` backend that writes every line with the time since boot and the
//! CPU number. What the ports receive is queued by [`input`].
//!
//! Output never blocks forever: a port whose transmitter stays busy for
//! [`STALL_SPINS`] polls is declared stuck and skipped from then on, so a
//! dead or unplugged UART cannot hang the hypervisor.
//!
//! One lock (`CONSOLE`) serialises every access to the UARTs, output and
//! input. Output takes it with interrupts as they are; the receive
//! interrupt and [`poll_input`] only ever *try* it, and when it is held
//! they leave a note that its holder reads before it lets go (see
//! [`input`]), so input never waits for output and never deadlocks on it.

mod input;

pub use input::{enable_input, input_is_polled, input_stats, poll_input, read_input};
pub(crate) use input::{rx_interrupt, timer_poll};

use crate::time;
use basalt_boot::cmdline::{Consoles, LogLevel, Parity as CmdParity, SerialParams};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::{FifoTriggerLevel, LSR, Parity, WordLength};
use uart_16550::{BaudRate, Config, Uart16550};

/// Polls of a busy transmitter before a port is considered stuck.
const STALL_SPINS: u32 = 1_000_000;

const COM1_BASE: u16 = 0x3f8;
const COM2_BASE: u16 = 0x2f8;

struct Port {
    uart: Uart16550<PioBackend>,
    /// I/O port base.
    base: u16,
    stuck: bool,
    /// Whether the UART's receive interrupt is on (else input is polled).
    rx_irq: bool,
}

impl Port {
    fn write_byte(&mut self, byte: u8) {
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
}

struct Console {
    ports: [Option<Port>; 2],
}

impl Port {
    /// Waits until the transmitter has sent every byte (LSR.TEMT), bounded.
    fn drain(&mut self) {
        for _ in 0..STALL_SPINS {
            if self.stuck || self.uart.lsr().contains(LSR::TRANSMITTER_EMPTY) {
                return;
            }
            core::hint::spin_loop();
        }
    }
}

impl Console {
    fn write_bytes(&mut self, bytes: &[u8]) {
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
                    port.write_byte(b'\r');
                }
                port.write_byte(b);
            }
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    ports: [None, None],
});

/// Runs `f` on the console under its lock; after letting go, takes the
/// input left for the holder while it had the lock (see [`input`]).
fn with_console<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    let r = f(&mut CONSOLE.lock());
    input::after_unlock();
    r
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
    Ok(Port {
        uart,
        base,
        stuck: false,
        rx_irq: false,
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

/// Writes formatted text to the console as it is (no log prefix).
pub fn print(args: fmt::Arguments<'_>) {
    if PANICKING.load(Ordering::Acquire) {
        if PANIC_OWNER.load(Ordering::Acquire) != crate::arch::x86_64::percpu::index() {
            // Another CPU is reporting; this one's output would only mix in.
            return;
        }
        // SAFETY: only the reporting CPU gets here; the others are stopped
        // or print nothing, and a lock held by code that was interrupted by
        // the fault must not silence the report.
        unsafe { CONSOLE.force_unlock() };
        let _ = CONSOLE.lock().write_fmt(args);
        return;
    }
    with_console(|c| {
        let _ = c.write_fmt(args);
    });
}

/// Writes bytes to the console as they are: a domain's output while it has
/// the console (terminal control sequences included).
pub fn write_raw(bytes: &[u8]) {
    if PANICKING.load(Ordering::Acquire) {
        return;
    }
    with_console(|c| c.write_bytes(bytes));
}

/// The domain whose output goes to the console as it is (the one with the
/// console input); 0 = none (the monitor has it).
static RAW_DOMAIN: AtomicU32 = AtomicU32::new(0);

/// Whether domain `id` has the console (its output is written raw).
pub fn is_raw(id: u32) -> bool {
    RAW_DOMAIN.load(Ordering::Relaxed) == id
}

/// Gives the console to domain `id` (`None`: the monitor).
pub fn set_raw(id: Option<u32>) {
    RAW_DOMAIN.store(id.unwrap_or(0), Ordering::SeqCst);
}

/// Waits until every console port has sent its last byte, so that a run
/// ending right after (emulator exit, reset) does not cut the last line.
pub fn flush() {
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

/// A `fmt::Write` onto the console (for dumps).
#[derive(Debug)]
pub struct Writer;

impl Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        print(format_args!("{s}"));
        Ok(())
    }
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
