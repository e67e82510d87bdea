//! Console flood: writes `bytes=` bytes (default 65536) of numbered 64-byte
//! lines (`flood NNNNN ...`), the first half with `console_io(CONSOLEIO_write)`
//! in writes of `chunk=` bytes (default 16384: more than Basalt copies per
//! exit, so its continuation is used), the second half byte by byte to port
//! 0xE9. Every `console_io` must return 0. Then prints
//! `flood: done, N bytes in T TSC ticks` and passes.
//!
//! Options: `wait=1` first prints `flood: waiting for input` and waits
//! (sleeping `poll_ms=` 5 ms at a time) for a byte of console input, so a
//! test can give it the console before it floods; `settle_ms=` sleeps that
//! long after the flood, before the `done` line (so that a console queue
//! that overflowed has drained and the line is not dropped); `spin=1` after
//! the `done` line keeps the CPU busy forever instead of ending.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{outb, rdtsc};
use basalt_test_guests::hypercall::{
    Wait, console_read, console_write, sleep_until, system_time_ns,
};
use basalt_test_guests::{arg_u64, fail, pass, println};

basalt_test_guests::entry!(main);

/// Bytes per line.
const LINE: usize = 64;
/// The largest chunk one `console_io` write may hand over.
const CHUNK_MAX: usize = 16384;

/// `CHUNK_MAX` bytes of 64-byte lines `flood NNNNN abc...xyz...\n`, numbered
/// from 0 (the caller patches the numbers per chunk).
static mut TEXT: [u8; CHUNK_MAX] = [b'.'; CHUNK_MAX];

/// Fills `buf` with lines numbered from `first`; returns the next number.
fn fill(buf: &mut [u8], first: u64) -> u64 {
    let mut n = first;
    for line in buf.chunks_mut(LINE) {
        let mut text = [b'-'; LINE];
        text[..6].copy_from_slice(b"flood ");
        let mut v = n % 100_000;
        for i in (6..11).rev() {
            text[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        text[11] = b' ';
        for (i, slot) in text[12..LINE - 1].iter_mut().enumerate() {
            *slot = b'a' + (i % 26) as u8;
        }
        text[LINE - 1] = b'\n';
        let len = line.len();
        line.copy_from_slice(&text[..len]);
        n += 1;
    }
    n
}

fn main(cmdline: &str) -> u32 {
    let total = arg_u64(cmdline, "bytes", 65536) as usize;
    let chunk = (arg_u64(cmdline, "chunk", CHUNK_MAX as u64) as usize).clamp(1, CHUNK_MAX);
    if arg_u64(cmdline, "wait", 0) != 0 {
        println!("flood: waiting for input");
        let poll_ns = arg_u64(cmdline, "poll_ms", 5) * 1_000_000;
        let mut input = [0u8; 16];
        loop {
            let n = console_read(&mut input);
            if n < 0 {
                return fail!("CONSOLEIO_read returned {n}");
            }
            if n > 0 {
                break;
            }
            let now = system_time_ns();
            if now < 0 || sleep_until(now as u64 + poll_ns, Wait::Hlt) < 0 {
                return fail!("cannot sleep on the single-shot timer");
            }
        }
    }
    // SAFETY: the guest has one vCPU, and TEXT is only used here.
    let text = unsafe { &mut *core::ptr::addr_of_mut!(TEXT) };
    let start = rdtsc();
    let mut line = 0;
    let mut done = 0;
    let half = total / 2;
    while done < half {
        let len = chunk.min(half - done);
        line = fill(&mut text[..len], line);
        let Ok(s) = core::str::from_utf8(&text[..len]) else {
            return fail!("flood text is not UTF-8");
        };
        let r = console_write(s);
        if r != 0 {
            return fail!("CONSOLEIO_write of {len} bytes returned {r}, not 0");
        }
        done += len;
    }
    let mut buf = [0u8; LINE];
    while done < total {
        let len = LINE.min(total - done);
        line = fill(&mut buf[..len], line);
        for &b in &buf[..len] {
            outb(0xe9, b);
        }
        done += len;
    }
    let ticks = rdtsc().wrapping_sub(start);
    let settle_ns = arg_u64(cmdline, "settle_ms", 0) * 1_000_000;
    if settle_ns > 0 {
        let now = system_time_ns();
        if now < 0 || sleep_until(now as u64 + settle_ns, Wait::Hlt) < 0 {
            return fail!("cannot sleep on the single-shot timer");
        }
    }
    println!("flood: done, {done} bytes in {ticks} TSC ticks");
    if arg_u64(cmdline, "spin", 0) != 0 {
        loop {
            core::hint::spin_loop();
        }
    }
    pass()
}
