//! EPT format: entry bits, memory types, rejected flags and addresses.

use basalt_paging::{EntryFormat, Ept, MapError, MapFlags, PageSize, PageTable};

use crate::emu::Machine;
use crate::{GIB1, KIB4, MIB2};

const R: MapFlags = MapFlags::READ;
const RW: MapFlags = MapFlags::READ.union(MapFlags::WRITE);
const RWX: MapFlags = RW.union(MapFlags::EXECUTE);

fn setup() -> (Machine, PageTable<Ept>) {
    let mut m = Machine::new();
    let pt = PageTable::<Ept>::new(&mut m.frames).unwrap();
    (m, pt)
}

/// Memory type WB (6) in bits 5:3 plus "ignore PAT" (bit 6).
const WB_IPAT: u64 = (6 << 3) | (1 << 6);

#[test]
fn ept_leaf_and_table_bits() {
    let (mut m, mut pt) = setup();
    let mut map = |gpa, hpa, len, flags| {
        pt.map(
            &mut m.mem,
            &mut m.frames,
            gpa,
            hpa,
            len,
            flags,
            PageSize::Size1G,
        )
        .unwrap();
    };
    map(0, 0x10_0000, KIB4, R);
    map(KIB4, 0x10_1000, KIB4, RW);
    map(2 * KIB4, 0x10_2000, KIB4, MapFlags::EXECUTE);
    map(MIB2, 0x20_0000, MIB2, RWX);
    map(GIB1, 3 * GIB1, GIB1, RW);

    assert_eq!(m.leaf::<Ept>(pt.root(), 0), 0x10_0000 | 0b001 | WB_IPAT);
    assert_eq!(m.leaf::<Ept>(pt.root(), KIB4), 0x10_1000 | 0b011 | WB_IPAT);
    assert_eq!(
        m.leaf::<Ept>(pt.root(), 2 * KIB4),
        0x10_2000 | 0b100 | WB_IPAT
    );
    // Large pages: bit 7.
    assert_eq!(
        m.leaf::<Ept>(pt.root(), MIB2 + 0x777),
        0x20_0000 | 0b111 | WB_IPAT | (1 << 7)
    );
    assert_eq!(
        m.leaf::<Ept>(pt.root(), GIB1 + 0x1234_5000),
        (3 * GIB1) | 0b011 | WB_IPAT | (1 << 7)
    );

    // Table entries: address | R | W | X and nothing else (bits 7:3 are reserved there).
    let path = m.path::<Ept>(pt.root(), 0);
    assert_eq!(path.len(), 4);
    for entry in &path[..3] {
        assert_eq!(entry & !Ept::ADDR_MASK, 0b111);
    }

    // Unused entries are 0; the PT holds exactly the three 4 KiB pages.
    let pt_phys = Ept::table_address(path[2]);
    let used: Vec<usize> = (0..512).filter(|&i| m.entry(pt_phys, i) != 0).collect();
    assert_eq!(used, [0, 1, 2]);
    let root_used: Vec<usize> = (0..512).filter(|&i| m.entry(pt.root(), i) != 0).collect();
    assert_eq!(root_used, [0]);

    // Unmapping writes 0, not just a cleared R/W/X.
    pt.unmap(&mut m.mem, &mut m.frames, KIB4, KIB4).unwrap();
    assert_eq!(m.entry(pt_phys, 1), 0);

    let t = pt.translate(&m.mem, MIB2 + 5).unwrap();
    assert_eq!(
        (t.phys, t.flags, t.page_size),
        (0x20_0005, RWX, PageSize::Size2M)
    );
    let t = pt.translate(&m.mem, 2 * KIB4).unwrap();
    assert_eq!(t.flags, MapFlags::EXECUTE);
}

#[test]
fn ept_memory_types() {
    let (mut m, mut pt) = setup();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        0,
        0xfee0_0000,
        KIB4,
        RW | MapFlags::UNCACHEABLE,
        PageSize::Size4K,
    )
    .unwrap();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        KIB4,
        0xfed0_0000,
        KIB4,
        RW | MapFlags::WRITE_THROUGH,
        PageSize::Size4K,
    )
    .unwrap();
    // Both cache bits: uncacheable wins.
    let both = RW | MapFlags::UNCACHEABLE | MapFlags::WRITE_THROUGH;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        2 * KIB4,
        0xfec0_0000,
        KIB4,
        both,
        PageSize::Size4K,
    )
    .unwrap();
    let ipat = 1 << 6;
    assert_eq!(m.leaf::<Ept>(pt.root(), 0), 0xfee0_0000 | 0b011 | ipat);
    assert_eq!(
        m.leaf::<Ept>(pt.root(), KIB4),
        0xfed0_0000 | 0b011 | (4 << 3) | ipat
    );
    assert_eq!(
        m.leaf::<Ept>(pt.root(), 2 * KIB4),
        0xfec0_0000 | 0b011 | ipat
    );
    let t = pt.translate(&m.mem, 2 * KIB4).unwrap();
    assert_eq!(t.flags, RW | MapFlags::UNCACHEABLE);
    // Device memory whose type the guest's PAT combines with: no IPAT.
    let combined = RW | MapFlags::UNCACHEABLE | MapFlags::GUEST_PAT;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        3 * KIB4,
        0xfd00_0000,
        KIB4,
        combined,
        PageSize::Size4K,
    )
    .unwrap();
    assert_eq!(m.leaf::<Ept>(pt.root(), 3 * KIB4), 0xfd00_0000 | 0b011);
    assert_eq!(pt.translate(&m.mem, 3 * KIB4).unwrap().flags, combined);
}

#[test]
fn ept_rejects_what_it_cannot_express() {
    let (mut m, mut pt) = setup();
    let before = m.snapshot();
    for flags in [
        RW | MapFlags::USER,
        RW | MapFlags::GLOBAL,
        MapFlags::empty(),
        MapFlags::UNCACHEABLE,
        MapFlags::WRITE,
        MapFlags::WRITE | MapFlags::EXECUTE,
    ] {
        let r = pt.map(
            &mut m.mem,
            &mut m.frames,
            0,
            0,
            KIB4,
            flags,
            PageSize::Size4K,
        );
        assert!(
            matches!(r, Err(MapError::UnsupportedFlags { flags: f, .. }) if f == flags),
            "{flags:?}: {r:?}"
        );
    }
    // Guest-physical addresses must be below 2^48.
    let limit = 1 << 48;
    let r = pt.map(
        &mut m.mem,
        &mut m.frames,
        limit,
        0,
        KIB4,
        RW,
        PageSize::Size4K,
    );
    assert_eq!(r, Err(MapError::NonCanonical { virt: limit }));
    let r = pt.map(
        &mut m.mem,
        &mut m.frames,
        limit - KIB4,
        0,
        2 * KIB4,
        RW,
        PageSize::Size4K,
    );
    assert_eq!(r, Err(MapError::NonCanonical { virt: limit }));
    // The upper x86 half means nothing here.
    let r = pt.map(
        &mut m.mem,
        &mut m.frames,
        0xffff_8000_0000_0000,
        0,
        KIB4,
        RW,
        PageSize::Size4K,
    );
    assert!(matches!(r, Err(MapError::NonCanonical { .. })));
    m.assert_unchanged(&before, "tables");
    assert_eq!(pt.translate(&m.mem, limit), None);

    // The last page below 2^48 is fine, and execute-only is accepted.
    let x = MapFlags::EXECUTE;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        limit - KIB4,
        0x5000,
        KIB4,
        x,
        PageSize::Size4K,
    )
    .unwrap();
    assert_eq!(pt.translate(&m.mem, limit - 1).unwrap().phys, 0x5fff);
}

#[test]
fn ept_1g_pages_split_and_free() {
    let (mut m, mut pt) = setup();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        0,
        0,
        4 * GIB1,
        RWX,
        PageSize::Size1G,
    )
    .unwrap();
    assert_eq!(m.live(), 2);
    // Punch out the legacy VGA hole.
    pt.unmap(&mut m.mem, &mut m.frames, 0xa_0000, 0x2_0000)
        .unwrap();
    assert_eq!(m.live(), 4);
    assert_eq!(pt.translate(&m.mem, 0xa_0000), None);
    assert_eq!(pt.translate(&m.mem, 0xb_ffff), None);
    let t = pt.translate(&m.mem, 0x9_ffff).unwrap();
    assert_eq!((t.phys, t.page_size), (0x9_ffff, PageSize::Size4K));
    let t = pt.translate(&m.mem, 0x20_0000).unwrap();
    assert_eq!((t.phys, t.page_size), (0x20_0000, PageSize::Size2M));
    let t = pt.translate(&m.mem, 3 * GIB1).unwrap();
    assert_eq!((t.phys, t.page_size), (3 * GIB1, PageSize::Size1G));
    assert_eq!(m.check_tree::<Ept>(pt.root()), 4);
    pt.unmap(&mut m.mem, &mut m.frames, 0, 4 * GIB1).unwrap();
    assert_eq!(m.live(), 1);
    pt.destroy(&m.mem, &mut m.frames);
    assert_eq!(m.live(), 0);
}
