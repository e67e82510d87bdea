use super::*;

fn function() -> Config {
    let mut c = Config::new(0x1af4, 0x1042, 0x01_8000, 1, (0x1af4, 0x40));
    c.bar64(0, 0x8000, 0xe000_0000);
    c
}

#[test]
fn identity_is_read_only() {
    let mut c = function();
    for reg in [0, 8, 0x2c, 0x34] {
        let before = c.read(reg, 4);
        c.write(reg, 4, 0x1234_5678);
        assert_eq!(c.read(reg, 4), before, "register {reg:#x}");
    }
    assert_eq!(c.read(0, 4), 0x1042_1af4);
    assert_eq!(c.read(8, 4), 0x0180_0001);
    assert_eq!(c.read(0x2c, 4), 0x0040_1af4);
}

#[test]
fn command_keeps_only_its_writable_bits() {
    let mut c = function();
    c.write(4, 2, 0xffff);
    assert_eq!(c.read(4, 2), 0x0407);
    assert!(c.memory_enabled());
    c.write(4, 2, 0);
    assert!(!c.memory_enabled());
    // Status stays "capabilities list" (no write-one-to-clear bits set).
    c.write(6, 2, 0xffff);
    assert_eq!(c.read(6, 2), 0x10);
}

#[test]
fn bar_sizing_and_placement() {
    let mut c = function();
    assert_eq!(c.bar64_address(0), 0xe000_0000);
    c.write(0x10, 4, 0xffff_ffff);
    c.write(0x14, 4, 0xffff_ffff);
    assert_eq!(c.read(0x10, 4), 0xffff_8004);
    assert_eq!(c.read(0x14, 4), 0xffff_ffff);
    c.write(0x10, 4, 0xfebf_1234);
    c.write(0x14, 4, 0);
    assert_eq!(c.bar64_address(0), 0xfebf_0000, "aligned down to the size");
    assert_eq!(c.read(0x18, 4), 0, "no BAR 2");
    c.write(0x18, 4, 0xffff_ffff);
    assert_eq!(c.read(0x18, 4), 0);
}

#[test]
fn capabilities_chain() {
    let mut c = function();
    let a = c.add_capability(&[0x09, 0xaa, 16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x38, 0, 0, 0]);
    let b = c.add_capability(&[0x11, 0xbb, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!((a, b), (0x40, 0x50));
    assert_eq!(c.read(0x34, 1), 0x40);
    assert_eq!(c.read(0x41, 1), 0x50, "next pointer filled in");
    assert_eq!(c.read(0x51, 1), 0, "end of the list");
    assert_eq!(c.read(0x42, 2), 0x0110);
}

#[test]
fn odd_accesses_read_all_ones_and_write_nothing() {
    let mut c = function();
    assert_eq!(c.read(1, 2), 0xffff, "misaligned");
    assert_eq!(c.read(0xfe, 4), 0xffff_ffff, "misaligned");
    assert_eq!(c.read(0x100, 1), 0xff, "past the space");
    assert_eq!(c.read(0, 3), 0xff_ffff, "a bad size");
    c.write(0x3c, 4, 0xffff_ffff);
    assert_eq!(c.read(0x3c, 4), 0xff, "only the interrupt line");
    c.write(0x3d, 2, 0);
    assert_eq!(c.read(0x3c, 1), 0xff);
}
