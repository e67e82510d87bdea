//! The vendor seam (docs/architecture.md, "The vendor seam"): the one
//! place that names every virtualization backend. The arch-neutral layer
//! (domains, scheduler, exit handlers, devices) reaches a vCPU only through
//! [`ArchVcpu`] and its [`Loaded`] guard, and asks the machine's stage-2
//! capabilities and flushes through the functions here.
//!
//! Dispatch is static: [`ArchVcpu`] is an enum with one variant per backend
//! and every method is a `match` the compiler inlines (one branch, always
//! taken the same way on a given machine); no `dyn` on the exit path.

use super::svm::vcpu::SvmVcpu;
use super::vmx::vcpu::VmxVcpu;
use super::{svm, vmx};
use crate::vcpu::{CpuidContext, Event, GuestError, StartState, VcpuExit};

/// Runs `$body` with `$v` bound to the backend's vCPU, whichever it is.
macro_rules! dispatch {
    ($arch:expr, $v:ident => $body:expr) => {
        match $arch {
            ArchVcpu::Vmx($v) => $body,
            ArchVcpu::Svm($v) => $body,
        }
    };
}

/// A vCPU's vendor state. It can be configured while not loaded
/// ([`ArchVcpu::set_start`]); everything else goes through [`Loaded`].
// Every vCPU of a machine has the same variant (one backend per machine), so
// the size difference wastes nothing that boxing would save, and a box would
// add a pointer chase to every exit.
#[allow(clippy::large_enum_variant)]
pub enum ArchVcpu {
    /// Intel VT-x: a VMCS and the software-switched state.
    Vmx(VmxVcpu),
    /// AMD SVM: a VMCB, its permission maps and the software-switched state.
    Svm(SvmVcpu),
}

/// The virtualization backend of this machine, chosen once at boot from
/// what the boot CPU offers (VT-x first, then SVM; both are compiled in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Intel VT-x with EPT.
    Vmx,
    /// AMD SVM with nested paging.
    Svm,
}

impl Backend {
    /// The name users know it by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vmx => "VT-x",
            Self::Svm => "AMD-V",
        }
    }
}

static BACKEND: spin::Once<Result<Backend, NoBackend>> = spin::Once::new();

/// The backend of this machine, or why there is none.
pub fn backend() -> Result<Backend, &'static NoBackend> {
    BACKEND.call_once(choose).as_ref().copied()
}

fn choose() -> Result<Backend, NoBackend> {
    let vmx_error = match vmx::negotiated() {
        Ok(_) => return Ok(Backend::Vmx),
        Err(e) => e,
    };
    let svm_error = match svm::caps() {
        Ok(_) => return Ok(Backend::Svm),
        Err(e) => e,
    };
    // Name the failure of the technology the CPU has; when it has neither,
    // say how to get one.
    Err(NoBackend(if vmx::cpu_has_vmx() {
        alloc::format!("{vmx_error}")
    } else if svm::cpu_has_svm() {
        alloc::format!("{svm_error}")
    } else {
        alloc::string::String::from(
            "this CPU has neither Intel VT-x nor AMD-V (CPUID.1:ECX bit 5 and CPUID \
             8000_0001h:ECX bit 2 are clear), so no guest can run: under QEMU's TCG use \
             `-cpu EPYC` or `qemu64,+svm,+npt` (`cargo xtask run` does), under KVM enable \
             nested virtualization (`--emulator kvm`, see README), or use Bochs \
             (`--emulator bochs`, VT-x)",
        )
    }))
}

/// Turns the machine's backend on for this CPU: VMXON, or EFER.SVME and
/// the host-save area. Returns a line describing the CPU's state.
pub fn enable_on_this_cpu() -> Result<alloc::string::String, alloc::string::String> {
    let index = super::percpu::index();
    match backend().map_err(|e| alloc::format!("{e}"))? {
        Backend::Vmx => match vmx::enable_on_this_cpu() {
            Ok(config) => Ok(alloc::format!(
                "cpu{index}: VMX operation on (VMCS revision {:#x})",
                config.negotiated.revision_id
            )),
            Err(e) => Err(alloc::format!("{e}")),
        },
        Backend::Svm => match svm::enable_on_this_cpu() {
            Ok(caps) => Ok(alloc::format!(
                "cpu{index}: SVM operation on (revision {}, {} ASIDs, features {:?}){}",
                caps.revision,
                caps.asids,
                caps.features,
                if svm::qemu_tcg() {
                    "; QEMU's TCG: an exit follows each injected interrupt"
                } else {
                    ""
                }
            )),
            Err(e) => Err(alloc::format!("{e}")),
        },
    }
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
    backend().map(|_| ()).map_err(Clone::clone)
}

/// Whether stage-2 tables (EPT, NPT) may map 1 GiB pages.
pub fn stage2_supports_1g() -> bool {
    match backend() {
        Ok(Backend::Vmx) => vmx::negotiated()
            .as_ref()
            .is_ok_and(|c| c.negotiated.ept_1g),
        Ok(Backend::Svm) => svm::npt_1g(),
        Err(_) => false,
    }
}

/// Whether stage-2 tables use AMD's nested-paging format (the host's page
/// tables) rather than EPT.
pub fn stage2_is_npt() -> bool {
    matches!(backend(), Ok(Backend::Svm))
}

/// Drops every stage-2 translation this CPU caches, for every guest (after
/// a domain's memory was unmapped, before it is reused).
pub fn flush_stage2_all() {
    match backend() {
        Ok(Backend::Vmx) => {
            let _ = vmx::instr::invept_all();
        }
        Ok(Backend::Svm) => svm::flush_all_on_this_cpu(),
        Err(_) => {}
    }
}

/// What the backend lets a guest's CPU have beyond the host's CPUID (the
/// inputs of `basalt_cpu::cpuid::GuestCpu`).
pub fn guest_limits() -> basalt_cpu::cpuid::Limits {
    match backend() {
        Ok(Backend::Svm) => svm::guest_limits(),
        _ => vmx::guest_limits(),
    }
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
    // SVM's ASIDs belong to CPUs, not vCPUs: nothing to give back.
    vmx::vpid::in_use()
}

/// The name of exit counter `index` (`crate::stats`): VT-x counts by basic
/// exit reason, SVM by `basalt_svm::exit::counter`.
pub fn exit_name(index: usize) -> &'static str {
    match backend() {
        Ok(Backend::Svm) => basalt_svm::exit::counter_name(index),
        _ => basalt_vmx::exit::ExitReason::from_basic(index as u16).name(),
    }
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
        let no_backend = || GuestError::Unsupported("a vCPU without VT-x or AMD-V");
        match backend().map_err(|_| no_backend())? {
            Backend::Vmx => {
                let n = vmx::negotiated().as_ref().map_err(|_| no_backend())?;
                let mut v = VmxVcpu::new(n, stage2_root, entry, cpuid, tsc_offset, exits)?;
                v.release();
                Ok(Self::Vmx(v))
            }
            Backend::Svm => {
                let caps = (*svm::caps()).map_err(|_| no_backend())?;
                let v = SvmVcpu::new(caps, stage2_root, entry, cpuid, tsc_offset, exits)?;
                Ok(Self::Svm(v))
            }
        }
    }

    /// Lets the guest reach `port` directly (no exit): the control
    /// domain's pass-through (`hvm::passthrough`).
    pub fn allow_port(&mut self, port: u16) {
        dispatch!(self, v => v.allow_port(port))
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
        match &*self.vcpu {
            ArchVcpu::Vmx(v) => v.regs.get(n),
            ArchVcpu::Svm(v) => v.reg(n),
        }
    }

    /// Sets general register `n`.
    #[inline]
    pub fn set_reg(&mut self, n: u8, value: u64) {
        match &mut *self.vcpu {
            ArchVcpu::Vmx(v) => v.regs.set(n, value),
            ArchVcpu::Svm(v) => v.set_reg(n, value),
        }
    }

    /// Moves RIP past the instruction that caused the exit (which the
    /// arch-neutral layer emulated); STI/MOV-SS blocking ends.
    #[inline]
    pub fn skip_instruction(&mut self) {
        dispatch!(&mut *self.vcpu, v => v.skip_instruction())
    }

    /// Moves RIP past an emulated instruction of `len` bytes whose length
    /// the exit did not report (a stage-2 fault, string I/O).
    #[inline]
    pub fn skip_emulated(&mut self, len: u64) {
        dispatch!(&mut *self.vcpu, v => v.skip_emulated(len))
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

    /// Performs CPUID for the guest (its RAX and RCX in, RAX-RDX out).
    pub fn cpuid(&mut self) {
        dispatch!(&mut *self.vcpu, v => v.cpuid())
    }

    /// The guest's CR0, CR3, CR4 and EFER, as the guest sees them.
    pub fn paging_state(&self) -> basalt_x86emul::PagingMode {
        dispatch!(&*self.vcpu, v => v.paging_state())
    }

    /// The guest's RFLAGS.
    pub fn rflags(&self) -> u64 {
        dispatch!(&*self.vcpu, v => v.rflags())
    }

    /// Sets the guest's RFLAGS (bit 1 always set).
    pub fn set_rflags(&mut self, value: u64) {
        dispatch!(&mut *self.vcpu, v => v.set_rflags(value))
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
