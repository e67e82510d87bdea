//! The virtual local APICs and I/O APIC, end to end, in a domain of two
//! vCPUs (`vcpus=2`); vCPU 1 is started the way firmware starts an
//! application processor, with INIT and start-up IPIs, never with Xen's
//! `VCPUOP_initialise`/`VCPUOP_up`.
//!
//! 1. CPUID.1 shows the APIC (EDX bit 9) and initial APIC ID 0;
//!    `IA32_APIC_BASE` reads 0xFEE00900 (enabled, BSP).
//! 2. The xAPIC page: ID 0, version 0x00050014, software-disabled after
//!    reset (SVR 0xFF, LVTs masked), enabled by SVR 0x1FF; TPR reads back
//!    (and shows in PPR).
//! 3. The timer (divide by 1 at the 1 MHz crystal of CPUID.15h): one-shot
//!    `oneshot_us=` (20000) counts down and fires vector 0x40 once, no
//!    earlier than due and within 10 %; periodic, `periods=` (10) periods
//!    of `period_us=` (1000) take their time within 10 %.
//! 4. A self-IPI (ICR shorthand self, fixed vector 0x41) waits in IRR while
//!    TPR masks its class, arrives once TPR drops, and EOI clears ISR.
//!    4b. `cli; hlt` with the one-shot timer (a maskable interrupt) due in
//!    2 ms sleeps until the 30 ms single-shot timer; `sti` then takes the
//!    interrupt. An NMI IPI (delivery mode NMI, physical destination 0) is
//!    taken with interrupts off; a second one sent from the first's
//!    handler waits for its IRET, then arrives.
//! 5. INIT, then two start-up IPIs (vector 0x08) to APIC ID 1 start vCPU 1
//!    in real mode at 0800:0000, in a trampoline copied to 0x8000: it
//!    enters 32-bit protected mode (flat GDT, paging off), reads its xAPIC
//!    ID and version, `IA32_APIC_BASE` and CPUID.1 EBX, enables its APIC,
//!    loads a small IDT and waits in `sti; hlt`; vCPU 0 sees APIC ID 1, no
//!    BSP bit, and then sends it a fixed IPI (vector 0x42) that its
//!    handler counts.
//! 6. The I/O APIC: version 0x00170011; the PIT (channel 0, rate generator
//!    at `pit_hz=` (1000)) on pin 2 routed to vector 0x50, fixed, physical
//!    APIC ID 0, with the 8259s masked and LINT0 masked: `pit_ticks=` (20)
//!    periods take their time within 10 %. Then the same pin in delivery
//!    mode NMI (a periodic NMI) ends `cli; hlt`.
//! 7. The TSC-deadline timer (CPUID.1:ECX bit 24), still in xAPIC mode:
//!    LVT timer mode 10 with vector 0x43, `IA32_TSC_DEADLINE` armed
//!    `deadline_us=` (5000) ahead of RDTSC fires once, no earlier than due
//!    and within 10 %, and reads 0 afterwards; writing 0 disarms a deadline
//!    2 ms ahead (nothing comes in the 5 ms after). Under Bochs a wake-up
//!    from HLT by the timer costs about 0.7 ms of guest time (13 % of
//!    5 ms), so `bochs-guest-apic` sets `deadline_us=20000`, as the
//!    one-shot's 20 ms.
//! 8. x2APIC mode (CPUID.1:ECX bit 21), last, since it changes the
//!    interface: `IA32_APIC_BASE` EN|EXTD; MSR 0x802 (ID) reads 0, 0x803
//!    the xAPIC version, 0x80D the derived LDR 0x1; SVR and TPR write
//!    through their MSRs and read back; a self-IPI through the SELF IPI
//!    MSR 0x83F (vector 0x44) arrives and its EOI (WRMSR 0x80B) clears
//!    ISR; a fixed IPI through the 64-bit ICR (MSR 0x830, destination in
//!    bits 63:32) reaches the AP, whose APIC is still in xAPIC mode
//!    (physical destination 1 matches its xAPIC ID); the xAPIC page reads
//!    all ones (vapic.rs: the page is not decoded outside xAPIC mode) and
//!    ignores writes; going back to xAPIC mode (EN only) raises #GP and
//!    leaves the APIC in x2APIC mode.
//!
//! Times are measured with the TSC, whose rate CPUID.15h gives
//! (ECX * EBX / EAX); a periodic source is timed from its first interrupt
//! to its last (the wake-up latency cancels out), and the intervals are
//! printed. The handler stops a periodic source itself once the step has
//! its interrupts, so that a rate the machine cannot keep up with shows as
//! a wrong period rather than a guest stuck in its handler: under Bochs
//! (4 MIPS) a PIT interrupt through the I/O APIC, its injection and the
//! emulated EOI cost about 2 ms of guest time, so `bochs-guest-apic` runs
//! the PIT at `pit_hz=200`. Figures: `lapic_oneshot_error_permille`,
//! `lapic_periodic_error_permille`, `ioapic_pit_error_permille`,
//! `lapic_deadline_error_permille`, and, for
//! the record, `lapic_mmio_read_ns` and `io_port_read_ns` (the cost of an
//! emulated xAPIC read and of an I/O port read).

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{
    GP, NMI, cpuid, inb, init_pic_pair, outb, rdmsr_checked, rdtsc, set_interrupt_handler, show,
    show_unit, wrmsr_checked,
};
use basalt_test_guests::hypercall::{
    sched_yield, set_singleshot_timer, stop_singleshot_timer, system_time_ns,
};
use basalt_test_guests::{Checks, arg_u64, print, println};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

basalt_test_guests::entry!(main);

/// The xAPIC page.
const LAPIC: usize = 0xFEE0_0000;
/// The I/O APIC page.
const IOAPIC: usize = 0xFEC0_0000;

const REG_ID: u32 = 0x020;
const REG_VERSION: u32 = 0x030;
const REG_TPR: u32 = 0x080;
const REG_PPR: u32 = 0x0A0;
const REG_EOI: u32 = 0x0B0;
const REG_SVR: u32 = 0x0F0;
const REG_ISR: u32 = 0x100;
const REG_IRR: u32 = 0x200;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_LVT_LINT0: u32 = 0x350;
const REG_LVT_LINT1: u32 = 0x360;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

/// The version register the model answers: version 0x14, highest LVT 5.
const LAPIC_VERSION: u32 = 0x0005_0014;
/// `IA32_APIC_BASE`.
const MSR_APIC_BASE: u32 = 0x1B;
/// 0xFEE00000, enabled (bit 11), bootstrap processor (bit 8).
const APIC_BASE_BSP_VALUE: u64 = 0xFEE0_0900;
/// An application processor's: no BSP bit.
const APIC_BASE_AP_VALUE: u64 = 0xFEE0_0800;
/// `IA32_APIC_BASE` bit 10, x2APIC mode (EXTD), and bit 11, enabled (EN).
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_EN: u64 = 1 << 11;
/// `IA32_TSC_DEADLINE`.
const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// The x2APIC registers as MSRs (0x800 + xAPIC offset / 16).
const X2APIC_ID: u32 = 0x802;
const X2APIC_VERSION: u32 = 0x803;
const X2APIC_TPR: u32 = 0x808;
const X2APIC_EOI: u32 = 0x80B;
const X2APIC_LDR: u32 = 0x80D;
const X2APIC_SVR: u32 = 0x80F;
const X2APIC_ISR: u32 = 0x810;
const X2APIC_IRR: u32 = 0x820;
const X2APIC_ICR: u32 = 0x830;
const X2APIC_SELF_IPI: u32 = 0x83F;
/// CPUID.1:ECX: x2APIC (bit 21), TSC-deadline timer (bit 24).
const CPUID_1_ECX_X2APIC: u32 = 1 << 21;
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_EXTINT: u32 = 0x700;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
const LVT_TIMER_TSC_DEADLINE: u32 = 2 << 17;
/// Divide configuration 1011: divide by 1.
const DIVIDE_BY_1: u32 = 0xB;
/// ICR: delivery modes, level, trigger, shorthand.
const ICR_INIT: u32 = 0x500;
const ICR_STARTUP: u32 = 0x600;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_LEVEL: u32 = 1 << 15;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_SELF: u32 = 1 << 18;
const ICR_NMI: u32 = 0x400;
/// Redirection entry delivery mode NMI (bits 10:8 = 100).
const RTE_NMI: u32 = 0x400;

/// The I/O APIC's registers.
const IOREGSEL: usize = 0x00;
const IOWIN: usize = 0x10;
const IOAPIC_VERSION_INDEX: u32 = 0x01;
/// Version 0x11, highest redirection entry 23.
const IOAPIC_VERSION: u32 = 0x0017_0011;
/// The pin the PIT (ISA IRQ 0) is wired to.
const PIT_PIN: u32 = 2;
/// The index of its redirection entry's low half (the high half follows).
const PIT_RTE: u32 = 0x10 + 2 * PIT_PIN;
const RTE_MASKED: u32 = 1 << 16;

const TIMER_VECTOR: u8 = 0x40;
const SELF_IPI_VECTOR: u8 = 0x41;
const AP_IPI_VECTOR: u8 = 0x42;
const DEADLINE_VECTOR: u8 = 0x43;
const X2APIC_IPI_VECTOR: u8 = 0x44;
const PIT_VECTOR: u8 = 0x50;
const SPURIOUS_VECTOR: u8 = 0xFF;

/// The 8254's input clock.
const PIT_HZ: u64 = 1_193_182;
/// The APIC timer's input clock (the CPUID.15h crystal).
const TIMER_HZ: u64 = 1_000_000;

/// Where the application processor's trampoline goes (below 1 MiB, 4 KiB
/// aligned): a start-up IPI with vector 0x08 starts it at 0800:0000.
const TRAMPOLINE: usize = 0x8000;
const SIPI_VECTOR: u32 = (TRAMPOLINE >> 12) as u32;
/// What the AP writes to its flag once it waits for interrupts.
const AP_READY: u32 = 0x4150_5244;

/// Offsets in the trampoline's data block (`apic_tramp_data`), which the
/// AP fills in.
const AP_STAGE: usize = 0;
const AP_FLAG: usize = 4;
const AP_ID_REG: usize = 8;
const AP_VERSION: usize = 12;
const AP_BASE_LO: usize = 16;
const AP_BASE_HI: usize = 20;
const AP_CPUID_EBX: usize = 24;
const AP_SVR: usize = 28;
const AP_IPIS: usize = 32;
const AP_DATA_SIZE: usize = 36;

// The application processor's start: real mode at 0800:0000 (a copy of
// this block at TRAMPOLINE), then 32-bit protected mode with flat segments
// and paging off. Addresses are the copy's: TRAMPOLINE + offset in the
// block. The real-mode part addresses the block through DS = CS = 0x0800.
core::arch::global_asm!(
    r#"
    .pushsection .rodata.apic_trampoline, "a", @progbits
    .balign 16
    .globl apic_tramp_start
apic_tramp_start:
    .code16
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    movl $1, apic_tramp_data - apic_tramp_start + {STAGE}
    lgdtl tramp_gdt_desc - apic_tramp_start
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, ${BASE} + tramp_pm32 - apic_tramp_start

    .code32
tramp_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl ${BASE}, %esp
    movl $2, {BASE} + apic_tramp_data - apic_tramp_start + {STAGE}
    movl ${LAPIC}, %ebx
    movl {REG_ID}(%ebx), %eax
    movl %eax, {BASE} + apic_tramp_data - apic_tramp_start + {ID_REG}
    movl {REG_VERSION}(%ebx), %eax
    movl %eax, {BASE} + apic_tramp_data - apic_tramp_start + {VERSION}
    movl ${MSR_APIC_BASE}, %ecx
    rdmsr
    movl %eax, {BASE} + apic_tramp_data - apic_tramp_start + {BASE_LO}
    movl %edx, {BASE} + apic_tramp_data - apic_tramp_start + {BASE_HI}
    movl $1, %eax
    xorl %ecx, %ecx
    cpuid
    movl %ebx, {BASE} + apic_tramp_data - apic_tramp_start + {CPUID_EBX}
    lidtl {BASE} + tramp_idt_desc - apic_tramp_start
    movl ${LAPIC}, %ebx
    movl $0x1ff, {REG_SVR}(%ebx)
    movl {REG_SVR}(%ebx), %eax
    movl %eax, {BASE} + apic_tramp_data - apic_tramp_start + {SVR}
    movl ${READY}, {BASE} + apic_tramp_data - apic_tramp_start + {FLAG}
1:  sti
    hlt
    jmp 1b

    /* The fixed IPI: count it, EOI. */
tramp_ipi:
    lock incl {BASE} + apic_tramp_data - apic_tramp_start + {IPIS}
    movl $0, {LAPIC} + {REG_EOI}
    iretl

    .balign 8
tramp_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff        /* 0x08: flat 32-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: flat data */
tramp_gdt_desc:
    .word 23
    .long {BASE} + tramp_gdt - apic_tramp_start
tramp_idt_desc:
    .word ({AP_VECTOR} + 1) * 8 - 1
    .long {BASE} + tramp_idt - apic_tramp_start
    .balign 8
tramp_idt:
    .fill {AP_VECTOR}, 8, 0
    .word {BASE} + tramp_ipi - apic_tramp_start
    .word 0x08
    .byte 0
    .byte 0x8e                      /* present 32-bit interrupt gate */
    .word 0
    .balign 4
    .globl apic_tramp_data
apic_tramp_data:
    .fill {DATA_SIZE}, 1, 0
    .globl apic_tramp_end
apic_tramp_end:
    .code64
    .popsection
"#,
    BASE = const TRAMPOLINE,
    LAPIC = const LAPIC,
    REG_ID = const REG_ID,
    REG_VERSION = const REG_VERSION,
    REG_SVR = const REG_SVR,
    REG_EOI = const REG_EOI,
    MSR_APIC_BASE = const MSR_APIC_BASE,
    READY = const AP_READY,
    AP_VECTOR = const AP_IPI_VECTOR,
    STAGE = const AP_STAGE,
    FLAG = const AP_FLAG,
    ID_REG = const AP_ID_REG,
    VERSION = const AP_VERSION,
    BASE_LO = const AP_BASE_LO,
    BASE_HI = const AP_BASE_HI,
    CPUID_EBX = const AP_CPUID_EBX,
    SVR = const AP_SVR,
    IPIS = const AP_IPIS,
    DATA_SIZE = const AP_DATA_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    /// The trampoline block (`global_asm!` above).
    static apic_tramp_start: u8;
    /// Its data block, inside it.
    static apic_tramp_data: u8;
    /// Its end.
    static apic_tramp_end: u8;
}

/// What the interrupt handler saw of one vector.
struct Seen {
    count: AtomicU32,
    first_tsc: AtomicU64,
    last_tsc: AtomicU64,
}

static SEEN: [Seen; 256] = [const {
    Seen {
        count: AtomicU32::new(0),
        first_tsc: AtomicU64::new(0),
        last_tsc: AtomicU64::new(0),
    }
}; 256];
/// Interrupts of vectors no step expects, and the last such vector.
static STRAY: AtomicU32 = AtomicU32::new(0);
static STRAY_VECTOR: AtomicU32 = AtomicU32::new(0);
/// The TSC at each of the first [`TRACE_LEN`] interrupts since the last
/// [`reset`], for the intervals printed.
const TRACE_LEN: usize = 32;
static TRACE: [AtomicU64; TRACE_LEN] = [const { AtomicU64::new(0) }; TRACE_LEN];
/// The periodic timer and the PIT pin stop at this many interrupts (0:
/// never).
static STOP_AT: AtomicU32 = AtomicU32::new(0);
/// vCPU 0's APIC is in x2APIC mode: EOI through MSR 0x80B (the xAPIC page
/// ignores writes then).
static X2APIC: AtomicBool = AtomicBool::new(false);

/// A 32-bit read of an APIC page (a plain `mov`, which Basalt emulates).
fn mmio_read(addr: usize) -> u32 {
    // SAFETY: the APIC pages are identity-mapped (entry.S maps the first
    // 5 GiB); reading a register has no side effect the test does not
    // expect.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// A 32-bit write to an APIC page.
fn mmio_write(addr: usize, value: u32) {
    // SAFETY: as `mmio_read`; the register writes are the test.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

fn lapic_read(reg: u32) -> u32 {
    mmio_read(LAPIC + reg as usize)
}

fn lapic_write(reg: u32, value: u32) {
    mmio_write(LAPIC + reg as usize, value);
}

/// I/O APIC register `index`: IOREGSEL selects, IOWIN reads.
fn ioapic_read(index: u32) -> u32 {
    mmio_write(IOAPIC + IOREGSEL, index);
    mmio_read(IOAPIC + IOWIN)
}

fn ioapic_write(index: u32, value: u32) {
    mmio_write(IOAPIC + IOREGSEL, index);
    mmio_write(IOAPIC + IOWIN, value);
}

/// Bit `vector` of the eight-register bank (ISR, TMR, IRR) at `base`.
fn apic_bit(base: u32, vector: u8) -> bool {
    let reg = base + u32::from(vector / 32) * 0x10;
    lapic_read(reg) & (1 << (vector % 32)) != 0
}

/// NMIs taken (vector 2; never in SEEN: an NMI has no EOI).
static NMIS: AtomicU32 = AtomicU32::new(0);
/// Set by a step: the first NMI's handler sends a second NMI to this
/// vCPU and spins [`NMI_SPIN_TICKS`], then records in [`NMIS_INSIDE`] how
/// many NMIs had been taken by then.
static NMI_NEST: AtomicBool = AtomicBool::new(false);
static NMI_SPIN_TICKS: AtomicU64 = AtomicU64::new(0);
static NMIS_INSIDE: AtomicU32 = AtomicU32::new(0);

fn on_nmi() {
    let n = NMIS.fetch_add(1, Ordering::SeqCst) + 1;
    if n == 1 && NMI_NEST.load(Ordering::Relaxed) {
        lapic_write(REG_ICR_HIGH, 0);
        lapic_write(REG_ICR_LOW, ICR_NMI | ICR_ASSERT);
        let end = rdtsc() + NMI_SPIN_TICKS.load(Ordering::Relaxed);
        while rdtsc() < end {
            core::hint::spin_loop();
        }
        NMIS_INSIDE.store(NMIS.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

fn on_interrupt(vector: u8) {
    if vector == NMI {
        on_nmi();
        return;
    }
    let now = rdtsc();
    let seen = &SEEN[usize::from(vector)];
    if seen.count.load(Ordering::Relaxed) == 0 {
        seen.first_tsc.store(now, Ordering::Relaxed);
    }
    seen.last_tsc.store(now, Ordering::Relaxed);
    let n = seen.count.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(t) = TRACE.get(n as usize - 1) {
        t.store(now, Ordering::Relaxed);
    }
    // The periodic sources stop themselves after the interrupts a step
    // waits for, so that a rate the machine cannot keep up with (Bochs:
    // an exit costs hundreds of microseconds) shows as a wrong period
    // instead of a guest that never leaves its handler.
    let stop = n == STOP_AT.load(Ordering::Relaxed);
    match vector {
        TIMER_VECTOR if stop => lapic_write(REG_TIMER_INITIAL, 0),
        PIT_VECTOR if stop => ioapic_write(PIT_RTE, RTE_MASKED | u32::from(PIT_VECTOR)),
        TIMER_VECTOR | SELF_IPI_VECTOR | PIT_VECTOR | DEADLINE_VECTOR | X2APIC_IPI_VECTOR => {}
        // A spurious interrupt is not in service: no EOI.
        SPURIOUS_VECTOR => return,
        _ => {
            STRAY.fetch_add(1, Ordering::Relaxed);
            STRAY_VECTOR.store(u32::from(vector), Ordering::Relaxed);
        }
    }
    eoi();
}

/// End of interrupt, through the interface the APIC's mode has.
fn eoi() {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: an EOI write of 0 is what the handler means to do.
        let _ = unsafe { wrmsr_checked(X2APIC_EOI, 0) };
    } else {
        lapic_write(REG_EOI, 0);
    }
}

fn reset(vector: u8) {
    let seen = &SEEN[usize::from(vector)];
    seen.count.store(0, Ordering::Relaxed);
    seen.first_tsc.store(0, Ordering::Relaxed);
    seen.last_tsc.store(0, Ordering::Relaxed);
}

/// Prints the intervals between the traced interrupts of `vector`.
fn print_intervals(what: &str, vector: u8, clock: &Clock) {
    let n = (count(vector) as usize).min(TRACE_LEN);
    print!("apic: {what} intervals (us):");
    for pair in TRACE[..n].windows(2) {
        let dt = pair[1].load(Ordering::Relaxed) - pair[0].load(Ordering::Relaxed);
        print!(" {}", clock.us(dt));
    }
    println!();
}

fn count(vector: u8) -> u32 {
    SEEN[usize::from(vector)].count.load(Ordering::Relaxed)
}

/// Sleeps in `sti; hlt` until `vector` came `n` times.
fn halt_until(vector: u8, n: u32) {
    while count(vector) < n {
        // SAFETY: every vector reaches `on_interrupt`; `sti; hlt` waits
        // atomically for the next interrupt, which the handler counts.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
    }
}

/// Sleeps in `sti; hlt` until `vector` came `n` times or `max_us` passed
/// (a single-shot timer wakes the vCPU then, should the interrupt never
/// come); returns whether it came.
fn halt_until_bounded(vector: u8, n: u32, clock: &Clock, max_us: u64) -> bool {
    let end = rdtsc() + clock.ticks_us(max_us);
    let now_ns = system_time_ns();
    if now_ns > 0 {
        set_singleshot_timer(now_ns as u64 + max_us * 1000);
    }
    while count(vector) < n && rdtsc() < end {
        // SAFETY: as `halt_until`; the single-shot timer ends the wait.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nostack)) };
    }
    stop_singleshot_timer();
    count(vector) >= n
}

/// Runs with interrupts on (spinning, no HLT) until `done` or `ticks` TSC
/// ticks passed; returns `done()`.
fn spin_interruptible(ticks: u64, done: impl Fn() -> bool) -> bool {
    let end = rdtsc() + ticks;
    // SAFETY: every vector reaches `on_interrupt`.
    unsafe { core::arch::asm!("sti", options(nostack)) };
    while !done() && rdtsc() < end {
        core::hint::spin_loop();
    }
    // SAFETY: interrupts off again, as the rest of the guest runs.
    unsafe { core::arch::asm!("cli", options(nostack)) };
    done()
}

/// The TSC frequency in Hz from CPUID.15h (ECX * EBX / EAX), 0 if absent.
fn tsc_hz() -> u64 {
    let (den, num, crystal, _) = cpuid(0x15, 0);
    if den == 0 {
        return 0;
    }
    u64::from(crystal) * u64::from(num) / u64::from(den)
}

/// Per mille `actual` is off `expected` (signed).
fn error_permille(actual: u64, expected: u64) -> i64 {
    (actual as i64 - expected as i64) * 1000 / (expected.max(1) as i64)
}

fn read_ap(offset: usize) -> u32 {
    // SAFETY: the trampoline's copy lies in guest RAM below 1 MiB, inside
    // the identity map; the AP writes these words, hence volatile.
    unsafe {
        core::ptr::read_volatile((TRAMPOLINE + trampoline_data_offset() + offset) as *const u32)
    }
}

fn trampoline_data_offset() -> usize {
    (&raw const apic_tramp_data) as usize - (&raw const apic_tramp_start) as usize
}

/// Copies the trampoline to [`TRAMPOLINE`]; returns its length.
fn install_trampoline() -> usize {
    let start = &raw const apic_tramp_start;
    let len = (&raw const apic_tramp_end) as usize - start as usize;
    // SAFETY: the block is `len` bytes of .rodata; TRAMPOLINE.. is unused
    // guest RAM below 1 MiB (the image and the start info live above
    // 1 MiB), identity-mapped.
    unsafe { core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len) };
    len
}

struct Clock {
    tsc_hz: u64,
}

impl Clock {
    fn ticks_us(&self, us: u64) -> u64 {
        (u128::from(us) * u128::from(self.tsc_hz) / 1_000_000) as u64
    }

    fn us(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * 1_000_000 / u128::from(self.tsc_hz.max(1))) as u64
    }

    fn delay_us(&self, us: u64) {
        let end = rdtsc() + self.ticks_us(us);
        while rdtsc() < end {
            core::hint::spin_loop();
        }
    }
}

/// 1: CPUID.1 and `IA32_APIC_BASE`.
fn check_cpuid(c: &mut Checks) {
    let (_, ebx, _, edx) = cpuid(1, 0);
    c.check(
        edx & (1 << 9) != 0,
        format_args!("CPUID.1:EDX.APIC[bit 9] is set (EDX {edx:#010x})"),
    );
    c.check(
        ebx >> 24 == 0,
        format_args!("CPUID.1:EBX[31:24], the initial APIC ID, is 0 on the BSP (EBX {ebx:#010x})"),
    );
    let base = rdmsr_checked(MSR_APIC_BASE);
    c.check(
        base == Ok(APIC_BASE_BSP_VALUE),
        format_args!("IA32_APIC_BASE is {APIC_BASE_BSP_VALUE:#x} on the BSP (got {base:x?})"),
    );
}

/// 2: the registers; leaves the APIC software-enabled.
fn check_registers(c: &mut Checks) {
    let id = lapic_read(REG_ID);
    c.check(id == 0, format_args!("xAPIC ID register is 0 ({id:#010x})"));
    let version = lapic_read(REG_VERSION);
    c.check(
        version == LAPIC_VERSION,
        format_args!("xAPIC version register is {LAPIC_VERSION:#010x} (got {version:#010x}: version {:#x}, max LVT {})",
            version & 0xff, (version >> 16) & 0xff),
    );
    let svr = lapic_read(REG_SVR);
    let lvt = [REG_LVT_TIMER, REG_LVT_LINT0, REG_LVT_LINT1].map(lapic_read);
    c.check(
        svr == 0xff && lvt.iter().all(|l| l & LVT_MASKED != 0),
        format_args!("after reset the APIC is software-disabled (SVR {svr:#x}) with LVTs masked (timer {:#x}, LINT0 {:#x}, LINT1 {:#x})", lvt[0], lvt[1], lvt[2]),
    );
    lapic_write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    let svr = lapic_read(REG_SVR);
    c.check(
        svr == 0x1ff,
        format_args!("SVR 0x1ff enables the APIC and reads back ({svr:#x})"),
    );
    lapic_write(REG_TPR, 0x20);
    let tpr = lapic_read(REG_TPR);
    let ppr = lapic_read(REG_PPR);
    lapic_write(REG_TPR, 0x5a);
    let tpr2 = lapic_read(REG_TPR);
    lapic_write(REG_TPR, 0);
    let tpr0 = lapic_read(REG_TPR);
    c.check(
        tpr == 0x20 && ppr == 0x20 && tpr2 == 0x5a && tpr0 == 0,
        format_args!("TPR writes read back (0x20 -> {tpr:#x} with PPR {ppr:#x}, 0x5a -> {tpr2:#x}, 0 -> {tpr0:#x})"),
    );
}

/// What an emulated xAPIC read costs, next to an I/O port read (both exit
/// to the hypervisor): for the record, as figures without bounds.
fn exit_costs(clock: &Clock) {
    const N: u64 = 50;
    let t0 = rdtsc();
    for _ in 0..N {
        core::hint::black_box(lapic_read(REG_VERSION));
    }
    let t1 = rdtsc();
    for _ in 0..N {
        core::hint::black_box(inb(0x80));
    }
    let t2 = rdtsc();
    let mmio_ns = clock.us((t1 - t0) * 1000) / N;
    let io_ns = clock.us((t2 - t1) * 1000) / N;
    println!("apic: an xAPIC register read takes {mmio_ns} ns, an I/O port read {io_ns} ns");
    println!("BASALT-FIGURE: lapic_mmio_read_ns={mmio_ns}");
    println!("BASALT-FIGURE: io_port_read_ns={io_ns}");
}

/// 3: the timer, one-shot then periodic.
fn check_timer(c: &mut Checks, clock: &Clock, oneshot_us: u64, period_us: u64, periods: u32) {
    lapic_write(REG_TIMER_DIVIDE, DIVIDE_BY_1);
    lapic_write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
    reset(TIMER_VECTOR);
    let initial = (oneshot_us * TIMER_HZ / 1_000_000) as u32;
    let start = rdtsc();
    lapic_write(REG_TIMER_INITIAL, initial);
    let cur1 = lapic_read(REG_TIMER_CURRENT);
    clock.delay_us(oneshot_us / 10);
    let cur2 = lapic_read(REG_TIMER_CURRENT);
    c.check(
        cur1 <= initial && cur2 < cur1 && cur2 > 0,
        format_args!("the one-shot timer counts down from {initial} ({cur1}, then {cur2})"),
    );
    halt_until(TIMER_VECTOR, 1);
    let fired = SEEN[usize::from(TIMER_VECTOR)]
        .first_tsc
        .load(Ordering::Relaxed);
    let elapsed = fired.wrapping_sub(start);
    let expected = clock.ticks_us(oneshot_us);
    let err = error_permille(elapsed, expected);
    println!(
        "apic: one-shot of {initial} counts fired after {} us (expected {} us)",
        clock.us(elapsed),
        oneshot_us
    );
    println!("BASALT-FIGURE: lapic_oneshot_error_permille={err}");
    c.check(
        elapsed >= expected - expected / 100 && err <= 100,
        format_args!(
            "the one-shot timer fired on time: not early, within 10 % ({err} per mille late)"
        ),
    );
    // It must not fire again.
    spin_interruptible(clock.ticks_us(oneshot_us), || count(TIMER_VECTOR) > 1);
    let n = count(TIMER_VECTOR);
    let cur = lapic_read(REG_TIMER_CURRENT);
    c.check(
        n == 1 && cur == 0,
        format_args!(
            "the one-shot timer fired once ({n} interrupts) and stopped at 0 (current count {cur})"
        ),
    );
    c.check(
        !apic_bit(REG_ISR, TIMER_VECTOR),
        format_args!("EOI took vector {TIMER_VECTOR:#x} out of ISR"),
    );

    // Periodic.
    reset(TIMER_VECTOR);
    lapic_write(REG_LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(TIMER_VECTOR));
    let initial = (period_us * TIMER_HZ / 1_000_000) as u32;
    STOP_AT.store(periods + 1, Ordering::Relaxed);
    lapic_write(REG_TIMER_INITIAL, initial);
    halt_until(TIMER_VECTOR, periods + 1);
    STOP_AT.store(0, Ordering::Relaxed);
    lapic_write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    let seen = &SEEN[usize::from(TIMER_VECTOR)];
    let n = seen.count.load(Ordering::Relaxed);
    let span = seen.last_tsc.load(Ordering::Relaxed) - seen.first_tsc.load(Ordering::Relaxed);
    let expected_us = u64::from(n - 1) * period_us;
    let err = error_permille(span, clock.ticks_us(expected_us));
    println!(
        "apic: periodic timer: {} periods of {initial} counts in {} us (expected {expected_us} us)",
        n - 1,
        clock.us(span)
    );
    print_intervals("periodic timer", TIMER_VECTOR, clock);
    println!("BASALT-FIGURE: lapic_periodic_error_permille={err}");
    c.check(
        err.abs() <= 100,
        format_args!(
            "the periodic timer's interrupts came every {period_us} us within 10 % ({} periods, {err} per mille off)",
            n - 1
        ),
    );
    let before = count(TIMER_VECTOR);
    spin_interruptible(clock.ticks_us(3 * period_us), || false);
    let after = count(TIMER_VECTOR);
    c.check(
        after == before,
        format_args!(
            "the periodic timer stops when its initial count is 0 ({} more interrupts)",
            after - before
        ),
    );
}

/// 4: a self-IPI, held back by TPR first.
fn check_self_ipi(c: &mut Checks, clock: &Clock) {
    reset(SELF_IPI_VECTOR);
    lapic_write(REG_TPR, u32::from(SELF_IPI_VECTOR & 0xf0));
    lapic_write(REG_ICR_HIGH, 0);
    lapic_write(REG_ICR_LOW, ICR_SELF | u32::from(SELF_IPI_VECTOR));
    let icr = lapic_read(REG_ICR_LOW);
    let requested = apic_bit(REG_IRR, SELF_IPI_VECTOR);
    c.check(
        requested && icr & ICR_DELIVERY_PENDING == 0,
        format_args!("the self-IPI (ICR {icr:#x}) is in IRR, delivery status idle"),
    );
    spin_interruptible(clock.ticks_us(2000), || count(SELF_IPI_VECTOR) > 0);
    let held = count(SELF_IPI_VECTOR);
    c.check(
        held == 0 && apic_bit(REG_IRR, SELF_IPI_VECTOR),
        format_args!(
            "TPR {:#x} holds vector {SELF_IPI_VECTOR:#x} back ({held} interrupts)",
            SELF_IPI_VECTOR & 0xf0
        ),
    );
    lapic_write(REG_TPR, 0);
    spin_interruptible(clock.ticks_us(20_000), || count(SELF_IPI_VECTOR) > 0);
    let n = count(SELF_IPI_VECTOR);
    let irr = apic_bit(REG_IRR, SELF_IPI_VECTOR);
    let isr = apic_bit(REG_ISR, SELF_IPI_VECTOR);
    c.check(
        n == 1 && !irr && !isr,
        format_args!("the self-IPI (vector {SELF_IPI_VECTOR:#x}) arrived once TPR dropped ({n} interrupts; IRR {irr}, ISR {isr} after EOI)"),
    );
}

/// 4b: `cli; hlt` is not ended by a maskable interrupt; NMIs through the
/// ICR (delivery mode NMI, physical destination 0): one taken with
/// interrupts off; a second sent from inside the first's
/// handler waits for its IRET (NMI blocking), then comes at once.
fn check_nmi(c: &mut Checks, clock: &Clock) {
    // First, what does not end `cli; hlt`: a maskable interrupt (the APIC
    // one-shot timer, due in 2 ms) stays pending until the single-shot
    // timer (a Basalt event) ends the halt 30 ms in; `sti` then takes it.
    reset(TIMER_VECTOR);
    lapic_write(REG_TIMER_DIVIDE, DIVIDE_BY_1);
    lapic_write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
    let now_ns = system_time_ns();
    if now_ns > 0 {
        set_singleshot_timer(now_ns as u64 + 30_000_000);
    }
    let start = rdtsc();
    lapic_write(REG_TIMER_INITIAL, (2_000 * TIMER_HZ / 1_000_000) as u32);
    // SAFETY: HLT with interrupts off; the single-shot timer ends it.
    unsafe { core::arch::asm!("cli", "hlt", options(nostack)) };
    let halted = clock.us(rdtsc() - start);
    stop_singleshot_timer();
    let during = count(TIMER_VECTOR);
    spin_interruptible(clock.ticks_us(5_000), || count(TIMER_VECTOR) > 0);
    let after = count(TIMER_VECTOR);
    c.check(
        during == 0 && after == 1 && halted >= 25_000,
        format_args!("a maskable interrupt does not end `cli; hlt` ({during} taken during a halt of {halted} us; {after} after STI)"),
    );
    NMIS.store(0, Ordering::SeqCst);
    // Interrupts stay off (the guest runs with IF clear outside its waits).
    lapic_write(REG_ICR_HIGH, 0);
    lapic_write(REG_ICR_LOW, ICR_NMI | ICR_ASSERT);
    let end = rdtsc() + clock.ticks_us(20_000);
    while NMIS.load(Ordering::SeqCst) == 0 && rdtsc() < end {
        core::hint::spin_loop();
    }
    let n = NMIS.load(Ordering::SeqCst);
    c.check(
        n == 1 && count(0) == 0,
        format_args!("an NMI IPI to this vCPU is taken with RFLAGS.IF clear ({n} NMIs)"),
    );
    NMIS.store(0, Ordering::SeqCst);
    NMIS_INSIDE.store(0, Ordering::SeqCst);
    NMI_SPIN_TICKS.store(clock.ticks_us(3_000), Ordering::SeqCst);
    NMI_NEST.store(true, Ordering::SeqCst);
    lapic_write(REG_ICR_HIGH, 0);
    lapic_write(REG_ICR_LOW, ICR_NMI | ICR_ASSERT);
    let end = rdtsc() + clock.ticks_us(50_000);
    while NMIS.load(Ordering::SeqCst) < 2 && rdtsc() < end {
        core::hint::spin_loop();
    }
    NMI_NEST.store(false, Ordering::SeqCst);
    let inside = NMIS_INSIDE.load(Ordering::SeqCst);
    let n = NMIS.load(Ordering::SeqCst);
    c.check(
        inside == 1 && n == 2,
        format_args!("an NMI sent from an NMI handler waits for its IRET ({inside} taken 3 ms into the handler), then arrives ({n} in all)"),
    );
}

/// 5: INIT-SIPI-SIPI to APIC ID 1, then a fixed IPI to it.
fn check_ap(c: &mut Checks, clock: &Clock) {
    let len = install_trampoline();
    println!(
        "apic: trampoline of {len} bytes at {TRAMPOLINE:#x}; INIT, start-up IPI {SIPI_VECTOR:#04x} twice to APIC ID 1"
    );
    lapic_write(REG_ICR_HIGH, 1 << 24);
    lapic_write(REG_ICR_LOW, ICR_INIT | ICR_ASSERT | ICR_LEVEL);
    clock.delay_us(10_000);
    lapic_write(REG_ICR_LOW, ICR_INIT | ICR_LEVEL);
    for _ in 0..2 {
        lapic_write(REG_ICR_HIGH, 1 << 24);
        lapic_write(REG_ICR_LOW, ICR_STARTUP | SIPI_VECTOR);
        clock.delay_us(200);
    }
    let sent = rdtsc();
    let deadline = sent + clock.ticks_us(2_000_000);
    while read_ap(AP_FLAG) != AP_READY && rdtsc() < deadline {
        // The AP may share this CPU.
        sched_yield();
    }
    let stage = read_ap(AP_STAGE);
    let flag = read_ap(AP_FLAG);
    let waited = clock.us(rdtsc() - sent);
    if !c.check(
        flag == AP_READY,
        format_args!("the AP ran the trampoline into protected mode and reported (stage {stage}, flag {flag:#x}, after {waited} us)"),
    ) {
        return;
    }
    let id = read_ap(AP_ID_REG);
    let version = read_ap(AP_VERSION);
    let base = u64::from(read_ap(AP_BASE_LO)) | (u64::from(read_ap(AP_BASE_HI)) << 32);
    let ebx = read_ap(AP_CPUID_EBX);
    let svr = read_ap(AP_SVR);
    c.check(
        id >> 24 == 1 && ebx >> 24 == 1,
        format_args!("the AP read APIC ID 1 from [0xfee00020] ({id:#010x}) and CPUID.1:EBX[31:24] ({ebx:#010x})"),
    );
    c.check(
        version == LAPIC_VERSION && svr == 0x1ff,
        format_args!("the AP's xAPIC: version {version:#010x}, SVR {svr:#x} once enabled"),
    );
    c.check(
        base == APIC_BASE_AP_VALUE,
        format_args!(
            "the AP's IA32_APIC_BASE is {APIC_BASE_AP_VALUE:#x}, no BSP bit (got {base:#x})"
        ),
    );
    reset(AP_IPI_VECTOR);
    lapic_write(REG_ICR_HIGH, 1 << 24);
    lapic_write(REG_ICR_LOW, ICR_ASSERT | u32::from(AP_IPI_VECTOR));
    let deadline = rdtsc() + clock.ticks_us(1_000_000);
    while read_ap(AP_IPIS) == 0 && rdtsc() < deadline {
        sched_yield();
    }
    let got = read_ap(AP_IPIS);
    c.check(
        got == 1 && count(AP_IPI_VECTOR) == 0,
        format_args!("the fixed IPI (vector {AP_IPI_VECTOR:#x}) to APIC ID 1 reached the AP's handler ({got} times) and not the BSP"),
    );
}

/// 6: the I/O APIC, with the PIT on pin 2.
fn check_ioapic(c: &mut Checks, clock: &Clock, hz: u64, ticks: u32) {
    let version = ioapic_read(IOAPIC_VERSION_INDEX);
    c.check(
        version == IOAPIC_VERSION,
        format_args!(
            "I/O APIC version register is {IOAPIC_VERSION:#010x} (got {version:#010x}: {} pins)",
            ((version >> 16) & 0xff) + 1
        ),
    );
    // The 8259s out of the way: vectors 0x20-0x2F, all masked; LINT0
    // masked (ExtINT), so that only the I/O APIC delivers.
    init_pic_pair(0xff, 0xff);
    lapic_write(REG_LVT_LINT0, LVT_MASKED | LVT_EXTINT);
    let rte_low = PIT_RTE;
    ioapic_write(rte_low + 1, 0);
    ioapic_write(rte_low, u32::from(PIT_VECTOR));
    let (lo, hi) = (ioapic_read(rte_low), ioapic_read(rte_low + 1));
    c.check(
        lo == u32::from(PIT_VECTOR) && hi == 0,
        format_args!("redirection entry {PIT_PIN} reads back: vector {PIT_VECTOR:#x}, fixed, physical, edge, unmasked, APIC ID 0 ({hi:#010x}:{lo:#010x})"),
    );
    reset(PIT_VECTOR);
    let divisor = (PIT_HZ / hz) as u16;
    // Channel 0, lobyte/hibyte, mode 2 (rate generator), binary.
    outb(0x43, 0x34);
    outb(0x40, divisor as u8);
    STOP_AT.store(ticks + 1, Ordering::Relaxed);
    outb(0x40, (divisor >> 8) as u8);
    halt_until(PIT_VECTOR, ticks + 1);
    STOP_AT.store(0, Ordering::Relaxed);
    let seen = &SEEN[usize::from(PIT_VECTOR)];
    let n = seen.count.load(Ordering::Relaxed);
    let span = seen.last_tsc.load(Ordering::Relaxed) - seen.first_tsc.load(Ordering::Relaxed);
    let periods = u64::from(n - 1);
    let expected = (u128::from(periods) * u128::from(divisor) * u128::from(clock.tsc_hz)
        / u128::from(PIT_HZ)) as u64;
    let err = error_permille(span, expected);
    println!(
        "apic: PIT through I/O APIC pin {PIT_PIN}: {periods} periods in {} us (expected {} us)",
        clock.us(span),
        clock.us(expected)
    );
    print_intervals("PIT", PIT_VECTOR, clock);
    println!("BASALT-FIGURE: ioapic_pit_error_permille={err}");
    c.check(
        err.abs() <= 100,
        format_args!("the PIT's interrupts through the I/O APIC came at {hz} Hz within 10 % ({periods} periods, {err} per mille off)"),
    );
    let before = count(PIT_VECTOR);
    spin_interruptible(clock.ticks_us(5 * 1_000_000 / hz), || false);
    let after = count(PIT_VECTOR);
    c.check(
        after == before && count(0x20) == 0,
        format_args!(
            "masking the pin stops them ({} more), and the masked 8259 sent nothing",
            after - before
        ),
    );
    // The same pin in delivery mode NMI: every PIT period sends an NMI,
    // and one of them ends `cli; hlt`. A single-shot timer ends the wait
    // should none come.
    NMIS.store(0, Ordering::SeqCst);
    ioapic_write(rte_low, RTE_NMI);
    let now_ns = system_time_ns();
    if now_ns > 0 {
        set_singleshot_timer(now_ns as u64 + 500_000_000);
    }
    let before = NMIS.load(Ordering::SeqCst);
    let start = rdtsc();
    // SAFETY: HLT with interrupts off: only an NMI or the single-shot timer
    // (a Basalt event, not an interrupt) ends it.
    unsafe { core::arch::asm!("cli", "hlt", options(nostack)) };
    let waited = clock.us(rdtsc() - start);
    let after = NMIS.load(Ordering::SeqCst);
    stop_singleshot_timer();
    ioapic_write(rte_low, RTE_MASKED | u32::from(PIT_VECTOR));
    c.check(
        after > before && waited < 100_000,
        format_args!("the PIT's pin in NMI delivery mode (an NMI every {} us) ended `cli; hlt` ({} NMIs during the halt of {waited} us, {before} before it)", 1_000_000 / hz, after - before),
    );
}

/// 7: the TSC-deadline timer (xAPIC mode); leaves the LVT timer masked.
fn check_tsc_deadline(c: &mut Checks, clock: &Clock, deadline_us: u64) {
    let (_, _, ecx, _) = cpuid(1, 0);
    if !c.check(
        ecx & CPUID_1_ECX_TSC_DEADLINE != 0,
        format_args!("CPUID.1:ECX.TSC-Deadline[bit 24] is set (ECX {ecx:#010x})"),
    ) {
        return;
    }
    reset(DEADLINE_VECTOR);
    lapic_write(
        REG_LVT_TIMER,
        LVT_TIMER_TSC_DEADLINE | u32::from(DEADLINE_VECTOR),
    );
    let lvt = lapic_read(REG_LVT_TIMER);
    let expected = clock.ticks_us(deadline_us);
    let start = rdtsc();
    let due = start + expected;
    // SAFETY: arming the deadline is the test; its interrupt is handled.
    let armed = unsafe { wrmsr_checked(MSR_TSC_DEADLINE, due) };
    let readback = rdmsr_checked(MSR_TSC_DEADLINE);
    // Nothing printed before it fires: a line on the serial port takes
    // milliseconds under Bochs, with interrupts off.
    let came = halt_until_bounded(DEADLINE_VECTOR, 1, clock, 10 * deadline_us);
    c.check(
        lvt == LVT_TIMER_TSC_DEADLINE | u32::from(DEADLINE_VECTOR)
            && armed.is_ok()
            && readback == Ok(due),
        format_args!(
            "TSC-deadline mode: LVT timer {lvt:#x}, WRMSR IA32_TSC_DEADLINE {due:#x}: {}, reads back {}",
            show_unit(armed),
            show(readback)
        ),
    );
    let fired = SEEN[usize::from(DEADLINE_VECTOR)]
        .first_tsc
        .load(Ordering::Relaxed);
    let elapsed = fired.wrapping_sub(start);
    let err = if came {
        error_permille(elapsed, expected)
    } else {
        i64::MAX
    };
    println!(
        "apic: TSC deadline {deadline_us} us ahead fired after {} us ({} us past the deadline)",
        clock.us(elapsed),
        clock.us(fired.saturating_sub(due))
    );
    if came {
        println!("BASALT-FIGURE: lapic_deadline_error_permille={err}");
    }
    c.check(
        came && fired >= due && err <= 100,
        format_args!(
            "the TSC-deadline timer fired on time: not early, within 10 % ({err} per mille late)"
        ),
    );
    // It must not fire again, and the MSR reads 0 once it fired.
    spin_interruptible(expected, || count(DEADLINE_VECTOR) > 1);
    let n = count(DEADLINE_VECTOR);
    let after = rdmsr_checked(MSR_TSC_DEADLINE);
    c.check(
        n == 1 && after == Ok(0) && !apic_bit(REG_ISR, DEADLINE_VECTOR),
        format_args!(
            "the TSC-deadline timer fired once ({n} interrupts), IA32_TSC_DEADLINE reads {} after, EOI cleared ISR",
            show(after)
        ),
    );
    // Writing 0 disarms: a deadline 2 ms ahead, then 0, then 5 ms of
    // nothing.
    reset(DEADLINE_VECTOR);
    let due = rdtsc() + clock.ticks_us(2000);
    // SAFETY: as above; the second write disarms the first.
    let armed = unsafe { wrmsr_checked(MSR_TSC_DEADLINE, due) };
    // SAFETY: disarming.
    let disarmed = unsafe { wrmsr_checked(MSR_TSC_DEADLINE, 0) };
    let readback = rdmsr_checked(MSR_TSC_DEADLINE);
    spin_interruptible(clock.ticks_us(5000), || count(DEADLINE_VECTOR) > 0);
    let n = count(DEADLINE_VECTOR);
    c.check(
        armed.is_ok() && disarmed.is_ok() && readback == Ok(0) && n == 0,
        format_args!(
            "writing 0 to IA32_TSC_DEADLINE disarms it (arm 2 ms ahead {}, disarm {}, reads {}; {n} interrupts in 5 ms)",
            show_unit(armed),
            show_unit(disarmed),
            show(readback)
        ),
    );
    lapic_write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
}

/// 8: x2APIC mode, entered from xAPIC mode; the APIC stays in it.
fn check_x2apic(c: &mut Checks, clock: &Clock) {
    let (_, _, ecx, _) = cpuid(1, 0);
    if !c.check(
        ecx & CPUID_1_ECX_X2APIC != 0,
        format_args!("CPUID.1:ECX.x2APIC[bit 21] is set (ECX {ecx:#010x})"),
    ) {
        return;
    }
    let xapic_version = lapic_read(REG_VERSION);
    let base = rdmsr_checked(MSR_APIC_BASE).unwrap_or(APIC_BASE_BSP_VALUE);
    let x2 = base | APIC_BASE_EN | APIC_BASE_EXTD;
    // SAFETY: interrupts are off; the handler's EOI follows the mode
    // (`X2APIC`), set before any interrupt can come.
    let entered = unsafe { wrmsr_checked(MSR_APIC_BASE, x2) };
    if entered.is_ok() {
        X2APIC.store(true, Ordering::Relaxed);
    }
    let now = rdmsr_checked(MSR_APIC_BASE);
    if !c.check(
        entered.is_ok() && now == Ok(x2),
        format_args!(
            "WRMSR IA32_APIC_BASE {x2:#x} (EN|EXTD) enters x2APIC mode ({}; reads {})",
            show_unit(entered),
            show(now)
        ),
    ) {
        return;
    }
    let id = rdmsr_checked(X2APIC_ID);
    c.check(
        id == Ok(0),
        format_args!("x2APIC ID (MSR 0x802) is 0 ({})", show(id)),
    );
    let version = rdmsr_checked(X2APIC_VERSION);
    c.check(
        version == Ok(u64::from(xapic_version)),
        format_args!(
            "x2APIC version (MSR 0x803) matches the xAPIC version {xapic_version:#010x} ({})",
            show(version)
        ),
    );
    let ldr = rdmsr_checked(X2APIC_LDR);
    c.check(
        ldr == Ok(1),
        format_args!(
            "x2APIC LDR (MSR 0x80d) is 0x1, cluster 0 member bit 0 ({})",
            show(ldr)
        ),
    );
    let svr0 = rdmsr_checked(X2APIC_SVR);
    // SAFETY: the APIC stays software-enabled; only the spurious vector
    // changes, and it is put back.
    let w1 = unsafe { wrmsr_checked(X2APIC_SVR, 0x1f0) };
    let svr1 = rdmsr_checked(X2APIC_SVR);
    // SAFETY: as before.
    let w2 = unsafe {
        wrmsr_checked(
            X2APIC_SVR,
            u64::from(SVR_ENABLE | u32::from(SPURIOUS_VECTOR)),
        )
    };
    let svr2 = rdmsr_checked(X2APIC_SVR);
    c.check(
        svr0 == Ok(0x1ff) && w1.is_ok() && svr1 == Ok(0x1f0) && w2.is_ok() && svr2 == Ok(0x1ff),
        format_args!(
            "x2APIC SVR (MSR 0x80f) writes read back ({} -> 0x1f0 {}: {} -> 0x1ff {}: {})",
            show(svr0),
            show_unit(w1),
            show(svr1),
            show_unit(w2),
            show(svr2)
        ),
    );
    // SAFETY: TPR 0x30 masks nothing this step sends; it is put back.
    let w1 = unsafe { wrmsr_checked(X2APIC_TPR, 0x30) };
    let tpr1 = rdmsr_checked(X2APIC_TPR);
    // SAFETY: as before.
    let w2 = unsafe { wrmsr_checked(X2APIC_TPR, 0) };
    let tpr2 = rdmsr_checked(X2APIC_TPR);
    c.check(
        w1.is_ok() && tpr1 == Ok(0x30) && w2.is_ok() && tpr2 == Ok(0),
        format_args!(
            "x2APIC TPR (MSR 0x808) writes read back (0x30 -> {}, 0 -> {})",
            show(tpr1),
            show(tpr2)
        ),
    );

    // A self-IPI through the SELF IPI MSR; the handler EOIs through 0x80B.
    reset(X2APIC_IPI_VECTOR);
    // SAFETY: the vector's interrupt is handled.
    let sent = unsafe { wrmsr_checked(X2APIC_SELF_IPI, u64::from(X2APIC_IPI_VECTOR)) };
    spin_interruptible(clock.ticks_us(20_000), || count(X2APIC_IPI_VECTOR) > 0);
    let n = count(X2APIC_IPI_VECTOR);
    let bit = 1u64 << (X2APIC_IPI_VECTOR % 32);
    let reg = u32::from(X2APIC_IPI_VECTOR / 32);
    let isr = rdmsr_checked(X2APIC_ISR + reg);
    let irr = rdmsr_checked(X2APIC_IRR + reg);
    c.check(
        sent.is_ok()
            && n == 1
            && isr.is_ok_and(|v| v & bit == 0)
            && irr.is_ok_and(|v| v & bit == 0),
        format_args!(
            "the x2APIC self-IPI (MSR 0x83f, vector {X2APIC_IPI_VECTOR:#x}) arrived ({}; {n} interrupts; ISR {}, IRR {} after EOI through MSR 0x80b)",
            show_unit(sent),
            show(isr),
            show(irr)
        ),
    );

    // A fixed IPI to the AP through the 64-bit ICR: destination in bits
    // 63:32. The AP's APIC is still in xAPIC mode; physical destination 1
    // is its xAPIC ID.
    if read_ap(AP_FLAG) == AP_READY {
        let before = read_ap(AP_IPIS);
        reset(AP_IPI_VECTOR);
        let icr = (1u64 << 32) | u64::from(ICR_ASSERT | u32::from(AP_IPI_VECTOR));
        // SAFETY: the AP handles the vector.
        let sent = unsafe { wrmsr_checked(X2APIC_ICR, icr) };
        let readback = rdmsr_checked(X2APIC_ICR);
        let deadline = rdtsc() + clock.ticks_us(1_000_000);
        while read_ap(AP_IPIS) == before && rdtsc() < deadline {
            sched_yield();
        }
        let got = read_ap(AP_IPIS) - before;
        c.check(
            sent.is_ok() && readback == Ok(icr) && got == 1 && count(AP_IPI_VECTOR) == 0,
            format_args!(
                "the x2APIC ICR (MSR 0x830 {icr:#x}: {}, reads back {}) sent vector {AP_IPI_VECTOR:#x} to APIC ID 1, the AP in xAPIC mode ({got} times) and not the BSP",
                show_unit(sent),
                show(readback)
            ),
        );
    } else {
        c.check(
            false,
            format_args!("the x2APIC ICR sent an IPI to the AP: the AP is not running"),
        );
    }

    // The xAPIC page is gone: reads all ones, writes ignored.
    let id = lapic_read(REG_ID);
    let version = lapic_read(REG_VERSION);
    lapic_write(REG_TPR, 0x30);
    let tpr = rdmsr_checked(X2APIC_TPR);
    c.check(
        id == u32::MAX && version == u32::MAX && tpr == Ok(0),
        format_args!(
            "in x2APIC mode the xAPIC page reads all ones (ID {id:#x}, version {version:#x}) and ignores writes (TPR {} after an MMIO write of 0x30)",
            show(tpr)
        ),
    );

    // x2APIC -> xAPIC is illegal.
    let back = base & !APIC_BASE_EXTD;
    // SAFETY: must raise #GP; if it did not, the APIC is in xAPIC mode
    // again and the handler's EOI follows.
    let result = unsafe { wrmsr_checked(MSR_APIC_BASE, back) };
    let now = rdmsr_checked(MSR_APIC_BASE);
    let id = rdmsr_checked(X2APIC_ID);
    if now.is_ok_and(|v| v & APIC_BASE_EXTD == 0) {
        X2APIC.store(false, Ordering::Relaxed);
    }
    c.check(
        result == Err(GP) && now == Ok(x2) && id == Ok(0),
        format_args!(
            "WRMSR IA32_APIC_BASE {back:#x} (x2APIC -> xAPIC) raises #GP ({}) and the APIC stays in x2APIC mode ({}, ID {})",
            show_unit(result),
            show(now),
            show(id)
        ),
    );
}

fn main(cmdline: &str) -> u32 {
    let oneshot_us = arg_u64(cmdline, "oneshot_us", 20_000).clamp(100, 1_000_000);
    let period_us = arg_u64(cmdline, "period_us", 1000).clamp(100, 100_000);
    let periods = arg_u64(cmdline, "periods", 10).clamp(1, 1000) as u32;
    let pit_hz = arg_u64(cmdline, "pit_hz", 1000).clamp(19, 10_000);
    let pit_ticks = arg_u64(cmdline, "pit_ticks", 20).clamp(1, 10_000) as u32;
    let deadline_us = arg_u64(cmdline, "deadline_us", 5000).clamp(100, 1_000_000);
    let mut c = Checks::new();
    set_interrupt_handler(on_interrupt);
    let clock = Clock { tsc_hz: tsc_hz() };
    let (den, num, crystal, _) = cpuid(0x15, 0);
    println!(
        "apic: CPUID.15h EAX {den} EBX {num} ECX {crystal}: TSC {} kHz",
        clock.tsc_hz / 1000
    );
    if !c.check(
        clock.tsc_hz != 0 && u64::from(crystal) == TIMER_HZ,
        format_args!("CPUID.15h gives the TSC rate and a 1 MHz crystal"),
    ) {
        return c.finish();
    }
    check_cpuid(&mut c);
    check_registers(&mut c);
    exit_costs(&clock);
    check_timer(&mut c, &clock, oneshot_us, period_us, periods);
    check_tsc_deadline(&mut c, &clock, deadline_us);
    check_self_ipi(&mut c, &clock);
    check_nmi(&mut c, &clock);
    check_ap(&mut c, &clock);
    check_ioapic(&mut c, &clock, pit_hz, pit_ticks);
    check_x2apic(&mut c, &clock);
    let stray = STRAY.load(Ordering::Relaxed);
    c.check(
        stray == 0,
        format_args!(
            "no unexpected vector arrived ({stray}, last {:#x}; {} spurious)",
            STRAY_VECTOR.load(Ordering::Relaxed),
            count(SPURIOUS_VECTOR)
        ),
    );
    c.finish()
}
