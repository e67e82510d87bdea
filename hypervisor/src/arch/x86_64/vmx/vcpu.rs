//! A VMX virtual CPU: its VMCS, its general registers, its FPU/vector state,
//! and the exits Basalt answers inside the VT-x layer (docs/vmx.md).
//!
//! Exits that need the domain or the scheduler (hypercalls, port I/O, HLT,
//! shutdowns, guest errors) come back to the arch-neutral layer as a
//! [`VcpuExit`]; the rest (CPUID, MSRs, control registers, XSETBV, cache
//! flushes, VMX instructions, interrupt windows, external interrupts) are
//! handled here.

use super::VmxConfig;
use super::instr::{self, CurrentVmcs};
use crate::arch::x86_64::switch::{
    XsaveArea, guest_xsetbv, read_debug_registers, restore_fpu, save_fpu, write_cr2,
    write_debug_registers,
};
use crate::arch::x86_64::{gdt, msr};
use crate::vcpu::{Event, GuestError, StartState, VcpuExit, backend_error};
use basalt_cpu::cr::{CrState, cr4};
use basalt_cpu::xstate::XsetbvFault;
use basalt_frames::Owner;
use basalt_vmx::controls::{EntryControls, PrimaryControls};
use basalt_vmx::exit::{
    CrAccess, CrAccessType, ExitReason, ExitReasonField, InterruptionInfo, IoAccess,
};
use basalt_vmx::fields::{SegmentFields, VmcsExt, ctrl, exit, guest, host};
use basalt_vmx::segment::AccessRights;

unsafe extern "C" {
    fn vmx_enter(regs: *mut GuestRegs, launched: u64) -> u64;
    fn vmx_exit();
}

core::arch::global_asm!(include_str!("entry.S"), options(att_syntax));

pub use crate::arch::x86_64::gprs::GuestRegs;

/// VT-x keeps RSP in the VMCS: register 4 goes there.
impl GuestRegs {
    /// Register `n` in the SDM's numbering (0 = RAX … 15 = R15); RSP (4)
    /// comes from the VMCS.
    #[inline(always)]
    pub fn get(&self, n: u8) -> u64 {
        match n {
            4 => CurrentVmcs.read_nat(guest::RSP).unwrap_or(0),
            n => self.get_common(n),
        }
    }

    /// Sets register `n` (SDM numbering).
    #[inline(always)]
    pub fn set(&mut self, n: u8, value: u64) {
        match n {
            4 => {
                let _ = CurrentVmcs.write_nat(guest::RSP, value);
            }
            n => self.set_common(n, value),
        }
    }
}

/// MSRs a guest may read and write directly (MSR bitmap allowlist). Those
/// the VMCS does not switch are saved and restored in software when vCPUs
/// share a physical CPU.
const PASSTHROUGH_MSRS: [u32; 9] = [
    0xc000_0080, // IA32_EFER (switched by the VMCS: save/load EFER)
    0xc000_0100, // IA32_FS_BASE (guest-state area)
    0xc000_0101, // IA32_GS_BASE (guest-state area)
    0xc000_0102, // IA32_KERNEL_GS_BASE
    0xc000_0081, // IA32_STAR
    0xc000_0082, // IA32_LSTAR
    0xc000_0083, // IA32_CSTAR
    0xc000_0084, // IA32_FMASK
    0xc000_0103, // IA32_TSC_AUX (RDTSCP, RDPID)
];
/// The passthrough MSRs the VMCS does not switch.
const SOFTWARE_SWITCHED_MSRS: [u32; 6] = [
    0xc000_0102,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0103,
];
/// IA32_PAT.
const MSR_PAT: u32 = 0x277;
/// Read-only MSRs a guest may read directly: the TSC.
const READ_ONLY_MSRS: [u32; 1] = [0x10];

/// A VMX vCPU.
pub struct VmxVcpu {
    vmcs: u64,
    launched: bool,
    /// The guest's general registers while it is not running.
    pub regs: GuestRegs,
    msr_bitmap: u64,
    io_bitmap_a: u64,
    io_bitmap_b: u64,
    xsave: XsaveArea,
    xcr0: u64,
    msrs: [u64; 6],
    /// The guest's virtual TPR (CR8).
    tpr: u64,
    /// DR0-DR3 and DR6, which the VMCS does not switch (DR7 it does).
    debug: [u64; 5],
    /// The guest's CR2, which VM entry and exit do not switch either: the
    /// guest's page-fault address stays in the register while it runs, so
    /// it is saved and restored with the vCPU (one domain never sees
    /// another's).
    cr2: u64,
    controls: VmxConfig,
    /// What CPUID answers depend on (signature, APIC ID, TSC frequency).
    cpuid: crate::vcpu::CpuidContext,
    /// The CPU model every guest sees.
    guest_cpu: &'static basalt_cpu::cpuid::GuestCpu,
    /// A start state to write into the VMCS at the next `load`
    /// (`VCPUOP_initialise` of a vCPU that is down).
    pending_start: Option<StartState>,
    /// The domain's exit counters.
    exits: alloc::sync::Arc<crate::stats::ExitCounts>,
    /// The CPU whose host state the VMCS holds (`usize::MAX`: none yet).
    host_cpu: usize,
    /// Its VPID (None without the VPID control); given back when dropped.
    vpid: Option<super::vpid::VpidTag>,
}

impl Drop for VmxVcpu {
    /// Returns the VMCS and the bitmaps to the pool. The VMCS is cleared
    /// first, so the processor holds no cached copy of a freed page.
    fn drop(&mut self) {
        // SAFETY: our VMCS; clearing a VMCS that is not current is allowed.
        let _ = unsafe { instr::vmclear(self.vmcs) };
        for page in [
            self.vmcs,
            self.msr_bitmap,
            self.io_bitmap_a,
            self.io_bitmap_b,
        ] {
            crate::mm::free_frames(page, 0, Owner::Domain);
        }
    }
}

impl core::fmt::Debug for VmxVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VmxVcpu")
            .field("vmcs", &self.vmcs)
            .field("launched", &self.launched)
            .finish()
    }
}

/// Injects the event `info` at the next VM entry if the guest `can_take`
/// it and no other event is being injected, and stops asking for `window`
/// exits; otherwise asks for them (an empty `window`: the event waits for
/// the next exit). Returns whether the event was injected.
#[inline(always)]
fn inject_or_open_window(can_take: bool, info: u32, window: PrimaryControls) -> bool {
    let mut v = vmcs();
    let busy = v.read32(ctrl::ENTRY_INTERRUPTION_INFO).unwrap_or(0) & (1 << 31) != 0;
    let primary = v.read32(ctrl::PRIMARY_PROCESSOR_BASED).unwrap_or(0);
    let window = window.bits();
    if !can_take || busy {
        if primary & window != window {
            let _ = v.write32(ctrl::PRIMARY_PROCESSOR_BASED, primary | window);
        }
        return false;
    }
    let _ = v.write32(ctrl::ENTRY_INTERRUPTION_INFO, info);
    if primary & window != 0 {
        let _ = v.write32(ctrl::PRIMARY_PROCESSOR_BASED, primary & !window);
    }
    true
}

/// The CR0 bits a guest may not own: everything but PE, MP, EM, TS, ET,
/// NE-is-forced, WP, AM, NW, CD, PG — i.e. Basalt intercepts writes to the
/// bits VMX fixes (NE) and shows the guest its own view.
const CR0_PE: u64 = 1 << 0;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_VMXE: u64 = 1 << 13;
const CR4_SMXE: u64 = 1 << 14;
/// Bits 63:32 of CR0 and CR4: reserved, intercepted so a write raises #GP.
const CR_HIGH_HALF: u64 = 0xffff_ffff_0000_0000;

/// Writes the selector, base, limit and access rights of segment register `s`.
fn write_segment(
    v: &mut CurrentVmcs,
    s: &SegmentFields,
    (selector, limit, access): (u16, u32, u32),
) -> Result<(), basalt_vmx::error::VmFail> {
    v.write16(s.selector, selector)?;
    v.write_nat(s.base, 0)?;
    v.write32(s.limit, limit)?;
    v.write32(s.access_rights, access)
}

/// Writes flat segments: CS `(selector, access rights)`, the data segments
/// DS, ES, SS, FS, GS with `data`, all with base 0 and `limit`; a busy TSS
/// at `tr` (limit 0x67), no LDT, empty GDTR and IDTR (the guest loads its
/// own).
fn write_flat_segments(
    v: &mut CurrentVmcs,
    code: (u16, u32),
    data: (u16, u32),
    limit: u32,
    tr: u16,
) -> Result<(), basalt_vmx::error::VmFail> {
    let [es, cs, ss, ds, fs, gs, ldtr, tr_fields] = &guest::SEGMENTS;
    write_segment(v, cs, (code.0, limit, code.1))?;
    for s in [ds, es, ss, fs, gs] {
        write_segment(v, s, (data.0, limit, data.1))?;
    }
    write_segment(v, tr_fields, (tr, 0x67, AccessRights::TSS_BUSY.0))?;
    write_segment(v, ldtr, (0, 0, AccessRights::UNUSABLE.0))?;
    v.write_nat(guest::GDTR_BASE, 0)?;
    v.write32(guest::GDTR_LIMIT, 0)?;
    v.write_nat(guest::IDTR_BASE, 0)?;
    v.write32(guest::IDTR_LIMIT, 0)
}

/// A failed VMX instruction: VMfailInvalid, or VMfailValid with the
/// VM-instruction error's meaning and number.
#[cold]
#[inline(never)]
fn vm_fail(e: basalt_vmx::error::VmFail) -> GuestError {
    match e {
        basalt_vmx::error::VmFail::Invalid => backend_error(
            "VMX instruction failed",
            None,
            "VMfailInvalid (no current VMCS)",
        ),
        basalt_vmx::error::VmFail::Valid(n) => backend_error(
            "VMX instruction failed: VMfailValid",
            Some(n.number()),
            n.message(),
        ),
    }
}

/// An exit that ends the guest: `what` and the exit reason's name.
#[cold]
#[inline(never)]
fn exit_error(what: &'static str, reason: ExitReason) -> GuestError {
    backend_error(what, Some(u32::from(reason.number())), reason.name())
}

fn vmcs() -> CurrentVmcs {
    CurrentVmcs
}

fn alloc_page() -> Result<u64, GuestError> {
    crate::mm::alloc_zeroed_frame(Owner::Domain).ok_or(GuestError::OutOfMemory)
}

impl VmxVcpu {
    /// A vCPU of a domain whose EPT root is `ept_root`, starting at `entry`
    /// in 32-bit protected mode with paging off (PVH), on this CPU.
    pub fn new(
        n: &VmxConfig,
        ept_root: u64,
        entry: StartState,
        cpuid: crate::vcpu::CpuidContext,
        tsc_offset: u64,
        exits: alloc::sync::Arc<crate::stats::ExitCounts>,
    ) -> Result<Self, GuestError> {
        // First, so that a refusal leaves nothing behind.
        let vpid = if n.negotiated.vpid {
            Some(super::vpid::VpidTag::alloc().map_err(|e| {
                backend_error(
                    "no VPID for the vCPU",
                    Some(e.in_use),
                    "every VPID is in use by live vCPUs (the code says how many); end a \
                         domain (or give this one fewer vCPUs) and try again",
                )
            })?)
        } else {
            None
        };
        let vmcs_page = alloc_page()?;
        crate::mm::write_phys_u32(vmcs_page, n.negotiated.revision_id);
        let mut this = Self {
            vmcs: vmcs_page,
            launched: false,
            regs: GuestRegs::default(),
            msr_bitmap: alloc_page()?,
            io_bitmap_a: alloc_page()?,
            io_bitmap_b: alloc_page()?,
            xsave: XsaveArea::new(),
            xcr0: 1,
            msrs: [0; 6],
            tpr: 0,
            debug: [0, 0, 0, 0, 0xffff_0ff0],
            cr2: 0,
            controls: n.clone(),
            cpuid,
            guest_cpu: crate::vcpu::guest_cpu(),
            pending_start: None,
            exits,
            host_cpu: usize::MAX,
            vpid,
        };
        this.init_bitmaps();
        // SAFETY: a fresh VMCS region of ours, with its revision id.
        unsafe { instr::vmclear(this.vmcs) }.map_err(vm_fail)?;
        // SAFETY: as above; it is current on no other CPU.
        unsafe { instr::vmptrld(this.vmcs) }.map_err(vm_fail)?;
        let vpid = this.vpid.as_ref().map_or(0, |t| t.value());
        this.write_controls(ept_root, vpid, tsc_offset)
            .map_err(vm_fail)?;
        this.write_guest_state(entry).map_err(vm_fail)?;
        this.write_host_state().map_err(vm_fail)?;
        Ok(this)
    }

    fn init_bitmaps(&mut self) {
        let msr = crate::mm::phys_page_mut(self.msr_bitmap);
        let mut bitmap = basalt_vmx::bitmaps::MsrBitmap::new(msr);
        for m in PASSTHROUGH_MSRS {
            let _ = bitmap.allow_read(m);
            let _ = bitmap.allow_write(m);
        }
        for m in READ_ONLY_MSRS {
            let _ = bitmap.allow_read(m);
        }
        if self.controls.negotiated.pat_switching {
            // The processor switches IA32_PAT on every entry and exit: the
            // guest owns its copy.
            let _ = bitmap.allow_read(MSR_PAT);
            let _ = bitmap.allow_write(MSR_PAT);
        }
        let a = crate::mm::phys_page_mut(self.io_bitmap_a);
        a.fill(0xff);
        let b = crate::mm::phys_page_mut(self.io_bitmap_b);
        b.fill(0xff);
    }

    /// Clears `port`'s bit in I/O bitmap A (ports 0-0x7FFF) or B (SDM Vol. 3C
    /// §25.6.4): accesses to it no longer exit.
    pub fn allow_port(&mut self, port: u16) {
        let page = if port < 0x8000 {
            self.io_bitmap_a
        } else {
            self.io_bitmap_b
        };
        let bit = usize::from(port & 0x7fff);
        crate::mm::phys_page_mut(page)[bit / 8] &= !(1 << (bit % 8));
    }

    fn write_controls(
        &mut self,
        ept_root: u64,
        vpid: u16,
        tsc_offset: u64,
    ) -> Result<(), basalt_vmx::error::VmFail> {
        let n = &self.controls.negotiated;
        let mut v = vmcs();
        if n.tsc_offsetting {
            // The domain's own TSC (docs/scheduler.md, "Guest time"): the
            // same offset on every vCPU and CPU, so it never goes backwards
            // when a vCPU moves.
            v.write64(ctrl::TSC_OFFSET, tsc_offset)?;
        }
        v.write32(ctrl::PIN_BASED, n.pin.bits())?;
        v.write32(ctrl::PRIMARY_PROCESSOR_BASED, n.primary.bits())?;
        v.write32(ctrl::SECONDARY_PROCESSOR_BASED, n.secondary.bits())?;
        v.write32(ctrl::EXIT_CONTROLS, n.exit.bits())?;
        v.write32(
            ctrl::ENTRY_CONTROLS,
            n.entry.bits() & !EntryControls::IA32E_MODE_GUEST.bits(),
        )?;
        // `hvm_fep` intercepts #UD (crate::hvm::fep).
        let ud = u32::from(crate::vcpu::FEP.load(core::sync::atomic::Ordering::Relaxed)) << 6;
        v.write32(ctrl::EXCEPTION_BITMAP, ud)?;
        v.write32(ctrl::PAGE_FAULT_ERROR_CODE_MASK, 0)?;
        v.write32(ctrl::PAGE_FAULT_ERROR_CODE_MATCH, 0)?;
        v.write32(ctrl::CR3_TARGET_COUNT, 0)?;
        v.write32(ctrl::EXIT_MSR_STORE_COUNT, 0)?;
        v.write32(ctrl::EXIT_MSR_LOAD_COUNT, 0)?;
        v.write32(ctrl::ENTRY_MSR_LOAD_COUNT, 0)?;
        v.write32(ctrl::ENTRY_INTERRUPTION_INFO, 0)?;
        v.write64(ctrl::IO_BITMAP_A, self.io_bitmap_a)?;
        v.write64(ctrl::IO_BITMAP_B, self.io_bitmap_b)?;
        v.write64(ctrl::MSR_BITMAP, self.msr_bitmap)?;
        // EPTP: write-back (6), 4-level walk (3 << 3).
        v.write64(ctrl::EPT_POINTER, ept_root | 6 | (3 << 3))?;
        if n.vpid {
            v.write16(ctrl::VPID, vpid)?;
        }
        if n.secondary
            .contains(basalt_vmx::controls::SecondaryControls::ENABLE_XSAVES)
        {
            // XSAVES/XRSTORS run without exits for every IA32_XSS component.
            v.write64(ctrl::XSS_EXITING_BITMAP, 0)?;
        }
        // The guest owns no CR0/CR4 bit VMX fixes, nor CR4.VMXE/SMXE: writes
        // to those exit, and reads see the shadows.
        // Of CR0 the guest owns every bit VMX does not fix but the high
        // half (a write there exits and raises #GP). Of CR4 it owns only the
        // bits of features it is shown whose rules the processor enforces
        // itself (basalt_cpu::cr): a write to any other bit exits and is
        // checked against the guest's CPU model (docs/vmx.md, "Guest-visible
        // checks").
        let c = &self.controls;
        let cr0_mask = c.cr0_fixed_mask() & !(CR0_PE | CR0_PG);
        v.write_nat(ctrl::CR0_GUEST_HOST_MASK, cr0_mask | CR0_NE | CR_HIGH_HALF)?;
        let owned = crate::vcpu::guest_cpu().cr.cr4_guest_owned();
        v.write_nat(
            ctrl::CR4_GUEST_HOST_MASK,
            c.cr4_fixed_mask() | CR4_VMXE | CR4_SMXE | !owned,
        )?;
        Ok(())
    }

    /// The guest state of `entry`: PVH (flat 32-bit code and data, a 32-bit
    /// TSS, paging off), real mode at cs:ip, or 64-bit mode (flat 64-bit code
    /// and data, a busy 64-bit TSS, the given GDTR and control registers:
    /// CR0.PG, CR4.PAE and EFER.LME were checked by the caller), with
    /// "IA-32e mode guest" set for the last only: the vCPU may have run
    /// 64-bit code before (a CPU the guest took offline and starts again).
    fn write_guest_state(&mut self, entry: StartState) -> Result<(), basalt_vmx::error::VmFail> {
        let n = &self.controls;
        let mut v = vmcs();
        let (s, long) = (entry.registers(), matches!(entry, StartState::Long64(_)));
        let ia32e = EntryControls::IA32E_MODE_GUEST.bits();
        let entry_controls = n.negotiated.entry.bits() & !ia32e;
        v.write32(
            ctrl::ENTRY_CONTROLS,
            entry_controls | if long { ia32e } else { 0 },
        )?;
        v.write_nat(guest::CR0, n.fix_guest_cr0(s.cr0))?;
        v.write_nat(ctrl::CR0_READ_SHADOW, s.cr0)?;
        v.write_nat(guest::CR4, n.fix_guest_cr4(s.cr4))?;
        v.write_nat(ctrl::CR4_READ_SHADOW, s.cr4)?;
        v.write_nat(guest::CR3, s.cr3)?;
        v.write64(guest::IA32_EFER, s.efer)?;
        v.write_nat(guest::DR7, 0x400)?;
        v.write_nat(guest::RSP, s.rsp)?;
        v.write_nat(guest::RIP, s.rip)?;
        v.write_nat(guest::RFLAGS, (s.rflags | 0x2) & !(1 << 17))?;
        v.write64(guest::IA32_PAT, 0x0007_0406_0007_0406)?;
        v.write64(guest::IA32_DEBUGCTL, 0)?;
        v.write64(guest::VMCS_LINK_POINTER, u64::MAX)?;
        v.write32(guest::INTERRUPTIBILITY_STATE, 0)?;
        v.write32(guest::ACTIVITY_STATE, 0)?;
        v.write_nat(guest::PENDING_DEBUG_EXCEPTIONS, 0)?;
        v.write32(guest::IA32_SYSENTER_CS, 0)?;
        v.write_nat(guest::IA32_SYSENTER_ESP, 0)?;
        v.write_nat(guest::IA32_SYSENTER_EIP, 0)?;
        match entry {
            StartState::Pvh { .. } => {
                let (code, data) = (AccessRights::CODE32.0, AccessRights::DATA32.0);
                write_flat_segments(&mut v, (0x10, code), (0x18, data), u32::MAX, 0x20)?;
            }
            StartState::RealMode { cs, .. } => {
                let (code, data) = (
                    AccessRights::REAL_MODE_CODE.0,
                    AccessRights::REAL_MODE_DATA.0,
                );
                write_flat_segments(&mut v, (cs, code), (0, data), 0xffff, 0)?;
                v.write_nat(guest::CS_BASE, u64::from(cs) << 4)?;
                // As after RESET or INIT (SDM Vol. 3A 10.1.1, table 10-1): GDTR
                // and IDTR at base 0 with limit 0xFFFF, so a real-mode guest
                // takes interrupts and exceptions through the vector table at
                // address 0 (with limit 0 each would be a triple fault).
                v.write32(guest::GDTR_LIMIT, 0xffff)?;
                v.write32(guest::IDTR_LIMIT, 0xffff)?;
            }
            StartState::Long64(_) => {
                let (code, data) = (AccessRights::CODE64.0, AccessRights::DATA32.0);
                write_flat_segments(&mut v, (0x10, code), (0x18, data), u32::MAX, 0x20)?;
                v.write_nat(guest::GDTR_BASE, s.gdt_base)?;
                v.write32(guest::GDTR_LIMIT, u32::from(s.gdt_limit))?;
            }
        }
        self.reset_software_state(s.gprs());
        Ok(())
    }

    /// The state Basalt keeps outside the VMCS, as a CPU has it after INIT:
    /// `regs` for the general registers, TPR 0, x87/SSE in their reset
    /// state, XCR0 x87 only, the switched MSRs and debug registers cleared.
    fn reset_software_state(&mut self, regs: GuestRegs) {
        self.regs = regs;
        self.tpr = 0;
        self.xsave.reset();
        self.xcr0 = 1;
        self.msrs = [0; 6];
        self.debug = [0, 0, 0, 0, 0xffff_0ff0];
    }

    /// Restarts the vCPU, loaded on this CPU, in the state `entry` (INIT and
    /// a start-up IPI while it was up): the guest state is written now and
    /// an event waiting for injection is dropped.
    pub fn restart(&mut self, entry: StartState) -> Result<(), GuestError> {
        let _ = vmcs().write32(ctrl::ENTRY_INTERRUPTION_INFO, 0);
        if let Some(tag) = &self.vpid {
            tag.flush(self.controls.negotiated.invvpid_single_context);
        }
        self.write_guest_state(entry).map_err(vm_fail)
    }

    /// Sets the state the vCPU starts from at its next `load` (it must not be
    /// loaded anywhere: a vCPU that is down).
    pub fn set_start(&mut self, entry: StartState) {
        self.pending_start = Some(entry);
    }

    /// The host state of the CPU this vCPU is loaded on.
    fn write_host_state(&mut self) -> Result<(), basalt_vmx::error::VmFail> {
        let mut v = vmcs();
        let (gdt_base, tss_base) = gdt::current_bases();
        let idt_base = crate::arch::x86_64::idt::base();
        v.write_nat(host::CR0, x86_64::registers::control::Cr0::read_raw())?;
        v.write_nat(
            host::CR3,
            x86_64::registers::control::Cr3::read_raw()
                .0
                .start_address()
                .as_u64(),
        )?;
        v.write_nat(host::CR4, x86_64::registers::control::Cr4::read_raw())?;
        v.write16(host::CS_SELECTOR, gdt::KERNEL_CS)?;
        v.write16(host::SS_SELECTOR, gdt::KERNEL_DS)?;
        v.write16(host::DS_SELECTOR, gdt::KERNEL_DS)?;
        v.write16(host::ES_SELECTOR, gdt::KERNEL_DS)?;
        v.write16(host::FS_SELECTOR, 0)?;
        v.write16(host::GS_SELECTOR, 0)?;
        v.write16(host::TR_SELECTOR, gdt::TSS_SELECTOR)?;
        v.write_nat(host::FS_BASE, 0)?;
        v.write_nat(host::GS_BASE, msr::read(msr::Msr::GsBase))?;
        v.write_nat(host::TR_BASE, tss_base)?;
        v.write_nat(host::GDTR_BASE, gdt_base)?;
        v.write_nat(host::IDTR_BASE, idt_base)?;
        v.write64(host::IA32_EFER, msr::read(msr::Msr::Efer))?;
        v.write64(host::IA32_PAT, msr::read_raw(0x277))?;
        v.write32(host::IA32_SYSENTER_CS, 0)?;
        v.write_nat(host::IA32_SYSENTER_ESP, 0)?;
        v.write_nat(host::IA32_SYSENTER_EIP, 0)?;
        v.write_nat(host::RIP, vmx_exit as *const () as u64)?;
        Ok(())
    }

    /// Makes this vCPU current on this CPU (VMPTRLD, host state, FPU state,
    /// MSRs). The caller unloads the previous vCPU first.
    pub fn load(&mut self) -> Result<(), GuestError> {
        // SAFETY: our VMCS, cleared by `unload` or `new`, current nowhere.
        unsafe { instr::vmptrld(self.vmcs) }.map_err(vm_fail)?;
        // The host state (GDT, TSS, GS base) is per CPU: rewritten only when
        // the vCPU moved (VMCLEAR keeps the VMCS contents).
        let cpu = crate::arch::x86_64::percpu::index();
        let moved = self.host_cpu != cpu;
        if moved {
            self.write_host_state().map_err(vm_fail)?;
            self.host_cpu = cpu;
        }
        if let Some(tag) = &mut self.vpid {
            let single = self.controls.negotiated.invvpid_single_context;
            tag.before_use(cpu, single);
            // Translations this CPU cached for the VPID on an earlier visit
            // may be stale (the guest flushed them elsewhere), and a new
            // start state owes nothing to the old ones (as KVM does on a
            // move).
            if moved || self.pending_start.is_some() {
                tag.flush(single);
            }
        }
        if let Some(entry) = self.pending_start.take() {
            self.write_guest_state(entry).map_err(vm_fail)?;
            self.launched = false;
            // A (re)started vCPU's CR2 is 0, as after INIT.
            self.cr2 = 0;
        }
        restore_fpu(&mut self.xsave, self.xcr0);
        write_debug_registers(&self.debug);
        write_cr2(self.cr2);
        for (m, value) in SOFTWARE_SWITCHED_MSRS.iter().zip(self.msrs) {
            // SAFETY: these MSRs hold only guest-visible state (syscall
            // targets, swapgs base) that the hypervisor never uses.
            unsafe { msr::write_raw(*m, value) };
        }
        Ok(())
    }

    /// VMCLEARs the VMCS after it was set up on this CPU, so any CPU can
    /// load it; the FPU state stays the reset image.
    pub fn release(&mut self) {
        // SAFETY: our VMCS, current on this CPU.
        let _ = unsafe { instr::vmclear(self.vmcs) };
        self.launched = false;
    }

    /// Saves this vCPU's FPU state and MSRs and VMCLEARs its VMCS, so
    /// another vCPU can run here or this one elsewhere.
    pub fn unload(&mut self) {
        save_fpu(&mut self.xsave, self.xcr0);
        self.debug = read_debug_registers();
        self.cr2 = x86_64::registers::control::Cr2::read_raw();
        for (m, slot) in SOFTWARE_SWITCHED_MSRS.iter().zip(self.msrs.iter_mut()) {
            *slot = msr::read_raw(*m);
        }
        // SAFETY: our VMCS, current on this CPU.
        let _ = unsafe { instr::vmclear(self.vmcs) };
        self.launched = false;
    }

    /// Whether the preemption timer keeps counting across exits (the "save
    /// VMX-preemption timer value" exit control): then a slice is set once,
    /// else before every entry.
    pub fn slice_survives_exits(&self) -> bool {
        self.controls.negotiated.preemption_timer_saved
    }

    /// Starts a time slice of `slice_tsc` TSC ticks (VMX preemption timer).
    pub fn start_slice(&mut self, slice_tsc: u64) {
        if let Some(shift) = self.controls.negotiated.preemption_timer {
            let value = (slice_tsc >> shift).min(u64::from(u32::MAX)) as u32;
            let _ = vmcs().write32(guest::PREEMPTION_TIMER_VALUE, value.max(1));
        }
    }

    /// Runs the guest until an exit the arch-neutral layer must see. Exits
    /// the VT-x layer answers itself (CPUID, MSRs, CRs, …) loop here without
    /// leaving this function: that is the hot path.
    pub fn run(&mut self) -> VcpuExit {
        loop {
            // SAFETY: the VMCS is current and complete; `regs` outlives the
            // call; entry.S saves and restores the host's registers.
            let result = unsafe { vmx_enter(&raw mut self.regs, u64::from(self.launched)) };
            if result != 0 {
                let error = instr::vmread(exit::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0);
                return VcpuExit::Error(vm_fail(if result == 1 {
                    basalt_vmx::error::VmFail::Invalid
                } else {
                    basalt_vmx::error::VmFail::Valid(
                        basalt_vmx::error::VmInstructionError::from_raw(error as u32),
                    )
                }));
            }
            self.launched = true;
            if let Some(exit) = self.handle_exit() {
                return exit;
            }
        }
    }

    /// Skips an instruction of known length.
    #[inline(always)]
    fn advance_by(&self, len: u64) {
        let rip = instr::vmread_fast(guest::RIP.encoding());
        // SAFETY: moving the guest's RIP past an instruction Basalt emulated.
        unsafe { instr::vmwrite_fast(guest::RIP.encoding(), rip.wrapping_add(len)) };
    }

    /// Moves RIP past the exiting instruction. Blocking by STI or MOV SS
    /// covers only the instruction after them, which is now done: it is
    /// cleared, or `sti; hlt` would keep an interrupt out forever (SDM Vol.
    /// 3C 25.4.2, "Guest Non-Register State").
    fn advance(&self) {
        // Hot path (every emulated port access and hypercall): unchecked
        // VMREAD/VMWRITE of fields that always exist in the current VMCS.
        let len = instr::vmread_fast(exit::INSTRUCTION_LENGTH.encoding());
        self.advance_past(len);
    }

    /// Moves RIP past an instruction of `len` bytes and clears STI/MOV-SS
    /// blocking (see [`Self::advance`]).
    #[inline(always)]
    fn advance_past(&self, len: u64) {
        self.advance_by(len);
        let blocking = instr::vmread_fast(guest::INTERRUPTIBILITY_STATE.encoding());
        if blocking & 0b11 != 0 {
            // SAFETY: clearing the STI/MOV-SS blocking bits of the current
            // VMCS's interruptibility state, a valid value for any guest.
            unsafe {
                instr::vmwrite_fast(guest::INTERRUPTIBILITY_STATE.encoding(), blocking & !0b11)
            };
        }
    }

    /// Injects `event` at the next VM entry (see [`Event`]: an interrupt or
    /// NMI the guest cannot take now waits for a window exit instead).
    /// Returns whether it was injected.
    #[inline]
    pub fn inject(&mut self, event: Event) -> bool {
        match event {
            Event::External(vector) => self.inject_external(vector),
            Event::Nmi => self.inject_nmi(),
            Event::Exception { vector, error_code } => {
                self.inject_exception(vector, error_code);
                true
            }
            Event::Software(kind, vector, length) => {
                // SoftKind's values are VT-x's interruption types 4-6.
                let kind = basalt_vmx::exit::InterruptionType::from_raw(kind as u32);
                let event = basalt_vmx::exit::EventInjection::software(kind, vector, length.into());
                let _ = event.write_to(&mut vmcs());
                true
            }
        }
    }

    /// Injects external interrupt `vector` at the next VM entry if the guest
    /// can take it now (RFLAGS.IF set, no STI or MOV-SS blocking, no event
    /// already being injected); otherwise asks for an interrupt-window exit
    /// (SDM Vol. 3C 25.6.5) so the caller can try again as soon as it can.
    /// Returns whether the interrupt was injected.
    fn inject_external(&mut self, vector: u8) -> bool {
        let v = vmcs();
        let rflags = v.read_nat(guest::RFLAGS).unwrap_or(0);
        let blocking = v.read32(guest::INTERRUPTIBILITY_STATE).unwrap_or(0) & 0b11;
        let event = basalt_vmx::exit::EventInjection::external_interrupt(vector);
        inject_or_open_window(
            rflags & (1 << 9) != 0 && blocking == 0,
            event.info,
            PrimaryControls::INTERRUPT_WINDOW_EXITING,
        )
    }

    /// Injects an NMI at the next VM entry if the guest can take one now (no
    /// blocking by NMI, STI or MOV SS, no event already being injected; STI
    /// blocking counts because some processors refuse an NMI injected under
    /// it, SDM Vol. 3C 26.3.1.5). Otherwise, with virtual NMIs, asks for an
    /// NMI-window exit (SDM Vol. 3C 25.6.2), which comes at the first
    /// instruction boundary after the guest's IRET ends its NMI handler;
    /// without them the NMI waits for the vCPU's next exit. Returns whether
    /// the NMI was injected.
    fn inject_nmi(&mut self) -> bool {
        const BLOCKING: u32 = (1 << 0) | (1 << 1) | (1 << 3);
        let blocking = vmcs().read32(guest::INTERRUPTIBILITY_STATE).unwrap_or(0) & BLOCKING;
        let window = if self.controls.negotiated.nmi_window {
            PrimaryControls::NMI_WINDOW_EXITING
        } else {
            PrimaryControls::empty()
        };
        inject_or_open_window(
            blocking == 0,
            basalt_vmx::exit::EventInjection::nmi().info,
            window,
        )
    }

    /// Whether the guest had interrupts enabled (RFLAGS.IF) at its last exit.
    pub fn interrupts_enabled(&self) -> bool {
        vmcs().read_nat(guest::RFLAGS).unwrap_or(0) & (1 << 9) != 0
    }

    /// Injects a hardware exception at the next entry.
    /// In real mode (CR0.PE clear) no error code is pushed, and VM entry
    /// refuses one (SDM Vol. 3C 27.2.1.3): it is dropped.
    fn inject_exception(&self, vector: u8, error_code: Option<u32>) {
        let mut v = vmcs();
        let protected = v.read_nat(guest::CR0).unwrap_or(0) & CR0_PE != 0;
        let error_code = error_code.filter(|_| protected);
        let info = InterruptionInfo::hardware_exception(vector, error_code);
        let _ = v.write32(ctrl::ENTRY_INTERRUPTION_INFO, info);
        if let Some(code) = error_code {
            let _ = v.write32(ctrl::ENTRY_EXCEPTION_ERROR_CODE, code);
        }
    }

    fn inject_gp(&self) {
        self.inject_exception(13, Some(0));
    }

    fn inject_ud(&self) {
        self.inject_exception(6, None);
    }

    /// Whether the guest runs in 64-bit mode (IA-32e mode and CS.L).
    pub fn long_mode(&self) -> bool {
        let v = vmcs();
        let efer = v.read64(guest::IA32_EFER).unwrap_or(0);
        let cs_ar = v.read32(guest::CS_ACCESS_RIGHTS).unwrap_or(0);
        efer & (1 << 10) != 0 && cs_ar & (1 << 13) != 0
    }

    /// The guest's current privilege level (SS.DPL).
    pub fn cpl(&self) -> u8 {
        ((vmcs().read32(guest::SS_ACCESS_RIGHTS).unwrap_or(0) >> 5) & 3) as u8
    }

    /// The guest's RIP.
    pub fn rip(&self) -> u64 {
        vmcs().read_nat(guest::RIP).unwrap_or(0)
    }

    /// The guest's CR0, CR3 and CR4 (guest view for CR0/CR4 where shadowed).
    pub fn paging_state(&self) -> basalt_x86emul::PagingMode {
        let v = vmcs();
        basalt_x86emul::PagingMode {
            cr0: v.read_nat(guest::CR0).unwrap_or(0),
            cr3: v.read_nat(guest::CR3).unwrap_or(0),
            cr4: v.read_nat(guest::CR4).unwrap_or(0),
            efer: v.read64(guest::IA32_EFER).unwrap_or(0),
        }
    }

    /// Skips the instruction that caused the current exit (after the
    /// arch-neutral layer emulated it).
    pub fn skip_instruction(&self) {
        self.advance();
    }

    /// Moves RIP past an emulated instruction of `len` bytes whose length
    /// the exit did not report (an EPT violation), clearing STI/MOV-SS
    /// blocking as [`Self::skip_instruction`] does.
    pub fn skip_emulated(&self, len: u64) {
        self.advance_past(len);
    }

    /// Sets the guest's CR2 (before injecting a page fault). The vCPU is
    /// loaded, so this is the register itself; `unload` saves it.
    pub fn set_cr2(&mut self, value: u64) {
        self.cr2 = value;
        write_cr2(value);
    }

    /// The hidden part of a guest segment register, for the instruction
    /// emulator.
    pub fn segment(&self, segment: basalt_x86emul::Segment) -> basalt_x86emul::SegmentState {
        // `basalt_x86emul::Segment` is in the SDM's order (ES = 0 ... GS = 5), as SEGMENTS is.
        let s = &guest::SEGMENTS[segment as usize];
        let v = vmcs();
        let ar = v
            .read32(s.access_rights)
            .unwrap_or(AccessRights::UNUSABLE_BIT);
        basalt_x86emul::SegmentState {
            base: v.read_nat(s.base).unwrap_or(0),
            limit: v.read32(s.limit).unwrap_or(0),
            // SDM Vol. 3C 24.4.1: bits 15:0 are the descriptor's attribute
            // bits as the emulator takes them; bit 16 is "unusable".
            attributes: ar as u16,
            usable: ar & AccessRights::UNUSABLE_BIT == 0,
        }
    }

    /// The guest's RFLAGS.
    pub fn rflags(&self) -> u64 {
        vmcs().read_nat(guest::RFLAGS).unwrap_or(0)
    }

    /// Sets the guest's RFLAGS (bit 1 always set).
    pub fn set_rflags(&self, value: u64) {
        let _ = vmcs().write_nat(guest::RFLAGS, value | 2);
    }

    /// The linear address of the guest's next instruction (CS base + RIP).
    pub fn rip_linear(&self) -> u64 {
        let v = vmcs();
        let base = if self.long_mode() {
            0
        } else {
            v.read_nat(guest::CS_BASE).unwrap_or(0)
        };
        base.wrapping_add(v.read_nat(guest::RIP).unwrap_or(0))
    }

    /// The code size of the guest's current mode: 64 (64-bit mode), 32
    /// (CS.D set) or 16.
    pub fn code_bits(&self) -> u8 {
        let cs_ar = vmcs().read32(guest::CS_ACCESS_RIGHTS).unwrap_or(0);
        if self.long_mode() {
            64
        } else if cs_ar & (1 << 14) != 0 {
            32
        } else {
            16
        }
    }

    /// Prints the VMCS (for crash reports).
    pub fn dump(&self, out: &mut impl core::fmt::Write) {
        let _ = basalt_vmx::dump::dump(&vmcs(), out);
    }

    /// Handles an exit; `None` when the guest can go on.
    #[inline(always)]
    fn handle_exit(&mut self) -> Option<VcpuExit> {
        let raw = instr::vmread_fast(exit::EXIT_REASON.encoding()) as u32;
        // Hot path first: CPUID (basic reason 10) is the most frequent exit
        // of ordinary guests.
        if raw == 10 {
            self.exits.count(10);
            self.cpuid();
            self.advance_by(2);
            return None;
        }
        self.handle_other_exit(raw)
    }

    /// Every exit but the hot path.
    fn handle_other_exit(&mut self, raw: u32) -> Option<VcpuExit> {
        let v = vmcs();
        let field = ExitReasonField::from_raw(raw);
        let reason = field.reason;
        self.exits.count(reason.number());
        if field.entry_failure {
            return Some(VcpuExit::Error(exit_error("VM entry failed", reason)));
        }
        let qual = || vmcs().read_nat(exit::EXIT_QUALIFICATION).unwrap_or(0);
        match reason {
            ExitReason::ExternalInterrupt => {
                let info = v.read32(exit::INTERRUPTION_INFO).unwrap_or(0);
                crate::fault::external_interrupt((info & 0xff) as u8);
                Some(VcpuExit::Interrupted)
            }
            ExitReason::PreemptionTimer => Some(VcpuExit::Preempted),
            // CPUID (10) never gets here: `handle_exit` answers it.
            ExitReason::Rdmsr => {
                let msr_no = self.regs.rcx as u32;
                if crate::vcpu::is_platform_msr(msr_no) {
                    return Some(VcpuExit::RdMsr { msr: msr_no });
                }
                match crate::vcpu::read_msr(msr_no) {
                    Some(value) => {
                        self.regs.rax = value & 0xffff_ffff;
                        self.regs.rdx = value >> 32;
                        self.advance_by(2);
                    }
                    None => self.inject_gp(),
                }
                None
            }
            ExitReason::Wrmsr => {
                let msr_no = self.regs.rcx as u32;
                let value = (self.regs.rdx << 32) | (self.regs.rax & 0xffff_ffff);
                if crate::vcpu::is_platform_msr(msr_no) {
                    return Some(VcpuExit::WrMsr { msr: msr_no, value });
                }
                if crate::vcpu::write_msr(msr_no, value) {
                    self.advance_by(2);
                } else {
                    self.inject_gp();
                }
                None
            }
            ExitReason::CrAccess => {
                self.cr_access(CrAccess::decode(qual()));
                None
            }
            ExitReason::Xsetbv => {
                self.xsetbv();
                None
            }
            ExitReason::Invd | ExitReason::Wbinvd => {
                // The guest's memory is write-back and coherent; nothing of
                // the host's caches is the guest's business.
                self.advance();
                None
            }
            ExitReason::Vmclear
            | ExitReason::Vmlaunch
            | ExitReason::Vmptrld
            | ExitReason::Vmptrst
            | ExitReason::Vmread
            | ExitReason::Vmresume
            | ExitReason::Vmwrite
            | ExitReason::Vmxoff
            | ExitReason::Vmxon
            | ExitReason::Invept
            | ExitReason::Invvpid
            | ExitReason::Vmfunc
            | ExitReason::Getsec
            | ExitReason::Mwait
            | ExitReason::Monitor => {
                // VMX (and MONITOR/MWAIT) is hidden from guests.
                self.inject_ud();
                None
            }
            ExitReason::Vmcall => Some(VcpuExit::Hypercall),
            ExitReason::IoInstruction => {
                let Some(io) = IoAccess::decode(qual()) else {
                    return Some(VcpuExit::Error(GuestError::Unsupported(
                        "an I/O access of undefined size",
                    )));
                };
                Some(VcpuExit::port_io(
                    io.port,
                    io.size,
                    io.is_in,
                    io.string,
                    io.rep,
                    self.regs.rax,
                ))
            }
            ExitReason::Hlt => {
                self.advance();
                Some(VcpuExit::Halt)
            }
            ExitReason::InterruptWindow | ExitReason::NmiWindow => {
                // The window the exit reports is open: stop asking for it;
                // the waiting event is injected before the next entry.
                let window = if reason == ExitReason::NmiWindow {
                    PrimaryControls::NMI_WINDOW_EXITING
                } else {
                    PrimaryControls::INTERRUPT_WINDOW_EXITING
                };
                let mut v = vmcs();
                let primary = v.read32(ctrl::PRIMARY_PROCESSOR_BASED).unwrap_or(0);
                let _ = v.write32(ctrl::PRIMARY_PROCESSOR_BASED, primary & !window.bits());
                Some(VcpuExit::InterruptWindow)
            }
            ExitReason::ExceptionOrNmi => {
                // An NMI sent to this CPU (NMI exiting, SDM Vol. 3C 25.2),
                // or with `hvm_fep` a #UD (the only bit of the bitmap).
                let info = InterruptionInfo::decode(v.read32(exit::INTERRUPTION_INFO).unwrap_or(0));
                if info.kind == basalt_vmx::exit::InterruptionType::Nmi {
                    crate::fault::host_nmi();
                    return Some(VcpuExit::Interrupted);
                }
                if info.vector == 6 {
                    return Some(VcpuExit::InvalidOpcode);
                }
                Some(VcpuExit::Error(exit_error("unhandled VM exit", reason)))
            }
            ExitReason::TripleFault => Some(VcpuExit::Error(GuestError::TripleFault)),
            ExitReason::Init => Some(VcpuExit::Error(GuestError::Init)),
            ExitReason::EptViolation => {
                let gpa = v.read64(exit::GUEST_PHYSICAL_ADDRESS).unwrap_or(0);
                let ev = basalt_vmx::exit::EptViolation::decode(qual());
                // An access made while delivering an event (the guest's
                // IDT, GDT or stack on a device page) is no instruction to
                // emulate: the guest is stopped, naming the event.
                let vectoring =
                    InterruptionInfo::decode(v.read32(exit::IDT_VECTORING_INFO).unwrap_or(0));
                if vectoring.valid {
                    return Some(VcpuExit::Error(GuestError::DeliveryFault {
                        gpa,
                        vector: vectoring.vector,
                    }));
                }
                if !ev.fetch && crate::vcpu::is_device_page(gpa) {
                    return Some(VcpuExit::Mmio { gpa });
                }
                Some(VcpuExit::Error(GuestError::OutsideMemory {
                    gpa,
                    write: ev.write,
                    fetch: ev.fetch,
                }))
            }
            ExitReason::EptMisconfig => {
                let gpa = v.read64(exit::GUEST_PHYSICAL_ADDRESS).unwrap_or(0);
                Some(VcpuExit::Error(GuestError::EptMisconfig { gpa }))
            }
            _ => Some(VcpuExit::Error(exit_error("unhandled VM exit", reason))),
        }
    }

    /// CPUID with the guest's RAX and RCX, by the domain's CPUID policy.
    #[inline(always)]
    pub fn cpuid(&mut self) {
        let osxsave = || Self::guest_cr4() & cr4::OSXSAVE != 0;
        crate::vcpu::cpuid(&mut self.regs, &self.cpuid, self.xcr0, osxsave);
    }

    /// CR0 as the guest sees it: its own bits from the VMCS, the bits
    /// Basalt owns from the read shadow.
    fn guest_cr0(&self) -> u64 {
        let v = vmcs();
        let mask = v.read_nat(ctrl::CR0_GUEST_HOST_MASK).unwrap_or(0);
        (v.read_nat(guest::CR0).unwrap_or(0) & !mask)
            | (v.read_nat(ctrl::CR0_READ_SHADOW).unwrap_or(0) & mask)
    }

    /// CR4 as the guest sees it (see [`Self::guest_cr0`]).
    fn guest_cr4() -> u64 {
        let v = vmcs();
        let mask = v.read_nat(ctrl::CR4_GUEST_HOST_MASK).unwrap_or(0);
        (v.read_nat(guest::CR4).unwrap_or(0) & !mask)
            | (v.read_nat(ctrl::CR4_READ_SHADOW).unwrap_or(0) & mask)
    }

    /// The guest's control-register state, for the architectural checks.
    fn cr_state(&self) -> CrState {
        let v = vmcs();
        CrState {
            cr0: self.guest_cr0(),
            cr3: v.read_nat(guest::CR3).unwrap_or(0),
            cr4: Self::guest_cr4(),
            efer: v.read64(guest::IA32_EFER).unwrap_or(0),
            cs_l: v.read32(guest::CS_ACCESS_RIGHTS).unwrap_or(0) & (1 << 13) != 0,
        }
    }

    /// A control-register exit: MOV to or from CR8 (the virtual TPR), MOV to
    /// CR4, and the writes to CR0 (MOV, CLTS, LMSW), checked with the guest
    /// CPU model's rules (`basalt_cpu::cr`); anything else raises #GP.
    fn cr_access(&mut self, access: CrAccess) {
        let mut v = vmcs();
        let gpr = self.regs.get(access.gpr);
        if access.cr == 8 {
            match access.access {
                CrAccessType::MovToCr => match basalt_cpu::cr::CrModel::mov_to_cr8(gpr) {
                    Ok(tpr) => self.tpr = u64::from(tpr),
                    Err(_) => return self.inject_gp(),
                },
                CrAccessType::MovFromCr => self.regs.set(access.gpr, self.tpr),
                _ => return self.inject_gp(),
            }
            return self.advance();
        }
        let state = self.cr_state();
        let shadow = v.read_nat(ctrl::CR0_READ_SHADOW).unwrap_or(0);
        let cr = &self.guest_cpu.cr;
        let value = match (access.cr, access.access) {
            (0, CrAccessType::MovToCr) => cr.mov_to_cr0(&state, gpr),
            (0, CrAccessType::Clts) => Ok(shadow & !(1 << 3)),
            // LMSW sets PE, MP, EM, TS; it cannot clear PE.
            (0, CrAccessType::Lmsw) => {
                Ok((shadow & !0xe) | (u64::from(access.lmsw_source) & 0xf) | (shadow & CR0_PE))
            }
            (4, CrAccessType::MovToCr) => {
                let Ok(value) = cr.mov_to_cr4(&state, gpr) else {
                    return self.inject_gp();
                };
                let _ = v.write_nat(ctrl::CR4_READ_SHADOW, value);
                let _ = v.write_nat(guest::CR4, self.controls.fix_guest_cr4(value));
                return self.advance();
            }
            _ => return self.inject_gp(),
        };
        let Ok(value) = value else {
            return self.inject_gp();
        };
        let _ = v.write_nat(ctrl::CR0_READ_SHADOW, value);
        let _ = v.write_nat(guest::CR0, self.controls.fix_guest_cr0(value));
        if access.access == CrAccessType::MovToCr {
            self.update_long_mode(state.cr0, value);
        }
        self.advance();
    }

    /// Entering or leaving long mode with paging: VM-entry control
    /// "IA-32e mode guest" must follow EFER.LMA (SDM "VM Entries").
    fn update_long_mode(&mut self, old_cr0: u64, new_cr0: u64) {
        let mut v = vmcs();
        let efer = v.read64(guest::IA32_EFER).unwrap_or(0);
        let lme = efer & (1 << 8) != 0;
        let entry = v.read32(ctrl::ENTRY_CONTROLS).unwrap_or(0);
        let ia32e = EntryControls::IA32E_MODE_GUEST.bits();
        if lme && new_cr0 & CR0_PG != 0 && old_cr0 & CR0_PG == 0 {
            let _ = v.write64(guest::IA32_EFER, efer | (1 << 10));
            let _ = v.write32(ctrl::ENTRY_CONTROLS, entry | ia32e);
        } else if new_cr0 & CR0_PG == 0 && old_cr0 & CR0_PG != 0 {
            let _ = v.write64(guest::IA32_EFER, efer & !(1 << 10));
            let _ = v.write32(ctrl::ENTRY_CONTROLS, entry & !ia32e);
        }
    }

    /// XSETBV, checked by the XSAVE policy ([`guest_xsetbv`]).
    fn xsetbv(&mut self) {
        let osxsave = Self::guest_cr4() & cr4::OSXSAVE != 0;
        match guest_xsetbv(&self.regs, self.cpl(), osxsave) {
            Ok(value) => {
                self.xcr0 = value;
                self.advance();
            }
            Err(XsetbvFault::Ud) => self.inject_ud(),
            Err(XsetbvFault::Gp) => self.inject_gp(),
        }
    }
}
