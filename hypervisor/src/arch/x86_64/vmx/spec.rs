//! Speculative-execution hygiene around VM entries and exits (docs/vmx.md,
//! "Speculative-execution hygiene"). `basalt_vmx::spec` decides from CPUID
//! leaf 7 and `IA32_ARCH_CAPABILITIES`; this module reads them, publishes
//! the decision to `entry.S` in [`basalt_spec_flags`], and issues the IBPB
//! when a CPU moves to another domain's vCPU.

use crate::arch::x86_64::percpu::MAX_CPUS;
use crate::arch::x86_64::{cpu, gdt, msr};
use basalt_vmx::spec::{CPUID7_EDX_ARCH_CAPS, CpuFacts, RsbFill, SpecPolicy};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use spin::Once;

/// `entry.S` bit: fill the whole return stack buffer on VM exit.
const FLAG_RSB_FULL: u8 = 1 << 0;
/// `entry.S` bit: one `CALL` on VM exit (PBRSB).
const FLAG_RSB_LITE: u8 = 1 << 1;
/// `entry.S` bit: write `IA32_FLUSH_CMD` before VM entry.
const FLAG_L1D_FLUSH: u8 = 1 << 2;
/// `entry.S` bit: `VERW` as the last instruction before VM entry.
const FLAG_VERW: u8 = 1 << 3;

/// What `entry.S` does around each VM entry and exit (bits above). Set once
/// on the boot CPU before any guest runs.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static basalt_spec_flags: AtomicU8 = AtomicU8::new(0);

/// The memory operand of `VERW`: a writable data segment selector.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static basalt_verw_selector: u16 = gdt::KERNEL_DS;

const MSR_ARCH_CAPABILITIES: u32 = 0x10a;
const MSR_PRED_CMD: u32 = 0x49;
const PRED_CMD_IBPB: u64 = 1;

static POLICY: Once<SpecPolicy> = Once::new();
static IBPB: AtomicBool = AtomicBool::new(false);
/// The domain generation each CPU last entered (0: none yet).
static LAST_DOMAIN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn facts() -> CpuFacts {
    let mut vendor = [0u8; 12];
    let intel = cpu::vendor(&mut vendor) == "GenuineIntel";
    let cpuid7_edx = if cpu::max_leaves().0 >= 7 {
        cpu::cpuid_count(7, 0).edx
    } else {
        0
    };
    let arch_caps = if cpuid7_edx & CPUID7_EDX_ARCH_CAPS != 0 {
        msr::read_raw(MSR_ARCH_CAPABILITIES)
    } else {
        0
    };
    CpuFacts {
        intel,
        cpuid7_edx,
        arch_caps,
        // Basalt does not set IA32_SPEC_CTRL.IBRS (docs/vmx.md): the full
        // RSB fill runs even on CPUs with enhanced IBRS.
        host_ibrs: false,
    }
}

/// Decides the policy (once, on the boot CPU) and publishes it; returns it
/// with the facts it came from, for the boot log.
pub fn init() -> (SpecPolicy, CpuFacts) {
    let facts = facts();
    let policy = *POLICY.call_once(|| SpecPolicy::decide(&facts));
    let mut flags = match policy.rsb {
        RsbFill::Full => FLAG_RSB_FULL,
        RsbFill::Lite => FLAG_RSB_LITE,
        RsbFill::None => 0,
    };
    if policy.l1d_flush_on_entry {
        flags |= FLAG_L1D_FLUSH;
    }
    if policy.verw_on_entry {
        flags |= FLAG_VERW;
    }
    basalt_spec_flags.store(flags, Ordering::SeqCst);
    IBPB.store(policy.ibpb_on_domain_switch, Ordering::SeqCst);
    (policy, facts)
}

/// CPU `cpu` is about to enter a vCPU of the domain with `generation`: an
/// IBPB when the last guest it entered belonged to another domain, so no
/// branch prediction that domain trained steers this one.
pub fn entering_domain(cpu: usize, generation: u64) {
    let Some(last) = LAST_DOMAIN.get(cpu) else {
        return;
    };
    if last.swap(generation, Ordering::Relaxed) != generation && IBPB.load(Ordering::Relaxed) {
        // SAFETY: IA32_PRED_CMD exists (CPUID.7.EDX[26], checked by the
        // policy); an IBPB only discards branch predictions.
        unsafe { msr::write_raw(MSR_PRED_CMD, PRED_CMD_IBPB) };
    }
}
