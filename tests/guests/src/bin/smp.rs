//! Several vCPUs in one domain (started with `vcpus=N`). vCPU 0 first
//! checks `vcpu_op`'s answers to wrong requests while it runs alone:
//! `VCPUOP_initialise` of vCPU N (the domain has no such vCPU) fails with
//! `-ENOENT` (Xen) or `-EINVAL`, of vCPU 0 (running) with `-EEXIST`;
//! `VCPUOP_is_up(0)` is 1; and, with N >= 2, `VCPUOP_up(1)` before
//! `VCPUOP_initialise(1)` fails with `-EINVAL` and `VCPUOP_is_up(1)` is 0.
//! It then starts vCPUs 1 to N-1 (`VCPUOP_initialise` in 64-bit mode with
//! its own paging, then `VCPUOP_up`). Every vCPU, 0 included, runs a busy
//! loop of `work=` iterations, prints `smp: vcpu K done` and counts itself
//! done; the others then halt for good with interrupts off. vCPU 0 waits
//! (yielding) until all N are done, checks that `VCPUOP_is_up` says 1 for
//! each started vCPU, and ends the test.
//!
//! Options: `vcpus=2` (N: the same number as the domain's `vcpus=`, 1 to
//! 64), `work=300000`.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::halt;
use basalt_test_guests::hypercall::{EEXIST, EINVAL, ENOENT, sched_yield, vcpu_is_up, vcpu_up};
use basalt_test_guests::smp::{self, MAX_VCPUS};
use basalt_test_guests::{Checks, arg_u64, fail, println};
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

basalt_test_guests::entry!(main);

/// Iterations of each vCPU's busy loop.
static WORK: AtomicU64 = AtomicU64::new(0);
/// vCPUs done with their loop.
static DONE: AtomicU64 = AtomicU64::new(0);

/// vCPU `id`'s share: the busy loop (as `spin`'s), a line, the count.
fn work(id: u32) {
    let mut x = u64::from(id);
    for i in 1..=WORK.load(Ordering::Relaxed) {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    println!("smp: vcpu {id} done");
    DONE.fetch_add(1, Ordering::Release);
}

/// What vCPUs 1 to N-1 run.
fn secondary(id: u32) -> ! {
    work(id);
    loop {
        // Interrupts are off and no timer is armed: blocked for good.
        halt();
    }
}

fn main(cmdline: &str) -> u32 {
    let vcpus = arg_u64(cmdline, "vcpus", 2);
    if vcpus == 0 || vcpus > MAX_VCPUS as u64 {
        return fail!("vcpus={vcpus}: must be 1 to {MAX_VCPUS}");
    }
    let n = vcpus as u32;
    let iterations = arg_u64(cmdline, "work", 300_000);
    WORK.store(iterations, Ordering::Relaxed);
    println!("smp: {n} vCPUs, {iterations} iterations each");
    let mut checks = Checks::new();

    // Wrong requests first, while vCPU 0 runs alone.
    let r = smp::initialise_vcpu(n, secondary);
    checks.check(
        r == ENOENT || r == EINVAL,
        format_args!("VCPUOP_initialise of vCPU {n} (out of range with vcpus={n}) fails with -ENOENT or -EINVAL (got {r})"),
    );
    let r = smp::initialise_vcpu(0, secondary);
    checks.check(
        r == EEXIST,
        format_args!("VCPUOP_initialise of vCPU 0 (running) fails with -EEXIST (got {r})"),
    );
    let r = vcpu_is_up(0);
    checks.check(r == 1, format_args!("VCPUOP_is_up(0) is 1 (got {r})"));
    if n >= 2 {
        let r = vcpu_up(1);
        checks.check(
            r == EINVAL,
            format_args!(
                "VCPUOP_up of vCPU 1 before VCPUOP_initialise fails with -EINVAL (got {r})"
            ),
        );
        let r = vcpu_is_up(1);
        checks.check(
            r == 0,
            format_args!("VCPUOP_is_up(1) before VCPUOP_up is 0 (got {r})"),
        );
    }

    for id in 1..n {
        if let Err((what, r)) = smp::start_vcpu(id, secondary) {
            return fail!("{what} of vCPU {id} failed: {r}");
        }
        println!("smp: started vcpu {id}");
    }
    work(0);
    while DONE.load(Ordering::Acquire) < u64::from(n) {
        sched_yield();
    }
    println!("smp: all {n} vCPUs done");
    for id in 1..n {
        let r = vcpu_is_up(id);
        checks.check(r == 1, format_args!("VCPUOP_is_up({id}) is 1 (got {r})"));
    }
    checks.finish()
}
