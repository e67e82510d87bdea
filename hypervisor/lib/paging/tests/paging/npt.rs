//! Nested page tables (AMD NPT): x86 entries with U/S at every level, guest-physical input.

use basalt_paging::{EntryFormat, MapError, MapFlags, Npt, PageSize, PageTable, X86};

use crate::emu::Machine;
use crate::{GIB1, KIB4, MIB2};

const R: MapFlags = MapFlags::READ;
const RW: MapFlags = MapFlags::READ.union(MapFlags::WRITE);
const RWX: MapFlags = RW.union(MapFlags::EXECUTE);

#[test]
fn npt_leaf_and_table_bits() {
    let mut m = Machine::new();
    let mut pt = PageTable::<Npt>::new(&mut m.frames).unwrap();
    for (gpa, hpa, len, flags) in [
        (0, 0x10_0000, KIB4, R),
        (KIB4, 0x10_1000, KIB4, RW),
        (MIB2, 0x20_0000, MIB2, RWX),
        (GIB1, 3 * GIB1, GIB1, RW),
    ] {
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
    }
    let (p, w, u, ps, nx) = (
        X86::PRESENT,
        X86::WRITABLE,
        X86::USER,
        X86::HUGE_PAGE,
        X86::NO_EXECUTE,
    );
    assert_eq!(m.leaf::<Npt>(pt.root(), 0), 0x10_0000 | p | u | nx);
    assert_eq!(m.leaf::<Npt>(pt.root(), KIB4), 0x10_1000 | p | w | u | nx);
    assert_eq!(
        m.leaf::<Npt>(pt.root(), MIB2 + 5),
        0x20_0000 | p | w | u | ps
    );
    assert_eq!(
        m.leaf::<Npt>(pt.root(), GIB1),
        (3 * GIB1) | p | w | u | ps | nx
    );
    // Every table entry on the way is present, writable and user: nested walks are user
    // accesses.
    let path = m.path::<Npt>(pt.root(), 0);
    assert_eq!(path.len(), 4);
    for entry in &path[..3] {
        assert_eq!(entry & 0xfff, p | w | u, "table entry {entry:#x}");
        assert_eq!(entry & X86::NO_EXECUTE, 0);
    }
    // Decoding gives back what was mapped, with USER implied.
    let (phys, flags) = Npt::decode_leaf(m.leaf::<Npt>(pt.root(), KIB4), PageSize::Size4K);
    assert_eq!(phys, 0x10_1000);
    assert_eq!(flags, RW | MapFlags::USER);
}

#[test]
fn npt_rejects_global_and_addresses_beyond_48_bits() {
    let mut m = Machine::new();
    let mut pt = PageTable::<Npt>::new(&mut m.frames).unwrap();
    let err = pt
        .map(
            &mut m.mem,
            &mut m.frames,
            0,
            0,
            KIB4,
            RW | MapFlags::GLOBAL,
            PageSize::Size4K,
        )
        .unwrap_err();
    assert!(matches!(err, MapError::UnsupportedFlags { .. }), "{err:?}");
    assert!(Npt::input_region((1 << 48) - 1).is_some());
    assert!(Npt::input_region(1 << 48).is_none());
    // Guest-physical addresses need not be canonical: 2^47 is an ordinary address.
    assert!(Npt::input_region(1 << 47).is_some());
    pt.map(
        &mut m.mem,
        &mut m.frames,
        1 << 47,
        0x5000,
        KIB4,
        RW,
        PageSize::Size4K,
    )
    .unwrap();
    assert_eq!(m.leaf::<Npt>(pt.root(), 1 << 47) & X86::ADDR_MASK, 0x5000);
}
