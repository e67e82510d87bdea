//! Basalt's virtual interrupt controllers (docs/platform.md, "Local APIC and
//! I/O APIC (model)"), as pure state machines with an explicit clock.
//!
//! * [`lapic::Lapic`]: one virtual local APIC per vCPU — the xAPIC register
//!   page by MMIO offset, the x2APIC MSR view (0x800-0x8FF),
//!   `IA32_APIC_BASE` and its legal mode transitions, IRR/ISR/TMR with
//!   PPR gating, EOI, the timer (one-shot, periodic, TSC-deadline), ICR
//!   writes turned into [`lapic::Ipi`] values, destination resolution over a
//!   set of vCPUs, and the INIT/SIPI state of a vCPU.
//! * [`ioapic::IoApic`]: a 24-pin I/O APIC (version 0x11) — IOREGSEL/IOWIN,
//!   the redirection table, edge and level pins with remote IRR, and
//!   re-assertion after EOI.
//!
//! Nothing here reads a clock: every operation that depends on time takes
//! `now_ns`, and the models report when they next need the time
//! ([`lapic::Lapic::next_timer_deadline`]). Delivering an interrupt from
//! one controller to another (an IPI to other vCPUs, an I/O APIC message to
//! local APICs, an EOI broadcast back to the I/O APIC) is the caller's job;
//! the models return values that say what to deliver and to whom.

#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ioapic;
pub mod lapic;

pub use ioapic::{IoApic, IoApicInterrupt};
pub use lapic::{
    Action, ApicMode, CpuSet, Delivery, DestMode, Eoi, Error, Ipi, Lapic, LapicConfig, Received,
    RunState, Shorthand, Target, TimerMode, Trigger,
};
