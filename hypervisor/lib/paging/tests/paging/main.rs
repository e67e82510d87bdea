//! Host tests of `basalt-paging` against emulated physical memory.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions also fail by panicking"
)]

mod emu;
mod ept;
mod npt;
mod ops;
mod random;
mod x86;

pub const KIB4: u64 = 0x1000;
pub const MIB2: u64 = 0x20_0000;
pub const GIB1: u64 = 0x4000_0000;

/// Start of the x86 upper canonical half (the hypervisor's direct map in Basalt).
pub const DIRECT_MAP: u64 = 0xffff_8000_0000_0000;
