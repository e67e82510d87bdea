//! HLT with a timer wake-up: the guest arms Xen's single-shot timer
//! (`VCPUOP_set_singleshot_timer`) a few milliseconds ahead, executes `hlt`
//! with interrupts off, and checks that it resumed no earlier than the
//! deadline (system time from `VCPUOP_get_runstate_info`) and that the TSC
//! advanced.
//!
//! Options: `count=3`, `delay_us=2000`. Outside a hypervisor the first `hlt`
//! never returns.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{halt, rdtsc};
use basalt_test_guests::hypercall::{set_singleshot_timer, system_time_ns};
use basalt_test_guests::{arg_u64, fail, pass, println};

basalt_test_guests::entry!(main);

fn main(cmdline: &str) -> u32 {
    let count = arg_u64(cmdline, "count", 3);
    let delay_ns = arg_u64(cmdline, "delay_us", 2000) * 1000;
    for round in 1..=count {
        let now = system_time_ns();
        if now < 0 {
            return fail!("VCPUOP_get_runstate_info failed: {now}");
        }
        let deadline = now as u64 + delay_ns;
        let r = set_singleshot_timer(deadline);
        if r != 0 {
            return fail!("VCPUOP_set_singleshot_timer failed: {r}");
        }
        let before = rdtsc();
        println!(
            "hlt {round}/{count} with interrupts off, timer in {} us",
            delay_ns / 1000
        );
        halt();
        let after = rdtsc();
        let woke = system_time_ns();
        println!(
            "woke {} us after the deadline, {} TSC ticks later",
            (woke - deadline as i64) / 1000,
            after.wrapping_sub(before)
        );
        if woke < deadline as i64 {
            return fail!("woke before the timer: {woke} < {deadline}");
        }
        if after <= before {
            return fail!("TSC did not advance across hlt {round} ({before:#x} -> {after:#x})");
        }
    }
    pass()
}
