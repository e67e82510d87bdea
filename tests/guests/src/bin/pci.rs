//! PCI configuration mechanism #1, as Linux probes it: `pci_check_type1`
//! (a byte write to 0xCFB, then the address register at 0xCF8 must keep
//! 0x80000000), then a scan of buses 0-1, every device and function,
//! reading the vendor/device dword; prints each function found
//! (`pci: 00:00.0 8086:1237 class 060000`) and checks the host bridge is
//! there and nothing else answers.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{inl, outb, outl};
use basalt_test_guests::{Checks, println};

basalt_test_guests::entry!(main);

fn config(bus: u32, dev: u32, func: u32, reg: u32) -> u32 {
    outl(
        0xcf8,
        0x8000_0000 | (bus << 16) | (dev << 11) | (func << 8) | reg,
    );
    inl(0xcfc)
}

fn main(_cmdline: &str) -> u32 {
    let mut c = Checks::new();
    outb(0xcfb, 0x01);
    let saved = inl(0xcf8);
    outl(0xcf8, 0x8000_0000);
    let back = inl(0xcf8);
    outl(0xcf8, saved);
    c.check(
        back == 0x8000_0000,
        format_args!("type 1 configuration access works (0xCF8 reads back {back:#x})"),
    );
    let mut found = 0;
    let mut bridge = false;
    for bus in 0..2 {
        for dev in 0..32 {
            for func in 0..8 {
                let id = config(bus, dev, func, 0);
                if id == u32::MAX {
                    continue;
                }
                let class = config(bus, dev, func, 8) >> 8;
                println!(
                    "pci: {bus:02x}:{dev:02x}.{func} {:04x}:{:04x} class {class:06x}",
                    id & 0xffff,
                    id >> 16
                );
                found += 1;
                bridge |= (bus, dev, func, id, class) == (0, 0, 0, 0x1237_8086, 0x06_0000);
            }
        }
    }
    c.check(bridge, format_args!("the 440FX host bridge is at 00:00.0"));
    c.check(
        found == 1,
        format_args!("exactly one function answers ({found})"),
    );
    c.finish()
}
