//! A discrete-event simulator of CPUs running vCPUs under the [`Scheduler`], and the
//! simulation tests (shares, caps, wake-up latency, affinity).
//!
//! The simulator plays the part of the ring-0 code: each CPU has one timer (the end of the slice
//! the scheduler granted, or of the running vCPU's burst if it blocks earlier, or the `until` of
//! an idle decision); vCPU behaviours decide when they block; sleeping vCPUs have a wake-up timer
//! whose expiry calls [`Scheduler::wake`], and a returned tickle makes the tickled CPU go
//! through [`Scheduler::schedule`] at once. Run time is measured by the simulator itself (from
//! the decisions, not from the scheduler's own accounting) over a window that starts after a
//! warm-up.

#![allow(clippy::unwrap_used)]

use crate::*;

/// What a simulated vCPU does when it runs.
#[derive(Clone, Copy, Debug)]
pub(super) enum Behaviour {
    /// Always runnable.
    CpuBound,
    /// Runs `run` ns (of CPU time), then blocks for `sleep` ns plus a pseudo-random
    /// `0..jitter` ns, forever.
    Sleeper {
        run: Nanos,
        sleep: Nanos,
        jitter: Nanos,
    },
}

#[derive(Debug)]
pub(super) struct SimVcpu {
    pub id: VcpuId,
    pub behaviour: Behaviour,
    /// CPU time still to run before blocking (sleepers).
    burst_left: Nanos,
    /// Pending wake-up timer.
    wake_at: Option<Nanos>,
    /// Time of the last `wake`, until it runs.
    woke: Option<Nanos>,
    /// When it last stopped running (or was added), for the starvation gap.
    stopped_at: Option<Nanos>,
    /// Run time inside the window.
    pub measured: Nanos,
    /// Every CPU it ran on.
    pub ran_on: CpuMask,
    /// Wake-up latencies (wake to run) of wake-ups inside the window.
    pub latencies: Vec<Nanos>,
    /// Longest time runnable-but-not-running (CPU-bound vCPUs), inside the window.
    pub max_gap: Nanos,
}

#[derive(Debug, Default)]
struct SimCpu {
    running: Option<(usize, Nanos)>,
    deadline: Option<Nanos>,
    idle_since: Option<Nanos>,
    idle: Nanos,
}

#[derive(Debug)]
pub(super) struct Sim {
    pub sched: Scheduler,
    pub now: Nanos,
    pub vcpus: Vec<SimVcpu>,
    cpus: Vec<SimCpu>,
    /// Measuring window `[start, end)`; the simulation stops at `end`.
    pub window: (Nanos, Nanos),
    /// Check every invariant after every event (slow, for small runs).
    pub paranoid: bool,
    pub events: u64,
    pub switches: u64,
    pub migrations: u64,
    /// xorshift state for sleep jitter.
    rng: u64,
}

/// Length of the overlap of `[a, b)` with `[w0, w1)`.
fn overlap(a: Nanos, b: Nanos, (w0, w1): (Nanos, Nanos)) -> Nanos {
    b.min(w1).saturating_sub(a.max(w0))
}

pub(super) const MS: Nanos = 1_000_000;
pub(super) const US: Nanos = 1_000;
pub(super) const S: Nanos = 1_000_000_000;

impl Sim {
    pub fn new(cpus: usize, params: Params, warmup: Nanos, window: Nanos) -> Self {
        Sim {
            sched: Scheduler::new(cpus, params),
            now: 0,
            vcpus: Vec::new(),
            cpus: (0..cpus).map(|_| SimCpu::default()).collect(),
            window: (warmup, warmup + window),
            paranoid: false,
            events: 0,
            switches: 0,
            migrations: 0,
            rng: 0x1234_5678_9abc_def1,
        }
    }

    pub fn domain(&mut self, id: u32, weight: u16, cap: u16) {
        self.sched
            .add_domain(id, DomainParams { weight, cap })
            .unwrap();
    }

    pub fn vcpu(&mut self, id: VcpuId, behaviour: Behaviour, affinity: CpuMask) {
        let burst_left = match behaviour {
            Behaviour::CpuBound => 0,
            Behaviour::Sleeper { run, .. } => run,
        };
        self.vcpus.push(SimVcpu {
            id,
            behaviour,
            burst_left,
            wake_at: None,
            woke: None,
            stopped_at: Some(self.now),
            measured: 0,
            ran_on: CpuMask::EMPTY,
            latencies: Vec::new(),
            max_gap: 0,
        });
        let cpu = self.sched.add_vcpu(id, affinity, self.now).unwrap();
        self.resched(cpu);
    }

    fn index(&self, id: VcpuId) -> usize {
        self.vcpus.iter().position(|v| v.id == id).unwrap()
    }

    /// Share of the total CPU time (all CPUs) in the window, in percent.
    pub fn share(&self, id: VcpuId) -> f64 {
        let v = &self.vcpus[self.index(id)];
        let total = (self.window.1 - self.window.0) as f64 * self.cpus.len() as f64;
        100.0 * v.measured as f64 / total
    }

    /// Idle time of all CPUs in the window, in percent of the total.
    pub fn idle_share(&self) -> f64 {
        let total = (self.window.1 - self.window.0) as f64 * self.cpus.len() as f64;
        100.0 * self.cpus.iter().map(|c| c.idle).sum::<Nanos>() as f64 / total
    }

    pub fn vcpu_state(&self, id: VcpuId) -> &SimVcpu {
        &self.vcpus[self.index(id)]
    }

    /// A scheduling point on `cpu` at `self.now`.
    fn resched(&mut self, cpu: usize) {
        let now = self.now;
        let window = self.window;
        if let Some((k, since)) = self.cpus[cpu].running.take() {
            let v = &mut self.vcpus[k];
            v.measured += overlap(since, now, window);
            v.stopped_at = Some(now);
            if let Behaviour::Sleeper { sleep, jitter, .. } = v.behaviour {
                v.burst_left = v.burst_left.saturating_sub(now - since);
                if v.burst_left == 0 {
                    self.sched.block(cpu, now);
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 7;
                    self.rng ^= self.rng << 17;
                    v.wake_at = Some(now + sleep + self.rng % jitter.max(1));
                    v.stopped_at = None;
                }
            }
        } else if let Some(since) = self.cpus[cpu].idle_since.take() {
            self.cpus[cpu].idle += overlap(since, now, window);
        }
        let prev = self.sched.current(cpu);
        let decision = self.sched.schedule(cpu, now, false);
        match decision {
            Decision::Run { vcpu, slice } => {
                assert!(slice >= 1, "empty slice");
                let k = self.index(vcpu);
                assert!(
                    self.cpus
                        .iter()
                        .enumerate()
                        .all(|(c, s)| c == cpu || s.running.is_none_or(|(j, _)| j != k)),
                    "{vcpu} picked on CPU {cpu} while running elsewhere"
                );
                let st = self.sched.stats(vcpu).unwrap();
                assert!(
                    st.affinity.contains(cpu),
                    "{vcpu} on CPU {cpu} outside affinity"
                );
                assert_eq!(st.state, VcpuState::Running { cpu });
                if prev != Some(vcpu) {
                    self.switches += 1;
                }
                let v = &mut self.vcpus[k];
                if !v.ran_on.is_empty() && !v.ran_on.contains(cpu) {
                    self.migrations += 1;
                }
                v.ran_on.insert(cpu);
                if let Some(w) = v.woke.take()
                    && w >= window.0
                    && w < window.1
                {
                    v.latencies.push(now - w);
                }
                if let Some(s) = v.stopped_at.take()
                    && matches!(v.behaviour, Behaviour::CpuBound)
                {
                    v.max_gap = v.max_gap.max(overlap(s, now, window));
                }
                let mut deadline = now + slice;
                if let Behaviour::Sleeper { .. } = v.behaviour {
                    deadline = deadline.min(now + v.burst_left);
                }
                self.cpus[cpu].running = Some((k, now));
                self.cpus[cpu].deadline = Some(deadline);
            }
            Decision::Idle { until } => {
                if let Some(u) = until {
                    assert!(u > now, "idle until the past");
                }
                self.cpus[cpu].idle_since = Some(now);
                self.cpus[cpu].deadline = until;
            }
        }
    }

    /// Runs the simulation to the end of the window.
    pub fn run(&mut self) {
        let end = self.window.1;
        loop {
            let mut next: Option<(Nanos, bool, usize)> = None;
            for (c, s) in self.cpus.iter().enumerate() {
                if let Some(d) = s.deadline
                    && next.is_none_or(|(t, _, _)| d < t)
                {
                    next = Some((d, true, c));
                }
            }
            for (k, v) in self.vcpus.iter().enumerate() {
                if let Some(w) = v.wake_at
                    && next.is_none_or(|(t, _, _)| w < t)
                {
                    next = Some((w, false, k));
                }
            }
            let Some((t, is_cpu, which)) = next else {
                break;
            };
            if t >= end {
                break;
            }
            self.now = self.now.max(t);
            self.events += 1;
            if is_cpu {
                self.cpus[which].deadline = None;
                self.resched(which);
            } else {
                let v = &mut self.vcpus[which];
                v.wake_at = None;
                if let Behaviour::Sleeper { run, .. } = v.behaviour {
                    v.burst_left = run;
                }
                v.woke = Some(self.now);
                let id = v.id;
                if let Some(c) = self.sched.wake(id, self.now) {
                    self.resched(c);
                }
            }
            if self.paranoid {
                self.sched.check_invariants().unwrap();
            }
        }
        // Close the window.
        self.now = end;
        for c in 0..self.cpus.len() {
            if let Some((k, since)) = self.cpus[c].running {
                self.vcpus[k].measured += overlap(since, end, self.window);
            }
            if let Some(since) = self.cpus[c].idle_since {
                self.cpus[c].idle += overlap(since, end, self.window);
            }
        }
        self.sched.check_invariants().unwrap();
    }

    pub fn print_shares(&self, title: &str) {
        println!(
            "{title}: {} CPUs, window {:.1} s, {} events, {} switches, {} migrations",
            self.cpus.len(),
            (self.window.1 - self.window.0) as f64 / S as f64,
            self.events,
            self.switches,
            self.migrations
        );
        for v in &self.vcpus {
            let p = self.sched.domain_params(v.id.domain).unwrap();
            println!(
                "  {:<7} weight {:>5} cap {:>4}  share {:6.2} %  ran on {:?}  max gap {:.1} ms",
                v.id.to_string(),
                p.weight,
                p.cap,
                self.share(v.id),
                v.ran_on,
                v.max_gap as f64 / MS as f64
            );
        }
        println!("  idle {:6.2} %", self.idle_share());
    }
}

fn cpu_bound_sim(cpus: usize, domains: &[(u32, u16, u16, u32)]) -> Sim {
    let mut sim = Sim::new(cpus, Params::DEFAULT, S, 10 * S);
    for &(d, weight, cap, vcpus) in domains {
        sim.domain(d, weight, cap);
        for v in 0..vcpus {
            sim.vcpu(VcpuId::new(d, v), Behaviour::CpuBound, CpuMask::EMPTY);
        }
    }
    sim.run();
    sim
}

fn assert_share(sim: &Sim, id: VcpuId, expected: f64, tolerance: f64) {
    let s = sim.share(id);
    assert!(
        (s - expected).abs() <= tolerance,
        "{id}: share {s:.2} %, expected {expected:.2} ± {tolerance} %"
    );
}

#[test]
fn sim_weights_256_256_512_on_2_cpus() {
    let sim = cpu_bound_sim(2, &[(1, 256, 0, 1), (2, 256, 0, 1), (3, 512, 0, 1)]);
    sim.print_shares("weights 256/256/512, 3 CPU-bound vCPUs, expected 25/25/50 % of total");
    assert_share(&sim, VcpuId::new(1, 0), 25.0, 5.0);
    assert_share(&sim, VcpuId::new(2, 0), 25.0, 5.0);
    assert_share(&sim, VcpuId::new(3, 0), 50.0, 5.0);
    assert!(sim.idle_share() < 0.1);
}

#[test]
fn sim_five_weights_on_2_cpus() {
    let sim = cpu_bound_sim(
        2,
        &[
            (1, 256, 0, 1),
            (2, 256, 0, 1),
            (3, 512, 0, 1),
            (4, 512, 0, 1),
            (5, 1024, 0, 1),
        ],
    );
    sim.print_shares("weights 256/256/512/512/1024 on 2 CPUs, expected 10/10/20/20/40 %");
    for (d, e) in [(1, 10.0), (2, 10.0), (3, 20.0), (4, 20.0), (5, 40.0)] {
        assert_share(&sim, VcpuId::new(d, 0), e, 3.0);
    }
}

#[test]
fn sim_infeasible_weight_gets_one_cpu() {
    // Weight 4096 would entitle the third vCPU to 89 % of 2 CPUs; it can use one CPU at most.
    let sim = cpu_bound_sim(2, &[(1, 256, 0, 1), (2, 256, 0, 1), (3, 4096, 0, 1)]);
    sim.print_shares("weights 256/256/4096 on 2 CPUs, expected 25/25/50 %");
    assert_share(&sim, VcpuId::new(1, 0), 25.0, 3.0);
    assert_share(&sim, VcpuId::new(2, 0), 25.0, 3.0);
    assert_share(&sim, VcpuId::new(3, 0), 50.0, 1.0);
}

#[test]
fn sim_weights_1_2_3_on_1_cpu() {
    let sim = cpu_bound_sim(1, &[(1, 100, 0, 1), (2, 200, 0, 1), (3, 300, 0, 1)]);
    sim.print_shares("weights 100/200/300 on 1 CPU, expected 16.7/33.3/50 %");
    assert_share(&sim, VcpuId::new(1, 0), 100.0 / 6.0, 2.0);
    assert_share(&sim, VcpuId::new(2, 0), 100.0 / 3.0, 2.0);
    assert_share(&sim, VcpuId::new(3, 0), 50.0, 2.0);
}

#[test]
fn sim_cap_20_against_uncapped_on_1_cpu() {
    let sim = cpu_bound_sim(1, &[(1, 256, 20, 1), (2, 256, 0, 1)]);
    sim.print_shares("cap 20 vs uncapped on 1 CPU, expected 20/80 %");
    let capped = sim.share(VcpuId::new(1, 0));
    let other = sim.share(VcpuId::new(2, 0));
    assert!((15.0..=22.0).contains(&capped), "capped got {capped:.2} %");
    assert!(other >= 100.0 - capped - 0.1, "uncapped got {other:.2} %");
    assert!(sim.idle_share() < 0.1, "idle {:.2} %", sim.idle_share());
}

#[test]
fn sim_cap_alone_leaves_the_cpu_idle() {
    let sim = cpu_bound_sim(1, &[(1, 256, 30, 1)]);
    sim.print_shares("cap 30, alone on 1 CPU, expected 30 % busy, 70 % idle");
    assert_share(&sim, VcpuId::new(1, 0), 30.0, 1.0);
    assert!((sim.idle_share() - 70.0).abs() <= 1.0);
}

#[test]
fn sim_cap_spans_the_vcpus_of_a_domain() {
    // Domain 1: 2 vCPUs, cap 50 (half of one CPU = 25 % of 2 CPUs) against 2 uncapped vCPUs.
    let sim = cpu_bound_sim(2, &[(1, 256, 50, 2), (2, 256, 0, 2)]);
    sim.print_shares("cap 50 over 2 vCPUs + 2 uncapped on 2 CPUs, expected 25 % for domain 1");
    let capped = sim.share(VcpuId::new(1, 0)) + sim.share(VcpuId::new(1, 1));
    println!("  domain 1 total {capped:.2} %");
    assert!(
        (22.0..=25.5).contains(&capped),
        "capped domain got {capped:.2} %"
    );
    assert!(sim.idle_share() < 0.1);
}

/// A sleeper (runs 100 µs, sleeps `sleep` + `0..jitter`) with 2 CPU-bound vCPUs on 1 CPU;
/// returns (wake-ups, max latency, mean latency, share of the sleeper).
fn latency_run(title: &str, sleep: Nanos, jitter: Nanos) -> (usize, Nanos, f64, f64) {
    let params = Params::DEFAULT;
    let mut sim = Sim::new(1, params, S, 10 * S);
    for d in 1..=3 {
        sim.domain(d, 256, 0);
    }
    let sleeper = VcpuId::new(1, 0);
    sim.vcpu(
        sleeper,
        Behaviour::Sleeper {
            run: 100 * US,
            sleep,
            jitter,
        },
        CpuMask::EMPTY,
    );
    sim.vcpu(VcpuId::new(2, 0), Behaviour::CpuBound, CpuMask::EMPTY);
    sim.vcpu(VcpuId::new(3, 0), Behaviour::CpuBound, CpuMask::EMPTY);
    sim.run();
    sim.print_shares(title);
    let lat = &sim.vcpu_state(sleeper).latencies;
    let max = lat.iter().copied().max().unwrap();
    let mean = lat.iter().sum::<Nanos>() as f64 / lat.len() as f64;
    let late = lat.iter().filter(|&&l| l > 0).count();
    println!(
        "  sleeper: {} wake-ups, {} not run at once, latency max {:.1} µs, mean {:.1} µs \
         (bound asserted: ratelimit + 1 µs = {:.1} µs)",
        lat.len(),
        late,
        max as f64 / US as f64,
        mean / US as f64,
        (params.ratelimit + US) as f64 / US as f64
    );
    assert!(max <= params.ratelimit + US, "max latency {max} ns");
    // The CPU-bound pair shares the rest evenly.
    let a = sim.share(VcpuId::new(2, 0));
    let b = sim.share(VcpuId::new(3, 0));
    assert!((a - b).abs() < 2.0, "{a:.2} vs {b:.2}");
    (lat.len(), max, mean, sim.share(sleeper))
}

#[test]
fn sim_wakeup_latency_of_a_sleeper() {
    let (wakes, _, _, share) = latency_run(
        "sleeper (100 µs run / 5 ms sleep) + 2 CPU-bound on 1 CPU",
        5 * MS,
        0,
    );
    assert!(wakes > 1900);
    // It gets what it asks for: 100 µs per 5.1 ms, about 1.96 %.
    assert!(share > 1.9, "sleeper share {share:.2} %");
}

#[test]
fn sim_wakeup_latency_with_jitter_hits_the_ratelimit() {
    // Sleeps of 0.2 to 3 ms: wake-ups often land less than a ratelimit after a context switch,
    // so the running vCPU keeps the CPU until its ratelimit is over.
    let (wakes, max, _, _) = latency_run(
        "sleeper (100 µs run / 0.2-3 ms sleep) + 2 CPU-bound on 1 CPU",
        200 * US,
        2_800 * US,
    );
    assert!(wakes > 5000);
    assert!(max > 500 * US, "the ratelimit path was not exercised");
}

#[test]
fn sim_sixteen_vcpus_on_2_cpus() {
    let domains: Vec<(u32, u16, u16, u32)> = (1..=8).map(|d| (d, 256, 0, 2)).collect();
    let sim = cpu_bound_sim(2, &domains);
    sim.print_shares("8 domains x 2 CPU-bound vCPUs on 2 CPUs, expected 6.25 % each");
    let shares: Vec<f64> = sim.vcpus.iter().map(|v| sim.share(v.id)).collect();
    let min = shares.iter().copied().fold(f64::MAX, f64::min);
    let max = shares.iter().copied().fold(f64::MIN, f64::max);
    println!("  min {min:.2} %, max {max:.2} %");
    for v in &sim.vcpus {
        assert_share(&sim, v.id, 6.25, 2.0);
        // Nobody starves: every vCPU runs at least every 16 time slices or so.
        assert!(v.max_gap < 200 * MS, "{} waited {} ns", v.id, v.max_gap);
    }
    assert!(sim.idle_share() < 0.1);
}

#[test]
fn sim_pinned_vcpus_stay_and_unpinned_spread() {
    let mut sim = Sim::new(2, Params::DEFAULT, S, 4 * S);
    sim.paranoid = true;
    for d in 1..=4 {
        sim.domain(d, 256, 0);
    }
    let one = CpuMask::single(1);
    sim.vcpu(VcpuId::new(1, 0), Behaviour::CpuBound, one);
    sim.vcpu(VcpuId::new(2, 0), Behaviour::CpuBound, one);
    sim.vcpu(
        VcpuId::new(3, 0),
        Behaviour::Sleeper {
            run: 2 * MS,
            sleep: 3 * MS,
            jitter: 0,
        },
        CpuMask::EMPTY,
    );
    sim.vcpu(VcpuId::new(4, 0), Behaviour::CpuBound, CpuMask::EMPTY);
    sim.run();
    sim.print_shares("2 vCPUs pinned to CPU 1, a sleeper and a CPU-bound vCPU unpinned");
    for d in 1..=2 {
        assert_eq!(sim.vcpu_state(VcpuId::new(d, 0)).ran_on, one);
    }
    // The pinned pair shares CPU 1; the unpinned ones get CPU 0 (and are not pushed onto CPU 1).
    assert_share(&sim, VcpuId::new(1, 0), 25.0, 3.0);
    assert_share(&sim, VcpuId::new(2, 0), 25.0, 3.0);
    assert!(sim.vcpu_state(VcpuId::new(4, 0)).ran_on.contains(0));
    assert!(sim.idle_share() < 0.1);
}

#[test]
fn sim_mixed_load_keeps_invariants() {
    // Many behaviours on 3 CPUs, invariants checked after every event.
    let mut sim = Sim::new(3, Params::DEFAULT, 200 * MS, 2 * S);
    sim.paranoid = true;
    for d in 1..=5 {
        sim.domain(d, 128 * d as u16, if d == 5 { 60 } else { 0 });
    }
    for d in 1..=5u32 {
        for v in 0..2 {
            let b = if (d + v) % 2 == 0 {
                Behaviour::CpuBound
            } else {
                Behaviour::Sleeper {
                    run: (300 + 200 * u64::from(d)) * US,
                    sleep: u64::from(v + 1) * 2 * MS,
                    jitter: 500 * US,
                }
            };
            let aff = if d == 2 {
                CpuMask::single(v as usize)
            } else {
                CpuMask::EMPTY
            };
            sim.vcpu(VcpuId::new(d, v), b, aff);
        }
    }
    sim.run();
    sim.print_shares("mixed: 10 vCPUs of 5 domains (weights 128..640, domain 5 capped at 60)");
    let capped = sim.share(VcpuId::new(5, 0)) + sim.share(VcpuId::new(5, 1));
    assert!(
        capped <= 60.0 / 3.0 + 0.5,
        "capped domain got {capped:.2} %"
    );
    assert!(sim.idle_share() < 0.1);
}

#[test]
fn sim_shares_do_not_depend_on_placement_order() {
    // The count-based initial placement can put the heavy vCPUs together; credit pulls must
    // still converge to the weighted shares. Every rotation of the insertion order, and its
    // reverse.
    let weights = [256u16, 256, 512, 512, 1024];
    let expected = [10.0, 10.0, 20.0, 20.0, 40.0];
    let mut worst = 0.0f64;
    let mut migrations = 0;
    for rot in 0..5 {
        for rev in [false, true] {
            let mut order: Vec<usize> = (0..5).map(|k| (k + rot) % 5).collect();
            if rev {
                order.reverse();
            }
            let doms: Vec<(u32, u16, u16, u32)> = order
                .iter()
                .map(|&k| (k as u32 + 1, weights[k], 0, 1))
                .collect();
            let sim = cpu_bound_sim(2, &doms);
            migrations = migrations.max(sim.migrations);
            for (k, e) in expected.iter().enumerate() {
                worst = worst.max((sim.share(VcpuId::new(k as u32 + 1, 0)) - e).abs());
            }
        }
    }
    println!(
        "weights 256/256/512/512/1024 on 2 CPUs, 10 insertion orders: worst error {worst:.2} \
         points, at most {migrations} migrations in a run"
    );
    assert!(worst <= 3.0);
}
