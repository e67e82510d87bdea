//! Traps: the Rust side of every interrupt and exception, and the fatal-fault
//! report (docs/smp.md).
//!
//! A fault in the hypervisor is never survivable: the faulting CPU stops
//! every other CPU with an NMI, prints one report and ends the run with a
//! FAIL verdict. The report names the CPU, the exception, the error code,
//! RIP/RSP/RFLAGS, CR2 for page faults, the general registers and a
//! frame-pointer backtrace with symbol names.

use crate::arch::x86_64::idt::{self, TrapFrame, vector};
use crate::arch::x86_64::{apic, cpu, percpu};
use crate::verdict::{Verdict, finish};
use crate::{console, mm, println, time};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use x86_64::registers::control::Cr2;

/// Set by the first CPU that faults; NMIs then mean "stop".
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Spurious interrupts seen (all CPUs).
static SPURIOUS: AtomicU64 = AtomicU64::new(0);
/// CPUs that took the stop NMI and halted; of those, the ones that took it
/// while running a guest (a VM exit).
static STOPPED: AtomicU32 = AtomicU32::new(0);
static STOPPED_IN_GUEST: AtomicU32 = AtomicU32::new(0);
/// NMIs taken by a VM exit that were not Basalt's stop (all CPUs).
static HOST_NMIS: AtomicU64 = AtomicU64::new(0);
/// Per CPU: inside a guest's VMRUN (SVM takes the NMIs and interrupts that
/// end a guest through the IDT, at STGI, so the stop NMI's handler asks).
static IN_GUEST: [AtomicBool; percpu::MAX_CPUS] =
    [const { AtomicBool::new(false) }; percpu::MAX_CPUS];

/// Marks CPU `cpu` as running a guest until the next `in_guest(cpu,
/// false)`: a stop NMI taken in between counts as stopping it in a guest.
#[inline(always)]
pub fn in_guest(cpu: usize, running: bool) {
    if let Some(flag) = IN_GUEST.get(cpu) {
        flag.store(running, Ordering::Relaxed);
    }
}
/// Whether the local APICs are up (IPIs and EOIs possible).
static APIC_READY: AtomicBool = AtomicBool::new(false);

/// Marks the local APICs usable for stop IPIs and EOIs.
pub fn set_apic_ready() {
    APIC_READY.store(true, Ordering::SeqCst);
}

/// The handler of the control domain's device vectors (`hvm::pirq`).
static DEVICE_INTERRUPT: spin::Once<fn(u8)> = spin::Once::new();

/// Hands the device vectors ([`vector::PIRQ_FIRST`]-[`vector::PIRQ_LAST`],
/// [`vector::MSI_FIRST`]-[`vector::MSI_LAST`])
/// to `handler`, which runs with interrupts off and must EOI.
pub fn set_device_interrupt(handler: fn(u8)) {
    DEVICE_INTERRUPT.call_once(|| handler);
}

fn device_interrupt(v: u8) {
    match DEVICE_INTERRUPT.get() {
        Some(handler) => handler(v),
        None => apic::eoi(),
    }
}

/// Whether a CPU has faulted or panicked and the machine is stopping.
pub fn is_stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Spurious interrupts seen so far.
pub fn spurious_count() -> u64 {
    SPURIOUS.load(Ordering::Relaxed)
}

#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let v = frame.vector as u8;
    match v {
        vector::NMI if STOPPING.load(Ordering::SeqCst) => {
            if IN_GUEST
                .get(percpu::index())
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                STOPPED_IN_GUEST.fetch_add(1, Ordering::SeqCst);
            }
            stop_here()
        }
        // Not Basalt's stop (a watchdog, a server's NMI button): counted
        // only, since the interrupted code may hold the console's lock.
        vector::NMI => {
            HOST_NMIS.fetch_add(1, Ordering::Relaxed);
        }
        0..=31 => fatal(frame),
        vector::WAKE => apic::eoi(),
        vector::APIC_ERROR => {
            let esr = apic::take_errors();
            log::warn!("local APIC error on cpu{}: ESR {esr:#x}", percpu::index());
            apic::eoi();
        }
        _ if interrupt(v) => {}
        _ => {
            log::warn!(
                "unexpected interrupt vector {v:#x} on cpu{}",
                percpu::index()
            );
            if APIC_READY.load(Ordering::Relaxed) {
                apic::eoi();
            }
        }
    }
}

/// An external interrupt taken during a VM exit (acknowledged on exit):
/// handled as if it had come through the IDT.
pub fn external_interrupt(vector: u8) {
    if !interrupt(vector) {
        apic::eoi();
    }
}

/// The timer, console, device and spurious interrupts, which come through
/// the IDT or with a VM exit alike; false (nothing done) for another vector.
fn interrupt(v: u8) -> bool {
    match v {
        vector::TIMER => {
            time::timer_interrupt();
            apic::eoi();
            console::timer_poll();
        }
        vector::CONSOLE_RX => console::rx_interrupt(),
        vector::PIRQ_FIRST..=vector::PIRQ_LAST | vector::MSI_FIRST..=vector::MSI_LAST => {
            device_interrupt(v)
        }
        vector::SPURIOUS => {
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
        }
        _ => return false,
    }
    true
}

/// An NMI that arrived while this CPU ran a guest (a VM exit, NMI exiting):
/// Basalt's own NMIs mean "stop" (the fatal-fault path); any other (a
/// watchdog, a server's NMI button) is counted and logged, and the blocking
/// the exit left is ended so the next NMI is not held back.
pub fn host_nmi() {
    if STOPPING.load(Ordering::SeqCst) {
        STOPPED_IN_GUEST.fetch_add(1, Ordering::SeqCst);
        stop_here();
    }
    let n = HOST_NMIS.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        log::warn!(
            "NMI on cpu{} while a guest ran ({n} so far)",
            percpu::index()
        );
    }
    cpu::unblock_nmis();
}

/// Stops every other CPU and reports a fatal fault on this one.
fn fatal(frame: &TrapFrame) -> ! {
    if STOPPING.swap(true, Ordering::SeqCst) {
        // Another CPU is already reporting; its NMI may not have arrived yet.
        cpu::halt_forever();
    }
    let sent = nmi_other_cpus();
    console::enter_panic();
    report(frame);
    report_stopped(sent);
    finish(Verdict::Fail, "fatal fault")
}

/// This CPU took the stop NMI: it says so and halts for good.
fn stop_here() -> ! {
    STOPPED.fetch_add(1, Ordering::SeqCst);
    cpu::halt_forever()
}

/// Waits (up to 100 ms) for the `sent` CPUs to take the stop NMI and says
/// how many did: a CPU that did not is still running (NMIs blocked, or
/// stuck with them masked by hardware).
fn report_stopped(sent: u32) {
    if sent == 0 {
        return;
    }
    // Bounded by spins too: early in boot the clock may not run yet.
    let start = time::now_ns();
    for _ in 0..10_000_000u32 {
        if STOPPED.load(Ordering::SeqCst) >= sent
            || time::now_ns().saturating_sub(start) >= 100_000_000
        {
            break;
        }
        core::hint::spin_loop();
    }
    let stopped = STOPPED.load(Ordering::SeqCst);
    let in_guest = STOPPED_IN_GUEST.load(Ordering::SeqCst);
    if stopped >= sent {
        println!("    other CPUs stopped: {stopped} of {sent} ({in_guest} in a guest)");
    } else {
        println!(
            "    other CPUs stopped: {stopped} of {sent} ({in_guest} in a guest; the rest did \
             not take the stop NMI within 100 ms)"
        );
    }
}

/// Stops every other CPU (used by the panic handler too).
pub fn stop_other_cpus() {
    if !STOPPING.swap(true, Ordering::SeqCst) {
        nmi_other_cpus();
    }
}

/// Sends an NMI to every other CPU that Basalt runs on. Never a broadcast:
/// CPUs Basalt did not start may sit in firmware code that cannot take an
/// NMI (SeaBIOS parks them in protected mode with its own IDT).
/// Returns how many were sent.
fn nmi_other_cpus() -> u32 {
    if !APIC_READY.load(Ordering::SeqCst) {
        return 0;
    }
    let me = percpu::index();
    let mut sent = 0;
    for cpu in percpu::all().filter(|c| c.index != me) {
        apic::send_ipi(apic::Delivery::Nmi, apic::Destination::Apic(cpu.apic_id));
        sent += 1;
    }
    sent
}

fn page_fault_cause(error: u64) -> &'static str {
    match (error & 1 != 0, error & 2 != 0, error & 16 != 0) {
        (_, _, true) => "instruction fetch",
        (true, true, _) => "write to a read-only page",
        (true, false, _) => "protection violation on read",
        (false, true, _) => "write to an unmapped page",
        (false, false, _) => "read of an unmapped page",
    }
}

fn report(f: &TrapFrame) {
    let cpu = percpu::current();
    let index = cpu.map_or(0, |c| c.index);
    println!();
    println!(
        "*** FATAL: {} on cpu{index} (vector {}, error code {:#x})",
        idt::exception_name(f.vector),
        f.vector,
        f.error_code
    );
    println!("    RIP {:#018x} {}", f.rip, Symbol(f.rip));
    println!(
        "    RSP {:#018x}  RFLAGS {:#010x}  CS {:#x}  SS {:#x}",
        f.rsp, f.rflags, f.cs, f.ss
    );
    let cr2 = Cr2::read_raw();
    if f.vector == u64::from(vector::PAGE_FAULT) || f.vector == u64::from(vector::DOUBLE_FAULT) {
        let region = mm::describe_address(cr2);
        if f.vector == u64::from(vector::PAGE_FAULT) {
            println!(
                "    CR2 {cr2:#018x}: {} ({region})",
                page_fault_cause(f.error_code)
            );
        } else {
            println!("    CR2 {cr2:#018x} ({region})");
        }
    }
    if f.vector == u64::from(vector::DOUBLE_FAULT) {
        let overflow = percpu::all().find_map(|c| {
            c.stacks
                .guard_of(cr2)
                .or(c.stacks.guard_of(f.rsp))
                .map(|s| (c.index, s))
        });
        match overflow {
            Some((owner, stack)) => println!(
                "    STACK OVERFLOW: cpu{owner}'s {stack} stack ran into its guard page; the page \
                 fault could not be delivered, so the CPU raised a double fault (handled on its \
                 own IST stack)"
            ),
            None => {
                println!("    (not a stack overflow: RSP and CR2 are outside every guard page)")
            }
        }
    }
    println!(
        "    RAX {:#018x} RBX {:#018x} RCX {:#018x} RDX {:#018x}",
        f.rax, f.rbx, f.rcx, f.rdx
    );
    println!(
        "    RSI {:#018x} RDI {:#018x} RBP {:#018x} R8  {:#018x}",
        f.rsi, f.rdi, f.rbp, f.r8
    );
    println!(
        "    R9  {:#018x} R10 {:#018x} R11 {:#018x} R12 {:#018x}",
        f.r9, f.r10, f.r11, f.r12
    );
    println!(
        "    R13 {:#018x} R14 {:#018x} R15 {:#018x}",
        f.r13, f.r14, f.r15
    );
    println!("    backtrace:");
    println!("      #0  {:#018x} {}", f.rip, Symbol(f.rip));
    backtrace(f.rbp, 1);
}

/// Prints the frame-pointer chain starting at `rbp`, numbering from `first`.
pub fn backtrace(mut rbp: u64, first: usize) {
    let stacks = percpu::current().map(|c| c.stacks);
    let readable = |addr: u64| {
        addr.is_multiple_of(8)
            && (stacks.is_some_and(|s| s.contains(addr) && s.contains(addr + 8))
                || mm::in_boot_stack(addr) && mm::in_boot_stack(addr + 8))
    };
    for n in first..first + 32 {
        if rbp == 0 || !readable(rbp) {
            break;
        }
        // SAFETY: `rbp` lies inside one of this CPU's mapped stacks
        // (checked above).
        let next = unsafe { *(rbp as *const u64) };
        // SAFETY: so does `rbp + 8`.
        let ret = unsafe { *((rbp + 8) as *const u64) };
        if ret == 0 {
            break;
        }
        println!("      #{n:<2} {ret:#018x} {}", Symbol(ret));
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}

/// An address printed as `<function+0xoffset>` when the symbol table knows it.
pub struct Symbol(pub u64);

impl core::fmt::Display for Symbol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match mm::symbols().and_then(|s| s.lookup(self.0)) {
            Some((name, offset)) => write!(f, "<{:#}+{offset:#x}>", rustc_demangle::demangle(name)),
            None => write!(f, "<?>"),
        }
    }
}
