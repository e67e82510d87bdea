//! Exit-cost micro-benchmarks: 100000 each of CPUID(0), a null hypercall
//! (`xen_version(0, 0)`) and `in` from an ignored port (0x80), timed with
//! the TSC.
//!
//! `mode=yield`: `count=` times `SCHEDOP_yield` instead, and prints
//! `yield_loop_ticks=T per=P`. Two such domains pinned to one CPU hand the
//! CPU to each other at every yield, so one iteration holds two switches
//! between vCPUs of different domains.
//!
//! `mode=timer`: a periodic timer of `period_us=` (default 2000) for
//! `count=` periods, built from the single-shot timer re-armed at absolute
//! deadlines (start + k * period) and waited for with `hlt`; at each
//! wake-up the lateness (system time - deadline) is taken. The TSC rate is
//! measured over the whole run (TSC ticks / system ns), so the lateness is
//! printed in this guest's own TSC ticks: `timer_late_max_ticks=M
//! avg=A n=N tsc_per_ms=R`; `verbose=1` also prints each lateness above
//! 10 ms as it happens. Used beside a console flood (`cargo xtask bench
//! console`).

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{cpuid, inb, rdtsc};
use basalt_test_guests::hypercall::{self, Wait, sleep_until, system_time_ns, xen_version};
use basalt_test_guests::{arg_u64, fail, pass, println};
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

/// `mode=timer`: how late a periodic timer fires, in TSC ticks.
fn timer(cmdline: &str) -> u32 {
    let period = arg_u64(cmdline, "period_us", 2000).max(1) * 1000;
    let count = arg_u64(cmdline, "count", 1000).max(1);
    let (ns0, tsc0) = (system_time_ns(), rdtsc());
    if ns0 < 0 {
        return fail!("VCPUOP_get_runstate_info failed: {ns0}");
    }
    let start = ns0 as u64;
    let (mut max, mut sum) = (0u64, 0u64);
    for k in 1..=count {
        let deadline = start + k * period;
        if sleep_until(deadline, Wait::Hlt) < 0 {
            return fail!("VCPUOP_set_singleshot_timer failed");
        }
        let now = system_time_ns();
        if now < 0 {
            return fail!("VCPUOP_get_runstate_info failed: {now}");
        }
        // A wake-up before the deadline (another event) is not late.
        let late = (now as u64).saturating_sub(deadline);
        if late > 10_000_000 && arg_u64(cmdline, "verbose", 0) != 0 {
            println!("late {late} ns at period {k}");
        }
        max = max.max(late);
        sum += late;
    }
    let (ns1, tsc1) = (system_time_ns() as u64, rdtsc());
    let span_ns = ns1.saturating_sub(start).max(1);
    let span_tsc = tsc1.wrapping_sub(tsc0);
    let to_ticks = |ns: u64| (u128::from(ns) * u128::from(span_tsc) / u128::from(span_ns)) as u64;
    println!(
        "timer_late_max_ticks={} avg={} n={count} tsc_per_ms={}",
        to_ticks(max),
        to_ticks(sum / count),
        to_ticks(1_000_000)
    );
    pass()
}

fn main(cmdline: &str) -> u32 {
    if basalt_test_guests::arg(cmdline, "mode") == Some("timer") {
        return timer(cmdline);
    }
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
