//! Entry formats: the bits that differ between x86 paging and EPT.

use crate::{CacheType, MapError, MapFlags, PageSize};

/// The layout of one 64-bit paging-structure entry.
///
/// [`PageTable`](crate::PageTable) walks the tree and calls these functions for everything that
/// depends on the bits. Levels are 4 (root) down to 1; leaves exist at levels 3, 2 and 1
/// ([`PageSize`]).
///
/// Contract for implementations:
/// - [`EntryFormat::leaf`] and [`EntryFormat::table`] return present entries, and
///   [`EntryFormat::decode_leaf`] undoes [`EntryFormat::leaf`] for flags returned by
///   [`EntryFormat::validate_flags`].
/// - Table entries are monotone: the walker ORs the bits of [`EntryFormat::table`] for new
///   flags into an existing table entry (e.g. x86 `U/S` when a user page is added below), so
///   more bits must never mean fewer rights.
/// - A cleared (non-present) entry is written as 0.
pub trait EntryFormat {
    /// Bits holding the physical address of the next table or of a 4 KiB page (bits 51:12).
    /// For large pages the address is additionally aligned to the page size.
    const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// Checks that the format can express `flags` and returns them in normalised form (the
    /// form [`EntryFormat::decode_leaf`] gives back).
    ///
    /// # Errors
    ///
    /// [`MapError::UnsupportedFlags`] naming the reason.
    fn validate_flags(flags: MapFlags) -> Result<MapFlags, MapError>;

    /// The first and last address of the contiguous range of valid input addresses that
    /// contains `addr`, or `None` if `addr` itself cannot be translated.
    fn input_region(addr: u64) -> Option<(u64, u64)>;

    /// A leaf entry mapping the page of `size` at physical address `phys` (aligned to `size`)
    /// with `flags` (already validated).
    fn leaf(phys: u64, flags: MapFlags, size: PageSize) -> u64;

    /// A non-leaf entry pointing at the table at `phys`, permissive enough for a leaf with
    /// `flags` below it.
    fn table(phys: u64, flags: MapFlags) -> u64;

    /// Whether the entry is present (maps something or points at a table).
    fn is_present(entry: u64) -> bool;

    /// Whether a present entry at `level` is a leaf (maps a page) rather than pointing at a
    /// table. Always true at level 1, never at level 4.
    fn is_leaf(entry: u64, level: u8) -> bool;

    /// The physical address of the table a present non-leaf entry points at.
    fn table_address(entry: u64) -> u64 {
        entry & Self::ADDR_MASK
    }

    /// Decodes a present leaf entry of page size `size` into the page's physical base address
    /// and its normalised flags.
    fn decode_leaf(entry: u64, size: PageSize) -> (u64, MapFlags);
}

/// Ordinary x86_64 4-level paging entries (Intel SDM Vol. 3A §4.5).
///
/// | bit | leaf | table pointer |
/// |---|---|---|
/// | 0 `P` | 1 | 1 |
/// | 1 `R/W` | [`MapFlags::WRITE`] | 1 |
/// | 2 `U/S` | [`MapFlags::USER`] | 1 if any user leaf was mapped below |
/// | 3 `PWT`, 4 `PCD` | cache type: WB 0/0, WT 1/0, UC 1/1 | 0 |
/// | 7 `PS` | 1 at levels 2 and 3 (2 MiB, 1 GiB) | 0 |
/// | 8 `G` | [`MapFlags::GLOBAL`] | 0 |
/// | 51:12 | physical address | physical address |
/// | 63 `XD`/`NX` | set unless [`MapFlags::EXECUTE`] | 0 |
///
/// Input addresses must be canonical: bits 63:48 equal to bit 47.
/// [`MapFlags::READ`] is implied (every present page is readable); all flags are supported.
/// The `NX` bit needs `EFER.NXE`, which the caller guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X86;

impl X86 {
    /// `P`: present.
    pub const PRESENT: u64 = 1 << 0;
    /// `R/W`: writable.
    pub const WRITABLE: u64 = 1 << 1;
    /// `U/S`: user-accessible.
    pub const USER: u64 = 1 << 2;
    /// `PWT`: page-level write-through.
    pub const WRITE_THROUGH: u64 = 1 << 3;
    /// `PCD`: page-level cache disable.
    pub const CACHE_DISABLE: u64 = 1 << 4;
    /// `PS`: page size (a 2 MiB or 1 GiB leaf at levels 2 and 3).
    pub const HUGE_PAGE: u64 = 1 << 7;
    /// `G`: global.
    pub const GLOBAL: u64 = 1 << 8;
    /// `XD`/`NX`: execute-disable.
    pub const NO_EXECUTE: u64 = 1 << 63;

    /// End (exclusive) of the lower canonical half.
    const LOWER_END: u64 = 1 << 47;
    /// Start of the upper canonical half.
    const UPPER_START: u64 = 0xffff_8000_0000_0000;
}

impl EntryFormat for X86 {
    fn validate_flags(flags: MapFlags) -> Result<MapFlags, MapError> {
        // The guest's PAT always combines (GUEST_PAT is EPT's choice).
        Ok(flags
            .union(MapFlags::READ)
            .difference(MapFlags::GUEST_PAT)
            .normalize_cache())
    }

    fn input_region(addr: u64) -> Option<(u64, u64)> {
        if addr < Self::LOWER_END {
            Some((0, Self::LOWER_END - 1))
        } else if addr >= Self::UPPER_START {
            Some((Self::UPPER_START, u64::MAX))
        } else {
            None
        }
    }

    fn leaf(phys: u64, flags: MapFlags, size: PageSize) -> u64 {
        let mut entry = (phys & Self::ADDR_MASK) | Self::PRESENT;
        if flags.contains(MapFlags::WRITE) {
            entry |= Self::WRITABLE;
        }
        if flags.contains(MapFlags::USER) {
            entry |= Self::USER;
        }
        if flags.contains(MapFlags::GLOBAL) {
            entry |= Self::GLOBAL;
        }
        if !flags.contains(MapFlags::EXECUTE) {
            entry |= Self::NO_EXECUTE;
        }
        entry |= match flags.cache_type() {
            CacheType::WriteBack => 0,
            CacheType::WriteThrough => Self::WRITE_THROUGH,
            CacheType::Uncacheable => Self::WRITE_THROUGH | Self::CACHE_DISABLE,
        };
        if size != PageSize::Size4K {
            entry |= Self::HUGE_PAGE;
        }
        entry
    }

    fn table(phys: u64, flags: MapFlags) -> u64 {
        let mut entry = (phys & Self::ADDR_MASK) | Self::PRESENT | Self::WRITABLE;
        if flags.contains(MapFlags::USER) {
            entry |= Self::USER;
        }
        entry
    }

    fn is_present(entry: u64) -> bool {
        entry & Self::PRESENT != 0
    }

    fn is_leaf(entry: u64, level: u8) -> bool {
        match level {
            1 => true,
            2 | 3 => entry & Self::HUGE_PAGE != 0,
            _ => false,
        }
    }

    fn decode_leaf(entry: u64, size: PageSize) -> (u64, MapFlags) {
        let phys = entry & Self::ADDR_MASK & !(size.bytes() - 1);
        let mut flags = MapFlags::READ;
        if entry & Self::WRITABLE != 0 {
            flags |= MapFlags::WRITE;
        }
        if entry & Self::USER != 0 {
            flags |= MapFlags::USER;
        }
        if entry & Self::GLOBAL != 0 {
            flags |= MapFlags::GLOBAL;
        }
        if entry & Self::NO_EXECUTE == 0 {
            flags |= MapFlags::EXECUTE;
        }
        let cache = if entry & Self::CACHE_DISABLE != 0 {
            CacheType::Uncacheable
        } else if entry & Self::WRITE_THROUGH != 0 {
            CacheType::WriteThrough
        } else {
            CacheType::WriteBack
        };
        (phys, flags.with_cache_type(cache))
    }
}

/// Extended Page Table entries (Intel SDM Vol. 3C §29.3, "The Extended Page Table Mechanism").
///
/// | bit | leaf | table pointer |
/// |---|---|---|
/// | 0 read | [`MapFlags::READ`] | 1 |
/// | 1 write | [`MapFlags::WRITE`] | 1 |
/// | 2 execute | [`MapFlags::EXECUTE`] | 1 |
/// | 5:3 memory type | WB 6, WT 4, UC 0 | 0 (reserved) |
/// | 6 ignore PAT | 1 | 0 (reserved) |
/// | 7 large page | 1 at levels 2 and 3 (2 MiB, 1 GiB) | 0 |
/// | 51:12 | host-physical address | host-physical address |
///
/// There is no present bit: an entry is present when any of bits 2:0 is set, and unused
/// entries are 0. Input addresses are guest-physical and must be below 2^48 (4-level EPT).
/// Accessed/dirty flags (bits 8/9), mode-based execute (bit 10) and "suppress #VE" (bit 63)
/// are never set.
///
/// Rejected flags: [`MapFlags::USER`] and [`MapFlags::GLOBAL`] (no such bits), no access at
/// all (it would be a non-present entry) and write without read (an EPT misconfiguration).
/// Execute-only is accepted; the caller checks the CPU supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ept;

impl Ept {
    /// Read access.
    pub const READ: u64 = 1 << 0;
    /// Write access.
    pub const WRITE: u64 = 1 << 1;
    /// Execute access (supervisor-mode execute when mode-based execute control is on).
    pub const EXECUTE: u64 = 1 << 2;
    /// Shift of the 3-bit EPT memory type in a leaf.
    pub const MEMORY_TYPE_SHIFT: u32 = 3;
    /// Mask of the EPT memory type field (bits 5:3).
    pub const MEMORY_TYPE_MASK: u64 = 0b111 << 3;
    /// EPT memory type: uncacheable.
    pub const MEMORY_TYPE_UC: u64 = 0;
    /// EPT memory type: write-through.
    pub const MEMORY_TYPE_WT: u64 = 4;
    /// EPT memory type: write-back.
    pub const MEMORY_TYPE_WB: u64 = 6;
    /// Ignore the guest's PAT: the EPT memory type is the effective type.
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// Large page (a 2 MiB or 1 GiB leaf at levels 2 and 3).
    pub const LARGE_PAGE: u64 = 1 << 7;

    /// Exclusive bound of guest-physical addresses (4-level EPT translates 48 bits).
    const INPUT_LIMIT: u64 = 1 << 48;
    const ACCESS: u64 = Self::READ | Self::WRITE | Self::EXECUTE;
}

impl EntryFormat for Ept {
    fn validate_flags(flags: MapFlags) -> Result<MapFlags, MapError> {
        let reason = if flags.contains(MapFlags::USER) {
            Some("EPT has no user/supervisor bit")
        } else if flags.contains(MapFlags::GLOBAL) {
            Some("EPT has no global bit")
        } else if !flags.intersects(MapFlags::READ | MapFlags::WRITE | MapFlags::EXECUTE) {
            Some("an EPT entry without read, write or execute is not present")
        } else if flags.contains(MapFlags::WRITE) && !flags.contains(MapFlags::READ) {
            Some("write without read is an EPT misconfiguration")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(MapError::UnsupportedFlags { flags, reason }),
            None => Ok(flags.normalize_cache()),
        }
    }

    fn input_region(addr: u64) -> Option<(u64, u64)> {
        (addr < Self::INPUT_LIMIT).then_some((0, Self::INPUT_LIMIT - 1))
    }

    fn leaf(phys: u64, flags: MapFlags, size: PageSize) -> u64 {
        let mut entry = phys & Self::ADDR_MASK;
        if flags.contains(MapFlags::READ) {
            entry |= Self::READ;
        }
        if flags.contains(MapFlags::WRITE) {
            entry |= Self::WRITE;
        }
        if flags.contains(MapFlags::EXECUTE) {
            entry |= Self::EXECUTE;
        }
        let memory_type = match flags.cache_type() {
            CacheType::WriteBack => Self::MEMORY_TYPE_WB,
            CacheType::WriteThrough => Self::MEMORY_TYPE_WT,
            CacheType::Uncacheable => Self::MEMORY_TYPE_UC,
        };
        entry |= memory_type << Self::MEMORY_TYPE_SHIFT;
        if !flags.contains(MapFlags::GUEST_PAT) {
            entry |= Self::IGNORE_PAT;
        }
        if size != PageSize::Size4K {
            entry |= Self::LARGE_PAGE;
        }
        entry
    }

    fn table(phys: u64, _flags: MapFlags) -> u64 {
        (phys & Self::ADDR_MASK) | Self::ACCESS
    }

    fn is_present(entry: u64) -> bool {
        entry & Self::ACCESS != 0
    }

    fn is_leaf(entry: u64, level: u8) -> bool {
        match level {
            1 => true,
            2 | 3 => entry & Self::LARGE_PAGE != 0,
            _ => false,
        }
    }

    fn decode_leaf(entry: u64, size: PageSize) -> (u64, MapFlags) {
        let phys = entry & Self::ADDR_MASK & !(size.bytes() - 1);
        let mut flags = MapFlags::empty();
        if entry & Self::READ != 0 {
            flags |= MapFlags::READ;
        }
        if entry & Self::WRITE != 0 {
            flags |= MapFlags::WRITE;
        }
        if entry & Self::EXECUTE != 0 {
            flags |= MapFlags::EXECUTE;
        }
        if entry & Self::IGNORE_PAT == 0 {
            flags |= MapFlags::GUEST_PAT;
        }
        // Types this crate never writes (WC 1, WP 5, reserved) read back as the most
        // conservative one.
        let cache = match (entry & Self::MEMORY_TYPE_MASK) >> Self::MEMORY_TYPE_SHIFT {
            Self::MEMORY_TYPE_WB => CacheType::WriteBack,
            Self::MEMORY_TYPE_WT => CacheType::WriteThrough,
            _ => CacheType::Uncacheable,
        };
        (phys, flags.with_cache_type(cache))
    }
}

/// AMD nested page table entries (APM Vol. 2 §15.25, "Nested Paging"): the ordinary x86 format
/// of [`X86`], walked with guest-physical input addresses.
///
/// | bit | leaf | table pointer |
/// |---|---|---|
/// | 0 `P` | 1 | 1 |
/// | 1 `R/W` | [`MapFlags::WRITE`] | 1 |
/// | 2 `U/S` | 1 | 1 |
/// | 3 `PWT`, 4 `PCD` | cache type: WB 0/0, WT 1/0, UC 1/1 | 0 |
/// | 7 `PS` | 1 at levels 2 and 3 (2 MiB, 1 GiB) | 0 |
/// | 51:12 | host-physical address | host-physical address |
/// | 63 `NX` | set unless [`MapFlags::EXECUTE`] | 0 |
///
/// Every nested access is a user access (§15.25.5, "Nested Table Walk"), so `U/S` is set at
/// every level: a supervisor-only nested entry would fault every guest access. `G` has no
/// meaning in a nested table and is never set. Input addresses are guest-physical and must be
/// below 2^48 (4-level nested paging). Every present page is readable ([`MapFlags::READ`] is
/// implied); there is no write-only or execute-only page.
///
/// Rejected flags: [`MapFlags::GLOBAL`]. [`MapFlags::USER`] is accepted and implied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Npt;

impl Npt {
    /// Exclusive bound of guest-physical addresses (4-level nested paging translates 48 bits).
    const INPUT_LIMIT: u64 = 1 << 48;
}

impl EntryFormat for Npt {
    fn validate_flags(flags: MapFlags) -> Result<MapFlags, MapError> {
        if flags.contains(MapFlags::GLOBAL) {
            return Err(MapError::UnsupportedFlags {
                flags,
                reason: "a nested page table has no global pages",
            });
        }
        Ok(flags
            .union(MapFlags::READ | MapFlags::USER)
            .difference(MapFlags::GUEST_PAT)
            .normalize_cache())
    }

    fn input_region(addr: u64) -> Option<(u64, u64)> {
        (addr < Self::INPUT_LIMIT).then_some((0, Self::INPUT_LIMIT - 1))
    }

    fn leaf(phys: u64, flags: MapFlags, size: PageSize) -> u64 {
        X86::leaf(phys, flags | MapFlags::USER, size)
    }

    fn table(phys: u64, _flags: MapFlags) -> u64 {
        (phys & Self::ADDR_MASK) | X86::PRESENT | X86::WRITABLE | X86::USER
    }

    fn is_present(entry: u64) -> bool {
        X86::is_present(entry)
    }

    fn is_leaf(entry: u64, level: u8) -> bool {
        X86::is_leaf(entry, level)
    }

    fn decode_leaf(entry: u64, size: PageSize) -> (u64, MapFlags) {
        X86::decode_leaf(entry, size)
    }
}
