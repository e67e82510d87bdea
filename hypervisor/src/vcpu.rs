//! The arch-neutral vCPU interface (docs/vmx.md): what a vendor layer (VT-x
//! now, AMD-V later) reports back after running a guest, and the policies
//! that do not depend on the vendor (which CPUID bits and MSRs a guest sees).

use basalt_vmx::error::VmFail;
use basalt_vmx::exit::ExitReason;
use core::fmt;

/// Why a vCPU stopped running, for the arch-neutral layer to handle.
#[derive(Debug)]
pub enum VcpuExit {
    /// VMCALL: a hypercall (registers in the vCPU).
    Hypercall,
    /// OUT to a port.
    IoOut {
        /// The port.
        port: u16,
        /// Access size in bytes.
        size: u8,
        /// The value written.
        value: u32,
    },
    /// IN from a port; the handler sets RAX and skips the instruction.
    IoIn {
        /// The port.
        port: u16,
        /// Access size in bytes.
        size: u8,
    },
    /// HLT (already skipped): the vCPU blocks until an event.
    Halt,
    /// The time slice ended.
    Preempted,
    /// An external interrupt arrived for the hypervisor (already handled).
    Interrupted,
    /// The guest can take an interrupt now (it asked for one to be
    /// injected when that became possible).
    InterruptWindow,
    /// The guest did something that ends it, or Basalt failed to run it.
    Error(GuestError),
}

/// What ends a domain (each with a diagnostic).
#[derive(Debug, Clone)]
pub enum GuestError {
    /// An access outside the domain's memory (EPT violation).
    OutsideMemory {
        /// Guest-physical address.
        gpa: u64,
        /// A write.
        write: bool,
        /// An instruction fetch.
        fetch: bool,
    },
    /// An EPT misconfiguration (a Basalt bug).
    EptMisconfig {
        /// Guest-physical address.
        gpa: u64,
    },
    /// The guest triple-faulted.
    TripleFault,
    /// An INIT signal (the guest tried to reset a CPU).
    Init,
    /// VM entry failed the processor's checks.
    EntryFailed(ExitReason),
    /// A VMX instruction failed.
    Vmx(VmFail),
    /// An exit Basalt does not handle.
    UnhandledExit(ExitReason),
    /// Something Basalt does not emulate.
    Unsupported(&'static str),
    /// No memory for the vCPU's structures.
    OutOfMemory,
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideMemory { gpa, write, fetch } => write!(
                f,
                "{} outside its memory at guest-physical {gpa:#x}",
                if *fetch {
                    "instruction fetch"
                } else if *write {
                    "write"
                } else {
                    "read"
                }
            ),
            Self::EptMisconfig { gpa } => write!(
                f,
                "EPT misconfiguration at guest-physical {gpa:#x} (a Basalt bug)"
            ),
            Self::TripleFault => write!(f, "triple fault"),
            Self::Init => write!(f, "INIT signal (CPU reset requested)"),
            Self::EntryFailed(r) => write!(f, "VM entry failed: {}", r.name()),
            Self::Vmx(e) => write!(f, "VMX instruction failed: {e}"),
            Self::UnhandledExit(r) => write!(f, "unhandled VM exit: {}", r.name()),
            Self::Unsupported(what) => write!(f, "{what} is not emulated"),
            Self::OutOfMemory => write!(f, "out of memory for the vCPU"),
        }
    }
}

/// The hypervisor CPUID range a guest sees (leaf 0x4000_0000 and up).
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// The highest hypervisor leaf Basalt answers.
pub const HYPERVISOR_MAX_LEAF: u32 = 0x4000_0001;

/// What CPUID shows a guest: the host's answer with VMX, SMX, MONITOR/MWAIT,
/// the local APIC and x2APIC hidden (none is virtualized yet) and the
/// "hypervisor present" bit set, plus Basalt's leaves at 0x4000_0000.
/// `signature` is per domain (a control domain may be shown Xen's).
#[inline]
pub fn cpuid_policy(
    leaf: u32,
    sub: u32,
    signature: &[u8; 12],
    host: impl Fn(u32, u32) -> [u32; 4],
) -> [u32; 4] {
    match leaf {
        HYPERVISOR_LEAF => basalt_guest::cpuid::signature_leaf(signature, HYPERVISOR_MAX_LEAF),
        0x4000_0001..=0x4fff_ffff => [0; 4],
        _ => {
            let mut r = host(leaf, sub);
            if leaf == 1 {
                r[2] &= !((1 << 5) | (1 << 6) | (1 << 3) | (1 << 21) | (1 << 24));
                r[2] |= 1 << 31;
                r[3] &= !(1 << 9);
            }
            if leaf == 0x8000_0001 {
                // Hide SVM too.
                r[2] &= !(1 << 2);
            }
            r
        }
    }
}

/// RDMSR of an intercepted MSR: the explicit allowlist of emulated MSRs;
/// `None` injects #GP.
pub fn read_msr(msr: u32) -> Option<u64> {
    match msr {
        // IA32_PLATFORM_ID, IA32_BIOS_SIGN_ID (microcode): harmless zeros.
        0x17 | 0x8b => Some(0),
        // IA32_MTRRCAP: no variable ranges, no fixed ranges: write-back only.
        0xfe => Some(0),
        // IA32_MISC_ENABLE: fast strings.
        0x1a0 => Some(1),
        // IA32_MTRR_DEF_TYPE: MTRRs enabled, default write-back.
        0x2ff => Some(0x806),
        _ => None,
    }
}

/// WRMSR of an intercepted MSR: `true` when accepted (ignored), `false`
/// injects #GP.
pub fn write_msr(msr: u32, _value: u64) -> bool {
    matches!(msr, 0x8b | 0x2ff)
}
