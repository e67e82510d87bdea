//! AMD SVM (docs/amd-v.md): turning SVM on for a CPU, the host-save area,
//! VMRUN and #VMEXIT, nested page tables. The pure half (VMCB fields, exit
//! codes and their information, permission maps, ASIDs, capabilities) is
//! `basalt-svm`; this module executes the instructions: per-CPU SVM
//! operation here, the vCPUs behind the vendor seam in [`vcpu`].

pub mod vcpu;

pub use super::gprs::GuestRegs;
use super::percpu::MAX_CPUS;
use super::{cpu, msr};
use crate::mm::{self, DIRECT_MAP_BASE};
use basalt_frames::Owner;
use basalt_paging::{FrameSource, TableMemory};
use basalt_svm::asid::AsidAllocator;
use basalt_svm::caps::{SvmCaps, SvmUnavailable};
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering, compiler_fence};
use spin::{Mutex, Once};

core::arch::global_asm!(include_str!("entry.S"), options(att_syntax));

unsafe extern "C" {
    fn svm_run(regs: *mut GuestRegs, vmcb_pa: u64, host_save_pa: u64) -> u64;
}

/// VM_CR (APM Vol. 2 §15.30.1).
const MSR_VM_CR: u32 = 0xc001_0114;
/// VM_HSAVE_PA (APM Vol. 2 §15.30.4): where VMRUN keeps the host's state.
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
/// EFER.SVME (APM Vol. 2 §15.4).
pub const EFER_SVME: u64 = 1 << 12;

/// SVM as the boot CPU found it; every CPU must match it.
static CAPS: Once<Result<SvmCaps, SvmUnavailable>> = Once::new();

/// Each CPU in SVM operation (set once by [`enable_on_this_cpu`]).
static CPUS: [Once<Mutex<SvmCpu>>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

/// Per CPU: the next VMRUN flushes every ASID's translations (a domain's
/// nested page table was torn down: [`flush_all_on_this_cpu`]).
static FLUSH_ALL: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// SVM as discovered on the boot CPU (decided at the first call).
pub fn caps() -> &'static Result<SvmCaps, SvmUnavailable> {
    CAPS.call_once(discover)
}

/// Turns SVM on for this CPU (once) and keeps its state for the vCPUs that
/// run here.
pub fn enable_on_this_cpu() -> Result<SvmCaps, SvmFailure> {
    let caps = (*caps()).map_err(SvmFailure::Unavailable)?;
    let index = super::percpu::index();
    let slot = CPUS.get(index).ok_or(SvmFailure::OutOfMemory)?;
    if slot.get().is_none() {
        let cpu = SvmCpu::enable_on_this_cpu()?;
        slot.call_once(|| Mutex::new(cpu));
    }
    Ok(caps)
}

/// The SVM state of CPU `index`, if it is in SVM operation.
pub(crate) fn this_cpu(index: usize) -> Option<&'static Mutex<SvmCpu>> {
    CPUS.get(index)?.get()
}

/// Makes the next VMRUN on this CPU flush every ASID (TLB_CONTROL 1): no
/// translation of a torn-down nested page table survives.
pub fn flush_all_on_this_cpu() {
    if let Some(f) = FLUSH_ALL.get(super::percpu::index()) {
        f.store(true, Ordering::SeqCst);
    }
}

/// Whether CPU `index` owes a full flush; clears the request.
#[inline]
pub(crate) fn take_flush_all(index: usize) -> bool {
    FLUSH_ALL
        .get(index)
        .is_some_and(|f| f.load(Ordering::Relaxed) && f.swap(false, Ordering::SeqCst))
}

/// What SVM lets a guest have beyond the host's CPUID: every CR4 bit the
/// guest's CPU model allows (SVM fixes none), RDTSCP (TSC_AUX is switched)
/// and INVPCID (not intercepted, it acts on the guest's own ASID).
pub fn guest_limits() -> basalt_cpu::cpuid::Limits {
    basalt_cpu::cpuid::Limits::default()
}

/// Whether nested page tables may map 1 GiB pages (CPUID Fn8000_0001 EDX
/// bit 26, Page1GB: NPT uses the host's page formats).
pub fn npt_1g() -> bool {
    cpu::max_leaves().1 >= 0x8000_0001 && cpu::cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// Whether the processor is QEMU's TCG (its CPUID leaf 4000_0000h says
/// "TCGTCGTCGTCG"). Its VMRUN delivers an injected external interrupt but
/// leaves the vector as the vCPU's pending exception (QEMU 7.2
/// `helper_vmrun`), and the next request to leave the CPU loop (another
/// CPU's kick, the round-robin or icount switch) delivers it again, wherever
/// the guest is and whatever its RFLAGS.IF: `SvmVcpu::run` makes such a VMRUN
/// end at once instead (docs/amd-v.md).
pub fn qemu_tcg() -> bool {
    static TCG: Once<bool> = Once::new();
    *TCG.call_once(|| {
        let r = cpu::cpuid(0x4000_0000);
        [r.ebx, r.ecx, r.edx] == [*b"TCGT", *b"CGTC", *b"GTCG"].map(u32::from_le_bytes)
    })
}

/// Whether CPUID reports SVM (Fn8000_0001 ECX bit 2).
pub fn cpu_has_svm() -> bool {
    cpu::max_leaves().1 >= 0x8000_0001 && cpu::cpuid(0x8000_0001).ecx & (1 << 2) != 0
}

/// The SVM capabilities of this CPU, or why Basalt cannot use them.
pub fn discover() -> Result<SvmCaps, SvmUnavailable> {
    // VM_CR exists only where SVM does: read it only then (otherwise the
    // discovery stops at "no SVM" before looking at it).
    let vm_cr = if cpu_has_svm() {
        msr::read_raw(MSR_VM_CR)
    } else {
        0
    };
    let host = |leaf: u32, sub: u32| {
        let r = cpu::cpuid_count(leaf, sub);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    SvmCaps::discover(&host, vm_cr)
}

/// One CPU in SVM operation: EFER.SVME set, VM_HSAVE_PA pointing at a page
/// of its own, and a host-save VMCB for VMSAVE/VMLOAD of the host's FS, GS,
/// TR, LDTR and syscall MSRs around each VMRUN. Both pages stay the CPU's
/// for the rest of Basalt's life (as VT-x's VMXON region does).
#[derive(Debug)]
pub struct SvmCpu {
    /// The CPU's ASIDs (APM Vol. 2 §15.16), handed to the vCPUs it runs.
    pub asids: AsidAllocator,
    pub(crate) host_save_pa: u64,
}

/// Why SVM could not be turned on for a CPU.
#[derive(Debug, Clone, Copy)]
pub enum SvmFailure {
    /// SVM cannot be used at all.
    Unavailable(SvmUnavailable),
    /// No page for VM_HSAVE_PA or the host-save VMCB.
    OutOfMemory,
}

impl fmt::Display for SvmFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "{e}"),
            Self::OutOfMemory => write!(
                f,
                "no memory for the SVM host-save pages (give the machine more RAM)"
            ),
        }
    }
}

impl SvmCpu {
    /// Turns SVM on for the CPU this runs on (APM Vol. 2 §15.4 "Enabling
    /// SVM"): sets EFER.SVME and VM_HSAVE_PA. Call once per CPU.
    pub fn enable_on_this_cpu() -> Result<Self, SvmFailure> {
        let caps = discover().map_err(SvmFailure::Unavailable)?;
        let hsave_pa = mm::alloc_zeroed_frame(Owner::Other).ok_or(SvmFailure::OutOfMemory)?;
        let Some(host_save_pa) = mm::alloc_zeroed_frame(Owner::Other) else {
            mm::free_frames(hsave_pa, 0, Owner::Other);
            return Err(SvmFailure::OutOfMemory);
        };
        let efer = msr::read(msr::Msr::Efer);
        // SAFETY: SVM is present and not disabled by VM_CR (checked by
        // `discover`), so EFER.SVME is writable; it changes nothing else.
        unsafe { msr::write(msr::Msr::Efer, efer | EFER_SVME) };
        // SAFETY: a 4 KiB-aligned page of Basalt's, zeroed, given to the
        // processor for good (never freed while SVME is set).
        unsafe { msr::write_raw(MSR_VM_HSAVE_PA, hsave_pa) };
        Ok(Self {
            asids: AsidAllocator::new(caps.asids),
            host_save_pa,
        })
    }
}

/// Runs the guest of the VMCB at `vmcb_pa` until its next #VMEXIT, with
/// this CPU's host-save VMCB at `host_save_pa`.
///
/// # Safety
///
/// As for [`SvmCpu::run`]: this CPU is in SVM operation and `host_save_pa`
/// is its host-save VMCB; the VMCB, its maps and nested page table are
/// Basalt's and map only the guest's memory, with VMRUN, INTR and NMI
/// intercepted.
#[inline(always)]
pub(crate) unsafe fn svm_run_raw(vmcb_pa: u64, host_save_pa: u64, regs: &mut GuestRegs) {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: the caller's contract; svm_run saves and restores every
    // callee-saved register and the host state VMRUN does not switch.
    unsafe { svm_run(regs, vmcb_pa, host_save_pa) };
    compiler_fence(Ordering::SeqCst);
}

/// `N` bytes of frames the caller allocated and owns, through the direct
/// map. The view must not be kept across a VMRUN that uses the frames.
pub fn owned_frames_mut<const N: usize>(phys: u64) -> &'static mut [u8; N] {
    // SAFETY: callers pass contiguous frames they allocated and own
    // exclusively (VMCBs, permission maps, guest pages), all direct-mapped
    // for the rest of Basalt's life.
    unsafe { &mut *((DIRECT_MAP_BASE + phys) as *mut [u8; N]) }
}

/// Nested page tables in RAM, reached through the direct map, with table
/// frames from the frame allocator.
#[derive(Debug, Default)]
pub struct NptMemory;

impl TableMemory for NptMemory {
    fn read_entry(&self, table_phys: u64, index: usize) -> u64 {
        let p = (DIRECT_MAP_BASE + table_phys + index as u64 * 8) as *const u64;
        // SAFETY: nested tables are frames from `alloc_table` (direct-mapped
        // RAM); `index` < 512 keeps the read inside the table.
        unsafe { core::ptr::read_volatile(p) }
    }

    fn write_entry(&mut self, table_phys: u64, index: usize, value: u64) {
        let p = (DIRECT_MAP_BASE + table_phys + index as u64 * 8) as *mut u64;
        // SAFETY: as in `read_entry`; one aligned 64-bit store.
        unsafe { core::ptr::write_volatile(p, value) }
    }
}

impl FrameSource for NptMemory {
    fn alloc_table(&mut self) -> Option<u64> {
        mm::alloc_zeroed_frame(Owner::PageTables)
    }

    fn free_table(&mut self, phys: u64) {
        mm::free_frames(phys, 0, Owner::PageTables);
    }
}
