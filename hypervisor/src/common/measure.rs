//! `test-measure=WARMUP_MS,WINDOW_MS` (tests only, docs/testing.md): the
//! CPU share each domain got over a window, from the scheduler's run-time
//! accounting, printed as figures the harness checks; then every domain is
//! destroyed so a `test-exit` run ends.

use crate::common::domain::{self, EndReason};
use crate::common::sched;
use crate::{println, time};
use alloc::vec::Vec;
use spin::Mutex;

struct Measure {
    start: u64,
    end: u64,
    base: Option<Vec<(u32, u64)>>,
    done: bool,
}

static MEASURE: Mutex<Option<Measure>> = Mutex::new(None);

/// Starts measuring `warmup_ms` from now, for `window_ms`.
pub fn arm(warmup_ms: u64, window_ms: u64) {
    let start = time::now_ns() + warmup_ms * 1_000_000;
    *MEASURE.lock() = Some(Measure {
        start,
        end: start + window_ms * 1_000_000,
        base: None,
        done: false,
    });
}

/// When CPU 0 must look next (for its timer).
pub fn next_deadline() -> Option<u64> {
    let m = MEASURE.lock();
    let m = m.as_ref()?;
    match (&m.base, m.done) {
        (_, true) => None,
        (None, _) => Some(m.start),
        (Some(_), false) => Some(m.end),
    }
}

fn runtimes() -> Vec<(u32, u64)> {
    domain::all()
        .iter()
        .map(|d| (d.id, sched::domain_runtime(d.id)))
        .collect()
}

/// Takes the snapshots when their time has come; at the end prints the
/// shares and destroys every domain.
pub fn check() {
    let now = time::now_ns();
    let report = {
        let mut guard = MEASURE.lock();
        let Some(m) = guard.as_mut() else {
            return;
        };
        if m.done || now < m.start {
            return;
        }
        if m.base.is_none() {
            m.base = Some(runtimes());
            m.start = now;
            return;
        }
        if now < m.end {
            return;
        }
        m.done = true;
        (m.base.take().unwrap_or_default(), now - m.start)
    };
    let (base, window) = report;
    let cpus = crate::arch::x86_64::percpu::online_count().max(1) as u64;
    println!(
        "measure: CPU time over {} ms on {cpus} CPU(s):",
        window / 1_000_000
    );
    for (id, after) in runtimes() {
        let before = base.iter().find(|(d, _)| *d == id).map_or(0, |(_, r)| *r);
        let used = after.saturating_sub(before);
        // Percent with one decimal, in integers.
        let of_all = used * 1000 / (window * cpus);
        let of_one = used * 1000 / window;
        let name = domain::get(id).map(|d| d.name.clone()).unwrap_or_default();
        let p = sched::domain_params(id);
        println!(
            "measure: d{id} ({name}) weight {} cap {}: {}.{}% of all CPUs, {}.{}% of one CPU",
            p.map_or(0, |p| p.weight),
            p.map_or(0, |p| p.cap),
            of_all / 10,
            of_all % 10,
            of_one / 10,
            of_one % 10
        );
        println!("BASALT-FIGURE: share_d{id}={}.{}", of_all / 10, of_all % 10);
        println!("BASALT-FIGURE: cpu_d{id}={}.{}", of_one / 10, of_one % 10);
    }
    for d in domain::all() {
        sched::end_domain(&d, EndReason::Destroyed);
    }
}
