//! Host tests: unit tests, a randomized invariant test, and the simulation harness ([`sim`]).

#![allow(clippy::unwrap_used)]

mod sim;

use crate::*;
use sim::{MS, S, US};

fn id(d: u32, v: u32) -> VcpuId {
    VcpuId::new(d, v)
}

fn sched_with(cpus: usize, domains: &[u32]) -> Scheduler {
    let mut s = Scheduler::new(cpus, Params::DEFAULT);
    for &d in domains {
        s.add_domain(d, DomainParams::DEFAULT).unwrap();
    }
    s
}

fn run_of(d: Decision) -> (VcpuId, Nanos) {
    match d {
        Decision::Run { vcpu, slice } => (vcpu, slice),
        Decision::Idle { .. } => panic!("expected Run, got {d:?}"),
    }
}

// ---- parameters, masks, configuration errors ----

#[test]
fn params_defaults_and_clamping() {
    let p = Params::default();
    assert_eq!(p.timeslice, 10 * MS);
    assert_eq!(p.ratelimit, MS);
    assert_eq!(p.cap_period, 10 * MS);
    assert_eq!(p.sanitized(), p);
    let wild = Params {
        timeslice: 0,
        ratelimit: u64::MAX,
        cap_period: u64::MAX,
    }
    .sanitized();
    assert_eq!(wild.timeslice, TIMESLICE_MIN);
    assert_eq!(wild.ratelimit, TIMESLICE_MIN);
    assert_eq!(wild.cap_period, CAP_PERIOD_MAX);
    let s = Scheduler::new(10_000, wild);
    assert_eq!(s.cpus(), MAX_CPUS);
    assert_eq!(s.params(), wild);
}

#[test]
fn cpu_mask_basics() {
    assert_eq!(CpuMask::first(3), CpuMask::from(0b111));
    assert_eq!(CpuMask::first(300), CpuMask::ALL);
    assert_eq!(CpuMask::first(0), CpuMask::EMPTY);
    assert_eq!(CpuMask::first(70).count(), 70);
    assert!(CpuMask::single(200).contains(200));
    assert!(CpuMask::single(256).is_empty());
    assert!(!CpuMask::ALL.contains(256));
    let m = CpuMask::from(0b1011_0001) | CpuMask::single(130);
    assert_eq!(format!("{m:?}"), "CpuMask{0,4-5,7,130}");
    assert_eq!(m.iter().collect::<Vec<_>>(), vec![0, 4, 5, 7, 130]);
    assert_eq!(m.lowest(), Some(0));
    assert_eq!((m & CpuMask::single(5)).lowest(), Some(5));
    assert!(CpuMask::single(5).is_subset(&m));
    let mut k = m;
    k.remove(0);
    k.insert(999);
    assert_eq!(k.lowest(), Some(4));
}

#[test]
fn configuration_errors() {
    let mut s = sched_with(2, &[1]);
    assert_eq!(
        s.add_domain(1, DomainParams::DEFAULT),
        Err(SchedError::DomainExists(1))
    );
    assert_eq!(
        s.add_domain(2, DomainParams { weight: 0, cap: 0 }),
        Err(SchedError::InvalidWeight(0))
    );
    assert_eq!(
        s.add_domain(
            2,
            DomainParams {
                weight: 1,
                cap: MAX_CAP + 1
            }
        ),
        Err(SchedError::InvalidCap(MAX_CAP + 1))
    );
    assert_eq!(
        s.set_domain_params(9, DomainParams::DEFAULT),
        Err(SchedError::NoSuchDomain(9))
    );
    assert_eq!(
        s.add_vcpu(id(9, 0), CpuMask::EMPTY, 0),
        Err(SchedError::NoSuchDomain(9))
    );
    assert_eq!(
        s.add_vcpu(id(1, 0), CpuMask::single(2), 0),
        Err(SchedError::InvalidAffinity(id(1, 0)))
    );
    assert_eq!(s.add_vcpu(id(1, 0), CpuMask::from(0b110), 0), Ok(1));
    assert_eq!(
        s.add_vcpu(id(1, 0), CpuMask::EMPTY, 0),
        Err(SchedError::VcpuExists(id(1, 0)))
    );
    assert_eq!(s.stats(id(1, 0)).unwrap().affinity, CpuMask::single(1));
    assert!(!format!("{}", SchedError::InvalidAffinity(id(1, 0))).is_empty());
    // Unknown things are ignored.
    assert_eq!(s.remove_vcpu(id(5, 5)), None);
    assert_eq!(s.remove_domain(77), CpuMask::EMPTY);
    assert_eq!(s.wake(id(5, 5), 0), None);
    s.block(7, 0);
    assert_eq!(s.schedule(7, 0, false), Decision::Idle { until: None });
    assert_eq!(s.current(7), None);
    assert_eq!(s.queue_len(7), 0);
    s.check_invariants().unwrap();

    // A scheduler without CPUs refuses vCPUs.
    let mut none = sched_with(0, &[1]);
    assert_eq!(
        none.add_vcpu(id(1, 0), CpuMask::EMPTY, 0),
        Err(SchedError::InvalidAffinity(id(1, 0)))
    );
}

// ---- idle, blocking, waking ----

#[test]
fn empty_cpu_is_idle() {
    let mut s = sched_with(2, &[1]);
    assert_eq!(s.schedule(0, 0, false), Decision::Idle { until: None });
    assert_eq!(s.schedule(1, 5, true), Decision::Idle { until: None });
}

#[test]
fn blocked_vcpu_consumes_nothing() {
    let mut s = sched_with(1, &[1, 2]);
    s.add_vcpu(id(1, 0), CpuMask::EMPTY, 0).unwrap();
    s.add_vcpu(id(2, 0), CpuMask::EMPTY, 0).unwrap();
    let (first, _) = run_of(s.schedule(0, 0, false));
    s.block(0, 2 * MS);
    assert_eq!(s.stats(first).unwrap().state, VcpuState::Blocked);
    let blocked_runtime = s.stats(first).unwrap().runtime;
    assert_eq!(blocked_runtime, 2 * MS);
    let mut now = 2 * MS;
    for _ in 0..100 {
        let (v, slice) = run_of(s.schedule(0, now, false));
        assert_ne!(v, first);
        now += slice;
    }
    let st = s.stats(first).unwrap();
    assert_eq!(st.runtime, blocked_runtime);
    assert_eq!(st.state, VcpuState::Blocked);
    // Blocking the last runnable vCPU idles the CPU.
    s.block(0, now);
    assert_eq!(s.schedule(0, now, false), Decision::Idle { until: None });
    s.check_invariants().unwrap();
}

#[test]
fn wake_tickles_an_idle_cpu() {
    let mut s = sched_with(2, &[1]);
    assert_eq!(s.add_vcpu(id(1, 0), CpuMask::EMPTY, 0), Ok(0));
    run_of(s.schedule(0, 0, false));
    s.block(0, MS);
    assert_eq!(s.schedule(0, MS, false), Decision::Idle { until: None });
    assert_eq!(s.wake(id(1, 0), 2 * MS), Some(0));
    assert_eq!(
        s.stats(id(1, 0)).unwrap().state,
        VcpuState::Runnable { cpu: 0 }
    );
    // Waking a vCPU that is not blocked does nothing.
    assert_eq!(s.wake(id(1, 0), 2 * MS), None);
    assert_eq!(run_of(s.schedule(0, 2 * MS, false)).0, id(1, 0));
    assert_eq!(s.wake(id(1, 0), 3 * MS), None);
    s.check_invariants().unwrap();
}

#[test]
fn wake_prefers_an_idle_cpu_of_the_affinity() {
    let mut s = sched_with(3, &[1, 2]);
    s.add_vcpu(id(1, 0), CpuMask::single(0), 0).unwrap();
    run_of(s.schedule(0, 0, false));
    // A vCPU that may run on 0 or 2, whose home is 0 (busy): the idle CPU 2 is tickled.
    s.add_vcpu(id(2, 0), CpuMask::from(0b101), 0).unwrap();
    let (v, _) = run_of(s.schedule(2, 0, false));
    assert_eq!(v, id(2, 0));
    s.block(2, MS);
    assert_eq!(s.schedule(2, MS, false), Decision::Idle { until: None });
    assert_eq!(s.wake(id(2, 0), 2 * MS), Some(2));
}

#[test]
fn woken_vcpu_preempts_after_the_ratelimit() {
    let mut s = sched_with(1, &[1, 2]);
    s.add_vcpu(id(1, 0), CpuMask::EMPTY, 0).unwrap();
    s.add_vcpu(id(2, 0), CpuMask::EMPTY, 0).unwrap();
    let (a, _) = run_of(s.schedule(0, 0, false));
    let b = if a == id(1, 0) { id(2, 0) } else { id(1, 0) };
    // b blocks at once (runs 10 µs), a runs.
    let (x, _) = run_of(s.schedule(0, 20 * MS, false));
    assert_eq!(x, b);
    s.block(0, 20 * MS + 10 * US);
    assert_eq!(run_of(s.schedule(0, 20 * MS + 10 * US, false)).0, a);
    // b wakes 300 µs into a's run: tickle, but a keeps the CPU until its ratelimit is over.
    let t = 20 * MS + 310 * US;
    assert_eq!(s.wake(b, t), Some(0));
    let (v, slice) = run_of(s.schedule(0, t, false));
    assert_eq!(v, a);
    assert_eq!(slice, 700 * US);
    assert_eq!(run_of(s.schedule(0, t + slice, false)).0, b);
    s.check_invariants().unwrap();
}

#[test]
fn yield_gives_way_and_keeps_running_alone() {
    let mut s = sched_with(1, &[1, 2]);
    s.add_vcpu(id(1, 0), CpuMask::EMPTY, 0).unwrap();
    let (a, _) = run_of(s.schedule(0, 0, false));
    // Alone: a yield keeps it running.
    assert_eq!(run_of(s.schedule(0, 100 * US, true)).0, a);
    s.add_vcpu(id(2, 0), CpuMask::EMPTY, 100 * US).unwrap();
    // Within the ratelimit, and with less credit than the newcomer, a still yields.
    assert_eq!(run_of(s.schedule(0, 200 * US, true)).0, id(2, 0));
    assert_eq!(s.stats(a).unwrap().state, VcpuState::Runnable { cpu: 0 });
}

// ---- affinity and stealing ----

#[test]
fn idle_cpu_steals_unpinned_work() {
    let mut s = sched_with(2, &[1, 2, 3]);
    let pinned = id(1, 0);
    assert_eq!(s.add_vcpu(pinned, CpuMask::single(1), 0), Ok(1));
    run_of(s.schedule(1, 0, false));
    assert_eq!(s.add_vcpu(id(2, 0), CpuMask::EMPTY, 0), Ok(0));
    run_of(s.schedule(0, 0, false));
    // Both CPUs busy: the third vCPU waits in a queue.
    let q = s.add_vcpu(id(3, 0), CpuMask::EMPTY, 0).unwrap();
    let other = 1 - q;
    assert_eq!(
        s.stats(id(3, 0)).unwrap().state,
        VcpuState::Runnable { cpu: q }
    );
    // The vCPU running on the other CPU blocks: that CPU steals the waiting one.
    s.block(other, MS);
    let (v, _) = run_of(s.schedule(other, MS, false));
    assert_eq!(v, id(3, 0));
    assert_eq!(
        s.stats(id(3, 0)).unwrap().state,
        VcpuState::Running { cpu: other }
    );
    s.check_invariants().unwrap();
}

#[test]
fn pinned_vcpus_are_never_stolen() {
    let mut s = sched_with(2, &[1, 2]);
    let one = CpuMask::single(1);
    s.add_vcpu(id(1, 0), one, 0).unwrap();
    s.add_vcpu(id(2, 0), one, 0).unwrap();
    let mut now = 0;
    for _ in 0..200 {
        assert_eq!(s.schedule(0, now, false), Decision::Idle { until: None });
        let (v, slice) = run_of(s.schedule(1, now, false));
        assert_eq!(s.stats(v).unwrap().cpu, 1);
        now += slice;
    }
    assert_eq!(s.current(0), None);
    s.check_invariants().unwrap();
}

#[test]
fn load_balancing_pulls_when_queues_differ_by_two() {
    let mut s = sched_with(2, &[1, 2]);
    // CPU 1: three vCPUs pinned to it (one running, two queued), so that the four unpinned
    // vCPUs added next all land on CPU 0.
    for v in 0..3 {
        s.add_vcpu(id(2, v), CpuMask::single(1), 0).unwrap();
    }
    run_of(s.schedule(1, 0, false));
    for v in 0..4 {
        assert_eq!(s.add_vcpu(id(1, v), CpuMask::EMPTY, 0), Ok(0));
    }
    run_of(s.schedule(0, 0, false));
    assert_eq!(s.queue_len(0), 3);
    // Two pinned vCPUs go away: CPU 1's load (1) is now 3 below CPU 0's (4).
    s.remove_vcpu(id(2, 1));
    s.remove_vcpu(id(2, 2));
    assert_eq!(s.queue_len(1), 0);
    // CPU 1's next scheduling point pulls one unpinned vCPU over (and runs it: it has more
    // credit than the pinned one, which has been running for 20 ms).
    let (v, _) = run_of(s.schedule(1, 20 * MS, false));
    assert_eq!(v.domain, 1);
    assert_eq!(s.queue_len(0), 2);
    assert_eq!(s.queue_len(1), 1);
    s.check_invariants().unwrap();
}

// ---- caps ----

#[test]
fn capped_vcpu_alone_reports_the_refill_time() {
    let mut s = Scheduler::new(1, Params::DEFAULT);
    s.add_domain(
        1,
        DomainParams {
            weight: 256,
            cap: 25,
        },
    )
    .unwrap();
    s.add_vcpu(id(1, 0), CpuMask::EMPTY, 0).unwrap();
    let (_, slice) = run_of(s.schedule(0, 0, false));
    assert_eq!(slice, 2_500 * US);
    assert_eq!(
        s.schedule(0, slice, false),
        Decision::Idle {
            until: Some(10 * MS)
        }
    );
    assert_eq!(s.stats(id(1, 0)).unwrap().state, VcpuState::Parked);
    assert_eq!(s.parked_count(), 1);
    let (_, slice) = run_of(s.schedule(0, 10 * MS, false));
    assert_eq!(slice, 2_500 * US);
    // Removing the cap releases a parked vCPU at once.
    assert_eq!(
        s.schedule(0, 12_500 * US, false),
        Decision::Idle {
            until: Some(20 * MS)
        }
    );
    s.set_domain_params(1, DomainParams::DEFAULT).unwrap();
    assert_eq!(s.parked_count(), 0);
    assert_eq!(run_of(s.schedule(0, 13 * MS, false)).1, 10 * MS);
    s.check_invariants().unwrap();
}

#[test]
fn overrun_is_carried_as_debt() {
    let mut s = Scheduler::new(1, Params::DEFAULT);
    s.add_domain(
        1,
        DomainParams {
            weight: 256,
            cap: 10,
        },
    )
    .unwrap();
    s.add_vcpu(id(1, 0), CpuMask::EMPTY, 0).unwrap();
    let (_, slice) = run_of(s.schedule(0, 0, false));
    assert_eq!(slice, MS);
    // The timer fires 1.5 ms late: 1.5 ms of debt. The next period (1 ms budget) cannot run; the
    // one after that has 0.5 ms.
    assert!(matches!(
        s.schedule(0, 2_500 * US, false),
        Decision::Idle { .. }
    ));
    assert!(matches!(
        s.schedule(0, 10 * MS, false),
        Decision::Idle {
            until: Some(t)
        } if t == 20 * MS
    ));
    assert_eq!(run_of(s.schedule(0, 20 * MS, false)).1, 500 * US);
}

// ---- removal ----

#[test]
fn removing_a_running_vcpu_reports_its_cpu() {
    let mut s = sched_with(2, &[1, 2]);
    s.add_vcpu(id(1, 0), CpuMask::single(1), 0).unwrap();
    s.add_vcpu(id(1, 1), CpuMask::single(1), 0).unwrap();
    s.add_vcpu(id(2, 0), CpuMask::single(0), 0).unwrap();
    let (v, _) = run_of(s.schedule(1, 0, false));
    assert_eq!(s.remove_vcpu(v), Some(1));
    assert_eq!(s.current(1), None);
    s.check_invariants().unwrap();
    run_of(s.schedule(0, 0, false));
    let mask = s.remove_domain(2);
    assert_eq!(mask, CpuMask::single(0));
    let mask = s.remove_domain(1);
    assert_eq!(mask, CpuMask::EMPTY);
    assert_eq!(s.vcpu_count(), 0);
    assert_eq!(s.domain_params(1), None);
    assert_eq!(s.schedule(0, MS, false), Decision::Idle { until: None });
    assert_eq!(s.schedule(1, MS, false), Decision::Idle { until: None });
    s.check_invariants().unwrap();
}

#[test]
fn extreme_times_do_not_panic() {
    let mut s = sched_with(2, &[1, 2]);
    s.set_domain_params(2, DomainParams { weight: 1, cap: 1 })
        .unwrap();
    s.add_vcpu(id(1, 0), CpuMask::EMPTY, u64::MAX - 5).unwrap();
    s.add_vcpu(id(2, 0), CpuMask::EMPTY, 0).unwrap();
    for &now in &[u64::MAX, 0, u64::MAX / 2, u64::MAX, 3, u64::MAX - 1] {
        for cpu in 0..2 {
            let _ = s.schedule(cpu, now, false);
            s.check_invariants().unwrap();
        }
        s.block(0, now);
        let _ = s.wake(id(1, 0), now);
        let _ = s.wake(id(2, 0), now);
        s.check_invariants().unwrap();
    }
}

// ---- randomized ----

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn random_run(seed: u64, cpus: usize, steps: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let params = Params {
        timeslice: (1 + rng.below(20)) * MS,
        ratelimit: rng.below(2_000) * US,
        cap_period: (1 + rng.below(20)) * MS,
    };
    let mut s = Scheduler::new(cpus, params);
    let mut now: Nanos = 0;
    let mut runs = 0u64;
    for _ in 0..steps {
        // Mostly forward, sometimes a little backward (clocks of different CPUs).
        if rng.below(50) == 0 {
            now = now.saturating_sub(rng.below(100 * US));
        } else {
            now += rng.below(3 * MS);
        }
        let d = rng.below(6) as u32;
        let v = id(d, rng.below(4) as u32);
        let cpu = rng.below(cpus as u64 + 1) as usize; // sometimes out of range
        match rng.below(100) {
            0..=39 => {
                if let Decision::Run { vcpu, slice } = s.schedule(cpu, now, rng.below(8) == 0) {
                    runs += 1;
                    assert!(slice >= 1);
                    assert_eq!(s.current(cpu), Some(vcpu));
                    let st = s.stats(vcpu).unwrap();
                    assert!(st.affinity.contains(cpu));
                    assert_eq!(st.state, VcpuState::Running { cpu });
                }
            }
            40..=51 => s.block(cpu, now),
            52..=69 => {
                if let Some(c) = s.wake(v, now) {
                    assert!(c < cpus);
                    assert!(s.stats(v).unwrap().affinity.contains(c));
                }
            }
            70..=79 => {
                let aff = match rng.below(4) {
                    0 => CpuMask::EMPTY,
                    1 => CpuMask::single(rng.below(cpus as u64 + 2) as usize),
                    _ => CpuMask::from(rng.next() & 0xff),
                };
                if let Ok(c) = s.add_vcpu(v, aff, now) {
                    assert!(c < cpus);
                    assert!(s.stats(v).unwrap().affinity.contains(c));
                }
            }
            80..=85 => {
                if let Some(c) = s.remove_vcpu(v) {
                    assert!(c < cpus);
                    assert_eq!(s.current(c), None);
                }
            }
            86..=91 => {
                let p = DomainParams {
                    weight: [0, 1, 50, 256, 1000, 65535][rng.below(6) as usize],
                    cap: [0, 0, 5, 30, 100, 250, MAX_CAP + 1][rng.below(7) as usize],
                };
                let _ = s.add_domain(d, p);
            }
            92..=96 => {
                let p = DomainParams {
                    weight: [0, 1, 50, 256, 1000, 65535][rng.below(6) as usize],
                    cap: [0, 0, 5, 30, 100, 250, MAX_CAP + 1][rng.below(7) as usize],
                };
                let _ = s.set_domain_params(d, p);
            }
            97 => {
                let _ = s.remove_domain(d);
            }
            _ => {
                let _ = s.stats(v);
            }
        }
        if let Err(e) = s.check_invariants() {
            panic!("seed {seed}: invariant broken: {e}\n{s:#?}");
        }
        // Each CPU runs at most one vCPU, each vCPU on at most one CPU, within its affinity.
        let mut seen = Vec::new();
        for c in 0..cpus {
            if let Some(v) = s.current(c) {
                assert!(!seen.contains(&v), "{v} current on two CPUs");
                seen.push(v);
                assert!(s.stats(v).unwrap().affinity.contains(c));
            }
        }
    }
    assert!(runs > 0);
}

#[test]
fn randomized_operations_keep_invariants() {
    for seed in 0..24 {
        random_run(seed, 1 + (seed as usize % 5), 8_000);
    }
}

#[test]
fn randomized_many_cpus() {
    random_run(99, 64, 5_000);
    random_run(100, MAX_CPUS, 2_000);
}

#[test]
fn scheduling_many_decisions_is_cheap() {
    // 256 CPUs, 600 vCPUs: a long stretch of scheduling points stays fast (no O(all vCPUs)
    // work per decision beyond the O(CPUs) scan).
    let mut s = Scheduler::new(MAX_CPUS, Params::DEFAULT);
    for d in 0..100 {
        s.add_domain(d, DomainParams::DEFAULT).unwrap();
        for v in 0..6 {
            s.add_vcpu(id(d, v), CpuMask::EMPTY, 0).unwrap();
        }
    }
    let mut now = 0;
    for round in 0..30u64 {
        for cpu in 0..MAX_CPUS {
            let _ = s.schedule(cpu, now + cpu as u64, round % 7 == 0);
        }
        now += 10 * MS;
    }
    s.check_invariants().unwrap();
    let total: Nanos = (0..100)
        .flat_map(|d| (0..6).map(move |v| id(d, v)))
        .map(|v| s.stats(v).unwrap().runtime)
        .sum();
    // All 256 CPUs were busy the whole time.
    assert!(total >= 29 * 10 * MS * MAX_CPUS as u64);
    let _ = S;
}
