//! Basalt's boot-scenario harness.
//!
//! A scenario (a TOML file in `tests/scenarios/`) says how to boot Basalt —
//! emulator, CPUs, memory, command line, modules — and how to judge the run
//! from its serial log: lines that must appear (in order), lines that must
//! not, the verdict Basalt must print, and checks on figures it prints
//! (`BASALT-FIGURE: name=value`). A scenario may also type into the serial
//! console (`steps`). See `docs/testing.md`. [`xtf`] makes the runs of Xen's
//! Test Framework from its result table, `tests/xtf.toml`.
//!
//! The judging ([`matcher`]) is pure and unit-tested; [`emulator`] builds the
//! QEMU and Bochs command lines shared by `cargo xtask run` and
//! `cargo xtask test`; [`console`] carries the interactive console of
//! scenarios with steps; [`devices`] makes a scenario's disk image and
//! listens for its network's client; [`runner`] runs one scenario with a deadline.

pub mod console;
pub mod devices;
pub mod emulator;
pub mod matcher;
pub mod runner;
pub mod scenario;
pub mod xtf;

pub use emulator::{Emulator, Machine};
pub use scenario::Scenario;
