//! Guest state that neither VT-x nor SVM switches on entry and exit, for
//! both backends: the x87/SSE/AVX state (XSAVE or FXSAVE, with XCR0) and
//! the debug registers DR0-DR3 and DR6 (VT-x) or DR0-DR3 (SVM, whose VMCB
//! holds DR6). Each vCPU keeps its copy while it is not loaded, so one
//! domain never sees another's.

use alloc::boxed::Box;

/// 64 bytes of an XSAVE area (the area must be 64-byte aligned).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct XsaveChunk([u8; 64]);

/// A vCPU's x87/SSE/AVX state save area, sized at boot for the largest XCR0
/// a guest may choose (the standard-format size CPUID leaf 0xD gives for
/// the XSAVE policy's components; 512 bytes for FXSAVE without XSAVE).
pub struct XsaveArea(Box<[XsaveChunk]>);

impl XsaveArea {
    pub fn new() -> Self {
        let size = xsave_policy().map_or(512, |x| x.max_size()) as usize;
        Self(alloc::vec![XsaveChunk([0; 64]); size.div_ceil(64)].into_boxed_slice())
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }

    fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr().cast()
    }

    /// The reset image (the processor's reset FPU state: FCW 0x37F, MXCSR 0x1F80, no XSAVE component set).
    pub fn reset(&mut self) {
        self.0.fill(XsaveChunk([0; 64]));
        let legacy = &mut self.0[0].0;
        legacy[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        legacy[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    }

    /// Makes the XSAVE header (bytes 512..576) acceptable to XRSTOR with
    /// `xcr0` (SDM Vol. 1 13.8.1): XSTATE_BV only names components of XCR0
    /// (a component saved before the guest shrank its XCR0 is dropped, as
    /// its state is undefined then anyway), XCOMP_BV and the reserved bytes
    /// are zero (standard format).
    fn sanitise_header(&mut self, xcr0: u64) {
        let header = &mut self.0[8].0;
        let bv = u64::from_le_bytes(header[0..8].try_into().unwrap_or_default());
        header[0..8].copy_from_slice(&(bv & xcr0).to_le_bytes());
        header[8..64].fill(0);
    }
}

/// The XSAVE policy (`None`: the guests get no XSAVE and their FPU state is
/// switched with FXSAVE).
pub fn xsave_policy() -> Option<&'static basalt_cpu::xstate::XstatePolicy> {
    crate::vcpu::guest_cpu().xstate.as_ref()
}

/// Sets XCR0.
///
/// # Safety
///
/// `value` must be a valid XCR0 for this CPU, with CR4.OSXSAVE set.
pub unsafe fn xsetbv(value: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack));
    }
}

/// A guest's XSETBV (SDM Vol. 2C) of EDX:EAX to XCR ECX at `cpl`, with
/// CR4.OSXSAVE `osxsave`: the value reaches the real XCR0, and is returned,
/// only when the XSAVE policy proves it valid (an invalid one would raise
/// #GP in root mode, in Basalt); otherwise the fault the processor would
/// raise, for the backend to inject.
pub fn guest_xsetbv(
    regs: &super::gprs::GuestRegs,
    cpl: u8,
    osxsave: bool,
) -> Result<u64, basalt_cpu::xstate::XsetbvFault> {
    let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
    let policy = xsave_policy().ok_or(basalt_cpu::xstate::XsetbvFault::Ud)?;
    let value = policy.xsetbv(regs.rcx as u32, value, cpl, osxsave)?;
    // SAFETY: `XstatePolicy::xsetbv` accepted the value: x87 set, a valid
    // combination of components the CPU supports.
    unsafe { xsetbv(value) };
    Ok(value)
}

pub fn save_fpu(area: &mut XsaveArea, xcr0: u64) {
    if xsave_policy().is_some() {
        // SAFETY: the area is 64-byte aligned and sized for every XCR0 the
        // policy accepts; XCR0 is this vCPU's, so every enabled component is
        // saved inside it.
        unsafe {
            core::arch::asm!("xsave64 [{0}]", in(reg) area.as_mut_ptr(), in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nostack));
        }
    } else {
        // SAFETY: FXSAVE needs a 16-byte aligned 512-byte area.
        unsafe { core::arch::asm!("fxsave64 [{0}]", in(reg) area.as_mut_ptr(), options(nostack)) };
    }
}

pub fn restore_fpu(area: &mut XsaveArea, xcr0: u64) {
    if xsave_policy().is_some() {
        // SAFETY: XCR0 is valid (set by a checked XSETBV or the reset value).
        unsafe { xsetbv(xcr0) };
        area.sanitise_header(xcr0);
        // SAFETY: the area holds a state saved by XSAVE or the reset image,
        // 64-byte aligned, with a standard-format header naming only
        // components of XCR0 (just sanitised), so XRSTOR cannot fault.
        unsafe {
            core::arch::asm!("xrstor64 [{0}]", in(reg) area.as_ptr(), in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nostack));
        }
    } else {
        // SAFETY: as for FXSAVE; the image came from FXSAVE or the reset
        // image (MXCSR 0x1f80).
        unsafe { core::arch::asm!("fxrstor64 [{0}]", in(reg) area.as_ptr(), options(nostack)) };
    }
}

/// Enables the host CR4 bits XSAVE/FXSAVE need (OSFXSR, OSXSAVE).
pub fn enable_fpu_switching() {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    let mut flags = Cr4::read() | Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE;
    let xsave = xsave_policy().is_some();
    if xsave {
        flags |= Cr4Flags::OSXSAVE;
    }
    // SAFETY: enabling FXSAVE/XSAVE support changes no memory mapping; the
    // hypervisor is soft-float and never uses the state itself.
    unsafe { Cr4::write(flags) };
    if xsave {
        // SAFETY: x87 only: always valid with OSXSAVE set.
        unsafe { xsetbv(1) };
    }
}

/// Loads CR2 with a vCPU's value (VT-x: the VMCS does not switch CR2).
pub fn write_cr2(value: u64) {
    // SAFETY: CR2 is only read by page-fault handlers; Basalt's own page
    // faults are fatal and report the address they find, so any value is
    // safe here.
    unsafe {
        core::arch::asm!("mov cr2, {}", in(reg) value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads DR0-DR3 and DR6: guest state the VMCS does not switch, kept per
/// vCPU so one domain's breakpoints never reach another.
pub fn read_debug_registers() -> [u64; 5] {
    let mut d = [0u64; 5];
    // SAFETY: reading debug registers in ring 0 has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {0}, dr0", "mov {1}, dr1", "mov {2}, dr2", "mov {3}, dr3", "mov {4}, dr6",
            out(reg) d[0], out(reg) d[1], out(reg) d[2], out(reg) d[3], out(reg) d[4],
            options(nomem, nostack, preserves_flags)
        );
    }
    d
}

/// Loads a vCPU's DR0-DR3 and DR6 (see [`read_debug_registers`]). The
/// hypervisor itself never enables breakpoints (DR7 is 0x400 after every VM
/// exit), so these values cannot trap in Basalt.
pub fn write_debug_registers(d: &[u64; 5]) {
    // SAFETY: DR0-DR3 take any address; DR6 gets a value read from DR6 or
    // its reset value; with DR7 clear in the host nothing triggers.
    unsafe {
        core::arch::asm!(
            "mov dr0, {0}", "mov dr1, {1}", "mov dr2, {2}", "mov dr3, {3}", "mov dr6, {4}",
            in(reg) d[0], in(reg) d[1], in(reg) d[2], in(reg) d[3], in(reg) d[4],
            options(nomem, nostack, preserves_flags)
        );
    }
}
