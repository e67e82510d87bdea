//! Basalt's serial console logic (docs/console.md), as pure state machines:
//!
//! * [`ring::Ring`]: a bounded output history per domain that never blocks
//!   the writer and counts what it had to drop;
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
pub mod ring;
