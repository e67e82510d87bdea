#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! The vCPU scheduling policy of Basalt: a proportional-share scheduler in the class of Xen's
//! credit2.
//!
//! This crate is pure logic: it decides *which* vCPU runs *where* and *for how long*. The
//! mechanism (VMX entry and exit, the per-CPU one-shot timers, the IPIs that "tickle" a remote
//! CPU, locking) lives in the ring-0 code, which calls into a [`Scheduler`] at every scheduling
//! event. Time is whatever monotonic nanosecond clock the caller passes in ([`Nanos`]); nothing
//! here reads a clock, arms a timer or sends an interrupt.
//!
//! # Model
//!
//! The scheduler manages a fixed number of physical CPUs (`0..cpus`, at most [`MAX_CPUS`]), a set
//! of domains ([`DomainParams`]: weight and cap) and their vCPUs ([`VcpuId`]). Every vCPU is in
//! exactly one state ([`VcpuState`]):
//!
//! - **running** on one CPU (that CPU's *current* vCPU; a CPU has at most one);
//! - **runnable**, waiting in exactly one CPU's run queue;
//! - **blocked** (the guest halted or called `SCHEDOP_block`): in no queue, consumes nothing;
//! - **parked**: runnable, but its domain has used up its cap budget for the current period; in
//!   no run queue, it waits for the next budget refill.
//!
//! Each vCPU has an *affinity* ([`CpuMask`], the empty mask meaning "any CPU"). A vCPU is only
//! ever queued on, or run by, a CPU of its affinity, and it has a *home* CPU (the CPU it last ran
//! on or was queued on) that is always in its affinity.
//!
//! # Algorithm
//!
//! **Credits.** Every vCPU has a signed *credit*, in nanoseconds of run time of the heaviest vCPU
//! present. A new vCPU starts with [`CREDIT_INIT`] (10 ms). Running burns credit at the rate
//! `max_weight / weight` per nanosecond, where `max_weight` is the largest weight of any domain
//! that has vCPUs: the heaviest vCPUs burn 1 credit per ns, a vCPU of half that weight burns 2.
//! Blocked, parked and waiting vCPUs burn nothing.
//!
//! **Choice.** At each scheduling point a CPU runs the candidate with the *most* credit. The
//! candidates are its current vCPU (if still runnable), the head of its own run queue (queues are
//! kept sorted by credit, highest first, FIFO among equals) and the best eligible waiting vCPU of
//! the other CPUs' queues. Because credits are global (one reset for the whole machine, see
//! below) they are comparable across queues, so the per-CPU queues together behave like the
//! single shared run queue credit2 uses per socket: the vCPUs with the most credit are the ones
//! running, wherever they are queued. Taking a vCPU from another CPU's queue while this CPU has
//! candidates of its own requires a margin of [`MIGRATE_RESIST`] credit (Xen's
//! `sched_credit2_migrate_resist`, 500 µs by default), so vCPUs do not bounce between CPUs over
//! trifles; a CPU with nothing of its own takes the best eligible waiting vCPU anywhere, ties
//! going to the longest queue (work stealing).
//!
//! **Reset.** When the best candidate a CPU can see has credit `<= 0`, every vCPU of the machine
//! (running, waiting, blocked or parked) receives `m * CREDIT_INIT` more credit, with the
//! smallest `m >= 1` that makes that candidate positive, and is then clipped to
//! [`CREDIT_MAX`] `= CREDIT_INIT + CREDIT_CARRYOVER` (10.5 ms). Between two resets every
//! competing vCPU burns the same amount of credit, so run time is proportional to weight; the
//! clip only costs credit to vCPUs that could not use their share (sleepers, or a vCPU whose
//! weight entitles it to more than one whole CPU), which is what caps their advantage. Resets
//! are applied lazily: a global counter of `CREDIT_INIT` quanta handed out, and each vCPU
//! remembers the counter value its credit was last brought up to date with. Since
//! `c -> min(c + m * CREDIT_INIT, CREDIT_MAX)` is monotonic, the run queues stay sorted without
//! being touched. A reset is O(CPUs): it first brings the credit of the vCPUs running on the other
//! CPUs up to date, so that the clip applies to what they had at the reset.
//!
//! **Sleepers.** A vCPU that blocks keeps its credit and receives every reset while it sleeps, so
//! it wakes with at least as much credit as when it blocked (usually `CREDIT_MAX`): no penalty
//! for sleeping. A vCPU that runs briefly and sleeps a lot (an interactive or I/O-bound guest)
//! therefore has more credit than the CPU-bound vCPUs and preempts them when it wakes.
//!
//! **Wake-up.** [`Scheduler::wake`] queues the vCPU and picks the CPU to *tickle* (the caller
//! sends it an IPI so that it calls [`Scheduler::schedule`]): its home CPU if idle (nothing
//! running, nothing queued, no tickle pending), else another idle CPU of its affinity, else the
//! CPU of its affinity whose running vCPU has the least credit (projected to `now`) if that is
//! less than the waker's. Otherwise the vCPU waits in its home queue (or on the least loaded CPU
//! of its affinity if that one's load, queued plus running, is at least 2 below the home CPU's)
//! and no CPU is tickled.
//!
//! **Time slices and rate limit.** A vCPU picked to run gets a slice of [`Params::timeslice`]
//! (default 10 ms); the CPU calls [`Scheduler::schedule`] again when it expires. But a vCPU that
//! has been running for less than [`Params::ratelimit`] (default 1 ms) is not preempted by a
//! better candidate: it keeps the CPU for the rest of its rate limit (the returned slice says how
//! long). It always loses the CPU when it blocks, yields or runs out of cap budget. So a vCPU that
//! wakes with more credit than the running one runs at most `ratelimit` after its CPU is
//! tickled.
//!
//! **Yield.** `schedule(cpu, now, true)` gives the CPU to the best other candidate (ignoring the
//! rate limit); the yielding vCPU keeps running only if there is nobody else.
//!
//! **Load balancing.** Besides stealing, each scheduling point compares queue loads (queued
//! vCPUs, plus one if a vCPU is running): if another CPU's load is at least 2 more than this
//! CPU's, the best waiting vCPU of the busiest such CPU that may run here is moved into this
//! CPU's queue. One vCPU per scheduling point, so the loads converge without thrashing.
//!
//! **Caps.** A domain with a cap of `c` (percent of one CPU, so 150 means one and a half CPUs)
//! may run `c * cap_period / 100` ns per period of [`Params::cap_period`] (default 10 ms), all
//! its vCPUs together. Periods are aligned on multiples of `cap_period` of the caller's clock, for
//! all domains. A vCPU of a capped domain *grabs* its slice from the domain's budget when it is
//! picked (the slice is cut to what is left, and never crosses a period boundary) and gives back
//! what it did not use at its next scheduling point. A vCPU whose domain has no budget left is
//! parked instead of being queued or run. At each period boundary the budget is refilled (to at
//! most one period's worth; overruns, e.g. a late timer, are carried over as debt so the long-run
//! rate is exact) and parked vCPUs go back to their home queues. While any vCPU is parked, every
//! slice is cut at the next period boundary and an idle CPU reports that boundary as
//! [`Decision::Idle::until`], so the refill is noticed in time; idle time is never wasted on a
//! CPU that has an uncapped vCPU to run. A parked vCPU is also released early when a sibling
//! gives back unused budget (it blocked before the end of its slice); it is then queued on its
//! home CPU without a tickle, so it waits for that CPU's next scheduling point (at the latest the
//! next period boundary, when idle CPUs wake up by themselves).
//!
//! # Parameters and defaults
//!
//! | | Basalt default | Basalt range | Xen for comparison |
//! |---|---|---|---|
//! | [`Params::timeslice`] | 10 ms | [`TIMESLICE_MIN`]..=[`TIMESLICE_MAX`] (100 µs to 1 s) | credit1 `sched_credit_tslice_ms`: 30 ms, 1 to 1000 ms; credit2 has no knob, it runs a vCPU until its credit falls to the next one's, between 500 µs and 10 ms |
//! | [`Params::ratelimit`] | 1 ms | 0 (off) to min([`RATELIMIT_MAX`], timeslice) | `sched_ratelimit_us`: 1000 µs, 100 µs to 500 ms or 0, at most the time slice |
//! | [`Params::cap_period`] | 10 ms | [`CAP_PERIOD_MIN`]..=[`CAP_PERIOD_MAX`] (100 µs to 10 s) | credit2 `credit2_cap_period_ms`: 10 ms |
//! | [`DomainParams::weight`] | 256 | 1..=65535 | 256, 1..=65535 |
//! | [`DomainParams::cap`] | 0 (none) | 0..=[`MAX_CAP`] (25600 = 256 CPUs) | 0 (none), at most 100 × the domain's vCPUs |
//!
//! [`Scheduler::new`] clamps out-of-range parameters into these ranges
//! ([`Params::sanitized`]); domain parameters out of range are refused with a [`SchedError`].
//!
//! # Invariants
//!
//! Checked after every step of the randomized test by `Scheduler::check_invariants`:
//!
//! - each vCPU is in exactly one state; a running vCPU is the current vCPU of exactly one CPU, a
//!   runnable one is in exactly one run queue, a parked one is in the parked list, a blocked one
//!   in no list; each CPU has at most one current vCPU;
//! - a vCPU only runs on, is only queued on, and only has as home, a CPU of its affinity;
//! - run queues are sorted by credit, highest first;
//! - only vCPUs of capped domains are parked;
//! - the per-domain counters (vCPUs, parked vCPUs) and the maximum weight match the vCPUs.
//!
//! # Complexity
//!
//! With `Q` the length of a run queue and `C` the number of CPUs:
//!
//! - [`schedule`](Scheduler::schedule): O(Q + K), K being the number of *other* CPUs whose
//!   queue is not empty (a bit mask of them is kept, so empty queues cost nothing beyond 4 words):
//!   its own queue (sorted insertion of the preempted vCPU), and the first entry of each
//!   non-empty queue that may run here (entries pinned elsewhere are skipped, so a queue full of
//!   vCPUs pinned to its own CPU costs its length). Never a walk over all vCPUs. A credit reset
//!   adds O(C); a cap period boundary with parked vCPUs adds O(parked vCPUs × Q), once per period.
//!   Measured (release build, host, 3 CPU-bound vCPUs per CPU so every queue is non-empty):
//!   about 0.3 µs per decision with 4 CPUs, 0.5 µs with 16, 4 µs with 256.
//! - [`wake`](Scheduler::wake): O(log V + Q) when a CPU of the affinity is idle (found through
//!   bit masks), else O(C) to find the running vCPU with the least credit (V = number of vCPUs).
//! - [`block`](Scheduler::block): O(1), or O(parked vCPUs) when it gives back budget that a
//!   parked sibling waits for.
//! - Configuration ([`add_domain`](Scheduler::add_domain), [`add_vcpu`](Scheduler::add_vcpu),
//!   removals, [`set_domain_params`](Scheduler::set_domain_params)): O(V + D) for the sorted
//!   index insertions and the maximum weight.
//!
//! # Memory and failure
//!
//! Run queues and the parked list are intrusive doubly-linked lists threaded through the vCPU
//! table, so scheduling, waking and blocking never allocate. Only adding a domain or a vCPU grows
//! a vector, with `try_reserve`: exhaustion is reported as [`SchedError::OutOfMemory`]. No input
//! panics: unknown vCPUs and domains, out-of-range CPU indices, clocks that go backwards, huge
//! durations are all handled (ignored, refused, saturated).
//!
//! The scheduler does not lock: the ring-0 code wraps it in its own lock (one global lock is
//! fine for the run-queue lengths this design targets).

extern crate alloc;

mod mask;

#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use core::fmt;

pub use mask::CpuMask;

/// Nanoseconds: an instant of the caller's monotonic clock, or a duration.
pub type Nanos = u64;

/// Maximum number of physical CPUs a [`Scheduler`] manages.
pub const MAX_CPUS: usize = 256;

/// Default domain weight (as in Xen).
pub const DEFAULT_WEIGHT: u16 = 256;

/// Largest accepted cap: 100 % of each of [`MAX_CPUS`] CPUs.
pub const MAX_CAP: u16 = 100 * MAX_CPUS as u16;

/// Credit a new vCPU starts with, and the quantum a credit reset adds (10 ms).
pub const CREDIT_INIT: i64 = 10_000_000;

/// How much credit above [`CREDIT_INIT`] a vCPU may keep across a reset (500 µs).
pub const CREDIT_CARRYOVER: i64 = 500_000;

/// The most credit a vCPU holds after a reset.
pub const CREDIT_MAX: i64 = CREDIT_INIT + CREDIT_CARRYOVER;

/// Credit margin a waiting vCPU of another CPU's queue needs over this CPU's own best candidate
/// to be taken over by this CPU (500 µs).
pub const MIGRATE_RESIST: i64 = 500_000;

/// Lowest credit tracked; deeper debts are forgotten (keeps all arithmetic far from overflow).
const CREDIT_FLOOR: i64 = i64::MIN / 4;

/// Smallest accepted [`Params::timeslice`] (100 µs).
pub const TIMESLICE_MIN: Nanos = 100_000;
/// Largest accepted [`Params::timeslice`] (1 s).
pub const TIMESLICE_MAX: Nanos = 1_000_000_000;
/// Largest accepted [`Params::ratelimit`] (500 ms, as Xen).
pub const RATELIMIT_MAX: Nanos = 500_000_000;
/// Smallest accepted [`Params::cap_period`] (100 µs).
pub const CAP_PERIOD_MIN: Nanos = 100_000;
/// Largest accepted [`Params::cap_period`] (10 s).
pub const CAP_PERIOD_MAX: Nanos = 10_000_000_000;

/// Global scheduler parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Longest a vCPU runs before the next scheduling point on its CPU (default 10 ms; accepted
    /// range [`TIMESLICE_MIN`]..=[`TIMESLICE_MAX`]). Xen's credit1 uses 30 ms by default with a
    /// range of 1 ms to 1 s; credit2 caps a run at 10 ms.
    pub timeslice: Nanos,
    /// Minimum run time before a running vCPU can be preempted by a better candidate, unless it
    /// blocks, yields or exhausts its cap (default 1 ms; 0 disables; at most
    /// min([`RATELIMIT_MAX`], `timeslice`)). Xen: `sched_ratelimit_us`, 1000 µs by default,
    /// 100 µs to 500 ms or 0.
    pub ratelimit: Nanos,
    /// Period of the cap budget refill (default 10 ms, like Xen's `credit2_cap_period_ms`;
    /// accepted range [`CAP_PERIOD_MIN`]..=[`CAP_PERIOD_MAX`]).
    pub cap_period: Nanos,
}

impl Params {
    /// The defaults: 10 ms time slice, 1 ms rate limit, 10 ms cap period.
    pub const DEFAULT: Params = Params {
        timeslice: 10_000_000,
        ratelimit: 1_000_000,
        cap_period: 10_000_000,
    };

    /// These parameters clamped into their accepted ranges (see the field docs); the rate limit
    /// is also clamped to the time slice.
    #[must_use]
    pub fn sanitized(self) -> Params {
        let timeslice = self.timeslice.clamp(TIMESLICE_MIN, TIMESLICE_MAX);
        Params {
            timeslice,
            ratelimit: self.ratelimit.min(RATELIMIT_MAX).min(timeslice),
            cap_period: self.cap_period.clamp(CAP_PERIOD_MIN, CAP_PERIOD_MAX),
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Params::DEFAULT
    }
}

/// Identifies a vCPU: its domain and its index in the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VcpuId {
    /// Domain id.
    pub domain: u32,
    /// vCPU index within the domain.
    pub vcpu: u32,
}

impl VcpuId {
    /// vCPU `vcpu` of domain `domain`.
    #[must_use]
    pub const fn new(domain: u32, vcpu: u32) -> Self {
        VcpuId { domain, vcpu }
    }
}

impl fmt::Display for VcpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}v{}", self.domain, self.vcpu)
    }
}

/// Per-domain scheduling parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainParams {
    /// Relative share, 1..=65535 (default [`DEFAULT_WEIGHT`] = 256). Competing runnable vCPUs
    /// receive CPU time in proportion to their domains' weights. The weight applies to each vCPU
    /// of the domain (as in Xen), so a domain with more busy vCPUs gets more in total.
    pub weight: u16,
    /// Upper bound on the CPU time of all the domain's vCPUs together, in percent of one CPU per
    /// [`Params::cap_period`]; 0 = no cap. 0..=[`MAX_CAP`]; 200 allows two full CPUs' worth.
    pub cap: u16,
}

impl DomainParams {
    /// Weight 256, no cap.
    pub const DEFAULT: DomainParams = DomainParams {
        weight: DEFAULT_WEIGHT,
        cap: 0,
    };
}

impl Default for DomainParams {
    fn default() -> Self {
        DomainParams::DEFAULT
    }
}

/// Why a configuration call was refused (nothing was changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// [`Scheduler::add_domain`]: the domain id is already in use.
    DomainExists(u32),
    /// The domain does not exist.
    NoSuchDomain(u32),
    /// [`Scheduler::add_vcpu`]: the vCPU already exists.
    VcpuExists(VcpuId),
    /// A weight of 0.
    InvalidWeight(u16),
    /// A cap above [`MAX_CAP`].
    InvalidCap(u16),
    /// The affinity names no CPU this scheduler manages.
    InvalidAffinity(VcpuId),
    /// Growing a table failed.
    OutOfMemory,
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedError::DomainExists(d) => write!(f, "domain {d} already exists"),
            SchedError::NoSuchDomain(d) => write!(f, "no domain {d}"),
            SchedError::VcpuExists(v) => write!(f, "vCPU {v} already exists"),
            SchedError::InvalidWeight(w) => write!(f, "invalid weight {w} (1..=65535)"),
            SchedError::InvalidCap(c) => write!(f, "invalid cap {c} (0..={MAX_CAP})"),
            SchedError::InvalidAffinity(v) => {
                write!(f, "affinity of {v} names no managed CPU")
            }
            SchedError::OutOfMemory => f.write_str("out of memory"),
        }
    }
}

impl core::error::Error for SchedError {}

/// What a CPU does next, returned by [`Scheduler::schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run `vcpu` (which may be the vCPU that was already running) and call
    /// [`Scheduler::schedule`] again after at most `slice` ns (from the `now` passed in), or
    /// earlier if the vCPU blocks or yields or the CPU is tickled. `slice >= 1`. Slices can be
    /// short (the end of a rate limit, of a cap budget or of a cap period); the caller may round
    /// tiny ones up to its timer granularity: overruns are charged to the vCPU's credit and
    /// budget.
    Run {
        /// The vCPU to run.
        vcpu: VcpuId,
        /// Longest run before the next scheduling point, in ns.
        slice: Nanos,
    },
    /// Nothing may run here: halt until tickled, or until `until` (an absolute time of the
    /// caller's clock, the next cap period boundary) if some vCPUs are parked by their cap.
    Idle {
        /// When to call [`Scheduler::schedule`] again without being tickled.
        until: Option<Nanos>,
    },
}

/// The state of a vCPU, as reported by [`Scheduler::stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// The current vCPU of `cpu`.
    Running {
        /// The CPU running it.
        cpu: usize,
    },
    /// Waiting in the run queue of `cpu`.
    Runnable {
        /// The CPU whose queue holds it.
        cpu: usize,
    },
    /// Blocked: waits for [`Scheduler::wake`].
    Blocked,
    /// Runnable but out of cap budget: waits for the next period.
    Parked,
}

/// Accounting figures of one vCPU ([`Scheduler::stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuStats {
    /// Total run time accounted so far (up to the last scheduling point of its CPU), in ns.
    pub runtime: Nanos,
    /// Current state.
    pub state: VcpuState,
    /// Home CPU: where it runs, is queued, or last was.
    pub cpu: usize,
    /// Credit (with every reset applied), as of the last scheduling point of its CPU.
    pub credit: i64,
    /// Effective affinity (never empty, only managed CPUs).
    pub affinity: CpuMask,
}

// ---------------------------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Queued,
    Blocked,
    Parked,
}

/// Links of a vCPU in the one list (a run queue or the parked list) it is on.
#[derive(Clone, Copy, Debug, Default)]
struct Links {
    prev: Option<usize>,
    next: Option<usize>,
}

/// An intrusive doubly-linked list of vCPU slots.
#[derive(Clone, Copy, Debug, Default)]
struct List {
    head: Option<usize>,
    tail: Option<usize>,
    len: usize,
}

/// Which list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    Queue(usize),
    Parked,
}

#[derive(Debug)]
struct Vcpu {
    id: VcpuId,
    affinity: CpuMask,
    state: State,
    /// Home CPU: running on, queued on, or last one.
    cpu: usize,
    /// Credit as of `seen` resets.
    credit: i64,
    seen: u64,
    runtime: Nanos,
    /// Cap budget taken from the domain pool for the current run.
    grabbed: Nanos,
    link: Links,
}

#[derive(Debug, Default)]
struct Cpu {
    current: Option<usize>,
    queue: List,
    /// When the current vCPU got this CPU (for the rate limit).
    stint_start: Nanos,
    /// Up to when the current vCPU's credit and run time are accounted.
    last_burn: Nanos,
    /// When the current vCPU grabbed its budget.
    grab_at: Nanos,
}

#[derive(Debug)]
struct Domain {
    id: u32,
    weight: u16,
    cap: u16,
    /// Budget per period in ns (0 = uncapped).
    quota: Nanos,
    /// Budget left in the current period (negative: debt).
    pool: i64,
    /// Index of the period `pool` belongs to.
    period: u64,
    vcpus: usize,
    parked: usize,
}

/// The scheduler: all CPUs, domains and vCPUs. See the [crate documentation](crate).
#[derive(Debug)]
pub struct Scheduler {
    params: Params,
    cpus: Vec<Cpu>,
    slots: Vec<Option<Vcpu>>,
    /// (id, slot), sorted by id.
    index: Vec<(VcpuId, usize)>,
    /// Sorted by id.
    domains: Vec<Domain>,
    /// Number of `CREDIT_INIT` quanta handed out by resets so far.
    resets: u64,
    max_weight: u16,
    parked: List,
    /// Last cap period whose boundary was processed.
    period_done: u64,
    /// CPUs with a current vCPU.
    running: CpuMask,
    /// CPUs with a non-empty run queue.
    queued: CpuMask,
    /// CPUs tickled by `wake`/`add_vcpu` and not yet through `schedule`.
    tickled: CpuMask,
}

/// `credit` brought from `seen` to `resets` resets.
fn effective(credit: i64, seen: u64, resets: u64) -> i64 {
    let k = resets.saturating_sub(seen);
    if k == 0 {
        return credit;
    }
    let v = i128::from(credit) + i128::from(k) * i128::from(CREDIT_INIT);
    v.min(i128::from(CREDIT_MAX)) as i64
}

/// Credit burnt by running `delta` ns at `weight` when the heaviest weight is `max_weight`.
fn burn_amount(delta: Nanos, max_weight: u16, weight: u16) -> i64 {
    let b = u128::from(delta) * u128::from(max_weight.max(1)) / u128::from(weight.max(1));
    i64::try_from(b).unwrap_or(i64::MAX)
}

fn to_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// Refills `d`'s budget for the period containing `now`.
fn refill(d: &mut Domain, now: Nanos, period: Nanos) {
    if d.quota == 0 {
        return;
    }
    let p = now / period.max(1);
    if p > d.period {
        let k = i128::from(p - d.period);
        let q = i128::from(d.quota);
        d.pool = (i128::from(d.pool) + k * q).min(q) as i64;
        d.period = p;
    }
}

/// Candidate chosen by `schedule`.
#[derive(Clone, Copy, Debug)]
enum Pick {
    Current(usize),
    Local(usize),
    Remote(usize, usize),
}

impl Scheduler {
    /// A scheduler for CPUs `0..cpus` (clamped to [`MAX_CPUS`]) with `params` (clamped into their
    /// ranges, see [`Params::sanitized`]). All CPUs start idle.
    #[must_use]
    pub fn new(cpus: usize, params: Params) -> Self {
        let n = cpus.min(MAX_CPUS);
        Scheduler {
            params: params.sanitized(),
            cpus: (0..n).map(|_| Cpu::default()).collect(),
            slots: Vec::new(),
            index: Vec::new(),
            domains: Vec::new(),
            resets: 0,
            max_weight: DEFAULT_WEIGHT,
            parked: List::default(),
            period_done: 0,
            running: CpuMask::EMPTY,
            queued: CpuMask::EMPTY,
            tickled: CpuMask::EMPTY,
        }
    }

    /// The parameters in force (after clamping).
    #[must_use]
    pub fn params(&self) -> Params {
        self.params
    }

    /// Number of CPUs managed.
    #[must_use]
    pub fn cpus(&self) -> usize {
        self.cpus.len()
    }

    /// Number of vCPUs.
    #[must_use]
    pub fn vcpu_count(&self) -> usize {
        self.index.len()
    }

    /// The vCPU running on `cpu`, if any.
    #[must_use]
    pub fn current(&self, cpu: usize) -> Option<VcpuId> {
        let i = self.cpus.get(cpu)?.current?;
        Some(self.vc(i)?.id)
    }

    /// Number of vCPUs waiting in `cpu`'s run queue (0 for an unknown CPU).
    #[must_use]
    pub fn queue_len(&self, cpu: usize) -> usize {
        self.cpus.get(cpu).map_or(0, |c| c.queue.len)
    }

    /// Number of vCPUs parked by their domain's cap.
    #[cfg(test)]
    #[must_use]
    pub fn parked_count(&self) -> usize {
        self.parked.len
    }

    /// The parameters of `domain`, if it exists.
    #[must_use]
    pub fn domain_params(&self, domain: u32) -> Option<DomainParams> {
        self.dom(domain).map(|d| DomainParams {
            weight: d.weight,
            cap: d.cap,
        })
    }

    /// Adds a domain without vCPUs.
    ///
    /// # Errors
    ///
    /// [`SchedError::DomainExists`], [`SchedError::InvalidWeight`] (0),
    /// [`SchedError::InvalidCap`] (above [`MAX_CAP`]), [`SchedError::OutOfMemory`].
    pub fn add_domain(&mut self, domain: u32, p: DomainParams) -> Result<(), SchedError> {
        Self::validate(p)?;
        let pos = match self.dom_pos(domain) {
            Ok(_) => return Err(SchedError::DomainExists(domain)),
            Err(pos) => pos,
        };
        self.domains
            .try_reserve(1)
            .map_err(|_| SchedError::OutOfMemory)?;
        let quota = self.quota(p.cap);
        self.domains.insert(
            pos,
            Domain {
                id: domain,
                weight: p.weight,
                cap: p.cap,
                quota,
                pool: to_i64(quota),
                period: 0,
                vcpus: 0,
                parked: 0,
            },
        );
        Ok(())
    }

    /// Changes the weight and cap of `domain`. A new weight applies to the credit burnt from now
    /// on. A new cap applies from now on, with the budget left in this period cut to the new
    /// quota; removing the cap releases the domain's parked vCPUs to their home queues.
    ///
    /// # Errors
    ///
    /// [`SchedError::NoSuchDomain`], [`SchedError::InvalidWeight`], [`SchedError::InvalidCap`].
    pub fn set_domain_params(&mut self, domain: u32, p: DomainParams) -> Result<(), SchedError> {
        Self::validate(p)?;
        let quota = self.quota(p.cap);
        let d = self
            .dom_mut(domain)
            .ok_or(SchedError::NoSuchDomain(domain))?;
        d.weight = p.weight;
        if d.cap != p.cap {
            d.pool = if d.quota == 0 {
                to_i64(quota)
            } else {
                d.pool.min(to_i64(quota))
            };
            d.cap = p.cap;
            d.quota = quota;
        }
        let release = d.quota == 0 && d.parked > 0;
        if release {
            self.unpark_domain(domain);
        }
        self.recompute_max_weight();
        Ok(())
    }

    /// Removes `domain` and all its vCPUs. Returns the CPUs that were running one of them: they
    /// must be made to call [`schedule`](Scheduler::schedule) (the scheduler already considers
    /// them free). Removing an unknown domain does nothing.
    pub fn remove_domain(&mut self, domain: u32) -> CpuMask {
        let mut running = CpuMask::EMPTY;
        loop {
            let pos = self.index.partition_point(|(id, _)| id.domain < domain);
            let Some(&(id, _)) = self.index.get(pos) else {
                break;
            };
            if id.domain != domain {
                break;
            }
            if let Some(cpu) = self.remove_vcpu(id) {
                running.insert(cpu);
            }
        }
        if let Ok(pos) = self.dom_pos(domain) {
            self.domains.remove(pos);
        }
        self.recompute_max_weight();
        running
    }

    /// Adds vCPU `id` of an existing domain, runnable, with `affinity` (the empty mask means any
    /// CPU; CPUs this scheduler does not manage are ignored). It starts with [`CREDIT_INIT`]
    /// credit and is queued on an idle CPU of its affinity if there is one, else on the least
    /// loaded one; if its domain has no budget left it is parked instead. Returns the CPU it was
    /// placed on: the caller should tickle that CPU (an IPI; a spurious one is harmless) so that
    /// an idle CPU picks it up.
    ///
    /// # Errors
    ///
    /// [`SchedError::NoSuchDomain`], [`SchedError::VcpuExists`],
    /// [`SchedError::InvalidAffinity`] (no managed CPU in `affinity`),
    /// [`SchedError::OutOfMemory`].
    pub fn add_vcpu(
        &mut self,
        id: VcpuId,
        affinity: CpuMask,
        now: Nanos,
    ) -> Result<usize, SchedError> {
        if self.dom(id.domain).is_none() {
            return Err(SchedError::NoSuchDomain(id.domain));
        }
        let pos = match self.index.binary_search_by(|(v, _)| v.cmp(&id)) {
            Ok(_) => return Err(SchedError::VcpuExists(id)),
            Err(pos) => pos,
        };
        let managed = CpuMask::first(self.cpus.len());
        let affinity = if affinity.is_empty() {
            managed
        } else {
            affinity & managed
        };
        let Some(home) = affinity.lowest() else {
            return Err(SchedError::InvalidAffinity(id));
        };
        let free = self.slots.iter().position(Option::is_none);
        if free.is_none() {
            self.slots
                .try_reserve(1)
                .map_err(|_| SchedError::OutOfMemory)?;
        }
        self.index
            .try_reserve(1)
            .map_err(|_| SchedError::OutOfMemory)?;
        let v = Vcpu {
            id,
            affinity,
            state: State::Blocked,
            cpu: home,
            credit: CREDIT_INIT,
            seen: self.resets,
            runtime: 0,
            grabbed: 0,
            link: Links::default(),
        };
        let i = match free {
            Some(i) => {
                if let Some(s) = self.slots.get_mut(i) {
                    *s = Some(v);
                }
                i
            }
            None => {
                self.slots.push(Some(v));
                self.slots.len() - 1
            }
        };
        self.index.insert(pos, (id, i));
        if let Some(d) = self.dom_mut(id.domain) {
            d.vcpus += 1;
        }
        self.recompute_max_weight();
        Ok(self.make_runnable(i, now).0)
    }

    /// Removes vCPU `id` (whatever its state). Returns the CPU that was running it, if it was
    /// running: that CPU must be made to call [`schedule`](Scheduler::schedule) (the scheduler
    /// already considers it free). Unknown vCPUs are ignored.
    pub fn remove_vcpu(&mut self, id: VcpuId) -> Option<usize> {
        let pos = self.index.binary_search_by(|(v, _)| v.cmp(&id)).ok()?;
        let (_, i) = *self.index.get(pos)?;
        let (state, cpu) = self.vc(i).map(|v| (v.state, v.cpu))?;
        let mut was_running = None;
        match state {
            State::Running => {
                if self.cpus.get(cpu).is_some_and(|c| c.current == Some(i)) {
                    self.clear_current(cpu);
                    was_running = Some(cpu);
                }
            }
            State::Queued => self.unlink(Where::Queue(cpu), i),
            State::Parked => {
                self.unlink(Where::Parked, i);
                if let Some(d) = self.dom_mut(id.domain) {
                    d.parked = d.parked.saturating_sub(1);
                }
            }
            State::Blocked => {}
        }
        if let Some(s) = self.slots.get_mut(i) {
            *s = None;
        }
        self.index.remove(pos);
        if let Some(d) = self.dom_mut(id.domain) {
            d.vcpus = d.vcpus.saturating_sub(1);
        }
        self.recompute_max_weight();
        was_running
    }

    /// The vCPU running on `cpu` blocked (HLT, `SCHEDOP_block`) at `now`: its run time since the
    /// last scheduling point is accounted, it leaves the CPU and waits for
    /// [`wake`](Scheduler::wake). The caller then calls [`schedule`](Scheduler::schedule) for
    /// `cpu`. Does nothing if `cpu` runs nothing or is unknown.
    pub fn block(&mut self, cpu: usize, now: Nanos) {
        let Some(i) = self.cpus.get(cpu).and_then(|c| c.current) else {
            return;
        };
        self.burn(cpu, now);
        self.settle(cpu, now);
        self.clear_current(cpu);
        if let Some(v) = self.vc_mut(i) {
            v.state = State::Blocked;
        }
    }

    /// Blocked vCPU `id` became runnable at `now` (timer, event channel, IPI): it is queued (or
    /// parked if its domain is out of budget). Returns the CPU to tickle, if one should run
    /// [`schedule`](Scheduler::schedule) now: an idle CPU, or one whose running vCPU has less
    /// credit than `id`. Does nothing (returns `None`) if `id` is unknown or not blocked.
    pub fn wake(&mut self, id: VcpuId, now: Nanos) -> Option<usize> {
        let i = self.lookup(id)?;
        if self.vc(i)?.state != State::Blocked {
            return None;
        }
        let (cpu, tickle) = self.make_runnable(i, now);
        tickle.then_some(cpu)
    }

    /// Scheduling point of `cpu` at `now`: the end of a slice, a yield (`yielded`: the current
    /// vCPU asked to give way), after [`block`](Scheduler::block), or a tickle. Accounts the time
    /// the current vCPU ran since the last scheduling point, processes a cap period boundary,
    /// balances load, and chooses what runs next (see the [crate documentation](crate)). An
    /// unknown `cpu` gets `Idle { until: None }`.
    pub fn schedule(&mut self, cpu: usize, now: Nanos, yielded: bool) -> Decision {
        let Some(c) = self.cpus.get(cpu) else {
            return Decision::Idle { until: None };
        };
        let mut cur = c.current;
        let stint_start = c.stint_start;
        self.tickled.remove(cpu);
        if cur.is_some() {
            self.burn(cpu, now);
            self.settle(cpu, now);
        }
        self.process_boundary(now);
        if let Some(i) = cur
            && !self.has_budget(i, now)
        {
            self.clear_current(cpu);
            self.park(i);
            cur = None;
        }

        self.balance(cpu, now, cur.is_some());
        let local = self.first_eligible(cpu, cpu, now);
        let remote = self.remote_candidate(cpu, now);
        let cur_credit = cur.map(|i| self.credit_of(i));
        let local_credit = local.map(|i| self.credit_of(i));
        let remote_credit = remote.map(|(i, _)| self.credit_of(i));

        // Rate limit: a vCPU that has not run `ratelimit` yet keeps the CPU for the rest of it.
        if let (Some(i), Some(cc), false) = (cur, cur_credit, yielded) {
            let ran = now.saturating_sub(stint_start);
            if ran < self.params.ratelimit {
                let beaten = local_credit.is_some_and(|l| l > cc)
                    || remote_credit.is_some_and(|r| r.saturating_sub(MIGRATE_RESIST) > cc);
                if beaten {
                    let slice = self.install(cpu, i, now, false, self.params.ratelimit - ran);
                    return self.run(i, slice);
                }
            }
        }

        let mut best: Option<(Pick, i64)> = None;
        if let (Some(i), Some(cc), false) = (cur, cur_credit, yielded) {
            best = Some((Pick::Current(i), cc));
        }
        if let (Some(l), Some(lc)) = (local, local_credit)
            && best.is_none_or(|(_, k)| lc > k)
        {
            best = Some((Pick::Local(l), lc));
        }
        if let (Some((r, from)), Some(rc)) = (remote, remote_credit) {
            let resist = if cur.is_some() || local.is_some() {
                MIGRATE_RESIST
            } else {
                0
            };
            let key = rc.saturating_sub(resist);
            if best.is_none_or(|(_, k)| key > k) {
                best = Some((Pick::Remote(r, from), key));
            }
        }
        if best.is_none()
            && let (Some(i), Some(cc)) = (cur, cur_credit)
        {
            best = Some((Pick::Current(i), cc));
        }
        let Some((pick, _)) = best else {
            return Decision::Idle {
                until: self.idle_until(now),
            };
        };
        let top = [cur_credit, local_credit, remote_credit]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);

        let chosen = match pick {
            Pick::Current(i) => i,
            Pick::Local(l) => {
                self.unlink(Where::Queue(cpu), l);
                l
            }
            Pick::Remote(r, from) => {
                self.unlink(Where::Queue(from), r);
                r
            }
        };
        let switched = Some(chosen) != cur;
        if switched && let Some(i) = cur {
            self.clear_current(cpu);
            self.enqueue(cpu, i);
        }
        if top <= 0 {
            self.reset_credits(cpu, top, now);
        }
        let slice = self.install(cpu, chosen, now, switched, self.params.timeslice);
        self.run(chosen, slice)
    }

    /// Accounting figures of vCPU `id`, if it exists.
    #[must_use]
    pub fn stats(&self, id: VcpuId) -> Option<VcpuStats> {
        let v = self.vc(self.lookup(id)?)?;
        let state = match v.state {
            State::Running => VcpuState::Running { cpu: v.cpu },
            State::Queued => VcpuState::Runnable { cpu: v.cpu },
            State::Blocked => VcpuState::Blocked,
            State::Parked => VcpuState::Parked,
        };
        Some(VcpuStats {
            runtime: v.runtime,
            state,
            cpu: v.cpu,
            credit: effective(v.credit, v.seen, self.resets),
            affinity: v.affinity,
        })
    }

    /// Checks every invariant listed in the [crate documentation](crate); returns a description
    /// of the first one broken. O(V + D + C), allocates a scratch vector: meant for tests and
    /// debugging, not for the scheduling path.
    ///
    /// # Errors
    ///
    /// A static description of the broken invariant.
    #[cfg(test)]
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let n = self.cpus.len();
        let managed = CpuMask::first(n);
        // Index.
        if !self.index.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err("index not sorted");
        }
        if self.slots.iter().flatten().count() != self.index.len() {
            return Err("index and vCPU table disagree in size");
        }
        for &(id, i) in &self.index {
            if self.vc(i).is_none_or(|v| v.id != id) {
                return Err("index entry points to the wrong slot");
            }
        }
        // List memberships.
        let mut member = alloc::vec![0u8; self.slots.len()];
        let mut lists: Vec<Where> = (0..n).map(Where::Queue).collect();
        lists.push(Where::Parked);
        for w in lists {
            let l = self.list(w);
            let mut at = l.head;
            let mut prev = None;
            let mut len = 0;
            let mut last_credit = i64::MAX;
            while let Some(i) = at {
                let Some(v) = self.vc(i) else {
                    return Err("list links to an empty slot");
                };
                if len > self.slots.len() {
                    return Err("list has a cycle");
                }
                if v.link.prev != prev {
                    return Err("list prev link broken");
                }
                if let Some(m) = member.get_mut(i) {
                    *m = m.saturating_add(1);
                }
                match w {
                    Where::Queue(c) => {
                        if v.state != State::Queued || v.cpu != c {
                            return Err("queued vCPU not in state Queued on that CPU");
                        }
                        let credit = effective(v.credit, v.seen, self.resets);
                        if credit > last_credit {
                            return Err("run queue not sorted by credit");
                        }
                        last_credit = credit;
                    }
                    Where::Parked => {
                        if v.state != State::Parked {
                            return Err("parked list holds a vCPU not Parked");
                        }
                        if self.dom(v.id.domain).is_none_or(|d| d.quota == 0) {
                            return Err("parked vCPU of an uncapped domain");
                        }
                    }
                }
                prev = Some(i);
                at = v.link.next;
                len += 1;
            }
            if l.tail != prev || l.len != len {
                return Err("list tail or length wrong");
            }
        }
        // CPU masks.
        for (c, cpu) in self.cpus.iter().enumerate() {
            if self.running.contains(c) != cpu.current.is_some()
                || self.queued.contains(c) != (cpu.queue.len > 0)
            {
                return Err("running or queued CPU mask stale");
            }
        }
        if !(self.running | self.queued | self.tickled).is_subset(&managed) {
            return Err("CPU mask names unmanaged CPUs");
        }
        // Current vCPUs.
        for (c, cpu) in self.cpus.iter().enumerate() {
            if let Some(i) = cpu.current {
                let Some(v) = self.vc(i) else {
                    return Err("current vCPU slot empty");
                };
                if v.state != State::Running || v.cpu != c {
                    return Err("current vCPU not Running on its CPU");
                }
                if let Some(m) = member.get_mut(i) {
                    *m = m.saturating_add(1);
                }
            }
        }
        // Every vCPU in exactly one place.
        let mut dom_vcpus: Vec<(u32, usize, usize)> = Vec::new();
        for (i, v) in self.slots.iter().enumerate() {
            let Some(v) = v else { continue };
            let m = member.get(i).copied().unwrap_or(0);
            let expected = u8::from(v.state != State::Blocked);
            if m != expected {
                return Err("vCPU not in exactly one state");
            }
            if v.affinity.is_empty() || !v.affinity.is_subset(&managed) {
                return Err("affinity empty or names unmanaged CPUs");
            }
            if !v.affinity.contains(v.cpu) {
                return Err("vCPU home CPU outside its affinity");
            }
            if v.state == State::Blocked && (v.link.prev.is_some() || v.link.next.is_some()) {
                return Err("blocked vCPU still linked");
            }
            let parked = usize::from(v.state == State::Parked);
            match dom_vcpus.iter_mut().find(|e| e.0 == v.id.domain) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += parked;
                }
                None => dom_vcpus.push((v.id.domain, 1, parked)),
            }
        }
        // Domains.
        if !self.domains.windows(2).all(|w| w[0].id < w[1].id) {
            return Err("domains not sorted");
        }
        for (dom, vcpus, parked) in &dom_vcpus {
            match self.dom(*dom) {
                None => return Err("vCPU of a missing domain"),
                Some(d) if d.vcpus != *vcpus || d.parked != *parked => {
                    return Err("domain vCPU or parked count wrong");
                }
                Some(_) => {}
            }
        }
        let counted: usize = dom_vcpus.iter().map(|e| e.1).sum();
        if self.domains.iter().map(|d| d.vcpus).sum::<usize>() != counted {
            return Err("domain vCPU counts wrong");
        }
        if self.max_weight != self.compute_max_weight() {
            return Err("max weight stale");
        }
        Ok(())
    }

    // ---- helpers: lookup ----

    fn validate(p: DomainParams) -> Result<(), SchedError> {
        if p.weight == 0 {
            return Err(SchedError::InvalidWeight(p.weight));
        }
        if p.cap > MAX_CAP {
            return Err(SchedError::InvalidCap(p.cap));
        }
        Ok(())
    }

    fn quota(&self, cap: u16) -> Nanos {
        u64::from(cap).saturating_mul(self.params.cap_period) / 100
    }

    fn vc(&self, i: usize) -> Option<&Vcpu> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    fn vc_mut(&mut self, i: usize) -> Option<&mut Vcpu> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    fn lookup(&self, id: VcpuId) -> Option<usize> {
        let pos = self.index.binary_search_by(|(v, _)| v.cmp(&id)).ok()?;
        self.index.get(pos).map(|e| e.1)
    }

    fn dom_pos(&self, id: u32) -> Result<usize, usize> {
        self.domains.binary_search_by(|d| d.id.cmp(&id))
    }

    fn dom(&self, id: u32) -> Option<&Domain> {
        self.domains.get(self.dom_pos(id).ok()?)
    }

    fn dom_mut(&mut self, id: u32) -> Option<&mut Domain> {
        let pos = self.dom_pos(id).ok()?;
        self.domains.get_mut(pos)
    }

    fn weight_of(&self, i: usize) -> u16 {
        self.vc(i)
            .and_then(|v| self.dom(v.id.domain))
            .map_or(DEFAULT_WEIGHT, |d| d.weight)
    }

    fn compute_max_weight(&self) -> u16 {
        self.domains
            .iter()
            .filter(|d| d.vcpus > 0)
            .map(|d| d.weight)
            .max()
            .unwrap_or(DEFAULT_WEIGHT)
    }

    fn recompute_max_weight(&mut self) {
        self.max_weight = self.compute_max_weight();
    }

    fn credit_of(&self, i: usize) -> i64 {
        self.vc(i)
            .map_or(CREDIT_FLOOR, |v| effective(v.credit, v.seen, self.resets))
    }

    fn run(&self, i: usize, slice: Nanos) -> Decision {
        match self.vc(i) {
            Some(v) => Decision::Run { vcpu: v.id, slice },
            None => Decision::Idle { until: None },
        }
    }

    fn next_boundary(&self, now: Nanos) -> Nanos {
        let p = self.params.cap_period.max(1);
        (now / p).saturating_add(1).saturating_mul(p)
    }

    fn idle_until(&self, now: Nanos) -> Option<Nanos> {
        (self.parked.len > 0).then(|| self.next_boundary(now))
    }

    /// CPUs with nothing running, nothing queued, and no tickle pending.
    fn idle_cpus(&self) -> CpuMask {
        CpuMask::first(self.cpus.len())
            .and_not(self.running)
            .and_not(self.queued)
            .and_not(self.tickled)
    }

    fn clear_current(&mut self, cpu: usize) {
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.current = None;
        }
        self.running.remove(cpu);
    }

    /// Keeps `queued` in step with the length of `w` after a list operation.
    fn note_queue(&mut self, w: Where) {
        if let Where::Queue(c) = w {
            if self.list(w).len > 0 {
                self.queued.insert(c);
            } else {
                self.queued.remove(c);
            }
        }
    }

    // ---- helpers: lists ----

    fn list(&self, w: Where) -> List {
        match w {
            Where::Queue(c) => self.cpus.get(c).map(|c| c.queue).unwrap_or_default(),
            Where::Parked => self.parked,
        }
    }

    fn list_mut(&mut self, w: Where) -> Option<&mut List> {
        match w {
            Where::Queue(c) => self.cpus.get_mut(c).map(|c| &mut c.queue),
            Where::Parked => Some(&mut self.parked),
        }
    }

    fn next_of(&self, i: usize) -> Option<usize> {
        self.vc(i).and_then(|v| v.link.next)
    }

    fn unlink(&mut self, w: Where, i: usize) {
        let Some(v) = self.vc_mut(i) else { return };
        let Links { prev, next } = core::mem::take(&mut v.link);
        match prev {
            Some(p) => {
                if let Some(pv) = self.vc_mut(p) {
                    pv.link.next = next;
                }
            }
            None => {
                if let Some(l) = self.list_mut(w) {
                    l.head = next;
                }
            }
        }
        match next {
            Some(n) => {
                if let Some(nv) = self.vc_mut(n) {
                    nv.link.prev = prev;
                }
            }
            None => {
                if let Some(l) = self.list_mut(w) {
                    l.tail = prev;
                }
            }
        }
        if let Some(l) = self.list_mut(w) {
            l.len = l.len.saturating_sub(1);
        }
        self.note_queue(w);
    }

    /// Links `i` into `w` before `before` (at the tail if `None`).
    fn link_before(&mut self, w: Where, i: usize, before: Option<usize>) {
        let prev = match before {
            Some(b) => self.vc(b).and_then(|v| v.link.prev),
            None => self.list(w).tail,
        };
        let Some(v) = self.vc_mut(i) else { return };
        v.link = Links { prev, next: before };
        match prev {
            Some(p) => {
                if let Some(pv) = self.vc_mut(p) {
                    pv.link.next = Some(i);
                }
            }
            None => {
                if let Some(l) = self.list_mut(w) {
                    l.head = Some(i);
                }
            }
        }
        match before {
            Some(b) => {
                if let Some(bv) = self.vc_mut(b) {
                    bv.link.prev = Some(i);
                }
            }
            None => {
                if let Some(l) = self.list_mut(w) {
                    l.tail = Some(i);
                }
            }
        }
        if let Some(l) = self.list_mut(w) {
            l.len += 1;
        }
        self.note_queue(w);
    }

    /// Queues `i` (not on any list) on `cpu`, after every vCPU with at least as much credit.
    fn enqueue(&mut self, cpu: usize, i: usize) {
        let credit = self.credit_of(i);
        let mut at = self.list(Where::Queue(cpu)).head;
        let mut steps = 0;
        while let Some(j) = at {
            if self.credit_of(j) < credit || steps > self.slots.len() {
                break;
            }
            steps += 1;
            at = self.next_of(j);
        }
        self.link_before(Where::Queue(cpu), i, at);
        if let Some(v) = self.vc_mut(i) {
            v.state = State::Queued;
            v.cpu = cpu;
        }
    }

    /// Parks `i` (not on any list).
    fn park(&mut self, i: usize) {
        self.link_before(Where::Parked, i, None);
        let Some(v) = self.vc_mut(i) else { return };
        v.state = State::Parked;
        let dom = v.id.domain;
        if let Some(d) = self.dom_mut(dom) {
            d.parked += 1;
        }
    }

    /// Moves parked `i` to its home queue.
    fn unpark(&mut self, i: usize) {
        self.unlink(Where::Parked, i);
        let Some((dom, home)) = self.vc(i).map(|v| (v.id.domain, v.cpu)) else {
            return;
        };
        if let Some(d) = self.dom_mut(dom) {
            d.parked = d.parked.saturating_sub(1);
        }
        self.enqueue(home, i);
    }

    /// Unparks every parked vCPU of `dom`.
    fn unpark_domain(&mut self, dom: u32) {
        let mut at = self.parked.head;
        let mut steps = 0;
        while let Some(j) = at {
            if steps > self.slots.len() {
                break;
            }
            steps += 1;
            at = self.next_of(j);
            if self.vc(j).is_some_and(|v| v.id.domain == dom) {
                self.unpark(j);
            }
        }
    }

    // ---- helpers: accounting ----

    /// Whether `i`'s domain may run now (refilling its budget if a period began).
    fn has_budget(&mut self, i: usize, now: Nanos) -> bool {
        let Some(dom) = self.vc(i).map(|v| v.id.domain) else {
            return false;
        };
        let period = self.params.cap_period;
        match self.dom_mut(dom) {
            Some(d) => {
                refill(d, now, period);
                d.quota == 0 || d.pool > 0
            }
            None => false,
        }
    }

    /// Burns the credit of `cpu`'s current vCPU for the time since its last accounting.
    fn burn(&mut self, cpu: usize, now: Nanos) {
        let Some(c) = self.cpus.get_mut(cpu) else {
            return;
        };
        let Some(i) = c.current else { return };
        let delta = now.saturating_sub(c.last_burn);
        c.last_burn = c.last_burn.max(now);
        let amount = burn_amount(delta, self.max_weight, self.weight_of(i));
        let resets = self.resets;
        if let Some(v) = self.vc_mut(i) {
            v.credit = effective(v.credit, v.seen, resets)
                .saturating_sub(amount)
                .max(CREDIT_FLOOR);
            v.seen = resets;
            v.runtime = v.runtime.saturating_add(delta);
        }
    }

    /// Settles the cap budget of `cpu`'s current vCPU: gives back what it grabbed and did not
    /// use (or charges an overrun), and releases parked siblings if budget is left.
    fn settle(&mut self, cpu: usize, now: Nanos) {
        let Some(c) = self.cpus.get_mut(cpu) else {
            return;
        };
        let Some(i) = c.current else { return };
        let used = now.saturating_sub(c.grab_at);
        c.grab_at = c.grab_at.max(now);
        let Some(v) = self.vc_mut(i) else { return };
        let grabbed = core::mem::take(&mut v.grabbed);
        let dom = v.id.domain;
        let Some(d) = self.dom_mut(dom) else { return };
        if d.quota == 0 {
            return;
        }
        d.pool = d
            .pool
            .saturating_add(to_i64(grabbed))
            .saturating_sub(to_i64(used))
            .max(CREDIT_FLOOR);
        if d.pool > 0 && d.parked > 0 {
            self.unpark_domain(dom);
        }
    }

    /// Processes the cap period boundary if `now` is in a new period: refilled domains get their
    /// parked vCPUs back.
    fn process_boundary(&mut self, now: Nanos) {
        let p = now / self.params.cap_period.max(1);
        if p <= self.period_done {
            return;
        }
        self.period_done = p;
        let mut at = self.parked.head;
        let mut steps = 0;
        while let Some(j) = at {
            if steps > self.slots.len() {
                break;
            }
            steps += 1;
            at = self.next_of(j);
            if self.has_budget(j, now) {
                self.unpark(j);
            }
        }
    }

    /// Hands `m * CREDIT_INIT` to everybody, with the smallest `m` making `best` positive.
    fn reset_credits(&mut self, cpu: usize, best: i64, now: Nanos) {
        for other in 0..self.cpus.len() {
            if other != cpu {
                self.burn(other, now);
            }
        }
        let m = (best.max(CREDIT_FLOOR).unsigned_abs() / CREDIT_INIT.unsigned_abs()) + 1;
        self.resets = self.resets.saturating_add(m);
        if self.resets > 1 << 62 {
            // Rebase (never happens in practice): bring everybody up to date.
            let resets = self.resets;
            for v in self.slots.iter_mut().flatten() {
                v.credit = effective(v.credit, v.seen, resets);
                v.seen = 0;
            }
            self.resets = 0;
        }
    }

    // ---- helpers: placement ----

    /// Makes blocked (or new) `i` runnable at `now`: parks it if out of budget, else places and
    /// queues it. Returns the CPU and whether to tickle it.
    fn make_runnable(&mut self, i: usize, now: Nanos) -> (usize, bool) {
        let Some((home, affinity)) = self.vc(i).map(|v| (v.cpu, v.affinity)) else {
            return (0, false);
        };
        if !self.has_budget(i, now) {
            self.park(i);
            return (home, false);
        }
        let (cpu, tickle) = self.place(i, home, affinity, now);
        self.enqueue(cpu, i);
        if tickle {
            self.tickled.insert(cpu);
        }
        (cpu, tickle)
    }

    /// Where a waking vCPU goes, and whether to tickle that CPU.
    fn place(&self, i: usize, home: usize, affinity: CpuMask, now: Nanos) -> (usize, bool) {
        let idle = self.idle_cpus() & affinity;
        if idle.contains(home) {
            return (home, true);
        }
        if let Some(c) = idle.iter_from(home + 1).next() {
            return (c, true);
        }
        let credit = self.credit_of(i);
        let mut worst: Option<(usize, i64, bool)> = None;
        for c in (self.running & affinity).iter_from(home) {
            let Some(cur) = self.cpus.get(c).and_then(|x| x.current) else {
                continue;
            };
            let last_burn = self.cpus.get(c).map_or(now, |x| x.last_burn);
            let burnt = burn_amount(
                now.saturating_sub(last_burn),
                self.max_weight,
                self.weight_of(cur),
            );
            let projected = self.credit_of(cur).saturating_sub(burnt);
            let tickled = self.tickled.contains(c);
            let better = match worst {
                None => true,
                Some((_, w, w_tickled)) => {
                    projected < w || (projected == w && w_tickled && !tickled)
                }
            };
            if better {
                worst = Some((c, projected, tickled));
            }
        }
        if let Some((c, projected, _)) = worst
            && credit > projected
        {
            return (c, true);
        }
        let load = |c: usize| {
            self.cpus.get(c).map_or(usize::MAX, |x| {
                x.queue.len + usize::from(x.current.is_some())
            })
        };
        let home_load = load(home);
        match affinity.iter_from(home).min_by_key(|&c| load(c)) {
            Some(c) if load(c).saturating_add(2) <= home_load => (c, false),
            _ => (home, false),
        }
    }

    /// The first vCPU of `from`'s queue that may run on `cpu` and has budget (parking those
    /// without budget on the way).
    fn first_eligible(&mut self, from: usize, cpu: usize, now: Nanos) -> Option<usize> {
        let mut at = self.list(Where::Queue(from)).head;
        let mut steps = 0;
        while let Some(j) = at {
            if steps > self.slots.len() {
                break;
            }
            steps += 1;
            at = self.next_of(j);
            if !self.vc(j).is_some_and(|v| v.affinity.contains(cpu)) {
                continue;
            }
            if self.has_budget(j, now) {
                return Some(j);
            }
            self.unlink(Where::Queue(from), j);
            self.park(j);
        }
        None
    }

    /// The first vCPU of `from`'s queue that may run on `cpu` (ignoring budgets).
    fn first_allowed(&self, from: usize, cpu: usize) -> Option<usize> {
        let mut at = self.list(Where::Queue(from)).head;
        let mut steps = 0;
        while let Some(j) = at {
            let v = self.vc(j)?;
            if v.affinity.contains(cpu) {
                return Some(j);
            }
            steps += 1;
            if steps > self.slots.len() {
                break;
            }
            at = v.link.next;
        }
        None
    }

    /// The waiting vCPU of another CPU's queue with the most credit that may run on `cpu`
    /// (ties: the longest queue). Returns (vCPU, its CPU). Budgets are checked for the winner
    /// only: one without budget is parked and the scan starts again (each retry parks a vCPU, so
    /// this ends).
    fn remote_candidate(&mut self, cpu: usize, now: Nanos) -> Option<(usize, usize)> {
        loop {
            let mut best: Option<(usize, usize, i64, usize)> = None;
            let others = self.queued.and_not(CpuMask::single(cpu));
            for from in others.iter_from(cpu + 1) {
                let Some(j) = self.first_allowed(from, cpu) else {
                    continue;
                };
                let credit = self.credit_of(j);
                let len = self.queue_len(from);
                if best.is_none_or(|(_, _, bc, bl)| credit > bc || (credit == bc && len > bl)) {
                    best = Some((j, from, credit, len));
                }
            }
            let (j, from, _, _) = best?;
            if self.has_budget(j, now) {
                return Some((j, from));
            }
            self.unlink(Where::Queue(from), j);
            self.park(j);
        }
    }

    /// Pulls one waiting vCPU from the busiest CPU into `cpu`'s queue if that CPU's load exceeds
    /// ours by 2 or more.
    fn balance(&mut self, cpu: usize, now: Nanos, running: bool) {
        let mine = self.queue_len(cpu) + usize::from(running);
        let mut busiest: Option<(usize, usize)> = None;
        let others = self.queued.and_not(CpuMask::single(cpu));
        for from in others.iter_from(cpu + 1) {
            let Some(c) = self.cpus.get(from) else {
                continue;
            };
            let load = c.queue.len + usize::from(c.current.is_some());
            if c.queue.len > 0 && load >= mine + 2 && busiest.is_none_or(|(_, l)| load > l) {
                busiest = Some((from, load));
            }
        }
        if let Some((from, _)) = busiest
            && let Some(j) = self.first_eligible(from, cpu, now)
        {
            self.unlink(Where::Queue(from), j);
            self.enqueue(cpu, j);
        }
    }

    /// Makes `i` (on no list) the current vCPU of `cpu` and returns its slice: at most `limit`,
    /// cut to its domain's budget (grabbed) and, if anything is parked or it is capped, to the
    /// next cap period boundary.
    fn install(&mut self, cpu: usize, i: usize, now: Nanos, switched: bool, limit: Nanos) -> Nanos {
        let to_boundary = self.next_boundary(now).saturating_sub(now).max(1);
        let mut slice = limit.max(1);
        if self.parked.len > 0 {
            slice = slice.min(to_boundary);
        }
        let dom = self.vc(i).map(|v| v.id.domain);
        let mut grabbed = 0;
        if let Some(d) = dom.and_then(|d| self.dom_mut(d))
            && d.quota > 0
        {
            let avail = u64::try_from(d.pool).unwrap_or(0);
            slice = slice.min(avail).min(to_boundary).max(1);
            grabbed = slice.min(avail);
            d.pool = d.pool.saturating_sub(to_i64(grabbed));
        }
        if let Some(v) = self.vc_mut(i) {
            v.state = State::Running;
            v.cpu = cpu;
            v.grabbed = grabbed;
        }
        self.running.insert(cpu);
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.current = Some(i);
            c.last_burn = now;
            c.grab_at = now;
            if switched {
                c.stint_start = now;
            }
        }
        slice
    }
}
