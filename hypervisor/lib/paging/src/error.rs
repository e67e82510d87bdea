//! Errors of [`PageTable`](crate::PageTable) operations.

use core::fmt;

use crate::MapFlags;

/// Why a [`PageTable`](crate::PageTable) operation failed.
///
/// "Input address" (`virt`) is a virtual address for [`X86`](crate::X86) tables and a
/// guest-physical address for [`Ept`](crate::Ept) tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// The length is zero.
    ZeroLength,
    /// The input address is not 4 KiB-aligned.
    UnalignedVirt {
        /// The input address.
        virt: u64,
    },
    /// The physical address is not 4 KiB-aligned.
    UnalignedPhys {
        /// The physical address.
        phys: u64,
    },
    /// The length is not a multiple of 4 KiB.
    UnalignedLength {
        /// The length.
        len: u64,
    },
    /// `virt + len` wraps past 2^64.
    Overflow {
        /// The input address.
        virt: u64,
        /// The length.
        len: u64,
    },
    /// The physical range `phys .. phys + len` does not fit below
    /// [`PHYS_LIMIT`](crate::PHYS_LIMIT).
    PhysOutOfRange {
        /// The physical address.
        phys: u64,
        /// The length.
        len: u64,
    },
    /// The range contains an address the format cannot translate: x86, a non-canonical
    /// address (bits 63:47 not all equal); EPT, a guest-physical address at or above 2^48.
    NonCanonical {
        /// The first such address in the range.
        virt: u64,
    },
    /// The format cannot express these flags (e.g. [`MapFlags::USER`] in EPT).
    UnsupportedFlags {
        /// The flags asked for.
        flags: MapFlags,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// Part of the range is already mapped ([`PageTable::map`](crate::PageTable::map)).
    AlreadyMapped {
        /// The first mapped address in the range.
        virt: u64,
    },
    /// Part of the range is not mapped ([`PageTable::protect`](crate::PageTable::protect)).
    NotMapped {
        /// The first unmapped address in the range.
        virt: u64,
    },
    /// The [`FrameSource`](crate::FrameSource) had no frame for a table.
    OutOfFrames {
        /// The input address that needed the table, or `None` for the root table.
        virt: Option<u64>,
    },
    /// The [`FrameSource`](crate::FrameSource) returned a frame that is not 4 KiB-aligned or
    /// not below [`PHYS_LIMIT`](crate::PHYS_LIMIT). It was handed back.
    BadFrame {
        /// The frame's address.
        phys: u64,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroLength => write!(f, "zero-length range"),
            Self::UnalignedVirt { virt } => {
                write!(f, "address {virt:#x} is not 4 KiB-aligned")
            }
            Self::UnalignedPhys { phys } => {
                write!(f, "physical address {phys:#x} is not 4 KiB-aligned")
            }
            Self::UnalignedLength { len } => {
                write!(f, "length {len:#x} is not a multiple of 4 KiB")
            }
            Self::Overflow { virt, len } => {
                write!(
                    f,
                    "range {virt:#x} + {len:#x} wraps past the end of the address space"
                )
            }
            Self::PhysOutOfRange { phys, len } => write!(
                f,
                "physical range {phys:#x} + {len:#x} does not fit below 2^52"
            ),
            Self::NonCanonical { virt } => write!(
                f,
                "address {virt:#x} is not translatable (non-canonical, or at or above 2^48)"
            ),
            Self::UnsupportedFlags { flags, reason } => {
                write!(f, "unsupported flags {flags:?}: {reason}")
            }
            Self::AlreadyMapped { virt } => write!(f, "address {virt:#x} is already mapped"),
            Self::NotMapped { virt } => write!(f, "address {virt:#x} is not mapped"),
            Self::OutOfFrames { virt: Some(virt) } => {
                write!(f, "out of frames for a page table while mapping {virt:#x}")
            }
            Self::OutOfFrames { virt: None } => {
                write!(f, "out of frames for the root page table")
            }
            Self::BadFrame { phys } => write!(
                f,
                "frame source returned {phys:#x}, not a 4 KiB-aligned address below 2^52"
            ),
        }
    }
}

impl core::error::Error for MapError {}
