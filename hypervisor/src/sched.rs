//! Running vCPUs (docs/vmx.md, "Scheduling"): each physical CPU has a run
//! queue of the vCPUs placed on it; they take turns on the VMX preemption
//! timer. Blocked vCPUs (HLT, SCHEDOP_block) wait for their single-shot
//! timer and cost nothing; a CPU with nothing runnable halts. This is the
//! minimal policy; the proportional-share scheduler replaces `pick`.

use crate::arch::x86_64::{apic, cpu, idt, percpu};
use crate::domain::{self, EndReason, Vcpu};
use crate::hypercall::{self, After};
use crate::vcpu::VcpuExit;
use crate::verdict::{Verdict, finish};
use crate::{println, time};
use alloc::collections::VecDeque;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

const MAX_CPUS: usize = percpu::MAX_CPUS;

static QUEUES: [Mutex<VecDeque<Vcpu>>; MAX_CPUS] =
    [const { Mutex::new(VecDeque::new()) }; MAX_CPUS];
static TEST_EXIT: AtomicBool = AtomicBool::new(false);
/// Frames used for page tables before any domain existed (EPT tables of
/// domains come on top and must all be returned).
static TABLES_BEFORE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static FINISHING: AtomicBool = AtomicBool::new(false);

/// Time slice: 10 ms.
const SLICE_NS: u64 = 10_000_000;

/// Places `vcpus` on the online CPUs (round robin, or the first CPU of a
/// domain's `cpus=` list) and wakes the CPUs.
pub fn start(vcpus: alloc::vec::Vec<Vcpu>, test_exit: bool, tables_before: u64) {
    TEST_EXIT.store(test_exit, Ordering::SeqCst);
    TABLES_BEFORE.store(tables_before, Ordering::SeqCst);
    let online = percpu::online_count().max(1);
    for (n, v) in vcpus.into_iter().enumerate() {
        let target = v
            .domain
            .pinned_cpu
            .filter(|c| *c < online)
            .unwrap_or(n % online);
        log::info!("d{}v{} runs on cpu{target}", v.domain.id, v.index);
        QUEUES[target].lock().push_back(v);
    }
    for c in percpu::all().filter(|c| c.index != percpu::index()) {
        apic::send_ipi(
            apic::Delivery::Fixed(idt::vector::WAKE),
            apic::Destination::Apic(c.apic_id),
        );
    }
}

/// Every CPU's loop once guests exist.
pub fn run() -> ! {
    let me = percpu::index();
    let slice = time::ns_to_tsc(SLICE_NS);
    let mut loaded: Option<(u32, u32)> = None;
    loop {
        check_all_ended();
        let next = QUEUES[me].lock().pop_front();
        let Some(mut v) = next else {
            wait(None);
            continue;
        };
        if !v.domain.is_running() {
            if loaded == Some((v.domain.id, v.index)) {
                v.arch.unload();
                loaded = None;
            }
            continue;
        }
        if v.blocked {
            let now = cpu::rdtsc();
            if v.timer_deadline != 0 && now >= v.timer_deadline {
                v.blocked = false;
                v.timer_deadline = 0;
            } else {
                let deadline = v.timer_deadline;
                QUEUES[me].lock().push_back(v);
                // Everyone here blocked? Then halt until the earliest timer.
                if all_blocked(me) {
                    wait(earliest_deadline(me).or((deadline != 0).then_some(deadline)));
                }
                continue;
            }
        }
        let id = (v.domain.id, v.index);
        if loaded != Some(id) {
            if let Some(prev) = loaded {
                unload_in_queue(me, prev);
            }
            if let Err(e) = v.arch.load() {
                crash(&mut v, &alloc::format!("{e}"));
                continue;
            }
            loaded = Some(id);
        }
        // One time slice: exits that need no scheduling decision loop here.
        let slice_end = cpu::rdtsc().wrapping_add(slice);
        v.arch.start_slice(slice);
        loop {
            let exit = v.arch.run();
            match handle(&mut v, exit) {
                Next::Continue if cpu::rdtsc() < slice_end => continue,
                Next::Continue | Next::Keep => {
                    QUEUES[me].lock().push_back(v);
                    break;
                }
                Next::Drop => {
                    v.arch.unload();
                    loaded = None;
                    break;
                }
            }
        }
    }
}

enum Next {
    /// Run the same vCPU again (within its slice).
    Continue,
    /// Back into the run queue.
    Keep,
    /// The vCPU's domain ended.
    Drop,
}

fn handle(v: &mut Vcpu, exit: VcpuExit) -> Next {
    match exit {
        VcpuExit::Hypercall => match hypercall::dispatch(v) {
            After::Continue => Next::Continue,
            After::Yield => Next::Keep,
            After::Block => {
                v.blocked = true;
                Next::Keep
            }
            After::Ended => Next::Drop,
        },
        VcpuExit::IoOut { port, size, value } => {
            log::trace!("d{}: out{size} {port:#x} <- {value:#x}", v.domain.id);
            if port == 0xe9 {
                v.domain.console_write(&[value as u8]);
            }
            // Other ports: no device behind them; writes are ignored.
            v.arch.skip_instruction();
            Next::Continue
        }
        VcpuExit::IoIn { port, size } => {
            log::trace!("d{}: in{size} {port:#x}", v.domain.id);
            // No device: the bus floats high.
            let mask = match size {
                1 => 0xff,
                2 => 0xffff,
                _ => 0xffff_ffff,
            };
            v.arch.regs.rax |= mask;
            v.arch.skip_instruction();
            Next::Continue
        }
        VcpuExit::Halt => {
            v.blocked = true;
            Next::Keep
        }
        VcpuExit::Preempted => Next::Keep,
        VcpuExit::Interrupted => Next::Continue,
        VcpuExit::Error(e) => {
            let detail = alloc::format!("{e}");
            crash(v, &detail);
            Next::Drop
        }
    }
}

/// Ends `v`'s domain for a guest error, with a diagnostic line and the VMCS.
fn crash(v: &mut Vcpu, reason: &str) {
    let d = &v.domain;
    println!(
        "domain d{} ({}) vCPU{}: {reason} at RIP {:#x}; the domain is stopped",
        d.id,
        d.name,
        v.index,
        v.arch.rip()
    );
    let mut out = crate::console::Writer;
    v.arch.dump(&mut out);
    d.end(EndReason::Crash);
}

fn unload_in_queue(me: usize, id: (u32, u32)) {
    let mut q = QUEUES[me].lock();
    if let Some(v) = q.iter_mut().find(|v| (v.domain.id, v.index) == id) {
        v.arch.unload();
    }
}

fn all_blocked(me: usize) -> bool {
    QUEUES[me]
        .lock()
        .iter()
        .all(|v| v.blocked || !v.domain.is_running())
}

fn earliest_deadline(me: usize) -> Option<u64> {
    QUEUES[me]
        .lock()
        .iter()
        .filter(|v| v.blocked && v.timer_deadline != 0)
        .map(|v| v.timer_deadline)
        .min()
}

/// Halts until an interrupt (and the timer at `deadline`, if any).
fn wait(deadline: Option<u64>) {
    if let Some(d) = deadline {
        apic::arm_timer(idt::vector::TIMER, d, time::tsc_hz());
    }
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}

/// With `test-exit`: once every domain has ended, the CPU that sees it first
/// ends the run.
fn check_all_ended() {
    if !TEST_EXIT.load(Ordering::Relaxed) || domain::live_count() != 0 {
        return;
    }
    if FINISHING.swap(true, Ordering::SeqCst) {
        return;
    }
    let (clean, summary) = domain::outcome();
    log::info!("all domains ended: {summary}");
    log_exit_counts();
    check_memory_returned();
    if clean {
        finish(Verdict::Pass, "");
    } else {
        finish(Verdict::Fail, "a domain crashed or exited non-zero");
    }
}

/// Logs how many VM exits of each reason the domains caused.
fn log_exit_counts() {
    let counts = crate::stats::snapshot();
    let mut line = crate::StackString::<400>::new();
    for (reason, count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        let name = basalt_vmx::exit::ExitReason::from_basic(reason as u16);
        line.push_fmt(format_args!("{} {count}, ", name.name()));
    }
    log::info!("VM exits: {}", line.as_str().trim_end_matches(", "));
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
