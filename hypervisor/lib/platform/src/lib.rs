//! Platform description logic for Basalt (pure; tested on the host).
//!
//! The hypervisor reads ACPI tables with the `acpi` crate and hands the
//! entries it found to this crate, which decides what they mean: which CPUs
//! to start and in what order ([`topology`]), and how an ISA interrupt
//! reaches a CPU through an I/O APIC ([`ioapic`]).

#![cfg_attr(target_os = "none", no_std)]

pub mod ioapic;
pub mod mtrr;
pub mod pirq;
pub mod power;
pub mod topology;
