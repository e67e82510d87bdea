//! The vendor seam (docs/architecture.md, "The vendor seam"): the one
//! place that names every virtualization backend. The arch-neutral layer
//! (domains, scheduler, exit handlers, devices) reaches a vCPU only through
//! [`ArchVcpu`] and its [`Loaded`] guard, and asks the machine's stage-2
//! capabilities and flushes through the functions here.
//!
//! Dispatch is static: [`ArchVcpu`] is an enum with one variant per backend
//! and every method is a `match` the compiler inlines (one branch, always
//! taken the same way on a given machine); no `dyn` on the exit path.

use super::vmx;
use super::vmx::vcpu::VmxVcpu;
use crate::vcpu::{CpuidContext, Event, GuestError, StartState, VcpuExit};

/// Runs `$body` with `$v` bound to the backend's vCPU, whichever it is.
macro_rules! dispatch {
    ($arch:expr, $v:ident => $body:expr) => {
        match $arch {
            ArchVcpu::Vmx($v) => $body,
        }
    };
}

/// A vCPU's vendor state. It can be configured while not loaded
/// ([`ArchVcpu::set_start`]); everything else goes through [`Loaded`].
pub enum ArchVcpu {
    /// Intel VT-x: a VMCS and the software-switched state.
    Vmx(VmxVcpu),
}

impl core::fmt::Debug for ArchVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        dispatch!(self, v => v.fmt(f))
    }
}

/// Why no vCPU can be made: no virtualization backend works on this
/// machine (the message names the cause and the fix).
#[derive(Debug, Clone)]
pub struct NoBackend(pub alloc::string::String);

impl core::fmt::Display for NoBackend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a backend is usable on this machine, or why not.
pub fn available() -> Result<(), NoBackend> {
    match vmx::negotiated() {
        Ok(_) => Ok(()),
        Err(e) => Err(NoBackend(alloc::format!("{e}"))),
    }
}

/// Whether stage-2 tables (EPT, NPT) may map 1 GiB pages.
pub fn stage2_supports_1g() -> bool {
    vmx::negotiated()
        .as_ref()
        .is_ok_and(|c| c.negotiated.ept_1g)
}

/// Drops every stage-2 translation this CPU caches, for every guest (after
/// a domain's memory was unmapped, before it is reused).
pub fn flush_stage2_all() {
    let _ = vmx::instr::invept_all();
}

/// What the backend lets a guest's CPU have beyond the host's CPUID (the
/// inputs of `basalt_cpu::cpuid::GuestCpu`).
pub fn guest_limits() -> basalt_cpu::cpuid::Limits {
    vmx::guest_limits()
}

/// Speculative-execution hygiene before this CPU enters a guest of the
/// domain of `generation` (docs/vmx.md, "Speculative execution").
#[inline]
pub fn entering_domain(cpu: usize, generation: u64) {
    vmx::spec::entering_domain(cpu, generation);
}

/// How many address-space tags (VPIDs, ASIDs) live vCPUs hold; 0 once every
/// domain ended.
pub fn tags_in_use() -> u32 {
    vmx::vpid::in_use()
}

impl ArchVcpu {
    /// A vCPU of a domain whose stage-2 root is `stage2_root`, starting in
    /// `entry`. It is created on this CPU and left loaded nowhere.
    pub fn new(
        stage2_root: u64,
        entry: StartState,
        cpuid: CpuidContext,
        tsc_offset: u64,
        exits: alloc::sync::Arc<crate::stats::ExitCounts>,
    ) -> Result<Self, GuestError> {
        let n = vmx::negotiated()
            .as_ref()
            .map_err(|_| GuestError::Unsupported("a vCPU without VT-x"))?;
        let mut v = VmxVcpu::new(n, stage2_root, entry, cpuid, tsc_offset, exits)?;
        v.release();
        Ok(Self::Vmx(v))
    }

    /// Sets the state the vCPU starts from at its next load (it must not be
    /// loaded anywhere: a vCPU that is down).
    pub fn set_start(&mut self, entry: StartState) {
        dispatch!(self, v => v.set_start(entry))
    }

    /// Loads the vCPU on this CPU (VT-x: VMPTRLD, host state if the CPU
    /// changed, extended state, debug registers, MSRs). Its state is
    /// reached through the guard until it is dropped, which unloads it.
    pub fn load(&mut self) -> Result<Loaded<'_>, GuestError> {
        let loaded = dispatch!(self, v => v.load().inspect_err(|_| v.unload()));
        loaded.map(|()| Loaded { vcpu: self })
    }
}

/// A vCPU loaded on this CPU. Its registers are reached only through this
/// guard, so they cannot be touched on a CPU where the vCPU is not loaded;
/// dropping it unloads the vCPU (VT-x: XSAVE, debug registers, MSRs,
/// VMCLEAR).
pub struct Loaded<'a> {
    vcpu: &'a mut ArchVcpu,
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        dispatch!(&mut *self.vcpu, v => v.unload())
    }
}

impl Loaded<'_> {
    /// Runs the guest until an exit the arch-neutral layer must see (the
    /// backend answers the others itself).
    #[inline]
    pub fn run(&mut self) -> VcpuExit {
        dispatch!(&mut *self.vcpu, v => v.run())
    }

    /// Injects `event` at the next entry (an interrupt or NMI the guest
    /// cannot take now waits for a window exit). Returns whether it was
    /// injected.
    #[inline]
    pub fn inject(&mut self, event: Event) -> bool {
        dispatch!(&mut *self.vcpu, v => v.inject(event))
    }

    /// Restarts the vCPU in `entry` now (INIT and a start-up IPI while it
    /// was up); an event waiting for injection is dropped.
    pub fn restart(&mut self, entry: StartState) -> Result<(), GuestError> {
        dispatch!(&mut *self.vcpu, v => v.restart(entry))
    }

    /// Whether a time slice set by [`Self::start_slice`] keeps counting
    /// across exits (then it is set once, else before every entry).
    #[inline]
    pub fn slice_survives_exits(&self) -> bool {
        dispatch!(&*self.vcpu, v => v.slice_survives_exits())
    }

    /// Ends guest execution after `ticks` TSC ticks at the latest (a
    /// [`VcpuExit::Preempted`]).
    #[inline]
    pub fn start_slice(&mut self, ticks: u64) {
        dispatch!(&mut *self.vcpu, v => v.start_slice(ticks))
    }

    /// General register `n` in the SDM's numbering (`crate::vcpu::gpr`).
    #[inline]
    pub fn reg(&self, n: u8) -> u64 {
        dispatch!(&*self.vcpu, v => v.regs.get(n))
    }

    /// Sets general register `n`.
    #[inline]
    pub fn set_reg(&mut self, n: u8, value: u64) {
        dispatch!(&mut *self.vcpu, v => v.regs.set(n, value))
    }

    /// Moves RIP past the instruction that caused the exit (which the
    /// arch-neutral layer emulated); STI/MOV-SS blocking ends.
    #[inline]
    pub fn skip_instruction(&mut self) {
        dispatch!(&*self.vcpu, v => v.skip_instruction())
    }

    /// Moves RIP past an emulated instruction of `len` bytes whose length
    /// the exit did not report (a stage-2 fault, string I/O).
    #[inline]
    pub fn skip_emulated(&mut self, len: u64) {
        dispatch!(&*self.vcpu, v => v.skip_emulated(len))
    }

    /// Whether RFLAGS.IF was set at the last exit.
    #[inline]
    pub fn interrupts_enabled(&self) -> bool {
        dispatch!(&*self.vcpu, v => v.interrupts_enabled())
    }

    /// Whether the guest runs in 64-bit mode.
    #[inline]
    pub fn long_mode(&self) -> bool {
        dispatch!(&*self.vcpu, v => v.long_mode())
    }

    /// The guest's current privilege level.
    #[inline]
    pub fn cpl(&self) -> u8 {
        dispatch!(&*self.vcpu, v => v.cpl())
    }

    /// The guest's RIP.
    pub fn rip(&self) -> u64 {
        dispatch!(&*self.vcpu, v => v.rip())
    }

    /// The linear address of the next instruction (CS base + RIP).
    pub fn rip_linear(&self) -> u64 {
        dispatch!(&*self.vcpu, v => v.rip_linear())
    }

    /// The code size of the guest's mode: 64, 32 or 16.
    pub fn code_bits(&self) -> u8 {
        dispatch!(&*self.vcpu, v => v.code_bits())
    }

    /// The guest's CR0, CR3, CR4 and EFER, as the guest sees them.
    pub fn paging_state(&self) -> (u64, u64, u64, u64) {
        dispatch!(&*self.vcpu, v => v.paging_state())
    }

    /// The guest's RFLAGS.
    pub fn rflags(&self) -> u64 {
        dispatch!(&*self.vcpu, v => v.rflags())
    }

    /// Sets the guest's RFLAGS (bit 1 always set).
    pub fn set_rflags(&mut self, value: u64) {
        dispatch!(&*self.vcpu, v => v.set_rflags(value))
    }

    /// Sets the guest's CR2 (before injecting a page fault).
    pub fn set_cr2(&mut self, value: u64) {
        dispatch!(&mut *self.vcpu, v => v.set_cr2(value))
    }

    /// The hidden part of a segment register, for the instruction emulator.
    pub fn segment(&self, segment: basalt_x86emul::Segment) -> basalt_x86emul::SegmentState {
        dispatch!(&*self.vcpu, v => v.segment(segment))
    }

    /// Prints the vendor's view of the vCPU (VT-x: the VMCS) for crash
    /// reports.
    pub fn dump(&self, out: &mut impl core::fmt::Write) {
        dispatch!(&*self.vcpu, v => v.dump(out))
    }
}
