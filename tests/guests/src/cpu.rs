//! CPU access for the tests: CPUID, MSRs, control registers, I/O ports, the
//! TSC, and instructions that may fault.
//!
//! There is no unwinding and no general fault recovery. Instead the runtime
//! has a "fault recorder" per vCPU: [`checked`] arms it with the length of
//! the one instruction that may fault; when that instruction raises `#UD`
//! (6), `#GP` (13) or `#PF` (14), the exception handler records the vector and error
//! code and resumes after the instruction (saved RIP + length). Any other
//! exception, or one while the recorder is not armed, prints a report and
//! ends the domain as crashed.

use crate::println;
use core::arch::asm;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering, compiler_fence};

/// `#UD`, invalid opcode.
pub const UD: u8 = 6;
/// `#GP`, general protection.
pub const GP: u8 = 13;
/// `#PF`, page fault (read CR2 after [`checked`] reports it).
pub const PF: u8 = 14;
/// The NMI vector: with an interrupt hook set, NMIs go to it too.
pub const NMI: u8 = 2;

/// The selector of the 64-bit code segment in `entry.S`'s GDT.
const CODE64_SEL: u16 = 0x08;

/// The fault recorder of one vCPU (in its [`crate::smp`] per-CPU block).
#[derive(Debug)]
pub(crate) struct FaultRecorder {
    /// Length of the instruction the exception handler skips; 0 = not
    /// armed.
    skip_len: AtomicU8,
    /// The vector the armed instruction raised, or [`NO_FAULT`].
    vector: AtomicU8,
    /// Its error code (0 for `#UD`).
    error: AtomicU64,
}

impl FaultRecorder {
    pub(crate) const fn new() -> Self {
        FaultRecorder {
            skip_len: AtomicU8::new(0),
            vector: AtomicU8::new(NO_FAULT),
            error: AtomicU64::new(0),
        }
    }
}

const NO_FAULT: u8 = 0xff;

/// This vCPU's fault recorder.
fn recorder() -> &'static FaultRecorder {
    &crate::smp::this_cpu().faults
}

/// The general registers and the CPU's exception frame, as `entry.S`'s
/// `pvh_isr_common` leaves them on the stack.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    /// Saved r15.
    pub r15: u64,
    /// Saved r14.
    pub r14: u64,
    /// Saved r13.
    pub r13: u64,
    /// Saved r12.
    pub r12: u64,
    /// Saved r11.
    pub r11: u64,
    /// Saved r10.
    pub r10: u64,
    /// Saved r9.
    pub r9: u64,
    /// Saved r8.
    pub r8: u64,
    /// Saved rbp.
    pub rbp: u64,
    /// Saved rdi.
    pub rdi: u64,
    /// Saved rsi.
    pub rsi: u64,
    /// Saved rdx.
    pub rdx: u64,
    /// Saved rcx.
    pub rcx: u64,
    /// Saved rbx.
    pub rbx: u64,
    /// Saved rax.
    pub rax: u64,
    /// The exception vector.
    pub vector: u64,
    /// The error code (0 for vectors without one).
    pub error_code: u64,
    /// Where the CPU resumes (the faulting instruction, for faults).
    pub rip: u64,
    /// Code segment.
    pub cs: u64,
    /// Flags.
    pub rflags: u64,
    /// Stack pointer at the exception.
    pub rsp: u64,
    /// Stack segment.
    pub ss: u64,
}

/// The exception vectors' names, for reports.
const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD exception",
    "#VE virtualization exception",
    "#CP control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security exception",
    "reserved",
];

/// Called by `entry.S`'s exception stubs with the saved state.
#[unsafe(no_mangle)]
extern "C" fn basalt_guest_exception(frame: &mut ExceptionFrame) {
    let vector = frame.vector as u8;
    let hook = INTERRUPT_HANDLER.load(Ordering::Acquire);
    if (vector >= 32 || vector == NMI) && !hook.is_null() {
        // SAFETY: only `set_interrupt_handler` stores here, a `fn(u8)`;
        // function and data pointers have the same size on x86-64.
        let f = unsafe { core::mem::transmute::<*mut (), fn(u8)>(hook) };
        f(vector);
        return;
    }
    let faults = recorder();
    let skip = faults.skip_len.swap(0, Ordering::Relaxed);
    if skip != 0 && (vector == UD || vector == GP || vector == PF) {
        faults.error.store(frame.error_code, Ordering::Relaxed);
        faults.vector.store(vector, Ordering::Relaxed);
        frame.rip += u64::from(skip);
        return;
    }
    let name = EXCEPTION_NAMES
        .get(usize::from(vector))
        .copied()
        .unwrap_or("?");
    println!(
        "guest exception {vector} ({name}), error code {:#x}, at rip {:#x} on vCPU {}",
        frame.error_code,
        frame.rip,
        crate::smp::cpu_id()
    );
    println!(
        "  rsp {:#x} rflags {:#x} cr2 {:#x} rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x}",
        frame.rsp,
        frame.rflags,
        read_cr2(),
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx
    );
    println!(
        "TEST FAIL {}: unexpected exception {vector} ({name}) at rip {:#x}",
        crate::name(),
        frame.rip
    );
    crate::sched_shutdown(crate::hypercall::SHUTDOWN_CRASH)
}

/// One 16-byte IDT gate.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

/// The IDT: all 256 vectors; 0-31 are exceptions, 32-255 (and the NMI,
/// vector 2) go to the interrupt hook ([`set_interrupt_handler`]).
#[repr(C, align(16))]
struct Idt([Gate; 256]);

/// The IDT's storage, shared by all vCPUs: written once by
/// [`install_idt`] on vCPU 0, then read only by the CPUs.
struct IdtCell(UnsafeCell<Idt>);

// SAFETY: the only write happens once, on vCPU 0, before the IDT is loaded
// and before any other vCPU starts.
unsafe impl Sync for IdtCell {}

static IDT: IdtCell = IdtCell(UnsafeCell::new(Idt([Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; 256])));

unsafe extern "C" {
    /// The stubs' addresses, in vector order (`entry.S`).
    static basalt_guest_isr_table: [u64; 256];
}

/// The interrupt hook: a `fn(vector)` (null: none).
static INTERRUPT_HANDLER: core::sync::atomic::AtomicPtr<()> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// Sets the function called, with interrupts off, for every interrupt
/// (vectors 32-255) and NMI (vector 2; the handler returns with IRET, which
/// ends the NMI blocking). Without one, an interrupt fails the test like an
/// unexpected exception.
pub fn set_interrupt_handler(f: fn(u8)) {
    INTERRUPT_HANDLER.store(f as *mut (), Ordering::Release);
}

/// The 10-byte operand of `lidt`/`lgdt`.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct DescriptorTablePointer {
    /// Size in bytes minus one.
    pub limit: u16,
    /// Linear address.
    pub base: u64,
}

/// Fills the IDT with `entry.S`'s stubs (present 64-bit interrupt gates)
/// and loads it. Called once by the runtime on vCPU 0 before `main`.
pub(crate) fn install_idt() {
    // SAFETY: the table is defined in entry.S as 256 quads.
    let table = unsafe { &*core::ptr::addr_of!(basalt_guest_isr_table) };
    // SAFETY: runs once, on vCPU 0 while it is the only vCPU, before
    // anything reads the IDT.
    let idt = unsafe { &mut *IDT.0.get() };
    for (gate, &handler) in idt.0.iter_mut().zip(table.iter()) {
        *gate = Gate {
            offset_low: handler as u16,
            selector: CODE64_SEL,
            ist: 0,
            type_attr: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    load_idt();
}

/// Loads the IDT [`install_idt`] filled (on a secondary vCPU: the same
/// table as vCPU 0's).
pub(crate) fn load_idt() {
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is static and filled with valid gates.
    unsafe { lidt(&pointer) };
}

/// Loads the IDT register.
///
/// # Safety
/// `pointer` must describe a valid IDT that stays in place (or one that
/// deliberately makes every exception a triple fault, as the `triple`
/// guest wants).
pub unsafe fn lidt(pointer: &DescriptorTablePointer) {
    // SAFETY: the caller vouches for the table.
    unsafe { asm!("lidt [{}]", in(reg) pointer, options(readonly, nostack, preserves_flags)) };
}

/// Runs `f`, which must execute exactly one instruction that may raise
/// `#UD`, `#GP` or `#PF`, of `len` bytes; returns `Err(vector)` when it did (the
/// handler then resumed right after it).
///
/// ```ignore
/// let f = || {
///     // SAFETY: ...
///     unsafe { asm!("rdmsr", ...) }
/// };
/// // SAFETY: `f` is the 2-byte RDMSR and nothing else that may fault.
/// let result = unsafe { checked(2, f) };
/// ```
///
/// # Safety
/// `f` must consist of one asm block whose only possibly-faulting
/// instruction has exactly `len` bytes, so that the faulting RIP + `len` is
/// the next instruction; registers the instruction would have written hold
/// whatever they held before.
pub unsafe fn checked<R>(len: u8, f: impl FnOnce() -> R) -> Result<R, u8> {
    // The recorder is this vCPU's own: the exception handler is like a
    // signal handler of this thread, so relaxed atomics and compiler fences
    // order everything (and keep this path free of locked instructions, for
    // the benchmarks).
    let faults = recorder();
    faults.vector.store(NO_FAULT, Ordering::Relaxed);
    faults.skip_len.store(len, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    let result = f();
    compiler_fence(Ordering::SeqCst);
    faults.skip_len.store(0, Ordering::Relaxed);
    match faults.vector.load(Ordering::Relaxed) {
        NO_FAULT => Ok(result),
        vector => Err(vector),
    }
}

/// The outcome of a checked instruction for printing: its value in hex,
/// `ok`, or the exception it raised (`#UD`, `#GP`, `exception N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown(pub Result<Option<u64>, u8>);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(Some(value)) => write!(f, "{value:#x}"),
            Ok(None) => f.write_str("ok"),
            Err(UD) => f.write_str("#UD"),
            Err(GP) => f.write_str("#GP"),
            Err(vector) => write!(f, "exception {vector}"),
        }
    }
}

/// A checked instruction's value (or exception), for printing.
pub fn show(result: Result<u64, u8>) -> Shown {
    Shown(result.map(Some))
}

/// A checked instruction's success (or exception), for printing.
pub fn show_unit(result: Result<(), u8>) -> Shown {
    Shown(result.map(|()| None))
}

/// The error code of the last fault [`checked`] reported on this vCPU.
pub fn last_fault_error_code() -> u64 {
    recorder().error.load(Ordering::Relaxed)
}

/// `cpuid` with `leaf` in EAX and `sub` in ECX: `(eax, ebx, ecx, edx)`.
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let (eax, ebx, ecx, edx): (u32, u64, u32, u32);
    // SAFETY: CPUID only reads the leaf; rbx (reserved by LLVM) is saved in
    // a scratch register and restored.
    unsafe {
        asm!(
            "mov {tmp}, rbx",
            "cpuid",
            "xchg {tmp}, rbx",
            tmp = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") sub => ecx,
            out("edx") edx,
            options(nostack, nomem, preserves_flags),
        );
    }
    (eax, ebx as u32, ecx, edx)
}

/// `rdtsc`: the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC at CPL 0 only reads the counter.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, nomem, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// `hlt` (interrupts stay as they are: off in test guests, so only the
/// hypervisor resumes the vCPU).
pub fn halt() {
    // SAFETY: HLT waits; it changes no state the program relies on.
    unsafe { asm!("hlt", options(nostack, nomem, preserves_flags)) };
}

/// `rdmsr`; `Err(vector)` when it faulted (`#GP` for a forbidden MSR).
pub fn rdmsr_checked(msr: u32) -> Result<u64, u8> {
    let f = || {
        let (lo, hi): (u32, u32);
        // SAFETY: reading an MSR has no side effect a test guest relies on
        // (or raises #GP).
        unsafe {
            asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack, nomem))
        };
        (u64::from(hi) << 32) | u64::from(lo)
    };
    // SAFETY: `f` is RDMSR, 2 bytes (0F 32), and nothing else that faults.
    unsafe { checked(2, f) }
}

/// `wrmsr`; `Err(vector)` when it faulted.
///
/// # Safety
/// Writing the MSR must not break the guest (e.g. write back a value read).
pub unsafe fn wrmsr_checked(msr: u32, value: u64) -> Result<(), u8> {
    let f = || {
        // SAFETY: the caller vouches for the value.
        unsafe {
            asm!(
                "wrmsr",
                in("ecx") msr,
                in("eax") value as u32,
                in("edx") (value >> 32) as u32,
                options(nostack),
            )
        }
    };
    // SAFETY: `f` is WRMSR, 2 bytes (0F 30), and nothing else that faults.
    unsafe { checked(2, f) }
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading a control register at CPL 0 has no side effect.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nostack, nomem, preserves_flags)) };
    value
}

/// Reads CR2 (the last page-fault address).
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading a control register at CPL 0 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nostack, nomem, preserves_flags)) };
    value
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading a control register at CPL 0 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nostack, nomem, preserves_flags)) };
    value
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading a control register at CPL 0 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nostack, nomem, preserves_flags)) };
    value
}

/// Writes CR0 (`mov cr0, rax`, 3 bytes); `Err(vector)` when it faulted.
///
/// # Safety
/// The new value must keep the guest running (protected mode, paging, the
/// runtime's SSE setup unless the caller restores it before using SSE).
pub unsafe fn write_cr0_checked(value: u64) -> Result<(), u8> {
    // SAFETY: the caller vouches for the value.
    let f = || unsafe { asm!("mov cr0, rax", in("rax") value, options(nostack)) };
    // SAFETY: `f` is `mov cr0, rax`, 3 bytes (0F 22 C0), and nothing else
    // that faults.
    unsafe { checked(3, f) }
}

/// Writes CR4 (`mov cr4, rax`, 3 bytes); `Err(vector)` when it faulted.
///
/// # Safety
/// The new value must keep the guest running (PAE stays set; OSFXSR and
/// OSXSAVE are restored before any SSE/XSAVE instruction).
pub unsafe fn write_cr4_checked(value: u64) -> Result<(), u8> {
    // SAFETY: the caller vouches for the value.
    let f = || unsafe { asm!("mov cr4, rax", in("rax") value, options(nostack)) };
    // SAFETY: `f` is `mov cr4, rax`, 3 bytes (0F 22 E0), and nothing else
    // that faults.
    unsafe { checked(3, f) }
}

/// `xgetbv` with ECX = `index` (needs CR4.OSXSAVE).
pub fn xgetbv_checked(index: u32) -> Result<u64, u8> {
    let f = || {
        let (lo, hi): (u32, u32);
        // SAFETY: XGETBV only reads an extended control register (or raises
        // #UD without CR4.OSXSAVE).
        unsafe {
            asm!(
                "xgetbv",
                in("ecx") index,
                out("eax") lo,
                out("edx") hi,
                options(nostack, nomem, preserves_flags),
            )
        };
        (u64::from(hi) << 32) | u64::from(lo)
    };
    // SAFETY: `f` is XGETBV, 3 bytes (0F 01 D0), and nothing else that
    // faults.
    unsafe { checked(3, f) }
}

/// `xsetbv` with ECX = `index` (needs CR4.OSXSAVE; exits to the
/// hypervisor).
///
/// # Safety
/// The value must be a valid XCR (bit 0 set, AVX only with SSE...).
pub unsafe fn xsetbv_checked(index: u32, value: u64) -> Result<(), u8> {
    let f = || {
        // SAFETY: the caller vouches for the value.
        unsafe {
            asm!(
                "xsetbv",
                in("ecx") index,
                in("eax") value as u32,
                in("edx") (value >> 32) as u32,
                options(nostack),
            )
        }
    };
    // SAFETY: `f` is XSETBV, 3 bytes (0F 01 D1), and nothing else that
    // faults.
    unsafe { checked(3, f) }
}

/// XCR0 bits: x87, SSE, AVX (YMM upper halves).
pub const XCR0_X87: u64 = 1 << 0;
/// SSE state in XCR0.
pub const XCR0_SSE: u64 = 1 << 1;
/// AVX state in XCR0.
pub const XCR0_AVX: u64 = 1 << 2;

/// Enables AVX state in XCR0 when the CPU and CR4.OSXSAVE allow it (an
/// `xsetbv`, which always exits to the hypervisor). Returns whether AVX
/// (the YMM upper halves) can be used.
pub fn enable_avx() -> bool {
    let (_, _, ecx, _) = cpuid(1, 0);
    let xsave = ecx & (1 << 26) != 0;
    let avx = ecx & (1 << 28) != 0;
    if !xsave || !avx || read_cr4() & (1 << 18) == 0 {
        return false;
    }
    let (supported, _, _, _) = cpuid(0xd, 0);
    if u64::from(supported) & (XCR0_SSE | XCR0_AVX) != (XCR0_SSE | XCR0_AVX) {
        return false;
    }
    let Ok(xcr0) = xgetbv_checked(0) else {
        return false;
    };
    if xcr0 & XCR0_AVX != 0 {
        return true;
    }
    // SAFETY: x87 | SSE | AVX is a valid XCR0 where CPUID.0xD lists SSE and
    // AVX; nothing uses AVX state yet.
    let set = unsafe { xsetbv_checked(0, xcr0 | XCR0_X87 | XCR0_SSE | XCR0_AVX) };
    set.is_ok() && xgetbv_checked(0).is_ok_and(|x| x & XCR0_AVX != 0)
}

/// `out dx, al`.
pub fn outb(port: u16, value: u8) {
    // SAFETY: a port write; test guests own all their ports (the hypervisor
    // emulates or ignores them).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nostack, nomem, preserves_flags))
    };
}

/// `out dx, ax`.
pub fn outw(port: u16, value: u16) {
    // SAFETY: as `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nostack, nomem, preserves_flags))
    };
}

/// `out dx, eax`.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, nomem, preserves_flags))
    };
}

/// `in al, dx`.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: a port read; test guests own all their ports.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nostack, nomem, preserves_flags))
    };
    value
}

/// `in ax, dx`.
pub fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: as `inb`.
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") value, options(nostack, nomem, preserves_flags))
    };
    value
}

/// `in eax, dx`.
pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as `inb`.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nostack, nomem, preserves_flags))
    };
    value
}

/// `vmxon [rax]` with RAX pointing at `region_gpa` (encoded as the 4 bytes
/// F3 0F C7 30); `Err(vector)` when it faulted. In a guest it must raise
/// `#UD`: the hypervisor hides VMX.
pub fn vmxon_checked(region_gpa: u64) -> Result<(), u8> {
    let operand = region_gpa;
    let f = || {
        // SAFETY: with VMX hidden this raises #UD; were it to succeed, the
        // guest would be in VMX operation, which the test then reports.
        unsafe {
            asm!(
                ".byte 0xf3, 0x0f, 0xc7, 0x30",
                in("rax") &operand,
                options(nostack, readonly),
            )
        }
    };
    // SAFETY: `f` is VMXON [rax], 4 bytes (F3 0F C7 30), and nothing else
    // that faults.
    unsafe { checked(4, f) }
}

/// Programs the 8259 PIC pair as Linux's `init_8259A` does: edge triggered,
/// cascaded on IRQ 2, vectors 0x20-0x27 (master) and 0x28-0x2F (slave),
/// 8086 mode; then sets the interrupt masks (a set bit masks the line).
pub fn init_pic_pair(master_mask: u8, slave_mask: u8) {
    // ICW1: edge, cascade, ICW4 follows.
    outb(0x20, 0x11);
    outb(0xa0, 0x11);
    // ICW2: vector bases.
    outb(0x21, 0x20);
    outb(0xa1, 0x28);
    // ICW3: the slave hangs on IRQ 2 and is slave number 2.
    outb(0x21, 0x04);
    outb(0xa1, 0x02);
    // ICW4: 8086 mode.
    outb(0x21, 0x01);
    outb(0xa1, 0x01);
    // OCW1: the masks.
    outb(0x21, master_mask);
    outb(0xa1, slave_mask);
}
