//! Console input: prints `echo: ready`, then reads the domain's console
//! input with `console_io(CONSOLEIO_read)`, sleeping `poll_ms=` (default 5)
//! milliseconds on the single-shot timer whenever nothing came. Bytes
//! gather into a line, ended by `\r` or `\n` (empty lines are skipped;
//! nothing is echoed while typing); each line is printed as
//! `echo: got '<line>'`. Then `quit` ends the test (pass), `crash` shuts the
//! domain down with `SHUTDOWN_crash`, `reboot` with `SHUTDOWN_reboot`
//! (each preceded by a line saying so); anything else is just printed.
//! Lines longer than 200 bytes are cut.
//!
//! Options: `poll_ms=5`, `mode=hlt` or `mode=block` (how to sleep).

#![no_std]
#![no_main]

use basalt_test_guests::hypercall::{
    SHUTDOWN_CRASH, SHUTDOWN_REBOOT, Wait, console_read, sleep_until, system_time_ns,
};
use basalt_test_guests::{arg_u64, fail, pass, println, sched_shutdown};

basalt_test_guests::entry!(main);

const LINE_MAX: usize = 200;

/// Prints a complete line and acts on it; `Some(exit code)` ends the guest.
fn handle(line: &[u8]) -> Option<u32> {
    match core::str::from_utf8(line) {
        Ok(text) => println!("echo: got '{text}'"),
        Err(_) => println!("echo: got '{}'", line.escape_ascii()),
    }
    match line.trim_ascii() {
        b"quit" => Some(pass()),
        b"crash" => {
            println!("echo: crashing as asked");
            sched_shutdown(SHUTDOWN_CRASH)
        }
        b"reboot" => {
            println!("echo: rebooting as asked");
            sched_shutdown(SHUTDOWN_REBOOT)
        }
        _ => None,
    }
}

fn main(cmdline: &str) -> u32 {
    let poll_ns = arg_u64(cmdline, "poll_ms", 5) * 1_000_000;
    let wait = match Wait::from_cmdline(cmdline) {
        Ok(wait) => wait,
        Err(other) => return fail!("mode={other}: must be hlt or block"),
    };
    println!("echo: ready");
    let mut line = [0u8; LINE_MAX];
    let mut len = 0;
    let mut input = [0u8; 64];
    loop {
        let n = console_read(&mut input);
        if n < 0 || n as usize > input.len() {
            return fail!("CONSOLEIO_read returned {n}");
        }
        if n == 0 {
            let now = system_time_ns();
            if now < 0 {
                return fail!("VCPUOP_get_runstate_info failed: {now}");
            }
            let r = sleep_until(now as u64 + poll_ns, wait);
            if r < 0 {
                return fail!("sleeping ({}) failed: {r}", wait.name());
            }
            continue;
        }
        for &byte in &input[..n as usize] {
            if byte == b'\r' || byte == b'\n' {
                if len > 0
                    && let Some(code) = handle(&line[..len])
                {
                    return code;
                }
                len = 0;
            } else if len < LINE_MAX {
                line[len] = byte;
                len += 1;
            }
        }
    }
}
