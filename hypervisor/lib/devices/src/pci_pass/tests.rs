use super::*;
use std::collections::BTreeMap;

mod msix;

/// A host bus of functions with 256-byte configuration spaces; every
/// access is checked against the [`HostConfig`] contract and counted.
#[derive(Default)]
struct FakeBus {
    fns: BTreeMap<u16, [u8; 256]>,
    writes: Vec<(u16, u16, u8, u32)>,
    reads: usize,
    /// Host memory in device pages, by byte.
    mem: BTreeMap<u64, u8>,
    /// Device pages ([`HostConfig::device_page`]).
    device: Vec<u64>,
    /// Host memory writes: (address, size, value).
    mem_writes: Vec<(u64, u8, u64)>,
}

fn check(reg: u16, size: u8) {
    assert!(matches!(size, 1 | 2 | 4), "size {size}");
    assert!(
        reg < 0x100 && reg % 4 + u16::from(size) <= 4,
        "reg {reg:#x} size {size}"
    );
}

impl HostConfig for FakeBus {
    fn read(&mut self, bdf: u16, reg: u16, size: u8) -> u32 {
        check(reg, size);
        self.reads += 1;
        let Some(space) = self.fns.get(&bdf) else {
            return ones(size);
        };
        (0..u16::from(size)).fold(0, |v, i| {
            v | u32::from(space[usize::from(reg + i)]) << (8 * i)
        })
    }

    fn device_page(&mut self, page: u64) -> bool {
        assert_eq!(page % 4096, 0);
        self.device.contains(&page)
    }

    fn mem(&mut self, addr: u64, size: u8, write: Option<u64>) -> u64 {
        assert!(matches!(size, 1 | 2 | 4 | 8) && addr.is_multiple_of(u64::from(size)));
        assert!(self.device.contains(&(addr & !0xFFF)), "{addr:#x}");
        let Some(value) = write else {
            return self.clone_mem(addr, size);
        };
        self.mem_writes.push((addr, size, value));
        for i in 0..u64::from(size) {
            self.mem.insert(addr + i, (value >> (8 * i)) as u8);
        }
        0
    }

    fn write(&mut self, bdf: u16, reg: u16, size: u8, value: u32) {
        check(reg, size);
        self.writes.push((bdf, reg, size, value));
        let Some(space) = self.fns.get_mut(&bdf) else {
            return;
        };
        for i in 0..u16::from(size) {
            // The ids, status, class, header type, capabilities pointer and
            // the fixtures' capability headers are read-only, as on hardware.
            let r = reg + i;
            let read_only =
                r < 4 || (6..0x10).contains(&r) || r == 0x34 || (r >= 0x40 && r % 16 < 2);
            // MSI's 64-bit, Multiple Message Capable and mask flags.
            let keep: u8 = match r % 16 {
                2 if r >= 0x40 => 0x8E,
                3 if r >= 0x40 => 0xFF,
                _ => 0,
            };
            if !read_only {
                let old = space[usize::from(r)];
                space[usize::from(r)] = old & keep | (value >> (8 * i)) as u8 & !keep;
            }
        }
    }
}

impl FakeBus {
    /// Host memory at `addr`, `size` bytes, without recording an access.
    fn clone_mem(&self, addr: u64, size: u8) -> u64 {
        (0..u64::from(size)).fold(0, |v, i| {
            v | u64::from(self.mem.get(&(addr + i)).copied().unwrap_or(0)) << (8 * i)
        })
    }

    /// Sets the dword at `reg` of [`DEV`].
    fn set(&mut self, reg: usize, value: u32) {
        self.set_of(DEV, reg, value);
    }

    /// Sets the dword at `reg` of `bdf`.
    fn set_of(&mut self, bdf: u16, reg: usize, value: u32) {
        let f = self.fns.get_mut(&bdf).expect("a function");
        f[reg..reg + 4].copy_from_slice(&value.to_le_bytes());
    }
}

const DEV: u16 = 3 << 3; // 00:03.0
const PM: u8 = 0x01;
const PCIE: u8 = 0x10;

/// A function with `header_type` and capabilities `(at, id, next, control)`;
/// the capabilities-list bit is set when there are any.
fn function(header_type: u8, first: u8, caps: &[(u8, u8, u8, u16)]) -> [u8; 256] {
    let mut s = [0u8; 256];
    s[..4].copy_from_slice(&[0x34, 0x12, 0x78, 0x56]);
    s[0x0E] = header_type;
    if !caps.is_empty() {
        s[0x06] = 0x10;
    }
    s[if header_type == 2 { 0x14 } else { 0x34 }] = first;
    for &(at, id, next, control) in caps {
        let at = usize::from(at);
        s[at..at + 4].copy_from_slice(&[id, next, control as u8, (control >> 8) as u8]);
    }
    s
}

/// PM at 0x40 → MSI (64-bit, per-vector masks: 24 bytes) at 0x50 → PCIe
/// at 0x70 → MSI-X at 0xB0.
fn nic_bus() -> FakeBus {
    let mut bus = FakeBus::default();
    let caps = [
        (0x40, PM, 0x50, 0x0003),
        (0x50, CAP_MSI, 0x70, 0x0180),
        (0x70, PCIE, 0xB0, 0x0002),
        (0xB0, CAP_MSIX, 0x00, 0x0004),
    ];
    bus.fns.insert(DEV, function(0, 0x40, &caps));
    bus
}

/// A `PciPass` whose MSI-X slots are all taken (by functions F0:00.0-F0:00.7,
/// gone since): MSI-X is hidden on any other function.
fn full() -> PciPass {
    let (mut p, mut bus) = (PciPass::new(), FakeBus::default());
    for bdf in 0xF000..0xF000 + MSIX_FUNCTIONS as u16 {
        let caps = [(0x40, CAP_MSIX, 0, 0x0007)];
        bus.fns.insert(bdf, function(0, 0x40, &caps));
        assert_eq!(rd(&mut p, &mut bus, bdf, 0x34, 1), 0x40, "shown");
    }
    assert_eq!(p.msix_full.as_mut().and_then(Option::take), None);
    p.write(&mut bus, CONFIG_ADDRESS, 4, 0);
    p
}

fn select(p: &mut PciPass, bus: &mut FakeBus, bdf: u16, reg: u16) {
    p.write(
        bus,
        CONFIG_ADDRESS,
        4,
        ENABLE | u32::from(bdf) << 8 | u32::from(reg),
    );
}

fn rd(p: &mut PciPass, bus: &mut FakeBus, bdf: u16, reg: u16, size: u8) -> u32 {
    select(p, bus, bdf, reg & 0xFC);
    p.read(bus, CONFIG_DATA + (reg & 3), size)
}

fn wr(
    p: &mut PciPass,
    bus: &mut FakeBus,
    bdf: u16,
    reg: u16,
    size: u8,
    v: u32,
) -> Option<PciEvent> {
    select(p, bus, bdf, reg & 0xFC);
    p.write(bus, CONFIG_DATA + (reg & 3), size, v)
}

fn ev(kind: PciEventKind, bdf: u16, reg: u16, size: u8, value: u32) -> Option<PciEvent> {
    Some(PciEvent {
        kind,
        bdf,
        reg,
        size,
        value,
    })
}

/// Linux's `__pci_find_next_cap_ttl` over what dom0 reads: (offset, id).
fn dom0_chain(p: &mut PciPass, bus: &mut FakeBus, bdf: u16) -> Vec<(u8, u8)> {
    let mut found = Vec::new();
    let mut pos = rd(p, bus, bdf, 0x34, 1) as u8;
    for _ in 0..MAX_CAPS {
        pos &= 0xFC;
        if pos < 0x40 {
            break;
        }
        let header = rd(p, bus, bdf, u16::from(pos), 2);
        found.push((pos, header as u8));
        pos = (header >> 8) as u8;
    }
    found
}

#[test]
fn msix_is_skipped_in_the_chain_when_its_slots_are_taken() {
    let (mut p, mut bus) = (full(), nic_bus());
    assert_eq!(
        dom0_chain(&mut p, &mut bus, DEV),
        [(0x40, PM), (0x50, CAP_MSI), (0x70, PCIE)]
    );
}

#[test]
fn reads_of_every_width_covering_a_pointer_are_patched() {
    let (mut p, mut bus) = (full(), nic_bus());
    let b = &mut bus;
    let p = &mut p;
    assert_eq!(rd(p, b, DEV, 0x34, 4), 0x0000_0040);
    assert_eq!(
        rd(p, b, DEV, 0x40, 4),
        0x0003_5001,
        "id, next, control kept"
    );
    assert_eq!(rd(p, b, DEV, 0x40, 2), 0x5001);
    assert_eq!(rd(p, b, DEV, 0x41, 1), 0x50);
    assert_eq!(
        rd(p, b, DEV, 0x42, 2),
        0x0003,
        "control alone is the host's"
    );
    assert_eq!(rd(p, b, DEV, 0x70, 4), 0x0002_0010, "next past MSI-X: end");
    assert_eq!(rd(p, b, DEV, 0x71, 1), 0x00);
    assert_eq!(
        rd(p, b, DEV, 0xB0, 4),
        0x0004_0011,
        "a hidden capability's own bytes are the host's"
    );
    assert_eq!(rd(p, b, DEV, 0x00, 4), 0x5678_1234);
}

#[test]
fn a_hidden_first_capability_moves_the_pointer() {
    let mut bus = FakeBus::default();
    let caps = [(0x40, CAP_MSIX, 0x60, 0), (0x60, PM, 0, 0)];
    bus.fns.insert(DEV, function(0, 0x43, &caps));
    let mut p = full();
    assert_eq!(
        rd(&mut p, &mut bus, DEV, 0x34, 1),
        0x60,
        "masked 0x43, then past MSI-X"
    );
    assert_eq!(dom0_chain(&mut p, &mut bus, DEV), [(0x60, PM)]);
    // Only MSI-X: dom0 sees an empty list.
    let caps = [(0x40, CAP_MSIX, 0x00, 0)];
    bus.fns.insert(DEV, function(0, 0x40, &caps));
    assert_eq!(rd(&mut p, &mut bus, DEV, 0x34, 1), 0);
}

#[test]
fn loops_and_stray_pointers_end_the_chain() {
    let mut bus = FakeBus::default();
    let mut p = full();
    // PM → PCIe → PM: dom0's chain ends after PCIe.
    let caps = [(0x40, PM, 0x50, 0), (0x50, PCIE, 0x40, 0)];
    bus.fns.insert(DEV, function(0, 0x40, &caps));
    assert_eq!(
        dom0_chain(&mut p, &mut bus, DEV),
        [(0x40, PM), (0x50, PCIE)]
    );
    // PM → MSI-X → PM.
    let caps = [(0x40, PM, 0x50, 0), (0x50, CAP_MSIX, 0x40, 0)];
    bus.fns.insert(DEV, function(0, 0x40, &caps));
    assert_eq!(dom0_chain(&mut p, &mut bus, DEV), [(0x40, PM)]);
    // A pointer below 0x40 ends the host's chain.
    let caps = [(0x40, PM, 0x3C, 0)];
    bus.fns.insert(DEV, function(0, 0x40, &caps));
    assert_eq!(rd(&mut p, &mut bus, DEV, 0x41, 1), 0);
    // All 48 dwords chained in a ring, the last an MSI-X pointing back: the
    // walk reads each at most once.
    let mut caps: Vec<_> = (0..48u8)
        .map(|i| (0x40 + 4 * i, PM, 0x44u8.wrapping_add(4 * i), 0))
        .collect();
    caps[47] = (0xFC, CAP_MSIX, 0x40, 0);
    bus.fns.insert(DEV, function(0, 0x40, &caps));
    bus.reads = 0;
    assert_eq!(
        rd(&mut p, &mut bus, DEV, 0xF9, 1),
        0,
        "0xF8's next (MSI-X) is hidden"
    );
    assert!(bus.reads <= 4 + MAX_CAPS, "{} host reads", bus.reads);
    assert_eq!(dom0_chain(&mut p, &mut bus, DEV).len(), 47);
}

#[test]
fn without_a_capability_list_nothing_is_patched_or_hidden() {
    let mut bus = FakeBus::default();
    let mut space = function(0, 0, &[]);
    space[0x34] = 0x50;
    space[0x50] = CAP_MSI;
    bus.fns.insert(DEV, space);
    let mut p = full();
    assert_eq!(
        rd(&mut p, &mut bus, DEV, 0x34, 1),
        0x50,
        "status bit 4 clear"
    );
    assert_eq!(wr(&mut p, &mut bus, DEV, 0x52, 2, 1), None);
    assert_eq!(bus.writes, [(DEV, 0x52, 2, 1)]);
}

#[test]
fn absent_functions_read_ones_unpatched() {
    let (mut p, mut bus) = (full(), nic_bus());
    assert_eq!(rd(&mut p, &mut bus, 0x0100, 0x34, 4), u32::MAX);
    assert_eq!(rd(&mut p, &mut bus, 0x0100, 0x41, 1), 0xFF);
}

#[test]
fn writes_touching_hidden_capabilities_are_dropped() {
    let (mut p, mut bus) = (full(), nic_bus());
    let dropped = |reg, size, value| ev(PciEventKind::HiddenWriteDropped, DEV, reg, size, value);
    assert_eq!(
        wr(&mut p, &mut bus, DEV, 0xB2, 2, 0x8000),
        dropped(0xB2, 2, 0x8000)
    );
    assert_eq!(wr(&mut p, &mut bus, DEV, 0xB8, 4, 0), dropped(0xB8, 4, 0));
    assert!(bus.writes.is_empty());
    assert_eq!(wr(&mut p, &mut bus, DEV, 0x44, 2, 3), None, "PM control");
    assert_eq!(
        wr(&mut p, &mut bus, DEV, 0xBC, 4, 9),
        None,
        "past MSI-X's 12 bytes"
    );
    let written: Vec<_> = bus.writes.iter().map(|w| w.1).collect();
    assert_eq!(written, [0x44, 0xBC]);
}

#[test]
fn a_cardbus_bridge_starts_its_chain_at_0x14() {
    let mut bus = FakeBus::default();
    let caps = [(0x80, CAP_MSIX, 0x90, 0), (0x90, PM, 0, 0)];
    bus.fns.insert(DEV, function(2, 0x80, &caps));
    let mut p = full();
    assert_eq!(rd(&mut p, &mut bus, DEV, 0x14, 1), 0x90);
    assert!(wr(&mut p, &mut bus, DEV, 0x82, 2, 1).is_some());
}

#[test]
fn the_enable_bit_clear_reads_ones_and_drops_writes() {
    let (mut p, mut bus) = (full(), nic_bus());
    p.write(&mut bus, CONFIG_ADDRESS, 4, u32::from(DEV) << 8 | 0x40);
    bus.reads = 0;
    for (port, size) in [(0xCFC, 4), (0xCFC, 2), (0xCFE, 2), (0xCFF, 1)] {
        assert_eq!(p.read(&mut bus, port, size), ones(size));
        assert_eq!(p.write(&mut bus, port, size, 0), None);
    }
    assert_eq!(
        (bus.reads, bus.writes.len()),
        (0, 0),
        "the host is never reached"
    );
}

#[test]
fn data_ports_reach_register_plus_offset_within_the_dword() {
    let (mut p, mut bus) = (full(), nic_bus());
    select(&mut p, &mut bus, DEV, 0x00);
    assert_eq!(p.read(&mut bus, 0xCFD, 1), 0x12);
    assert_eq!(p.read(&mut bus, 0xCFE, 2), 0x5678);
    assert_eq!(p.read(&mut bus, 0xCFD, 4), u32::MAX, "crosses 0xCFF");
    assert_eq!(p.read(&mut bus, 0xCFF, 2), 0xFFFF, "crosses 0xCFF");
    select(&mut p, &mut bus, DEV, 0x3C);
    p.write(&mut bus, 0xCFC, 1, 0x0B);
    p.write(&mut bus, 0xCFE, 2, 0xFFFF);
    assert_eq!(bus.writes, [(DEV, 0x3C, 1, 0x0B), (DEV, 0x3E, 2, 0xFFFF)]);
}

#[test]
fn only_dword_accesses_at_0xcf8_reach_the_latch() {
    assert!(PciPass::handles(0xCF8, 4));
    assert!(
        !PciPass::handles(RESET_CONTROL, 1),
        "0xCF9 bytes are the reset register's"
    );
    for (port, size) in [
        (0xCF8, 1),
        (0xCF8, 2),
        (0xCF9, 2),
        (0xCFA, 1),
        (0xCFB, 1),
        (0xCFC, 4),
        (0xCFF, 1),
    ] {
        assert!(PciPass::handles(port, size), "{port:#x}/{size}");
    }
    assert!(!PciPass::handles(0xCF7, 1) && !PciPass::handles(0xD00, 1));
    // Linux's pci_check_type1().
    let (mut p, mut bus) = (full(), nic_bus());
    p.write(&mut bus, 0xCFB, 1, 0x01);
    p.write(&mut bus, 0xCF8, 2, 0x1234);
    p.write(&mut bus, 0xCFA, 1, 0x00);
    assert_eq!(
        p.read(&mut bus, 0xCF8, 4),
        0,
        "narrow writes leave the latch"
    );
    assert_eq!(p.read(&mut bus, 0xCF8, 1), 0xFF);
    assert_eq!(p.read(&mut bus, 0xCFA, 2), 0xFFFF);
    p.write(&mut bus, 0xCF8, 4, 0x8000_0000);
    assert_eq!(p.read(&mut bus, 0xCF8, 4), 0x8000_0000);
    p.write(&mut bus, 0xCF8, 4, 0xFFFF_FFFF);
    assert_eq!(
        p.read(&mut bus, 0xCF8, 4),
        0x80FF_FFFC,
        "reserved bits 30:24 and 1:0 read 0"
    );
    assert_eq!(
        (bus.reads, bus.writes.len()),
        (0, 0),
        "nothing reached the host"
    );
}

#[test]
fn bar_writes_are_forwarded_and_reported() {
    let (mut p, mut bus) = (full(), nic_bus());
    let bar = |bdf, reg, size, value| ev(PciEventKind::BarWritten, bdf, reg, size, value);
    assert_eq!(
        wr(&mut p, &mut bus, DEV, 0x10, 4, !0),
        bar(DEV, 0x10, 4, !0)
    );
    assert_eq!(
        wr(&mut p, &mut bus, DEV, 0x24, 4, 0xFEB0_0000),
        bar(DEV, 0x24, 4, 0xFEB0_0000)
    );
    assert_eq!(
        wr(&mut p, &mut bus, DEV, 0x13, 1, 0xFE),
        bar(DEV, 0x13, 1, 0xFE)
    );
    assert_eq!(wr(&mut p, &mut bus, DEV, 0x30, 4, 1), bar(DEV, 0x30, 4, 1));
    assert_eq!(wr(&mut p, &mut bus, DEV, 0x28, 4, 0), None, "CardBus CIS");
    assert_eq!(wr(&mut p, &mut bus, DEV, 0x04, 2, 7), None, "command");
    assert_eq!(bus.writes.len(), 6, "all forwarded");
    assert_eq!(bus.fns[&DEV][0x24..0x28], [0x00, 0x00, 0xB0, 0xFE]);
    // A PCI-to-PCI bridge: two BARs, the ROM at 0x38.
    let bridge = 0x0008;
    bus.fns.insert(bridge, function(1, 0, &[]));
    assert_eq!(
        wr(&mut p, &mut bus, bridge, 0x14, 4, 0),
        bar(bridge, 0x14, 4, 0)
    );
    assert_eq!(
        wr(&mut p, &mut bus, bridge, 0x38, 4, 0),
        bar(bridge, 0x38, 4, 0)
    );
    assert_eq!(
        wr(&mut p, &mut bus, bridge, 0x18, 4, 0x0001_0100),
        None,
        "bus numbers"
    );
    assert_eq!(
        wr(&mut p, &mut bus, bridge, 0x30, 4, 0),
        None,
        "I/O limit upper"
    );
}

#[test]
fn the_host_bridge_takes_only_command_and_status() {
    let (mut p, mut bus) = (full(), nic_bus());
    bus.fns.insert(0, function(0, 0, &[]));
    assert_eq!(wr(&mut p, &mut bus, 0, 0x04, 2, 0x0006), None);
    assert_eq!(
        wr(&mut p, &mut bus, 0, 0x06, 2, 0xF900),
        None,
        "status: write 1 to clear"
    );
    let refused = |reg, size, value| ev(PciEventKind::BridgeWriteDropped, 0, reg, size, value);
    assert_eq!(wr(&mut p, &mut bus, 0, 0x10, 4, !0), refused(0x10, 4, !0));
    assert_eq!(
        wr(&mut p, &mut bus, 0, 0x59, 1, 0x30),
        refused(0x59, 1, 0x30),
        "PAM"
    );
    assert_eq!(
        wr(&mut p, &mut bus, 0, 0x72, 1, 0x4A),
        refused(0x72, 1, 0x4A),
        "SMRAM"
    );
    assert_eq!(bus.writes, [(0, 0x04, 2, 0x0006), (0, 0x06, 2, 0xF900)]);
    assert_eq!(rd(&mut p, &mut bus, 0, 0x00, 4), 0x5678_1234, "reads pass");
}

#[test]
fn random_accesses_never_reach_a_hidden_capability_or_the_bridge() {
    let mut rng = crate::test_rng::Rng(0x5eed_0fc0_ffee_1111);
    let (mut p, mut bus) = (full(), nic_bus());
    p.set_msi_destination(2);
    bus.fns.insert(0, function(0, 0, &[]));
    let before = bus.fns.clone();
    for _ in 0..50_000 {
        let port = 0xCF8 + rng.below(8) as u16;
        let size = [1u8, 2, 4][rng.below(3) as usize];
        if rng.below(4) == 0 {
            let bdf = if rng.below(2) == 0 { 0 } else { DEV };
            let address = ENABLE | u32::from(bdf) << 8 | u32::from(rng.byte());
            p.write(&mut bus, CONFIG_ADDRESS, 4, address);
        } else if rng.below(2) == 0 {
            p.write(&mut bus, port, size, rng.next() as u32);
        } else {
            assert!(p.read(&mut bus, port, size) <= ones(size));
        }
    }
    for &(bdf, reg, size, _) in &bus.writes {
        let end = reg + u16::from(size);
        assert!(bdf != 0 || (0x04..0x08).contains(&reg), "bridge {reg:#x}");
        let hidden = reg < 0xBC && end > 0xB0;
        assert!(bdf != DEV || !hidden, "hidden {reg:#x}");
    }
    // Only Basalt's message ever reached the device's MSI registers.
    let host = &bus.fns[&DEV];
    assert!(host[0x54..0x58] == [0; 4] || host[0x54..0x58] == 0xFEE0_2000u32.to_le_bytes());
    assert_eq!(host[0x58..0x5C], [0; 4]);
    assert!(host[0x5C..0x5E] == [0; 2] || host[0x5C..0x5E] == [MSI_VECTOR_BASE, 0]);
    assert_eq!(host[0x52] & 0x70, 0, "one message");
    assert_eq!(bus.fns[&DEV][0xB0..0xBC], before[&DEV][0xB0..0xBC]);
    assert_eq!(
        dom0_chain(&mut p, &mut bus, DEV),
        [(0x40, PM), (0x50, CAP_MSI), (0x70, PCIE)]
    );
}

#[test]
fn msi_registers_are_dom0s_the_device_gets_the_host_message() {
    let mut bus = FakeBus::default();
    // 64-bit MSI with masks, Multiple Message Capable 8 (3), at 0x50.
    let caps = [(0x40, PM, 0x50, 0), (0x50, CAP_MSI, 0, 0x0186)];
    bus.fns.insert(DEV, function(0, 0x40, &caps));
    let mut p = full();
    p.set_msi_destination(3);
    let (b, p) = (&mut bus, &mut p);
    assert_eq!(rd(p, b, DEV, 0x52, 2), 0x0180, "one message capable");
    assert_eq!(wr(p, b, DEV, 0x54, 4, 0xFEE0_100C), None);
    assert_eq!(wr(p, b, DEV, 0x58, 4, 0), None);
    assert_eq!(wr(p, b, DEV, 0x5C, 2, 0x4027), None);
    assert_eq!(b.fns[&DEV][0x54..0x5E], [0; 10], "nothing of dom0's");
    assert_eq!(p.message(0), None, "disabled");
    let on = ev(PciEventKind::MsiEnabled(true), DEV, 0x52, 2, 0x0091);
    assert_eq!(wr(p, b, DEV, 0x52, 2, 0x0091), on);
    assert_eq!(rd(p, b, DEV, 0x54, 4), 0xFEE0_100C, "dom0 reads its own");
    assert_eq!(rd(p, b, DEV, 0x5C, 2), 0x4027);
    assert_eq!(rd(p, b, DEV, 0x50, 4), 0x0191_0005, "its enable and MME");
    let host = b.fns[&DEV];
    assert_eq!(host[0x54..0x58], 0xFEE0_3000u32.to_le_bytes());
    assert_eq!(host[0x5C..0x5E], [MSI_VECTOR_BASE, 0], "slot 0's vector");
    assert_eq!(host[0x52] & 0x71, 0x01, "enabled, one message");
    assert_eq!(p.message(0), Some((0xFEE0_100C, 0x4027)));
    // dom0 moves its message while enabled: the device keeps Basalt's.
    assert_eq!(wr(p, b, DEV, 0x54, 4, 0xFEE0_2000), None);
    assert_eq!(b.fns[&DEV][0x54..0x58], 0xFEE0_3000u32.to_le_bytes());
    assert_eq!(p.message(0), Some((0xFEE0_2000, 0x4027)));
    // Per-vector mask bits pass through.
    assert_eq!(wr(p, b, DEV, 0x60, 4, 1), None);
    assert_eq!(b.writes.last(), Some(&(DEV, 0x60, 4, 1)));
    let off = ev(PciEventKind::MsiEnabled(false), DEV, 0x52, 2, 0);
    assert_eq!(wr(p, b, DEV, 0x52, 2, 0), off);
    assert_eq!(b.fns[&DEV][0x52] & 1, 0);
    assert_eq!(p.message(0), None);
}

#[test]
fn a_32_bit_msi_has_its_data_at_8_and_without_a_destination_stays_off() {
    let mut bus = FakeBus::default();
    bus.fns
        .insert(DEV, function(0, 0x40, &[(0x40, CAP_MSI, 0, 0)]));
    let mut p = full();
    let (b, p) = (&mut bus, &mut p);
    assert_eq!(wr(p, b, DEV, 0x48, 2, 0x41), None);
    assert_eq!(rd(p, b, DEV, 0x48, 2), 0x41);
    assert!(wr(p, b, DEV, 0x42, 2, 1).is_some());
    assert_eq!(b.fns[&DEV][0x42] & 1, 0, "no host destination yet");
    p.set_msi_destination(0);
    assert_eq!(wr(p, b, DEV, 0x42, 2, 1), None, "still enabled for dom0");
    assert_eq!(b.fns[&DEV][0x48..0x4A], [MSI_VECTOR_BASE, 0]);
    assert_eq!(p.message(0), Some((0, 0x41)));
}

#[test]
fn the_msi_table_is_bounded() {
    let mut bus = FakeBus::default();
    let mut p = full();
    p.set_msi_destination(0);
    for i in 0..=MSI_SLOTS as u16 {
        let bdf = (i + 1) << 3;
        bus.fns
            .insert(bdf, function(0, 0x40, &[(0x40, CAP_MSI, 0, 0)]));
        let e = wr(&mut p, &mut bus, bdf, 0x42, 2, 1).map(|e| e.kind);
        if usize::from(i) < MSI_SLOTS {
            assert_eq!(e, Some(PciEventKind::MsiEnabled(true)));
            let vector = MSI_VECTOR_BASE + i as u8;
            assert_eq!(bus.fns[&bdf][0x48], vector);
        } else {
            assert_eq!(e, Some(PciEventKind::MsiRefused));
            assert_eq!(bus.fns[&bdf][0x42] & 1, 0, "left disabled");
        }
    }
    assert_eq!(
        rd(&mut p, &mut bus, (MSI_SLOTS as u16 + 1) << 3, 0x42, 2),
        0
    );
}
