//! Several vCPUs in one guest: per-vCPU state and starting secondary vCPUs.
//!
//! vCPU 0 enters through the PVH entry. Every other vCPU `id` starts with
//! Xen's `VCPUOP_initialise` and `VCPUOP_up` ([`start_vcpu`]): a
//! `struct vcpu_hvm_context` in 64-bit mode with vCPU 0's CR0, CR3, CR4 and
//! EFER (the same page tables), RSP at the top of the vCPU's own stack
//! ([`VCPU_STACK_SIZE`], in .bss), RDI = `id` and RIP = `entry.S`'s
//! `pvh_secondary_start`. That loads the runtime's GDT and reloads every
//! segment register (the hypervisor chose the selectors of the flat
//! segments), then the runtime points GS at the vCPU's per-CPU block, loads
//! vCPU 0's IDT and calls the function given to [`start_vcpu`] with `id`.
//!
//! Per-CPU block: the vCPU's id and its fault recorder ([`crate::cpu`]),
//! found through the GS base (`gs:[0]` holds the block's address).

use crate::cpu::{self, FaultRecorder};
use crate::hypercall::{self, SHUTDOWN_CRASH, VCPU_HVM_MODE_64B, VcpuHvmContext, VcpuHvmX86_64};
use crate::{name, println, sched_shutdown};
use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// vCPUs a guest can have (Basalt's limit for `vcpus=`).
pub const MAX_VCPUS: usize = 64;

/// Stack size of each secondary vCPU (vCPU 0 has the boot stack,
/// [`crate::STACK_SIZE`]).
pub const VCPU_STACK_SIZE: usize = 8 * 1024;

const IA32_GS_BASE: u32 = 0xc000_0101;
const IA32_EFER: u32 = 0xc000_0080;
/// RFLAGS with only the reserved bit 1: interrupts off.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// One vCPU's state, reached through its GS base.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct PerCpu {
    /// The block's own address, at `gs:[0]`.
    this: AtomicU64,
    /// The vCPU id.
    id: AtomicU32,
    /// The fault recorder of [`cpu::checked`].
    pub(crate) faults: FaultRecorder,
}

impl PerCpu {
    const fn new() -> Self {
        PerCpu {
            this: AtomicU64::new(0),
            id: AtomicU32::new(0),
            faults: FaultRecorder::new(),
        }
    }
}

static PER_CPU: [PerCpu; MAX_VCPUS] = [const { PerCpu::new() }; MAX_VCPUS];

/// What each secondary vCPU runs: a `fn(u32) -> !` as an address, 0 = none.
static MAINS: [AtomicUsize; MAX_VCPUS] = [const { AtomicUsize::new(0) }; MAX_VCPUS];

/// The secondary vCPUs' stacks, by id. Slot 0 (vCPU 0 has the boot stack)
/// serves a vCPU started with an id that cannot be a secondary: its entry
/// only reports that and ends the domain.
#[repr(C, align(16))]
struct Stacks(UnsafeCell<[[u8; VCPU_STACK_SIZE]; MAX_VCPUS]>);

// SAFETY: the runtime never reads or writes the stacks; each one is used
// by one vCPU only, through its stack pointer.
unsafe impl Sync for Stacks {}

static STACKS: Stacks = Stacks(UnsafeCell::new([[0; VCPU_STACK_SIZE]; MAX_VCPUS]));

unsafe extern "C" {
    /// The secondary vCPUs' 64-bit entry (`entry.S`).
    fn pvh_secondary_start();
}

/// Makes `PER_CPU[id]` this vCPU's block: records the id and sets the GS
/// base.
pub(crate) fn init_cpu(id: usize) {
    let block = &PER_CPU[id];
    let at = block as *const PerCpu as u64;
    block.this.store(at, Ordering::Relaxed);
    block.id.store(id as u32, Ordering::Relaxed);
    // SAFETY: only this module uses GS, and the base is a static block.
    // (Not `nomem`: the stores above must happen first.)
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") IA32_GS_BASE,
            in("eax") at as u32,
            in("edx") (at >> 32) as u32,
            options(nostack, preserves_flags),
        )
    };
}

/// This vCPU's block (vCPU 0's while the GS base is not set yet).
pub(crate) fn this_cpu() -> &'static PerCpu {
    let at: u64;
    // SAFETY: reads 8 bytes at the GS base: a per-CPU block once
    // `init_cpu` ran, before that guest-physical 0 (identity-mapped RAM),
    // whose value is checked below.
    unsafe { asm!("mov {}, gs:[0]", out(reg) at, options(nostack, readonly, preserves_flags)) };
    let offset = at.wrapping_sub(PER_CPU.as_ptr() as u64) as usize;
    let size = core::mem::size_of::<PerCpu>();
    match PER_CPU.get(offset / size) {
        Some(block) if offset.is_multiple_of(size) => block,
        _ => &PER_CPU[0],
    }
}

/// The id of the vCPU running this (0 for the boot vCPU).
pub fn cpu_id() -> u32 {
    this_cpu().id.load(Ordering::Relaxed)
}

/// The context [`start_vcpu`] gives vCPU `id`: 64-bit mode with this vCPU's
/// control registers and EFER, the secondary entry, `id`'s own stack and
/// RDI = `id`.
pub fn vcpu_context(id: u32) -> VcpuHvmContext {
    let slot = Some(id as usize).filter(|&i| i < MAX_VCPUS).unwrap_or(0);
    let stacks = STACKS.0.get() as u64;
    VcpuHvmContext {
        mode: VCPU_HVM_MODE_64B,
        pad: 0,
        regs: VcpuHvmX86_64 {
            rsp: stacks + ((slot + 1) * VCPU_STACK_SIZE) as u64,
            rdi: u64::from(id),
            rip: pvh_secondary_start as *const () as u64,
            rflags: RFLAGS_RESERVED,
            cr0: cpu::read_cr0(),
            cr3: cpu::read_cr3(),
            cr4: cpu::read_cr4(),
            efer: cpu::rdmsr_checked(IA32_EFER).unwrap_or(0),
            ..VcpuHvmX86_64::default()
        },
        union_tail: 0,
    }
}

/// `VCPUOP_initialise` of vCPU `id` with [`vcpu_context`]`(id)`, to run
/// `main(id)` once up; the hypercall's result (0 or a negative errno).
pub fn initialise_vcpu(id: u32, main: fn(u32) -> !) -> i64 {
    if let Some(slot) = MAINS.get(id as usize).filter(|_| id != 0) {
        slot.store(main as usize, Ordering::Release);
    }
    hypercall::vcpu_initialise(id, &vcpu_context(id))
}

/// Starts vCPU `id` (1 to the domain's vCPUs - 1, below [`MAX_VCPUS`])
/// running `main(id)` on its own stack: [`initialise_vcpu`], then
/// `VCPUOP_up`. On error, the name of the hypercall that failed and its
/// result.
pub fn start_vcpu(id: u32, main: fn(u32) -> !) -> Result<(), (&'static str, i64)> {
    if id == 0 || id as usize >= MAX_VCPUS {
        return Err(("start_vcpu (id out of range)", hypercall::EINVAL));
    }
    match initialise_vcpu(id, main) {
        0 => {}
        r => return Err(("VCPUOP_initialise", r)),
    }
    match hypercall::vcpu_up(id) {
        0 => Ok(()),
        r => Err(("VCPUOP_up", r)),
    }
}

/// Called by `pvh_secondary_start` (our GDT and segments loaded, interrupts
/// off) with the vCPU id from RDI.
#[unsafe(no_mangle)]
extern "C" fn basalt_guest_secondary(id: u64) -> ! {
    let index = id as usize;
    let main = match MAINS.get(index) {
        Some(slot) if index != 0 => {
            init_cpu(index);
            cpu::load_idt();
            slot.load(Ordering::Acquire)
        }
        _ => 0,
    };
    if main == 0 {
        println!(
            "TEST FAIL {}: a vCPU entered the secondary entry with id {id}, which no start_vcpu asked for",
            name()
        );
        sched_shutdown(SHUTDOWN_CRASH);
    }
    // SAFETY: `initialise_vcpu` stored this value from a `fn(u32) -> !`.
    let main = unsafe { core::mem::transmute::<usize, fn(u32) -> !>(main) };
    main(id as u32)
}
