//! Model-specific registers (Intel SDM Vol. 4, "Model-Specific Registers").

/// An architectural MSR Basalt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Msr {
    /// IA32_APIC_BASE (0x1B): APIC base address, global enable, x2APIC enable.
    ApicBase = 0x1b,
    /// IA32_TSC_DEADLINE (0x6E0): the local APIC timer's TSC deadline.
    TscDeadline = 0x6e0,
    /// IA32_EFER (0xC000_0080): long mode, NX enable.
    Efer = 0xc000_0080,
    /// IA32_GS_BASE (0xC000_0101): base of GS, Basalt's per-CPU block.
    GsBase = 0xc000_0101,
}

/// Reads an MSR Basalt knows to exist (the caller checked CPUID where the
/// MSR depends on a feature).
pub fn read(msr: Msr) -> u64 {
    read_raw(msr as u32)
}

/// Writes an MSR.
///
/// # Safety
///
/// The value must be valid for the MSR (a reserved bit set raises #GP) and
/// its effect must keep Basalt's invariants (e.g. EFER.LME stays set).
pub unsafe fn write(msr: Msr, value: u64) {
    // SAFETY: the caller guarantees a valid value with a sound effect.
    unsafe { write_raw(msr as u32, value) }
}

/// Reads an MSR by number (x2APIC registers are MSRs 0x800-0x8FF).
pub fn read_raw(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDMSR of an MSR that exists has no side effects; callers only
    // name MSRs that the CPU's features guarantee.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR by number.
///
/// # Safety
///
/// As for [`write`].
pub unsafe fn write_raw(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR exists and the value is sound.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags)
        );
    }
}
