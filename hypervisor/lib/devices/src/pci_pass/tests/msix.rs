//! MSI-X (`pci_pass::msix`): the capability, the trapped table, the slots.

use super::*;

const BAR: u32 = 0xFEB0_0000;
const TABLE: u64 = 0xFEB0_2000;

/// PM at 0x40 → MSI-X at 0xB8 with Message Control `control`, its table at
/// `table` (offset | BIR) and PBA at 0xFEB0_2800; BAR 0 at 0xFEB00000 (32-bit
/// memory), its four pages device memory.
fn msix_bus(control: u16, table: u32) -> FakeBus {
    let mut bus = FakeBus::default();
    let caps = [(0x40, PM, 0xB8, 0), (0xB8, CAP_MSIX, 0, control)];
    let mut f = function(0, 0x40, &caps);
    f[0xBC..0xC0].copy_from_slice(&table.to_le_bytes());
    f[0xC0..0xC4].copy_from_slice(&0x2800u32.to_le_bytes());
    f[0x10..0x14].copy_from_slice(&BAR.to_le_bytes());
    bus.fns.insert(DEV, f);
    bus.device = (0..4).map(|i| u64::from(BAR) + 4096 * i).collect();
    bus
}

/// dom0 writes the trapped table.
fn w(p: &mut PciPass, bus: &mut FakeBus, addr: u64, size: u8, value: u64) {
    p.msix_io(bus, addr, size, Some(value));
}

/// dom0 reads it.
fn r(p: &mut PciPass, bus: &mut FakeBus, addr: u64, size: u8) -> u64 {
    p.msix_io(bus, addr, size, None)
}

fn enabled(p: &mut PciPass, bus: &mut FakeBus, control: u32) -> Option<PciEventKind> {
    wr(p, bus, DEV, 0xBA, 2, control).map(|e| e.kind)
}

#[test]
fn msix_shows_with_its_table_size_capped_and_dom0s_control_bits() {
    let (mut p, mut bus) = (PciPass::new(), msix_bus(0x003F, 0x2000));
    let (p, b) = (&mut p, &mut bus);
    assert_eq!(dom0_chain(p, b, DEV), [(0x40, PM), (0xB8, CAP_MSIX)]);
    assert_eq!(rd(p, b, DEV, 0xB8, 4), 0x0003_0011, "64 entries read as 4");
    assert_eq!(
        rd(p, b, DEV, 0xBC, 4),
        0x2000,
        "table offset/BIR: the host's"
    );
    p.set_msi_destination(2);
    // Only Enable and Function Mask are dom0's; the rest is dropped.
    assert_eq!(enabled(p, b, 0x47FF), None);
    assert_eq!(rd(p, b, DEV, 0xBA, 2), 0x4003);
    assert_eq!(b.writes.last(), Some(&(DEV, 0xBB, 1, 0)), "device left off");
    assert_eq!(wr(p, b, DEV, 0xBC, 4, 0x5000), None);
    assert_eq!(rd(p, b, DEV, 0xBC, 4), 0x2000, "read-only stays");
    assert!(!p.msix_traps(TABLE), "nothing trapped yet");
}

#[test]
fn enable_traps_the_table_and_gives_the_device_basalts_messages() {
    let (mut p, mut bus) = (PciPass::new(), msix_bus(0x003F, 0x2000));
    p.set_msi_destination(2);
    let (p, b) = (&mut p, &mut bus);
    let trapped = PciEventKind::MsixTrapped {
        start: TABLE,
        end: TABLE + 4096,
    };
    assert_eq!(enabled(p, b, 0xC000), Some(trapped));
    assert_eq!(b.writes.last(), Some(&(DEV, 0xBB, 1, 0xC0)));
    assert!(p.msix_traps(TABLE + 0xFFF) && !p.msix_traps(TABLE + 4096));
    let host = |b: &FakeBus, a: u64| b.clone_mem(a, 4);
    for e in 0..64 {
        let a = TABLE + 16 * e;
        assert_eq!(host(b, a + 12), 1, "entry {e} masked");
        if e < 4 {
            assert_eq!(host(b, a), 0xFEE0_2000, "boot CPU");
            assert_eq!(host(b, a + 8), 0x70 + e, "slot 0's vectors");
        } else {
            assert_eq!(host(b, a + 8), 0, "beyond dom0's 4: no message");
        }
    }
    // dom0 programs entry 1 (the order Linux uses: message, then unmask).
    let e1 = TABLE + 16;
    let before = b.mem_writes.len();
    w(p, b, e1, 4, 0xFEE0_100C);
    w(p, b, e1 + 4, 4, 0);
    w(p, b, e1 + 8, 4, 0x4041);
    assert_eq!(b.mem_writes.len(), before, "the message stays dom0's");
    assert_eq!(p.message(33), Some((0xFEE0_100C, 0x4041)));
    w(p, b, e1 + 12, 4, 0);
    assert_eq!(b.mem_writes.last(), Some(&(e1 + 12, 4, 0)), "unmasked");
    assert_eq!(host(b, e1), 0xFEE0_2000);
    assert_eq!(host(b, e1 + 8), 0x71);
    assert_eq!(r(p, b, e1, 8), 0xFEE0_100C, "dom0 reads its own");
    assert_eq!(r(p, b, e1 + 8, 2), 0x4041);
    assert_eq!(r(p, b, e1 + 12, 4), 0);
    // A qword write of the address, a byte of the mask.
    w(p, b, e1, 8, 0x1_FEE0_0000);
    assert_eq!(p.message(33), Some((0x1_FEE0_0000, 0x4041)));
    w(p, b, e1 + 12, 1, 1);
    assert_eq!(b.mem_writes.last(), Some(&(e1 + 12, 4, 1)));
    // Beyond entry 8: nothing; unaligned: all ones, dropped.
    let before = b.mem_writes.len();
    w(p, b, TABLE + 16 * 4 + 12, 4, 0);
    w(p, b, e1 + 2, 4, 0);
    w(p, b, e1 + 1, 3, 0);
    assert_eq!(b.mem_writes.len(), before);
    assert_eq!(r(p, b, TABLE + 16 * 4, 4), 0);
    assert_eq!(r(p, b, e1 + 2, 4), u64::MAX);
    assert_eq!(r(p, b, TABLE + 4096, 4), u64::MAX, "not trapped");
    // The PBA and the rest of the page are the host's.
    b.mem.insert(TABLE + 0x800, 0x5A);
    assert_eq!(r(p, b, TABLE + 0x800, 8), 0x5A);
    w(p, b, TABLE + 0xF00, 2, 0xBEEF);
    assert_eq!(b.mem_writes.last(), Some(&(TABLE + 0xF00, 2, 0xBEEF)));
    // Function mask off: the device follows; BARs are frozen meanwhile.
    assert_eq!(enabled(p, b, 0x8000), None);
    assert_eq!(b.writes.last(), Some(&(DEV, 0xBB, 1, 0x80)));
    let frozen = wr(p, b, DEV, 0x10, 4, !0).map(|e| e.kind);
    assert_eq!(frozen, Some(PciEventKind::BarFrozen));
    assert_eq!(b.fns[&DEV][0x10..0x14], BAR.to_le_bytes());
    assert_eq!(enabled(p, b, 0), None);
    assert_eq!(b.writes.last(), Some(&(DEV, 0xBB, 1, 0)));
    assert_eq!(p.message(33), None, "disabled");
    assert!(p.msix_traps(TABLE), "still trapped");
    w(p, b, e1 + 8, 4, 0x4042);
    assert!(wr(p, b, DEV, 0x10, 4, !0).is_some_and(|e| e.kind == PciEventKind::BarWritten));
}

#[test]
fn a_table_that_is_not_in_device_memory_is_refused() {
    let refused = Some(PciEventKind::MsixRefused);
    type Case = (&'static str, fn(&mut FakeBus));
    let cases: [Case; 7] = [
        ("reserved BIR", |b| b.set(0xBC, 0x2007)),
        ("BIR past a bridge's 2 BARs", |b| {
            b.set(0xBC, 0x2002);
            b.fns.get_mut(&DEV).unwrap()[0x0E] = 1;
        }),
        ("I/O BAR", |b| b.set(0x10, 0xC001)),
        ("below-1-MiB BAR type", |b| b.set(0x10, BAR | 2)),
        ("unassigned BAR", |b| b.set(0x10, 0)),
        ("64-bit BAR in the last register", |b| {
            b.set(0xBC, 0x2005);
            b.set(0x24, BAR | 4);
        }),
        ("not device memory", |b| b.device.retain(|&p| p != TABLE)),
    ];
    for (what, break_it) in cases {
        let (mut p, mut bus) = (PciPass::new(), msix_bus(0x0003, 0x2000));
        p.set_msi_destination(0);
        break_it(&mut bus);
        assert_eq!(enabled(&mut p, &mut bus, 0x8000), refused, "{what}");
        assert_eq!(bus.writes.last(), Some(&(DEV, 0xBB, 1, 0)), "{what}");
        assert!(bus.mem_writes.is_empty() && !p.msix_traps(TABLE), "{what}");
        assert_eq!(p.message(32), None);
        let again = enabled(&mut p, &mut bus, 0xC000);
        assert_eq!(again, refused, "{what}: tried again, still off");
        assert_eq!(bus.writes.last(), Some(&(DEV, 0xBB, 1, 0)));
    }
    // No destination yet: refused too.
    let (mut p, mut bus) = (PciPass::new(), msix_bus(0x0003, 0x2000));
    assert_eq!(enabled(&mut p, &mut bus, 0x8000), refused);
    // A table running past the pages that are device memory.
    let (mut p, mut bus) = (PciPass::new(), msix_bus(0x07FF, 0x2000));
    p.set_msi_destination(0);
    assert_eq!(enabled(&mut p, &mut bus, 0x8000), refused, "2048 entries");
}

#[test]
fn a_64_bit_bar_and_a_table_across_pages() {
    // BAR 2-3 at 0x8_0000_0000, table at offset 0xF80 with 16 entries.
    let (mut p, mut bus) = (PciPass::new(), msix_bus(0x000F, 0xF80 | 2));
    bus.set(0x18, 4);
    bus.set(0x1C, 8);
    bus.device = vec![0x8_0000_0000, 0x8_0000_1000];
    p.set_msi_destination(1);
    let on = enabled(&mut p, &mut bus, 0x8000);
    let (start, end) = (0x8_0000_0000, 0x8_0000_2000);
    assert_eq!(on, Some(PciEventKind::MsixTrapped { start, end }));
    let e3 = 0x8_0000_0F80 + 16 * 3;
    w(&mut p, &mut bus, e3 + 8, 4, 0x30);
    assert_eq!(p.message(35), Some((0, 0x30)));
    assert_eq!(bus.clone_mem(e3 + 8, 4), 0x73);
}

#[test]
fn msix_slots_are_bounded_and_the_rest_keep_it_hidden() {
    let mut bus = msix_bus(0x0001, 0x2000);
    let mut p = PciPass::new();
    p.set_msi_destination(0);
    let template = bus.fns[&DEV];
    for i in 0..=MSIX_FUNCTIONS as u16 {
        let bdf = (i + 8) << 3;
        bus.fns.insert(bdf, template);
        let chain = dom0_chain(&mut p, &mut bus, bdf);
        if usize::from(i) < MSIX_FUNCTIONS {
            assert_eq!(chain, [(0x40, PM), (0xB8, CAP_MSIX)]);
            assert_eq!(p.msix_full.as_mut().and_then(Option::take), None);
        } else {
            assert_eq!(chain, [(0x40, PM)], "hidden");
            assert_eq!(
                p.msix_full.as_mut().and_then(Option::take),
                Some(bdf),
                "reported"
            );
            assert_eq!(p.msix_full.as_mut().and_then(Option::take), None, "once");
            let e = wr(&mut p, &mut bus, bdf, 0xBA, 2, 0x8000).map(|e| e.kind);
            assert_eq!(e, Some(PciEventKind::HiddenWriteDropped));
        }
    }
    // Slot 1's vectors are 0x74-0x77; its table is where its BAR says.
    let second = 9 << 3;
    bus.set_of(second, 0x10, 0xFEB0_1000);
    bus.device.push(0xFEB0_4000);
    assert!(wr(&mut p, &mut bus, second, 0xBA, 2, 0x8000).is_some());
    assert_eq!(bus.clone_mem(0xFEB0_3000 + 16 + 8, 4), 0x75);
}

#[test]
fn random_table_and_capability_accesses_leave_only_basalts_messages() {
    let mut rng = crate::test_rng::Rng(0x5eed_0fc0_ffee_2222);
    // 15 entries (the fake keeps bits 0x8E of the control's low byte).
    let (mut p, mut bus) = (PciPass::new(), msix_bus(0x000E, 0x2000));
    p.set_msi_destination(2);
    let bus_before = bus.fns[&DEV];
    for _ in 0..50_000 {
        let size = [1u8, 2, 4, 8, 3][rng.below(5) as usize];
        let addr = TABLE - 8 + rng.below(4096 + 16);
        match rng.below(5) {
            0 => {
                let reg = 0xB8 + rng.below(16) as u16;
                let size = [1u8, 2, 4][rng.below(3) as usize];
                if reg % 4 + u16::from(size) <= 4 {
                    wr(&mut p, &mut bus, DEV, reg, size, rng.next() as u32);
                }
            }
            1 | 2 if p.msix_traps(addr) => w(&mut p, &mut bus, addr, size, rng.next()),
            _ if p.msix_traps(addr) => {
                let _ = r(&mut p, &mut bus, addr, size);
            }
            _ => {}
        }
        let _ = p.message(rng.below(80) as usize);
    }
    assert!(p.msix_traps(TABLE), "enabled at some point");
    for e in 0..15 {
        let a = TABLE + 16 * e;
        let (address, vector) = if e < 4 {
            (0xFEE0_2000, 0x70 + e)
        } else {
            (0, 0)
        };
        assert_eq!(bus.clone_mem(a, 4), address, "entry {e}");
        assert_eq!(bus.clone_mem(a + 4, 4), 0);
        assert_eq!(bus.clone_mem(a + 8, 4), vector);
        assert!(bus.clone_mem(a + 12, 4) <= 1);
    }
    let host = &bus.fns[&DEV];
    assert_eq!(host[0xBA], 0x0E, "Table Size untouched");
    assert_eq!(
        host[0xBB] & 0x3F,
        0,
        "only Enable and Function Mask written"
    );
    assert_eq!(
        host[0xBC..0xC4],
        bus_before[0xBC..0xC4],
        "table and PBA registers"
    );
}

#[test]
fn a_device_reset_behind_dom0s_back_is_bound_again() {
    let (mut p, mut bus) = (PciPass::new(), msix_bus(0x0003, 0x2000));
    p.set_msi_destination(0);
    let (p, b) = (&mut p, &mut bus);
    assert!(matches!(
        enabled(p, b, 0x8000),
        Some(PciEventKind::MsixTrapped { .. })
    ));
    w(p, b, TABLE + 12, 4, 0);
    // A function-level reset: MSI-X off, BAR 0 and the table cleared.
    let f = b.fns.get_mut(&DEV).unwrap();
    f[0xBB] = 0;
    f[0x10..0x14].fill(0);
    b.mem.clear();
    // Linux restores the BAR (the device's MSI-X is off: forwarded), then
    // its MSI-X control with Enable, which dom0's shadow already had.
    let bar = wr(p, b, DEV, 0x10, 4, BAR).map(|e| e.kind);
    assert_eq!(bar, Some(PciEventKind::BarWritten));
    let again = enabled(p, b, 0x8000);
    assert!(matches!(again, Some(PciEventKind::MsixTrapped { .. })));
    assert_eq!(b.clone_mem(TABLE, 4), 0xFEE0_0000, "Basalt's message again");
    assert_eq!(b.clone_mem(TABLE + 8, 4), 0x70);
    assert_eq!(b.clone_mem(TABLE + 12, 4), 0, "dom0's unmasked entry 0");
    assert_eq!(b.clone_mem(TABLE + 16 + 12, 4), 1);
    assert_eq!(b.fns[&DEV][0xBB], 0x80);
}
