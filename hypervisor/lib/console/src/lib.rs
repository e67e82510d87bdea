//! Basalt's serial console logic (docs/console.md), as pure state machines:
//!
//! * [`ring::Ring`]: a bounded byte ring that never blocks the writer and
//!   counts what it had to overwrite (the console input queue);
//! * [`out::OutRing`]: one source's output waiting for the serial line, in
//!   units (lines, reports) that are never interleaved with another
//!   source's, refused whole and counted or taken in part (back-pressure);
//! * [`ratelimit::RateLimit`]: a per-domain budget of log lines a guest can
//!   cause, counting what it suppresses;
//! * [`mux::Mux`]: who owns the console input — Basalt's monitor or one
//!   domain — switched by pressing Ctrl-A three times, as in Xen;
//! * [`line::LineEditor`]: the monitor's line editing;
//! * [`command::Command`]: the monitor's commands, parsed with one-line
//!   errors.
//!
//! The hypervisor feeds bytes from the UART in and acts on what comes out;
//! nothing here touches hardware.

#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]

pub mod command;
pub mod line;
pub mod mux;
pub mod out;
pub mod ratelimit;
pub mod ring;
