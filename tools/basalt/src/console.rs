//! `basalt console NAME|ID` (docs/toolstack.md, "Console"): a domain's console on this
//! terminal, as `xl console` gives it. What the domain wrote (its COM1 or its Xen console,
//! the history Basalt keeps, then what it writes from now on) comes from domain control's
//! `console_read`; what is typed goes into its console input with `console_write`, as if
//! typed at Basalt's own console while the domain has the input. `Ctrl-]` detaches; so does
//! the end of a non-terminal input (after a last look at the output), and the domain's end.
//! With `--history` only the history is printed.

use crate::{Hypervisor, Request};
use basalt_domctl as dc;
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// `Ctrl-]`, the key that detaches (as `xl console`'s).
pub const DETACH: u8 = 0x1d;
/// How long output is still shown after a non-terminal input ended.
const LINGER: Duration = Duration::from_secs(2);

/// What typed bytes ask for: the bytes before a detach key (to send), and whether it came.
pub fn split_detach(typed: &[u8]) -> (&[u8], bool) {
    match typed.iter().position(|b| *b == DETACH) {
        Some(at) => (&typed[..at], true),
        None => (typed, false),
    }
}

/// The domain `text` names: an id, or the name of a domain `basalt list` shows.
pub fn resolve(hv: &mut Hypervisor, text: &str) -> Result<(u32, String), String> {
    let all = hv.list()?;
    let found = match text.parse::<u32>() {
        Ok(id) => all.iter().find(|d| d.id == id),
        Err(_) => all.iter().find(|d| d.name.as_str() == text),
    };
    found
        .map(|d| (d.id, d.name.as_str().to_string()))
        .ok_or_else(|| {
            format!(
                "no running domain {text:?}: `basalt list` shows them (a stopped VM has no \
                 console: `basalt start NAME` first)"
            )
        })
}

/// The terminal in raw mode (no echo, no line editing, no signals from keys) until dropped.
struct Raw(libc::termios);

impl Raw {
    fn enter() -> Result<Raw, String> {
        // SAFETY: `termios` is plain data; tcgetattr fills it for descriptor 0.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: descriptor 0 and a valid termios to fill.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return Err(format!(
                "reading the terminal's mode: {}",
                io::Error::last_os_error()
            ));
        }
        let saved = t;
        // SAFETY: `t` is a valid termios; cfmakeraw only changes its flags.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: descriptor 0 and a valid termios.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) } != 0 {
            return Err(format!(
                "setting the terminal's mode: {}",
                io::Error::last_os_error()
            ));
        }
        Ok(Raw(saved))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: descriptor 0 and the termios read when entering.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

/// Reads what the console holds from byte `from` on: the next position and the bytes (a
/// note first when older bytes were dropped from the history).
fn read_from(hv: &mut Hypervisor, id: u32, from: u64) -> Result<(u64, Vec<u8>), String> {
    let (_, reply) = hv.call(
        id,
        &Request::ConsoleRead {
            from,
            max: dc::MAX_CONSOLE_READ,
        },
    )?;
    let (next, skipped, data) =
        dc::decode_console_read(&reply).ok_or("the hypervisor's console reply is malformed")?;
    let mut out = Vec::new();
    if skipped > 0 {
        out.extend_from_slice(format!("[{skipped} older bytes are no longer kept]\n").as_bytes());
    }
    out.extend_from_slice(data);
    Ok((next, out))
}

/// Writes everything the console holds from `from` on to standard output; the next position.
fn drain(hv: &mut Hypervisor, id: u32, mut from: u64) -> Result<u64, String> {
    let mut stdout = io::stdout().lock();
    loop {
        let (next, data) = read_from(hv, id, from)?;
        if data.is_empty() {
            return Ok(from);
        }
        stdout
            .write_all(&data)
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("writing to standard output: {e}"))?;
        from = next;
    }
}

/// `basalt console --history`: what the domain wrote, then return.
pub fn history(hv: &mut Hypervisor, id: u32) -> Result<(), String> {
    drain(hv, id, 0).map(|_| ())
}

/// `basalt console`: attached until `Ctrl-]`, the end of the input, or the domain's end.
pub fn attach(hv: &mut Hypervisor, id: u32, name: &str) -> Result<(), String> {
    // SAFETY: isatty only inspects descriptor 0.
    let tty = unsafe { libc::isatty(0) } == 1;
    let raw = if tty { Some(Raw::enter()?) } else { None };
    eprint!("basalt: attached to {name} (domain {id}); Ctrl-] detaches\r\n");
    let mut from = 0;
    let mut input_ended: Option<Instant> = None;
    let mut buf = [0u8; 256];
    let why = loop {
        from = match drain(hv, id, from) {
            Ok(next) => next,
            Err(_) => break format!("domain {id} ({name}) ended"),
        };
        if input_ended.is_some_and(|t| t.elapsed() >= LINGER) {
            break "the input ended".to_string();
        }
        let mut fd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        let watch = if input_ended.is_none() { 1 } else { 0 };
        // SAFETY: one valid pollfd (none once the input ended: a plain sleep).
        let ready = unsafe { libc::poll(&mut fd, watch, 50) };
        if ready <= 0 || fd.revents == 0 {
            continue;
        }
        // SAFETY: reading into `buf`, which is that long.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            input_ended = Some(Instant::now());
            continue;
        }
        let (send, detach) = split_detach(&buf[..n as usize]);
        for chunk in send.chunks(dc::MAX_CONSOLE_WRITE as usize) {
            if hv.call(id, &Request::ConsoleWrite(chunk)).is_err() {
                break;
            }
        }
        if detach {
            break "detached".to_string();
        }
    };
    drop(raw);
    eprintln!("\nbasalt: {why} (console of {name})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_key_ends_what_is_sent() {
        assert_eq!(split_detach(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_detach(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_detach(b"\x1d"), (&b""[..], true));
        assert_eq!(split_detach(b""), (&b""[..], false));
    }
}
