//! x86 format: page-size choice, table counts, entry bits, address checks.

use basalt_paging::{
    CacheType, EntryFormat, MapError, MapFlags, PHYS_LIMIT, PageSize, PageTable, X86,
};

use crate::emu::Machine;
use crate::{DIRECT_MAP, GIB1, KIB4, MIB2};

const RW: MapFlags = MapFlags::READ.union(MapFlags::WRITE);

/// Physical start of the mixed range: two 4 KiB pages below a 2 MiB boundary, one 2 MiB page
/// below a 1 GiB boundary.
const MIXED_PHYS: u64 = GIB1 - MIB2 - 2 * KIB4;
/// Its length: 2 × 4 KiB + 2 MiB + 1 GiB + 2 MiB + 4 KiB.
const MIXED_LEN: u64 = 2 * KIB4 + MIB2 + GIB1 + MIB2 + KIB4;

fn setup() -> (Machine, PageTable<X86>) {
    let mut m = Machine::new();
    let pt = PageTable::<X86>::new(&mut m.frames).unwrap();
    (m, pt)
}

/// The page size expected at `phys` inside the mixed range mapped with `max`.
fn expected_size(phys: u64, max: PageSize) -> PageSize {
    let large = if phys < GIB1 - MIB2 {
        PageSize::Size4K
    } else if phys < GIB1 {
        PageSize::Size2M
    } else if phys < 2 * GIB1 {
        PageSize::Size1G
    } else if phys < 2 * GIB1 + MIB2 {
        PageSize::Size2M
    } else {
        PageSize::Size4K
    };
    large.min(max)
}

fn check_mixed(m: &Machine, pt: &PageTable<X86>, max: PageSize) {
    let virt = DIRECT_MAP + MIXED_PHYS;
    let flags = X86::validate_flags(RW).unwrap();
    // Every 4 KiB page of the small parts, and a stride through the large ones, with offsets.
    let mut offset = 0;
    while offset < MIXED_LEN {
        for delta in [0, 8, 0xfff] {
            let t = pt.translate(&m.mem, virt + offset + delta).unwrap();
            assert_eq!(t.phys, MIXED_PHYS + offset + delta);
            assert_eq!(t.flags, flags);
            assert_eq!(t.page_size, expected_size(MIXED_PHYS + offset, max));
        }
        offset += if (3 * KIB4..GIB1 + MIB2).contains(&offset) {
            0x7_3000
        } else {
            KIB4
        };
    }
    let last = virt + MIXED_LEN - 1;
    assert_eq!(
        pt.translate(&m.mem, last).unwrap().phys,
        MIXED_PHYS + MIXED_LEN - 1
    );
    assert_eq!(pt.translate(&m.mem, virt - 1), None);
    assert_eq!(pt.translate(&m.mem, virt + MIXED_LEN), None);
}

#[test]
fn mixed_range_gets_1g_2m_and_4k_pages() {
    let (mut m, mut pt) = setup();
    let virt = DIRECT_MAP + MIXED_PHYS;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        virt,
        MIXED_PHYS,
        MIXED_LEN,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    check_mixed(&m, &pt, PageSize::Size1G);
    // Root, one PDPT, a PD for GiB 0 with a PT for the two 4 KiB pages, a PD for GiB 2 with a
    // PT for the last 4 KiB page; GiB 1 is a single PDPT entry.
    assert_eq!(m.live(), 6);
    assert_eq!(m.allocs(), 6);
    assert_eq!(m.check_tree::<X86>(pt.root()), 6);
}

#[test]
fn max_page_limits_the_page_size() {
    let virt = DIRECT_MAP + MIXED_PHYS;

    let (mut m, mut pt) = setup();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        virt,
        MIXED_PHYS,
        MIXED_LEN,
        RW,
        PageSize::Size2M,
    )
    .unwrap();
    check_mixed(&m, &pt, PageSize::Size2M);
    // As above plus a PD for GiB 1.
    assert_eq!(m.live(), 7);

    let (mut m, mut pt) = setup();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        virt,
        MIXED_PHYS,
        MIXED_LEN,
        RW,
        PageSize::Size4K,
    )
    .unwrap();
    check_mixed(&m, &pt, PageSize::Size4K);
    // Root, PDPT, 3 PDs, and one PT per 2 MiB region touched: 1 + 1 + 512 + 1 + 1.
    assert_eq!(m.live(), 2 + 3 + 516);
    assert_eq!(m.check_tree::<X86>(pt.root()), 521);
}

#[test]
fn large_pages_need_virt_and_phys_aligned_alike() {
    let (mut m, mut pt) = setup();
    // Virtually 1 GiB-aligned, physically only 2 MiB-aligned: 2 MiB pages.
    let virt = DIRECT_MAP + 4 * GIB1;
    let phys = 5 * GIB1 + 3 * MIB2;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        virt,
        phys,
        GIB1,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    let t = pt.translate(&m.mem, virt + GIB1 - 1).unwrap();
    assert_eq!((t.phys, t.page_size), (phys + GIB1 - 1, PageSize::Size2M));
    assert_eq!(m.live(), 3);

    // Physically off by 4 KiB from 2 MiB alignment: 4 KiB pages only.
    let virt = DIRECT_MAP + 8 * GIB1;
    let phys = 9 * GIB1 + KIB4;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        virt,
        phys,
        4 * MIB2,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    let t = pt.translate(&m.mem, virt + 3 * MIB2 + 5).unwrap();
    assert_eq!(
        (t.phys, t.page_size),
        (phys + 3 * MIB2 + 5, PageSize::Size4K)
    );
    assert_eq!(m.live(), 3 + 1 + 4);
}

#[test]
fn x86_leaf_and_table_bits() {
    let (mut m, mut pt) = setup();
    let base = DIRECT_MAP;
    let map = |pt: &mut PageTable<X86>, m: &mut Machine, virt, phys, len, flags| {
        pt.map(
            &mut m.mem,
            &mut m.frames,
            virt,
            phys,
            len,
            flags,
            PageSize::Size1G,
        )
        .unwrap();
    };
    map(&mut pt, &mut m, base, 0x1000, KIB4, RW);
    map(
        &mut pt,
        &mut m,
        base + KIB4,
        0x2000,
        KIB4,
        MapFlags::EXECUTE,
    );
    map(
        &mut pt,
        &mut m,
        base + MIB2,
        MIB2,
        MIB2,
        RW | MapFlags::GLOBAL,
    );
    map(
        &mut pt,
        &mut m,
        base + GIB1,
        GIB1,
        GIB1,
        RW | MapFlags::UNCACHEABLE,
    );
    map(
        &mut pt,
        &mut m,
        base + 2 * KIB4,
        0x3000,
        KIB4,
        MapFlags::WRITE_THROUGH,
    );

    // Non-executable writable 4 KiB page.
    let e = m.leaf::<X86>(pt.root(), base);
    assert_eq!(e, 0x1000 | X86::PRESENT | X86::WRITABLE | X86::NO_EXECUTE);
    // Executable read-only page: no NX, no R/W.
    let e = m.leaf::<X86>(pt.root(), base + KIB4);
    assert_eq!(e, 0x2000 | X86::PRESENT);
    // Write-through: PWT only.
    let e = m.leaf::<X86>(pt.root(), base + 2 * KIB4);
    assert_eq!(
        e,
        0x3000 | X86::PRESENT | X86::WRITE_THROUGH | X86::NO_EXECUTE
    );
    // 2 MiB global page: PS and G.
    let e = m.leaf::<X86>(pt.root(), base + MIB2 + 0x1234);
    let rw_nx = X86::PRESENT | X86::WRITABLE | X86::NO_EXECUTE;
    assert_eq!(e, MIB2 | rw_nx | X86::HUGE_PAGE | X86::GLOBAL);
    // 1 GiB uncacheable page: PS, PCD and PWT.
    let e = m.leaf::<X86>(pt.root(), base + GIB1 + 0x5000);
    let uc = X86::CACHE_DISABLE | X86::WRITE_THROUGH;
    assert_eq!(e, GIB1 | rw_nx | X86::HUGE_PAGE | uc);

    // Table entries: present and writable, never NX, PS, G or U/S here.
    let path = m.path::<X86>(pt.root(), base);
    assert_eq!(path.len(), 4);
    for table_entry in &path[..3] {
        assert_eq!(table_entry & !X86::ADDR_MASK, X86::PRESENT | X86::WRITABLE);
    }

    // Decoding gives the normalised flags back (READ implied).
    let t = pt.translate(&m.mem, base + KIB4).unwrap();
    assert_eq!(t.flags, MapFlags::READ | MapFlags::EXECUTE);
    let t = pt.translate(&m.mem, base + GIB1).unwrap();
    assert_eq!(t.flags.cache_type(), CacheType::Uncacheable);
    assert_eq!(t.flags, RW | MapFlags::UNCACHEABLE);
    let t = pt.translate(&m.mem, base + 2 * KIB4).unwrap();
    assert_eq!(t.flags.cache_type(), CacheType::WriteThrough);
}

#[test]
fn user_pages_set_user_on_the_tables_above_them() {
    let (mut m, mut pt) = setup();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        0x40_0000,
        0x9000,
        KIB4,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    let path = m.path::<X86>(pt.root(), 0x40_0000);
    assert!(path.iter().all(|e| e & X86::USER == 0));

    // A user page under the same tables widens them.
    let user = RW | MapFlags::USER;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        0x40_1000,
        0xa000,
        KIB4,
        user,
        PageSize::Size1G,
    )
    .unwrap();
    let path = m.path::<X86>(pt.root(), 0x40_1000);
    assert!(path.iter().all(|e| e & X86::USER != 0));
    // The supervisor leaf stays supervisor.
    assert_eq!(m.leaf::<X86>(pt.root(), 0x40_0000) & X86::USER, 0);
    assert_eq!(m.live(), 4);
}

#[test]
fn canonical_addresses_are_checked_in_both_halves() {
    let (mut m, mut pt) = setup();
    let mut map = |virt, len| {
        pt.map(
            &mut m.mem,
            &mut m.frames,
            virt,
            0,
            len,
            RW,
            PageSize::Size1G,
        )
    };
    // The first upper-half address and the last lower-half page are valid.
    assert_eq!(map(0xffff_8000_0000_0000, KIB4), Ok(()));
    assert_eq!(map(0x0000_7fff_ffff_f000, KIB4), Ok(()));
    // Just past the lower half, just below the upper half, and a non-sign-extended address.
    for virt in [
        0x0000_8000_0000_0000,
        0xffff_7fff_ffff_f000,
        0x0001_0000_0000_0000,
    ] {
        assert_eq!(map(virt, KIB4), Err(MapError::NonCanonical { virt }));
    }
    // A range running off the end of the lower half names the first bad address.
    assert_eq!(
        map(0x0000_7fff_ffff_e000, 3 * KIB4),
        Err(MapError::NonCanonical {
            virt: 0x0000_8000_0000_0000
        })
    );

    // The top 2 GiB (Basalt's image): two 1 GiB pages ending at the last address.
    let top = 0xffff_ffff_8000_0000;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        top,
        0,
        2 * GIB1,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    let t = pt.translate(&m.mem, u64::MAX).unwrap();
    assert_eq!((t.phys, t.page_size), (2 * GIB1 - 1, PageSize::Size1G));

    assert_eq!(pt.translate(&m.mem, 0x0000_8000_0000_0000), None);
    let r = pt.unmap(&mut m.mem, &mut m.frames, 0xffff_0000_0000_0000, KIB4);
    assert_eq!(
        r,
        Err(MapError::NonCanonical {
            virt: 0xffff_0000_0000_0000
        })
    );
    pt.unmap(&mut m.mem, &mut m.frames, top, 2 * GIB1).unwrap();
    assert_eq!(pt.translate(&m.mem, u64::MAX), None);
}

#[test]
fn bad_arguments_are_errors() {
    let (mut m, mut pt) = setup();
    let mut map = |virt, phys, len| {
        pt.map(
            &mut m.mem,
            &mut m.frames,
            virt,
            phys,
            len,
            RW,
            PageSize::Size1G,
        )
    };
    assert_eq!(map(0x1000, 0, 0), Err(MapError::ZeroLength));
    assert_eq!(
        map(0x1800, 0, KIB4),
        Err(MapError::UnalignedVirt { virt: 0x1800 })
    );
    assert_eq!(
        map(0x1000, 0x10, KIB4),
        Err(MapError::UnalignedPhys { phys: 0x10 })
    );
    assert_eq!(
        map(0x1000, 0, 0x1001),
        Err(MapError::UnalignedLength { len: 0x1001 })
    );
    assert_eq!(
        map(0xffff_ffff_ffff_f000, 0, 2 * KIB4),
        Err(MapError::Overflow {
            virt: 0xffff_ffff_ffff_f000,
            len: 2 * KIB4
        })
    );
    let phys = PHYS_LIMIT - KIB4;
    assert_eq!(
        map(0x1000, phys, 2 * KIB4),
        Err(MapError::PhysOutOfRange {
            phys,
            len: 2 * KIB4
        })
    );
    assert_eq!(map(0x1000, phys, KIB4), Ok(()));
    assert_eq!(m.live(), 4);
}

#[test]
fn errors_name_cause_and_address() {
    let cases = [
        (
            MapError::AlreadyMapped { virt: 0x1000 },
            "0x1000 is already mapped",
        ),
        (MapError::NotMapped { virt: 0x2000 }, "0x2000 is not mapped"),
        (
            MapError::NonCanonical {
                virt: 0x8000_0000_0000,
            },
            "0x800000000000 is not translatable",
        ),
        (
            MapError::OutOfFrames {
                virt: Some(0x40_0000),
            },
            "out of frames for a page table while mapping 0x400000",
        ),
        (
            MapError::UnalignedPhys { phys: 0x10 },
            "physical address 0x10 is not 4 KiB-aligned",
        ),
        (MapError::BadFrame { phys: 0x123 }, "returned 0x123"),
    ];
    for (error, text) in cases {
        let shown = error.to_string();
        assert!(shown.contains(text), "{shown:?} does not contain {text:?}");
    }
}
