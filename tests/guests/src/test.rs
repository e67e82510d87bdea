//! Verdict lines and command-line options for the test guests.
//!
//! Every guest ends with one line, then exits with the code its `main`
//! returns:
//!
//! ```text
//! TEST PASS <name>
//! TEST FAIL <name>: <what>
//! ```

use crate::{name, println};
use core::fmt::{self, Write};

/// Prints `TEST PASS <name>`; returns exit code 0.
pub fn pass() -> u32 {
    println!("TEST PASS {}", name());
    0
}

/// Prints `FAIL: <what>` and `TEST FAIL <name>: <what>`; returns exit code
/// 1. Usually through [`fail!`](crate::fail!).
pub fn fail(what: fmt::Arguments<'_>) -> u32 {
    println!("FAIL: {what}");
    println!("TEST FAIL {}: {what}", name());
    1
}

/// `fail!("format", args...)`: [`fail()`] with a formatted message.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        $crate::fail(format_args!($($arg)*))
    };
}

/// A fixed buffer that keeps the first `N` bytes written to it.
#[derive(Debug)]
struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    const fn new() -> Self {
        Text {
            bytes: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        let bytes = &self.bytes[..self.len];
        match core::str::from_utf8(bytes) {
            Ok(text) => text,
            // Cut inside a character: keep the valid part.
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// A list of checks that all run: each prints `ok: <what>` or
/// `FAIL: <what>`; [`Checks::finish`] prints the verdict line naming the
/// first failure.
#[derive(Debug)]
pub struct Checks {
    failures: u32,
    first: Text<160>,
}

impl Default for Checks {
    fn default() -> Self {
        Self::new()
    }
}

impl Checks {
    /// No checks yet.
    pub const fn new() -> Self {
        Checks {
            failures: 0,
            first: Text::new(),
        }
    }

    /// Records one check; returns `ok`.
    pub fn check(&mut self, ok: bool, what: fmt::Arguments<'_>) -> bool {
        if ok {
            println!("ok: {what}");
        } else {
            println!("FAIL: {what}");
            if self.failures == 0 {
                let _ = write!(self.first, "{what}");
            }
            self.failures += 1;
        }
        ok
    }

    /// Number of failed checks so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Prints `TEST PASS <name>` or `TEST FAIL <name>: <first failure>`;
    /// returns the exit code (0 or 1).
    pub fn finish(&self) -> u32 {
        match self.failures {
            0 => pass(),
            1 => {
                println!("TEST FAIL {}: {}", name(), self.first.as_str());
                1
            }
            n => {
                println!(
                    "TEST FAIL {}: {} (and {} more)",
                    name(),
                    self.first.as_str(),
                    n - 1
                );
                1
            }
        }
    }
}

/// The value of option `key` on the command line: `key=value` gives
/// `Some("value")`, a bare `key` gives `Some("")`.
pub fn arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|word| match word.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if word == key => Some(""),
            _ => None,
        })
}

/// Option `key` as a number (decimal, or hex with `0x`), `default` when
/// absent; a malformed value is reported and `default` used.
pub fn arg_u64(cmdline: &str, key: &str, default: u64) -> u64 {
    let Some(text) = arg(cmdline, key) else {
        return default;
    };
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(value) => value,
        Err(_) => {
            println!("guest: option {key}={text:?} is not a number; using {default}");
            default
        }
    }
}
