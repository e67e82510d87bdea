//! The physical memory map: what the firmware said about every range of
//! physical addresses, normalised into sorted, non-overlapping regions.
//!
//! Firmware maps overlap, come unsorted and contain zero-length or wrapping
//! entries. Basalt normalises them once, here, so that every later consumer
//! (the frame allocator, guest e820 maps) can rely on:
//!
//! * regions sorted by start address and pairwise disjoint;
//! * neighbouring regions of the same kind merged;
//! * where raw entries overlap, the most restrictive kind winning
//!   (defective > reserved > ACPI NVS > ACPI reclaimable > usable), so memory
//!   is never handed out because one entry of several called it usable.

use crate::FixedVec;
use core::fmt;

/// How many raw entries of a firmware map Basalt looks at. Real servers
/// report a few dozen; extra entries are counted and reported, not fatal.
pub const MAX_RAW_ENTRIES: usize = 256;
/// How many normalised regions a [`MemoryMap`] holds.
pub const MAX_REGIONS: usize = 256;
/// The page size every usable range is trimmed to.
pub const PAGE_SIZE: u64 = 4096;

/// What a range of physical addresses is, ordered from least to most
/// restrictive (the order decides overlaps).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegionKind {
    /// RAM free for Basalt to use (e820 type 1).
    #[default]
    Usable,
    /// RAM holding ACPI tables, usable once they are read (e820 type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage, to be preserved across sleep (e820 type 4).
    AcpiNvs,
    /// Reserved by the firmware, or of a type Basalt does not know (type 2, other).
    Reserved,
    /// RAM the firmware reports as defective (e820 type 5).
    Defective,
}

impl RegionKind {
    /// The kind for an e820 / Multiboot2 memory type number. Unknown types are
    /// reserved, as the ACPI specification requires.
    pub fn from_e820(typ: u32) -> Self {
        match typ {
            1 => Self::Usable,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Defective,
            _ => Self::Reserved,
        }
    }

    /// The kind for a UEFI memory descriptor's type and attributes (UEFI
    /// 2.10 §7.2, `EFI_MEMORY_TYPE`), after the loader called
    /// `ExitBootServices`: loader and boot-services memory is free then.
    /// Memory the firmware keeps at run time (`EFI_MEMORY_RUNTIME`, bit 63)
    /// is reserved whatever its type; so are unknown types.
    pub fn from_efi(typ: u32, attribute: u64) -> Self {
        match typ {
            _ if attribute & 1 << 63 != 0 => Self::Reserved,
            // Loader code/data, boot-services code/data, conventional.
            1..=4 | 7 => Self::Usable,
            8 => Self::Defective,
            9 => Self::AcpiReclaimable,
            10 => Self::AcpiNvs,
            // Reserved, runtime services, MMIO, PAL code, persistent,
            // unaccepted and unknown types.
            _ => Self::Reserved,
        }
    }

    /// The e820 type number of the kind (reserved for every type [`Self::from_e820`] folds).
    pub fn e820(self) -> u32 {
        [1, 3, 4, 2, 5][self as usize]
    }

    /// A short lower-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Usable => "usable",
            Self::AcpiReclaimable => "ACPI data",
            Self::AcpiNvs => "ACPI NVS",
            Self::Reserved => "reserved",
            Self::Defective => "defective",
        }
    }
}

/// A range `[start, end)` of physical addresses of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// What the range is.
    pub kind: RegionKind,
}

impl Region {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The largest page-aligned sub-range, if any page fits.
    pub fn page_aligned(&self) -> Option<(u64, u64)> {
        let start = self.start.checked_next_multiple_of(PAGE_SIZE)?;
        let end = self.end - self.end % PAGE_SIZE;
        (start < end).then_some((start, end))
    }
}

/// A raw firmware entry, as the boot loader passed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEntry {
    /// Base address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// e820 type number.
    pub typ: u32,
}

/// A normalised memory map (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemoryMap {
    regions: FixedVec<Region, MAX_REGIONS>,
    /// Raw entries that were ignored: zero length, or beyond [`MAX_RAW_ENTRIES`].
    pub ignored_entries: usize,
    /// Raw entries whose end wrapped past 2^64 and were cut at the top.
    pub clamped_entries: usize,
}

impl MemoryMap {
    /// Normalises raw firmware entries.
    ///
    /// Runs in O(n²) for n raw entries (n ≤ [`MAX_RAW_ENTRIES`]); that is a
    /// few hundred thousand steps at most, once per boot.
    pub fn from_raw(entries: impl IntoIterator<Item = RawEntry>) -> Self {
        let mut map = Self::default();
        let mut raw: FixedVec<Region, MAX_RAW_ENTRIES> = FixedVec::new();
        for entry in entries {
            if entry.len == 0 {
                map.ignored_entries += 1;
                continue;
            }
            let end = match entry.base.checked_add(entry.len) {
                Some(end) => end,
                None => {
                    map.clamped_entries += 1;
                    u64::MAX
                }
            };
            let region = Region {
                start: entry.base,
                end,
                kind: RegionKind::from_e820(entry.typ),
            };
            if raw.push(region).is_err() {
                map.ignored_entries += 1;
            }
        }

        // Every start and end is a boundary; between two consecutive
        // boundaries the kind is constant.
        let mut points: FixedVec<u64, { 2 * MAX_RAW_ENTRIES }> = FixedVec::new();
        for region in raw.iter() {
            let _ = points.push(region.start);
            let _ = points.push(region.end);
        }
        let points = points.as_mut_slice();
        points.sort_unstable();

        let mut previous: Option<u64> = None;
        for &point in points.iter() {
            if let Some(start) = previous
                && point > start
            {
                let kind = raw
                    .iter()
                    .filter(|r| r.start <= start && point <= r.end)
                    .map(|r| r.kind)
                    .max();
                if let Some(kind) = kind {
                    map.append(Region {
                        start,
                        end: point,
                        kind,
                    });
                }
            }
            previous = Some(point);
        }
        map
    }

    fn append(&mut self, region: Region) {
        if let Some(last) = self.regions.as_mut_slice().last_mut()
            && last.end == region.start
            && last.kind == region.kind
        {
            last.end = region.end;
            return;
        }
        // At most 2 * MAX_RAW_ENTRIES - 1 pieces exist before merging; a map
        // that still overflows keeps its lowest regions and counts the rest.
        let _ = self.regions.push(region);
    }

    /// The regions, sorted and disjoint.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Regions that did not fit in the map (counted, reported at boot).
    pub fn dropped_regions(&self) -> usize {
        self.regions.dropped()
    }

    /// The page-aligned usable ranges.
    pub fn usable(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.regions
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
            .filter_map(Region::page_aligned)
    }

    /// Total usable RAM in bytes (page-aligned parts of usable regions).
    pub fn usable_bytes(&self) -> u64 {
        self.usable().map(|(s, e)| e - s).sum()
    }

    /// A page for the application processors' real-mode start-up code: the
    /// first page from 0x8000 up to 1 MiB (then from 0x1000 up) that lies
    /// in usable RAM and outside every range of `avoid` (boot data).
    pub fn low_page(&self, avoid: &[(u64, u64)]) -> Option<u64> {
        (8..256u64).chain(1..8).map(|n| n * PAGE_SIZE).find(|&p| {
            let end = p + PAGE_SIZE;
            let usable = self
                .regions
                .iter()
                .any(|r| r.kind == RegionKind::Usable && r.start <= p && end <= r.end);
            usable && avoid.iter().all(|&(s, e)| e <= p || end <= s)
        })
    }

    /// The highest usable address plus one, or 0.
    pub fn usable_end(&self) -> u64 {
        self.usable().map(|(_, e)| e).max().unwrap_or(0)
    }
}

/// A byte count printed in binary units: `639 KiB`, `511.6 MiB`, `6 GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        let bytes = u128::from(self.0);
        let mut unit = 0;
        while unit + 1 < UNITS.len() && bytes >= 1u128 << (10 * (unit + 1)) {
            unit += 1;
        }
        let scale = 1u128 << (10 * unit);
        // Rounded to the nearest tenth: 3.9995 GiB prints as 4.0 GiB.
        let rounded = (bytes * 10 + scale / 2) / scale;
        let (whole, tenths) = (rounded / 10, rounded % 10);
        if bytes % scale == 0 {
            write!(f, "{whole} {}", UNITS[unit])
        } else {
            write!(f, "{whole}.{tenths} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(base: u64, len: u64, typ: u32) -> RawEntry {
        RawEntry { base, len, typ }
    }

    fn region(start: u64, end: u64, kind: RegionKind) -> Region {
        Region { start, end, kind }
    }

    #[test]
    fn e820_numbers_round_trip() {
        for typ in 1..=5 {
            assert_eq!(RegionKind::from_e820(typ).e820(), typ);
        }
        assert_eq!(RegionKind::from_e820(7).e820(), 2);
    }

    #[test]
    fn qemu_like_map_is_kept_and_totalled() {
        let map = MemoryMap::from_raw([
            raw(0, 0x9fc00, 1),
            raw(0x9fc00, 0x400, 2),
            raw(0xf0000, 0x10000, 2),
            raw(0x100000, 0x1fee0000, 1),
            raw(0x1ffe0000, 0x20000, 2),
            raw(0xfffc0000, 0x40000, 2),
        ]);
        assert_eq!(map.regions().len(), 6);
        // 0..0x9f000 (page-trimmed) + 1 MiB..0x1ffe0000
        assert_eq!(map.usable_bytes(), 0x9f000 + 0x1fee0000);
        assert_eq!(map.usable_end(), 0x1ffe0000);
    }

    #[test]
    fn overlaps_take_the_most_restrictive_kind() {
        let map = MemoryMap::from_raw([raw(0x1000, 0x4000, 1), raw(0x2000, 0x1000, 2)]);
        assert_eq!(
            map.regions(),
            &[
                region(0x1000, 0x2000, RegionKind::Usable),
                region(0x2000, 0x3000, RegionKind::Reserved),
                region(0x3000, 0x5000, RegionKind::Usable),
            ]
        );
        // Order of entries does not matter.
        let swapped = MemoryMap::from_raw([raw(0x2000, 0x1000, 2), raw(0x1000, 0x4000, 1)]);
        assert_eq!(map.regions(), swapped.regions());
    }

    #[test]
    fn unsorted_adjacent_entries_merge() {
        let map = MemoryMap::from_raw([raw(0x3000, 0x1000, 1), raw(0x1000, 0x2000, 1)]);
        assert_eq!(map.regions(), &[region(0x1000, 0x4000, RegionKind::Usable)]);
    }

    #[test]
    fn zero_length_and_wrapping_entries() {
        let map = MemoryMap::from_raw([raw(0x1000, 0, 1), raw(u64::MAX - 0xfff, 0x10000, 1)]);
        assert_eq!(map.ignored_entries, 1);
        assert_eq!(map.clamped_entries, 1);
        assert_eq!(
            map.regions(),
            &[region(u64::MAX - 0xfff, u64::MAX, RegionKind::Usable)]
        );
        // Less than a whole page is not usable.
        assert_eq!(map.usable_bytes(), 0);
    }

    #[test]
    fn unknown_types_are_reserved() {
        let map = MemoryMap::from_raw([raw(0, 0x1000, 0), raw(0x1000, 0x1000, 77)]);
        assert_eq!(map.regions(), &[region(0, 0x2000, RegionKind::Reserved)]);
        assert_eq!(map.usable_bytes(), 0);
    }

    #[test]
    fn too_many_entries_are_counted() {
        let entries = (0..(MAX_RAW_ENTRIES as u64 + 10)).map(|i| raw(i * 0x2000, 0x1000, 1));
        let map = MemoryMap::from_raw(entries);
        assert_eq!(map.ignored_entries, 10);
        assert_eq!(map.regions().len(), MAX_RAW_ENTRIES);
    }

    #[test]
    fn random_maps_are_sorted_disjoint_and_never_more_usable_than_given() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let n = (next() % 40) as usize;
            let entries: Vec<RawEntry> = (0..n)
                .map(|_| raw(next() % 0x10_0000, next() % 0x8_0000, (next() % 7) as u32))
                .collect();
            let map = MemoryMap::from_raw(entries.iter().copied());
            for pair in map.regions().windows(2) {
                assert!(pair[0].end <= pair[1].start, "{pair:?}");
                assert!(pair[0].end < pair[1].start || pair[0].kind != pair[1].kind);
            }
            for r in map.regions() {
                assert!(!r.is_empty());
                // Every byte of a usable region is usable in every raw entry that covers it.
                if r.kind == RegionKind::Usable {
                    for e in &entries {
                        let overlaps = e.len > 0 && e.base < r.end && r.start < e.base + e.len;
                        assert!(!overlaps || e.typ == 1, "{r:?} overlaps {e:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_efi_type() {
        use RegionKind::*;
        let want = [
            Reserved,        // 0 EfiReservedMemoryType
            Usable,          // 1 EfiLoaderCode
            Usable,          // 2 EfiLoaderData
            Usable,          // 3 EfiBootServicesCode
            Usable,          // 4 EfiBootServicesData
            Reserved,        // 5 EfiRuntimeServicesCode
            Reserved,        // 6 EfiRuntimeServicesData
            Usable,          // 7 EfiConventionalMemory
            Defective,       // 8 EfiUnusableMemory
            AcpiReclaimable, // 9 EfiACPIReclaimMemory
            AcpiNvs,         // 10 EfiACPIMemoryNVS
            Reserved,        // 11 EfiMemoryMappedIO
            Reserved,        // 12 EfiMemoryMappedIOPortSpace
            Reserved,        // 13 EfiPalCode
            Reserved,        // 14 EfiPersistentMemory
            Reserved,        // 15 EfiUnacceptedMemoryType
            Reserved,        // 16: none yet
        ];
        for (typ, kind) in want.into_iter().enumerate() {
            assert_eq!(RegionKind::from_efi(typ as u32, 0xf), kind, "type {typ}");
            // EFI_MEMORY_RUNTIME: the firmware keeps it, whatever the type.
            assert_eq!(RegionKind::from_efi(typ as u32, 1 << 63), Reserved);
        }
        assert_eq!(RegionKind::from_efi(0x8000_0000, 0), Reserved); // OEM
        assert_eq!(RegionKind::from_efi(0x7000_0001, 0), Reserved); // OS
    }

    #[test]
    fn the_ap_start_up_page_avoids_boot_data_and_reserved_memory() {
        let bios = MemoryMap::from_raw([raw(0, 0x9fc00, 1), raw(0x9fc00, 0x400, 2)]);
        assert_eq!(bios.low_page(&[]), Some(0x8000));
        assert_eq!(bios.low_page(&[(0x20_0000, 0x30_0000)]), Some(0x8000));
        // What GRUB EFI leaves under OVMF: symbols at 0x1000 and 0x8000.
        let avoid = [(0x1000, 0x7dc8), (0x8000, 0x1ac83), (0x1c000, 0x1df40)];
        assert_eq!(bios.low_page(&avoid), Some(0x1b000));
        // Free only below 0x8000: taken from 0x1000 up.
        let low = MemoryMap::from_raw([raw(0, 0x8000, 1), raw(0x8000, 0x98000, 2)]);
        assert_eq!(low.low_page(&[]), Some(0x1000));
        assert_eq!(low.low_page(&[(0, 0x7001)]), None);
        // Nothing usable below 1 MiB, or only partial pages.
        let none = MemoryMap::from_raw([raw(0x8800, 0x1000, 1), raw(0x10_0000, 0x10_0000, 1)]);
        assert_eq!(none.low_page(&[]), None);
    }

    #[test]
    fn byte_sizes_print_in_binary_units() {
        assert_eq!(ByteSize(0).to_string(), "0 bytes");
        assert_eq!(ByteSize(639 * 1024).to_string(), "639 KiB");
        assert_eq!(ByteSize(0x1fee0000).to_string(), "510.9 MiB");
        assert_eq!(ByteSize(4_294_438_912).to_string(), "4.0 GiB");
        assert_eq!(ByteSize(6 << 30).to_string(), "6 GiB");
        assert_eq!(ByteSize(u64::MAX).to_string(), "16.0 EiB");
    }
}
