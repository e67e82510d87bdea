#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! A 4-level x86_64 page-table builder, generic over the entry format, testable on the host.
//!
//! Basalt uses it for two kinds of tables:
//!
//! - its own address space: ordinary x86_64 4-level paging (Intel SDM Vol. 3A §4.5, "4-Level
//!   Paging and 5-Level Paging", with the entry layouts in its tables "Format of a PML4
//!   Entry" ... "Format of a 4-Level Page-Table Entry"), format [`X86`];
//! - the guests' physical address spaces: Extended Page Tables (Intel SDM Vol. 3C §29.3, "The
//!   Extended Page Table Mechanism (EPT)": the entry layouts under "EPT Translation Mechanism"
//!   and the memory type under "EPT and Memory Typing"), format [`Ept`].
//!
//! Both formats share the shape of the tree: four levels of 4 KiB tables of 512 eight-byte
//! entries, indexed by bits 47:39, 38:30, 29:21 and 20:12 of the input address, with leaves
//! allowed at level 3 (1 GiB pages), level 2 (2 MiB pages) and level 1 (4 KiB pages). Only the
//! bits inside an entry differ, so the walker ([`PageTable`]) is written once and the formats
//! implement [`EntryFormat`].
//!
//! # Levels
//!
//! Levels are numbered as in the SDM's walk: 4 = PML4 (the root), 3 = PDPT, 2 = PD, 1 = PT.
//! A leaf at level 3 maps 1 GiB, at level 2 2 MiB, at level 1 4 KiB ([`PageSize`]).
//!
//! # Memory access
//!
//! The crate has no `unsafe` and does not touch memory itself. Tables are read and written
//! through [`TableMemory`] (in the hypervisor: the direct map, or the boot identity map before
//! it exists; in tests: a hash map), and table frames come from and return to a
//! [`FrameSource`]. Nothing needs `alloc`: the walk recurses at most four levels deep and keeps
//! its scratch state in fixed-size arrays, so the hypervisor can build its first tables before
//! it has a heap.
//!
//! # Invariants kept by [`PageTable`]
//!
//! - Every table except the root holds at least one present entry: [`PageTable::unmap`] frees a
//!   table as soon as it becomes empty, so unmapping everything leaves only the root.
//! - Intermediate (non-leaf) entries are permissive (x86: present, writable, user when any leaf
//!   below is a user page, never NX; EPT: read, write and execute), so leaves alone decide the
//!   access rights.
//! - [`PageTable::map`] either maps the whole range or changes nothing;
//!   [`PageTable::unmap`] and [`PageTable::protect`] reserve every table a large-page split
//!   needs before they change anything, so they too either complete or change nothing.
//!
//! # What the caller must do
//!
//! - Flush TLBs: this crate only edits memory. After [`PageTable::unmap`] or
//!   [`PageTable::protect`] (including large-page splits) on a live address space, the caller
//!   must `INVLPG`/reload CR3 (x86, SDM Vol. 3A §4.10.4) or `INVEPT` (EPT, SDM Vol. 3C §29.4,
//!   "Caching Translation Information"), and, for other CPUs, shoot the TLBs down before
//!   freeing or reusing the pages or tables.
//! - Check CPU support: 1 GiB pages need `CPUID.80000001H:EDX.Page1GB` (x86) or
//!   `IA32_VMX_EPT_VPID_CAP` bit 17 (EPT); pass [`PageSize::Size2M`] as `max_page` otherwise.
//!   The [`X86`] format sets NX on non-executable pages, so `EFER.NXE` must be on.
//!   Execute-only EPT pages need `IA32_VMX_EPT_VPID_CAP` bit 0.
//! - Serialise: a [`PageTable`] is changed through `&mut self`, but TLB shoot-down and
//!   concurrent hardware walks are outside its knowledge.
//!
//! # Example: the hypervisor's own address space
//!
//! A direct map of all RAM at `0xffff_8000_0000_0000` (1 GiB pages where alignment allows), and
//! the image linked at `0xffff_ffff_8000_0000 + phys` with per-section rights:
//!
//! ```
//! use std::collections::HashMap;
//! use basalt_paging::{FrameSource, MapFlags, PageSize, PageTable, TableMemory, X86};
//!
//! // Stand-ins for the direct map and the boot frame allocator.
//! #[derive(Default)]
//! struct Mem(HashMap<u64, [u64; 512]>);
//! impl TableMemory for Mem {
//!     fn read_entry(&self, table: u64, index: usize) -> u64 {
//!         self.0.get(&table).map_or(0, |t| t[index])
//!     }
//!     fn write_entry(&mut self, table: u64, index: usize, value: u64) {
//!         self.0.entry(table).or_insert([0; 512])[index] = value;
//!     }
//! }
//! struct Bump(u64);
//! impl FrameSource for Bump {
//!     fn alloc_table(&mut self) -> Option<u64> {
//!         self.0 += 4096;
//!         Some(self.0)
//!     }
//!     fn free_table(&mut self, _phys: u64) {}
//! }
//!
//! const DIRECT_MAP: u64 = 0xffff_8000_0000_0000;
//! const MMIO: u64 = 0xffff_c000_0000_0000;
//! const IMAGE: u64 = 0xffff_ffff_8000_0000;
//! let (mut mem, mut frames) = (Mem::default(), Bump(0x100_0000));
//! let mut pt = PageTable::<X86>::new(&mut frames)?;
//!
//! // Every usable RAM region: read/write, no execute, global.
//! let data = MapFlags::READ | MapFlags::WRITE | MapFlags::GLOBAL;
//! for (start, len) in [(0, 0x9_f000), (0x10_0000, 0x7fef_0000), (0x1_0000_0000, 0x4000_0000)] {
//!     pt.map(&mut mem, &mut frames, DIRECT_MAP + start, start, len, data, PageSize::Size1G)?;
//! }
//! // The image sections (from linker symbols), 4 KiB pages.
//! let text = MapFlags::READ | MapFlags::EXECUTE | MapFlags::GLOBAL;
//! let rodata = MapFlags::READ | MapFlags::GLOBAL;
//! for (phys, len, flags) in [(0x20_1000, 0x4_0000, text), (0x24_1000, 0x1_0000, rodata),
//!                            (0x25_1000, 0x2_0000, data)] {
//!     pt.map(&mut mem, &mut frames, IMAGE + phys, phys, len, flags, PageSize::Size4K)?;
//! }
//! // MMIO (here the local APIC): uncacheable.
//! let mmio = MapFlags::READ | MapFlags::WRITE | MapFlags::UNCACHEABLE;
//! let apic = 0xfee0_0000;
//! pt.map(&mut mem, &mut frames, MMIO + apic, apic, 0x1000, mmio, PageSize::Size4K)?;
//!
//! let t = pt.translate(&mem, DIRECT_MAP + 0x1_2345_6789).unwrap();
//! assert_eq!((t.phys, t.page_size), (0x1_2345_6789, PageSize::Size1G));
//! let t = pt.translate(&mem, IMAGE + 0x20_1234).unwrap();
//! assert!(t.flags.contains(MapFlags::EXECUTE) && !t.flags.contains(MapFlags::WRITE));
//! // Then: write pt.root() to CR3 (with EFER.NXE, CR4.PGE and CR0.WP set).
//! # Ok::<(), basalt_paging::MapError>(())
//! ```

mod error;
mod flags;
mod format;
mod table;

pub use error::MapError;
pub use flags::{CacheType, MapFlags};
pub use format::{EntryFormat, Ept, Npt, X86};
pub use table::PageTable;

/// Number of entries in one table at every level.
pub const ENTRIES_PER_TABLE: usize = 512;

/// Size in bytes of one table (and of the smallest page).
pub const TABLE_SIZE: u64 = 4096;

/// Exclusive upper bound of physical addresses an entry can hold (`MAXPHYADDR` ≤ 52, SDM
/// Vol. 3A §4.1.4).
pub const PHYS_LIMIT: u64 = 1 << 52;

/// Physical memory holding page tables.
///
/// In the hypervisor: the direct map (or the boot identity map while the first tables are
/// built). In tests: a hash map of 4 KiB tables. `table_phys` is always the 4 KiB-aligned
/// physical address of a table obtained from a [`FrameSource`] (or the root), and `index` is
/// always below [`ENTRIES_PER_TABLE`].
pub trait TableMemory {
    /// Reads entry `index` of the table at physical address `table_phys`.
    fn read_entry(&self, table_phys: u64, index: usize) -> u64;
    /// Writes entry `index` of the table at physical address `table_phys`.
    ///
    /// The hardware may walk the table concurrently, so an implementation should perform one
    /// aligned 64-bit store (e.g. a volatile write), never two halves.
    fn write_entry(&mut self, table_phys: u64, index: usize, value: u64);
}

/// Gives zeroed 4 KiB frames for new tables and takes them back.
pub trait FrameSource {
    /// Returns the physical address of a 4 KiB-aligned, zero-filled frame below [`PHYS_LIMIT`],
    /// or `None` when memory is exhausted.
    ///
    /// The frame must be readable and writable through the [`TableMemory`] used with it. A frame
    /// that is not aligned or too high is handed back through [`FrameSource::free_table`] and
    /// the operation fails with [`MapError::BadFrame`].
    fn alloc_table(&mut self) -> Option<u64>;
    /// Takes back a frame returned by [`FrameSource::alloc_table`], no longer used as a table.
    fn free_table(&mut self, phys: u64);
}

/// The size of a page mapped by one leaf entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, a leaf in a level-1 table (PT).
    Size4K,
    /// 2 MiB, a leaf in a level-2 table (PD, "PS" / "large page" bit set).
    Size2M,
    /// 1 GiB, a leaf in a level-3 table (PDPT, "PS" / "large page" bit set).
    Size1G,
}

impl PageSize {
    /// The page size in bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }

    /// The level (1, 2 or 3) of the table that holds a leaf of this size.
    #[must_use]
    pub const fn level(self) -> u8 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }

    /// The size of a leaf at `level`, or `None` for levels where no leaf can be (0, 4 and up).
    #[must_use]
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            1 => Some(Self::Size4K),
            2 => Some(Self::Size2M),
            3 => Some(Self::Size1G),
            _ => None,
        }
    }
}

/// The result of [`PageTable::translate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address the input address maps to (page base plus the offset in the page).
    pub phys: u64,
    /// The flags of the leaf entry, as the format decodes them (for [`X86`], [`MapFlags::READ`]
    /// is always set).
    pub flags: MapFlags,
    /// The size of the page containing the address.
    pub page_size: PageSize,
}
