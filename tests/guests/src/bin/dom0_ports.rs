//! The control domain's kept ports under hostile widths (docs/control-domain.md,
//! "Ports"), as a test guest with `role=control`: every OUT below would
//! reset the host or put it to sleep if Basalt forwarded it as it came, so
//! the run reaching its end (and its own poweroff) is the proof:
//!
//! - a dword at 0x62 whose byte 2 is 0xFE (the 8042 reset at 0x64);
//! - a word at 0x91 whose high byte sets bit 0 of 0x92 (fast reset);
//! - a dword at 0xCF6 whose byte 3 is 6 (RST_CPU at 0xCF9);
//! - PM1a_CNT (from the FADT dom0 is given) with SLP_EN and the S5 type as
//!   a dword and as a word at its high byte: dropped;
//! - PM1a_CNT with SLP_EN and `typ=` (1: not S5 on QEMU or Bochs) as a
//!   word: refused with a warning (Basalt does not suspend the host).
//!
//! First, `PHYSDEVOP_pci_device_add` as Linux's PCI notifier makes it: 0
//! for the host bridge 00:00.0, -ENODEV for a function that does not answer
//! (ff:1f.7) and for segment 1, -EFAULT for an unmapped argument.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{outl, outw};
use basalt_test_guests::hypercall::hypercall2;
use basalt_test_guests::{arg_u64, fail, pass, println, start_info};

basalt_test_guests::entry!(main);

fn read<T: Copy>(paddr: u64) -> T {
    // SAFETY: ACPI tables named by the start info and the tables it points
    // at; the runtime identity-maps the low 4 GiB (the control domain's
    // host addresses are mapped on first touch).
    unsafe { core::ptr::read_unaligned(paddr as *const T) }
}

/// PM1a_CNT_BLK of the FADT that the XSDT of `rsdp` lists.
fn pm1a_cnt(rsdp: u64) -> Option<u16> {
    let xsdt: u64 = read(rsdp + 24);
    let len: u32 = read(xsdt + 4);
    (36..len as u64).step_by(8).find_map(|at| {
        let table: u64 = read(xsdt + at);
        (read::<[u8; 4]>(table) == *b"FACP").then(|| read::<u32>(table + 64) as u16)
    })
}

/// `physdev_op(PHYSDEVOP_pci_device_add, arg)`.
fn device_add(arg: u64) -> i64 {
    // SAFETY: Basalt only reads the structure (or answers -EFAULT).
    unsafe { hypercall2(33, 25, arg) }
}

/// `struct physdev_pci_device_add { u16 seg; u8 bus; u8 devfn; u32 flags; }`.
fn device(seg: u16, bus: u8, devfn: u8) -> [u8; 8] {
    let mut a = [0u8; 8];
    a[0..2].copy_from_slice(&seg.to_le_bytes());
    (a[2], a[3]) = (bus, devfn);
    a
}

fn main(cmdline: &str) -> u32 {
    let add = |a: [u8; 8]| device_add(a.as_ptr() as u64);
    let answers = (
        add(device(0, 0, 0)),
        add(device(0, 0xff, 0xff)),
        add(device(1, 0, 0)),
        device_add(0x7fff_0000_0000),
    );
    println!("dom0-ports: pci_device_add {answers:?}");
    if answers != (0, -19, -19, -14) {
        return fail!("pci_device_add: want 0, -ENODEV, -ENODEV, -EFAULT");
    }
    let info = start_info();
    let Some(pm1a) = pm1a_cnt(info.rsdp_paddr).filter(|p| *p != 0) else {
        return fail!("no PM1a_CNT_BLK in the FADT");
    };
    let typ = arg_u64(cmdline, "typ", 1) as u16 & 7;
    println!("dom0-ports: PM1a_CNT at {pm1a:#x}; straddling the reset ports");
    outl(0x62, 0x00fe_0000);
    outw(0x91, 0x0100);
    outl(0xcf6, 0x0600_0000);
    println!("dom0-ports: PM1a_CNT as a dword and at its high byte");
    outl(u16::from(pm1a), 1 << 13);
    outw(pm1a + 1, 0x20);
    println!("dom0-ports: SLP_TYP {typ} with SLP_EN");
    outw(pm1a, 1 << 13 | typ << 10);
    println!("dom0-ports: still running");
    pass()
}
