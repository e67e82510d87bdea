//! Xen's periodic timer (`VCPUOP_set_periodic_timer`), as an `xen=1` test
//! guest with one vCPU:
//!
//! 1. Periods under 1 ms or of 2^62 ns and more are refused (-EINVAL), a
//!    vCPU the domain does not have too (-ENOENT, as Xen answers); stopping
//!    a timer that does not run succeeds.
//! 2. With a period of `period_ms=` (2), VIRQ_TIMER (bound with
//!    `EVTCHNOP_bind_virq`) becomes pending `ticks=` (10) times while the
//!    vCPU polls, and again `ticks=` times across `SCHEDOP_block` (a halted
//!    vCPU is woken by the tick); neither takes less than `ticks - 1`
//!    periods (each tick is due a period after the one before), nor over a
//!    second (the timer runs).
//! 3. Once stopped, no tick comes for 5 periods.

#![no_std]
#![no_main]

use basalt_test_guests::hypercall::{self, hypercall3, xen};
use basalt_test_guests::{Checks, arg_u64, fail, println};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

basalt_test_guests::entry!(main);

const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
const VIRQ_TIMER: u32 = 0;

/// The page that becomes shared_info (this guest's own RAM).
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; 4096]>);

// SAFETY: Basalt changes the page only with atomic operations; this guest
// reads it only through `pending_word`.
unsafe impl Sync for Page {}

static SHARED_INFO: Page = Page(UnsafeCell::new([0; 4096]));

/// The pending bitmap's word holding `port` (< 64) and its bit.
fn pending_word(port: u32) -> (&'static AtomicU64, u64) {
    // SAFETY: an 8-aligned word inside the page, which lives forever.
    let w = unsafe {
        &*(SHARED_INFO
            .0
            .get()
            .cast::<u8>()
            .add(xen::SHARED_INFO_PENDING)
            .cast::<AtomicU64>())
    };
    (w, 1 << port)
}

fn take_pending(port: u32) -> bool {
    let (w, m) = pending_word(port);
    w.fetch_and(!m, Ordering::SeqCst) & m != 0
}

fn vcpu_op(cmd: u64, vcpu: u64, period: u64) -> i64 {
    let arg = period;
    // SAFETY: an 8-byte structure in this guest's memory, only read.
    unsafe {
        hypercall3(
            hypercall::HYPERVISOR_VCPU_OP,
            cmd,
            vcpu,
            &arg as *const u64 as u64,
        )
    }
}

fn now() -> u64 {
    hypercall::system_time_ns() as u64
}

/// Waits for `n` ticks on `port`, polling or blocking; the time taken (ns),
/// or `None` after a second.
fn ticks(port: u32, n: u64, block: bool) -> Option<u64> {
    let start = now();
    for _ in 0..n {
        while !take_pending(port) {
            if now() - start > 1_000_000_000 {
                return None;
            }
            if block {
                hypercall::sched_block();
            } else {
                xen::poll(&[port]);
            }
        }
    }
    Some(now() - start)
}

fn main(cmdline: &str) -> u32 {
    let period_ms = arg_u64(cmdline, "period_ms", 2);
    let n = arg_u64(cmdline, "ticks", 10);
    let r = xen::place_shared_info(SHARED_INFO.0.get() as u64 >> 12);
    if r != 0 {
        return fail!("add_to_physmap(shared_info) returned {r}");
    }
    let port = match xen::bind_virq(VIRQ_TIMER, 0) {
        Ok(p) if p < 64 => p,
        other => return fail!("bind_virq(VIRQ_TIMER) gave {other:?}"),
    };
    let mut c = Checks::new();
    let short = vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, 999_999);
    let long = vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, 1 << 62);
    let other = vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 1, 10_000_000);
    let stop = vcpu_op(VCPUOP_STOP_PERIODIC_TIMER, 0, 0);
    println!("periodic: refused {short} {long} {other}; stop while off {stop}");
    c.check(
        (short, long, other, stop) == (-22, -22, -2, 0),
        format_args!("periods < 1 ms and >= 2^62 ns: -EINVAL; vCPU 1: -ENOENT; stop: 0"),
    );
    let period = period_ms * 1_000_000;
    let set = vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, period);
    take_pending(port);
    let polled = ticks(port, n, false);
    let blocked = ticks(port, n, true);
    let stop = vcpu_op(VCPUOP_STOP_PERIODIC_TIMER, 0, 0);
    take_pending(port);
    let quiet_from = now();
    let mut late = false;
    while now() - quiet_from < 5 * period {
        late |= take_pending(port);
        hypercall::sched_yield();
    }
    let ms = |t: Option<u64>| t.map(|t| t / 1000);
    println!(
        "periodic: set {set}; {n} ticks of {period_ms} ms: polling {:?} us, blocked {:?} us; stop {stop}, a tick after it {late}",
        ms(polled),
        ms(blocked)
    );
    // n ticks span at least n - 1 periods, wherever the first one falls.
    let in_time = |t: Option<u64>| t.is_some_and(|t| t >= (n - 1) * period);
    c.check(
        set == 0 && in_time(polled) && in_time(blocked),
        format_args!("{n} ticks, each at least a period after the one before, within a second"),
    );
    c.check(stop == 0 && !late, format_args!("no tick after the stop"));
    c.finish()
}
