//! Boot-protocol logic for Basalt.
//!
//! Everything here is pure: it reads byte slices and strings handed over by
//! the boot loader and turns them into validated, typed values. None of it
//! touches hardware, so all of it is unit-tested (and randomly tested) on the
//! host. The hypervisor's thin boot layer (`hypervisor/src/arch/x86_64/`)
//! only finds the bytes and hands them to [`multiboot2::parse`].
//!
//! Nothing in this crate allocates: Basalt parses its boot information before
//! it has a heap, so lists live in fixed-capacity [`FixedVec`]s and overflow
//! is counted, never fatal.

#![cfg_attr(target_os = "none", no_std)]

pub mod cmdline;
pub mod efi;
pub mod elf;
pub mod fixedvec;
pub mod identity;
pub mod memmap;
pub mod multiboot2;

pub use fixedvec::FixedVec;
