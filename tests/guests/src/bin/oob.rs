//! A read outside the guest's memory (guest-physical 4 GiB, beyond any test
//! guest's RAM but inside the runtime's identity map): the hypervisor must
//! end the domain. If the read returns, the test fails.

#![no_std]
#![no_main]

use basalt_test_guests::{MAPPED_GIB, fail, println};

basalt_test_guests::entry!(main);

const OUTSIDE: u64 = 0x1_0000_0000;

fn main(_cmdline: &str) -> u32 {
    const _: () = assert!(OUTSIDE + 8 <= MAPPED_GIB << 30);
    println!("about to read outside my memory, at {OUTSIDE:#x}");
    // SAFETY: deliberately not RAM: the point of the test is that the
    // hypervisor stops the guest here. The runtime's page tables map the
    // address, so the guest itself takes no page fault.
    let value = unsafe { core::ptr::read_volatile(OUTSIDE as *const u64) };
    println!("read {value:#x}");
    fail!("read outside memory returned")
}
