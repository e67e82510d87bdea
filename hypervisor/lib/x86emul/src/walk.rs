//! Guest linear → guest-physical translation: the guest's own page walk, done in software so
//! that the hypervisor can fetch the bytes of the instruction at the guest's `RIP`.
//!
//! An EPT violation reports the guest-physical address of the *data* access, not where the
//! instruction is: the hypervisor must translate `CS.base + RIP` through the guest's page tables
//! (which live in guest-physical memory, read through [`GuestPhys`]) and read up to 15 bytes
//! there ([`fetch`]). The paging mode comes from the guest's `CR0`, `CR3`, `CR4` and `IA32_EFER`
//! ([`PagingMode`], Intel SDM Vol. 3A §4.1, "Paging Modes and Control Bits"):
//!
//! | [`Paging`] | when | SDM |
//! |---|---|---|
//! | [`Paging::Off`] | `CR0.PG = 0`: linear = physical (32 bits) | §4.1.1 |
//! | [`Paging::Bits32`] | `CR4.PAE = 0`: 2 levels of 4-byte entries, 4 MiB pages with `CR4.PSE` (PSE-36: bits 39:32 from PDE bits 20:13) | §4.3, "32-Bit Paging" |
//! | [`Paging::Pae`] | `CR4.PAE = 1`, `EFER.LMA = 0`: 4 PDPTEs at `CR3[31:5]`, then 2 levels of 8-byte entries, 2 MiB pages | §4.4, "PAE Paging" |
//! | [`Paging::Level4`] | `EFER.LMA = 1`, `CR4.LA57 = 0`: PML4, PDPT, PD, PT; 1 GiB and 2 MiB pages | §4.5, "4-Level Paging and 5-Level Paging" |
//! | [`Paging::Level5`] | `EFER.LMA = 1`, `CR4.LA57 = 1`: PML5 above that | §4.5 |
//!
//! The walk only *finds the frame*: the processor already made the access (the instruction was
//! fetched and executed up to its data access), so the permission bits (`R/W`, `U/S`, `XD`,
//! protection keys, `SMEP`/`SMAP`, `CR0.WP`) are not checked; [`translate_with_rights`] reports
//! the `R/W` and `U/S` rights found for callers that make the access themselves (string I/O).
//! It does check what is needed to
//! interpret the tables unambiguously and is cheap: the present bit at every level, canonical
//! addresses in IA-32e mode (SDM Vol. 1 §3.3.7.1, "Canonical Addressing"), `PS` in a PML5E or
//! PML4E, the reserved bits of PAE PDPTEs (2:1, 8:5, 63:52) and of large-page entries (bit 21
//! of a 4 MiB PDE, bits 20:13 of a 2 MiB entry, 29:13 of a 1 GiB entry). Physical addresses
//! are taken with a `MAXPHYADDR` of 52 (bits 51:12 of an entry), so bits above the processor's
//! real `MAXPHYADDR` are not refused; `XD` and the other high bits are ignored.
//!
//! Differences from the processor, all harmless for fetching a faulting instruction:
//!
//! - no accessed or dirty bit is written, and nothing is cached: every call walks memory;
//! - in PAE mode the processor uses the four PDPTEs it loaded with `CR3` (kept in the VMCS's
//!   guest PDPTE fields under EPT, SDM Vol. 3A §4.4.1), the walk reads them from memory again
//!   (they differ only if the guest rewrote its PDPT without reloading `CR3`);
//! - linear-address masking (LAM) and PCIDs change nothing here: LAM does not apply to
//!   instruction fetches, and the PCID bits of `CR3` (11:0) and bit 63 are masked off.
//!
//! Every function here is total: no memory content, register value or address makes it panic,
//! and a walk reads at most five entries.

use crate::decode::MAX_LENGTH;
use core::fmt;

/// `CR0.PG` (bit 31): paging enabled.
pub const CR0_PG: u64 = 1 << 31;
/// `CR4.PSE` (bit 4): 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// `CR4.PAE` (bit 5): 8-byte entries (PAE, 4-level and 5-level paging).
pub const CR4_PAE: u64 = 1 << 5;
/// `CR4.LA57` (bit 12): 5-level paging in IA-32e mode.
pub const CR4_LA57: u64 = 1 << 12;
/// `IA32_EFER.LMA` (bit 10): IA-32e mode active (4- or 5-level paging).
pub const EFER_LMA: u64 = 1 << 10;

/// Bits 51:12 of an entry (or of `CR3`): the physical address of the next table or of a 4 KiB
/// frame, with `MAXPHYADDR` taken as 52.
pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The smallest page, and the granularity at which [`fetch`] translates again.
pub const PAGE_SIZE: u64 = 4096;

/// Entry bit 1 (`R/W`), as [`translate_with_rights`] reports it: writes allowed.
pub const RIGHT_WRITE: u64 = 1 << 1;
/// Entry bit 2 (`U/S`), as [`translate_with_rights`] reports it: user-mode accesses allowed.
pub const RIGHT_USER: u64 = 1 << 2;
/// Not entry bit 63 (`XD`), as [`translate_with_rights`] reports it: no entry on the way sets
/// `XD`, so instruction fetches are allowed when `IA32_EFER.NXE` gives the bit its meaning.
pub const RIGHT_EXEC: u64 = 1 << 63;
/// All three rights.
const RIGHTS: u64 = RIGHT_WRITE | RIGHT_USER | RIGHT_EXEC;

/// Entry bit 0: present.
const P: u64 = 1 << 0;
/// Entry bit 7: page size (a large page) in a PDE or PDPTE (PAT in a PTE).
const PS: u64 = 1 << 7;
/// Reserved bits of a PAE PDPTE (SDM Vol. 3A Table 4-8): 2:1, 8:5 and 63:52.
const PAE_PDPTE_RESERVED: u64 = 0xfff0_0000_0000_01e6;
/// Reserved bit 21 of a 32-bit paging PDE that maps a 4 MiB page (SDM Vol. 3A Table 4-4).
const PDE_4M_RESERVED: u64 = 1 << 21;

/// The guest's physical memory, as the walk reads it.
pub trait GuestPhys {
    /// Reads `out.len()` bytes at guest-physical `gpa` into `out`. Returns `false` (and `out` may
    /// hold anything) when any of those bytes is not guest RAM: a hole, beyond the end of the
    /// guest's memory, or a device page. The read must have no side effect: the guest's tables
    /// may name any address, device registers included, and reading those must not reach the
    /// device.
    fn read_phys(&self, gpa: u64, out: &mut [u8]) -> bool;
}

/// The control registers that select the guest's paging mode and locate its tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PagingMode {
    /// `CR0` (only `PG` is used).
    pub cr0: u64,
    /// `CR3`: the root table (bits 51:12, or 31:5 in PAE mode, or 31:12 in 32-bit paging).
    pub cr3: u64,
    /// `CR4` (`PSE`, `PAE` and `LA57` are used).
    pub cr4: u64,
    /// `IA32_EFER` (only `LMA` is used).
    pub efer: u64,
}

/// The paging mode, from [`PagingMode::paging`] (SDM Vol. 3A §4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Paging {
    /// `CR0.PG = 0`: linear addresses are physical addresses (32 bits).
    Off,
    /// 32-bit paging: `CR0.PG = 1`, `CR4.PAE = 0`, `EFER.LMA = 0`.
    Bits32,
    /// PAE paging: `CR0.PG = 1`, `CR4.PAE = 1`, `EFER.LMA = 0`.
    Pae,
    /// 4-level paging: `CR0.PG = 1`, `EFER.LMA = 1`, `CR4.LA57 = 0`.
    Level4,
    /// 5-level paging: `CR0.PG = 1`, `EFER.LMA = 1`, `CR4.LA57 = 1`.
    Level5,
}

impl PagingMode {
    /// The paging mode these registers select. `EFER.LMA` decides IA-32e mode (it can only be
    /// set with `CR4.PAE`, so `CR4.PAE` is not looked at then); `CR4.LA57` only matters in
    /// IA-32e mode.
    #[must_use]
    pub const fn paging(&self) -> Paging {
        if self.cr0 & CR0_PG == 0 {
            Paging::Off
        } else if self.efer & EFER_LMA != 0 {
            if self.cr4 & CR4_LA57 != 0 {
                Paging::Level5
            } else {
                Paging::Level4
            }
        } else if self.cr4 & CR4_PAE != 0 {
            Paging::Pae
        } else {
            Paging::Bits32
        }
    }

    /// `linear` as the processor uses it in this mode: truncated to 32 bits outside IA-32e mode
    /// (where linear addresses have 32 bits and wrap at 4 GiB), unchanged in IA-32e mode.
    #[must_use]
    pub const fn truncate(&self, linear: u64) -> u64 {
        match self.paging() {
            Paging::Off | Paging::Bits32 | Paging::Pae => linear & 0xffff_ffff,
            Paging::Level4 | Paging::Level5 => linear,
        }
    }
}

/// A paging-structure level, named by its entries (SDM Vol. 3A §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// A PML5 entry (5-level paging only; bits 56:48 of the address select it).
    Pml5e,
    /// A PML4 entry (bits 47:39).
    Pml4e,
    /// A page-directory-pointer-table entry (bits 38:30; in PAE paging one of the four PDPTEs,
    /// bits 31:30); may map a 1 GiB page.
    Pdpte,
    /// A page-directory entry (bits 29:21, or 31:22 in 32-bit paging); may map a 2 MiB (4 MiB)
    /// page.
    Pde,
    /// A page-table entry (bits 20:12, or 21:12 in 32-bit paging): maps a 4 KiB page.
    Pte,
}

impl Level {
    /// The level of the tables whose entries translate `1 << (12 + 9 * (n - 1))` bytes:
    /// 1 = PT … 5 = PML5, as the SDM numbers them.
    const fn from_number(n: u8) -> Self {
        match n {
            1 => Self::Pte,
            2 => Self::Pde,
            3 => Self::Pdpte,
            4 => Self::Pml4e,
            _ => Self::Pml5e,
        }
    }

    /// The SDM's name of the entry: `"PML5E"`, `"PML4E"`, `"PDPTE"`, `"PDE"` or `"PTE"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pml5e => "PML5E",
            Self::Pml4e => "PML4E",
            Self::Pdpte => "PDPTE",
            Self::Pde => "PDE",
            Self::Pte => "PTE",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a linear address could not be translated or its bytes read. Each variant's text (its
/// `Display`) names the address and the cause. Linear addresses are reported as the walk used
/// them ([`PagingMode::truncate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalkError {
    /// In IA-32e mode, the address is not canonical: bits 63:47 (63:56 with 5-level paging) are
    /// not all equal. The processor would have raised `#GP`.
    NonCanonical {
        /// The linear address.
        linear: u64,
    },
    /// An entry on the way has its present bit (0) clear: the address is not mapped.
    NotPresent {
        /// The linear address.
        linear: u64,
        /// The level of the entry.
        level: Level,
        /// Where the entry is (guest-physical).
        gpa: u64,
    },
    /// An entry on the way sets a reserved bit the walk checks (`PS` in a PML5E or PML4E, the
    /// reserved bits of a PAE PDPTE or of a large-page entry). The processor would have raised
    /// a page fault (`#GP` for a PDPTE).
    Reserved {
        /// The linear address.
        linear: u64,
        /// The level of the entry.
        level: Level,
        /// Where the entry is (guest-physical).
        gpa: u64,
        /// The entry.
        entry: u64,
    },
    /// A paging-structure entry lies outside guest RAM ([`GuestPhys::read_phys`] refused it):
    /// `CR3` or an entry above it points at a hole or a device.
    TableOutsideMemory {
        /// The linear address.
        linear: u64,
        /// The level of the entry.
        level: Level,
        /// Where the entry would be (guest-physical).
        gpa: u64,
    },
    /// The address translates to a guest-physical address that is not guest RAM, so its bytes
    /// cannot be read ([`fetch`] only).
    FrameOutsideMemory {
        /// The linear address.
        linear: u64,
        /// The guest-physical address it translates to.
        gpa: u64,
    },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NonCanonical { linear } => {
                write!(f, "linear address {linear:#x} is not canonical")
            }
            Self::NotPresent { linear, level, gpa } => write!(
                f,
                "linear address {linear:#x} is not mapped: its {level} at guest-physical \
                 {gpa:#x} is not present"
            ),
            Self::Reserved {
                linear,
                level,
                gpa,
                entry,
            } => write!(
                f,
                "linear address {linear:#x}: its {level} {entry:#x} at guest-physical {gpa:#x} \
                 sets a reserved bit"
            ),
            Self::TableOutsideMemory { linear, level, gpa } => write!(
                f,
                "linear address {linear:#x}: its {level} would be at guest-physical {gpa:#x}, \
                 which is not guest RAM"
            ),
            Self::FrameOutsideMemory { linear, gpa } => write!(
                f,
                "linear address {linear:#x} translates to guest-physical {gpa:#x}, which is not \
                 guest RAM"
            ),
        }
    }
}

/// Reads the `N`-byte little-endian entry at `gpa` (`N` is 4 or 8).
fn read_entry<M: GuestPhys + ?Sized, const N: usize>(
    mem: &M,
    gpa: u64,
    linear: u64,
    level: Level,
) -> Result<u64, WalkError> {
    let mut bytes = [0u8; 8];
    if !mem.read_phys(gpa, &mut bytes[..N]) {
        return Err(WalkError::TableOutsideMemory { linear, level, gpa });
    }
    Ok(u64::from_le_bytes(bytes))
}

/// Translates `linear` through the guest's page tables to a guest-physical address.
///
/// The walk follows [`PagingMode::paging`]; `linear` is first [truncated](PagingMode::truncate)
/// to 32 bits outside IA-32e mode. With paging off the result is the truncated address. No
/// permission is checked and nothing is written (see the module documentation); the result is
/// below 2^52 and keeps the low 12 bits of the address. The frame itself is not read: it may be
/// anything, a device page included.
///
/// # Errors
///
/// [`WalkError::NonCanonical`], [`WalkError::NotPresent`], [`WalkError::Reserved`] or
/// [`WalkError::TableOutsideMemory`]; never [`WalkError::FrameOutsideMemory`].
pub fn translate<M: GuestPhys + ?Sized>(
    mem: &M,
    mode: &PagingMode,
    linear: u64,
) -> Result<u64, WalkError> {
    translate_with_rights(mem, mode, linear).map(|(gpa, _)| gpa)
}

/// [`translate`], also returning the access rights the walk found: [`RIGHT_WRITE`] if every
/// entry on the way sets `R/W`, [`RIGHT_USER`] if every one sets `U/S` (SDM Vol. 3A §4.6,
/// "Access Rights"; the four PAE PDPTEs have neither bit and restrict nothing), and
/// [`RIGHT_EXEC`] if none sets `XD` (always with 32-bit paging). With paging off all are set.
///
/// # Errors
///
/// As [`translate`].
pub fn translate_with_rights<M: GuestPhys + ?Sized>(
    mem: &M,
    mode: &PagingMode,
    linear: u64,
) -> Result<(u64, u64), WalkError> {
    let linear = mode.truncate(linear);
    match mode.paging() {
        Paging::Off => Ok((linear, RIGHTS)),
        Paging::Bits32 => walk_32bit(mem, mode, linear),
        Paging::Pae => {
            // SDM Vol. 3A §4.4.1: CR3[31:5] is the PDPT; linear bits 31:30 select the PDPTE.
            let gpa = (mode.cr3 & 0xffff_ffe0) + ((linear >> 30) & 3) * 8;
            let pdpte = read_entry::<M, 8>(mem, gpa, linear, Level::Pdpte)?;
            if pdpte & P == 0 {
                return Err(WalkError::NotPresent {
                    linear,
                    level: Level::Pdpte,
                    gpa,
                });
            }
            if pdpte & PAE_PDPTE_RESERVED != 0 {
                return Err(WalkError::Reserved {
                    linear,
                    level: Level::Pdpte,
                    gpa,
                    entry: pdpte,
                });
            }
            walk_8byte(mem, pdpte & ADDRESS_MASK, linear, 2, RIGHTS)
        }
        Paging::Level4 => walk_ia32e(mem, mode.cr3, linear, 4),
        Paging::Level5 => walk_ia32e(mem, mode.cr3, linear, 5),
    }
}

/// 32-bit paging (SDM Vol. 3A §4.3): `CR3[31:12]` is the page directory, 4-byte entries.
fn walk_32bit<M: GuestPhys + ?Sized>(
    mem: &M,
    mode: &PagingMode,
    linear: u64,
) -> Result<(u64, u64), WalkError> {
    let pd = mode.cr3 & 0xffff_f000;
    let gpa = pd + ((linear >> 22) & 0x3ff) * 4;
    let pde = read_entry::<M, 4>(mem, gpa, linear, Level::Pde)?;
    if pde & P == 0 {
        return Err(WalkError::NotPresent {
            linear,
            level: Level::Pde,
            gpa,
        });
    }
    if pde & PS != 0 && mode.cr4 & CR4_PSE != 0 {
        // A 4 MiB page (Table 4-4): bits 31:22 from PDE[31:22], bits 39:32 from PDE[20:13]
        // (PSE-36), bit 21 reserved.
        if pde & PDE_4M_RESERVED != 0 {
            return Err(WalkError::Reserved {
                linear,
                level: Level::Pde,
                gpa,
                entry: pde,
            });
        }
        return Ok((
            (pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32 | (linear & 0x3f_ffff),
            (pde & RIGHTS) | RIGHT_EXEC,
        ));
    }
    // Without CR4.PSE the PS bit is ignored: the PDE references a page table.
    let gpa = (pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4;
    let pte = read_entry::<M, 4>(mem, gpa, linear, Level::Pte)?;
    if pte & P == 0 {
        return Err(WalkError::NotPresent {
            linear,
            level: Level::Pte,
            gpa,
        });
    }
    Ok((
        (pte & 0xffff_f000) | (linear & 0xfff),
        (pde & pte & RIGHTS) | RIGHT_EXEC,
    ))
}

/// 4-level and 5-level paging (SDM Vol. 3A §4.5): canonical check, then the walk from the
/// PML4 or PML5 at `CR3[51:12]`.
fn walk_ia32e<M: GuestPhys + ?Sized>(
    mem: &M,
    cr3: u64,
    linear: u64,
    levels: u8,
) -> Result<(u64, u64), WalkError> {
    // Canonical: bits 63:47 (63:56) all copies of bit 47 (56).
    let unused = if levels == 5 { 7 } else { 16 };
    if (((linear << unused) as i64) >> unused) as u64 != linear {
        return Err(WalkError::NonCanonical { linear });
    }
    walk_8byte(mem, cr3 & ADDRESS_MASK, linear, levels, RIGHTS)
}

/// The walk through 8-byte entries from the table at `table`, whose entries are at level `top`
/// (5 = PML5 … 2 = PD): bits `12 + 9 * (n - 1)` and up select the entry at level `n`. `PS` is
/// reserved at levels 5 and 4, maps a 1 GiB page at level 3 and a 2 MiB page at level 2, and is
/// the PAT bit at level 1.
fn walk_8byte<M: GuestPhys + ?Sized>(
    mem: &M,
    mut table: u64,
    linear: u64,
    top: u8,
    mut rights: u64,
) -> Result<(u64, u64), WalkError> {
    let mut n = top;
    loop {
        let level = Level::from_number(n);
        let shift = 12 + 9 * u32::from(n - 1);
        let gpa = table + ((linear >> shift) & 0x1ff) * 8;
        let entry = read_entry::<M, 8>(mem, gpa, linear, level)?;
        if entry & P == 0 {
            return Err(WalkError::NotPresent { linear, level, gpa });
        }
        rights &= entry ^ RIGHT_EXEC;
        if n == 1 {
            return Ok(((entry & ADDRESS_MASK) | (linear & 0xfff), rights & RIGHTS));
        }
        if entry & PS != 0 {
            // A 1 GiB (n = 3) or 2 MiB (n = 2) page: its address bits start at `shift`; the
            // bits between 13 (above PAT, bit 12) and `shift` are reserved.
            let offset_mask = (1u64 << shift) - 1;
            if n > 3 || entry & offset_mask & !0x1fff != 0 {
                return Err(WalkError::Reserved {
                    linear,
                    level,
                    gpa,
                    entry,
                });
            }
            return Ok((
                (entry & ADDRESS_MASK & !offset_mask) | (linear & offset_mask),
                rights & RIGHTS,
            ));
        }
        table = entry & ADDRESS_MASK;
        n -= 1;
    }
}

/// Fetches the bytes of the instruction at linear address `rip_linear` (`CS.base + RIP`) into
/// `out`: up to [`MAX_LENGTH`] (15) bytes, fewer when they would cross into a page that cannot
/// be read.
///
/// The bytes in the page of `rip_linear` are read first; if the 15 bytes continue into the next
/// page (any page boundary is a multiple of 4 KiB), that page is translated on its own, since it
/// may be mapped anywhere. Outside IA-32e mode the address wraps at 4 GiB, as the processor's
/// does. Returns how many bytes were read: 15, or the bytes up to the end of the first page when
/// the second one is not mapped, not canonical or not guest RAM (so the decoder can still decode
/// an instruction that ends before the boundary; if it says `Truncated`, the instruction really
/// crosses into that page). The bytes of `out` after those are zeroed.
///
/// # Errors
///
/// The first page's [`translate`] error, or [`WalkError::FrameOutsideMemory`] when it maps to
/// something that is not guest RAM. Nothing is fetched then.
pub fn fetch<M: GuestPhys + ?Sized>(
    mem: &M,
    mode: &PagingMode,
    rip_linear: u64,
    out: &mut [u8; MAX_LENGTH],
) -> Result<usize, WalkError> {
    let linear = mode.truncate(rip_linear);
    let first = (PAGE_SIZE - (linear & (PAGE_SIZE - 1))).min(MAX_LENGTH as u64) as usize;
    let gpa = translate(mem, mode, linear)?;
    if !mem.read_phys(gpa, &mut out[..first]) {
        out.fill(0);
        return Err(WalkError::FrameOutsideMemory { linear, gpa });
    }
    if first == MAX_LENGTH {
        return Ok(first);
    }
    let next = match linear.checked_add(first as u64) {
        Some(next) => next,
        // Only in IA-32e mode: the top of the address space does not continue at 0.
        None => {
            out[first..].fill(0);
            return Ok(first);
        }
    };
    let read = translate(mem, mode, next).is_ok_and(|gpa| mem.read_phys(gpa, &mut out[first..]));
    if read {
        Ok(MAX_LENGTH)
    } else {
        out[first..].fill(0);
        Ok(first)
    }
}
