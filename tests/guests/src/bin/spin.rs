//! A busy loop for scheduling tests: prints a line every `every=`
//! iterations and exits after `iterations=` (default 2000000, every
//! tenth). `id=` labels its lines (default: the guest's name).

#![no_std]
#![no_main]

use basalt_test_guests::cpu::rdtsc;
use basalt_test_guests::{arg, arg_u64, pass, println};
use core::hint::black_box;

basalt_test_guests::entry!(main);

fn main(cmdline: &str) -> u32 {
    let iterations = arg_u64(cmdline, "iterations", 2_000_000);
    let every = arg_u64(cmdline, "every", (iterations / 10).max(1)).max(1);
    let id = arg(cmdline, "id").unwrap_or(basalt_test_guests::name());
    println!("spin {id}: {iterations} iterations, a line every {every}");
    let start = rdtsc();
    let mut x = 0u64;
    for i in 1..=iterations {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
        if i % every == 0 {
            println!(
                "spin {id}: {i}/{iterations} ({} TSC ticks)",
                rdtsc().wrapping_sub(start)
            );
        }
    }
    pass()
}
