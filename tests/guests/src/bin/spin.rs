//! A busy loop for scheduling tests: prints a line every `every=`
//! iterations and exits after `iterations=` (default 2000000, a line every
//! tenth). `iterations=0` runs forever, never exiting (CPU-share tests let
//! the hypervisor stop it), printing a line every `every=` iterations when
//! that is given and nothing otherwise. `id=` labels its lines (default:
//! the guest's name).

#![no_std]
#![no_main]

use basalt_test_guests::cpu::rdtsc;
use basalt_test_guests::{arg, arg_u64, pass, println};
use core::hint::black_box;

basalt_test_guests::entry!(main);

fn main(cmdline: &str) -> u32 {
    let iterations = arg_u64(cmdline, "iterations", 2_000_000);
    let forever = iterations == 0;
    // 0: no progress lines.
    let every = match arg(cmdline, "every") {
        Some(_) => arg_u64(cmdline, "every", 1).max(1),
        None if forever => 0,
        None => (iterations / 10).max(1),
    };
    let id = arg(cmdline, "id").unwrap_or(basalt_test_guests::name());
    match (forever, every) {
        (true, 0) => println!("spin {id}: forever, no progress lines"),
        (true, _) => println!("spin {id}: forever, a line every {every}"),
        (false, _) => println!("spin {id}: {iterations} iterations, a line every {every}"),
    }
    let start = rdtsc();
    let mut x = 0u64;
    let mut i = 0u64;
    while forever || i < iterations {
        i += 1;
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        if every != 0 && i.is_multiple_of(every) {
            let ticks = rdtsc().wrapping_sub(start);
            if forever {
                println!("spin {id}: {i} ({ticks} TSC ticks)");
            } else {
                println!("spin {id}: {i}/{iterations} ({ticks} TSC ticks)");
            }
        }
    }
    pass()
}
