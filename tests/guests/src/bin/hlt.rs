//! `hlt` with interrupts off, a few times: nothing but the hypervisor can
//! resume the vCPU (after its timer), and the TSC must have advanced.
//!
//! Options: `count=3`. Outside a hypervisor (e.g. QEMU's own PVH loader)
//! the first `hlt` never returns.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{halt, rdtsc};
use basalt_test_guests::{arg_u64, fail, pass, println};

basalt_test_guests::entry!(main);

fn main(cmdline: &str) -> u32 {
    let count = arg_u64(cmdline, "count", 3);
    for round in 1..=count {
        let before = rdtsc();
        println!("hlt {round}/{count} with interrupts off");
        halt();
        let after = rdtsc();
        println!("resumed after {} TSC ticks", after.wrapping_sub(before));
        if after <= before {
            return fail!("TSC did not advance across hlt {round} ({before:#x} -> {after:#x})");
        }
    }
    pass()
}
