//! A domain's console (docs/console.md): what the guest writes (port
//! 0xE9, its COM1, `console_io`) on its way to the serial line as `(dN)`
//! lines or, while the domain has the console, as it is; and what the
//! operator typed for it.

use alloc::sync::Arc;
use alloc::vec::Vec;
use basalt_console::ring::Ring;
use spin::Mutex;

/// Bytes of console input waiting for a domain to read them.
pub const CONSOLE_INPUT: usize = 256;

/// The newest bytes of a domain's console output kept for the toolstack
/// (domain control's `console_read`).
pub const CONSOLE_HISTORY: usize = 4096;

/// Longest console line of a domain without the console; a longer one is
/// cut into lines of this length.
const LINE_MAX: usize = 512;

/// A domain's console.
pub struct GuestConsole {
    /// The domain's id (its `(dN)` prefix and its focus).
    pub id: u32,
    /// The line it has started.
    line: Mutex<Vec<u8>>,
    /// Its output on the way to the serial line, with counters and its
    /// budget of log lines it can cause (`crate::console::Source`).
    pub out: Arc<crate::console::Source>,
    /// Console input typed for this domain, read through `console_io` or
    /// its COM1.
    pub input: Mutex<Ring<CONSOLE_INPUT>>,
    /// The newest [`CONSOLE_HISTORY`] bytes it wrote (taken bytes only),
    /// never read: copied by position (`Ring::copy_at`).
    pub history: Mutex<Ring<CONSOLE_HISTORY>>,
}

impl GuestConsole {
    /// The console of domain `id`: nothing written, nothing typed.
    pub fn new(id: u32) -> Self {
        Self {
            id,
            line: Mutex::new(Vec::new()),
            out: crate::console::Source::new(),
            input: Mutex::new(Ring::new()),
            history: Mutex::new(Ring::new()),
        }
    }

    /// Adds console output from the guest; returns how many of `bytes`
    /// were taken. The domain with the console: its bytes go out as they
    /// are (prompts and terminal control included), as many as its queue
    /// has room for; the caller keeps the rest and retries (back-pressure:
    /// never lost). Any other domain: complete lines are queued as
    /// `(dN) line` units, each dropped whole and counted when its queue is
    /// full; all bytes are taken.
    pub fn write(&self, bytes: &[u8]) -> usize {
        let taken = self.write_out(bytes);
        self.history.lock().write(&bytes[..taken]);
        taken
    }

    fn write_out(&self, bytes: &[u8]) -> usize {
        let mut buf = self.line.lock();
        if crate::console::is_raw(self.id) {
            if !buf.is_empty() {
                // The line it had started before it got the console.
                let n = self.out.push_partial(&buf);
                buf.drain(..n);
                if !buf.is_empty() {
                    return 0;
                }
            }
            return self.out.push_partial(bytes);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = LINE_MAX - buf.len();
            let window = &rest[..rest.len().min(room)];
            let (text, ends_line, used) = match window.iter().position(|&b| b == b'\n') {
                Some(i) => (&window[..i], true, i + 1),
                None => (window, window.len() == room, window.len()),
            };
            buf.extend(text.iter().copied().filter(|&b| b != b'\r'));
            rest = &rest[used..];
            if ends_line {
                let mut prefix = crate::StackString::<16>::new();
                prefix.push_fmt(format_args!("(d{}) ", self.id));
                let head = prefix.as_str().len();
                let mut unit = [0u8; LINE_MAX + 16];
                unit[..head].copy_from_slice(prefix.as_str().as_bytes());
                unit[head..head + buf.len()].copy_from_slice(&buf);
                unit[head + buf.len()] = b'\n';
                self.out.push_unit(&unit[..head + buf.len() + 1]);
                buf.clear();
            }
        }
        bytes.len()
    }

    /// Bytes of console output this domain can hand over now without
    /// waiting: what its queue has room for while it has the console
    /// (back-pressure), else unlimited (output nobody waits for is queued
    /// or dropped, never waited for).
    pub fn room(&self) -> usize {
        if crate::console::is_raw(self.id) {
            let free = self.out.free();
            if free == 0 {
                crate::console::pump();
                return self.out.free();
            }
            free
        } else {
            usize::MAX
        }
    }

    /// The domain was given the console: the line it had started goes out
    /// as it is (a shell prompt waiting for input).
    pub fn focus_gained(&self) {
        let mut buf = self.line.lock();
        if !buf.is_empty() {
            let n = self.out.push_partial(&buf);
            buf.drain(..n);
        }
    }

    /// Ends the line the domain had started (it ended).
    pub fn end_line(&self) {
        if !self.line.lock().is_empty() {
            self.write(b"\n");
        }
    }
}

impl crate::console::GuestLog for GuestConsole {
    fn log_id(&self) -> u32 {
        self.id
    }
    fn log_allowed(&self) -> Option<u64> {
        self.out.log_allowed()
    }
}
