//! Processor identification, time stamp counter and halting.

use core::arch::x86_64::{__cpuid, __cpuid_count, _rdtsc, CpuidResult};

/// CPUID leaf `leaf`, sub-leaf 0.
pub fn cpuid(leaf: u32) -> CpuidResult {
    cpuid_count(leaf, 0)
}

/// CPUID leaf `leaf`, sub-leaf `sub`.
pub fn cpuid_count(leaf: u32, sub: u32) -> CpuidResult {
    // CPUID is available on every x86_64 CPU (the 32-bit entry checked it);
    // `__cpuid_count` is a safe intrinsic on x86_64.
    __cpuid_count(leaf, sub)
}

/// The highest basic and extended CPUID leaves.
pub fn max_leaves() -> (u32, u32) {
    (__cpuid(0).eax, __cpuid(0x8000_0000).eax)
}

/// Reads the time stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter; CR4.TSD is clear in ring 0 anyway.
    unsafe { _rdtsc() }
}

/// The initial APIC id of this CPU (CPUID.1:EBX[31:24]). Until per-CPU data
/// exists (platform bring-up), the log uses it as the CPU number.
pub fn apic_id() -> u32 {
    cpuid(1).ebx >> 24
}

/// The vendor string, e.g. `GenuineIntel`.
pub fn vendor(buf: &mut [u8; 12]) -> &str {
    let r = cpuid(0);
    buf[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    buf[4..8].copy_from_slice(&r.edx.to_le_bytes());
    buf[8..12].copy_from_slice(&r.ecx.to_le_bytes());
    core::str::from_utf8(buf).unwrap_or("unknown")
}

/// The brand string, when the CPU has one.
pub fn brand(buf: &mut [u8; 48]) -> Option<&str> {
    if max_leaves().1 < 0x8000_0004 {
        return None;
    }
    for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
        let r = cpuid(leaf);
        for (j, reg) in [r.eax, r.ebx, r.ecx, r.edx].iter().enumerate() {
            let at = i * 16 + j * 4;
            buf[at..at + 4].copy_from_slice(&reg.to_le_bytes());
        }
    }
    let text = core::str::from_utf8(buf).ok()?;
    Some(text.trim_matches(|c: char| c == '\0' || c.is_whitespace()))
}

/// Stops this CPU for good: interrupts off, then HLT in a loop (an NMI or SMI
/// that wakes it finds the next HLT).
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Whether EFER.NXE is on (the boot code sets it when the CPU has NX).
pub fn nx_enabled() -> bool {
    super::msr::read(super::msr::Msr::Efer) & (1 << 11) != 0
}

/// Switches to the stack whose top is `top` and calls `f(arg)` there.
///
/// # Safety
///
/// `top` must be the 16-byte-aligned top of a mapped, unused stack; nothing
/// on the current stack is used again.
pub unsafe fn run_on_stack(top: u64, f: extern "C" fn(u64) -> !, arg: u64) -> ! {
    // SAFETY: the caller guarantees the new stack; `f` never returns.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {f}",
            "ud2",
            top = in(reg) top,
            f = in(reg) f,
            in("rdi") arg,
            options(noreturn)
        )
    }
}

/// Ends the NMI blocking a VM exit caused by an NMI leaves behind (SDM Vol.
/// 3C 27.1: once the exit completes, later NMIs stay blocked until the next
/// IRET): an IRET to the next instruction, on the same stack, with the same
/// flags. Without it, the next NMI sent to this CPU (the fatal-fault stop)
/// would wait for an IRET that Basalt may never execute.
pub fn unblock_nmis() {
    // SAFETY: builds a 64-bit IRET frame (SS, RSP, RFLAGS, CS, RIP) that
    // returns to the label right after the IRETQ with RSP, RFLAGS and the
    // segments as they were; only RAX is clobbered.
    unsafe {
        core::arch::asm!(
            "mov rax, rsp",
            "push 0",
            "mov [rsp], ss",
            "push rax",
            "pushfq",
            "push 0",
            "mov [rsp], cs",
            "lea rax, [rip + 2f]",
            "push rax",
            "iretq",
            "2:",
            out("rax") _,
        )
    }
}

/// Turns the caches on (CR0.CD and CR0.NW clear), as firmware normally
/// leaves them. VM entry does not load CD and NW from the guest state (SDM
/// Vol. 3C 27.3.2.1): guests run with the host's, so a CPU still in its
/// reset state (CD|NW set, e.g. under Bochs with no firmware clearing them)
/// would hand every guest uncached memory and a CR0 it cannot fix.
pub fn enable_caching() {
    use x86_64::registers::control::{Cr0, Cr0Flags};
    let cr0 = Cr0::read();
    let on = cr0 - (Cr0Flags::CACHE_DISABLE | Cr0Flags::NOT_WRITE_THROUGH);
    if on != cr0 {
        // SAFETY: clearing CD and NW only changes the memory type used for
        // caching; every mapping and protection bit is kept.
        unsafe { Cr0::write(on) };
    }
}
