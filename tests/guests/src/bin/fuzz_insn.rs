//! Random instructions against the hypervisor: each iteration runs one
//! random instruction in ring 0, in a scratch code page, with random
//! registers, catches whatever it raises, puts the guest's state back and
//! goes on. The generator leans toward instructions that exit to the
//! hypervisor (CPUID, MSRs, control and debug registers, XSETBV, port I/O,
//! VMCALL, VMX/SVM instructions, INVD/WBINVD, HLT, ...) and mixes in random
//! byte strings with prefixes.
//!
//! How one instruction cannot take the harness with it:
//! - It runs on page tables of its own ("fuzz tables") that map only a few
//!   pages of the arena below: the code page (read-only), 16 KiB of scratch
//!   data (the only writable memory besides the exception stack), the
//!   exception stubs, IDT, GDT and TSS (read-only). Everything else,
//!   the harness included, is not present: a wild access is a guest `#PF`,
//!   never an access outside the domain's RAM.
//! - Every IDT gate (all 256 vectors) uses IST 1: whatever RSP the
//!   instruction left, the stub runs on a known stack. The stub restores
//!   CR0, CR4, CR3 (the harness's page tables) and DR7, records the vector,
//!   the frame and the registers, and IRETs to the harness (CS, SS, RFLAGS
//!   back too).
//! - After the instruction comes `int3` padding: an instruction that
//!   completes raises `#BP` right after itself and comes back the same way.
//! - The harness then puts back what this class of instruction may change:
//!   segment registers and the GS base, XCR0, CR8, the MSR written (read
//!   first, written back), `IA32_APIC_BASE` through its disabled state.
//! - Left out because they would destroy the guest and say nothing about
//!   the hypervisor: LGDT, LIDT, LLDT, LTR and MOV to CR3 with a value not
//!   pointing at the fuzz tables (a wrong table is a triple fault), writes
//!   of out-of-range `EFER`/`IA32_APIC_BASE` values through random byte
//!   strings, OUT to the ACPI PM1a control (0x604) and reset (0xCF9) ports,
//!   and hypercalls that end the domain (`fuzz::defuse_hypercall`). `HLT`
//!   and a blocking `VMCALL` run with the single-shot timer armed.
//!
//! Options: `seed=1`, `iterations=1000000`, `mmio=0` (`1`: the local and I/O
//! APIC pages are mapped too, as data, and one register in eight points into
//! them: random instructions reach Basalt's MMIO emulator, which stops the
//! domain for an instruction it does not emulate, so such runs end early),
//! `fep=0` (`1`: half the random byte strings start with Xen's
//! forced-emulation prefix, for a Basalt booted with `hvm_fep`),
//! `progress=100000` (a line every
//! so many iterations, so a log shows how far a run got), `trace=N` (print
//! every iteration from N on, with its bytes), `skip=a,b` (leave classes
//! out while a known host bug is being fixed: class names as in the final
//! table, plus `strio`, `xsetbv` inside random byte strings, and `cr0`, `cr3`,
//! `cr4`, `cr8` for writes to one control register, `pit-rtc` for OUT to
//! the PIT and RTC ports).
//!
//! At the end: the iterations run, the outcome of each class (completed,
//! or the exception vector), the vectors over all, then `TEST PASS`.

#![no_std]
#![no_main]

use basalt_test_guests::fuzz::{Rng, Tally, Wakeup, defuse_hypercall, is_long_console_write};
use basalt_test_guests::{arg, arg_u64, cpu, fail, pass, print, println};
use core::arch::{asm, global_asm};
use core::mem::offset_of;

basalt_test_guests::entry!(main);

// ---------------------------------------------------------------- layout

/// The arena, page by page (in `.bss`, page aligned; see the module doc).
const PAGE: u64 = 4096;
const P_SCRATCH: u64 = 1; // 4 pages
const SCRATCH_PAGES: u64 = 4;
const P_IST: u64 = 6; // 2 pages
const IST_PAGES: u64 = 2;
const P_SAVE: u64 = 9;
const P_IDT: u64 = 10;
const P_GDT: u64 = 11;
const P_CODE: u64 = 12;
const P_PML4: u64 = 14;
const P_PDPT: u64 = 15;
const P_PD: u64 = 16;
const P_PT: u64 = 17;
const P_PD_DEV: u64 = 18;
const P_PT_DEV: u64 = 19;
const ARENA_PAGES: u64 = 20;

/// The local APIC and I/O APIC pages (mapped only with `mmio=1`).
const DEVICE_PAGES: [u64; 2] = [0xfee0_0000, 0xfec0_0000];

/// Where in the code page the instruction goes (int3 everywhere else).
const CODE_OFFSET: u64 = 0x800;

/// The selectors of the guest's GDT (the runtime's, plus the TSS).
const CODE_SEL: u64 = 0x08;
const DATA_SEL: u16 = 0x10;
const TSS_SEL: u16 = 0x18;

/// What the harness hands the stub and the stub hands back, in the save
/// page. Read-only while the instruction runs; written by the stub only
/// after it switched back to the harness's page tables.
#[repr(C)]
struct Save {
    harness_rsp: u64,
    harness_cr3: u64,
    fuzz_cr3: u64,
    cr0: u64,
    cr4: u64,
    target: u64,
    rflags: u64,
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15.
    regs: [u64; 16],
    in_fuzz: u64,
    out_vector: u64,
    /// The first four words of the exception frame (error code or RIP
    /// first, depending on the vector).
    out_frame: [u64; 4],
    out_cr2: u64,
    /// r15 down to rax, as the stub pushed them.
    out_regs: [u64; 15],
}

const R_RAX: usize = 0;
const R_RCX: usize = 2;
const R_RDX: usize = 3;
const R_RSI: usize = 4;
const R_RDI: usize = 5;
const R_RSP: usize = 7;
const R_R8: usize = 8;
const R_R10: usize = 10;

global_asm!(
    r#"
    .section .bss.fuzz_arena, "aw", @nobits
    .balign 4096
    .globl fuzz_arena
fuzz_arena:
    .skip {ARENA}

    .set fz_ist_base, fuzz_arena + {P_IST} * 4096
    .set fz_ist_top, fuzz_arena + ({P_IST} + {IST_PAGES}) * 4096
    .set fz_save, fuzz_arena + {P_SAVE} * 4096

    .section .text.fuzz_stub, "ax", @progbits
    .balign 4096
    .globl fuzz_stub_start
fuzz_stub_start:

/* fuzz_enter(): runs the prepared instruction; returns when the stub came
   back. Callee-saved registers on the harness stack; the iret frame that
   enters the instruction is built at the bottom of the IST area. */
    .globl fuzz_enter
fuzz_enter:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + fz_save + {HARNESS_RSP}], rsp
    mov qword ptr [rip + fz_save + {IN_FUZZ}], 1
    mov qword ptr [rip + fz_ist_base], 0
    lea rsp, [rip + fz_ist_base + 1024]
    push {DATA_SEL}
    push qword ptr [rip + fz_save + {REGS} + 7 * 8]
    push qword ptr [rip + fz_save + {RFLAGS}]
    push {CODE_SEL}
    push qword ptr [rip + fz_save + {TARGET}]
    mov rax, [rip + fz_save + {FUZZ_CR3}]
    mov cr3, rax
    mov rbx, [rip + fz_save + {REGS} + 1 * 8]
    mov rcx, [rip + fz_save + {REGS} + 2 * 8]
    mov rdx, [rip + fz_save + {REGS} + 3 * 8]
    mov rsi, [rip + fz_save + {REGS} + 4 * 8]
    mov rdi, [rip + fz_save + {REGS} + 5 * 8]
    mov rbp, [rip + fz_save + {REGS} + 6 * 8]
    mov r8, [rip + fz_save + {REGS} + 8 * 8]
    mov r9, [rip + fz_save + {REGS} + 9 * 8]
    mov r10, [rip + fz_save + {REGS} + 10 * 8]
    mov r11, [rip + fz_save + {REGS} + 11 * 8]
    mov r12, [rip + fz_save + {REGS} + 12 * 8]
    mov r13, [rip + fz_save + {REGS} + 13 * 8]
    mov r14, [rip + fz_save + {REGS} + 14 * 8]
    mov r15, [rip + fz_save + {REGS} + 15 * 8]
    mov rax, [rip + fz_save + {REGS} + 0 * 8]
    iretq

/* The gates' entries: the vector, then the common path. */
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255
fz_isr_\vec:
    push \vec
    jmp fz_common
    .endr

/* On the IST stack, interrupts off, CR3 possibly the fuzz tables. */
fz_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    /* Re-entered too often (a restore that keeps faulting): give up. */
    inc qword ptr [rip + fz_ist_base]
    cmp qword ptr [rip + fz_ist_base], 16
    ja fz_give_up
    cmp qword ptr [rip + fz_save + {IN_FUZZ}], 0
    je fz_harness_fault
    mov rax, cr0
    mov rbx, [rip + fz_save + {CR0}]
    cmp rax, rbx
    je 1f
    mov cr0, rbx
1:  mov rax, cr4
    mov rbx, [rip + fz_save + {CR4}]
    cmp rax, rbx
    je 2f
    mov cr4, rbx
2:  mov rax, [rip + fz_save + {HARNESS_CR3}]
    mov cr3, rax
    mov eax, 0x400
    mov dr7, rax
    /* The save page is writable now. */
    mov rax, [rsp + 15 * 8]
    mov [rip + fz_save + {OUT_VECTOR}], rax
    mov rax, [rsp + 16 * 8]
    mov [rip + fz_save + {OUT_FRAME}], rax
    mov rax, [rsp + 17 * 8]
    mov [rip + fz_save + {OUT_FRAME} + 8], rax
    mov rax, [rsp + 18 * 8]
    mov [rip + fz_save + {OUT_FRAME} + 16], rax
    mov rax, [rsp + 19 * 8]
    mov [rip + fz_save + {OUT_FRAME} + 24], rax
    mov rax, cr2
    mov [rip + fz_save + {OUT_CR2}], rax
    xor ecx, ecx
3:  mov rax, [rsp + rcx * 8]
    lea rdx, [rip + fz_save + {OUT_REGS}]
    mov [rdx + rcx * 8], rax
    inc ecx
    cmp ecx, 15
    jb 3b
    mov qword ptr [rip + fz_save + {IN_FUZZ}], 0
    mov rax, [rip + fz_save + {HARNESS_RSP}]
    push {DATA_SEL}
    push rax
    push 2
    push {CODE_SEL}
    lea rax, [rip + fz_resume]
    push rax
    iretq

fz_resume:
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

fz_give_up:
    mov rax, [rip + fz_save + {HARNESS_CR3}]
    mov cr3, rax
    lea rsp, [rip + fz_ist_top - 64]
    xor edi, edi
    jmp 4f
fz_harness_fault:
    mov rdi, 1
4:  lea rsi, [rip + fz_ist_top]
    and rsp, -16
    call fuzz_insn_fatal
5:  cli
    hlt
    jmp 5b

    .balign 4096
    .globl fuzz_stub_end
fuzz_stub_end:

    .section .rodata.fuzz_isr_table, "a", @progbits
    .balign 8
    .globl fuzz_isr_table
fuzz_isr_table:
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255
    .quad fz_isr_\vec
    .endr
"#,
    ARENA = const ARENA_PAGES * PAGE,
    P_IST = const P_IST,
    IST_PAGES = const IST_PAGES,
    P_SAVE = const P_SAVE,
    HARNESS_RSP = const offset_of!(Save, harness_rsp),
    HARNESS_CR3 = const offset_of!(Save, harness_cr3),
    FUZZ_CR3 = const offset_of!(Save, fuzz_cr3),
    CR0 = const offset_of!(Save, cr0),
    CR4 = const offset_of!(Save, cr4),
    TARGET = const offset_of!(Save, target),
    RFLAGS = const offset_of!(Save, rflags),
    REGS = const offset_of!(Save, regs),
    IN_FUZZ = const offset_of!(Save, in_fuzz),
    OUT_VECTOR = const offset_of!(Save, out_vector),
    OUT_FRAME = const offset_of!(Save, out_frame),
    OUT_CR2 = const offset_of!(Save, out_cr2),
    OUT_REGS = const offset_of!(Save, out_regs),
    DATA_SEL = const DATA_SEL,
    CODE_SEL = const CODE_SEL,
);

unsafe extern "C" {
    static fuzz_arena: [u8; 0];
    static fuzz_stub_start: [u8; 0];
    static fuzz_stub_end: [u8; 0];
    static fuzz_isr_table: [u64; 256];
    fn fuzz_enter();
}

fn arena() -> u64 {
    core::ptr::addr_of!(fuzz_arena) as u64
}

fn page(n: u64) -> u64 {
    arena() + n * PAGE
}

fn save() -> *mut Save {
    page(P_SAVE) as *mut Save
}

/// Called by the stub when it cannot go on: `kind` 0 = it kept faulting
/// while restoring, 1 = an exception while no instruction was being fuzzed
/// (a harness bug). `frame_top` is the top of the IST stack.
#[unsafe(no_mangle)]
extern "C" fn fuzz_insn_fatal(kind: u64, frame_top: u64) -> ! {
    let words = (frame_top - 40 * 8) as *const u64;
    let mut w = [0u64; 40];
    for (i, slot) in w.iter_mut().enumerate() {
        // SAFETY: the IST stack is mapped guest RAM of the arena.
        *slot = unsafe { words.add(i).read_volatile() };
    }
    let what = if kind == 0 {
        "the exception stub kept faulting while restoring the guest"
    } else {
        "an exception outside a fuzzed instruction (harness bug)"
    };
    println!("fuzz_insn: {what}; top of the exception stack:");
    for chunk in w.chunks(4) {
        println!(
            "  {:#018x} {:#018x} {:#018x} {:#018x}",
            chunk[0], chunk[1], chunk[2], chunk[3]
        );
    }
    let code = fail!("{what} (iteration {})", CURRENT.load());
    basalt_test_guests::exit(code)
}

/// The iteration in progress, for reports.
struct Current(core::sync::atomic::AtomicU64);
impl Current {
    fn load(&self) -> u64 {
        self.0.load(core::sync::atomic::Ordering::Relaxed)
    }
    fn store(&self, v: u64) {
        self.0.store(v, core::sync::atomic::Ordering::Relaxed)
    }
}
static CURRENT: Current = Current(core::sync::atomic::AtomicU64::new(0));

// ---------------------------------------------------------------- setup

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_XD: u64 = 1 << 63;
const EFER_NXE: u64 = 1 << 11;

/// Builds the fuzz tables, the GDT with a TSS, the IDT (IST 1 on every
/// gate), and loads GDT, TR and IDT.
fn setup(mmio: bool) -> Result<(), &'static str> {
    let top = page(ARENA_PAGES);
    let (stub_start, stub_end) = (
        core::ptr::addr_of!(fuzz_stub_start) as u64,
        core::ptr::addr_of!(fuzz_stub_end) as u64,
    );
    if top > 0x20_0000 || stub_end > 0x20_0000 {
        return Err("the arena or the stubs lie above 2 MiB: one page table no longer covers them");
    }
    let zero = |p: u64| {
        // SAFETY: a page of the arena (guest RAM, identity-mapped).
        unsafe { core::ptr::write_bytes(p as *mut u8, 0, PAGE as usize) };
    };
    for p in [
        P_PML4, P_PDPT, P_PD, P_PT, P_PD_DEV, P_PT_DEV, P_IDT, P_GDT, P_SAVE,
    ] {
        zero(page(p));
    }
    let set = |table: u64, index: u64, value: u64| {
        // SAFETY: `index` < 512 in a page-table page of the arena.
        unsafe { ((table + index * 8) as *mut u64).write_volatile(value) };
    };
    set(page(P_PML4), 0, page(P_PDPT) | PTE_P | PTE_RW);
    set(page(P_PDPT), 0, page(P_PD) | PTE_P | PTE_RW);
    set(page(P_PD), 0, page(P_PT) | PTE_P | PTE_RW);
    // Only the code page and the stubs are executable (EFER.NXE is set
    // below): a jump into the scratch data is a #PF, not more random code.
    let map = |addr: u64, writable: bool, exec: bool| {
        set(
            page(P_PT),
            addr >> 12,
            addr | PTE_P | if writable { PTE_RW } else { 0 } | if exec { 0 } else { PTE_XD },
        );
    };
    for i in 0..SCRATCH_PAGES {
        map(page(P_SCRATCH + i), true, false);
    }
    for i in 0..IST_PAGES {
        map(page(P_IST + i), true, false);
    }
    for p in [P_SAVE, P_IDT, P_GDT] {
        map(page(p), false, false);
    }
    map(page(P_CODE), false, true);
    let mut p = stub_start;
    while p < stub_end {
        map(p, false, true);
        p += PAGE;
    }
    if mmio {
        // The APIC pages, as data (3-4 GiB: PDPT[3], PD[503], one table).
        set(page(P_PDPT), 3, page(P_PD_DEV) | PTE_P | PTE_RW);
        set(page(P_PD_DEV), 503, page(P_PT_DEV) | PTE_P | PTE_RW);
        for d in DEVICE_PAGES {
            set(page(P_PT_DEV), (d >> 12) & 511, d | PTE_P | PTE_RW | PTE_XD);
        }
    }
    let efer = cpu::rdmsr_checked(IA32_EFER).map_err(|_| "IA32_EFER cannot be read")?;
    // SAFETY: EFER.NXE only makes bit 63 of page-table entries meaningful;
    // the runtime's tables have it clear.
    unsafe { cpu::wrmsr_checked(IA32_EFER, efer | EFER_NXE) }
        .map_err(|_| "IA32_EFER.NXE cannot be set")?;
    // The code page: int3 everywhere.
    // SAFETY: the code page of the arena.
    unsafe { core::ptr::write_bytes(page(P_CODE) as *mut u8, 0xcc, PAGE as usize) };

    // GDT: null, 64-bit code, data, TSS (16 bytes); TSS at +0x100.
    let gdt = page(P_GDT);
    let tss = gdt + 0x100;
    let ist_top = page(P_IST + IST_PAGES);
    let tss_desc_low =
        0x67 | ((tss & 0xff_ffff) << 16) | (0x89 << 40) | (((tss >> 24) & 0xff) << 56);
    for (i, d) in [
        0u64,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        tss_desc_low,
        tss >> 32,
    ]
    .iter()
    .enumerate()
    {
        set(gdt, i as u64, *d);
    }
    // TSS: RSP0 (offset 4) and IST1 (offset 0x24), no I/O bitmap.
    // SAFETY: inside the GDT page of the arena.
    unsafe {
        ((tss + 4) as *mut u64).write_unaligned(ist_top);
        ((tss + 0x24) as *mut u64).write_unaligned(ist_top);
        ((tss + 0x66) as *mut u16).write_unaligned(0x68);
    }
    // IDT: 256 interrupt gates, IST 1.
    let idt = page(P_IDT);
    // SAFETY: the asm table of 256 stub addresses.
    let stubs = unsafe { &*core::ptr::addr_of!(fuzz_isr_table) };
    for (v, &h) in stubs.iter().enumerate() {
        let low = (h & 0xffff) | (CODE_SEL << 16) | (1 << 32) | (0x8e << 40) | ((h >> 16) << 48);
        set(idt, 2 * v as u64, low);
        set(idt, 2 * v as u64 + 1, h >> 32);
    }
    let gdtr = cpu::DescriptorTablePointer {
        limit: 5 * 8 - 1,
        base: gdt,
    };
    let idtr = cpu::DescriptorTablePointer {
        limit: 256 * 16 - 1,
        base: idt,
    };
    // SAFETY: the new GDT has the runtime's selectors with the same
    // descriptors (nothing needs reloading) plus an available TSS; the IDT
    // points at the arena's stubs, which handle every vector.
    unsafe {
        asm!("lgdt [{}]", in(reg) &gdtr, options(readonly, nostack, preserves_flags));
        asm!("ltr {0:x}", in(reg) TSS_SEL, options(nomem, nostack, preserves_flags));
        cpu::lidt(&idtr);
    }
    // SAFETY: the save page, which nothing else uses.
    let s = unsafe { &mut *save() };
    s.harness_cr3 = cpu::read_cr3();
    s.fuzz_cr3 = page(P_PML4);
    s.cr0 = cpu::read_cr0();
    s.cr4 = cpu::read_cr4();
    Ok(())
}

// ---------------------------------------------------------------- one run

/// How one instruction ended.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// The vector that brought the stub in (3 with `completed` = the int3
    /// after the instruction).
    vector: u8,
    /// Ran to its end (or jumped into the int3 padding).
    completed: bool,
    /// RAX and RDX afterwards (RDMSR's result).
    rax: u64,
    rdx: u64,
}

/// An instruction and the state it runs with.
#[derive(Debug, Clone, Copy)]
struct Insn {
    bytes: [u8; 15],
    len: usize,
    regs: [u64; 16],
    rflags: u64,
}

impl Insn {
    fn new(code: &[u8], regs: [u64; 16]) -> Insn {
        let mut bytes = [0x90u8; 15];
        bytes[..code.len()].copy_from_slice(code);
        Insn {
            bytes,
            len: code.len(),
            regs,
            rflags: 2,
        }
    }
}

/// Runs `insn` in the fuzz context and reports how it ended.
fn exec(insn: &Insn) -> Outcome {
    let code = page(P_CODE) + CODE_OFFSET;
    // SAFETY: the code page of the arena (writable through the harness's
    // tables): int3 over the last instruction, then the new bytes.
    unsafe {
        core::ptr::write_bytes(code as *mut u8, 0xcc, 16);
        core::ptr::copy_nonoverlapping(insn.bytes.as_ptr(), code as *mut u8, insn.len);
    }
    let s = save();
    // SAFETY: the save page; the stub reads it only inside fuzz_enter.
    unsafe {
        (*s).target = code;
        (*s).rflags = insn.rflags;
        (*s).regs = insn.regs;
        (*s).out_vector = 0xffff;
    }
    // SAFETY: fuzz_enter saves the callee-saved registers, runs the
    // instruction in the fuzz context (which reaches no harness memory) and
    // returns through the stub with the harness's CR0, CR3, CR4, CS, SS,
    // RSP and RFLAGS.
    unsafe {
        asm!(
            "call {f}",
            f = sym fuzz_enter,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        )
    };
    // SAFETY: the stub filled these before returning.
    let (vector, frame0, out) = unsafe { ((*s).out_vector, (*s).out_frame[0], (*s).out_regs) };
    let end = code + insn.len as u64;
    // The int3 after the instruction (or further on in the padding), or a
    // single-step trap (RFLAGS.TF) right after it.
    let completed = (vector == 3 && frame0 > end && frame0 <= page(P_CODE) + PAGE)
        || (vector == 1 && frame0 == end);
    Outcome {
        vector: vector as u8,
        completed,
        rax: out[14],
        rdx: out[11],
    }
}

// ---------------------------------------------------------------- classes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Cpuid,
    Rdmsr,
    Wrmsr,
    CrRead,
    CrWrite,
    Dr,
    Xcr,
    Io,
    StrIo,
    Vmcall,
    Vmx,
    Cache,
    Time,
    Hlt,
    IntN,
    Misc,
    Random,
}

const CLASSES: [(Class, &str, u32); 17] = [
    (Class::Cpuid, "cpuid", 7),
    (Class::Rdmsr, "rdmsr", 7),
    (Class::Wrmsr, "wrmsr", 8),
    (Class::CrRead, "cr-read", 2),
    (Class::CrWrite, "cr-write", 9),
    (Class::Dr, "dr", 4),
    (Class::Xcr, "xsetbv", 6),
    (Class::Io, "io", 8),
    (Class::StrIo, "strio", 4),
    (Class::Vmcall, "vmcall", 5),
    (Class::Vmx, "vmx-svm", 4),
    (Class::Cache, "invd-wbinvd", 2),
    (Class::Time, "rdtsc-rdpid", 2),
    (Class::Hlt, "hlt", 1),
    (Class::IntN, "int-n", 2),
    (Class::Misc, "privileged", 5),
    (Class::Random, "random", 24),
];

/// What the harness puts back after an instruction.
#[derive(Debug, Clone, Copy, Default)]
struct Restore {
    /// An MSR that may have been written, with its value before.
    msr: Option<(u32, Option<u64>)>,
    xcr0: bool,
    cr8: bool,
    segments: bool,
    timer: bool,
}

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_EFER: u32 = 0xc000_0080;
const IA32_GS_BASE: u32 = 0xc000_0101;
const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// MSRs worth trying: architectural ones Basalt passes through, switches,
/// emulates or refuses, the APIC's, the VMX capability MSRs, Xen's and
/// KVM's paravirtual ranges, AMD's.
const MSRS: &[u32] = &[
    0x0,
    0x1,
    0x10,
    0x17,
    0x1b,
    0x3a,
    0x3b,
    0x48,
    0x49,
    0x8b,
    0xc1,
    0xe7,
    0xe8,
    0xfe,
    0x10a,
    0x122,
    0x140,
    0x174,
    0x175,
    0x176,
    0x179,
    0x17a,
    0x186,
    0x198,
    0x199,
    0x1a0,
    0x1c4,
    0x1c5,
    0x1d9,
    0x200,
    0x201,
    0x250,
    0x258,
    0x277,
    0x2ff,
    0x345,
    0x38d,
    0x38f,
    0x480,
    0x481,
    0x482,
    0x483,
    0x484,
    0x485,
    0x486,
    0x487,
    0x488,
    0x489,
    0x48a,
    0x48b,
    0x48c,
    0x48d,
    0x48e,
    0x48f,
    0x490,
    0x491,
    0x4d0,
    0x6a0,
    0x6a2,
    0x6e0,
    0x800,
    0x802,
    0x803,
    0x808,
    0x80a,
    0x80b,
    0x80d,
    0x80f,
    0x828,
    0x830,
    0x832,
    0x838,
    0x839,
    0x83e,
    0x83f,
    0x8ff,
    0xd90,
    0xda0,
    0xc000_0080,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0100,
    0xc000_0101,
    0xc000_0102,
    0xc000_0103,
    0xc000_0104,
    0xc001_0000,
    0xc001_0015,
    0xc001_0114,
    0xc001_0117,
    0x4000_0000,
    0x4000_0001,
    0x4000_0100,
    0x4b56_4d00,
    0x4b56_4d01,
    0x4b56_4d02,
];

/// Ports worth trying: every device Basalt models or refuses, and
/// neighbours. OUT never goes to 0x604-0x605 (PM1a control: S5 powers the
/// domain off) or 0xCF9 (reset: reboots it), nor to the console (0xE9, and
/// COM1's transmit register 0x3F8), which would fill the log with random
/// bytes: `console_io` with short lengths covers the console path.
const PORTS: &[u16] = &[
    0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x70, 0x71, 0x3f8, 0x3f9,
    0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x2f8, 0xe9, 0xcf8, 0xcfa, 0xcfb, 0xcfc, 0xcfd,
    0xcfe, 0xcff, 0x600, 0x601, 0x602, 0x603, 0x606, 0x608, 0x609, 0x60b, 0x80, 0x92, 0x60, 0x64,
    0x1f0, 0x1f7, 0x3c0, 0x3d4, 0x510, 0xb2, 0x402, 0x8900, 0xf4, 0xffff, 0xfffe, 0xfffd, 0x0,
];

/// Whether OUT to `port` (`size` bytes) may run; `skip_timers` also keeps
/// it off the PIT (0x40-0x43) and RTC (0x70-0x71) ports (`skip=pit-rtc`).
fn port_allowed_for_out(port: u64, size: u64, skip_timers: bool) -> bool {
    let lo = port & 0xffff;
    let hi = lo + size;
    let hits = |p: u64| lo <= p && p < hi;
    let timers = skip_timers && (0x40..0x44).chain(0x70..0x72).any(hits);
    !(timers || hits(0x604) || hits(0x605) || hits(0xcf9) || hits(0xe9) || hits(0x3f8))
}

/// Makes an OUT through DX safe for the run: away from the ports that end
/// or restart the domain on purpose.
fn defuse_out_port(regs: &mut [u64; 16], size: u64, skip_timers: bool) {
    while !port_allowed_for_out(regs[R_RDX], size, skip_timers) {
        regs[R_RDX] = (regs[R_RDX] & !0xffff) | ((regs[R_RDX] + 0x10) & 0xffff);
    }
}

struct Gen {
    rng: Rng,
    scratch: u64,
    skip_strio: bool,
    skip_xsetbv: bool,
    skip_timers: bool,
    /// Registers may point at the APIC pages (`mmio=1`).
    mmio: bool,
    /// Half the random byte strings start with Xen's forced-emulation
    /// prefix (`fep=1`, for a Basalt booted with `hvm_fep`).
    fep: bool,
    /// Control registers not to write (bit n: CRn), while a host bug is
    /// being fixed.
    skip_cr: u32,
    xcr0_supported: u64,
}

impl Gen {
    /// A register value: a scratch pointer, an edge value or random bits
    /// (with `mmio=1` also a pointer into an APIC page).
    fn reg(&mut self) -> u64 {
        if self.mmio && self.rng.chance(1, 8) {
            return self.rng.pick(&DEVICE_PAGES) + (self.rng.below(0x1000) & !3);
        }
        match self.rng.below(10) {
            0..=3 => self.scratch + self.rng.below(SCRATCH_PAGES * PAGE),
            4..=6 => self.rng.interesting(),
            _ => self.rng.next(),
        }
    }

    fn regs(&mut self) -> [u64; 16] {
        let mut r = [0u64; 16];
        for v in r.iter_mut() {
            *v = self.reg();
        }
        // The stack: inside the scratch pages, usually aligned, sometimes
        // anywhere (a push then faults, the IST gate catches it).
        r[R_RSP] = if self.rng.chance(1, 16) {
            self.rng.interesting()
        } else {
            let base = self.scratch + 2 * PAGE + self.rng.below(PAGE);
            if self.rng.chance(7, 8) {
                base & !7
            } else {
                base
            }
        };
        r
    }

    fn rflags(&mut self) -> u64 {
        // Arithmetic flags and DF at random; IF, AC, TF now and then.
        let mut f = 2 | (self.rng.next() & 0x8d5);
        if self.rng.chance(1, 16) {
            f |= 1 << 9;
        }
        if self.rng.chance(1, 32) {
            f |= 1 << 18;
        }
        if self.rng.chance(1, 64) {
            f |= 1 << 8;
        }
        f
    }

    fn make(&mut self, class: Class) -> (Insn, Restore) {
        let mut regs = self.regs();
        let mut re = Restore::default();
        let mut code: [u8; 15] = [0x90; 15];
        let len;
        macro_rules! put {
            ($($b:expr),*) => {{
                let b = [$($b as u8),*];
                code[..b.len()].copy_from_slice(&b);
                len = b.len();
            }};
        }
        match class {
            Class::Cpuid => {
                put!(0x0f, 0xa2);
                regs[R_RAX] = match self.rng.below(4) {
                    0 => self.rng.below(0x20),
                    1 => 0x4000_0000 + self.rng.below(0x20),
                    2 => 0x8000_0000 + self.rng.below(0x20),
                    _ => self.rng.interesting(),
                };
                regs[R_RCX] = if self.rng.chance(1, 2) {
                    self.rng.below(0x40)
                } else {
                    self.rng.interesting()
                };
            }
            Class::Rdmsr => {
                put!(0x0f, 0x32);
                regs[R_RCX] = self.msr_number();
            }
            Class::Wrmsr => {
                put!(0x0f, 0x30);
                let msr = self.msr_number() as u32;
                regs[R_RCX] = u64::from(msr);
                let before = read_msr(msr);
                let value = self.msr_value(msr, before);
                regs[R_RAX] = value & 0xffff_ffff;
                regs[R_RDX] = value >> 32;
                re.msr = Some((msr, before));
                re.segments = true;
            }
            Class::CrRead => {
                let cr = self.rng.pick(&[0u8, 2, 3, 4, 8]);
                if cr == 8 {
                    put!(0x44, 0x0f, 0x20, 0xc0);
                } else {
                    put!(0x0f, 0x20, 0xc0 | (cr << 3));
                }
            }
            Class::CrWrite => {
                let mut cr = self.rng.pick(&[0u8, 0, 2, 3, 4, 4, 8]);
                if self.skip_cr & (1 << cr) != 0 {
                    cr = 2;
                }
                if cr == 8 {
                    put!(0x44, 0x0f, 0x22, 0xc0);
                    re.cr8 = true;
                } else {
                    put!(0x0f, 0x22, 0xc0 | (cr << 3));
                }
                regs[R_RAX] = self.cr_value(cr);
            }
            Class::Dr => {
                let dr = self.rng.below(8) as u8;
                if self.rng.chance(1, 3) {
                    put!(0x0f, 0x21, 0xc0 | (dr << 3));
                } else {
                    put!(0x0f, 0x23, 0xc0 | (dr << 3));
                    regs[R_RAX] = match self.rng.below(4) {
                        0 => self.rng.next() & 0xffff_ffff,
                        1 => 0x400 | (1 << self.rng.below(32)),
                        _ => self.rng.interesting(),
                    };
                }
            }
            Class::Xcr => {
                re.xcr0 = true;
                if self.rng.chance(1, 4) || self.skip_xsetbv {
                    put!(0x0f, 0x01, 0xd0);
                    regs[R_RCX] = if self.rng.chance(3, 4) {
                        self.rng.below(3)
                    } else {
                        self.rng.interesting()
                    };
                } else {
                    put!(0x0f, 0x01, 0xd1);
                    regs[R_RCX] = if self.rng.chance(7, 8) {
                        0
                    } else {
                        self.rng.interesting()
                    };
                    let value = match self.rng.below(4) {
                        // Subsets of what the CPU supports: valid and
                        // partial states alike.
                        0 | 1 => self.xcr0_supported & self.rng.next(),
                        2 => self.rng.below(0x400),
                        _ => self.rng.interesting(),
                    };
                    regs[R_RAX] = value & 0xffff_ffff;
                    regs[R_RDX] = value >> 32;
                }
            }
            Class::Io => {
                let port = if self.rng.chance(3, 4) {
                    u64::from(self.rng.pick(PORTS))
                } else {
                    self.rng.below(0x10000)
                };
                regs[R_RDX] = (regs[R_RDX] & !0xffff) | port;
                let size = self.rng.pick(&[1u64, 2, 4]);
                let out = self.rng.chance(1, 2);
                let imm = self.rng.chance(1, 4);
                // OUT imm8 reaches port & 0xff: the same rules as through DX.
                let imm =
                    imm && (!out || port_allowed_for_out(port & 0xff, size, self.skip_timers));
                let op: u8 = match (out, imm, size) {
                    (false, false, 1) => 0xec,
                    (false, false, _) => 0xed,
                    (true, false, 1) => 0xee,
                    (true, false, _) => 0xef,
                    (false, true, 1) => 0xe4,
                    (false, true, _) => 0xe5,
                    (true, true, 1) => 0xe6,
                    (true, true, _) => 0xe7,
                };
                let imm8 = (port & 0xff) as u8;
                match (size == 2, imm) {
                    (true, true) => put!(0x66, op, imm8),
                    (true, false) => put!(0x66, op),
                    (false, true) => put!(op, imm8),
                    (false, false) => put!(op),
                }
                if out {
                    defuse_out_port(&mut regs, size, self.skip_timers);
                }
            }
            Class::StrIo => {
                let out = self.rng.chance(1, 2);
                let size = self.rng.pick(&[1u64, 2, 4]);
                let port = if self.rng.chance(3, 4) {
                    u64::from(self.rng.pick(PORTS))
                } else {
                    self.rng.below(0x10000)
                };
                regs[R_RDX] = (regs[R_RDX] & !0xffff) | port;
                let op: u8 = match (out, size) {
                    (false, 1) => 0x6c,
                    (false, _) => 0x6d,
                    (true, 1) => 0x6e,
                    (true, _) => 0x6f,
                };
                let mut n = 0;
                let mut b = [0u8; 4];
                if self.rng.chance(1, 2) {
                    b[n] = 0xf3;
                    n += 1;
                }
                if self.rng.chance(1, 8) {
                    b[n] = 0x67;
                    n += 1;
                }
                if size == 2 {
                    b[n] = 0x66;
                    n += 1;
                }
                b[n] = op;
                n += 1;
                code[..n].copy_from_slice(&b[..n]);
                len = n;
                // Counts: small mostly, now and then huge (the copy then
                // runs into the end of the scratch pages and faults).
                regs[R_RCX] = if self.rng.chance(7, 8) {
                    self.rng.below(64)
                } else {
                    self.rng.interesting()
                };
                if out {
                    defuse_out_port(&mut regs, size, self.skip_timers);
                }
            }
            Class::Vmcall => {
                put!(0x0f, 0x01, 0xc1);
                self.hypercall_regs(&mut regs);
                re.timer = true;
            }
            Class::Vmx => {
                // rax = a scratch pointer for the memory operands.
                regs[R_RAX] = self.scratch + self.rng.below(SCRATCH_PAGES * PAGE - 16);
                match self.rng.below(22) {
                    0 => put!(0xf3, 0x0f, 0xc7, 0x30),        // vmxon [rax]
                    1 => put!(0x0f, 0x01, 0xc4),              // vmxoff
                    2 => put!(0x66, 0x0f, 0xc7, 0x30),        // vmclear [rax]
                    3 => put!(0x0f, 0xc7, 0x30),              // vmptrld [rax]
                    4 => put!(0x0f, 0xc7, 0x38),              // vmptrst [rax]
                    5 => put!(0x0f, 0x78, 0xc8),              // vmread rax, rcx
                    6 => put!(0x0f, 0x79, 0xc1),              // vmwrite rax, rcx
                    7 => put!(0x0f, 0x01, 0xc2),              // vmlaunch
                    8 => put!(0x0f, 0x01, 0xc3),              // vmresume
                    9 => put!(0x66, 0x0f, 0x38, 0x80, 0x08),  // invept rcx, [rax]
                    10 => put!(0x66, 0x0f, 0x38, 0x81, 0x08), // invvpid rcx, [rax]
                    11 => put!(0x0f, 0x01, 0xd4),             // vmfunc
                    12 => put!(0x0f, 0x37),                   // getsec
                    13 => put!(0x0f, 0x01, 0xd8),             // vmrun
                    14 => put!(0x0f, 0x01, 0xd9),             // vmmcall
                    15 => put!(0x0f, 0x01, 0xda),             // vmload
                    16 => put!(0x0f, 0x01, 0xdb),             // vmsave
                    17 => put!(0x0f, 0x01, 0xdc),             // stgi
                    18 => put!(0x0f, 0x01, 0xdd),             // clgi
                    19 => put!(0x0f, 0x01, 0xde),             // skinit
                    20 => put!(0x0f, 0x01, 0xdf),             // invlpga
                    _ => put!(0x66, 0x0f, 0x38, 0x82, 0x08),  // invpcid rcx, [rax]
                }
            }
            Class::Cache => match self.rng.below(3) {
                0 => put!(0x0f, 0x08),
                1 => put!(0x0f, 0x09),
                _ => put!(0xf3, 0x0f, 0x09), // wbnoinvd
            },
            Class::Time => match self.rng.below(4) {
                0 => put!(0x0f, 0x31),
                1 => put!(0x0f, 0x01, 0xf9),
                2 => put!(0xf3, 0x0f, 0xc7, 0xf8), // rdpid rax
                _ => {
                    put!(0x0f, 0x33); // rdpmc
                    regs[R_RCX] = self.rng.interesting();
                }
            },
            Class::Hlt => {
                put!(0xf4);
                re.timer = true;
            }
            Class::IntN => match self.rng.below(8) {
                0 => put!(0xcc),
                1 => put!(0xf1),
                2 => put!(0xcd, 3),
                _ => put!(0xcd, self.rng.below(256)),
            },
            Class::Misc => {
                regs[R_RAX] = self.scratch + self.rng.below(SCRATCH_PAGES * PAGE - 64) & !63;
                re.segments = true;
                match self.rng.below(20) {
                    0 => put!(0x0f, 0x06),              // clts
                    1 => put!(0x0f, 0x01, 0xf0),        // lmsw ax
                    2 => put!(0x0f, 0x01, 0xe0),        // smsw eax
                    3 => put!(0x0f, 0x01, 0x38),        // invlpg [rax]
                    4 => put!(0x0f, 0x01, 0xf8),        // swapgs
                    5 => put!(0x0f, 0x01, 0xc8),        // monitor
                    6 => put!(0x0f, 0x01, 0xc9),        // mwait
                    7 => put!(0x48, 0x0f, 0xc7, 0x28),  // xsaves64 [rax]
                    8 => put!(0x48, 0x0f, 0xc7, 0x18),  // xrstors64 [rax]
                    9 => put!(0x48, 0x0f, 0xae, 0x20),  // xsave64 [rax]
                    10 => put!(0x48, 0x0f, 0xae, 0x28), // xrstor64 [rax]
                    11 => put!(0x0f, 0x01, 0x00),       // sgdt [rax]
                    12 => put!(0x0f, 0x01, 0x08),       // sidt [rax]
                    13 => put!(0x0f, 0x00, 0xc8),       // str eax
                    14 => put!(0x0f, 0x01, 0xee),       // rdpkru
                    15 => put!(0x0f, 0x01, 0xef),       // wrpkru
                    16 => put!(0x0f, 0x05),             // syscall
                    17 => put!(0x48, 0x0f, 0x07),       // sysretq
                    18 => put!(0x0f, 0xaa),             // rsm
                    _ => put!(0x48, 0xcf),              // iretq
                }
                if matches!(code[..3], [0x0f, 0x01, 0xef] | [0x0f, 0x01, 0xc9]) {
                    regs[R_RCX] = self.rng.below(2);
                }
            }
            Class::Random => {
                len = self.random_bytes(&mut code, &mut regs, &mut re);
            }
        }
        let mut insn = Insn::new(&code[..len], regs);
        insn.rflags = self.rflags();
        (insn, re)
    }

    fn msr_number(&mut self) -> u64 {
        match self.rng.below(8) {
            0 => self.rng.next() & 0xffff_ffff,
            1 => self.rng.interesting(),
            _ => u64::from(self.rng.pick(MSRS)),
        }
    }

    fn msr_value(&mut self, msr: u32, before: Option<u64>) -> u64 {
        let old = before.unwrap_or(0);
        match msr {
            // EFER: one bit flipped (LME while paging, SVME, reserved
            // bits: #GP; SCE is harmless). Not NXE: the fuzz tables' XD bits
            // would turn reserved and the next exception a triple fault.
            IA32_EFER => old ^ (1 << self.rng.pick(&[0u64, 8, 10, 12, 13, 14, 15, 16, 20, 63])),
            // APIC base: one bit flipped (enable, x2APIC, BSP, the base).
            IA32_APIC_BASE => {
                old ^ (1 << self.rng.pick(&[8u64, 9, 10, 11, 12, 20, 31, 35, 40, 63]))
            }
            _ => match self.rng.below(4) {
                0 => old ^ (1 << self.rng.below(64)),
                1 => old,
                _ => self.rng.interesting(),
            },
        }
    }

    fn cr_value(&mut self, cr: u8) -> u64 {
        let save = save();
        // SAFETY: the save page, set up before the run.
        let (cr0, cr4) = unsafe { ((*save).cr0, (*save).cr4) };
        match cr {
            0 => match self.rng.below(4) {
                0 => cr0 ^ (1 << self.rng.pick(&[0u64, 1, 2, 3, 5, 16, 18, 29, 30, 31])),
                1 => cr0 ^ (1 << self.rng.below(64)),
                2 => cr0 & !(1 << self.rng.below(32)),
                _ => self.rng.interesting(),
            },
            3 => {
                // Only the fuzz tables (any other table is a triple fault):
                // PCD/PWT/PCID bits, bit 63, or reserved high bits.
                let base = page(P_PML4);
                match self.rng.below(4) {
                    0 => base,
                    1 => base | self.rng.below(0x1000),
                    2 => base | (1 << 63),
                    _ => base | (1 << (52 + self.rng.below(11))),
                }
            }
            4 => match self.rng.below(4) {
                0 | 1 => cr4 ^ (1 << self.rng.below(26)),
                2 => cr4 ^ (1 << self.rng.below(64)),
                _ => self.rng.interesting(),
            },
            8 => {
                if self.rng.chance(3, 4) {
                    self.rng.below(16)
                } else {
                    self.rng.interesting()
                }
            }
            _ => self.rng.interesting(),
        }
    }

    /// Hypercall registers: op in RAX, arguments in RDI, RSI, RDX, R10, R8.
    fn hypercall_regs(&mut self, regs: &mut [u64; 16]) {
        let op = match self.rng.below(8) {
            0..=5 => self.rng.pick(&[17u64, 18, 24, 29]),
            6 => self.rng.below(64),
            _ => self.rng.interesting(),
        };
        let mut args = [
            regs[R_RDI],
            regs[R_RSI],
            regs[R_RDX],
            regs[R_R10],
            regs[R_R8],
        ];
        if self.rng.chance(3, 4) {
            args[0] = self.rng.below(12);
        }
        if op == 24 && self.rng.chance(3, 4) {
            args[1] = self.rng.below(2);
        }
        defuse_hypercall(op, &mut args);
        // Console writes of nothing: random memory holds control
        // characters that garble the log (fuzz_hcall tries the lengths).
        if is_long_console_write(op, &args, 0) {
            args[1] = 0;
        }
        regs[R_RAX] = op;
        regs[R_RDI] = args[0];
        regs[R_RSI] = args[1];
        regs[R_RDX] = args[2];
        regs[R_R10] = args[3];
        regs[R_R8] = args[4];
    }

    /// A random byte string: legacy prefixes and REX, then an opcode from
    /// the one-byte map, 0F, 0F 38, 0F 3A or VEX/EVEX, then random bytes.
    /// Returns its length.
    fn random_bytes(
        &mut self,
        code: &mut [u8; 15],
        regs: &mut [u64; 16],
        re: &mut Restore,
    ) -> usize {
        const PREFIXES: [u8; 11] = [
            0x66, 0x67, 0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65, 0xf0,
        ];
        loop {
            for b in code.iter_mut() {
                *b = self.rng.next() as u8;
            }
            // With `fep=1`: `ud2; .ascii "xen"`, then the bytes below, often
            // an instruction Basalt's emulator performs behind it.
            let (mut n, mut forced) = (0, None);
            if self.fep && self.rng.chance(1, 2) {
                code[..5].copy_from_slice(b"\x0f\x0bxen");
                n = 5;
                if self.rng.chance(1, 2) {
                    let op = [0x90u8, 0xb0, 0xb4, 0xb8, 0xbc, 0xcc, 0xcd, 0xce, 0xf1, 0x0f];
                    forced = Some(self.rng.pick(&op));
                }
            }
            for _ in 0..self.rng.below(4) {
                code[n] = self.rng.pick(&PREFIXES);
                n += 1;
            }
            if self.rng.chance(1, 3) {
                code[n] = 0x40 | self.rng.below(16) as u8;
                n += 1;
            }
            match self.rng.below(20) {
                0..=8 => {}
                9..=16 => code[n] = 0x0f,
                17 => {
                    code[n] = 0x0f;
                    code[n + 1] = 0x38;
                }
                18 => {
                    code[n] = 0x0f;
                    code[n + 1] = 0x3a;
                }
                _ => code[n] = self.rng.pick(&[0xc4u8, 0xc5, 0x62]),
            }
            if let Some(op) = forced {
                code[n] = op;
                if op == 0x0f {
                    code[n + 1] = 0xa2; // CPUID
                }
            }
            let len = (n + 1 + self.rng.below(15 - n as u64) as usize).min(15);
            if self.skip_strio {
                // A jump may land inside the string: no INS/OUTS byte at all.
                for b in code.iter_mut() {
                    if matches!(*b, 0x6c..=0x6f) {
                        *b = 0x90;
                    }
                }
            }
            // The CPU may run on past the first instruction (a shorter
            // decode, a jump into the string): every offset is checked as
            // if an instruction started there.
            // At most one instruction that may block (HLT, VMCALL): the timer
            // armed before the string wakes one.
            let blocking = code[..len].iter().filter(|&&b| b == 0xf4).count()
                + code[..len]
                    .windows(3)
                    .filter(|w| w == &[0x0f, 0x01, 0xc1])
                    .count();
            if blocking <= 1 && (0..len).all(|at| self.random_ok(&code[at..len], at == 0, regs, re))
            {
                return len;
            }
        }
    }

    /// Whether a random byte string may run, adjusting the registers that
    /// make it safe (see the module doc for what is left out).
    fn random_ok(
        &mut self,
        code: &[u8],
        first: bool,
        regs: &mut [u64; 16],
        re: &mut Restore,
    ) -> bool {
        // Whatever the string holds, OUT through DX avoids the ports that
        // end the domain.
        defuse_out_port(regs, 4, self.skip_timers);
        let mut i = 0;
        while i < code.len()
            && (matches!(
                code[i],
                0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0xf0
            ) || code[i] & 0xf0 == 0x40)
        {
            i += 1;
        }
        let at = |k: usize| code.get(i + k).copied().unwrap_or(0xcc);
        let (op, b1, b2) = (at(0), at(1), at(2));
        let reg = (b2 >> 3) & 7;
        re.segments = true;
        match (op, b1) {
            // LLDT, LTR.
            (0x0f, 0x00) if reg == 2 || reg == 3 => return false,
            // LGDT, LIDT (memory forms; register forms are other opcodes).
            (0x0f, 0x01) if (reg == 2 || reg == 3) && b2 >> 6 != 3 => return false,
            // MOV to a control register.
            (0x0f, 0x22) => return false,
            // WRMSR: not EFER or the APIC base with random values; the MSR
            // is written back afterwards.
            // WRMSR and VMCALL only as the first instruction, where the
            // registers are the ones checked here.
            (0x0f, 0x30) | (0x0f, 0x01) if !first && (b1 == 0x30 || b2 == 0xc1) => return false,
            (0x0f, 0x30) => {
                let msr = regs[R_RCX] as u32;
                if matches!(msr, IA32_EFER | IA32_APIC_BASE) {
                    regs[R_RCX] ^= 0x4000;
                }
                let msr = regs[R_RCX] as u32;
                re.msr = Some((msr, read_msr(msr)));
            }
            // VMCALL: a defused hypercall; the timer for a blocking one.
            (0x0f, 0x01) if b2 == 0xc1 => {
                self.hypercall_regs(regs);
                re.timer = true;
            }
            (0x0f, 0x01) if b2 == 0xd1 => {
                if self.skip_xsetbv {
                    return false;
                }
                re.xcr0 = true;
            }
            _ => {}
        }
        if op == 0xf4 {
            re.timer = true;
        }
        if matches!(op, 0xe6 | 0xe7) && !port_allowed_for_out(u64::from(b1), 4, self.skip_timers) {
            return false;
        }
        // Backward branches could loop inside the string for ever (with
        // interrupts off nothing would end it): rel8 branches (Jcc, JMP,
        // LOOPcc, JRCXZ) only forward, rel32 ones (Jcc, JMP, CALL) not
        // back into the string.
        let rel32 = |k: usize| i32::from_le_bytes([at(k), at(k + 1), at(k + 2), at(k + 3)]);
        match op {
            0x70..=0x7f | 0xeb | 0xe0..=0xe3 if (b1 as i8) < 0 => return false,
            0xe8 | 0xe9 if (-64..0).contains(&rel32(1)) => return false,
            0x0f if (0x80..=0x8f).contains(&b1) && (-64..0).contains(&rel32(2)) => return false,
            _ => {}
        }
        true
    }
}

/// RDMSR through the fuzz context (it may fault); `None` when it did.
fn read_msr(msr: u32) -> Option<u64> {
    let mut regs = [0u64; 16];
    regs[R_RCX] = u64::from(msr);
    regs[R_RSP] = page(P_SCRATCH + 2);
    let o = exec(&Insn::new(&[0x0f, 0x32], regs));
    o.completed.then_some((o.rdx << 32) | (o.rax & 0xffff_ffff))
}

/// WRMSR through the fuzz context; whether it completed.
fn write_msr(msr: u32, value: u64) -> bool {
    let mut regs = [0u64; 16];
    regs[R_RCX] = u64::from(msr);
    regs[R_RAX] = value & 0xffff_ffff;
    regs[R_RDX] = value >> 32;
    regs[R_RSP] = page(P_SCRATCH + 2);
    exec(&Insn::new(&[0x0f, 0x30], regs)).completed
}

/// XSETBV through the fuzz context.
fn write_xcr0(value: u64) -> bool {
    let mut regs = [0u64; 16];
    regs[R_RAX] = value & 0xffff_ffff;
    regs[R_RDX] = value >> 32;
    regs[R_RSP] = page(P_SCRATCH + 2);
    exec(&Insn::new(&[0x0f, 0x01, 0xd1], regs)).completed
}

fn read_segments() -> [u16; 5] {
    let (ds, es, fs, gs, ss): (u16, u16, u16, u16, u16);
    // SAFETY: reading segment selectors has no effect.
    unsafe {
        asm!(
            "mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs", "mov {4:x}, ss",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, out(reg) ss,
            options(nomem, nostack, preserves_flags)
        )
    };
    [ds, es, fs, gs, ss]
}

/// The state the harness restores, read once before the run.
struct Baseline {
    xcr0: Option<u64>,
    gs_base: u64,
    kernel_gs_base: u64,
}

/// Counts a restore that failed; prints the first few.
fn problem(problems: &mut u64, what: core::fmt::Arguments<'_>) {
    *problems += 1;
    if *problems <= 10 {
        println!(
            "fuzz_insn: iteration {}: cannot put back {what}",
            CURRENT.load()
        );
    }
}

/// How often (in iterations) the harness puts the PIT and the RTC back to a
/// quiet state.
const QUIET_EVERY: u64 = 64;

/// Puts the timed devices a random OUT may have set racing (a PIT count of
/// 2, an 8 kHz RTC with every interrupt on) back to quiet: PIT channel 0
/// one-shot with the longest count, RTC interrupts off and register C read.
/// Basalt must survive the racing settings (it looks at the devices at most
/// every 200 us), but a million iterations under them would take a quarter
/// of an hour under Bochs; in between the fuzzer may set them again.
fn quiet_timers() {
    cpu::outb(0x43, 0x30);
    cpu::outb(0x40, 0xff);
    cpu::outb(0x40, 0xff);
    cpu::outb(0x70, 0x0b);
    cpu::outb(0x71, 0x02);
    cpu::outb(0x70, 0x0c);
    let _ = cpu::inb(0x71);
}

fn restore(re: &Restore, base: &Baseline, problems: &mut u64) {
    if re.segments {
        let segs = read_segments();
        if segs != [DATA_SEL; 5] {
            // SAFETY: the runtime's flat data selector, valid in the GDT.
            unsafe {
                asm!(
                    "mov ds, {0:x}", "mov es, {0:x}", "mov fs, {0:x}", "mov ss, {0:x}", "mov gs, {0:x}",
                    in(reg) DATA_SEL, options(nostack, preserves_flags)
                )
            };
        }
        for (msr, value) in [
            (IA32_GS_BASE, base.gs_base),
            (IA32_KERNEL_GS_BASE, base.kernel_gs_base),
        ] {
            if read_msr(msr) != Some(value) && !write_msr(msr, value) {
                problem(problems, format_args!("MSR {msr:#x} back to {value:#x}"));
            }
        }
    }
    // IA32_TSC (0x10) moves on by itself: nothing to put back.
    if let Some((msr, before)) = re.msr.filter(|&(msr, _)| msr != 0x10) {
        let now = read_msr(msr);
        if let Some(old) = before
            && now != before
        {
            let ok = if msr == IA32_APIC_BASE {
                // x2APIC to xAPIC only through the disabled state.
                write_msr(msr, old & !(3 << 10)) && write_msr(msr, old)
            } else {
                write_msr(msr, old)
            };
            if !ok {
                problem(
                    problems,
                    format_args!("MSR {msr:#x} from {now:x?} back to {old:#x}"),
                );
            }
        }
    }
    if re.xcr0
        && let Some(x) = base.xcr0
        && cpu::xgetbv_checked(0).ok() != Some(x)
        && !write_xcr0(x)
    {
        problem(problems, format_args!("XCR0 back to {x:#x}"));
    }
    if re.cr8 {
        // SAFETY: TPR 0, as the guest runs.
        unsafe { asm!("mov cr8, {}", in(reg) 0u64, options(nomem, nostack, preserves_flags)) };
    }
}

// ---------------------------------------------------------------- main

fn main(cmdline: &str) -> u32 {
    let seed = arg_u64(cmdline, "seed", 1);
    let iterations = arg_u64(cmdline, "iterations", 1_000_000);
    let progress = arg_u64(cmdline, "progress", 100_000).max(1);
    let trace = arg_u64(cmdline, "trace", u64::MAX);
    let skip = arg(cmdline, "skip").unwrap_or("");
    let skipped = |name: &str| skip.split(',').any(|s| s == name);

    let mmio = arg_u64(cmdline, "mmio", 0) != 0;
    if let Err(e) = setup(mmio) {
        return fail!("{e}");
    }
    let xcr0_supported = {
        let (eax, _, _, edx) = cpu::cpuid(0xd, 0);
        (u64::from(edx) << 32) | u64::from(eax)
    };
    let base = Baseline {
        xcr0: cpu::xgetbv_checked(0).ok(),
        gs_base: read_msr(IA32_GS_BASE).unwrap_or(0),
        kernel_gs_base: read_msr(IA32_KERNEL_GS_BASE).unwrap_or(0),
    };
    let weights: [u32; 17] = core::array::from_fn(|i| {
        let (_, name, w) = CLASSES[i];
        if skipped(name) { 0 } else { w }
    });
    let mut g = Gen {
        rng: Rng::new(seed),
        scratch: page(P_SCRATCH),
        skip_strio: skipped("strio"),
        skip_xsetbv: skipped("xsetbv"),
        skip_timers: skipped("pit-rtc"),
        mmio,
        fep: arg_u64(cmdline, "fep", 0) != 0,
        skip_cr: [0u32, 3, 4, 8]
            .iter()
            .filter(|&&n| match n {
                0 => skipped("cr0"),
                3 => skipped("cr3"),
                4 => skipped("cr4"),
                _ => skipped("cr8"),
            })
            .fold(0, |m, &n| m | (1 << n)),
        xcr0_supported,
    };
    // Scratch data: random bytes.
    for i in 0..(SCRATCH_PAGES * PAGE / 8) {
        // SAFETY: the scratch pages of the arena.
        unsafe { ((g.scratch + i * 8) as *mut u64).write_volatile(g.rng.next()) };
    }
    println!(
        "fuzz_insn: seed {seed}, {iterations} iterations; skipped classes: {}",
        if skip.is_empty() { "none" } else { skip }
    );
    let mut wake = Wakeup::new(64);
    let mut by_class = [[0u64; 34]; 17]; // [class][vector 0-31, 32 = >=32, 33 = completed]
    let mut vectors = Tally::<257>::new();
    let mut problems = 0u64;
    let start_tsc = cpu::rdtsc();
    for it in 0..iterations {
        CURRENT.store(it);
        if it > 0 && it.is_multiple_of(progress) {
            println!("fuzz_insn: {it} of {iterations} iterations");
        }
        if it.is_multiple_of(QUIET_EVERY) && !g.skip_timers {
            quiet_timers();
        }
        let ci = g.rng.weighted(&weights);
        let class = CLASSES[ci].0;
        let (insn, re) = g.make(class);
        if re.timer {
            wake.arm();
        }
        if it >= trace {
            print!("it {it} {}:", CLASSES[ci].1);
            for b in &insn.bytes[..insn.len] {
                print!(" {b:02x}");
            }
            println!(
                " rax={:#x} rcx={:#x} rdx={:#x} rflags={:#x}",
                insn.regs[R_RAX], insn.regs[R_RCX], insn.regs[R_RDX], insn.rflags
            );
        }
        let o = exec(&insn);

        if o.completed {
            by_class[ci][33] += 1;
            vectors.add(256);
        } else {
            by_class[ci][usize::from(o.vector).min(32)] += 1;
            vectors.add(usize::from(o.vector));
        }
        restore(&re, &base, &mut problems);
    }
    let ticks = cpu::rdtsc().wrapping_sub(start_tsc);
    println!("fuzz_insn: {iterations} iterations done, seed {seed}, {ticks} TSC ticks");
    println!(
        "fuzz_insn: class: total, completed, then exceptions by vector (#UD 6, #GP 13, #PF 14, ...)"
    );
    for (ci, (_, name, _)) in CLASSES.iter().enumerate() {
        let row = &by_class[ci];
        let total: u64 = row.iter().sum();
        if total == 0 {
            continue;
        }
        print!("  {name:<12} {total:>8} ok {:>8}", row[33]);
        for (v, &n) in row[..33].iter().enumerate() {
            if n != 0 {
                if v == 32 {
                    print!("  v>=32:{n}");
                } else {
                    print!("  v{v}:{n}");
                }
            }
        }
        println!();
    }
    print!("fuzz_insn: exceptions by vector:");
    for (v, &n) in vectors.counts[..256].iter().enumerate() {
        if n != 0 {
            print!(" {v}:{n}");
        }
    }
    println!();
    println!(
        "fuzz_insn: completed without exception: {}",
        vectors.counts[256]
    );
    if problems != 0 {
        return fail!("{problems} restores of guest state failed");
    }
    pass()
}
