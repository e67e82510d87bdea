//! The hypervisor command line, in the style of Xen's (see
//! `docs/command-line.md` for every option).
//!
//! Options are separated by white space. A boolean option is `name`,
//! `name=<bool>` (`1/0`, `yes/no`, `on/off`, `true/false`, `enable/disable`)
//! or `no-name`. Everything after a lone `--` is not for the hypervisor
//! (reserved for the control domain, as in Xen). Unknown options and bad
//! values never stop the boot: they are collected so the hypervisor can warn
//! about them in one line each, and the default applies.

use crate::FixedVec;
use core::fmt;

/// How many unknown or invalid options are remembered for the warnings.
pub const MAX_REPORTED: usize = 16;

/// Console log level (`loglvl=`), as in Xen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Print nothing.
    None,
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warning,
    /// The default: what an operator wants to see.
    #[default]
    Info,
    /// Details for developers.
    Debug,
    /// Everything, including traces.
    All,
}

impl LogLevel {
    const NAMES: [(&'static str, LogLevel); 6] = [
        ("none", Self::None),
        ("error", Self::Error),
        ("warning", Self::Warning),
        ("info", Self::Info),
        ("debug", Self::Debug),
        ("all", Self::All),
    ];

    /// Parses a level name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(name, _)| text.eq_ignore_ascii_case(name))
            .map(|(_, level)| *level)
    }

    /// The level's name on the command line.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, level)| *level == self)
            .map_or("?", |(name, _)| name)
    }
}

/// Serial line parity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
    /// Parity bit always 1.
    Mark,
    /// Parity bit always 0.
    Space,
}

/// Settings of one serial port (`com1=`, `com2=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialParams {
    /// Bits per second; the divisor of the 115200 Hz base rate must be whole.
    pub baud: u32,
    /// Data bits, 5 to 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
    /// I/O port base, when not the standard one.
    pub io_base: Option<u16>,
}

impl Default for SerialParams {
    fn default() -> Self {
        Self {
            baud: 115_200,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            io_base: None,
        }
    }
}

impl SerialParams {
    /// The UART base clock divided by 16: the highest rate a PC UART runs at.
    pub const BASE_BAUD: u32 = 115_200;

    /// Parses `BAUD[,DPS[,IO-BASE]]`, e.g. `115200`, `9600,8n1`, `57600,7e2,0x3e8`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const USAGE: &str = "expected BAUD[,DPS[,IO-BASE]], e.g. 115200 or 9600,8n1,0x3f8 \
                             (BAUD must divide 115200)";
        let mut params = Self::default();
        let mut fields = text.split(',');
        let baud = fields.next().unwrap_or_default();
        params.baud = baud.parse().map_err(|_| USAGE)?;
        if params.baud == 0 || Self::BASE_BAUD % params.baud != 0 {
            return Err(USAGE);
        }
        if let Some(dps) = fields.next().filter(|f| !f.is_empty()) {
            let &[d, p, s] = dps.as_bytes() else {
                return Err(USAGE);
            };
            params.data_bits = match d {
                b'5'..=b'8' => d - b'0',
                _ => return Err(USAGE),
            };
            params.parity = match p.to_ascii_lowercase() {
                b'n' => Parity::None,
                b'o' => Parity::Odd,
                b'e' => Parity::Even,
                b'm' => Parity::Mark,
                b's' => Parity::Space,
                _ => return Err(USAGE),
            };
            params.stop_bits = match s {
                b'1' | b'2' => s - b'0',
                _ => return Err(USAGE),
            };
        }
        if let Some(base) = fields.next().filter(|f| !f.is_empty()) {
            let digits = base.strip_prefix("0x").ok_or(USAGE)?;
            params.io_base = Some(u16::from_str_radix(digits, 16).map_err(|_| USAGE)?);
        }
        if fields.next().is_some() {
            return Err(USAGE);
        }
        Ok(params)
    }

    /// The divisor latch value for the baud rate.
    pub fn divisor(&self) -> u16 {
        (Self::BASE_BAUD / self.baud.max(1)) as u16
    }
}

/// Which serial ports carry the console (`console=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consoles {
    /// COM1 (I/O port 0x3f8 unless `com1=` says otherwise).
    pub com1: bool,
    /// COM2 (I/O port 0x2f8 unless `com2=` says otherwise).
    pub com2: bool,
}

impl Default for Consoles {
    fn default() -> Self {
        Self {
            com1: true,
            com2: false,
        }
    }
}

impl Consoles {
    /// Parses a comma-separated list of `com1`, `com2`, `none`.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let mut consoles = Self {
            com1: false,
            com2: false,
        };
        for item in text.split(',') {
            match item {
                "com1" => consoles.com1 = true,
                "com2" => consoles.com2 = true,
                "none" => {}
                _ => return Err("expected a comma-separated list of com1, com2, none"),
            }
        }
        Ok(consoles)
    }
}

/// A fault to cause on purpose (`test-fault=`, tests only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestFault {
    /// Recurse on the boot CPU until its stack overflows into the guard page.
    StackOverflow,
    /// Write to the hypervisor's (read-only) text.
    WriteText,
    /// Fault on the first application processor.
    Ap,
    /// Fault on the boot CPU once another CPU runs a guest vCPU (the stop
    /// NMI then reaches a CPU in VMX non-root operation).
    Guest,
}

impl TestFault {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "stack-overflow" => Some(Self::StackOverflow),
            "write-text" => Some(Self::WriteText),
            "ap" => Some(Self::Ap),
            "guest" => Some(Self::Guest),
            _ => None,
        }
    }
}

/// An option whose value was not understood.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invalid<'a> {
    /// The whole option as written.
    pub option: &'a str,
    /// What was expected.
    pub expected: &'static str,
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.option, self.expected)
    }
}

/// Everything the command line sets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Options<'a> {
    /// `loglvl=`: the console log level.
    pub loglvl: LogLevel,
    /// `console=`: where the console goes.
    pub console: Consoles,
    /// `com1=`: settings of COM1.
    pub com1: SerialParams,
    /// `com2=`: settings of COM2.
    pub com2: SerialParams,
    /// `test-exit` (tests only): end the emulator run with a verdict once
    /// Basalt has nothing left to do, instead of idling.
    pub test_exit: bool,
    /// `test-panic` (tests only): panic on purpose after the boot summary.
    pub test_panic: bool,
    /// `test-pirq` (tests only): simulate a stuck level line on every GSI
    /// the control domain binds (docs/control-domain.md).
    pub test_pirq: bool,
    /// `hvm_fep` (tests only, Xen's name): the forced-emulation prefix
    /// (docs/x86emul.md, "Forced emulation").
    pub hvm_fep: bool,
    /// `test-fault=` (tests only): cause a fault on purpose.
    pub test_fault: Option<TestFault>,
    /// `maxcpus=N`: use at most N CPUs (the boot CPU counts).
    pub maxcpus: Option<usize>,
    /// `sched_credit_tslice_ms=N` (Xen's name): the scheduler's time slice,
    /// 1 to 1000 ms.
    pub sched_tslice_ms: Option<u64>,
    /// `sched_ratelimit_us=N` (Xen's name): the least time a vCPU runs
    /// before a waking one may preempt it, 0 (off) to 500000 µs.
    pub sched_ratelimit_us: Option<u64>,
    /// `credit2_cap_period_ms=N` (Xen's name): the cap accounting period,
    /// 1 to 10000 ms.
    pub cap_period_ms: Option<u64>,
    /// `dom0_mem=SIZE` (Xen's name): the control domain's RAM, overriding its module's
    /// `memory=`.
    pub dom0_mem: Option<u64>,
    /// `dom0_max_vcpus=N` (Xen's name): the control domain's vCPUs, overriding its module's
    /// `vcpus=`.
    pub dom0_max_vcpus: Option<u32>,
    /// `dom0_crash=halt`: when the control domain crashes the host halts after the report
    /// instead of rebooting (`dom0_crash=reboot`, the default).
    pub dom0_crash_halt: bool,
    /// `test-measure=WARMUP_MS,WINDOW_MS` (tests only): after WARMUP_MS of
    /// running guests, measure each domain's CPU share over WINDOW_MS, print
    /// it, and destroy every domain.
    pub test_measure: Option<(u64, u64)>,
    /// Options Basalt does not know.
    pub unknown: FixedVec<&'a str, MAX_REPORTED>,
    /// Known options with a value Basalt could not use (the default applies).
    pub invalid: FixedVec<Invalid<'a>, MAX_REPORTED>,
    /// Everything after a lone `--`.
    pub rest: &'a str,
}

/// A decimal number within `range`.
fn number(value: Option<&str>, range: core::ops::RangeInclusive<u64>) -> Option<u64> {
    value
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| range.contains(n))
}

const BOOL_EXPECTED: &str = "expected a boolean (1/0, yes/no, on/off, true/false, enable/disable)";

fn parse_bool(value: Option<&str>) -> Result<bool, &'static str> {
    match value {
        None => Ok(true),
        Some("1" | "yes" | "on" | "true" | "enable") => Ok(true),
        Some("0" | "no" | "off" | "false" | "disable") => Ok(false),
        Some(_) => Err(BOOL_EXPECTED),
    }
}

/// A size: decimal bytes, or followed by `K`, `M`, `G` or `T` (binary units, either case).
fn parse_size(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = text.split_at_checked(digits)?;
    if number.is_empty() {
        return None;
    }
    let shift = match suffix {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => return None,
    };
    let n: u64 = number.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

impl<'a> Options<'a> {
    /// Parses a command line. Never fails: see the module documentation.
    pub fn parse(cmdline: &'a str) -> Self {
        let mut options = Self::default();
        let mut rest = cmdline;
        let mut first = true;
        loop {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (token, tail) = rest.split_at(end);
            if token.is_empty() {
                break;
            }
            rest = tail;
            if token == "--" {
                options.rest = rest.trim();
                break;
            }
            // Some loaders pass the image path as the first word.
            if first && token.starts_with('/') {
                first = false;
                continue;
            }
            first = false;
            options.apply(token);
        }
        options
    }

    fn apply(&mut self, token: &'a str) {
        let (name, value) = match token.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (token, None),
        };
        // Xen treats `-` and `_` alike in option names.
        let is = |wanted: &str| {
            name.len() == wanted.len()
                && name
                    .bytes()
                    .zip(wanted.bytes())
                    .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
        };
        let result = if is("loglvl") {
            // Xen's `loglvl=LEVEL/RATE-LIMITED-LEVEL`: the second part is accepted and unused.
            let level = value
                .unwrap_or_default()
                .split('/')
                .next()
                .unwrap_or_default();
            LogLevel::parse(level)
                .map(|level| self.loglvl = level)
                .ok_or("expected one of none, error, warning, info, debug, all")
        } else if is("console") {
            Consoles::parse(value.unwrap_or_default()).map(|c| self.console = c)
        } else if is("com1") {
            SerialParams::parse(value.unwrap_or_default()).map(|p| self.com1 = p)
        } else if is("maxcpus") {
            match value.and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n >= 1 => {
                    self.maxcpus = Some(n);
                    Ok(())
                }
                _ => Err("expected a number of CPUs, at least 1"),
            }
        } else if is("sched-credit-tslice-ms") {
            number(value, 1..=1000)
                .map(|n| self.sched_tslice_ms = Some(n))
                .ok_or("expected a time slice from 1 to 1000 ms")
        } else if is("sched-ratelimit-us") {
            number(value, 0..=500_000)
                .map(|n| self.sched_ratelimit_us = Some(n))
                .ok_or("expected a rate limit from 0 (off) to 500000 us")
        } else if is("credit2-cap-period-ms") {
            number(value, 1..=10_000)
                .map(|n| self.cap_period_ms = Some(n))
                .ok_or("expected a cap period from 1 to 10000 ms")
        } else if is("dom0-mem") {
            value
                .and_then(parse_size)
                .filter(|m| (16 << 20..=1 << 40).contains(m))
                .map(|m| self.dom0_mem = Some(m))
                .ok_or("expected a size such as 512M or 2G, from 16M to 1T")
        } else if is("dom0-max-vcpus") {
            number(value, 1..=64)
                .map(|n| self.dom0_max_vcpus = Some(n as u32))
                .ok_or("expected a number of vCPUs from 1 to 64")
        } else if is("dom0-crash") {
            match value {
                Some("reboot") => {
                    self.dom0_crash_halt = false;
                    Ok(())
                }
                Some("halt") => {
                    self.dom0_crash_halt = true;
                    Ok(())
                }
                _ => Err("expected reboot (the default) or halt"),
            }
        } else if is("test-measure") {
            value
                .and_then(|v| v.split_once(','))
                .and_then(|(w, m)| {
                    Some((number(Some(w), 0..=600_000)?, number(Some(m), 1..=600_000)?))
                })
                .map(|p| self.test_measure = Some(p))
                .ok_or("expected WARMUP_MS,WINDOW_MS")
        } else if is("test-fault") {
            TestFault::parse(value.unwrap_or_default())
                .map(|f| self.test_fault = Some(f))
                .ok_or("expected stack-overflow, write-text, ap or guest")
        } else if is("com2") {
            SerialParams::parse(value.unwrap_or_default()).map(|p| self.com2 = p)
        } else if let Some(flag) = self.flag(name) {
            parse_bool(value).map(|v| *flag = v)
        } else if let Some(flag) = name.strip_prefix("no-").and_then(|n| self.flag(n)) {
            if value.is_some() {
                Err("a `no-` option takes no value")
            } else {
                *flag = false;
                Ok(())
            }
        } else {
            let _ = self.unknown.push(token);
            return;
        };
        if let Err(expected) = result {
            let _ = self.invalid.push(Invalid {
                option: token,
                expected,
            });
        }
    }

    fn flag(&mut self, name: &str) -> Option<&mut bool> {
        match name {
            "test-exit" | "test_exit" => Some(&mut self.test_exit),
            "test-panic" | "test_panic" => Some(&mut self.test_panic),
            "test-pirq" | "test_pirq" => Some(&mut self.test_pirq),
            "hvm_fep" | "hvm-fep" => Some(&mut self.hvm_fep),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dom0_options() {
        let o = Options::parse("dom0_mem=512M dom0-max-vcpus=2 dom0_crash=halt");
        assert_eq!(o.dom0_mem, Some(512 << 20));
        assert_eq!(o.dom0_max_vcpus, Some(2));
        assert!(o.dom0_crash_halt);
        assert!(o.invalid.is_empty());
        assert_eq!(Options::parse("dom0_mem=1G").dom0_mem, Some(1 << 30));
        for bad in [
            "dom0_mem=1M",
            "dom0_mem=lots",
            "dom0_mem=",
            "dom0_max_vcpus=0",
            "dom0_max_vcpus=65",
            "dom0_crash=explode",
        ] {
            assert_eq!(Options::parse(bad).invalid.len(), 1, "{bad}");
        }
        assert!(!Options::parse("").dom0_crash_halt);
    }

    #[test]
    fn defaults() {
        let o = Options::parse("");
        assert_eq!(o.loglvl, LogLevel::Info);
        assert_eq!(
            o.console,
            Consoles {
                com1: true,
                com2: false
            }
        );
        assert_eq!(o.com1.baud, 115_200);
        assert!(!o.test_exit && !o.test_panic);
        assert!(o.unknown.is_empty() && o.invalid.is_empty());
    }

    #[test]
    fn xen_style_options() {
        let o = Options::parse(
            "  loglvl=debug/warning console=com2,com1 com1=9600,7e2,0x3e8 test-exit ",
        );
        assert_eq!(o.loglvl, LogLevel::Debug);
        assert_eq!(
            o.console,
            Consoles {
                com1: true,
                com2: true
            }
        );
        assert_eq!(
            o.com1,
            SerialParams {
                baud: 9600,
                data_bits: 7,
                parity: Parity::Even,
                stop_bits: 2,
                io_base: Some(0x3e8)
            }
        );
        assert_eq!(o.com1.divisor(), 12);
        assert!(o.test_exit);
    }

    #[test]
    fn booleans() {
        assert!(Options::parse("test-panic=yes").test_panic);
        assert!(Options::parse("test_panic").test_panic);
        assert!(!Options::parse("test-panic no-test-panic").test_panic);
        assert!(!Options::parse("test-panic=off").test_panic);
        let o = Options::parse("test-panic=maybe");
        assert!(!o.test_panic);
        assert_eq!(o.invalid[0].option, "test-panic=maybe");
        assert!(Options::parse("test-pirq").test_pirq);
        assert!(!Options::parse("test-exit").test_pirq);
        assert!(Options::parse("hvm_fep").hvm_fep);
        assert!(!Options::parse("test-exit").hvm_fep);
        assert!(!Options::parse("hvm_fep=0").hvm_fep);
        assert!(!Options::parse("hvm_fep no-hvm-fep").hvm_fep);
    }

    #[test]
    fn unknown_options_are_collected_and_boot_goes_on() {
        let o = Options::parse("bogus=1 loglvl=warning frobnicate");
        assert_eq!(&*o.unknown, &["bogus=1", "frobnicate"]);
        assert_eq!(o.loglvl, LogLevel::Warning);
    }

    #[test]
    fn bad_values_keep_the_default_and_are_reported() {
        let o = Options::parse("loglvl=loud console=vga com1=1000 com2=9600,9x1 com1=");
        assert_eq!(o.loglvl, LogLevel::Info);
        assert_eq!(o.console, Consoles::default());
        assert_eq!(o.com1, SerialParams::default());
        assert_eq!(o.invalid.len(), 5);
        assert!(o.invalid[0].to_string().contains("none, error, warning"));
    }

    #[test]
    fn scheduler_options() {
        let o = Options::parse(
            "sched_credit_tslice_ms=30 sched-ratelimit-us=0 credit2_cap_period_ms=20 test-measure=100,400",
        );
        assert_eq!(o.sched_tslice_ms, Some(30));
        assert_eq!(o.sched_ratelimit_us, Some(0));
        assert_eq!(o.cap_period_ms, Some(20));
        assert_eq!(o.test_measure, Some((100, 400)));
        assert!(o.invalid.is_empty() && o.unknown.is_empty());
        let o = Options::parse("sched_credit_tslice_ms=0 sched_ratelimit_us=x test-measure=5");
        assert_eq!(o.sched_tslice_ms, None);
        assert_eq!(o.invalid.len(), 3);
    }

    #[test]
    fn maxcpus_and_test_faults() {
        let o = Options::parse("maxcpus=2 test-fault=write-text");
        assert_eq!(o.maxcpus, Some(2));
        assert_eq!(o.test_fault, Some(TestFault::WriteText));
        assert_eq!(
            Options::parse("test-fault=guest").test_fault,
            Some(TestFault::Guest)
        );
        let o = Options::parse("maxcpus=0 maxcpus=x test-fault=boom");
        assert_eq!(o.maxcpus, None);
        assert_eq!(o.test_fault, None);
        assert_eq!(o.invalid.len(), 3);
    }

    #[test]
    fn console_none() {
        let o = Options::parse("console=none");
        assert_eq!(
            o.console,
            Consoles {
                com1: false,
                com2: false
            }
        );
    }

    #[test]
    fn path_first_word_and_rest() {
        let o = Options::parse("/boot/basalt.elf loglvl=error -- root=/dev/sda1 quiet");
        assert_eq!(o.loglvl, LogLevel::Error);
        assert!(o.unknown.is_empty());
        assert_eq!(o.rest, "root=/dev/sda1 quiet");
    }

    #[test]
    fn many_unknown_options_are_counted() {
        let line = "x ".repeat(MAX_REPORTED + 4);
        let o = Options::parse(&line);
        assert_eq!(o.unknown.len(), MAX_REPORTED);
        assert_eq!(o.unknown.dropped(), 4);
    }

    #[test]
    fn serial_params() {
        assert!(SerialParams::parse("115200").is_ok());
        assert!(SerialParams::parse("0").is_err());
        assert!(SerialParams::parse("9600,8n3").is_err());
        assert!(SerialParams::parse("9600,8n1,3f8").is_err());
        assert!(SerialParams::parse("9600,8n1,0x3f8,4").is_err());
        assert_eq!(
            SerialParams::parse("38400,,0x2f8").map(|p| p.io_base),
            Ok(Some(0x2f8))
        );
    }

    #[test]
    fn random_command_lines_never_panic() {
        let alphabet = b"abcdeglnotvx=-_,/ 019\t\xc3\xa9";
        let mut seed = 0x1234_5678_9abc_def1u64;
        for _ in 0..20_000 {
            let mut bytes = Vec::new();
            for _ in 0..(seed % 60) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = Options::parse(&text);
        }
        for word in ["loglvl=", "console=", "com1=", "com2=", "no-", "test-exit="] {
            let _ = Options::parse(word);
        }
    }
}
