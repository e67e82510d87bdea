//! Running vCPUs (docs/scheduler.md): the mechanism around the pure policy
//! of `basalt-sched`. One global lock guards the policy and the vCPU table;
//! every CPU runs [`run`], which asks the policy what to run, holds that
//! vCPU for its slice, and comes back at the next scheduling point: the
//! slice's end (VMX preemption timer), a yield, a block (HLT,
//! `SCHEDOP_block`), or a tickle (an IPI another CPU sent after a wake-up).
//!
//! Ownership: a vCPU (its VMCS, registers, FPU state) is either in its
//! [`Slot`] or held by exactly one CPU, which loads it. A CPU gives it back
//! (unloaded: VMCLEARed, FPU saved) before it runs anything else or halts,
//! so any CPU may take it next. Ending a domain removes its vCPUs from the
//! policy and marks their slots gone; each is dropped by whoever has it, and
//! the domain's memory and EPT are freed when the last one is
//! ([`crate::common::domain::Domain::vcpu_retired`]).
//!
//! Time: a blocked vCPU has at most one timer entry, on the CPU where it
//! blocked, for the earliest of its single-shot timer, its APIC timer and
//! (vCPU 0) its domain's device edge; the entry goes when the vCPU wakes,
//! fires or its domain ends. That CPU's APIC timer is armed for the earliest
//! entry, so a sleeping vCPU is woken on time even while the CPU runs
//! another guest (the timer interrupt causes a VM exit).
//!
//! A dead domain's frames go back to the pool only after every online CPU
//! has flushed its EPT-derived translations (INVEPT all-context) since the
//! domain's last vCPU left: see [`EPT_GENERATION`].

use super::domain::{self, Domain, EndReason, Running, Vcpu};
use super::exit::{self, Next};
use super::hypercall::{self, SchedOps, VcpuOpError};
use crate::arch::x86_64::{apic, cpu, idt, percpu};
use crate::hvm::irq::VcpuWaker;
use crate::time;
use crate::vcpu::{Event, StartState};
use crate::verdict::{Verdict, finish};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use basalt_sched::{CpuMask, Decision, DomainParams, Params, Scheduler, VcpuId, VcpuState};
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;

const MAX_CPUS: usize = percpu::MAX_CPUS;

/// A vCPU as every CPU sees it.
pub struct Slot {
    /// Its id in the policy.
    pub id: VcpuId,
    /// Its domain.
    pub domain: Arc<Domain>,
    inner: Mutex<SlotInner>,
    /// Blocked until an event (its timer, console input, `VCPUOP_up`).
    /// Changed under the scheduler lock only, like the flags below.
    halted: AtomicBool,
    /// It halted with RFLAGS.IF clear: interrupts do not end the halt, only
    /// an NMI or a Basalt event (its timer, console input) does.
    halt_masked: AtomicBool,
    /// Blocked because its domain is paused.
    paused: AtomicBool,
    /// Started (vCPU 0 at creation, others by `VCPUOP_up`).
    up: AtomicBool,
    /// Given a start state by `VCPUOP_initialise` (vCPU 0: always).
    initialised: AtomicBool,
    /// The CPU whose `TIMERS` list holds its one entry (`NO_CPU`: none).
    /// Changed under that list's lock.
    timer_cpu: AtomicUsize,
}

const NO_CPU: usize = usize::MAX;

struct SlotInner {
    /// The vCPU while no CPU holds it.
    vcpu: Option<Box<Vcpu>>,
    /// Its domain ended: whoever has the vCPU drops it.
    gone: bool,
}

struct State {
    policy: Scheduler,
    slots: BTreeMap<VcpuId, Arc<Slot>>,
}

static SCHED: Mutex<Option<State>> = Mutex::new(None);
static NEED_RESCHED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// A blocked vCPU's wake-up time on the CPU where it blocked.
#[derive(Debug, Clone, Copy)]
struct TimerEntry {
    /// System time in ns.
    at: u64,
    id: VcpuId,
    /// Its domain's generation: an entry of an older incarnation of the
    /// same id reaches nothing.
    generation: u64,
}

/// Timers of vCPUs that blocked on each CPU, one entry per vCPU at most
/// (`Slot::timer_cpu` says which list has it). Lock order: `SCHED`, then a
/// `TIMERS` list.
static TIMERS: [Mutex<Vec<TimerEntry>>; MAX_CPUS] = [const { Mutex::new(Vec::new()) }; MAX_CPUS];
/// Domains that ended with `reboot`, waiting to be built again.
static REBUILD: Mutex<Vec<Arc<Domain>>> = Mutex::new(Vec::new());
static TEST_EXIT: AtomicBool = AtomicBool::new(false);
/// Frames used for page tables before any domain existed (EPT tables of
/// domains come on top and must all be returned).
static TABLES_BEFORE: AtomicU64 = AtomicU64::new(0);
static FINISHING: AtomicBool = AtomicBool::new(false);
/// The EPT flush protocol (docs/scheduler.md, "Domain lifecycle"). When a
/// domain's last vCPU has left its CPU, the generation is bumped to G and
/// the domain's memory and EPT wait in [`QUARANTINE`] tagged G; every CPU
/// is tickled. Each CPU, at every scheduling point (before it takes a vCPU
/// and before it halts), flushes its EPT TLB (INVEPT all-context) when the
/// generation moved and then records the generation it saw in
/// [`EPT_FLUSHED`]. The frames tagged G are freed once every online CPU's
/// [`EPT_FLUSHED`] is at least G.
///
/// Invariant: no frame of a dead domain is back in the pool while any CPU
/// may still hold a guest-physical or combined translation (tagged with
/// the dead domain's EPTP) that reaches it. A CPU records G only after its
/// INVEPT, and it reads G after the bump; no CPU can fill new translations
/// for the dead EPTP, since no vCPU of the domain exists any more.
static EPT_GENERATION: AtomicU64 = AtomicU64::new(0);
/// The EPT generation each CPU flushed at last.
static EPT_FLUSHED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Dead domains whose memory and EPT wait for every CPU's flush: (the
/// generation each CPU must reach, the domain, its remains, how it ended).
#[allow(clippy::type_complexity)]
static QUARANTINE: Mutex<Vec<(u64, Arc<Domain>, crate::hvm::memory::Remains, EndReason)>> =
    Mutex::new(Vec::new());
/// Whether [`QUARANTINE`] holds anything (changed under its lock).
static QUARANTINE_WAITING: AtomicBool = AtomicBool::new(false);

/// Scheduler settings from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// `sched_credit_tslice_ms=`.
    pub tslice_ms: Option<u64>,
    /// `sched_ratelimit_us=`.
    pub ratelimit_us: Option<u64>,
    /// `credit2_cap_period_ms=`.
    pub cap_period_ms: Option<u64>,
    /// `test-exit`.
    pub test_exit: bool,
}

/// What the CPUs do at scheduling points besides scheduling, and what the
/// scheduler tells the services above it (the monitor, the measurement,
/// test faults): handed to [`start`] by the bring-up, so that the scheduler
/// names no module above it (docs/architecture.md, "Layers").
#[derive(Debug, Clone, Copy)]
pub struct Services {
    /// CPU 0, at each scheduling point and after each interrupt that ended
    /// a guest's run: the operator's console (the monitor).
    pub monitor: fn(),
    /// Whether `monitor` has to hand a departed domain's console back
    /// before CPU 0 sleeps.
    pub departures_pending: fn() -> bool,
    /// CPU 0, right after `monitor`: the measurement (`test-measure`).
    pub measure: fn(),
    /// When CPU 0 must run `measure` again (system ns) if it idles.
    pub next_deadline: fn() -> Option<u64>,
    /// A domain ended (not for a reboot).
    pub domain_gone: fn(u32),
    /// `test-fault=guest` waits for its moment (a guest on another CPU).
    pub guest_fault_armed: fn() -> bool,
    /// `test-fault=guest`: the moment came.
    pub cause_guest_fault: fn(),
}

static SERVICES: spin::Once<Services> = spin::Once::new();

/// The services handed to [`start`] (none before: nothing to serve).
fn services() -> Option<&'static Services> {
    SERVICES.get()
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    SCHED.lock().as_mut().map(f)
}

/// The policy's parameters (for `info`).
pub fn params() -> Option<Params> {
    with(|s| s.policy.params())
}

/// Creates the scheduler for the online CPUs, admits the boot domains and
/// wakes the CPUs.
pub fn start(
    domains: Vec<(Arc<Domain>, Vec<Vcpu>)>,
    settings: Settings,
    tables_before: u64,
    services: Services,
) {
    SERVICES.call_once(|| services);
    TEST_EXIT.store(settings.test_exit, Ordering::SeqCst);
    TABLES_BEFORE.store(tables_before, Ordering::SeqCst);
    let mut params = Params::DEFAULT;
    if let Some(ms) = settings.tslice_ms {
        params.timeslice = ms * 1_000_000;
    }
    if let Some(us) = settings.ratelimit_us {
        params.ratelimit = us * 1000;
    }
    if let Some(ms) = settings.cap_period_ms {
        params.cap_period = ms * 1_000_000;
    }
    let online = percpu::online_count().max(1);
    let policy = Scheduler::new(online, params);
    let p = policy.params();
    log::info!(
        "scheduler: proportional share (credit2 class) on {online} CPU(s); time slice {} us, rate limit {} us, cap period {} us",
        p.timeslice / 1000,
        p.ratelimit / 1000,
        p.cap_period / 1000
    );
    *SCHED.lock() = Some(State {
        policy,
        slots: BTreeMap::new(),
    });
    crate::console::start_async();
    for (domain, vcpus) in domains {
        admit(domain, vcpus);
    }
    for c in percpu::all() {
        tickle(c.index);
    }
}

/// Adds a built domain and its vCPUs; vCPU 0 starts.
fn admit(domain: Arc<Domain>, vcpus: Vec<Vcpu>) {
    let now = time::now_ns();
    let id = domain.id;
    let affinity = CpuMask::from_u64(domain.affinity);
    let placed = with(|s| -> Result<usize, basalt_sched::SchedError> {
        s.policy.add_domain(
            id,
            DomainParams {
                weight: domain.weight,
                cap: domain.cap,
            },
        )?;
        for v in vcpus {
            let vid = VcpuId::new(id, v.index);
            let first = v.index == 0;
            s.slots.insert(
                vid,
                Arc::new(Slot {
                    id: vid,
                    domain: domain.clone(),
                    inner: Mutex::new(SlotInner {
                        vcpu: Some(Box::new(v)),
                        gone: false,
                    }),
                    halted: AtomicBool::new(false),
                    halt_masked: AtomicBool::new(false),
                    paused: AtomicBool::new(false),
                    up: AtomicBool::new(first),
                    initialised: AtomicBool::new(first),
                    timer_cpu: AtomicUsize::new(NO_CPU),
                }),
            );
        }
        s.policy.add_vcpu(VcpuId::new(id, 0), affinity, now)
    });
    match placed {
        Some(Ok(cpu)) => {
            log::info!("d{id}v0 runs on cpu{cpu}");
            tickle(cpu);
        }
        Some(Err(e)) => {
            log::error!(
                "domain d{id} ({}) cannot be scheduled: {e} (check cpus=, weight= and cap=); it is stopped",
                domain.name
            );
            end_domain(&domain, EndReason::Crash);
        }
        None => {}
    }
}

/// Asks `cpu` to come to a scheduling point (an IPI unless it is this CPU).
fn tickle(cpu: usize) {
    let Some(flag) = NEED_RESCHED.get(cpu) else {
        return;
    };
    flag.store(true, Ordering::SeqCst);
    if cpu != percpu::index()
        && let Some(c) = percpu::cpu(cpu)
    {
        apic::send_ipi(
            apic::Delivery::Fixed(idt::vector::WAKE),
            apic::Destination::Apic(c.apic_id),
        );
    }
}

/// What a CPU holds while it runs a vCPU.
struct Held {
    slot: Arc<Slot>,
    vcpu: Box<Vcpu>,
}

/// Takes vCPU `id` from its slot (waiting while the CPU that ran it last
/// gives it back); `None` if its domain ended meanwhile.
fn take(id: VcpuId) -> Option<Held> {
    let slot = with(|s| s.slots.get(&id).cloned())??;
    loop {
        {
            let mut inner = slot.inner.lock();
            if inner.gone {
                return None;
            }
            if let Some(vcpu) = inner.vcpu.take() {
                drop(inner);
                return Some(Held { slot, vcpu });
            }
        }
        core::hint::spin_loop();
    }
}

/// Gives the held vCPU back, unloaded (or drops it if its domain ended).
fn put_back(h: Held) {
    let mut inner = h.slot.inner.lock();
    if inner.gone {
        drop(inner);
        retire(h.vcpu);
    } else {
        inner.vcpu = Some(h.vcpu);
    }
}

/// Drops a vCPU of an ended domain (its VMCS, bitmaps, FPU area); the last
/// one frees the domain.
fn retire(vcpu: Box<Vcpu>) {
    let domain = vcpu.domain.clone();
    drop(vcpu);
    let Some((reason, remains)) = domain.vcpu_retired() else {
        return;
    };
    quarantine(&domain, remains, reason);
}

/// A dead domain's memory waits for every CPU's stage-2 flush (and for the
/// last foreign mapping of it) before `reclaim` frees it.
fn quarantine(domain: &Arc<Domain>, remains: crate::hvm::memory::Remains, reason: EndReason) {
    let generation = {
        // Bumped and queued under the lock, so `reclaim` never sees a
        // generation without its remains.
        let mut q = QUARANTINE.lock();
        let g = EPT_GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
        q.push((g, domain.clone(), remains, reason));
        QUARANTINE_WAITING.store(true, Ordering::SeqCst);
        g
    };
    log::debug!(
        "d{}: memory waits for every CPU's EPT flush (generation {generation})",
        domain.id
    );
    if reason != EndReason::Reboot
        && let Some(svc) = services()
    {
        (svc.domain_gone)(domain.id);
    }
    let me = percpu::index();
    flush_ept(me);
    for c in percpu::all() {
        if c.index != me {
            tickle(c.index);
        }
    }
    reclaim();
}

/// This CPU's part of the EPT flush protocol ([`EPT_GENERATION`]): INVEPT
/// all-context when the generation moved since its last flush.
fn flush_ept(me: usize) {
    let Some(flushed) = EPT_FLUSHED.get(me) else {
        return;
    };
    let g = EPT_GENERATION.load(Ordering::SeqCst);
    if flushed.load(Ordering::Relaxed) != g {
        crate::arch::x86_64::hvm::flush_stage2_all();
        flushed.store(g, Ordering::SeqCst);
    }
}

/// Frees the memory of dead domains that every online CPU has flushed
/// since ([`EPT_GENERATION`]); a rebooting one is then built again.
fn reclaim() {
    // The common case (nothing waits) costs one load at a scheduling point.
    if !QUARANTINE_WAITING.load(Ordering::SeqCst) {
        return;
    }
    let done = percpu::all()
        .filter_map(|c| EPT_FLUSHED.get(c.index))
        .map(|f| f.load(Ordering::SeqCst))
        .min()
        .unwrap_or(0);
    let due: Vec<AfterFlush> = {
        let mut q = UNPINS.lock();
        let (due, waiting): (Vec<_>, Vec<_>) = core::mem::take(&mut *q)
            .into_iter()
            .partition(|(g, _)| *g <= done);
        *q = waiting;
        due.into_iter().map(|(_, then)| then).collect()
    };
    // Run without the lock (they take the locks of what they release).
    for then in due {
        then();
    }
    // A dead domain whose frames the control domain still maps stays dying
    // until the last mapping is gone (docs/control-domain.md).
    let ready: Vec<(u64, Arc<Domain>, crate::hvm::memory::Remains, EndReason)> = {
        let mut q = QUARANTINE.lock();
        let waiting_unpins = !UNPINS.lock().is_empty();
        if q.iter().all(|e| e.0 > done || e.1.ram.pinned() != 0) {
            QUARANTINE_WAITING.store(!q.is_empty() || waiting_unpins, Ordering::SeqCst);
            return;
        }
        let (ready, waiting) = core::mem::take(&mut *q)
            .into_iter()
            .partition(|e| e.0 <= done && e.1.ram.pinned() == 0);
        *q = waiting;
        QUARANTINE_WAITING.store(!q.is_empty() || waiting_unpins, Ordering::SeqCst);
        ready
    };
    for (_, domain, remains, reason) in ready {
        domain.reclaim(remains, reason);
        if reason == EndReason::Reboot && domain.rebuilds() {
            // Same id after the restart: a console focused on it stays.
            REBUILD.lock().push(domain);
        } else if percpu::index() != 0 {
            // The monitor (CPU 0) hands the console back; it may be halted.
            tickle(0);
        }
    }
}

/// Whether dead domains wait for EPT flushes.
fn quarantine_waiting() -> bool {
    QUARANTINE_WAITING.load(Ordering::SeqCst)
}

/// Ends `domain` for `reason`: its vCPUs leave the policy, the CPUs running
/// them are tickled, and each vCPU is dropped by whoever has it.
pub fn end_domain(domain: &Arc<Domain>, reason: EndReason) {
    // Created by the control domain and never started: no vCPU to take off
    // a CPU, its memory returns at once.
    if let Some(remains) = domain.discard_unstarted(reason) {
        hypercall::xen::domain_gone(domain, after_flush);
        quarantine(domain, remains, reason);
        return;
    }
    if !domain.life.begin_end(reason) {
        return;
    }
    hypercall::xen::domain_gone(domain, after_flush);
    // Its foreign mappings end with it: the pins go once every CPU flushed.
    for owner in hypercall::xen::drop_foreign_of(domain.id) {
        unpin_after_flush(owner);
    }
    if domain.xen.as_ref().is_some_and(|x| x.control) {
        control_domain_ended(reason);
    }
    take_off(domain);
}

/// Takes the vCPUs of an ending domain out of the policy and retires them
/// (those running elsewhere leave at their CPU's next scheduling point).
fn take_off(domain: &Arc<Domain>) {
    let id = domain.id;
    let removed: Vec<(Arc<Slot>, Option<usize>)> = with(|s| {
        let ids: Vec<VcpuId> = s.slots.keys().filter(|v| v.domain == id).copied().collect();
        let mut out = Vec::new();
        for vid in ids {
            let cpu = s.policy.remove_vcpu(vid);
            if let Some(slot) = s.slots.remove(&vid) {
                out.push((slot, cpu));
            }
        }
        s.policy.remove_domain(id);
        out
    })
    .unwrap_or_default();
    for (slot, cpu) in removed {
        clear_timer(&slot);
        if let Some(c) = cpu {
            tickle(c);
        }
        let taken = {
            let mut inner = slot.inner.lock();
            inner.gone = true;
            inner.vcpu.take()
        };
        if let Some(v) = taken {
            retire(v);
        }
    }
}

/// What the host does once every domain has ended after the control
/// domain did: 0 nothing (no control domain ended), 1 power off, 2 reboot,
/// 3 halt, 4 reboot after a crash (which `test-exit` ends with the verdict).
static HOST_ACTION: AtomicUsize = AtomicUsize::new(0);

/// The control domain ended: every other domain is stopped, and once all
/// have ended the host powers off, reboots or (a crash with
/// `dom0_crash=halt`) halts, as Xen does (docs/control-domain.md).
fn control_domain_ended(reason: EndReason) {
    let (action, what) = match reason {
        EndReason::Reboot => (2, "the host reboots"),
        EndReason::Crash if domain::dom0_crash_halts() => (3, "the host halts (dom0_crash=halt)"),
        EndReason::Crash => (4, "the host reboots (dom0_crash=halt would halt it)"),
        _ => (1, "the host powers off"),
    };
    HOST_ACTION.store(action, Ordering::SeqCst);
    log::warn!("the control domain ended ({reason:?}): every domain is stopped and {what}");
    for d in domain::all() {
        if d.id != 0 {
            end_domain(&d, EndReason::Destroyed);
        }
    }
}

/// Pauses (true) or unpauses domain `domain`; false if it was not in the
/// state to do so.
pub fn pause(domain: &Arc<Domain>, paused: bool) -> bool {
    // The first unpause of a domain the control domain created: its vCPUs
    // are made at this CPU's next scheduling point (`rebuild`), where no
    // vCPU is loaded.
    if !paused && domain.is_unstarted() {
        if !domain.has_start() || !domain.life.set_paused(false) {
            return false;
        }
        REBUILD.lock().push(domain.clone());
        tickle(percpu::index());
        return true;
    }
    if !domain.life.set_paused(paused) {
        return false;
    }
    let now = time::now_ns();
    let mut tickles = Vec::new();
    with(|s| {
        for slot in s.slots.values().filter(|sl| sl.domain.id == domain.id) {
            if paused {
                // Running ones stop at their CPU's next scheduling point;
                // queued ones are blocked when a CPU picks them.
                if let Some(VcpuState::Running { cpu }) = s.policy.stats(slot.id).map(|v| v.state) {
                    tickles.push(cpu);
                }
            } else if slot.paused.swap(false, Ordering::SeqCst)
                && !slot.halted.load(Ordering::SeqCst)
                && let Some(cpu) = s.policy.wake(slot.id, now)
            {
                tickles.push(cpu);
            }
        }
    });
    for c in tickles {
        tickle(c);
    }
    true
}

/// Sets a domain's weight and cap.
pub fn set_params(domain: u32, p: DomainParams) -> Result<(), basalt_sched::SchedError> {
    with(|s| s.policy.set_domain_params(domain, p))
        .unwrap_or(Err(basalt_sched::SchedError::NoSuchDomain(domain)))
}

/// A domain's weight and cap.
pub fn domain_params(domain: u32) -> Option<DomainParams> {
    with(|s| s.policy.domain_params(domain)).flatten()
}

/// One vCPU as the monitor shows it.
#[derive(Debug, Clone, Copy)]
pub struct VcpuInfo {
    /// The vCPU.
    pub id: VcpuId,
    /// Started.
    pub up: bool,
    /// The policy's view (None: down).
    pub state: Option<VcpuState>,
    /// Run time in ns.
    pub runtime: u64,
    /// CPU it runs on or last ran on.
    pub cpu: usize,
    /// Halted (waiting for an event) or paused.
    pub halted: bool,
}

/// Every vCPU of every domain.
pub fn vcpus() -> Vec<VcpuInfo> {
    with(|s| {
        s.slots
            .values()
            .map(|slot| {
                let st = s.policy.stats(slot.id);
                VcpuInfo {
                    id: slot.id,
                    up: slot.up.load(Ordering::Relaxed),
                    state: st.map(|v| v.state),
                    runtime: st.map_or(0, |v| v.runtime),
                    cpu: st.map_or(0, |v| v.cpu),
                    halted: slot.halted.load(Ordering::Relaxed)
                        || slot.paused.load(Ordering::Relaxed),
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Total run time of domain `domain`'s vCPUs, in ns.
pub fn domain_runtime(domain: u32) -> u64 {
    with(|s| {
        s.slots
            .keys()
            .filter(|v| v.domain == domain)
            .filter_map(|v| s.policy.stats(*v))
            .map(|st| st.runtime)
            .sum()
    })
    .unwrap_or(0)
}

/// Makes halted vCPU `vcpu` of `domain` runnable (an event for it: console
/// input); nothing if that incarnation of the domain has ended.
pub fn wake_vcpu(domain: &Domain, vcpu: u32) {
    let now = time::now_ns();
    let id = VcpuId::new(domain.id, vcpu);
    let cpu = with(|s| {
        let slot = slot_of(s, id, domain.generation)?;
        if !slot.up.load(Ordering::SeqCst) || !slot.halted.load(Ordering::SeqCst) {
            return None;
        }
        unhalt(s, &slot, now)
    })
    .flatten();
    if let Some(c) = cpu {
        tickle(c);
    }
}

/// Halted vCPU `vcpu` of `domain` had its timers changed by another vCPU:
/// its wake-up time is computed again (a timer entry on this CPU).
fn retime_vcpu(domain: &Domain, vcpu: u32) {
    let me = percpu::index();
    with(|s| {
        let Some(slot) = slot_of(s, VcpuId::new(domain.id, vcpu), domain.generation) else {
            return;
        };
        if slot.halted.load(Ordering::SeqCst)
            && slot.up.load(Ordering::SeqCst)
            && let Some(at) = wake_at(&slot, !slot.halt_masked.load(Ordering::SeqCst))
        {
            set_timer(me, &slot, at);
        }
    });
}

/// Whether vCPU `vcpu` of `domain` has an interrupt to take: from its local
/// APIC (a vector or an NMI), or (vCPU 0) from the 8259 through LINT0.
fn interrupt_waiting(domain: &Domain, vcpu: u32) -> bool {
    domain.platform.apic.attention(vcpu)
        & (crate::hvm::vapic::ATTN_VECTOR | crate::hvm::vapic::ATTN_NMI)
        != 0
        || (vcpu == 0
            && domain.platform.irq_pending.load(Ordering::SeqCst)
            && domain.platform.apic.pic_through())
}

/// Whether what was delivered to the halted vCPU of `slot` ends its halt:
/// waiting for a start-up IPI (after INIT), only that; halted with
/// RFLAGS.IF clear, only an NMI; otherwise any interrupt.
fn halt_ends(slot: &Slot) -> bool {
    let apic = &slot.domain.platform.apic;
    let v = slot.id.vcpu;
    if let Some(ends) = slot.domain.platform.ioreq.wait_ends(v) {
        ends
    } else if apic.init_pending(v) {
        apic.sipi_recorded(v)
    } else if slot.halt_masked.load(Ordering::SeqCst) {
        apic.nmi_pending(v)
    } else {
        interrupt_waiting(&slot.domain, v)
    }
}

/// An interrupt was delivered to vCPU `id`'s local APIC: a halted vCPU is
/// woken; one running on another CPU is made to exit (a WAKE IPI), so the
/// interrupt is injected at its next entry; a runnable one takes it when
/// it next runs.
/// Nothing if that incarnation of the domain has ended.
fn kick_vcpu(domain: u32, generation: u64, vcpu: u32) {
    let now = time::now_ns();
    let me = percpu::index();
    let id = VcpuId::new(domain, vcpu);
    let target = with(|s| {
        let slot = slot_of(s, id, generation)?;
        if slot.halted.load(Ordering::SeqCst) {
            if !slot.up.load(Ordering::SeqCst) || !halt_ends(&slot) {
                return None;
            }
            return unhalt(s, &slot, now).map(|c| (c, true));
        }
        (0..percpu::online_count())
            .find(|&c| c != me && s.policy.current(c) == Some(id))
            .map(|c| (c, false))
    })
    .flatten();
    match target {
        Some((cpu, true)) => tickle(cpu),
        Some((cpu, false)) => {
            if let Some(c) = percpu::cpu(cpu) {
                apic::send_ipi(
                    apic::Delivery::Fixed(idt::vector::WAKE),
                    apic::Destination::Apic(c.apic_id),
                );
            }
        }
        None => {}
    }
}

/// A start-up IPI reached vCPU `id`, which waited for one: it starts in
/// real mode at `vector << 8`:0000 (SDM Vol. 3A 10.4.4). A vCPU that is up
/// and had an INIT (a CPU the guest took offline and starts again) takes it
/// at its next turn (`run_slice`); any other vCPU that is up ignores it.
fn start_vcpu_sipi(domain: u32, generation: u64, vcpu: u32, vector: u8) {
    let id = VcpuId::new(domain, vcpu);
    let Some(slot) = with(|s| slot_of(s, id, generation)).flatten() else {
        return;
    };
    if slot.up.load(Ordering::SeqCst) {
        if slot.domain.platform.apic.record_sipi(id.vcpu, vector) {
            kick_vcpu(domain, generation, vcpu);
            return;
        }
        crate::guest_log!(
            slot.domain,
            log::Level::Warn,
            "d{}v{}: start-up IPI to a running vCPU ignored",
            id.domain,
            id.vcpu
        );
        return;
    }
    slot.domain.platform.apic.clear_init(id.vcpu);
    {
        let mut inner = slot.inner.lock();
        let Some(v) = inner.vcpu.as_mut() else {
            return;
        };
        v.arch.set_start(StartState::RealMode {
            cs: u16::from(vector) << 8,
            ip: 0,
        });
        slot.initialised.store(true, Ordering::SeqCst);
    }
    log::debug!(
        "d{}v{}: start-up IPI, starts at {:#x}",
        id.domain,
        id.vcpu,
        u32::from(vector) << 12
    );
    if let Err(e) = vcpu_up(id) {
        crate::guest_log!(
            slot.domain,
            log::Level::Warn,
            "d{}v{}: cannot start: {e:?}",
            id.domain,
            id.vcpu
        );
    }
}

/// The scheduler as the domains' interrupt controllers reach it
/// ([`crate::hvm::irq::IrqSink`]): [`WAKER`].
#[derive(Debug)]
pub struct Waker;

/// What every domain's [`crate::hvm::irq::IrqSink`] calls.
pub static WAKER: Waker = Waker;

impl VcpuWaker for Waker {
    fn kick(&self, domain: u32, generation: u64, vcpu: u32) {
        kick_vcpu(domain, generation, vcpu);
    }
    fn start_up(&self, domain: u32, generation: u64, vcpu: u32, vector: u8) {
        start_vcpu_sipi(domain, generation, vcpu, vector);
    }
}

/// The halted vCPU of `slot` had its event: it becomes runnable unless its
/// domain is paused. Returns the CPU to tickle.
fn unhalt(s: &mut State, slot: &Slot, now: u64) -> Option<usize> {
    slot.halted.store(false, Ordering::SeqCst);
    clear_timer(slot);
    if slot.paused.load(Ordering::SeqCst) {
        return None;
    }
    s.policy.wake(slot.id, now)
}

/// The scheduler as exit handlers and hypercalls reach it.
struct Ops;

impl SchedOps for Ops {
    fn end_domain(&self, domain: &Arc<Domain>, reason: EndReason) {
        end_domain(domain, reason);
    }
    fn vcpu_initialise(&self, id: VcpuId, entry: StartState) -> Result<(), VcpuOpError> {
        vcpu_initialise(id, entry)
    }
    fn vcpu_up(&self, id: VcpuId) -> Result<(), VcpuOpError> {
        vcpu_up(id)
    }
    fn vcpu_is_up(&self, id: VcpuId) -> Option<bool> {
        vcpu_is_up(id)
    }
    fn unpin_after_flush(&self, owner: Arc<Domain>) {
        unpin_after_flush(owner);
    }
    fn after_flush(&self, then: AfterFlush) {
        after_flush(then);
    }
    fn retime_vcpu(&self, domain: &Domain, vcpu: u32) {
        retime_vcpu(domain, vcpu);
    }
}

/// What runs once every CPU has flushed its stage-2 translations.
type AfterFlush = Box<dyn FnOnce() + Send>;

/// Work waiting for every CPU's stage-2 flush (dropping the pins on
/// domains' frames another domain mapped, clearing grant flags): the
/// generation each CPU must reach, what then runs.
static UNPINS: Mutex<Vec<(u64, AfterFlush)>> = Mutex::new(Vec::new());

/// See [`SchedOps::unpin_after_flush`]: the same flush protocol as a dead
/// domain's memory ([`EPT_GENERATION`]).
pub fn unpin_after_flush(owner: Arc<Domain>) {
    after_flush(Box::new(move || owner.ram.unpin()));
}

/// See [`SchedOps::after_flush`].
pub fn after_flush(then: AfterFlush) {
    {
        let mut q = UNPINS.lock();
        let g = EPT_GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
        q.push((g, then));
        QUARANTINE_WAITING.store(true, Ordering::SeqCst);
    }
    let me = percpu::index();
    flush_ept(me);
    for c in percpu::all() {
        if c.index != me {
            tickle(c.index);
        }
    }
}

impl super::domctl::ControlOps for Ops {
    fn pause_domain(&self, domain: &Arc<Domain>, paused: bool) -> bool {
        pause(domain, paused)
    }
    fn end_domain_for(&self, domain: &Arc<Domain>, reason: EndReason) {
        end_domain(domain, reason);
    }
    fn params_of(&self, id: u32) -> Option<DomainParams> {
        domain_params(id)
    }
    fn set_params_of(&self, id: u32, params: DomainParams) -> Result<(), basalt_sched::SchedError> {
        set_params(id, params)
    }
    fn runtime_of(&self, id: u32) -> u64 {
        domain_runtime(id)
    }
    fn wake(&self, domain: &Domain, vcpu: u32) {
        wake_vcpu(domain, vcpu);
    }
    fn waker(&self) -> &'static dyn VcpuWaker {
        &WAKER
    }
}

/// `VCPUOP_initialise`: gives down vCPU `id` the state it starts from.
pub fn vcpu_initialise(id: VcpuId, entry: StartState) -> Result<(), VcpuOpError> {
    let slot = with(|s| s.slots.get(&id).cloned())
        .flatten()
        .ok_or(VcpuOpError::NoSuchVcpu)?;
    if slot.initialised.load(Ordering::SeqCst) {
        return Err(VcpuOpError::Exists);
    }
    let mut inner = slot.inner.lock();
    // A vCPU never started is in its slot.
    let v = inner.vcpu.as_mut().ok_or(VcpuOpError::Exists)?;
    v.arch.set_start(entry);
    slot.initialised.store(true, Ordering::SeqCst);
    Ok(())
}

/// `VCPUOP_up`: starts an initialised vCPU (a no-op if it is up).
pub fn vcpu_up(id: VcpuId) -> Result<(), VcpuOpError> {
    let now = time::now_ns();
    let dom = domain::get(id.domain).ok_or(VcpuOpError::NoSuchVcpu)?;
    let affinity = CpuMask::from_u64(dom.affinity);
    let placed = with(|s| {
        let slot = s.slots.get(&id).ok_or(VcpuOpError::NoSuchVcpu)?;
        if !slot.initialised.load(Ordering::SeqCst) {
            return Err(VcpuOpError::NotInitialised);
        }
        if slot.up.swap(true, Ordering::SeqCst) {
            // Up already; a vCPU that went down comes back.
            if slot.halted.swap(false, Ordering::SeqCst) {
                return Ok(s.policy.wake(id, now));
            }
            return Ok(None);
        }
        s.policy
            .add_vcpu(id, affinity, now)
            .map(Some)
            .map_err(|_| VcpuOpError::NoSuchVcpu)
    })
    .ok_or(VcpuOpError::NoSuchVcpu)??;
    if let Some(cpu) = placed {
        // A guest can take vCPUs down and up in a loop: rate-limited.
        crate::guest_log!(
            dom,
            log::Level::Info,
            "d{}v{} up, runs on cpu{cpu}",
            id.domain,
            id.vcpu
        );
        tickle(cpu);
    }
    Ok(())
}

/// Whether vCPU `id` is up.
pub fn vcpu_is_up(id: VcpuId) -> Option<bool> {
    with(|s| s.slots.get(&id).map(|sl| sl.up.load(Ordering::SeqCst))).flatten()
}

/// Every CPU's loop once guests exist.
pub fn run() -> ! {
    let me = percpu::index();
    let mut yielded = false;
    let mut carried = None;
    loop {
        let decision = match carried.take() {
            Some(Carried::Decided(d)) => d,
            Some(Carried::Rebuild) => {
                rebuild();
                decide_now(me, &mut yielded)
            }
            None => {
                if housekeeping(me) {
                    rebuild();
                }
                decide_now(me, &mut yielded)
            }
        };
        let (id, slice) = match decision {
            Decision::Idle { until } => {
                idle(me, until);
                continue;
            }
            Decision::Run { vcpu, slice } => (vcpu, slice),
        };
        let Some(mut h) = take(id) else {
            continue;
        };
        carried = run_loaded(me, &mut h, slice, &mut yielded);
        put_back(h);
    }
}

/// What [`run_loaded`] hands back to [`run`] with the vCPU unloaded.
enum Carried {
    /// The policy picked something else.
    Decided(Decision),
    /// Domains wait to be rebuilt (which creates vCPUs on this CPU: nothing
    /// may be loaded here).
    Rebuild,
}

/// Flushes what the scheduling point owes before any VM entry, then asks
/// the policy.
fn decide_now(me: usize, yielded: &mut bool) -> Decision {
    // Before any VM entry from this scheduling point on.
    flush_ept(me);
    NEED_RESCHED[me].store(false, Ordering::SeqCst);
    let d = decide(me, *yielded);
    *yielded = false;
    d
}

/// Loads the held vCPU on this CPU and runs it for as long as the policy
/// keeps picking it; the guard's drop unloads it on the way out. Returns
/// what [`run`] does next (`None`: the usual scheduling point).
fn run_loaded(me: usize, h: &mut Held, slice: u64, yielded: &mut bool) -> Option<Carried> {
    let Held { slot, vcpu } = h;
    let Vcpu {
        domain,
        index,
        arch,
    } = &mut **vcpu;
    let loaded = match arch.load() {
        Ok(l) => l,
        Err(e) => {
            crash_unloaded(slot, &alloc::format!("{e}"));
            return None;
        }
    };
    let mut v = Running {
        domain,
        index: *index,
        arch: loaded,
    };
    // A vCPU given back just now may have been a domain's last.
    flush_ept(me);
    crate::arch::x86_64::hvm::entering_domain(me, slot.domain.generation);
    let mut slice = slice;
    loop {
        runstate(&v, basalt_xen::layout::runstate::RUNNING);
        let mut after = basalt_xen::layout::runstate::RUNNABLE;
        match run_slice(me, slot, &mut v, slice) {
            SliceEnd::Resched => {}
            SliceEnd::Yield => *yielded = true,
            SliceEnd::Block => {
                block_current(me, slot, &v);
                after = basalt_xen::layout::runstate::BLOCKED;
            }
            SliceEnd::Down => {
                slot.up.store(false, Ordering::SeqCst);
                block_current(me, slot, &v);
                after = basalt_xen::layout::runstate::OFFLINE;
            }
        }
        runstate(&v, after);
        if housekeeping(me) {
            return Some(Carried::Rebuild);
        }
        match decide_now(me, yielded) {
            Decision::Run { vcpu, slice: s } if vcpu == slot.id => slice = s,
            other => return Some(Carried::Decided(other)),
        }
    }
}

/// A vCPU of a domain with Xen's interface changes run state (its
/// runstate area, if registered, is rewritten).
fn runstate(v: &Running<'_>, state: u32) {
    if let Some(x) = &v.domain.xen {
        x.runstate_switch(&v.domain.ram, v.index, state, time::now_ns());
    }
}

/// Asks the policy; a picked vCPU of a paused domain is blocked on the spot
/// and the policy asked again.
fn decide(me: usize, yielded: bool) -> Decision {
    let now = time::now_ns();
    let mut guard = SCHED.lock();
    let Some(s) = guard.as_mut() else {
        return Decision::Idle { until: None };
    };
    let mut yielded = yielded;
    loop {
        let d = s.policy.schedule(me, now, yielded);
        let Decision::Run { vcpu, .. } = d else {
            return d;
        };
        let Some(slot) = s.slots.get(&vcpu) else {
            return d;
        };
        if slot.domain.life.state() != domain::State::Paused {
            return d;
        }
        slot.paused.store(true, Ordering::SeqCst);
        s.policy.block(me, now);
        yielded = false;
    }
}

/// Whether a blocking vCPU waits for a start-up IPI (after INIT: only that
/// ends the wait), and whether an interrupt can end its wait (RFLAGS.IF).
fn block_kind(slot: &Slot, v: &Running<'_>) -> (bool, bool) {
    let for_sipi = slot.domain.platform.apic.init_pending(slot.id.vcpu);
    (for_sipi, !for_sipi && v.arch.interrupts_enabled())
}

/// Whether an event that ends the block of vCPU `vcpu` of `d` is waiting:
/// the start-up IPI it waits for (after INIT), else an interrupt when
/// `interruptible`, or an NMI (which ends HLT whatever RFLAGS.IF says).
fn event_waiting(d: &Domain, vcpu: u32, (for_sipi, interruptible): (bool, bool)) -> bool {
    // A device-model request in flight: only its answer or timeout (`common::ioreq`).
    if let Some(ends) = d.platform.ioreq.wait_ends(vcpu) {
        ends
    } else if for_sipi {
        d.platform.apic.sipi_recorded(vcpu)
    } else {
        (interruptible && interrupt_waiting(d, vcpu)) || d.platform.apic.nmi_pending(vcpu)
    }
}

/// Whether the block the vCPU of `slot` asks for ends at once: an event is
/// waiting ([`event_waiting`]), or one of its Xen timers is due or fired
/// while it ran (taken here). The vCPU then keeps the CPU.
fn wakes_at_once(slot: &Slot, v: &Running<'_>, now: u64) -> bool {
    let (d, vcpu) = (&slot.domain, slot.id.vcpu);
    event_waiting(d, vcpu, block_kind(slot, v))
        || (slot.up.load(Ordering::SeqCst)
            && (hypercall::xen::timer_due(d, vcpu, now)
                | hypercall::xen::timer_fired_while_running(d, vcpu)))
}

/// The vCPU on `me` blocked (HLT, `SCHEDOP_block`, down): unless its timer
/// is already due, it leaves the CPU until its timer or another event.
fn block_current(me: usize, slot: &Slot, v: &Running<'_>) {
    let now = time::now_ns();
    let kind = block_kind(slot, v);
    if wakes_at_once(slot, v, now) {
        return;
    }
    with(|s| {
        // Checked again under the lock: an interrupt delivered from now on
        // finds the vCPU halted and wakes it (`kick_vcpu`).
        if event_waiting(&slot.domain, slot.id.vcpu, kind) {
            return;
        }
        if s.policy.current(me) == Some(slot.id) {
            slot.halt_masked.store(!kind.1, Ordering::SeqCst);
            slot.halted.store(true, Ordering::SeqCst);
            s.policy.block(me, now);
            if slot.up.load(Ordering::SeqCst)
                && let Some(at) = wake_at(slot, kind.1)
            {
                set_timer(me, slot, at);
            }
        }
    });
}

/// When the halted vCPU of `slot` must look again, system ns: the earliest
/// of its Xen timers (single-shot, periodic), (vCPU 0) its domain's timed devices (PIT,
/// RTC), looked at with interrupts off too (an I/O APIC pin may deliver an
/// NMI), and its local APIC timer when interrupts end its halt.
fn wake_at(slot: &Slot, interruptible: bool) -> Option<u64> {
    let v = slot.id.vcpu;
    if let Some(deadline) = slot.domain.platform.ioreq.deadline(v) {
        return Some(deadline);
    }
    let own = slot.domain.timer_deadline(v);
    let device = if v == 0 {
        slot.domain.platform.device_deadline.load(Ordering::SeqCst)
    } else {
        0
    };
    let apic = if interruptible {
        slot.domain.platform.apic.deadline(v)
    } else {
        0
    };
    [own, device, apic].into_iter().filter(|d| *d != 0).min()
}

/// Gives the vCPU of `slot` its one timer entry, on CPU `me`, for `at`
/// (system ns), replacing the one it had. Called under the scheduler lock.
fn set_timer(me: usize, slot: &Slot, at: u64) {
    clear_timer(slot);
    let Some(list) = TIMERS.get(me) else {
        return;
    };
    list.lock().push(TimerEntry {
        at,
        id: slot.id,
        generation: slot.domain.generation,
    });
    slot.timer_cpu.store(me, Ordering::SeqCst);
}

/// Removes the timer entry of the vCPU of `slot`, if it has one (it woke,
/// or its domain ended).
fn clear_timer(slot: &Slot) {
    let cpu = slot.timer_cpu.swap(NO_CPU, Ordering::SeqCst);
    if let Some(list) = TIMERS.get(cpu) {
        let generation = slot.domain.generation;
        list.lock()
            .retain(|e| e.id != slot.id || e.generation != generation);
    }
}

/// The slot of vCPU `id` of domain generation `generation`; `None` if that
/// incarnation of the domain has ended (a newer one may have the same id).
fn slot_of(s: &State, id: VcpuId, generation: u64) -> Option<Arc<Slot>> {
    s.slots
        .get(&id)
        .filter(|sl| sl.domain.generation == generation)
        .cloned()
}

/// Wakes the vCPUs whose timers on `me` are due; returns the earliest
/// deadline left.
fn fire_timers(me: usize) -> Option<u64> {
    let now = time::now_ns();
    let due: Vec<TimerEntry> = {
        let mut timers = TIMERS.get(me)?.lock();
        let due = timers.iter().filter(|e| e.at <= now).copied().collect();
        timers.retain(|e| e.at > now);
        due
    };
    for TimerEntry { id, generation, .. } in due {
        let Some(slot) = with(|s| slot_of(s, id, generation)).flatten() else {
            continue;
        };
        if !slot.halted.load(Ordering::SeqCst) {
            continue;
        }
        // Its own timer, or a device interrupt or APIC timer that the time
        // passed raised; a stale entry (a newer timer, one stopped, an edge
        // the guest reprogrammed) finds no event and does nothing. Devices
        // are advanced without the scheduler lock: an interrupt they raise
        // may wake other vCPUs.
        let mut event = hypercall::xen::timer_due(&slot.domain, id.vcpu, now);
        if id.vcpu == 0 {
            crate::hvm::vdev::advance_time(&slot.domain.platform, now);
        }
        let apic = crate::hvm::vapic::timer_due(&slot.domain.platform, id.vcpu, now);
        event |= (apic && !slot.halt_masked.load(Ordering::SeqCst)) || halt_ends(&slot);
        if !event {
            // Still halted (an edge that raised nothing: a masked line, an
            // interrupt while RFLAGS.IF is clear): its next wake-up time.
            with(|s| {
                let current = s.slots.get(&id).is_some_and(|sl| Arc::ptr_eq(sl, &slot));
                if current
                    && slot.halted.load(Ordering::SeqCst)
                    && let Some(at) = wake_at(&slot, !slot.halt_masked.load(Ordering::SeqCst))
                        .filter(|a| *a > now)
                {
                    set_timer(me, &slot, at);
                }
            });
            continue;
        }
        let cpu = with(|s| {
            if !slot.halted.load(Ordering::SeqCst) {
                return None;
            }
            unhalt(s, &slot, now)
        })
        .flatten();
        if let Some(c) = cpu {
            tickle(c);
        }
    }
    earliest_timer(me)
}

/// Work done at every scheduling point: timers, domains to rebuild, the
/// console (CPU 0), the measurement, the end of a test run.
fn housekeeping(me: usize) -> bool {
    // Take interrupts that arrived while a guest ran: Bochs 2.7 makes no
    // VM exit for them when the guest has RFLAGS.IF = 0; real processors
    // did exit already and nothing is pending.
    x86_64::instructions::interrupts::enable();
    core::hint::spin_loop();
    x86_64::instructions::interrupts::disable();
    flush_ept(me);
    reclaim();
    check_all_ended();
    fire_timers(me);
    if me == 0
        && let Some(svc) = services()
    {
        (svc.monitor)();
        (svc.measure)();
        if (svc.guest_fault_armed)()
            && with(|s| (1..percpu::online_count()).any(|c| s.policy.current(c).is_some()))
                .unwrap_or(false)
        {
            (svc.cause_guest_fault)();
        }
    }
    !REBUILD.lock().is_empty()
}

/// Builds again the domains that rebooted, and makes the vCPUs of the
/// domains the control domain created and unpaused. Building creates vCPUs
/// on this CPU: nothing may be loaded here.
fn rebuild() {
    let pending: Vec<Arc<Domain>> = core::mem::take(&mut *REBUILD.lock());
    for old in pending {
        if old.is_unstarted() {
            match old.start_vcpus() {
                Ok(vcpus) => {
                    admit(old.clone(), vcpus);
                    // Ended (destroyed) on another CPU between its start
                    // and its admission: its vCPUs were not there to be
                    // taken off then.
                    if old.life.is_ending() {
                        take_off(&old);
                    }
                }
                Err(e) => {
                    log::error!(
                        "domain d{} ({}) cannot start: {e}; it is ended",
                        old.id,
                        old.name
                    );
                    end_domain(&old, EndReason::Crash);
                }
            }
            continue;
        }
        // A created domain destroyed between its unpause and now.
        if old.life.state() != super::domain::State::Dead(EndReason::Reboot) {
            continue;
        }
        match old.rebuild() {
            Ok((domain, vcpus)) => admit(domain, vcpus),
            Err(e) => log::error!(
                "domain d{} ({}) cannot restart: {e}; it stays ended",
                old.id,
                old.name
            ),
        }
    }
}

/// Halts until an interrupt, a tickle or `until`, with the APIC timer armed
/// for the earliest of `until` and this CPU's vCPU timers.
fn idle(me: usize, until: Option<u64>) {
    // A vCPU given back just now may have been a domain's last.
    flush_ept(me);
    reclaim();
    check_all_ended();
    let svc = if me == 0 { services() } else { None };
    if let Some(svc) = svc
        && (svc.departures_pending)()
    {
        // ... and the monitor hands its console back before CPU 0 sleeps.
        (svc.monitor)();
    }
    let next_timer = earliest_timer(me);
    let extra = svc.and_then(|svc| (svc.next_deadline)());
    // Output waiting for the serial line: drain now, and come back in 1 ms
    // (the transmit interrupt may not reach this CPU, or not exist).
    crate::console::pump();
    let poll = if crate::console::output_pending() {
        Some(time::now_ns() + 1_000_000)
    } else if me == 0 && crate::console::input_is_polled() {
        // No receive interrupt: look at the UART every 10 ms.
        Some(time::now_ns() + 10_000_000)
    } else {
        None
    };
    if let Some(at) = [until, next_timer, extra, poll].into_iter().flatten().min() {
        time::arm_at_ns(at);
    }
    if NEED_RESCHED[me].load(Ordering::SeqCst)
        || !REBUILD.lock().is_empty()
        || (me == 0 && crate::hvm::pirq::pending())
    {
        return;
    }
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}

enum SliceEnd {
    /// Ask the policy again (slice over, tickled).
    Resched,
    /// The guest yielded.
    Yield,
    /// The guest blocked.
    Block,
    /// The vCPU went down (`VCPUOP_down`).
    Down,
}

/// What the vCPU does after [`take_apic_events`].
enum ApicTurn {
    /// Enter the guest.
    Go,
    /// Block: INIT came and the start-up IPI has not.
    WaitForSipi,
    /// The restart after INIT and a start-up IPI failed.
    Failed(crate::vcpu::GuestError),
}

/// Acts on what waits in the APIC of `vcpu` (`attention`, not 0) before it
/// enters the guest. An INIT that came while it was up: it restarts if the
/// start-up IPI followed, else it waits for one. Then an NMI (it outranks
/// every maskable interrupt), then the highest vector.
#[inline(never)]
fn take_apic_events(domain: &Domain, vcpu: &mut Running<'_>, attention: u8) -> ApicTurn {
    let index = vcpu.index;
    if attention & crate::hvm::vapic::ATTN_INIT != 0 {
        let Some(vector) = domain.platform.apic.take_sipi(index) else {
            return ApicTurn::WaitForSipi;
        };
        log::debug!(
            "d{}v{index}: INIT and start-up IPI: restarts at {:#x}",
            domain.id,
            u32::from(vector) << 12
        );
        let entry = StartState::RealMode {
            cs: u16::from(vector) << 8,
            ip: 0,
        };
        if let Err(e) = vcpu.arch.restart(entry) {
            return ApicTurn::Failed(e);
        }
    }
    if attention & crate::hvm::vapic::ATTN_NMI != 0
        && domain.platform.apic.take_nmi(index)
        && !vcpu.arch.inject(Event::Nmi)
    {
        domain.platform.apic.return_nmi(index);
    }
    if attention & crate::hvm::vapic::ATTN_VECTOR != 0 {
        let arch = &mut vcpu.arch;
        crate::hvm::vapic::inject(&domain.platform, index, |vector| {
            arch.inject(Event::External(vector))
        });
    }
    ApicTurn::Go
}

/// Runs the held vCPU until a scheduling point.
///
/// The VMX preemption timer ends the slice, and also fires at the earliest
/// single-shot timer of a vCPU that blocked on this CPU: the APIC timer is
/// armed for it too, but Bochs 2.7 delivers no external-interrupt VM exit
/// while the guest runs with RFLAGS.IF = 0 (real processors do; SDM Vol. 3C
/// 26.2), so a sleeper would otherwise wait for the end of the slice.
fn run_slice(me: usize, slot: &Slot, v: &mut Running<'_>, slice_ns: u64) -> SliceEnd {
    // Hot path: an exit that needs no decision costs a TSC read, two
    // compares and one VMWRITE here (no lock, no division).
    let slice_end = time::tsc_at_ns(time::now_ns() + slice_ns.max(50_000));
    let mut next_timer = earliest_timer(me);
    let mut bound = 0;
    let min_run = time::ns_to_tsc(20_000);
    let saved = v.arch.slice_survives_exits();
    let index = slot.id.vcpu;
    let bsp = index == 0;
    let mut device_edge = 0;
    // `device_edge` in TSC ticks (u64::MAX: none), converted once per change.
    let mut device_edge_tsc = u64::MAX;
    loop {
        // vCPU 0 also stops when its domain's timed devices (PIT, RTC) may
        // raise an interrupt, every vCPU when its APIC timer fires.
        let domain = &slot.domain;
        let dev = if bsp {
            domain.platform.device_deadline.load(Ordering::Relaxed)
        } else {
            0
        };
        let lapic = domain.platform.apic.deadline(index);
        // A domain with Xen's interface also stops for its single-shot and
        // periodic timers, whose VIRQ_TIMER must arrive while the vCPU runs.
        let xen_timer = if domain.xen.is_some() {
            domain.timer_deadline(index)
        } else {
            0
        };
        let edge = [dev, lapic, xen_timer]
            .into_iter()
            .filter(|t| *t != 0)
            .min()
            .unwrap_or(0);
        if edge != device_edge {
            device_edge = edge;
            device_edge_tsc = if edge == 0 {
                u64::MAX
            } else {
                time::tsc_at_ns(edge)
            };
            bound = 0;
        }
        let fresh = bound == 0;
        if fresh {
            let wake = match (next_timer, device_edge) {
                (t, 0) => t,
                (Some(t), e) => Some(t.min(e)),
                (None, e) => Some(e),
            };
            if let Some(t) = wake {
                time::arm_at_ns(t);
            }
            bound = wake.map_or(slice_end, |t| time::tsc_at_ns(t).min(slice_end));
        }
        if fresh || !saved {
            let now = cpu::rdtsc();
            v.arch.start_slice(bound.saturating_sub(now).max(min_run));
        }
        if device_edge_tsc <= cpu::rdtsc() {
            let now = time::now_ns();
            if bsp {
                crate::hvm::vdev::advance_time(&domain.platform, now);
            }
            crate::hvm::vapic::timer_due(&domain.platform, index, now);
            if xen_timer != 0 {
                hypercall::xen::timer_due(domain, index, now);
            }
            bound = 0;
        }
        // An answered device-model request completes before anything is injected.
        match exit::ioreq::resume(v, &Ops) {
            exit::ioreq::Resume::Go => {}
            exit::ioreq::Resume::Wait => return SliceEnd::Block,
            exit::ioreq::Resume::Ended => return SliceEnd::Resched,
        }
        // The control domain's physical interrupts (one load when none).
        crate::hvm::pirq::deliver(Some(&domain.platform));
        // One load says whether anything waits in the vCPU's APIC.
        let attention = domain.platform.apic.attention(index);
        if attention != 0 {
            match take_apic_events(domain, v, attention) {
                ApicTurn::Go => {}
                ApicTurn::WaitForSipi => return SliceEnd::Block,
                ApicTurn::Failed(e) => {
                    let detail = alloc::format!("{e}");
                    exit::crash(v, &detail, &Ops);
                    return SliceEnd::Resched;
                }
            }
        }
        if bsp
            && domain.platform.irq_pending.load(Ordering::Relaxed)
            && domain.platform.apic.pic_through()
        {
            let arch = &mut v.arch;
            crate::hvm::vdev::take_interrupt(&domain.platform, |vector| {
                arch.inject(Event::External(vector))
            });
        }
        let exit = v.arch.run();
        let next = exit::handle(v, exit, &Ops);
        let now = cpu::rdtsc();
        if now >= bound {
            if next_timer.is_some_and(|t| time::tsc_at_ns(t) <= now) {
                next_timer = fire_timers(me);
            }
            bound = 0;
        }
        let resched = now >= slice_end || NEED_RESCHED[me].load(Ordering::Relaxed);
        match next {
            Next::Continue | Next::Preempted if !resched => {}
            Next::Interrupted if !resched => {
                next_timer = fire_timers(me);
                bound = 0;
                if me == 0
                    && let Some(svc) = services()
                {
                    (svc.monitor)();
                    (svc.measure)();
                }
                if NEED_RESCHED[me].load(Ordering::Relaxed) {
                    return SliceEnd::Resched;
                }
            }
            Next::Continue | Next::Preempted | Next::Interrupted | Next::Ended => {
                return SliceEnd::Resched;
            }
            Next::Yield => return SliceEnd::Yield,
            // HLT or SCHEDOP_block with a Xen timer (single-shot or
            // periodic) already due returns at once, on the same slice (no
            // scheduling decision);
            // a waiting interrupt goes through `block_current` as before.
            Next::Block
                if !resched
                    && slot.up.load(Ordering::SeqCst)
                    && hypercall::xen::timer_due(&slot.domain, slot.id.vcpu, time::now_ns()) => {}
            Next::Block => return SliceEnd::Block,
            Next::Down => return SliceEnd::Down,
        }
    }
}

/// The earliest single-shot timer of a vCPU that blocked on `me`.
fn earliest_timer(me: usize) -> Option<u64> {
    TIMERS.get(me)?.lock().iter().map(|e| e.at).min()
}

/// Ends the domain of a vCPU that could not be loaded, with a diagnostic
/// line (there is no guest state to show).
fn crash_unloaded(slot: &Slot, reason: &str) {
    let d = slot.domain.clone();
    let mut out = crate::console::Report::new();
    let _ = writeln!(
        out,
        "domain d{} ({}) vCPU{}: {reason}; the domain is stopped",
        d.id, d.name, slot.id.vcpu
    );
    out.emit();
    end_domain(&d, EndReason::Crash);
}

/// With `test-exit`: once every domain has ended, the CPU that sees it first
/// ends the run.
fn check_all_ended() {
    let host_action = HOST_ACTION.load(Ordering::SeqCst);
    if (!TEST_EXIT.load(Ordering::Relaxed) && host_action == 0)
        || domain::live_count() != 0
        || !REBUILD.lock().is_empty()
        || quarantine_waiting()
    {
        return;
    }
    if FINISHING.swap(true, Ordering::SeqCst) {
        return;
    }
    let (clean, summary) = domain::outcome();
    log::info!("all domains ended: {summary}");
    log_exit_counts();
    check_memory_returned();
    // dom0's reboot reboots even under `test-exit` (a scenario's `reboots`).
    if !TEST_EXIT.load(Ordering::Relaxed) || host_action == 2 {
        match host_action {
            2 | 4 => crate::power::reboot(),
            3 => {
                crate::println!("Basalt: the control domain crashed; halted (dom0_crash=halt)");
                crate::arch::x86_64::cpu::halt_forever()
            }
            _ => crate::power::power_off(),
        }
    }
    if clean {
        finish(Verdict::Pass, "");
    } else {
        finish(Verdict::Fail, "a domain crashed or exited non-zero");
    }
}

/// Logs how many VM exits of each reason the domains caused.
fn log_exit_counts() {
    // Room for every reason's name and a 20-digit count.
    let mut line = crate::StackString::<2048>::new();
    crate::stats::format_counts(
        &crate::stats::snapshot(),
        crate::arch::x86_64::hvm::exit_name,
        &mut line,
    );
    log::info!("VM exits: {}", line.as_str());
}

/// Checks by accounting that every frame the domains had (guest memory,
/// VMCS and bitmaps: owner "domains"; EPT tables: owner "page tables") went
/// back to the pool.
fn check_memory_returned() {
    use basalt_frames::Owner;
    let Some(stats) = crate::mm::stats() else {
        return;
    };
    let domain = stats.used_by(Owner::Domain);
    let tables = stats.used_by(Owner::PageTables);
    let before = TABLES_BEFORE.load(Ordering::SeqCst);
    let vpids = crate::arch::x86_64::hvm::tags_in_use();
    if vpids != 0 {
        log::error!("VPIDs: LEAK: {vpids} still in use after every domain ended");
    }
    if domain == 0 && tables == before {
        log::info!(
            "memory: every frame the domains used is back in the pool ({} KiB free)",
            stats.free_frames * 4
        );
    } else {
        log::error!(
            "memory: LEAK: {} KiB still owned by domains, page tables {} KiB (before domains: {} KiB)",
            domain * 4,
            tables * 4,
            before * 4
        );
    }
}
