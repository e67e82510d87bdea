//! Wake-up latency: `count=` times, reads the system time
//! (`VCPUOP_get_runstate_info`), arms the single-shot timer `delay_us=`
//! microseconds ahead and sleeps (`hlt` with interrupts off, or
//! `SCHEDOP_block`); after waking, latency = system time - deadline (a
//! negative one fails: "woke early"). Prints the minimum, average and
//! maximum, and the average and maximum as `BASALT-FIGURE:` lines.
//!
//! Options: `count=50`, `delay_us=1000`, `warmup=0` (sleeps done first and
//! left out of the figures, while the other domains settle), `mode=hlt` or
//! `mode=block`,
//! `forever=1` (after the summary, keep sleeping the same way forever,
//! without printing, so that a test can measure while others run; an early
//! wake-up still fails).

#![no_std]
#![no_main]

use basalt_test_guests::hypercall::{Wait, sleep_until, system_time_ns};
use basalt_test_guests::{arg_u64, fail, pass, println};
use core::fmt;

basalt_test_guests::entry!(main);

/// Why a sleep failed.
enum Failure {
    /// A hypercall returned this negative errno.
    Hypercall(&'static str, i64),
    /// The vCPU ran again this many nanoseconds before its deadline.
    Early(u64),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Hypercall(what, r) => write!(f, "{what} failed: {r}"),
            Failure::Early(ns) => write!(f, "woke early, {ns} ns before the deadline"),
        }
    }
}

/// One sleep: the latency in nanoseconds.
fn sleep_once(delay_ns: u64, wait: Wait) -> Result<u64, Failure> {
    let now = system_time_ns();
    if now < 0 {
        return Err(Failure::Hypercall("VCPUOP_get_runstate_info", now));
    }
    let deadline = now as u64 + delay_ns;
    let r = sleep_until(deadline, wait);
    if r < 0 {
        let what = match wait {
            Wait::Hlt => "VCPUOP_set_singleshot_timer",
            Wait::Block => "VCPUOP_set_singleshot_timer or SCHEDOP_block",
        };
        return Err(Failure::Hypercall(what, r));
    }
    let woke = system_time_ns();
    if woke < 0 {
        return Err(Failure::Hypercall("VCPUOP_get_runstate_info", woke));
    }
    let latency = woke - deadline as i64;
    if latency < 0 {
        return Err(Failure::Early(latency.unsigned_abs()));
    }
    Ok(latency as u64)
}

fn main(cmdline: &str) -> u32 {
    let count = arg_u64(cmdline, "count", 50).max(1);
    let delay_us = arg_u64(cmdline, "delay_us", 1000);
    let forever = arg_u64(cmdline, "forever", 0) != 0;
    let wait = match Wait::from_cmdline(cmdline) {
        Ok(wait) => wait,
        Err(other) => return fail!("mode={other}: must be hlt or block"),
    };
    println!(
        "sleeper: {count} sleeps of {delay_us} us with {}",
        wait.name()
    );

    for round in 1..=arg_u64(cmdline, "warmup", 0) {
        if let Err(failure) = sleep_once(delay_us * 1000, wait) {
            return fail!("warm-up sleep {round}: {failure}");
        }
    }
    let (mut min, mut max, mut sum) = (u64::MAX, 0u64, 0u64);
    for round in 1..=count {
        match sleep_once(delay_us * 1000, wait) {
            Ok(ns) => {
                min = min.min(ns);
                max = max.max(ns);
                sum += ns;
            }
            Err(failure) => return fail!("sleep {round}/{count}: {failure}"),
        }
    }
    let (min_us, avg_us, max_us) = (min / 1000, sum / count / 1000, max / 1000);
    println!("sleeper: {count} wake-ups, latency min {min_us} us avg {avg_us} us max {max_us} us");
    println!("BASALT-FIGURE: wake_latency_avg_us={avg_us}");
    println!("BASALT-FIGURE: wake_latency_max_us={max_us}");
    if !forever {
        return pass();
    }
    println!("sleeper: sleeping on forever");
    loop {
        if let Err(failure) = sleep_once(delay_us * 1000, wait) {
            return fail!("sleeping on: {failure}");
        }
    }
}
