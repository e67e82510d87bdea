//! The PVH start of day: Xen's `hvm_start_info`, its tables, and where they go.
//!
//! A PVH guest starts in 32-bit protected mode with paging off and `%ebx` holding the
//! guest-physical address of an `hvm_start_info` (Xen's
//! `xen/include/public/arch-x86/hvm/start_info.h`, version 1). All fields are little-endian;
//! an address of 0 means "not present":
//!
//! | offset | field | size |
//! |---|---|---|
//! | 0 | `magic` = `0x336ec578` ([`XEN_HVM_START_MAGIC_VALUE`]) | 4 |
//! | 4 | `version` = 1 | 4 |
//! | 8 | `flags` (`SIF_*`; Basalt sets none) | 4 |
//! | 12 | `nr_modules` | 4 |
//! | 16 | `modlist_paddr`: array of `hvm_modlist_entry` | 8 |
//! | 24 | `cmdline_paddr`: NUL-terminated kernel command line | 8 |
//! | 32 | `rsdp_paddr`: ACPI RSDP | 8 |
//! | 40 | `memmap_paddr`: array of `hvm_memmap_table_entry` | 8 |
//! | 48 | `memmap_entries` | 4 |
//! | 52 | `reserved` = 0 | 4 |
//!
//! `hvm_modlist_entry` (32 bytes): `paddr` (0), `size` (8), `cmdline_paddr` (16), `reserved`
//! (24). `hvm_memmap_table_entry` (24 bytes): `addr` (0), `size` (8), `type` (16, the e820 /
//! ACPI address range types, [`MEMMAP_TYPE_RAM`] ...), `reserved` (20).
//!
//! Basalt lays a guest out as follows ([`plan_layout`], [`write_start_info`]):
//!
//! ```text
//! 0 .. 0x9F000         RAM (type 1)          } the e820 map of guest_memmap()
//! 0x9F000 .. 1 MiB     reserved (type 2)     }
//! 1 MiB .. memory      RAM (type 1)          }
//!
//! [lowest, highest)    the kernel's PT_LOAD segments (elf::parse)
//! next 4 KiB boundary  hvm_start_info, module list, memory map, command lines (< 4 GiB)
//! next 4 KiB boundary  initrd 0, then each further initrd on the next 4 KiB boundary
//! ```
//!
//! (An area that would overlap the reserved `[0x9F000, 1 MiB)` starts at 1 MiB instead.)

use crate::elf::GuestImage;
use crate::mem::{GuestMemory, MemoryError, check_range};
use core::fmt;

/// `XEN_HVM_START_MAGIC_VALUE`: `"xEn3"` with the 0x80 bit of the `E` set.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// The `hvm_start_info` version Basalt writes (with the memory map fields).
pub const START_INFO_VERSION: u32 = 1;
/// Size of `hvm_start_info` version 1.
pub const START_INFO_SIZE: u64 = 56;
/// Size of an `hvm_modlist_entry`.
pub const MODLIST_ENTRY_SIZE: u64 = 32;
/// Size of an `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: u64 = 24;

/// `XEN_HVM_MEMMAP_TYPE_RAM`: usable RAM.
pub const MEMMAP_TYPE_RAM: u32 = 1;
/// `XEN_HVM_MEMMAP_TYPE_RESERVED`: not for the guest's use.
pub const MEMMAP_TYPE_RESERVED: u32 = 2;
/// `XEN_HVM_MEMMAP_TYPE_ACPI`: ACPI tables, reclaimable.
pub const MEMMAP_TYPE_ACPI: u32 = 3;
/// `XEN_HVM_MEMMAP_TYPE_NVS`: ACPI non-volatile storage.
pub const MEMMAP_TYPE_NVS: u32 = 4;
/// `XEN_HVM_MEMMAP_TYPE_UNUSABLE`: memory with errors.
pub const MEMMAP_TYPE_UNUSABLE: u32 = 5;

/// End of the low RAM a guest is shown: `0x9F000` (the traditional PC's EBDA starts above).
pub const LOW_RAM_END: u64 = 0x9_f000;
/// 1 MiB: where RAM resumes after the legacy hole.
pub const ONE_MIB: u64 = 0x10_0000;
/// Alignment of the boot information area and of each initrd.
pub const PAGE_SIZE: u64 = 4096;
/// The most initrds one domain may have.
pub const MAX_INITRDS: usize = 16;
/// The boot information must end at or below this: the guest gets its address in `%ebx` and
/// reads it before enabling paging.
pub const START_INFO_LIMIT: u64 = 1 << 32;

/// The `hvm_start_info` fields Basalt chooses (magic, version and reserved are fixed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartInfo {
    /// `SIF_*` flags.
    pub flags: u32,
    /// Number of entries at `modlist_paddr`.
    pub nr_modules: u32,
    /// Guest-physical address of the `hvm_modlist_entry` array (0: none).
    pub modlist_paddr: u64,
    /// Guest-physical address of the kernel's NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
    /// Guest-physical address of the ACPI RSDP (0: none).
    pub rsdp_paddr: u64,
    /// Guest-physical address of the `hvm_memmap_table_entry` array (0: none).
    pub memmap_paddr: u64,
    /// Number of entries at `memmap_paddr`.
    pub memmap_entries: u32,
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = at
        .checked_add(bytes.len())
        .and_then(|end| out.get_mut(at..end))
    {
        dst.copy_from_slice(bytes);
    }
}

fn get<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

impl StartInfo {
    /// The structure's 56 bytes (version 1), magic and version included.
    pub fn to_bytes(&self) -> [u8; START_INFO_SIZE as usize] {
        let mut out = [0u8; START_INFO_SIZE as usize];
        put(&mut out, 0, &XEN_HVM_START_MAGIC_VALUE.to_le_bytes());
        put(&mut out, 4, &START_INFO_VERSION.to_le_bytes());
        put(&mut out, 8, &self.flags.to_le_bytes());
        put(&mut out, 12, &self.nr_modules.to_le_bytes());
        put(&mut out, 16, &self.modlist_paddr.to_le_bytes());
        put(&mut out, 24, &self.cmdline_paddr.to_le_bytes());
        put(&mut out, 32, &self.rsdp_paddr.to_le_bytes());
        put(&mut out, 40, &self.memmap_paddr.to_le_bytes());
        put(&mut out, 48, &self.memmap_entries.to_le_bytes());
        // 52..56: reserved, zero.
        out
    }

    /// Reads the structure back (for traces and tests): `None` unless the magic is right.
    /// Version 0 structures have no memory map fields; those read as 0.
    pub fn from_bytes(bytes: &[u8; START_INFO_SIZE as usize]) -> Option<Self> {
        if u32::from_le_bytes(get(bytes, 0)) != XEN_HVM_START_MAGIC_VALUE {
            return None;
        }
        let version = u32::from_le_bytes(get(bytes, 4));
        let v1 = version >= 1;
        Some(Self {
            flags: u32::from_le_bytes(get(bytes, 8)),
            nr_modules: u32::from_le_bytes(get(bytes, 12)),
            modlist_paddr: u64::from_le_bytes(get(bytes, 16)),
            cmdline_paddr: u64::from_le_bytes(get(bytes, 24)),
            rsdp_paddr: u64::from_le_bytes(get(bytes, 32)),
            memmap_paddr: if v1 {
                u64::from_le_bytes(get(bytes, 40))
            } else {
                0
            },
            memmap_entries: if v1 {
                u32::from_le_bytes(get(bytes, 48))
            } else {
                0
            },
        })
    }
}

/// One `hvm_modlist_entry`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModlistEntry {
    /// Guest-physical address of the module.
    pub paddr: u64,
    /// Size of the module in bytes.
    pub size: u64,
    /// Guest-physical address of its NUL-terminated command line (0: none).
    pub cmdline_paddr: u64,
}

impl ModlistEntry {
    /// The entry's 32 bytes.
    pub fn to_bytes(&self) -> [u8; MODLIST_ENTRY_SIZE as usize] {
        let mut out = [0u8; MODLIST_ENTRY_SIZE as usize];
        put(&mut out, 0, &self.paddr.to_le_bytes());
        put(&mut out, 8, &self.size.to_le_bytes());
        put(&mut out, 16, &self.cmdline_paddr.to_le_bytes());
        out
    }
}

/// One `hvm_memmap_table_entry`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemmapEntry {
    /// Base guest-physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Type ([`MEMMAP_TYPE_RAM`], [`MEMMAP_TYPE_RESERVED`], ...).
    pub kind: u32,
}

impl MemmapEntry {
    /// The entry's 24 bytes.
    pub fn to_bytes(&self) -> [u8; MEMMAP_ENTRY_SIZE as usize] {
        let mut out = [0u8; MEMMAP_ENTRY_SIZE as usize];
        put(&mut out, 0, &self.addr.to_le_bytes());
        put(&mut out, 8, &self.size.to_le_bytes());
        put(&mut out, 16, &self.kind.to_le_bytes());
        out
    }
}

/// A module handed to the guest (an initrd), already in guest memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootModule<'a> {
    /// Guest-physical address of its first byte.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Its command line (written NUL-terminated).
    pub cmdline: &'a str,
}

/// Where [`write_start_info`] put each piece.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartInfoPlan {
    /// The `hvm_start_info`: the value for the guest's `%ebx`.
    pub start_info_gpa: u64,
    /// The module list (0 without modules).
    pub modlist_gpa: u64,
    /// The memory map (0 without entries).
    pub memmap_gpa: u64,
    /// The kernel command line; the modules' command lines follow it.
    pub cmdline_gpa: u64,
    /// One past the last byte written.
    pub end: u64,
}

/// Bytes [`write_start_info`] writes from an 8-aligned `at`: the structure, the tables and the
/// NUL-terminated strings (saturating at `u64::MAX`). Only the modules' command lines are used,
/// so the modules may be described before their addresses are known.
pub fn start_info_size(cmdline: &str, modules: &[BootModule<'_>], memmap_entries: usize) -> u64 {
    let strings = modules.iter().fold(cmdline.len() as u64 + 1, |sum, m| {
        sum.saturating_add(m.cmdline.len() as u64 + 1)
    });
    START_INFO_SIZE
        .saturating_add(MODLIST_ENTRY_SIZE.saturating_mul(modules.len() as u64))
        .saturating_add(MEMMAP_ENTRY_SIZE.saturating_mul(memmap_entries as u64))
        .saturating_add(strings)
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

/// Writes `bytes` then a NUL at `gpa`; returns the address after the NUL.
fn write_string(mem: &mut impl GuestMemory, gpa: u64, text: &str) -> Result<u64, MemoryError> {
    mem.write(gpa, text.as_bytes())?;
    let nul = gpa.saturating_add(text.len() as u64);
    mem.write(nul, &[0])?;
    Ok(nul.saturating_add(1))
}

/// `SIF_PRIVILEGED`: the domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// `SIF_INITDOMAIN`: the domain is the initial (control) domain.
pub const SIF_INITDOMAIN: u32 = 1 << 1;

/// Sets the `flags` of the `hvm_start_info` at `start_info_gpa` (what
/// [`write_start_info`] wrote, with flags 0).
pub fn write_flags(
    mem: &mut impl GuestMemory,
    start_info_gpa: u64,
    flags: u32,
) -> Result<(), MemoryError> {
    mem.write(start_info_gpa.saturating_add(8), &flags.to_le_bytes())
}

/// Writes the PVH start info for a guest at `at` (rounded up to 8 bytes): the `hvm_start_info`,
/// then the module list, the memory map, the kernel's command line and each module's, every
/// string NUL-terminated (an empty one as a lone NUL, so every `cmdline_paddr` is valid).
/// `rsdp_gpa` 0 means no ACPI tables. Nothing is written unless everything fits in `mem`.
///
/// The strings are copied as given: a NUL inside one ends it early for the guest.
pub fn write_start_info(
    mem: &mut impl GuestMemory,
    at: u64,
    cmdline: &str,
    modules: &[BootModule<'_>],
    memmap: &[MemmapEntry],
    rsdp_gpa: u64,
) -> Result<StartInfoPlan, MemoryError> {
    let size = mem.size();
    let too_big = MemoryError::OutOfRange {
        gpa: at,
        len: u64::MAX,
        size,
    };
    let start = align_up(at, 8).ok_or(too_big)?;
    let total = start_info_size(cmdline, modules, memmap.len());
    check_range(size, start, total)?;
    // Each address is at most start + total, which was just checked.
    let after = |gpa: u64, count: usize, each: u64| {
        (count as u64)
            .checked_mul(each)
            .and_then(|len| gpa.checked_add(len))
            .ok_or(too_big)
    };
    let modlist = after(start, 1, START_INFO_SIZE)?;
    let memmap_gpa = after(modlist, modules.len(), MODLIST_ENTRY_SIZE)?;
    let cmdline_gpa = after(memmap_gpa, memmap.len(), MEMMAP_ENTRY_SIZE)?;

    let mut cursor = write_string(mem, cmdline_gpa, cmdline)?;
    let mut entry_gpa = modlist;
    for module in modules {
        let entry = ModlistEntry {
            paddr: module.gpa,
            size: module.size,
            cmdline_paddr: cursor,
        };
        cursor = write_string(mem, cursor, module.cmdline)?;
        mem.write(entry_gpa, &entry.to_bytes())?;
        entry_gpa = entry_gpa.saturating_add(MODLIST_ENTRY_SIZE);
    }
    let mut entry_gpa = memmap_gpa;
    for entry in memmap {
        mem.write(entry_gpa, &entry.to_bytes())?;
        entry_gpa = entry_gpa.saturating_add(MEMMAP_ENTRY_SIZE);
    }
    let info = StartInfo {
        flags: 0,
        nr_modules: u32::try_from(modules.len()).map_err(|_| too_big)?,
        modlist_paddr: if modules.is_empty() { 0 } else { modlist },
        cmdline_paddr: cmdline_gpa,
        rsdp_paddr: rsdp_gpa,
        memmap_paddr: if memmap.is_empty() { 0 } else { memmap_gpa },
        memmap_entries: u32::try_from(memmap.len()).map_err(|_| too_big)?,
    };
    mem.write(start, &info.to_bytes())?;
    Ok(StartInfoPlan {
        start_info_gpa: start,
        modlist_gpa: info.modlist_paddr,
        memmap_gpa: info.memmap_paddr,
        cmdline_gpa,
        end: cursor,
    })
}

/// The memory map Basalt shows a PVH guest of `memory` bytes, written to `out`; returns the
/// number of entries:
///
/// - RAM `[0, 0x9F000)` (or `[0, memory)` if smaller; nothing if `memory` is 0);
/// - reserved `[0x9F000, 1 MiB)`: the legacy VGA/BIOS hole (backed by the domain's memory, but
///   not for the guest's allocator);
/// - RAM `[1 MiB, memory)` when `memory` is above 1 MiB.
pub fn guest_memmap(memory: u64, out: &mut [MemmapEntry; 8]) -> usize {
    let mut count = 0;
    let mut push = |entry: MemmapEntry| {
        if let Some(slot) = out.get_mut(count) {
            *slot = entry;
            count += 1;
        }
    };
    let low = memory.min(LOW_RAM_END);
    if low > 0 {
        push(MemmapEntry {
            addr: 0,
            size: low,
            kind: MEMMAP_TYPE_RAM,
        });
    }
    push(MemmapEntry {
        addr: LOW_RAM_END,
        size: ONE_MIB - LOW_RAM_END,
        kind: MEMMAP_TYPE_RESERVED,
    });
    if memory > ONE_MIB {
        push(MemmapEntry {
            addr: ONE_MIB,
            size: memory - ONE_MIB,
            kind: MEMMAP_TYPE_RAM,
        });
    }
    count
}

/// A guest-physical range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.gpa.saturating_add(self.size)
    }
}

/// Where the boot information and the initrds of a domain go ([`plan_layout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Where to write the start info (the `at` of [`write_start_info`]); 4 KiB-aligned.
    pub start_info: u64,
    /// One past the space reserved for the start info and its tables and strings.
    pub start_info_end: u64,
    /// Where each initrd goes, in the order of the sizes given; only the first
    /// [`initrd_count`](Self::initrd_count) are meaningful. Each is 4 KiB-aligned.
    pub initrds: [Region; MAX_INITRDS],
    /// How many initrds were placed.
    pub initrd_count: usize,
    /// One past the last byte used (start info or last initrd); at most the domain's memory.
    pub end: u64,
}

impl Layout {
    /// The placed initrds.
    pub fn initrds(&self) -> &[Region] {
        self.initrds.get(..self.initrd_count).unwrap_or(&[])
    }
}

/// Why the boot information and initrds do not fit a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// More initrds than [`MAX_INITRDS`].
    TooManyInitrds {
        /// How many were given.
        count: usize,
    },
    /// Image, boot information and initrds need more memory than the domain has.
    DoesNotFit {
        /// One past the kernel image's last byte.
        image_end: u64,
        /// Bytes of boot information.
        info_size: u64,
        /// Bytes of initrds, in total (saturating).
        initrd_total: u64,
        /// Memory the domain would need: one past the last byte placed (`u64::MAX` if that
        /// overflows).
        needed: u64,
        /// The domain's memory.
        memory: u64,
    },
    /// The boot information would end above 4 GiB, out of reach of the guest's 32-bit entry
    /// code (the kernel image is loaded too high).
    StartInfoAbove4G {
        /// Where the boot information would end.
        end: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooManyInitrds { count } => write!(
                f,
                "{count} initrd-for= modules name this domain; a domain takes at most \
                 {MAX_INITRDS}"
            ),
            Self::DoesNotFit {
                image_end,
                info_size,
                initrd_total,
                needed,
                memory,
            } => {
                let mib = needed.div_ceil(ONE_MIB);
                write!(
                    f,
                    "the domain's memory ({memory} bytes) is too small: the kernel image ends at \
                     0x{image_end:x}, and {info_size} bytes of boot information and \
                     {initrd_total} bytes of initrds after it (each on a 4 KiB boundary) need \
                     memory up to 0x{needed:x}; set memory={mib}M or more on the kernel's module"
                )
            }
            Self::StartInfoAbove4G { end } => write!(
                f,
                "the boot information would end at 0x{end:x}, above 4 GiB where the guest's \
                 32-bit entry code cannot reach it: link the kernel below 4 GiB"
            ),
        }
    }
}

/// Places `size` bytes at the first 4 KiB boundary from `cursor`, moved to 1 MiB if it would
/// overlap the reserved `[0x9F000, 1 MiB)`. `None` on overflow.
fn place(cursor: u64, size: u64) -> Option<Region> {
    let mut gpa = align_up(cursor, PAGE_SIZE)?;
    if gpa < ONE_MIB && gpa.checked_add(size)? > LOW_RAM_END {
        gpa = ONE_MIB;
    }
    gpa.checked_add(size)?;
    Some(Region { gpa, size })
}

/// Plans a domain's boot information and initrds after its kernel image (see the module
/// documentation): `info_size` bytes ([`start_info_size`]) from the first 4 KiB boundary at or
/// after [`GuestImage::highest`], then each of `initrd_sizes` on the next 4 KiB boundary, all
/// inside `[0, memory)` and the boot information below 4 GiB.
pub fn plan_layout(
    image: &GuestImage,
    memory: u64,
    initrd_sizes: &[u64],
    info_size: u64,
) -> Result<Layout, LayoutError> {
    if initrd_sizes.len() > MAX_INITRDS {
        return Err(LayoutError::TooManyInitrds {
            count: initrd_sizes.len(),
        });
    }
    let initrd_total = initrd_sizes
        .iter()
        .fold(0u64, |sum, size| sum.saturating_add(*size));
    let does_not_fit = |needed: u64| LayoutError::DoesNotFit {
        image_end: image.highest,
        info_size,
        initrd_total,
        needed,
        memory,
    };
    let info = place(image.highest, info_size).ok_or(does_not_fit(u64::MAX))?;
    if info.end() > START_INFO_LIMIT {
        return Err(LayoutError::StartInfoAbove4G { end: info.end() });
    }
    let mut initrds = [Region::default(); MAX_INITRDS];
    let mut end = info.end();
    for (slot, &size) in initrds.iter_mut().zip(initrd_sizes) {
        let region = place(end, size).ok_or(does_not_fit(u64::MAX))?;
        *slot = region;
        end = region.end();
    }
    if end > memory {
        return Err(does_not_fit(end));
    }
    Ok(Layout {
        start_info: info.gpa,
        start_info_end: info.end(),
        initrds,
        initrd_count: initrd_sizes.len(),
        end,
    })
}

#[cfg(test)]
mod tests;
