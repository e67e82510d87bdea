//! A hostile guest against Basalt's CPU model (issue 12): every invalid XCR0
//! class, the control-register, EFER and MSR rules, features CPUID hides,
//! and extended state that must survive context switches with other
//! domains. Each case asserts the architectural result inside the guest
//! (the fault, the register left unchanged); the host must survive all of
//! them (the scenario checks the verdict and a well-behaved domain beside).
//!
//! Options: `pattern=N` seeds the vector-register contents (two instances
//! with different patterns on one CPU check that neither sees the other's
//! state), `switches=N` how many yields the vector check spans (default 50).

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{
    self, GP, UD, checked, cpuid, rdmsr_checked, read_cr0, read_cr3, read_cr4, show_unit,
    write_cr0_checked, write_cr4_checked, wrmsr_checked, xgetbv_checked, xsetbv_checked,
};
use basalt_test_guests::hypercall::sched_yield;
use basalt_test_guests::{Checks, arg_u64, println};
use core::arch::asm;

basalt_test_guests::entry!(main);

const CR0_PG: u64 = 1 << 31;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_WP: u64 = 1 << 16;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const CR4_VMXE: u64 = 1 << 13;
const CR4_SMXE: u64 = 1 << 14;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;
const CR4_CET: u64 = 1 << 23;
const EFER: u32 = 0xc000_0080;

/// `mov cr8, rax` (4 bytes: REX.W 0F 22 C0).
///
/// # Safety
/// A valid value changes the task priority; only 0 is left behind.
unsafe fn write_cr8_checked(value: u64) -> Result<(), u8> {
    // SAFETY: the caller's contract.
    let f = || unsafe { asm!("mov cr8, rax", in("rax") value, options(nostack)) };
    // SAFETY: `f` is `mov cr8, rax`, 4 bytes (48 0F 22 C0), the only
    // instruction that may fault.
    unsafe { checked(4, f) }
}

fn read_cr8() -> u64 {
    let v: u64;
    // SAFETY: reading CR8 has no side effects.
    unsafe { asm!("mov {}, cr8", out(reg) v, options(nomem, nostack)) };
    v
}

/// `xsaves [rdi]` (3 bytes: 0F C7 2F) on a 64-byte aligned buffer.
fn xsaves_checked(area: &mut Area) -> Result<(), u8> {
    let p = area.0.as_mut_ptr();
    let f = || {
        // SAFETY: writes at most the area, which is large enough for the
        // x87/SSE state with XCR0 | IA32_XSS = x87 | SSE at most (if the
        // instruction ran at all).
        unsafe {
            asm!("xsaves [rdi]", in("rdi") p, in("eax") 3u32, in("edx") 0u32, options(nostack))
        }
    };
    // SAFETY: `f` is XSAVES [rdi], 3 bytes, the only instruction that may
    // fault.
    unsafe { checked(3, f) }
}

#[repr(C, align(64))]
struct Area([u8; 4096]);

fn cr4_rejects(checks: &mut Checks, bit: u64, what: &str) {
    let before = read_cr4();
    // SAFETY: the write must fault; if it does not, CR4 is restored at once.
    let r = unsafe { write_cr4_checked(before | bit) };
    let after = read_cr4();
    if after != before {
        // SAFETY: the value read before.
        let _ = unsafe { write_cr4_checked(before) };
    }
    checks.check(
        r == Err(GP) && after == before,
        format_args!("CR4 {what}: #GP and CR4 unchanged ({})", show_unit(r)),
    );
}

fn xcr0_cases(checks: &mut Checks) {
    let (eax, _, ecx1, edx) = cpuid(0xd, 0);
    let allowed = (u64::from(edx) << 32) | u64::from(eax);
    let original = xgetbv_checked(0).unwrap_or(0);
    println!("XCR0 {original:#x}, guest may enable {allowed:#x}");
    checks.check(
        allowed & ((1 << 9) | (1 << 17) | (1 << 18) | (1 << 3) | (1 << 4)) == 0,
        format_args!("CPUID.0xD offers no PKRU, AMX or MPX state"),
    );
    let (_, size_now, max_size, _) = cpuid(0xd, 0);
    checks.check(
        size_now <= max_size && max_size >= 576 && ecx1 == max_size,
        format_args!("XSAVE sizes: {size_now} for XCR0, {max_size} at most"),
    );
    let (sub1, _, xss_lo, xss_hi) = cpuid(0xd, 1);
    checks.check(
        sub1 & ((1 << 1) | (1 << 3) | (1 << 4)) == 0 && xss_lo == 0 && xss_hi == 0,
        format_args!("XSAVEC, XSAVES and XFD hidden, no IA32_XSS component"),
    );
    // (value, why it is invalid)
    let invalid: &[(u32, u64, &str)] = &[
        (0, 0, "x87 clear"),
        (0, 2, "SSE without x87"),
        (0, 0x5, "AVX without SSE"),
        (0, 0x27, "AVX-512 opmask without the ZMM components"),
        (0, 0x67, "AVX-512 without Hi16_ZMM"),
        (0, 0xc7, "AVX-512 without opmask"),
        (0, 0xe3, "AVX-512 without AVX"),
        (0, 0xb, "MPX BNDREGS alone"),
        (0, 0x13, "MPX BNDCSR alone"),
        (0, 0x1b, "MPX (not offered)"),
        (0, 0x2_0003, "AMX XTILECFG alone"),
        (0, 0x4_0003, "AMX XTILEDATA alone"),
        (0, 0x6_0003, "AMX (not offered)"),
        (0, 0x203, "PKRU (not offered)"),
        (0, 0x103, "PT, a supervisor component"),
        (0, 0x803, "CET_U, a supervisor component"),
        (0, 0x1003, "CET_S, a supervisor component"),
        (0, (1 << 63) | 3, "bit 63"),
        (0, 0xffff_ffff_ffff_ffff, "every bit"),
        (1, 3, "XCR1"),
        (0xffff_ffff, 3, "XCR 0xffffffff"),
    ];
    for &(index, value, why) in invalid {
        // SAFETY: must fault; a value that loads is put back below.
        let r = unsafe { xsetbv_checked(index, value) };
        let now = xgetbv_checked(0).unwrap_or(0);
        if now != original {
            // SAFETY: the original value.
            let _ = unsafe { xsetbv_checked(0, original) };
        }
        checks.check(
            r == Err(GP) && now == original,
            format_args!("XSETBV {index}:{value:#x} ({why}): #GP, XCR0 unchanged"),
        );
    }
    // Everything the guest was offered loads, and reads back.
    // SAFETY: the value CPUID offers is valid by construction.
    let r = unsafe { xsetbv_checked(0, allowed) };
    let now = xgetbv_checked(0).unwrap_or(0);
    checks.check(
        r.is_ok() && now == allowed && cpuid(0xd, 0).1 == max_size,
        format_args!("XSETBV of every offered component ({allowed:#x}) loads; EBX = {max_size}"),
    );
    // SAFETY: back to what the guest started with.
    let _ = unsafe { xsetbv_checked(0, original) };
    // Without CR4.OSXSAVE, XSETBV is #UD.
    let cr4 = read_cr4();
    // SAFETY: nothing uses XSAVE while OSXSAVE is clear; it is restored.
    let _ = unsafe { write_cr4_checked(cr4 & !CR4_OSXSAVE) };
    // SAFETY: must fault.
    let r = unsafe { xsetbv_checked(0, 3) };
    let bit27 = cpuid(1, 0).2 & (1 << 27) != 0;
    // SAFETY: the value read before.
    let _ = unsafe { write_cr4_checked(cr4) };
    checks.check(
        r == Err(UD) && !bit27 && cpuid(1, 0).2 & (1 << 27) != 0,
        format_args!("XSETBV with CR4.OSXSAVE clear: #UD; CPUID.1:ECX.OSXSAVE follows CR4"),
    );
}

/// Loads YMM0-15 (when AVX is on) with a pattern derived from `seed`.
fn load_vectors(seed: u64) {
    let mut buf = [0u64; 64];
    for (i, w) in buf.iter_mut().enumerate() {
        *w = seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(i as u64);
    }
    let p = buf.as_ptr();
    // SAFETY: reads 16 x 32 bytes from `buf` (512 bytes); the compiled code
    // of this soft-float guest never uses vector registers, so clobbering
    // them is harmless; AVX is enabled in XCR0 by the caller.
    unsafe {
        asm!(
            "vmovdqu ymm0, [{0}]", "vmovdqu ymm1, [{0} + 32]", "vmovdqu ymm2, [{0} + 64]",
            "vmovdqu ymm3, [{0} + 96]", "vmovdqu ymm4, [{0} + 128]", "vmovdqu ymm5, [{0} + 160]",
            "vmovdqu ymm6, [{0} + 192]", "vmovdqu ymm7, [{0} + 224]", "vmovdqu ymm8, [{0} + 256]",
            "vmovdqu ymm9, [{0} + 288]", "vmovdqu ymm10, [{0} + 320]", "vmovdqu ymm11, [{0} + 352]",
            "vmovdqu ymm12, [{0} + 384]", "vmovdqu ymm13, [{0} + 416]", "vmovdqu ymm14, [{0} + 448]",
            "vmovdqu ymm15, [{0} + 480]",
            in(reg) p, options(nostack, readonly),
        )
    };
}

/// Whether YMM0-15 still hold the pattern of `seed`.
fn vectors_hold(seed: u64) -> bool {
    let mut buf = [0u64; 64];
    let p = buf.as_mut_ptr();
    // SAFETY: writes 512 bytes into `buf`.
    unsafe {
        asm!(
            "vmovdqu [{0}], ymm0", "vmovdqu [{0} + 32], ymm1", "vmovdqu [{0} + 64], ymm2",
            "vmovdqu [{0} + 96], ymm3", "vmovdqu [{0} + 128], ymm4", "vmovdqu [{0} + 160], ymm5",
            "vmovdqu [{0} + 192], ymm6", "vmovdqu [{0} + 224], ymm7", "vmovdqu [{0} + 256], ymm8",
            "vmovdqu [{0} + 288], ymm9", "vmovdqu [{0} + 320], ymm10", "vmovdqu [{0} + 352], ymm11",
            "vmovdqu [{0} + 384], ymm12", "vmovdqu [{0} + 416], ymm13", "vmovdqu [{0} + 448], ymm14",
            "vmovdqu [{0} + 480], ymm15",
            in(reg) p, options(nostack),
        )
    };
    buf.iter().enumerate().all(|(i, &w)| {
        w == seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(i as u64)
    })
}

fn vector_state(checks: &mut Checks, seed: u64, switches: u64) {
    if !cpu::enable_avx() {
        println!("no AVX: vector state not checked");
        checks.check(
            false,
            format_args!("AVX is offered (the scenario's CPU has it)"),
        );
        return;
    }
    load_vectors(seed);
    let mut kept = true;
    for _ in 0..switches {
        sched_yield();
        kept &= vectors_hold(seed);
    }
    checks.check(
        kept,
        format_args!("vector state kept across {switches} context switches"),
    );
    // Shrinking XCR0 after AVX state was saved: the saved header names a
    // component no longer enabled; restoring it must not fault the host.
    let xcr0 = xgetbv_checked(0).unwrap_or(7);
    // SAFETY: x87 | SSE is always valid; nothing uses AVX until it is back.
    let r = unsafe { xsetbv_checked(0, 3) };
    for _ in 0..4 {
        sched_yield();
    }
    // SAFETY: the value read before.
    let back = unsafe { xsetbv_checked(0, xcr0) };
    load_vectors(seed ^ 1);
    sched_yield();
    checks.check(
        r.is_ok() && back.is_ok() && vectors_hold(seed ^ 1),
        format_args!("XCR0 shrunk and regrown across context switches; state intact"),
    );
}

fn control_registers(checks: &mut Checks) {
    // CR8: bits 63:4 reserved.
    for value in [16u64, 0xff, 1 << 63] {
        // SAFETY: must fault; the TPR is reset below.
        let r = unsafe { write_cr8_checked(value) };
        checks.check(
            r == Err(GP) && read_cr8() == 0,
            format_args!("MOV CR8 {value:#x}: #GP, TPR unchanged"),
        );
    }
    // SAFETY: a valid priority, reset to 0 at once.
    let ok = unsafe { write_cr8_checked(15) };
    let tpr = read_cr8();
    // SAFETY: priority 0 again.
    let _ = unsafe { write_cr8_checked(0) };
    checks.check(
        ok.is_ok() && tpr == 15,
        format_args!("MOV CR8 15 reads back 15"),
    );

    cr4_rejects(checks, CR4_LA57, "LA57 toggled in long mode");
    cr4_rejects(checks, CR4_VMXE, "VMXE (VMX hidden)");
    cr4_rejects(checks, CR4_SMXE, "SMXE");
    cr4_rejects(checks, CR4_PKE, "PKE (PKU hidden)");
    cr4_rejects(checks, 1 << 15, "reserved bit 15");
    cr4_rejects(checks, 1 << 32, "bit 32");
    cr4_rejects(checks, 1 << 63, "bit 63");
    // CET with CR0.WP clear (and without CET offered at all).
    let cr0 = read_cr0();
    // SAFETY: WP only matters for supervisor writes to read-only pages; the
    // guest maps none. Restored below.
    let _ = unsafe { write_cr0_checked(cr0 & !CR0_WP) };
    cr4_rejects(checks, CR4_CET, "CET with CR0.WP clear");
    // SAFETY: the value read before.
    let _ = unsafe { write_cr0_checked(cr0) };
    cr4_rejects(checks, CR4_CET, "CET (not offered)");
    // PAE cleared in long mode.
    let cr4 = read_cr4();
    // SAFETY: must fault (clearing PAE in IA-32e mode).
    let r = unsafe { write_cr4_checked(cr4 & !CR4_PAE) };
    checks.check(
        r == Err(GP) && read_cr4() == cr4,
        format_args!("CR4.PAE cleared in long mode: #GP"),
    );
    // PCIDE with CR3[11:0] not 0 (when PCID is offered).
    if cpuid(1, 0).2 & (1 << 17) != 0 {
        let cr3 = read_cr3();
        // SAFETY: PWT (bit 3) on the top-level table changes only its cache
        // type; restored below.
        unsafe { asm!("mov cr3, {}", in(reg) cr3 | 0x8, options(nostack)) };
        // SAFETY: must fault.
        let r = unsafe { write_cr4_checked(read_cr4() | CR4_PCIDE) };
        let now = read_cr4();
        if now & CR4_PCIDE != 0 {
            // SAFETY: clearing PCIDE again.
            let _ = unsafe { write_cr4_checked(now & !CR4_PCIDE) };
        }
        // SAFETY: the value read before.
        unsafe { asm!("mov cr3, {}", in(reg) cr3, options(nostack)) };
        checks.check(
            r == Err(GP) && now & CR4_PCIDE == 0,
            format_args!("CR4.PCIDE with CR3[11:0] != 0: #GP"),
        );
    }
    // CR0: the high half, NW without CD, PG cleared in 64-bit mode.
    for (value, why) in [
        (cr0 | (1 << 32), "bit 32"),
        (cr0 | (1 << 63), "bit 63"),
        ((cr0 | CR0_NW) & !CR0_CD, "NW without CD"),
        (cr0 & !CR0_PG, "PG cleared in 64-bit mode"),
    ] {
        // SAFETY: must fault; CR0 is restored if it did not.
        let r = unsafe { write_cr0_checked(value) };
        let now = read_cr0();
        if now != cr0 {
            // SAFETY: the value read before.
            let _ = unsafe { write_cr0_checked(cr0) };
        }
        checks.check(
            r == Err(GP) && now == cr0,
            format_args!("CR0 {why}: #GP, CR0 unchanged"),
        );
    }
}

fn msrs_and_features(checks: &mut Checks) {
    let efer = rdmsr_checked(EFER).unwrap_or(0);
    for (value, why) in [
        (efer | 2, "reserved bit 1"),
        (efer | (1 << 12), "SVME"),
        (efer | (1 << 63), "bit 63"),
        (efer & !(1 << 8), "LME cleared with paging on"),
    ] {
        // SAFETY: must fault; EFER is restored if it did not.
        let r = unsafe { wrmsr_checked(EFER, value) };
        let now = rdmsr_checked(EFER).unwrap_or(0);
        if now != efer {
            // SAFETY: the value read before.
            let _ = unsafe { wrmsr_checked(EFER, efer) };
        }
        checks.check(
            r == Err(GP) && now == efer,
            format_args!("WRMSR EFER {why}: #GP, EFER unchanged"),
        );
    }
    checks.check(
        rdmsr_checked(0xda0) == Err(GP),
        format_args!("RDMSR IA32_XSS: #GP (XSAVES not offered)"),
    );
    // SAFETY: must fault.
    let r = unsafe { wrmsr_checked(0x2ff, 0x806 | (1 << 20)) };
    checks.check(
        r == Err(GP),
        format_args!("WRMSR MTRRdefType reserved bit: #GP"),
    );
    let mut area = Area([0; 4096]);
    checks.check(
        xsaves_checked(&mut area) == Err(UD),
        format_args!("XSAVES: #UD (not offered)"),
    );
    let (max, ..) = cpuid(0, 0);
    let (_, ebx7, ecx7, edx7) = cpuid(7, 0);
    checks.check(
        max == 0x16
            && ecx7 & ((1 << 3) | (1 << 4) | (1 << 5) | (1 << 7)) == 0
            && edx7 & ((1 << 22) | (1 << 24) | (1 << 25) | (1 << 20) | (1 << 26)) == 0
            && ebx7 & ((1 << 4) | (1 << 11) | (1 << 14)) == 0,
        format_args!(
            "CPUID: max leaf 0x16; no PKU, WAITPKG, CET, AMX, TSX, MPX, IBRS (7: {ebx7:#x} {ecx7:#x} {edx7:#x})"
        ),
    );
    checks.check(
        cpuid(0xb, 0) == (0, 0, 0, 0)
            && cpuid(0x14, 0) == (0, 0, 0, 0)
            && cpuid(0x1d, 0) == (0, 0, 0, 0),
        format_args!("CPUID leaves 0xB, 0x14, 0x1D read 0"),
    );
}

fn main(cmdline: &str) -> u32 {
    let mut checks = Checks::new();
    let seed = arg_u64(cmdline, "pattern", 1);
    let switches = arg_u64(cmdline, "switches", 50);
    xcr0_cases(&mut checks);
    control_registers(&mut checks);
    msrs_and_features(&mut checks);
    vector_state(&mut checks, seed, switches);
    checks.finish()
}
