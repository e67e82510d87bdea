//! An SVM virtual CPU (docs/amd-v.md): its VMCB, permission maps and
//! software-switched state, and the exits the SVM layer answers itself.
//!
//! Exits that need the domain or the scheduler come back to the
//! arch-neutral layer as a [`VcpuExit`], as VT-x's do; CPUID, MSRs the
//! guest's CPU model answers, CR4 and EFER writes, XSETBV, cache flushes,
//! SVM instructions, the virtual-interrupt window and host interrupts are
//! handled here. Without NRIPS the length of an intercepted instruction
//! comes from its bytes ([`basalt_svm::insn`]), fetched through the guest's
//! page tables and the nested page table.

use super::{NptMemory, owned_frames_mut};
use crate::arch::x86_64::gprs::GuestRegs;
use crate::arch::x86_64::switch::{
    XsaveArea, guest_xsetbv, read_debug_registers, restore_fpu, save_fpu, write_debug_registers,
    xsave_policy, xsetbv,
};
use crate::arch::x86_64::{apic, idt, msr, percpu};
use crate::vcpu::{Event, GuestError, StartState, VcpuExit, backend_error};
use basalt_cpu::cr::{CrState, cr4};
use basalt_cpu::xstate::XsetbvFault;
use basalt_frames::Owner;
use basalt_paging::TableMemory;
use basalt_svm::asid::{Asid, TlbFlush};
use basalt_svm::caps::{SvmCaps, SvmFeatures};
use basalt_svm::exit::{ExitCode, IoioInfo, NpfInfo};
use basalt_svm::insn::{self, CodeSize, Insn};
use basalt_svm::maps::{IOPM_SIZE, Iopm, MSRPM_SIZE, Msrpm};
use basalt_svm::vmcb::{
    Intercept1, Intercept2, Segment, TLB_FLUSH_ALL, TLB_FLUSH_ASID, TLB_NO_FLUSH, Vmcb, control,
    save,
};
use basalt_x86emul::{GuestPhys, PagingMode};

/// EFER.SVME: set in every guest's VMCB (VMRUN refuses a guest without
/// it), never shown to the guest.
const EFER_SVME: u64 = super::EFER_SVME;
const EFER_LMA: u64 = 1 << 10;
const CR0_PE: u64 = 1 << 0;
const RFLAGS_IF: u64 = 1 << 9;
/// VINTR fields (APM Vol. 2 appendix B, offset 60h).
const V_IRQ: u64 = 1 << 8;
const V_IGN_TPR: u64 = 1 << 20;
const V_INTR_MASKING: u64 = 1 << 24;
/// EVENTINJ/EXITINTINFO valid bit.
const EVENT_VALID: u64 = 1 << 31;
/// EVENTINJ/EXITINTINFO type (bits 10:8; 0: external interrupt).
const EVENT_TYPE: u64 = 7 << 8;
/// The exception intercept for #UD (VMCALL is emulated through it).
const UD: u8 = 6;
/// The CR intercept bits for writes to CR0, CR4 and CR8 (bits 31:16 are
/// writes): QEMU's TCG does not check CR0's reserved bits, NW without CD or
/// CR8's, and the processor would accept CR4 bits of features the guest's
/// CPU model hides, so Basalt checks them as on VT-x.
const CR_WRITES: u64 = (1 << 16) | (1 << (16 + 4)) | (1 << (16 + 8));
const CR0_PG: u64 = 1 << 31;
const EFER_LME: u64 = 1 << 8;
/// The power-on PAT.
const PAT_RESET: u64 = 0x0007_0406_0007_0406;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_PAT: u32 = 0x277;
const MSR_TSC_AUX: u32 = 0xc000_0103;
/// MSRs a guest reads and writes directly: the VMCB (through VMLOAD and
/// VMSAVE) holds FS/GS base, KernelGsBase, the syscall and sysenter MSRs;
/// TSC_AUX is switched in software when vCPUs share a CPU.
const PASSTHROUGH_MSRS: [u32; 11] = [
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    MSR_TSC_AUX,
];
/// IA32_TSC: reads are intercepted and answered with the guest's TSC
/// (QEMU's TCG reads 0 there instead of applying TSC_OFFSET).
const MSR_TSC: u32 = 0x10;

/// A view of a VMCB page. Never kept across a VMRUN (the processor writes
/// the page then).
fn vmcb(pa: u64) -> Vmcb<'static> {
    Vmcb::new(owned_frames_mut::<4096>(pa))
}

fn segment(selector: u16, attrib: u16, limit: u32, base: u64) -> Segment {
    Segment {
        selector,
        attrib,
        limit,
        base,
    }
}

/// Guest-physical memory through a nested page table (4-level, Basalt's
/// own tables: only the domain's RAM is mapped, so a read of anything else
/// fails).
struct NptPhys(u64);

impl NptPhys {
    /// The host-physical address of guest-physical `gpa`.
    fn translate(&self, gpa: u64) -> Option<u64> {
        const ADDR: u64 = 0x000f_ffff_ffff_f000;
        if gpa >> 48 != 0 {
            return None;
        }
        let mut table = self.0;
        for level in (1..=4u32).rev() {
            let shift = 12 + 9 * (level - 1);
            let entry = NptMemory.read_entry(table, ((gpa >> shift) & 0x1ff) as usize);
            if entry & 1 == 0 {
                return None;
            }
            if level < 4 && (level == 1 || entry & (1 << 7) != 0) {
                let size = 1u64 << shift;
                return Some((entry & ADDR & !(size - 1)) | (gpa & (size - 1)));
            }
            table = entry & ADDR;
        }
        None
    }
}

impl GuestPhys for NptPhys {
    fn read_phys(&self, gpa: u64, out: &mut [u8]) -> bool {
        let mut done = 0;
        while done < out.len() {
            let at = gpa.wrapping_add(done as u64);
            let n = (4096 - (at & 0xfff) as usize).min(out.len() - done);
            let Some(hpa) = self.translate(at) else {
                return false;
            };
            let page = owned_frames_mut::<4096>(hpa & !0xfff);
            let off = (hpa & 0xfff) as usize;
            out[done..done + n].copy_from_slice(&page[off..off + n]);
            done += n;
        }
        true
    }
}

/// An SVM vCPU.
pub struct SvmVcpu {
    vmcb: u64,
    iopm: u64,
    msrpm: u64,
    /// The guest's general registers other than RSP (in the VMCB); RAX is
    /// copied to and from the VMCB around each VMRUN.
    pub regs: GuestRegs,
    xsave: XsaveArea,
    xcr0: u64,
    /// DR0-DR3 (DR6 and DR7 are in the VMCB; the fifth slot is unused).
    debug: [u64; 5],
    tsc_aux: u64,
    cpuid: crate::vcpu::CpuidContext,
    guest_cpu: &'static basalt_cpu::cpuid::GuestCpu,
    pending_start: Option<StartState>,
    exits: alloc::sync::Arc<crate::stats::ExitCounts>,
    caps: SvmCaps,
    /// The CPU the vCPU last ran on (`usize::MAX`: none) and its ASID there.
    cpu: usize,
    asid: Option<Asid>,
    host_save_pa: u64,
    /// An injected NMI's handler has not returned yet (its IRET is
    /// intercepted).
    nmi_blocked: bool,
    /// The RIP of the intercepted IRET that ends the NMI handler: NMIs are
    /// unblocked once the guest is past it.
    iret_rip: Option<u64>,
    /// The next RIP of the instruction whose exit the arch-neutral layer
    /// handles (0: none).
    next_rip: u64,
    /// For crash reports: the previous exit code and the EVENTINJ of the
    /// last VMRUN (the processor clears it).
    last_exit: u64,
    last_inj: u64,
    /// QEMU's TCG only: the RIP where an interrupt waits out an interrupt
    /// shadow, and how often it waited there ([`SvmVcpu::inject_external`]).
    shadow_hold: (u64, u8),
    /// Intercepted instructions in a row whose bytes did not decode as the
    /// instruction the exit named (run again each time).
    undecoded: u32,
}

impl Drop for SvmVcpu {
    fn drop(&mut self) {
        crate::mm::free_frames(self.vmcb, 0, Owner::Domain);
        crate::mm::free_frames(self.iopm, 2, Owner::Domain);
        crate::mm::free_frames(self.msrpm, 1, Owner::Domain);
    }
}

impl core::fmt::Debug for SvmVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SvmVcpu")
            .field("vmcb", &self.vmcb)
            .field("cpu", &self.cpu)
            .field("asid", &self.asid)
            .finish()
    }
}

impl SvmVcpu {
    /// A vCPU of a domain whose nested page table is at `npt_root`,
    /// starting in `entry`.
    pub fn new(
        caps: SvmCaps,
        npt_root: u64,
        entry: StartState,
        cpuid: crate::vcpu::CpuidContext,
        tsc_offset: u64,
        exits: alloc::sync::Arc<crate::stats::ExitCounts>,
    ) -> Result<Self, GuestError> {
        let vmcb = crate::mm::alloc_zeroed_frame(Owner::Domain).ok_or(GuestError::OutOfMemory)?;
        let Some(iopm) = crate::mm::alloc_frames(2, Owner::Domain) else {
            crate::mm::free_frames(vmcb, 0, Owner::Domain);
            return Err(GuestError::OutOfMemory);
        };
        let Some(msrpm) = crate::mm::alloc_frames(1, Owner::Domain) else {
            crate::mm::free_frames(vmcb, 0, Owner::Domain);
            crate::mm::free_frames(iopm, 2, Owner::Domain);
            return Err(GuestError::OutOfMemory);
        };
        let mut this = Self {
            vmcb,
            iopm,
            msrpm,
            regs: GuestRegs::default(),
            xsave: XsaveArea::new(),
            xcr0: 1,
            debug: [0, 0, 0, 0, 0xffff_0ff0],
            tsc_aux: 0,
            cpuid,
            guest_cpu: crate::vcpu::guest_cpu(),
            pending_start: None,
            exits,
            caps,
            cpu: usize::MAX,
            asid: None,
            host_save_pa: 0,
            nmi_blocked: false,
            iret_rip: None,
            next_rip: 0,
            last_exit: 0,
            last_inj: 0,
            shadow_hold: (0, 0),
            undecoded: 0,
        };
        this.init_maps();
        this.init_controls(npt_root, tsc_offset);
        this.write_start(entry);
        Ok(this)
    }

    /// Clears `port`'s bit in the I/O permission map (APM Vol. 2 §15.10.1).
    pub fn allow_port(&mut self, port: u16) {
        Iopm(owned_frames_mut::<IOPM_SIZE>(self.iopm)).allow(port);
    }

    /// Every port intercepted; the MSRs of [`PASSTHROUGH_MSRS`] open, every
    /// other one intercepted.
    fn init_maps(&mut self) {
        Iopm::new(owned_frames_mut::<IOPM_SIZE>(self.iopm));
        let mut msrs = Msrpm::new(owned_frames_mut::<MSRPM_SIZE>(self.msrpm));
        for m in PASSTHROUGH_MSRS {
            let _ = msrs.allow_read(m);
            let _ = msrs.allow_write(m);
        }
    }

    /// The control area (APM Vol. 2 appendix B, table B-1).
    fn init_controls(&mut self, npt_root: u64, tsc_offset: u64) {
        let mut v = vmcb(self.vmcb);
        let i1 = Intercept1::INTR
            | Intercept1::NMI
            | Intercept1::SMI
            | Intercept1::INIT
            | Intercept1::CPUID
            | Intercept1::RSM
            | Intercept1::INVD
            | Intercept1::HLT
            | Intercept1::INVLPGA
            | Intercept1::IOIO_PROT
            | Intercept1::MSR_PROT
            | Intercept1::SHUTDOWN;
        let i2 = Intercept2::VMRUN
            | Intercept2::VMMCALL
            | Intercept2::VMLOAD
            | Intercept2::VMSAVE
            | Intercept2::STGI
            | Intercept2::CLGI
            | Intercept2::SKINIT
            | Intercept2::WBINVD
            | Intercept2::MONITOR
            | Intercept2::MWAIT
            | Intercept2::MWAIT_CONDITIONAL
            | Intercept2::XSETBV
            | Intercept2::RDPRU;
        v.write(control::INTERCEPT1, u64::from(i1.bits()));
        v.write(control::INTERCEPT2, u64::from(i2.bits()));
        v.write(control::CR_INTERCEPTS, CR_WRITES);
        v.write(control::EXCEPTION_INTERCEPTS, 1 << UD);
        v.write(control::IOPM_BASE, self.iopm);
        v.write(control::MSRPM_BASE, self.msrpm);
        // The domain's own TSC (docs/scheduler.md, "Guest time").
        v.write(control::TSC_OFFSET, tsc_offset);
        v.write(control::VINTR, V_INTR_MASKING);
        v.write(control::NP_ENABLE, 1);
        v.write(control::N_CR3, npt_root);
        v.write(control::CLEAN_BITS, 0);
    }

    /// The guest state of `entry` (APM Vol. 2 §15.5.1, table B-2) and the
    /// software state of a CPU after INIT.
    fn write_start(&mut self, entry: StartState) {
        let mut v = vmcb(self.vmcb);
        let s = entry.registers();
        let flat = |sel, attrib| segment(sel, attrib, u32::MAX, 0);
        let (tss, none) = (segment(0x20, 0x8b, 0x67, 0), segment(0, 0, 0, 0));
        let (cs, data, tr, gdtr, idtr) = match entry {
            // Flat 32-bit code (type 0xB, S, P, D, G) and data (0x3), a
            // busy 32-bit TSS.
            StartState::Pvh { .. } => (flat(0x10, 0xc9b), flat(0x18, 0xc93), tss, none, none),
            // As after RESET or INIT, at cs:ip; GDTR and IDTR with limit
            // 0xFFFF so interrupts go through the vector table at 0.
            StartState::RealMode { cs, .. } => {
                let real = |sel: u16, attrib| segment(sel, attrib, 0xffff, u64::from(sel) << 4);
                let table = segment(0, 0, 0xffff, 0);
                let tr = segment(0, 0x8b, 0xffff, 0);
                (real(cs, 0x9b), real(0, 0x93), tr, table, table)
            }
            // 64-bit code (type 0xB, S, P, L, G), flat data, a busy 64-bit
            // TSS, the given GDT.
            StartState::Long64(s) => {
                let gdtr = segment(0, 0, u32::from(s.gdt_limit), s.gdt_base);
                (flat(0x10, 0xa9b), flat(0x18, 0xc93), tss, gdtr, none)
            }
        };
        v.set_segment(save::CS, cs);
        for seg in [save::DS, save::ES, save::SS, save::FS, save::GS] {
            v.set_segment(seg, data);
        }
        v.set_segment(save::TR, tr);
        v.set_segment(save::GDTR, gdtr);
        v.set_segment(save::IDTR, idtr);
        v.write(save::CR0, s.cr0);
        v.write(save::CR3, s.cr3);
        v.write(save::CR4, s.cr4);
        v.write(save::EFER, s.efer | EFER_SVME);
        v.write(save::RFLAGS, (s.rflags | 2) & !(1 << 17));
        v.write(save::RIP, s.rip);
        v.write(save::RSP, s.rsp);
        v.set_segment(save::LDTR, segment(0, 0x82, 0, 0));
        v.write(save::CPL, 0);
        v.write(save::DR6, 0xffff_0ff0);
        v.write(save::DR7, 0x400);
        v.write(save::CR2, 0);
        v.write(save::G_PAT, PAT_RESET);
        for f in [
            save::STAR,
            save::LSTAR,
            save::CSTAR,
            save::SFMASK,
            save::KERNEL_GS_BASE,
            save::SYSENTER_CS,
            save::SYSENTER_ESP,
            save::SYSENTER_EIP,
        ] {
            v.write(f, 0);
        }
        v.write(save::RAX, s.rax);
        // No event going in, no window asked for, no interrupt shadow.
        v.write(control::EVENTINJ, 0);
        v.write(control::INTERRUPT_SHADOW, 0);
        v.write(control::VINTR, V_INTR_MASKING);
        let i1 = Intercept1::from_bits_retain(v.read(control::INTERCEPT1) as u32)
            - Intercept1::VINTR
            - Intercept1::IRET;
        v.write(control::INTERCEPT1, u64::from(i1.bits()));
        self.regs = s.gprs();
        self.xsave.reset();
        self.xcr0 = 1;
        self.debug = [0, 0, 0, 0, 0xffff_0ff0];
        self.tsc_aux = 0;
        self.nmi_blocked = false;
        self.iret_rip = None;
        self.next_rip = 0;
    }

    /// Restarts the vCPU, loaded on this CPU, in `entry` (INIT and a
    /// start-up IPI while it was up); its translations are flushed.
    pub fn restart(&mut self, entry: StartState) -> Result<(), GuestError> {
        self.write_start(entry);
        self.request_flush(TlbFlush::ThisAsid);
        // The vCPU is loaded: its reset x87/SSE state and XCR0 go into the
        // processor now (XCR0 is compared with the vCPU's after every exit).
        restore_fpu(&mut self.xsave, self.xcr0);
        Ok(())
    }

    /// Sets the state the vCPU starts from at its next `load`.
    pub fn set_start(&mut self, entry: StartState) {
        self.pending_start = Some(entry);
    }

    fn request_flush(&mut self, flush: TlbFlush) {
        let value = match flush {
            TlbFlush::None => return,
            TlbFlush::ThisAsid if self.caps.features.contains(SvmFeatures::FLUSH_BY_ASID) => {
                TLB_FLUSH_ASID
            }
            TlbFlush::ThisAsid | TlbFlush::All => TLB_FLUSH_ALL,
        };
        let mut v = vmcb(self.vmcb);
        let current = v.read(control::TLB_CONTROL) as u8;
        if current != TLB_FLUSH_ALL {
            v.write(control::TLB_CONTROL, u64::from(value));
        }
    }

    /// Makes the vCPU ready to run on this CPU: an ASID of the CPU's
    /// current generation (a new one when it moved: the TLB here may hold
    /// stale translations of its old one), the host-save area, the
    /// extended state, DR0-DR3 and TSC_AUX.
    pub fn load(&mut self) -> Result<(), GuestError> {
        let cpu = percpu::index();
        let Some(slot) = super::this_cpu(cpu) else {
            return Err(backend_error(
                "SVM is off on this CPU",
                None,
                "EFER.SVME was never set here (the CPU failed SVM bring-up)",
            ));
        };
        let moved = self.cpu != cpu;
        let (asid, flush, host_save_pa) = {
            let mut c = slot.lock();
            let current = if moved { None } else { self.asid };
            let (asid, flush) = c.asids.assign(current);
            (asid, flush, c.host_save_pa)
        };
        self.cpu = cpu;
        self.asid = Some(asid);
        self.host_save_pa = host_save_pa;
        vmcb(self.vmcb).write(control::ASID, u64::from(asid.asid));
        self.request_flush(flush);
        if let Some(entry) = self.pending_start.take() {
            self.write_start(entry);
            self.request_flush(TlbFlush::ThisAsid);
        }
        restore_fpu(&mut self.xsave, self.xcr0);
        write_debug_registers(&self.debug);
        // SAFETY: TSC_AUX only holds what RDTSCP/RDPID return; Basalt does
        // not read it.
        unsafe { msr::write_raw(MSR_TSC_AUX, self.tsc_aux) };
        Ok(())
    }

    /// Saves what the VMCB does not hold, so another vCPU can run here or
    /// this one elsewhere.
    pub fn unload(&mut self) {
        save_fpu(&mut self.xsave, self.xcr0);
        self.debug = read_debug_registers();
        self.tsc_aux = msr::read_raw(MSR_TSC_AUX);
    }

    /// The host APIC timer keeps counting across exits: a slice is set once.
    pub fn slice_survives_exits(&self) -> bool {
        true
    }

    /// Ends guest execution within `ticks` TSC ticks: SVM has no
    /// preemption timer, so the host's one-shot APIC timer is armed (unless
    /// it fires earlier anyway) and its interrupt causes an INTR exit.
    pub fn start_slice(&mut self, ticks: u64) {
        let now = crate::arch::x86_64::cpu::rdtsc();
        crate::time::arm_by_tsc(now.saturating_add(ticks));
    }

    /// Runs the guest until an exit the arch-neutral layer must see.
    pub fn run(&mut self) -> VcpuExit {
        loop {
            if super::take_flush_all(self.cpu) {
                vmcb(self.vmcb).write(control::TLB_CONTROL, u64::from(TLB_FLUSH_ALL));
            }
            {
                let mut v = vmcb(self.vmcb);
                v.write(save::RAX, self.regs.rax);
                v.write(control::EXITINTINFO, 0);
                self.last_inj = v.read(control::EVENTINJ);
            }
            // An external interrupt (EVENTINJ type 0) under QEMU's TCG: a
            // self-IPI, pending at VMRUN, ends the guest with an INTR exit
            // right after the delivery, before its stale copy can be
            // delivered again (`super::qemu_tcg`).
            if self.last_inj & (EVENT_VALID | EVENT_TYPE) == EVENT_VALID && super::qemu_tcg() {
                apic::send_ipi(
                    apic::Delivery::Fixed(idt::vector::WAKE),
                    apic::Destination::Apic(apic::id()),
                );
            }
            crate::fault::in_guest(self.cpu, true);
            // SAFETY: this CPU is in SVM operation with its host-save VMCB at
            // `host_save_pa` (set by `load` on this CPU); the VMCB, its maps
            // and the NPT are this vCPU's and map only its domain's memory;
            // VMRUN, INTR and NMI are intercepted.
            unsafe { super::svm_run_raw(self.vmcb, self.host_save_pa, &mut self.regs) };
            crate::fault::in_guest(self.cpu, false);
            let mut v = vmcb(self.vmcb);
            self.regs.rax = v.read(save::RAX);
            v.write(control::TLB_CONTROL, u64::from(TLB_NO_FLUSH));
            if let Err(e) = self.check_xcr0() {
                return VcpuExit::Error(e);
            }
            self.after_exit(&mut v);
            if let Some(exit) = self.handle_exit() {
                return exit;
            }
            if self.undecoded >= 3 {
                return VcpuExit::Error(self.undecodable());
            }
        }
    }

    /// The same intercepted instruction failed to decode three times in a
    /// row: its bytes are not what the exit named, or Basalt's decoder does
    /// not know that form (without NRIPS nothing else gives its length).
    /// The domain stops, with the bytes in the log.
    #[cold]
    #[inline(never)]
    fn undecodable(&mut self) -> GuestError {
        self.undecoded = 0;
        let v = vmcb(self.vmcb);
        let (bytes, n) = self.fetch_at_rip().unwrap_or(([0; insn::MAX_LENGTH], 0));
        log::warn!(
            "svm: exit {:#x} at RIP {:#x}: the instruction there ({:02x?}) is not one the exit names, or a form Basalt cannot length without NRIPS",
            v.read(control::EXITCODE),
            v.read(save::RIP),
            &bytes[..n]
        );
        GuestError::Unsupported(
            "an intercepted instruction whose length Basalt cannot find without NRIPS",
        )
    }

    /// XSETBV runs without an exit on processors that do not intercept it
    /// (QEMU's TCG): the XCR0 the guest left must be one its CPU model
    /// allows before any XSAVE uses it, and becomes the vCPU's.
    #[inline]
    fn check_xcr0(&mut self) -> Result<(), GuestError> {
        let Some(policy) = xsave_policy() else {
            return Ok(());
        };
        let now = xgetbv0();
        if now == self.xcr0 {
            return Ok(());
        }
        let cpl = self.cpl();
        let osxsave = vmcb(self.vmcb).read(save::CR4) & cr4::OSXSAVE != 0;
        if policy.xsetbv(0, now, cpl, osxsave).is_ok() {
            self.xcr0 = now;
            return Ok(());
        }
        // SAFETY: the vCPU's previous XCR0 passed the policy.
        unsafe { xsetbv(self.xcr0) };
        Err(GuestError::Unsupported(
            "an XCR0 outside the guest's CPU model (set by an XSETBV this processor did not \
             intercept)",
        ))
    }

    /// After every exit: the event whose delivery the exit interrupted is
    /// injected again, and NMIs unblock once the guest got past the IRET
    /// of its NMI handler.
    #[inline]
    fn after_exit(&mut self, v: &mut Vmcb<'_>) {
        let info = v.read(control::EXITINTINFO);
        if info & EVENT_VALID != 0 {
            use basalt_svm::event::Event as SvmEvent;
            match SvmEvent::decode(info) {
                // INT n, INT3 and INTO restart: RIP still points at them
                // (without NRIPS nothing says where they end, so they run
                // again rather than being injected).
                Some(SvmEvent::Software(_) | SvmEvent::Exception { vector: 3 | 4, .. }) | None => {}
                // Under QEMU's TCG an interrupted interrupt comes back as an
                // exception: injected as what it was.
                Some(SvmEvent::External(vector)) => {
                    v.write(control::EVENTINJ, SvmEvent::External(vector).encode());
                }
                Some(_) => v.write(control::EVENTINJ, info),
            }
        }
        if let Some(at) = self.iret_rip
            && v.read(save::RIP) != at
        {
            self.iret_rip = None;
            self.nmi_blocked = false;
        }
    }

    /// Handles an exit; `None` when the guest can go on.
    #[inline(always)]
    fn handle_exit(&mut self) -> Option<VcpuExit> {
        let v = vmcb(self.vmcb);
        let raw = v.read(control::EXITCODE);
        let previous = core::mem::replace(&mut self.last_exit, raw);
        if ExitCode::from_raw(raw) == ExitCode::Invalid {
            self.last_exit = previous;
        }
        self.exits.count(basalt_svm::exit::counter(raw) as u16);
        let code = ExitCode::from_raw(raw);
        match code {
            ExitCode::Cpuid => {
                if self.skip(Insn::Cpuid) {
                    self.cpuid();
                }
                None
            }
            ExitCode::Intr | ExitCode::Nmi | ExitCode::Smi => {
                // Taken through the host IDT at STGI, in entry.S.
                Some(VcpuExit::Interrupted)
            }
            ExitCode::Vintr => {
                self.close_interrupt_window();
                Some(VcpuExit::InterruptWindow)
            }
            ExitCode::Ioio => {
                let info = v.read(control::EXITINFO1);
                self.next_rip = v.read(control::EXITINFO2);
                let Some(io) = IoioInfo::decode(info) else {
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
            ExitCode::Msr => {
                let write = v.read(control::EXITINFO1) & 1 != 0;
                self.msr(write)
            }
            ExitCode::Hlt => {
                if !self.skip(Insn::Hlt) {
                    return None;
                }
                Some(VcpuExit::Halt)
            }
            ExitCode::Vmmcall => self.hypercall(Insn::Vmmcall),
            ExitCode::Exception(UD) => {
                // VMCALL, Intel's hypercall, raises #UD on AMD: emulated so
                // guests built for either vendor run (as KVM does). Any
                // other #UD goes to the guest.
                let at_rip = self.decode_at_rip();
                if at_rip.is_some_and(|d| d.insn == Insn::Vmcall) {
                    return self.hypercall(Insn::Vmcall);
                }
                if crate::vcpu::FEP.load(core::sync::atomic::Ordering::Relaxed) {
                    return Some(VcpuExit::InvalidOpcode);
                }
                self.inject_exception(UD, None);
                None
            }
            ExitCode::CrWrite(0 | 4 | 8) => {
                self.cr_write();
                None
            }
            ExitCode::Xsetbv => {
                self.xsetbv();
                None
            }
            ExitCode::Invd | ExitCode::Wbinvd => {
                // The guest's memory is write-back and coherent; the host's
                // caches are not the guest's business. (QEMU's TCG reports
                // INVD with WBINVD's exit code: either instruction is taken.)
                if self.skip(Insn::Wbinvd) || self.skip(Insn::Invd) {
                    self.undecoded = 0;
                }
                None
            }
            ExitCode::Vmrun
            | ExitCode::Vmload
            | ExitCode::Vmsave
            | ExitCode::Stgi
            | ExitCode::Clgi
            | ExitCode::Skinit
            | ExitCode::Invlpga
            | ExitCode::Monitor
            | ExitCode::Mwait
            | ExitCode::Other(0x73 | 0x8c | 0x8e) => {
                // SVM (and RSM, MONITOR/MWAIT, RDPRU) is hidden from guests.
                self.inject_exception(UD, None);
                None
            }
            ExitCode::Iret => {
                // The NMI handler's IRET is about to run: NMIs unblock once
                // RIP moved past it (`after_exit`).
                self.iret_rip = Some(v.read(save::RIP));
                self.set_intercept(Intercept1::IRET, false);
                None
            }
            ExitCode::Shutdown => Some(VcpuExit::Error(GuestError::TripleFault)),
            ExitCode::Init => Some(VcpuExit::Error(GuestError::Init)),
            ExitCode::Npf => {
                let gpa = v.read(control::EXITINFO2);
                let npf = NpfInfo::decode(v.read(control::EXITINFO1));
                // An access made while delivering an event (its IDT, GDT or
                // stack on a device page or outside RAM) is no instruction
                // to emulate: the guest is stopped, naming the event.
                let delivering = v.read(control::EXITINTINFO);
                if delivering & EVENT_VALID != 0 {
                    return Some(VcpuExit::Error(GuestError::DeliveryFault {
                        gpa,
                        vector: delivering as u8,
                    }));
                }
                if npf.final_gpa && !npf.fetch && crate::vcpu::is_device_page(gpa) {
                    return Some(VcpuExit::Mmio { gpa });
                }
                Some(VcpuExit::Error(GuestError::OutsideMemory {
                    gpa,
                    write: npf.write,
                    fetch: npf.fetch,
                }))
            }
            ExitCode::Invalid if self.tcg_cr3_fault() => None,
            ExitCode::Invalid => Some(VcpuExit::Error(backend_error(
                "VMRUN refused the guest state",
                None,
                "VMEXIT_INVALID (a consistency check of APM Vol. 2 §15.5.1 failed)",
            ))),
            _ => Some(VcpuExit::Error(backend_error(
                "unhandled #VMEXIT",
                Some(raw as u32),
                basalt_svm::exit::counter_name(basalt_svm::exit::counter(raw)),
            ))),
        }
    }

    /// QEMU's TCG ends the guest with VMEXIT_INVALID, instead of raising
    /// #GP in it, when a guest's MOV to CR3 sets reserved bits (its
    /// `helper_write_crN`). The processor's answer is #GP(0): when the
    /// instruction at RIP is a MOV to CR3 that the guest CPU model refuses,
    /// that is injected and the guest goes on.
    #[cold]
    fn tcg_cr3_fault(&mut self) -> bool {
        let Some(d) = self.decode_at_rip() else {
            return false;
        };
        let Insn::MovToCr { cr: 3, gpr } = d.insn else {
            return false;
        };
        let value = self.reg(gpr);
        if self
            .guest_cpu
            .cr
            .mov_to_cr3(&self.cr_state(), value)
            .is_ok()
        {
            return false;
        }
        self.inject_exception(13, Some(0));
        true
    }

    /// A hypercall instruction at RIP: handed up with its next RIP known,
    /// or (bytes changed under it) run again.
    fn hypercall(&mut self, insn: Insn) -> Option<VcpuExit> {
        let next = self.next_rip_of(insn)?;
        self.next_rip = next;
        Some(VcpuExit::Hypercall)
    }

    fn msr(&mut self, write: bool) -> Option<VcpuExit> {
        let msr_no = self.regs.rcx as u32;
        let value = (self.regs.rdx << 32) | (self.regs.rax & 0xffff_ffff);
        let next = self.next_rip_of(if write { Insn::Wrmsr } else { Insn::Rdmsr })?;
        if crate::vcpu::is_platform_msr(msr_no) {
            self.next_rip = next;
            return Some(if write {
                VcpuExit::WrMsr { msr: msr_no, value }
            } else {
                VcpuExit::RdMsr { msr: msr_no }
            });
        }
        let mut v = vmcb(self.vmcb);
        let ok = match (msr_no, write) {
            (MSR_EFER, false) => {
                self.set_edx_eax(v.read(save::EFER) & !EFER_SVME);
                true
            }
            (MSR_EFER, true) => match self.guest_cpu.cr.wrmsr_efer(&self.cr_state(), value) {
                Ok(efer) => {
                    v.write(save::EFER, efer | EFER_SVME);
                    true
                }
                Err(_) => false,
            },
            (MSR_TSC, false) => {
                let tsc = crate::arch::x86_64::cpu::rdtsc();
                self.set_edx_eax(tsc.wrapping_add(v.read(control::TSC_OFFSET)));
                true
            }
            (MSR_PAT, false) => {
                self.set_edx_eax(v.read(save::G_PAT));
                true
            }
            (MSR_PAT, true) if pat_valid(value) => {
                v.write(save::G_PAT, value);
                true
            }
            (_, false) => match crate::vcpu::read_msr(msr_no) {
                Some(value) => {
                    self.set_edx_eax(value);
                    true
                }
                None => false,
            },
            (_, true) => crate::vcpu::write_msr(msr_no, value),
        };
        if ok {
            self.set_rip(next);
        } else {
            self.inject_exception(13, Some(0));
        }
        None
    }

    fn set_edx_eax(&mut self, value: u64) {
        self.regs.rax = value & 0xffff_ffff;
        self.regs.rdx = value >> 32;
    }

    /// CPUID with the guest's RAX and RCX, by the domain's CPUID policy.
    #[inline(always)]
    pub fn cpuid(&mut self) {
        let vmcb_pa = self.vmcb;
        let osxsave = || vmcb(vmcb_pa).read(save::CR4) & cr4::OSXSAVE != 0;
        crate::vcpu::cpuid(&mut self.regs, &self.cpuid, self.xcr0, osxsave);
    }

    /// The guest's control-register state, for the architectural checks.
    fn cr_state(&self) -> CrState {
        let v = vmcb(self.vmcb);
        CrState {
            cr0: v.read(save::CR0),
            cr3: v.read(save::CR3),
            cr4: v.read(save::CR4),
            efer: v.read(save::EFER) & !EFER_SVME,
            cs_l: v.segment(save::CS).attrib & (1 << 9) != 0,
        }
    }

    /// A write to CR0, CR4 or CR8 (MOV to CR, CLTS, LMSW), checked with the
    /// guest CPU model's rules (`basalt_cpu::cr`). Bytes that are not such
    /// an instruction (changed under the exit, or LMSW from memory) run
    /// again.
    fn cr_write(&mut self) {
        let Some(d) = self.decode_at_rip() else {
            self.undecoded += 1;
            return;
        };
        let state = self.cr_state();
        let width = |v: u64| if self.long_mode() { v } else { v & 0xffff_ffff };
        let result = match d.insn {
            Insn::MovToCr { cr: 0, gpr } => {
                self.guest_cpu.cr.mov_to_cr0(&state, width(self.reg(gpr)))
            }
            Insn::Clts => Ok(state.cr0 & !(1 << 3)),
            Insn::Lmsw { gpr } => {
                // LMSW sets PE, MP, EM and TS; it cannot clear PE.
                let msw = self.reg(gpr) & 0xf;
                Ok((state.cr0 & !0xe) | msw | (state.cr0 & CR0_PE))
            }
            Insn::MovToCr { cr: 4, gpr } => {
                match self.guest_cpu.cr.mov_to_cr4(&state, width(self.reg(gpr))) {
                    Ok(value) => {
                        vmcb(self.vmcb).write(save::CR4, value);
                        self.request_flush(TlbFlush::ThisAsid);
                        self.set_rip(self.rip().wrapping_add(u64::from(d.len)));
                    }
                    Err(_) => self.inject_exception(13, Some(0)),
                }
                return;
            }
            Insn::MovToCr { cr: 8, gpr } => {
                self.undecoded = 0;
                match basalt_cpu::cr::CrModel::mov_to_cr8(self.reg(gpr)) {
                    Ok(tpr) => {
                        let mut v = vmcb(self.vmcb);
                        let vintr = v.read(control::VINTR);
                        v.write(control::VINTR, (vintr & !0xf) | u64::from(tpr));
                        self.set_rip(self.rip().wrapping_add(u64::from(d.len)));
                    }
                    Err(_) => self.inject_exception(13, Some(0)),
                }
                return;
            }
            _ => {
                self.undecoded += 1;
                return;
            }
        };
        self.undecoded = 0;
        match result {
            Ok(cr0) => {
                let mut v = vmcb(self.vmcb);
                v.write(save::CR0, cr0);
                // EFER.LMA follows CR0.PG while EFER.LME is set, as the
                // processor's own MOV to CR0 would make it.
                let efer = v.read(save::EFER);
                if efer & EFER_LME != 0 {
                    let lma = if cr0 & CR0_PG != 0 { EFER_LMA } else { 0 };
                    v.write(save::EFER, (efer & !EFER_LMA) | lma);
                }
                self.request_flush(TlbFlush::ThisAsid);
                self.set_rip(self.rip().wrapping_add(u64::from(d.len)));
            }
            Err(_) => self.inject_exception(13, Some(0)),
        }
    }

    /// XSETBV where the processor intercepts it: checked against the
    /// guest's XSAVE policy as on VT-x.
    fn xsetbv(&mut self) {
        let Some(next) = self.next_rip_of(Insn::Xsetbv) else {
            return;
        };
        let osxsave = vmcb(self.vmcb).read(save::CR4) & cr4::OSXSAVE != 0;
        match guest_xsetbv(&self.regs, self.cpl(), osxsave) {
            Ok(value) => {
                self.xcr0 = value;
                self.set_rip(next);
            }
            Err(XsetbvFault::Ud) => self.inject_exception(UD, None),
            Err(XsetbvFault::Gp) => self.inject_exception(13, Some(0)),
        }
    }

    /// The instruction at CS:RIP, if it is one the SVM layer intercepts.
    fn decode_at_rip(&self) -> Option<insn::Decoded> {
        let (bytes, n) = self.fetch_at_rip()?;
        let size = match self.code_bits() {
            64 => CodeSize::Bits64,
            32 => CodeSize::Bits32,
            _ => CodeSize::Bits16,
        };
        insn::decode(&bytes[..n], size)
    }

    /// Up to 15 bytes at CS:RIP, through the guest's paging and the NPT,
    /// and how many could be read.
    fn fetch_at_rip(&self) -> Option<([u8; insn::MAX_LENGTH], usize)> {
        let mut bytes = [0u8; insn::MAX_LENGTH];
        let mem = NptPhys(vmcb(self.vmcb).read(control::N_CR3));
        let n = basalt_x86emul::fetch(&mem, &self.paging_state(), self.rip_linear(), &mut bytes);
        let n = n.ok()?;
        Some((bytes, n))
    }

    /// The RIP after the intercepted instruction `expected` at RIP: nRIP
    /// where the processor saves it, else from the instruction's bytes.
    /// `None` when the bytes are not that instruction (the guest changed
    /// them since): the guest then runs it again.
    fn next_rip_of(&mut self, expected: Insn) -> Option<u64> {
        let v = vmcb(self.vmcb);
        if self.caps.features.contains(SvmFeatures::NRIPS) {
            let next = v.read(control::NEXT_RIP);
            if next != 0 {
                return Some(next);
            }
        }
        match self.decode_at_rip() {
            Some(d) if d.insn == expected => {
                self.undecoded = 0;
                Some(v.read(save::RIP).wrapping_add(u64::from(d.len)))
            }
            _ => {
                self.undecoded += 1;
                None
            }
        }
    }

    /// Moves RIP past the intercepted instruction `expected`; false (and
    /// nothing done) when it is not at RIP.
    fn skip(&mut self, expected: Insn) -> bool {
        match self.next_rip_of(expected) {
            Some(next) => {
                self.set_rip(next);
                true
            }
            None => false,
        }
    }

    /// Sets RIP after an emulated instruction: the interrupt shadow of a
    /// preceding STI or MOV SS covered it and is over.
    #[inline]
    fn set_rip(&mut self, rip: u64) {
        let mut v = vmcb(self.vmcb);
        v.write(save::RIP, rip);
        v.write(control::INTERRUPT_SHADOW, 0);
    }

    fn set_intercept(&mut self, which: Intercept1, on: bool) {
        let mut v = vmcb(self.vmcb);
        let mut i1 = Intercept1::from_bits_retain(v.read(control::INTERCEPT1) as u32);
        i1.set(which, on);
        v.write(control::INTERCEPT1, u64::from(i1.bits()));
    }

    fn close_interrupt_window(&mut self) {
        let mut v = vmcb(self.vmcb);
        let vintr = v.read(control::VINTR) & !(V_IRQ | V_IGN_TPR);
        v.write(control::VINTR, vintr);
        self.set_intercept(Intercept1::VINTR, false);
    }

    /// Injects `event` at the next VMRUN (see [`Event`]). Returns whether it
    /// was injected.
    #[inline]
    pub fn inject(&mut self, event: Event) -> bool {
        match event {
            Event::External(vector) => self.inject_external(vector),
            Event::Nmi => self.inject_nmi(),
            Event::Exception { vector, error_code } => {
                self.inject_exception(vector, error_code);
                true
            }
            // EVENTINJ's exception type skips the gate's DPL check and
            // reports a delivery fault past the instruction, unlike INT3 and
            // INT n: not injected, the guest executes the instruction itself.
            Event::Software(..) => false,
        }
    }

    /// Whether an event is already going in at the next VMRUN.
    fn event_busy(&self) -> bool {
        vmcb(self.vmcb).read(control::EVENTINJ) & EVENT_VALID != 0
    }

    fn shadowed(&self) -> bool {
        vmcb(self.vmcb).read(control::INTERRUPT_SHADOW) & 1 != 0
    }

    /// Injects external interrupt `vector` if the guest can take it now;
    /// otherwise asks for a virtual-interrupt window: a V_IRQ that ignores
    /// the TPR and whose delivery is intercepted (APM Vol. 2 §15.21.4), so
    /// the VINTR exit comes as soon as the guest can take an interrupt.
    ///
    /// QEMU's TCG before 9.1 drops the interrupt shadow at VMRUN (its
    /// `helper_vmrun` does not load it from the VMCB): a window opened after
    /// an exit inside an STI shadow (`sti; vmcall`, `sti; hlt`) would be
    /// taken before the shadowed instruction, so a guest blocking right after
    /// STI would take its wake-up interrupt first and then sleep for good.
    /// There the vCPU instead runs on with the host timer armed a moment
    /// later (up to three times at the same RIP; then the instruction ran,
    /// as in `sti; jmp .`) and the interrupt is injected at the next exit.
    fn inject_external(&mut self, vector: u8) -> bool {
        let enabled = self.interrupts_enabled() && !self.event_busy();
        let mut shadowed = self.shadowed();
        if enabled && super::qemu_tcg() {
            let rip = vmcb(self.vmcb).read(save::RIP);
            let (at, waits) = self.shadow_hold;
            if shadowed || (at == rip && waits != 0 && waits < 3) {
                self.shadow_hold = (rip, if at == rip { waits + 1 } else { 1 });
                let step = crate::time::ns_to_tsc(50_000 << (2 * waits.min(2)));
                crate::time::arm_by_tsc(crate::arch::x86_64::cpu::rdtsc().saturating_add(step));
                return false;
            }
            self.shadow_hold = (0, 0);
            shadowed = false;
        }
        let can_take = enabled && !shadowed;
        let mut v = vmcb(self.vmcb);
        if !can_take {
            let vintr = v.read(control::VINTR);
            if vintr & V_IRQ == 0 {
                v.write(control::VINTR, vintr | V_IRQ | V_IGN_TPR);
                v.write(control::VINTR_VECTOR, 0);
                self.set_intercept(Intercept1::VINTR, true);
            }
            return false;
        }
        v.write(
            control::EVENTINJ,
            basalt_svm::event::Event::External(vector).encode(),
        );
        if v.read(control::VINTR) & V_IRQ != 0 {
            self.close_interrupt_window();
        }
        true
    }

    /// Injects an NMI if NMIs are not blocked (an earlier one's handler has
    /// returned: its IRET is intercepted), no interrupt shadow and no event
    /// going in; otherwise the NMI waits for a later exit (SVM has no NMI
    /// window).
    fn inject_nmi(&mut self) -> bool {
        if self.nmi_blocked || self.shadowed() || self.event_busy() {
            return false;
        }
        vmcb(self.vmcb).write(control::EVENTINJ, basalt_svm::event::Event::Nmi.encode());
        self.nmi_blocked = true;
        self.iret_rip = None;
        self.set_intercept(Intercept1::IRET, true);
        true
    }

    /// Injects a hardware exception; in real mode no error code is pushed.
    fn inject_exception(&self, vector: u8, error_code: Option<u32>) {
        let mut v = vmcb(self.vmcb);
        let protected = v.read(save::CR0) & CR0_PE != 0;
        let raw = if protected {
            basalt_svm::event::Event::Exception {
                vector,
                error: error_code,
            }
            .encode()
        } else {
            // Type 3 (exception), no error code.
            u64::from(vector) | (3 << 8) | EVENT_VALID
        };
        v.write(control::EVENTINJ, raw);
    }

    /// Whether RFLAGS.IF was set at the last exit.
    pub fn interrupts_enabled(&self) -> bool {
        vmcb(self.vmcb).read(save::RFLAGS) & RFLAGS_IF != 0
    }

    /// General register `n` in the SDM's numbering (RSP from the VMCB).
    #[inline]
    pub fn reg(&self, n: u8) -> u64 {
        match n {
            4 => vmcb(self.vmcb).read(save::RSP),
            n => self.regs.get_common(n),
        }
    }

    /// Sets general register `n`.
    #[inline]
    pub fn set_reg(&mut self, n: u8, value: u64) {
        match n {
            4 => vmcb(self.vmcb).write(save::RSP, value),
            n => self.regs.set_common(n, value),
        }
    }

    /// Whether the guest runs in 64-bit mode (EFER.LMA and CS.L).
    pub fn long_mode(&self) -> bool {
        let v = vmcb(self.vmcb);
        v.read(save::EFER) & EFER_LMA != 0 && v.segment(save::CS).attrib & (1 << 9) != 0
    }

    /// The guest's current privilege level.
    pub fn cpl(&self) -> u8 {
        // QEMU's TCG takes the CPL from SS.DPL and writes it back here.
        (vmcb(self.vmcb).read(save::CPL) & 3) as u8
    }

    /// The guest's RIP.
    pub fn rip(&self) -> u64 {
        vmcb(self.vmcb).read(save::RIP)
    }

    /// The guest's CR0, CR3, CR4 and EFER (without SVME).
    pub fn paging_state(&self) -> PagingMode {
        let v = vmcb(self.vmcb);
        PagingMode {
            cr0: v.read(save::CR0),
            cr3: v.read(save::CR3),
            cr4: v.read(save::CR4),
            efer: v.read(save::EFER) & !EFER_SVME,
        }
    }

    /// Skips the instruction whose exit the arch-neutral layer handled.
    pub fn skip_instruction(&mut self) {
        if self.next_rip != 0 {
            let next = self.next_rip;
            self.set_rip(next);
            self.next_rip = 0;
        }
    }

    /// Moves RIP past an emulated instruction of `len` bytes.
    pub fn skip_emulated(&mut self, len: u64) {
        let rip = self.rip().wrapping_add(len);
        self.set_rip(rip);
        self.next_rip = 0;
    }

    /// Sets the guest's CR2 (before injecting a page fault).
    pub fn set_cr2(&mut self, value: u64) {
        vmcb(self.vmcb).write(save::CR2, value);
    }

    /// The hidden part of a segment register, for the instruction emulator
    /// (attributes in VT-x's access-rights layout, which it takes).
    pub fn segment(&self, segment: basalt_x86emul::Segment) -> basalt_x86emul::SegmentState {
        // `basalt_x86emul::Segment` is in the SDM's order (ES = 0 ... GS = 5), as the
        // state-save area's segments from ES on are.
        let s = vmcb(self.vmcb).segment(save::ES + 16 * segment as u16);
        let attributes = (s.attrib & 0xff) | ((s.attrib & 0xf00) << 4);
        basalt_x86emul::SegmentState {
            base: s.base,
            limit: s.limit,
            attributes,
            usable: s.attrib & 0x80 != 0,
        }
    }

    /// The guest's RFLAGS.
    pub fn rflags(&self) -> u64 {
        vmcb(self.vmcb).read(save::RFLAGS)
    }

    /// Sets the guest's RFLAGS (bit 1 always set).
    pub fn set_rflags(&mut self, value: u64) {
        vmcb(self.vmcb).write(save::RFLAGS, value | 2);
    }

    /// The linear address of the next instruction (CS base + RIP).
    pub fn rip_linear(&self) -> u64 {
        let v = vmcb(self.vmcb);
        let base = if self.long_mode() {
            0
        } else {
            v.segment(save::CS).base
        };
        base.wrapping_add(v.read(save::RIP))
    }

    /// The code size of the guest's mode: 64, 32 or 16.
    pub fn code_bits(&self) -> u8 {
        if self.long_mode() {
            64
        } else if vmcb(self.vmcb).segment(save::CS).attrib & (1 << 10) != 0 {
            32
        } else {
            16
        }
    }

    /// Prints the VMCB's main fields (for crash reports).
    pub fn dump(&self, out: &mut impl core::fmt::Write) {
        let v = vmcb(self.vmcb);
        let _ = writeln!(
            out,
            "VMCB at {:#x}: previous exit {:#x}, EVENTINJ at the last VMRUN {:#x}",
            self.vmcb, self.last_exit, self.last_inj
        );
        let _ = writeln!(
            out,
            "  EXITCODE {:#x} EXITINFO1 {:#x} EXITINFO2 {:#x} EXITINTINFO {:#x} EVENTINJ {:#x} ASID {} VINTR {:#x}",
            v.read(control::EXITCODE),
            v.read(control::EXITINFO1),
            v.read(control::EXITINFO2),
            v.read(control::EXITINTINFO),
            v.read(control::EVENTINJ),
            v.read(control::ASID),
            v.read(control::VINTR),
        );
        let _ = writeln!(
            out,
            "  RIP {:#x} RSP {:#x} RFLAGS {:#x} CPL {} CR0 {:#x} CR2 {:#x} CR3 {:#x} CR4 {:#x} EFER {:#x} DR6 {:#x} DR7 {:#x} G_PAT {:#x}",
            v.read(save::RIP),
            v.read(save::RSP),
            v.read(save::RFLAGS),
            v.read(save::CPL),
            v.read(save::CR0),
            v.read(save::CR2),
            v.read(save::CR3),
            v.read(save::CR4),
            v.read(save::EFER),
            v.read(save::DR6),
            v.read(save::DR7),
            v.read(save::G_PAT),
        );
        // The state-save area's segments, 16 bytes each from ES on.
        let names = [
            "ES", "CS", "SS", "DS", "FS", "GS", "GDTR", "LDTR", "IDTR", "TR",
        ];
        for (i, name) in (0u16..).zip(names) {
            let s = v.segment(save::ES + 16 * i);
            let _ = writeln!(
                out,
                "  {name} sel {:#x} attrib {:#x} limit {:#x} base {:#x}",
                s.selector, s.attrib, s.limit, s.base
            );
        }
    }
}

/// Whether `value` is a valid IA32_PAT: every entry a memory type that
/// exists (0, 1, 4, 5, 6, 7) and the reserved bits clear.
fn pat_valid(value: u64) -> bool {
    (0..8).all(|i| matches!((value >> (i * 8)) & 0xff, 0 | 1 | 4 | 5 | 6 | 7))
}

/// XCR0 (XGETBV with ECX = 0).
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV 0 only reads XCR0; it is called only when the XSAVE
    // policy exists, so host CR4.OSXSAVE is set.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}
