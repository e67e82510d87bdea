//! Exit-cost micro-benchmarks: 100000 each of CPUID(0), a null hypercall
//! (`xen_version(0, 0)`) and `in` from an ignored port (0x80), timed with
//! the TSC.
//!
//! `mode=yield`: `count=` times `SCHEDOP_yield` instead, and prints
//! `yield_loop_ticks=T per=P`. Two such domains pinned to one CPU hand the
//! CPU to each other at every yield, so one iteration holds two switches
//! between vCPUs of different domains.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{cpuid, inb, rdtsc};
use basalt_test_guests::hypercall::{self, xen_version};
use basalt_test_guests::{arg_u64, pass, println};
use core::hint::black_box;

basalt_test_guests::entry!(main);

/// Runs `f` `n` times; the TSC ticks it took.
fn time(n: u64, mut f: impl FnMut()) -> u64 {
    let start = rdtsc();
    for _ in 0..n {
        f();
    }
    rdtsc().wrapping_sub(start)
}

fn main(cmdline: &str) -> u32 {
    let n = arg_u64(cmdline, "count", 100_000).max(1);
    if basalt_test_guests::arg(cmdline, "mode") == Some("yield") {
        let ticks = time(n, || {
            black_box(hypercall::sched_yield());
        });
        println!("yield_loop_ticks={ticks} per={}", ticks / n);
        return pass();
    }

    let ticks = time(n, || {
        black_box(cpuid(0, 0));
    });
    println!("cpuid_loop_ticks={ticks} per={}", ticks / n);

    let ticks = time(n, || {
        black_box(xen_version(0, 0));
    });
    if hypercall::hypervisor_missing() {
        println!("(vmcall raised #UD: no hypervisor; this timed the #UD round trip)");
    }
    println!("vmcall_loop_ticks={ticks} per={}", ticks / n);

    let ticks = time(n, || {
        black_box(inb(0x80));
    });
    println!("io_loop_ticks={ticks} per={}", ticks / n);
    pass()
}
