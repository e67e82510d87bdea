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
    /// INS or OUTS, with or without REP: the arch-neutral layer fetches and
    /// decodes the instruction at RIP and performs it element by element
    /// (docs/x86emul.md, "String port I/O").
    StringIo {
        /// The port (DX).
        port: u16,
        /// Element size in bytes (1, 2 or 4).
        size: u8,
        /// INS rather than OUTS.
        is_in: bool,
        /// A REP prefix.
        rep: bool,
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
    /// An access to an emulated device page (the local APIC or the I/O
    /// APIC): the arch-neutral layer decodes the instruction at RIP and
    /// performs it (docs/x86emul.md).
    Mmio {
        /// The guest-physical address accessed (the decoded instruction
        /// says whether it reads or writes).
        gpa: u64,
    },
    /// RDMSR of an MSR that belongs to the virtual platform (the local
    /// APIC's): the handler sets EDX:EAX and skips the instruction, or
    /// injects #GP.
    RdMsr {
        /// The MSR.
        msr: u32,
    },
    /// WRMSR of an MSR that belongs to the virtual platform.
    WrMsr {
        /// The MSR.
        msr: u32,
        /// EDX:EAX.
        value: u64,
    },
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
    /// Delivering an event (interrupt, NMI or exception `vector`) made an
    /// access outside the guest's RAM: its IDT, GDT or stack is not in
    /// memory.
    DeliveryFault {
        /// Guest-physical address.
        gpa: u64,
        /// The event's vector.
        vector: u8,
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
    /// Every VPID is in use by a live vCPU.
    NoVpid(basalt_vmx::vpid::VpidError),
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
            Self::DeliveryFault { gpa, vector } => write!(
                f,
                "delivering vector {vector} touched guest-physical {gpa:#x}, which is not RAM \
                 (IDT, GDT or stack outside memory)"
            ),
            Self::TripleFault => write!(f, "triple fault"),
            Self::Init => write!(f, "INIT signal (CPU reset requested)"),
            Self::EntryFailed(r) => write!(f, "VM entry failed: {}", r.name()),
            Self::Vmx(e) => write!(f, "VMX instruction failed: {e}"),
            Self::UnhandledExit(r) => write!(f, "unhandled VM exit: {}", r.name()),
            Self::Unsupported(what) => write!(f, "{what} is not emulated"),
            Self::OutOfMemory => write!(f, "out of memory for the vCPU"),
            Self::NoVpid(e) => write!(f, "no VPID for the vCPU: {e}"),
        }
    }
}

/// The frequency of the guest's "core crystal clock" (CPUID leaf 0x15),
/// which is also the clock of its local APIC timer.
pub const CRYSTAL_HZ: u64 = basalt_cpu::cpuid::CRYSTAL_HZ;

/// What the CPUID answer depends on besides the leaf (per vCPU).
#[derive(Debug, Clone, Copy)]
pub struct CpuidContext {
    /// The hypervisor signature (per domain: a control domain may be shown
    /// Xen's).
    pub signature: [u8; 12],
    /// The vCPU's initial APIC ID (its index).
    pub apic_id: u32,
    /// The guest TSC frequency in Hz (the host's: Basalt offsets the TSC
    /// but does not scale it).
    pub tsc_hz: u64,
}

static GUEST_CPU: spin::Once<basalt_cpu::cpuid::GuestCpu> = spin::Once::new();

/// The CPU every guest sees (docs/platform.md, "CPUID"): the host's CPUID
/// through Basalt's allow-list, limited by what the virtualisation layer
/// can give (`limits`), and the XSAVE policy and control-register model
/// that follow. Built once, at the first call (on the boot CPU, before any
/// guest runs); later calls return the same model whatever `limits` say.
pub fn init_guest_cpu(limits: &basalt_cpu::cpuid::Limits) -> &'static basalt_cpu::cpuid::GuestCpu {
    GUEST_CPU.call_once(|| {
        let host = |leaf, sub| {
            // CPUID only reads the processor's identification.
            let r = core::arch::x86_64::__cpuid_count(leaf, sub);
            [r.eax, r.ebx, r.ecx, r.edx]
        };
        basalt_cpu::cpuid::GuestCpu::new(&host, limits)
    })
}

/// The CPU every guest sees (see [`init_guest_cpu`]; built at the first
/// call with the limits of the virtualisation layer).
#[inline]
pub fn guest_cpu() -> &'static basalt_cpu::cpuid::GuestCpu {
    match GUEST_CPU.get() {
        Some(cpu) => cpu,
        None => init_guest_cpu(&crate::arch::x86_64::vmx::guest_limits()),
    }
}

/// The MSRs the virtual platform answers (the arch-neutral layer, through
/// [`VcpuExit::RdMsr`] and [`VcpuExit::WrMsr`]): `IA32_APIC_BASE`,
/// `IA32_TSC_DEADLINE` and the x2APIC range.
pub fn is_platform_msr(msr: u32) -> bool {
    matches!(msr, 0x1b | 0x6e0 | 0x800..=0x8ff)
}

/// Whether guest-physical `gpa` is on a page of an emulated device (the
/// local APIC at 0xFEE00000, the I/O APIC at 0xFEC00000): an EPT violation
/// there is an access to emulate, not a fault.
pub fn is_device_page(gpa: u64) -> bool {
    let page = gpa & !0xfff;
    page == u64::from(basalt_guest::acpi::LOCAL_APIC_ADDRESS)
        || page == u64::from(basalt_guest::acpi::IO_APIC_ADDRESS)
}

/// RDMSR of an intercepted MSR: the explicit allowlist of emulated MSRs;
/// `None` injects #GP.
pub fn read_msr(msr: u32) -> Option<u64> {
    match msr {
        // IA32_PLATFORM_ID, IA32_BIOS_SIGN_ID (microcode): harmless zeros.
        0x17 | 0x8b => Some(0),
        // IA32_TSC_ADJUST: the guest's TSC is never adjusted.
        0x3b => Some(0),
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
/// injects #GP as the processor does for a reserved bit or an MSR the
/// guest's CPU does not have.
pub fn write_msr(msr: u32, value: u64) -> bool {
    match msr {
        // IA32_BIOS_SIGN_ID: written (with 0) before reading the microcode
        // revision.
        0x8b => true,
        // IA32_MTRR_DEF_TYPE: only the type (2:0), FE (10) and E (11)
        // exist, and the type must be UC, WC, WT, WP or WB (SDM Vol. 3A
        // 12.11.2.1). The guest's memory stays write-back whatever it says.
        0x2ff => value & !0xc07 == 0 && matches!(value & 7, 0 | 1 | 4 | 5 | 6),
        _ => false,
    }
}
