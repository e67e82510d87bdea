//! A triple fault: an empty IDT (limit 0) and `ud2`. The #UD cannot be
//! delivered (#GP), neither can that (#DF), nor the double fault: the
//! hypervisor must end the domain with a crash report.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{self, DescriptorTablePointer};
use basalt_test_guests::{fail, println};

basalt_test_guests::entry!(main);

fn main(_cmdline: &str) -> u32 {
    println!("loading an empty IDT and executing ud2: expect a triple fault");
    let empty = DescriptorTablePointer { limit: 0, base: 0 };
    // SAFETY: deliberately breaks exception delivery: the next exception
    // shuts the vCPU down, which is what this guest tests.
    unsafe {
        cpu::lidt(&empty);
    }
    // SAFETY: raises #UD, which must end the domain (see above).
    unsafe {
        core::arch::asm!("ud2", options(nostack, nomem));
    }
    fail!("ud2 with an empty IDT returned")
}
