//! The page walk and the instruction fetch: page tables built by hand in a sparse fake RAM, one
//! group per paging mode, then random memory and registers.
//!
//! Table indices in the hand-built tests were computed separately (bits 47:39, 38:30, 29:21,
//! 20:12 of the address; 31:22 and 21:12 in 32-bit paging; 31:30 for a PAE PDPTE).

use super::random::Rng;
use crate::{
    ADDRESS_MASK, CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, DecodeError, EFER_LMA, GuestPhys, Level,
    MAX_LENGTH, Mode, Operation, PAGE_SIZE, Paging, PagingMode, WalkError, decode, fetch,
    translate,
};
use std::cell::Cell;
use std::collections::HashMap;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const G: u64 = 1 << 8;
/// PAT in a large-page entry.
const PAT_LARGE: u64 = 1 << 12;
const XD: u64 = 1 << 63;
/// Protection key 15 (bits 62:59).
const PKEY: u64 = 0xf << 59;
/// `CR0.PE | CR0.ET`.
const CR0_BASE: u64 = 0x11;
/// `EFER.LME`.
const EFER_LME: u64 = 1 << 8;

/// Sparse guest RAM: the 4 KiB pages added are RAM, every other address is not.
#[derive(Default)]
pub(super) struct Ram {
    pub(super) pages: HashMap<u64, Box<[u8; 4096]>>,
}

impl Ram {
    /// Makes `gpa .. gpa + len` RAM (zeroed where new).
    fn add(&mut self, gpa: u64, len: u64) {
        let mut page = gpa & !0xfff;
        while page < gpa + len {
            self.pages
                .entry(page)
                .or_insert_with(|| Box::new([0; 4096]));
            page += PAGE_SIZE;
        }
    }

    /// Writes `bytes` at `gpa`, making the pages RAM first.
    pub(super) fn write(&mut self, gpa: u64, bytes: &[u8]) {
        self.add(gpa, bytes.len() as u64);
        for (i, b) in bytes.iter().enumerate() {
            let a = gpa + i as u64;
            self.pages.get_mut(&(a & !0xfff)).expect("added")[(a & 0xfff) as usize] = *b;
        }
    }

    pub(super) fn set64(&mut self, gpa: u64, entry: u64) {
        self.write(gpa, &entry.to_le_bytes());
    }

    fn set32(&mut self, gpa: u64, entry: u32) {
        self.write(gpa, &entry.to_le_bytes());
    }

    pub(super) fn get64(&self, gpa: u64) -> u64 {
        let mut b = [0; 8];
        assert!(self.read_phys(gpa, &mut b));
        u64::from_le_bytes(b)
    }
}

impl GuestPhys for Ram {
    fn read_phys(&self, gpa: u64, out: &mut [u8]) -> bool {
        for (i, b) in out.iter_mut().enumerate() {
            let Some(a) = gpa.checked_add(i as u64) else {
                return false;
            };
            match self.pages.get(&(a & !0xfff)) {
                Some(page) => *b = page[(a & 0xfff) as usize],
                None => return false,
            }
        }
        true
    }
}

fn off() -> PagingMode {
    PagingMode {
        cr0: CR0_BASE,
        ..PagingMode::default()
    }
}

fn bits32(cr3: u64, pse: bool) -> PagingMode {
    PagingMode {
        cr0: CR0_BASE | CR0_PG,
        cr3,
        cr4: if pse { CR4_PSE } else { 0 },
        efer: 0,
    }
}

fn pae(cr3: u64) -> PagingMode {
    PagingMode {
        cr0: CR0_BASE | CR0_PG,
        cr3,
        cr4: CR4_PAE,
        efer: 0,
    }
}

pub(super) fn level4(cr3: u64) -> PagingMode {
    PagingMode {
        cr0: CR0_BASE | CR0_PG,
        cr3,
        cr4: CR4_PAE | CR4_PSE,
        efer: EFER_LME | EFER_LMA,
    }
}

fn level5(cr3: u64) -> PagingMode {
    PagingMode {
        cr4: CR4_PAE | CR4_LA57,
        ..level4(cr3)
    }
}

/// Builds 4- or 5-level tables in `ram` from `root`, the new tables after it, 4 KiB apart.
struct Builder {
    root: u64,
    levels: u8,
    next_table: u64,
}

impl Builder {
    fn new(ram: &mut Ram, root: u64, levels: u8) -> Self {
        ram.add(root, PAGE_SIZE);
        Builder {
            root,
            levels,
            next_table: root + PAGE_SIZE,
        }
    }

    /// Maps `linear` to `phys` with a leaf at `leaf` (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB).
    fn map(&mut self, ram: &mut Ram, linear: u64, phys: u64, leaf: u8) {
        let index = |n: u8| (linear >> (12 + 9 * u32::from(n - 1))) & 0x1ff;
        let mut table = self.root;
        for n in (leaf + 1..=self.levels).rev() {
            let gpa = table + index(n) * 8;
            let entry = ram.get64(gpa);
            table = if entry & P != 0 {
                entry & ADDRESS_MASK
            } else {
                let t = self.next_table;
                self.next_table += PAGE_SIZE;
                ram.add(t, PAGE_SIZE);
                ram.set64(gpa, t | P | RW | US);
                t
            };
        }
        let large = if leaf > 1 { PS } else { 0 };
        ram.set64(table + index(leaf) * 8, phys | P | RW | A | D | large);
    }
}

#[test]
fn the_paging_mode_comes_from_cr0_cr4_and_efer() {
    let m = |cr0, cr4, efer| PagingMode {
        cr0,
        cr3: 0,
        cr4,
        efer,
    };
    let pg = CR0_BASE | CR0_PG;
    assert_eq!(m(0, 0, 0).paging(), Paging::Off);
    assert_eq!(m(CR0_BASE, CR4_PAE | CR4_LA57, 0).paging(), Paging::Off);
    assert_eq!(m(pg, 0, 0).paging(), Paging::Bits32);
    assert_eq!(m(pg, CR4_PSE, EFER_LME).paging(), Paging::Bits32);
    assert_eq!(m(pg, CR4_PAE, 0).paging(), Paging::Pae);
    assert_eq!(m(pg, CR4_PAE | CR4_LA57, EFER_LME).paging(), Paging::Pae);
    assert_eq!(m(pg, CR4_PAE, EFER_LME | EFER_LMA).paging(), Paging::Level4);
    assert_eq!(m(pg, CR4_PAE | CR4_LA57, EFER_LMA).paging(), Paging::Level5);
    assert_eq!(off().truncate(0x1_2345_6789), 0x2345_6789);
    assert_eq!(pae(0).truncate(0xffff_ffff_8000_0000), 0x8000_0000);
    assert_eq!(level4(0).truncate(u64::MAX), u64::MAX);
}

#[test]
fn paging_off_is_the_identity_on_32_bits() {
    let ram = Ram::default();
    assert_eq!(translate(&ram, &off(), 0xfee0_00b0), Ok(0xfee0_00b0));
    assert_eq!(translate(&ram, &off(), 0x1_0000_1234), Ok(0x1234));
    assert_eq!(translate(&ram, &off(), 0), Ok(0));
}

#[test]
fn bits32_4k_page() {
    let mut ram = Ram::default();
    // PD at 0x10_0000 (CR3's PWT and PCD set), PT at 0x20_0000.
    let cr3 = 0x10_0000 | PWT | PCD;
    let linear = 0xc012_3456;
    ram.set32(0x10_0000 + 0x300 * 4, 0x0020_0000 | (P | RW | A) as u32);
    ram.set32(
        0x20_0000 + 0x123 * 4,
        0x0abc_d000 | (P | RW | A | D | G) as u32,
    );
    assert_eq!(
        translate(&ram, &bits32(cr3, false), linear),
        Ok(0x0abc_d456)
    );
    assert_eq!(translate(&ram, &bits32(cr3, true), linear), Ok(0x0abc_d456));
    // Linear addresses have 32 bits.
    assert_eq!(
        translate(&ram, &bits32(cr3, false), 0x7_c012_3fff),
        Ok(0x0abc_dfff)
    );
    // Without CR4.PSE, PS is ignored: the PDE still points to the page table.
    ram.set32(0x10_0000 + 0x300 * 4, 0x0020_0000 | (P | PS) as u32);
    assert_eq!(
        translate(&ram, &bits32(cr3, false), linear),
        Ok(0x0abc_d456)
    );
}

#[test]
fn bits32_4m_pages_with_pse() {
    let mut ram = Ram::default();
    let cr3 = 0x3000;
    // 0x0065_4321: PDE 1, offset 0x25_4321 in the 4 MiB page.
    ram.set32(cr3 + 4, 0x0080_0000 | (P | RW | PS) as u32);
    assert_eq!(
        translate(&ram, &bits32(cr3, true), 0x0065_4321),
        Ok(0x00a5_4321)
    );
    // PSE-36: PDE bits 20:13 are physical bits 39:32; PAT (bit 12) is not an address bit.
    ram.set32(
        cr3 + 4,
        0x0080_0000 | 0x12 << 13 | (PAT_LARGE | P | PS) as u32,
    );
    assert_eq!(
        translate(&ram, &bits32(cr3, true), 0x0065_4321),
        Ok(0x12_00a5_4321)
    );
    // Bit 21 is reserved in a 4 MiB PDE.
    let bad = 0x0080_0000 | 1 << 21 | (P | PS) as u32;
    ram.set32(cr3 + 4, bad);
    assert_eq!(
        translate(&ram, &bits32(cr3, true), 0x0065_4321),
        Err(WalkError::Reserved {
            linear: 0x0065_4321,
            level: Level::Pde,
            gpa: cr3 + 4,
            entry: u64::from(bad),
        })
    );
}

#[test]
fn bits32_unmapped_and_outside_memory() {
    let mut ram = Ram::default();
    let cr3 = 0x3000;
    ram.add(cr3, PAGE_SIZE);
    let mode = bits32(cr3, true);
    assert_eq!(
        translate(&ram, &mode, 0xc012_3456),
        Err(WalkError::NotPresent {
            linear: 0xc012_3456,
            level: Level::Pde,
            gpa: cr3 + 0x300 * 4,
        })
    );
    // The PDE points to a page table outside RAM.
    ram.set32(cr3 + 0x300 * 4, 0x8000_0000 | (P | RW) as u32);
    assert_eq!(
        translate(&ram, &mode, 0xc012_3456),
        Err(WalkError::TableOutsideMemory {
            linear: 0xc012_3456,
            level: Level::Pte,
            gpa: 0x8000_0000 + 0x123 * 4,
        })
    );
    // A page table in RAM with the PTE clear (only "accessed" set).
    ram.set32(cr3 + 0x300 * 4, 0x4000 | P as u32);
    ram.set32(0x4000 + 0x123 * 4, A as u32);
    assert_eq!(
        translate(&ram, &mode, 0xc012_3456),
        Err(WalkError::NotPresent {
            linear: 0xc012_3456,
            level: Level::Pte,
            gpa: 0x4000 + 0x123 * 4,
        })
    );
    // CR3 itself outside RAM.
    assert_eq!(
        translate(&ram, &bits32(0xfee0_0000, false), 0x0040_0000),
        Err(WalkError::TableOutsideMemory {
            linear: 0x0040_0000,
            level: Level::Pde,
            gpa: 0xfee0_0004,
        })
    );
}

#[test]
fn pae_4k_and_2m_pages() {
    let mut ram = Ram::default();
    // The PDPT is 32-byte aligned, not page aligned: CR3[31:5] = 0x3020.
    let cr3 = 0x3020 | PWT;
    let mode = pae(cr3);
    // 0xc0a0_1234: PDPTE 3, PDE 5, PTE 1; the frame above 4 GiB, XD and PKEY ignored.
    ram.set64(0x3020 + 3 * 8, 0x5000 | P | PCD);
    ram.set64(0x5000 + 5 * 8, 0x6000 | P | RW | US);
    ram.set64(0x6000 + 8, 0x1_2345_6000 | P | RW | XD);
    assert_eq!(translate(&ram, &mode, 0xc0a0_1234), Ok(0x1_2345_6234));
    assert_eq!(
        translate(&ram, &mode, 0xdead_beef_c0a0_1234),
        Ok(0x1_2345_6234),
        "32-bit linear addresses"
    );
    // 0x4030_5678: PDPTE 1, PDE 1 maps 2 MiB (PS works without CR4.PSE); PAT is not an
    // address bit.
    ram.set64(0x3020 + 8, 0x7000 | P);
    ram.set64(0x7000 + 8, 0x2_0040_0000 | PAT_LARGE | P | RW | PS | XD);
    assert_eq!(translate(&ram, &mode, 0x4030_5678), Ok(0x2_0050_5678));
}

#[test]
fn pae_errors() {
    let mut ram = Ram::default();
    let mode = pae(0x3020);
    ram.add(0x3000, PAGE_SIZE);
    assert_eq!(
        translate(&ram, &mode, 0x1000),
        Err(WalkError::NotPresent {
            linear: 0x1000,
            level: Level::Pdpte,
            gpa: 0x3020,
        })
    );
    // R/W is reserved in a PAE PDPTE (bits 2:1, 8:5, 63:52).
    for bad in [RW, US, A, D, PS, G, XD, 1 << 52] {
        ram.set64(0x3020, 0x5000 | P | bad);
        assert_eq!(
            translate(&ram, &mode, 0x1000),
            Err(WalkError::Reserved {
                linear: 0x1000,
                level: Level::Pdpte,
                gpa: 0x3020,
                entry: 0x5000 | P | bad,
            }),
            "{bad:#x}"
        );
    }
    // Bits 20:13 are reserved in a 2 MiB PDE.
    ram.set64(0x3020, 0x5000 | P);
    ram.set64(0x5000, 0x20_0000 | 1 << 13 | P | PS);
    assert!(matches!(
        translate(&ram, &mode, 0x1000),
        Err(WalkError::Reserved {
            level: Level::Pde,
            ..
        })
    ));
    // The PDPT outside RAM.
    assert_eq!(
        translate(&ram, &pae(0xffff_ffe0), 0xc000_0000),
        Err(WalkError::TableOutsideMemory {
            linear: 0xc000_0000,
            level: Level::Pdpte,
            gpa: 0xffff_fff8,
        })
    );
}

/// A 4-level tree with a 4 KiB, a 2 MiB and a 1 GiB page in the kernel half:
///
/// - `0xffff_8880_1234_5678`: PML4E 0x111, PDPTE 0, PDE 0x91, PTE 0x145 → `0xa_bcde_f678`;
/// - `0xffff_8880_4234_5678`: PDPTE 1, PDE 0x11 (2 MiB) → `0x2_0074_5678`;
/// - `0xffff_8880_c123_4567`: PDPTE 3 (1 GiB) → `0x1_4123_4567`.
fn level4_tree() -> Ram {
    let mut ram = Ram::default();
    ram.add(0x10_0000, PAGE_SIZE);
    ram.set64(0x10_0000 + 0x111 * 8, 0x10_1000 | P | RW | A | XD);
    ram.set64(0x10_1000, 0x10_2000 | P | RW | A);
    ram.set64(0x10_1000 + 8, 0x10_3000 | P | RW);
    ram.set64(0x10_1000 + 3 * 8, 0x1_4000_0000 | PAT_LARGE | P | PS | G);
    ram.set64(0x10_2000 + 0x91 * 8, 0x10_4000 | P | RW);
    ram.set64(
        0x10_4000 + 0x145 * 8,
        0xa_bcde_f000 | P | RW | A | D | XD | PKEY,
    );
    ram.set64(0x10_3000 + 0x11 * 8, 0x2_0060_0000 | P | RW | PS | XD);
    ram
}

#[test]
fn level4_pages_of_every_size() {
    let ram = level4_tree();
    // PCID bits and bit 63 of CR3 are not address bits.
    for cr3 in [0x10_0000, 0x10_0000 | PWT | PCD, 0x8000_0000_0010_0abc] {
        let mode = level4(cr3);
        assert_eq!(
            translate(&ram, &mode, 0xffff_8880_1234_5678),
            Ok(0xa_bcde_f678)
        );
        assert_eq!(
            translate(&ram, &mode, 0xffff_8880_4234_5678),
            Ok(0x2_0074_5678)
        );
        assert_eq!(
            translate(&ram, &mode, 0xffff_8880_c123_4567),
            Ok(0x1_4123_4567)
        );
        assert_eq!(
            translate(&ram, &mode, 0xffff_8880_ffff_ffff),
            Ok(0x1_7fff_ffff)
        );
    }
}

#[test]
fn level4_errors() {
    let mut ram = level4_tree();
    let mode = level4(0x10_0000);
    for linear in [
        0x0000_8000_0000_0000,
        0xffff_7fff_ffff_ffff,
        0x8000_0000_0000_0000,
        0x00ff_8000_1234_5abc,
    ] {
        assert_eq!(
            translate(&ram, &mode, linear),
            Err(WalkError::NonCanonical { linear })
        );
    }
    assert_eq!(
        translate(&ram, &mode, 0x0000_7fff_ffff_f000),
        Err(WalkError::NotPresent {
            linear: 0x0000_7fff_ffff_f000,
            level: Level::Pml4e,
            gpa: 0x10_0000 + 0xff * 8,
        })
    );
    // PDPTE 2 and PDE 0x92 are absent.
    assert_eq!(
        translate(&ram, &mode, 0xffff_8880_8000_0000),
        Err(WalkError::NotPresent {
            linear: 0xffff_8880_8000_0000,
            level: Level::Pdpte,
            gpa: 0x10_1010,
        })
    );
    assert_eq!(
        translate(&ram, &mode, 0xffff_8880_1240_0000),
        Err(WalkError::NotPresent {
            linear: 0xffff_8880_1240_0000,
            level: Level::Pde,
            gpa: 0x10_2000 + 0x92 * 8,
        })
    );
    // PTE 0x146 is absent.
    assert!(matches!(
        translate(&ram, &mode, 0xffff_8880_1234_6000),
        Err(WalkError::NotPresent {
            level: Level::Pte,
            ..
        })
    ));
    // Bits 29:13 are reserved in a 1 GiB PDPTE.
    for bad in [1 << 13, 1 << 20, 1 << 29] {
        ram.set64(0x10_1000 + 3 * 8, 0x1_4000_0000 | P | PS | bad);
        assert!(
            matches!(
                translate(&ram, &mode, 0xffff_8880_c123_4567),
                Err(WalkError::Reserved {
                    level: Level::Pdpte,
                    ..
                })
            ),
            "{bad:#x}"
        );
    }
    // PS is reserved in a PML4E.
    ram.set64(0x10_0000 + 0x111 * 8, 0x10_1000 | P | PS);
    assert_eq!(
        translate(&ram, &mode, 0xffff_8880_1234_5678),
        Err(WalkError::Reserved {
            linear: 0xffff_8880_1234_5678,
            level: Level::Pml4e,
            gpa: 0x10_0888,
            entry: 0x10_1000 | P | PS,
        })
    );
    // A PDPT outside RAM.
    ram.set64(0x10_0000 + 0x111 * 8, 0xc000_0000 | P);
    assert_eq!(
        translate(&ram, &mode, 0xffff_8880_1234_5678),
        Err(WalkError::TableOutsideMemory {
            linear: 0xffff_8880_1234_5678,
            level: Level::Pdpte,
            gpa: 0xc000_0000,
        })
    );
}

#[test]
fn level5_walks_one_more_level_and_widens_canonical_addresses() {
    let mut ram = Ram::default();
    let cr3 = 0x20_0000;
    // 0x00ff_8000_1234_5abc: PML5E 0xff, PML4E 0x100, PDPTE 0, PDE 0x91 maps 2 MiB.
    ram.set64(cr3 + 0xff * 8, 0x20_1000 | P | RW);
    ram.set64(0x20_1000 + 0x100 * 8, 0x20_2000 | P | RW);
    ram.set64(0x20_2000, 0x20_3000 | P | RW);
    ram.set64(0x20_3000 + 0x91 * 8, 0x3_0000_0000 | P | RW | PS);
    let linear = 0x00ff_8000_1234_5abc;
    assert_eq!(translate(&ram, &level5(cr3), linear), Ok(0x3_0014_5abc));
    assert_eq!(
        translate(&ram, &level4(cr3), linear),
        Err(WalkError::NonCanonical { linear })
    );
    for linear in [0x0100_0000_0000_0000, 0xfe00_0000_0000_0000] {
        assert_eq!(
            translate(&ram, &level5(cr3), linear),
            Err(WalkError::NonCanonical { linear })
        );
    }
    // 0xff7f_8000_0000_1000 (canonical: bits 63:56 copy bit 56): PML5E 0x17f, then a PML4E
    // with PS.
    ram.set64(cr3 + 0x17f * 8, 0x20_4000 | P);
    ram.set64(0x20_4000 + 0x100 * 8, 0x20_5000 | P | PS);
    assert!(matches!(
        translate(&ram, &level5(cr3), 0xff7f_8000_0000_1000),
        Err(WalkError::Reserved {
            level: Level::Pml4e,
            ..
        })
    ));
    // PS in a PML5E.
    ram.set64(cr3 + 8, 0x20_6000 | P | PS);
    assert!(matches!(
        translate(&ram, &level5(cr3), 0x0001_0000_0000_0000),
        Err(WalkError::Reserved {
            level: Level::Pml5e,
            ..
        })
    ));
    assert_eq!(
        translate(&ram, &level5(cr3), 0x0002_0000_0000_0000),
        Err(WalkError::NotPresent {
            linear: 0x0002_0000_0000_0000,
            level: Level::Pml5e,
            gpa: cr3 + 16,
        })
    );
}

/// `movq $0x12345678, 0x2010(%rax)` (11 bytes) then `mov 0x11223344(%rip), %ecx` (6 bytes).
const CODE: [u8; 17] = [
    0x48, 0xc7, 0x80, 0x10, 0x20, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12, 0x8b, 0x0d, 0x44, 0x33, 0x22,
    0x11,
];

/// Long-mode tables mapping linear page 0x40_0000 to 0x5000 and 0x40_1000 to 0x9000, with
/// [`CODE`] at `0x40_0ffa`: 6 bytes in the first page, the rest in the second.
fn split_code() -> (Ram, PagingMode) {
    let mut ram = Ram::default();
    let mut b = Builder::new(&mut ram, 0x10_0000, 4);
    b.map(&mut ram, 0x40_0000, 0x5000, 1);
    b.map(&mut ram, 0x40_1000, 0x9000, 1);
    ram.write(0x5ffa, &CODE[..6]);
    ram.write(0x9000, &CODE[6..]);
    (ram, level4(0x10_0000))
}

#[test]
fn fetch_crosses_into_a_different_physical_page() {
    let (ram, mode) = split_code();
    assert_eq!(translate(&ram, &mode, 0x40_0ffa), Ok(0x5ffa));
    assert_eq!(translate(&ram, &mode, 0x40_1000), Ok(0x9000));
    let mut out = [0xaa; MAX_LENGTH];
    assert_eq!(fetch(&ram, &mode, 0x40_0ffa, &mut out), Ok(MAX_LENGTH));
    assert_eq!(out[..], CODE[..MAX_LENGTH]);
    let insn = decode(&out, Mode::Long64).expect("decodes");
    assert_eq!(insn.length, 11);
    assert_eq!(insn.operation, Operation::Store);
    assert_eq!(insn.size, 8);
    // Within one page: 15 bytes, one walk.
    let mut out = [0; MAX_LENGTH];
    assert_eq!(fetch(&ram, &mode, 0x40_1000, &mut out), Ok(MAX_LENGTH));
    assert_eq!(out[..11], CODE[6..]);
    assert_eq!(out[11..], [0; 4]);
}

#[test]
fn fetch_stops_at_an_unreadable_second_page() {
    let (mut ram, mode) = split_code();
    // Unmap the second page: 6 bytes, and the decoder asks for more.
    let pte = (0x40_1000u64 >> 12) & 0x1ff;
    let pt = {
        let pml4e = ram.get64(0x10_0000);
        let pdpte = ram.get64(pml4e & ADDRESS_MASK);
        let pde = ram.get64((pdpte & ADDRESS_MASK) + 2 * 8);
        pde & ADDRESS_MASK
    };
    ram.set64(pt + pte * 8, 0);
    let mut out = [0xaa; MAX_LENGTH];
    assert_eq!(fetch(&ram, &mode, 0x40_0ffa, &mut out), Ok(6));
    assert_eq!(out[..6], CODE[..6]);
    assert_eq!(out[6..], [0; 9], "the rest is zeroed");
    assert_eq!(decode(&out[..6], Mode::Long64), Err(DecodeError::Truncated));
    // The second page maps to something that is not RAM.
    ram.set64(pt + pte * 8, 0xfee0_0000 | P | RW);
    assert_eq!(fetch(&ram, &mode, 0x40_0ffa, &mut out), Ok(6));
    // Still 15 when the 15 bytes end exactly at the page boundary.
    ram.write(0x5ff1, &[0x90; 15]);
    assert_eq!(fetch(&ram, &mode, 0x40_0ff1, &mut out), Ok(MAX_LENGTH));
    assert_eq!(fetch(&ram, &mode, 0x40_0ff2, &mut out), Ok(14));
    assert_eq!(fetch(&ram, &mode, 0x40_0fff, &mut out), Ok(1));
}

#[test]
fn fetch_fails_when_the_first_page_cannot_be_read() {
    let (mut ram, mode) = split_code();
    let mut out = [0xaa; MAX_LENGTH];
    assert_eq!(
        fetch(&ram, &mode, 0x80_0000, &mut out),
        Err(WalkError::NotPresent {
            linear: 0x80_0000,
            level: Level::Pde,
            gpa: 0x10_2000 + 4 * 8,
        })
    );
    assert_eq!(
        fetch(&ram, &mode, 0x8000_0000_0000, &mut out),
        Err(WalkError::NonCanonical {
            linear: 0x8000_0000_0000
        })
    );
    // Executing from a page that is not RAM.
    let mut b = Builder {
        root: 0x10_0000,
        levels: 4,
        next_table: 0x20_0000,
    };
    b.map(&mut ram, 0x60_0000, 0xfee0_0000, 1);
    assert_eq!(
        fetch(&ram, &mode, 0x60_0ff0, &mut out),
        Err(WalkError::FrameOutsideMemory {
            linear: 0x60_0ff0,
            gpa: 0xfee0_0ff0,
        })
    );
    assert_eq!(out, [0; MAX_LENGTH]);
}

#[test]
fn fetch_wraps_at_4g_outside_long_mode() {
    let mut ram = Ram::default();
    ram.write(0xffff_fff8, &[1, 2, 3, 4, 5, 6, 7, 8]);
    ram.write(0, &[9, 10, 11, 12, 13, 14, 15]);
    let mut out = [0; MAX_LENGTH];
    assert_eq!(fetch(&ram, &off(), 0xffff_fff8, &mut out), Ok(MAX_LENGTH));
    assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    // The same through 32-bit paging with a 4 MiB identity page at each end.
    let cr3 = 0x1000;
    ram.set32(cr3, (P | PS) as u32);
    ram.set32(cr3 + 0x3ff * 4, 0xffc0_0000 | (P | PS) as u32);
    let mut out = [0; MAX_LENGTH];
    assert_eq!(
        fetch(&ram, &bits32(cr3, true), 0x1_ffff_fff8, &mut out),
        Ok(MAX_LENGTH)
    );
    assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    // A 32-bit protected-mode store to the local APIC, fetched with paging off.
    ram.write(0x7c00, &[0xa3, 0xb0, 0x00, 0xe0, 0xfe]);
    let mut out = [0; MAX_LENGTH];
    assert_eq!(fetch(&ram, &off(), 0x7c00, &mut out), Ok(MAX_LENGTH));
    let insn = decode(&out, Mode::Protected32).expect("decodes");
    assert_eq!(insn.length, 5);
    assert_eq!(insn.memory.offset(|_| 0, 0x7c05), 0xfee0_00b0);
}

#[test]
fn fetch_does_not_wrap_in_long_mode() {
    let mut ram = Ram::default();
    let mut b = Builder::new(&mut ram, 0x10_0000, 4);
    // The last page of the lower half: the next address is not canonical.
    b.map(&mut ram, 0x0000_7fff_ffff_f000, 0x5000, 1);
    // The last page of the address space: there is no next address.
    b.map(&mut ram, 0xffff_ffff_ffff_f000, 0x6000, 1);
    b.map(&mut ram, 0, 0x7000, 1);
    ram.add(0x5000, 3 * PAGE_SIZE);
    let mode = level4(0x10_0000);
    let mut out = [0; MAX_LENGTH];
    assert_eq!(fetch(&ram, &mode, 0x0000_7fff_ffff_fffa, &mut out), Ok(6));
    assert_eq!(fetch(&ram, &mode, 0xffff_ffff_ffff_fff8, &mut out), Ok(8));
}

#[test]
fn errors_say_what_failed() {
    let cases: [(WalkError, &str); 5] = [
        (
            WalkError::NonCanonical {
                linear: 0x8000_0000_0000,
            },
            "linear address 0x800000000000 is not canonical",
        ),
        (
            WalkError::NotPresent {
                linear: 0x40_1000,
                level: Level::Pte,
                gpa: 0x3008,
            },
            "linear address 0x401000 is not mapped: its PTE at guest-physical 0x3008 is not \
             present",
        ),
        (
            WalkError::Reserved {
                linear: 0x1000,
                level: Level::Pml4e,
                gpa: 0x2000,
                entry: 0x3081,
            },
            "linear address 0x1000: its PML4E 0x3081 at guest-physical 0x2000 sets a reserved bit",
        ),
        (
            WalkError::TableOutsideMemory {
                linear: 0x1000,
                level: Level::Pdpte,
                gpa: 0xc000_0000,
            },
            "linear address 0x1000: its PDPTE would be at guest-physical 0xc0000000, which is \
             not guest RAM",
        ),
        (
            WalkError::FrameOutsideMemory {
                linear: 0x60_0ff0,
                gpa: 0xfee0_0ff0,
            },
            "linear address 0x600ff0 translates to guest-physical 0xfee00ff0, which is not \
             guest RAM",
        ),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
    }
    let names = [
        Level::Pml5e,
        Level::Pml4e,
        Level::Pdpte,
        Level::Pde,
        Level::Pte,
    ]
    .map(Level::name);
    assert_eq!(names, ["PML5E", "PML4E", "PDPTE", "PDE", "PTE"]);
}

/// Random memory: `read_phys` refuses addresses with bit 36 set (or beyond 2^64), and reads
/// the 64 KiB buffer cyclically elsewhere, so that random entries often lead somewhere. Counts
/// the reads.
struct Chaos {
    bytes: Vec<u8>,
    reads: Cell<usize>,
}

impl GuestPhys for Chaos {
    fn read_phys(&self, gpa: u64, out: &mut [u8]) -> bool {
        self.reads.set(self.reads.get() + 1);
        if (gpa >> 36) & 1 != 0 || gpa.checked_add(out.len() as u64).is_none() {
            return false;
        }
        let n = self.bytes.len() as u64;
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.bytes[((gpa + i as u64) % n) as usize];
        }
        true
    }
}

#[test]
fn random_tables_and_registers_never_panic() {
    let mut rng = Rng(0x5eed_0f7a_61e5);
    let mut mem = Chaos {
        bytes: vec![0; 64 * 1024],
        reads: Cell::new(0),
    };
    // Outcomes seen: Ok, NonCanonical, NotPresent, Reserved, TableOutsideMemory,
    // FrameOutsideMemory, and fetches cut short by the second page.
    let mut stats = [0u32; 7];
    for round in 0..100_000 {
        if round % 1000 == 0 {
            // Entries present three times out of four, so walks go deep.
            for chunk in mem.bytes.chunks_mut(8) {
                let e = rng.next() | u64::from(rng.below(4) != 0);
                chunk.copy_from_slice(&e.to_le_bytes());
            }
        }
        let pick = |rng: &mut Rng, bit: u64| if rng.below(2) == 0 { bit } else { 0 };
        let mode = PagingMode {
            cr0: CR0_BASE | pick(&mut rng, CR0_PG),
            cr3: rng.next(),
            cr4: pick(&mut rng, CR4_PSE) | pick(&mut rng, CR4_PAE) | pick(&mut rng, CR4_LA57),
            efer: pick(&mut rng, EFER_LMA),
        };
        let mut linear = rng.next();
        if rng.below(2) == 0 {
            // Usually canonical.
            linear = ((linear << 16) as i64 >> 16) as u64;
        }
        if rng.below(4) == 0 {
            // Near a page boundary.
            linear |= 0xff0;
        }
        let truncated = mode.truncate(linear);

        mem.reads.set(0);
        let result = translate(&mem, &mode, linear);
        assert!(mem.reads.get() <= 5, "{} reads", mem.reads.get());
        match result {
            Ok(gpa) => {
                stats[0] += 1;
                assert_eq!(gpa & 0xfff, truncated & 0xfff);
                assert!(gpa < 1 << 52);
                match mode.paging() {
                    Paging::Off => assert_eq!(gpa, truncated),
                    Paging::Bits32 => assert!(gpa < 1 << 40),
                    _ => {}
                }
            }
            Err(WalkError::NonCanonical { linear: l }) => {
                stats[1] += 1;
                assert_eq!(l, linear);
                assert!(matches!(mode.paging(), Paging::Level4 | Paging::Level5));
            }
            Err(WalkError::NotPresent { linear: l, .. }) => {
                stats[2] += 1;
                assert_eq!(l, truncated);
            }
            Err(WalkError::Reserved { linear: l, .. }) => {
                stats[3] += 1;
                assert_eq!(l, truncated);
            }
            Err(WalkError::TableOutsideMemory { linear: l, .. }) => {
                stats[4] += 1;
                assert_eq!(l, truncated);
            }
            Err(e @ WalkError::FrameOutsideMemory { .. }) => panic!("translate gave {e}"),
        }
        if let Err(e) = result {
            assert!(!e.to_string().is_empty());
        }

        let mut out = [0xaa; MAX_LENGTH];
        mem.reads.set(0);
        let fetched = fetch(&mem, &mode, linear, &mut out);
        assert!(mem.reads.get() <= 12, "{} reads", mem.reads.get());
        match (fetched, result) {
            (Ok(n), Ok(_)) => {
                let to_boundary = (PAGE_SIZE - (truncated & 0xfff)) as usize;
                assert!(
                    n == MAX_LENGTH || (n == to_boundary && n < MAX_LENGTH),
                    "{n} bytes, {to_boundary} to the boundary"
                );
                if n < MAX_LENGTH {
                    stats[6] += 1;
                }
                assert!(out[n..].iter().all(|b| *b == 0));
                // Every byte is where its own translation says.
                for (i, byte) in out[..n].iter().enumerate() {
                    let gpa = translate(&mem, &mode, truncated.wrapping_add(i as u64))
                        .expect("fetched bytes translate");
                    let mut b = [0];
                    assert!(mem.read_phys(gpa, &mut b));
                    assert_eq!(b[0], *byte);
                }
            }
            (Err(WalkError::FrameOutsideMemory { linear: l, gpa }), Ok(t)) => {
                stats[5] += 1;
                assert_eq!((l, gpa), (truncated, t));
                assert_eq!(out, [0; MAX_LENGTH]);
            }
            (Err(e), Err(t)) => assert_eq!(e, t),
            (f, t) => panic!("fetch {f:?} but translate {t:?}"),
        }
    }
    for (i, n) in stats.iter().enumerate() {
        assert!(*n > 0, "outcome {i} seen {n} times: {stats:?}");
    }
}
