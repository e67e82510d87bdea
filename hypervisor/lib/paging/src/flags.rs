//! Portable mapping flags, translated into entry bits by each [`EntryFormat`](crate::EntryFormat).

bitflags::bitflags! {
    /// Access rights and cache type of a mapping, independent of the entry format.
    ///
    /// The cache type lives in two bits that mirror the x86 `PCD`/`PWT` pair:
    /// [`MapFlags::UNCACHEABLE`] wins over [`MapFlags::WRITE_THROUGH`], and neither means
    /// write-back. Use [`MapFlags::cache_type`] and [`MapFlags::with_cache_type`] rather than
    /// testing the bits.
    ///
    /// Formats normalise flags before use
    /// ([`EntryFormat::validate_flags`](crate::EntryFormat::validate_flags)), and
    /// [`PageTable::translate`](crate::PageTable::translate) returns the normalised form.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MapFlags: u32 {
        /// Readable. Implied for [`X86`](crate::X86) (every present x86 page is readable).
        const READ = 1 << 0;
        /// Writable.
        const WRITE = 1 << 1;
        /// Executable (x86: `NX` clear; EPT: supervisor execute).
        const EXECUTE = 1 << 2;
        /// Accessible from ring 3 (x86 `U/S`). Rejected by [`Ept`](crate::Ept).
        const USER = 1 << 3;
        /// Global: survives CR3 reloads (x86 `G`, needs `CR4.PGE`). Rejected by
        /// [`Ept`](crate::Ept).
        const GLOBAL = 1 << 4;
        /// Cache type bit: write-through (unless [`MapFlags::UNCACHEABLE`] is also set).
        const WRITE_THROUGH = 1 << 8;
        /// Cache type bit: uncacheable (wins over [`MapFlags::WRITE_THROUGH`]).
        const UNCACHEABLE = 1 << 9;
        /// EPT: the guest's PAT combines with the memory type as it would with
        /// an MTRR type ("ignore PAT" clear; SDM Vol. 3C §29.3.7.2), as on bare
        /// metal for device memory. x86 and NPT entries always combine.
        const GUEST_PAT = 1 << 10;
    }
}

/// The memory type of a mapping, encoded in [`MapFlags`].
///
/// x86 (SDM Vol. 3A §4.9.2 and the "Page Attribute Table (PAT)" section of the memory cache
/// control chapter): encoded with `PCD`/`PWT`, which select PAT entries 0, 1
/// and 3 — write-back, write-through and uncacheable in the power-on PAT (the `PAT` bit is never
/// set, so the PAT MSR must keep those three entries). EPT (SDM Vol. 3C §29.3, "EPT and Memory
/// Typing"): the EPT
/// memory type in bits 5:3 of the leaf (6, 4, 0) with "ignore PAT" set, so the guest's own
/// PAT cannot weaken it, unless [`MapFlags::GUEST_PAT`] asks for the combination.
///
/// Write-combining is not offered yet: on x86 it needs a reprogrammed PAT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheType {
    /// Write-back, the normal type for RAM.
    #[default]
    WriteBack,
    /// Write-through.
    WriteThrough,
    /// Uncacheable, for MMIO.
    Uncacheable,
}

impl MapFlags {
    const CACHE_BITS: Self = Self::WRITE_THROUGH.union(Self::UNCACHEABLE);

    /// The cache type these flags select.
    #[must_use]
    pub const fn cache_type(self) -> CacheType {
        if self.contains(Self::UNCACHEABLE) {
            CacheType::Uncacheable
        } else if self.contains(Self::WRITE_THROUGH) {
            CacheType::WriteThrough
        } else {
            CacheType::WriteBack
        }
    }

    /// These flags with the cache bits replaced by the canonical encoding of `cache`.
    #[must_use]
    pub const fn with_cache_type(self, cache: CacheType) -> Self {
        let rest = self.difference(Self::CACHE_BITS);
        match cache {
            CacheType::WriteBack => rest,
            CacheType::WriteThrough => rest.union(Self::WRITE_THROUGH),
            CacheType::Uncacheable => rest.union(Self::UNCACHEABLE),
        }
    }

    /// These flags with the cache bits in canonical form (only one of them set).
    #[must_use]
    pub const fn normalize_cache(self) -> Self {
        self.with_cache_type(self.cache_type())
    }
}
