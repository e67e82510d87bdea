//! Overlaps and rollback, unmap with splits, protect, destroy.

use basalt_paging::{FrameSource, MapError, MapFlags, PageSize, PageTable, X86};

use crate::emu::Machine;
use crate::{DIRECT_MAP, GIB1, KIB4, MIB2};

const RW: MapFlags = MapFlags::READ.union(MapFlags::WRITE);
const RX: MapFlags = MapFlags::READ.union(MapFlags::EXECUTE);

fn setup() -> (Machine, PageTable<X86>) {
    let mut m = Machine::new();
    let pt = PageTable::<X86>::new(&mut m.frames).unwrap();
    (m, pt)
}

fn rw() -> MapFlags {
    RW
}

#[test]
fn overlap_is_rejected_without_changes() {
    let (mut m, mut pt) = setup();
    let base = DIRECT_MAP;
    // A 2 MiB page at 2 MiB and a 4 KiB page at 3 GiB + 20 KiB.
    pt.map(
        &mut m.mem,
        &mut m.frames,
        base + MIB2,
        MIB2,
        MIB2,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        base + 3 * GIB1 + 0x5000,
        0x5000,
        KIB4,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    let before = m.snapshot();
    let allocs = m.allocs();

    // Starting below the 2 MiB page.
    let r = pt.map(
        &mut m.mem,
        &mut m.frames,
        base + 0x1f_0000,
        0,
        0x2_0000,
        RW,
        PageSize::Size1G,
    );
    assert_eq!(r, Err(MapError::AlreadyMapped { virt: base + MIB2 }));
    // Inside the 2 MiB page.
    let r = pt.map(
        &mut m.mem,
        &mut m.frames,
        base + MIB2 + 0x3000,
        0,
        KIB4,
        RW,
        PageSize::Size1G,
    );
    assert_eq!(
        r,
        Err(MapError::AlreadyMapped {
            virt: base + MIB2 + 0x3000
        })
    );
    // A long range from 2 GiB (which would need new tables) up to past the 4 KiB page.
    let r = pt.map(
        &mut m.mem,
        &mut m.frames,
        base + 2 * GIB1,
        2 * GIB1,
        GIB1 + 0x6000,
        RW,
        PageSize::Size1G,
    );
    assert_eq!(
        r,
        Err(MapError::AlreadyMapped {
            virt: base + 3 * GIB1 + 0x5000
        })
    );
    m.assert_unchanged(&before, "tables");
    assert_eq!(
        m.allocs(),
        allocs,
        "the overlap was found before any allocation"
    );

    // The same range minus the overlapping page works.
    pt.map(
        &mut m.mem,
        &mut m.frames,
        base + 2 * GIB1,
        2 * GIB1,
        GIB1 + 0x5000,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    let t = pt.translate(&m.mem, base + 3 * GIB1 + 0x4fff).unwrap();
    assert_eq!((t.phys, t.page_size), (3 * GIB1 + 0x4fff, PageSize::Size4K));
    assert_eq!(
        pt.translate(&m.mem, base + 3 * GIB1 + 0x5000).unwrap().phys,
        0x5000
    );
    m.check_tree::<X86>(pt.root());
}

#[test]
fn out_of_frames_during_map_is_rolled_back() {
    let (mut m, mut pt) = setup();
    // Existing tables shared with the new range.
    pt.map(
        &mut m.mem,
        &mut m.frames,
        0x1000,
        0x1000,
        KIB4,
        RW,
        PageSize::Size4K,
    )
    .unwrap();
    let before = m.snapshot();
    // 4 KiB pages over 0x3000 .. 1 GiB + 6 MiB + 8 KiB: PTs for 512 + 4 regions, a PD for
    // GiB 1. The existing PT (region 0) is reused.
    let len = GIB1 + 3 * MIB2 + 0x2000 - 0x3000;
    let needed = 511 + 4 + 1;
    for budget in [0, 1, 2, 100, 511, 512, needed - 1] {
        m.set_budget(Some(budget));
        let r = pt.map(
            &mut m.mem,
            &mut m.frames,
            0x3000,
            0x3000,
            len,
            RW,
            PageSize::Size4K,
        );
        assert!(
            matches!(r, Err(MapError::OutOfFrames { virt: Some(_) })),
            "{budget}: {r:?}"
        );
        m.assert_unchanged(&before, &format!("budget {budget}"));
    }
    m.set_budget(Some(needed));
    pt.map(
        &mut m.mem,
        &mut m.frames,
        0x3000,
        0x3000,
        len,
        RW,
        PageSize::Size4K,
    )
    .unwrap();
    m.set_budget(None);
    assert_eq!(m.live(), 4 + needed);
    assert_eq!(
        pt.translate(&m.mem, len + 0x2fff).unwrap().phys,
        len + 0x2fff
    );
    m.check_tree::<X86>(pt.root());
}

#[test]
fn unmap_inside_a_2m_page_splits_it() {
    let (mut m, mut pt) = setup();
    let virt = DIRECT_MAP + 6 * MIB2;
    let phys = 40 * MIB2;
    let flags = RW | MapFlags::GLOBAL;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        virt,
        phys,
        MIB2,
        flags,
        PageSize::Size2M,
    )
    .unwrap();
    assert_eq!(m.live(), 3);
    // Hole: pages 0x100 .. 0x103.
    pt.unmap(&mut m.mem, &mut m.frames, virt + 0x10_0000, 3 * KIB4)
        .unwrap();
    assert_eq!(m.live(), 4);
    let flags = pt.translate(&m.mem, virt).unwrap().flags;
    assert_eq!(flags, RW | MapFlags::GLOBAL);
    for page in 0..512 {
        let addr = virt + page * KIB4 + 0x10;
        let t = pt.translate(&m.mem, addr);
        if (0x100..0x103).contains(&page) {
            assert_eq!(t, None, "page {page:#x}");
        } else {
            let t = t.unwrap();
            assert_eq!(t.phys, phys + page * KIB4 + 0x10);
            assert_eq!(t.page_size, PageSize::Size4K);
            assert_eq!(t.flags, flags);
        }
    }
    m.check_tree::<X86>(pt.root());
    // Unmapping the rest frees the PT, PD and PDPT.
    pt.unmap(&mut m.mem, &mut m.frames, virt, MIB2).unwrap();
    assert_eq!(m.live(), 1);
    assert!((0..512).all(|i| m.entry(pt.root(), i) == 0));
}

#[test]
fn unmap_inside_a_1g_page_splits_it_twice() {
    let (mut m, mut pt) = setup();
    let virt = DIRECT_MAP + 7 * GIB1;
    let phys = 2 * GIB1;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        virt,
        phys,
        GIB1,
        RX,
        PageSize::Size1G,
    )
    .unwrap();
    assert_eq!(m.live(), 2);
    let before = m.snapshot();

    // The hole 0x2ff000 ..= 0x601fff covers part of two 2 MiB regions and one whole: one PD and
    // two PTs are needed; with fewer frames nothing changes.
    for budget in 0..3 {
        m.set_budget(Some(budget));
        let r = pt.unmap(&mut m.mem, &mut m.frames, virt + 0x2f_f000, 0x30_3000);
        assert_eq!(
            r,
            Err(MapError::OutOfFrames {
                virt: Some(virt + 0x2f_f000)
            })
        );
        m.assert_unchanged(&before, "tables");
    }
    m.set_budget(Some(3));
    pt.unmap(&mut m.mem, &mut m.frames, virt + 0x2f_f000, 0x30_3000)
        .unwrap();
    m.set_budget(None);
    assert_eq!(m.live(), 5);

    let check = |offset: u64, expect: Option<PageSize>| {
        let t = pt.translate(&m.mem, virt + offset);
        match expect {
            None => assert_eq!(t, None, "{offset:#x}"),
            Some(size) => {
                let t = t.unwrap();
                assert_eq!(t.phys, phys + offset, "{offset:#x}");
                assert_eq!(t.page_size, size, "{offset:#x}");
                assert_eq!(t.flags, RX);
            }
        }
    };
    check(0, Some(PageSize::Size2M));
    check(0x1f_ffff, Some(PageSize::Size2M));
    check(0x20_0000, Some(PageSize::Size4K));
    check(0x2f_efff, Some(PageSize::Size4K));
    check(0x2f_f000, None);
    check(0x40_0000, None);
    check(0x5f_ffff, None);
    check(0x60_1fff, None);
    check(0x60_2000, Some(PageSize::Size4K));
    check(0x7f_ffff, Some(PageSize::Size4K));
    check(0x80_0000, Some(PageSize::Size2M));
    check(GIB1 - 1, Some(PageSize::Size2M));
    assert_eq!(m.check_tree::<X86>(pt.root()), 5);

    // Unmapping everything (here: the whole upper half) frees all but the root.
    pt.unmap(&mut m.mem, &mut m.frames, DIRECT_MAP, 1 << 47)
        .unwrap();
    assert_eq!(m.live(), 1);
}

#[test]
fn unmap_everything_frees_all_tables_but_the_root() {
    let (mut m, mut pt) = setup();
    let ranges = [
        (0x1000, 0x1000, 5 * KIB4, PageSize::Size4K),
        (0x40_0000_0000, 0, 3 * GIB1 + MIB2 + KIB4, PageSize::Size1G),
        (DIRECT_MAP, 0, 2 * GIB1, PageSize::Size2M),
        (
            0xffff_ffff_8020_0000,
            0x20_0000,
            0x12_3000,
            PageSize::Size4K,
        ),
    ];
    for (virt, phys, len, max) in ranges {
        pt.map(&mut m.mem, &mut m.frames, virt, phys, len, rw(), max)
            .unwrap();
    }
    let tables = m.check_tree::<X86>(pt.root());
    assert!(tables > 10);
    // Unmapping ranges that are not mapped changes nothing.
    let before = m.snapshot();
    pt.unmap(&mut m.mem, &mut m.frames, 0x7000_0000_0000, GIB1)
        .unwrap();
    m.assert_unchanged(&before, "tables");

    for (virt, _, len, _) in ranges {
        pt.unmap(&mut m.mem, &mut m.frames, virt, len).unwrap();
    }
    assert_eq!(m.live(), 1);
    assert_eq!(m.allocs() - m.frees(), 1);
    assert!((0..512).all(|i| m.entry(pt.root(), i) == 0));
}

#[test]
fn destroy_frees_every_table() {
    let (mut m, mut pt) = setup();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        0x1000,
        0x1000,
        3 * GIB1,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        DIRECT_MAP,
        0,
        64 * MIB2 + KIB4,
        RW,
        PageSize::Size2M,
    )
    .unwrap();
    pt.unmap(&mut m.mem, &mut m.frames, GIB1 + 0x5000, KIB4)
        .unwrap();
    assert!(m.live() > 5);
    pt.destroy(&m.mem, &mut m.frames);
    assert_eq!(m.live(), 0);
    assert_eq!(m.allocs(), m.frees());
}

#[test]
fn protect_changes_flags_and_splits_when_partial() {
    let (mut m, mut pt) = setup();
    let virt = DIRECT_MAP + GIB1;
    pt.map(
        &mut m.mem,
        &mut m.frames,
        virt,
        GIB1,
        GIB1 + MIB2,
        RW,
        PageSize::Size1G,
    )
    .unwrap();
    assert_eq!(m.live(), 3);

    // A whole 1 GiB page: no split.
    pt.protect(&mut m.mem, &mut m.frames, virt, GIB1, RX)
        .unwrap();
    assert_eq!(m.live(), 3);
    let t = pt.translate(&m.mem, virt + 0x1234).unwrap();
    assert_eq!((t.flags, t.page_size), (RX, PageSize::Size1G));
    assert_eq!(m.leaf::<X86>(pt.root(), virt) & X86::NO_EXECUTE, 0);

    // The same flags on part of it: nothing to split.
    pt.protect(&mut m.mem, &mut m.frames, virt + KIB4, KIB4, RX)
        .unwrap();
    assert_eq!(m.live(), 3);

    // One 4 KiB page inside it read-only and not executable: split 1 GiB → 2 MiB → 4 KiB.
    let ro = MapFlags::READ;
    pt.protect(&mut m.mem, &mut m.frames, virt + MIB2 + KIB4, KIB4, ro)
        .unwrap();
    assert_eq!(m.live(), 5);
    let t = pt.translate(&m.mem, virt + MIB2 + KIB4 + 8).unwrap();
    assert_eq!(
        (t.phys, t.flags, t.page_size),
        (GIB1 + MIB2 + KIB4 + 8, ro, PageSize::Size4K)
    );
    assert_ne!(
        m.leaf::<X86>(pt.root(), virt + MIB2 + KIB4) & X86::NO_EXECUTE,
        0
    );
    let t = pt.translate(&m.mem, virt + MIB2).unwrap();
    assert_eq!((t.flags, t.page_size), (RX, PageSize::Size4K));
    let t = pt.translate(&m.mem, virt).unwrap();
    assert_eq!((t.flags, t.page_size), (RX, PageSize::Size2M));

    // A hole: NotMapped, and nothing changes (not even the part before the hole).
    pt.unmap(&mut m.mem, &mut m.frames, virt + 5 * MIB2, KIB4)
        .unwrap();
    let before = m.snapshot();
    let r = pt.protect(&mut m.mem, &mut m.frames, virt + 4 * MIB2, 2 * MIB2, RW);
    assert_eq!(
        r,
        Err(MapError::NotMapped {
            virt: virt + 5 * MIB2
        })
    );
    let r = pt.protect(&mut m.mem, &mut m.frames, virt - KIB4, 2 * KIB4, RW);
    assert_eq!(r, Err(MapError::NotMapped { virt: virt - KIB4 }));
    m.assert_unchanged(&before, "tables");

    // A range over a 4 KiB region, a 1 GiB page boundary and the 2 MiB page after it.
    let start = virt + GIB1 - 3 * KIB4;
    pt.protect(
        &mut m.mem,
        &mut m.frames,
        start,
        3 * KIB4 + MIB2,
        RW | MapFlags::GLOBAL,
    )
    .unwrap();
    let t = pt.translate(&m.mem, start).unwrap();
    assert_eq!(
        (t.flags, t.page_size),
        (RW | MapFlags::GLOBAL, PageSize::Size4K)
    );
    let t = pt.translate(&m.mem, start - 1).unwrap();
    assert_eq!((t.flags, t.page_size), (RX, PageSize::Size4K));
    let t = pt.translate(&m.mem, virt + GIB1).unwrap();
    assert_eq!(
        (t.flags, t.page_size),
        (RW | MapFlags::GLOBAL, PageSize::Size2M)
    );
    m.check_tree::<X86>(pt.root());
}

#[test]
fn protect_to_user_widens_tables() {
    let (mut m, mut pt) = setup();
    pt.map(
        &mut m.mem,
        &mut m.frames,
        0x20_0000,
        0x20_0000,
        MIB2,
        RW,
        PageSize::Size2M,
    )
    .unwrap();
    pt.protect(
        &mut m.mem,
        &mut m.frames,
        0x20_0000,
        KIB4,
        RW | MapFlags::USER,
    )
    .unwrap();
    let path = m.path::<X86>(pt.root(), 0x20_0000);
    assert_eq!(path.len(), 4);
    assert!(path.iter().all(|e| e & X86::USER != 0));
    assert_eq!(m.leaf::<X86>(pt.root(), 0x20_1000) & X86::USER, 0);
}

/// A frame source that first hands out one bad frame.
#[derive(Debug)]
struct Faulty<'a> {
    inner: &'a mut crate::emu::Frames,
    bad: u64,
    given: bool,
    returned: Vec<u64>,
}

impl<'a> Faulty<'a> {
    fn new(inner: &'a mut crate::emu::Frames, bad: u64) -> Self {
        Self {
            inner,
            bad,
            given: false,
            returned: Vec::new(),
        }
    }
}

impl FrameSource for Faulty<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.given {
            self.inner.alloc_table()
        } else {
            self.given = true;
            Some(self.bad)
        }
    }

    fn free_table(&mut self, phys: u64) {
        if phys == self.bad {
            self.returned.push(phys);
        } else {
            self.inner.free_table(phys);
        }
    }
}

#[test]
fn bad_frames_are_refused_and_returned() {
    let (mut m, mut pt) = setup();
    let before = m.snapshot();
    let mut frames = Faulty::new(&mut m.frames, 0x1234);
    let r = pt.map(&mut m.mem, &mut frames, 0, 0, KIB4, RW, PageSize::Size4K);
    assert_eq!(r, Err(MapError::BadFrame { phys: 0x1234 }));
    assert_eq!(frames.returned, [0x1234]);
    m.assert_unchanged(&before, "tables");

    let mut frames = Faulty::new(&mut m.frames, 1 << 52);
    let r = PageTable::<X86>::new(&mut frames);
    assert!(matches!(r, Err(MapError::BadFrame { phys }) if phys == 1 << 52));
    assert_eq!(frames.returned, [1 << 52]);
}
