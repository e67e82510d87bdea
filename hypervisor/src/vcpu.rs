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
        }
    }
}

/// The hypervisor CPUID range a guest sees (leaf 0x4000_0000 and up).
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// The highest hypervisor leaf Basalt answers.
pub const HYPERVISOR_MAX_LEAF: u32 = 0x4000_0001;
/// The frequency of the guest's "core crystal clock" (CPUID leaf 0x15),
/// which is also the clock of its local APIC timer.
pub const CRYSTAL_HZ: u64 = 1_000_000;
/// The lowest highest-basic-leaf a guest sees: leaves 0x15 and 0x16 must
/// exist for it to find its TSC and APIC timer frequencies.
const MIN_BASIC_LEAF: u32 = 0x16;

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

/// What CPUID shows a guest (docs/platform.md, "CPUID"): the host's answer
/// with VMX, SMX, MONITOR/MWAIT, machine checks and hyper-threading hidden
/// and the "hypervisor present" bit set; the local APIC (with x2APIC mode
/// and the TSC-deadline timer) shown, with the vCPU's initial APIC ID in leaf 1 EBX\[31:24\];
/// no extended topology (leaves 0xB and 0x1F read as absent, so the guest
/// takes every vCPU for a package of its own); leaf 0x15 giving the TSC
/// frequency as [`CRYSTAL_HZ`] times a ratio (SDM Vol. 2A, CPUID leaf
/// 15H) and leaf 0x16 the same frequency in MHz; and Basalt's leaves at 0x4000_0000.
#[inline]
pub fn cpuid_policy(
    leaf: u32,
    sub: u32,
    ctx: &CpuidContext,
    host: impl Fn(u32, u32) -> [u32; 4],
) -> [u32; 4] {
    match leaf {
        HYPERVISOR_LEAF => basalt_guest::cpuid::signature_leaf(&ctx.signature, HYPERVISOR_MAX_LEAF),
        0x4000_0001..=0x4fff_ffff => [0; 4],
        0 => {
            let mut r = host(0, 0);
            r[0] = r[0].max(MIN_BASIC_LEAF);
            r
        }
        // No extended topology; no thermal and power management (leaf 6:
        // no APERF/MPERF, no HWP, no digital thermal sensor); no
        // architectural performance monitoring (leaf 0xA).
        0x6 | 0xa | 0xb | 0x1f => [0; 4],
        0x15 => tsc_leaf(ctx.tsc_hz),
        0x16 => {
            // Base and maximum frequency in MHz, bus (reference) 100 MHz.
            let mhz = (ctx.tsc_hz / 1_000_000).min(0xffff) as u32;
            [mhz, mhz, 100, 0]
        }
        _ => {
            let mut r = host(leaf, sub);
            if leaf == 1 {
                // ECX: MONITOR (3), VMX (5), SMX (6), EST (7), TM2 (8) and
                // PDCM (15) hidden; x2APIC (21), the TSC-deadline timer
                // (24) and hypervisor (31) shown (the local APIC model has
                // them).
                r[2] &= !((1 << 3) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 15));
                r[2] |= (1 << 21) | (1 << 24) | (1 << 31);
                // EDX: APIC (9) shown; machine checks (MCE 7, MCA 14),
                // thermal monitoring (ACPI 22, TM 29) and HTT (28) hidden.
                r[3] |= 1 << 9;
                r[3] &= !((1 << 7) | (1 << 14) | (1 << 22) | (1 << 28) | (1 << 29));
                // EBX: initial APIC ID, one logical processor per package.
                r[1] = (r[1] & 0x0000_ffff) | (1 << 16) | ((ctx.apic_id & 0xff) << 24);
            }
            if leaf == 4 {
                // Cache topology: one core per package, one thread per cache.
                r[0] &= 0x3ff;
            }
            if leaf == 0x8000_0001 {
                // Hide SVM too.
                r[2] &= !(1 << 2);
            }
            r
        }
    }
}

/// The parts of CPUID that follow the guest's own state (SDM Vol. 2A, CPUID
/// leaves 01H and 0DH): CPUID.1:ECX.OSXSAVE\[27\] mirrors the guest's
/// CR4.OSXSAVE, and the XSAVE area sizes in leaf 0xD sub-leaves 0 (standard
/// format) and 1 (compacted, XSAVES) count the components enabled in the
/// guest's XCR0, not the host's. No supervisor component is offered (leaf
/// 0xD.1 ECX and EDX read 0; IA32_XSS stays 0). The compacted forms XSAVEC
/// and XSAVES (leaf 0xD.1 EAX bits 1 and 3) are hidden: under Bochs 2.7 a
/// compacted save/restore corrupted vector registers across Linux context
/// switches (glibc string functions in user space then crashed), and the
/// standard-format XSAVE/XSAVEOPT that Linux falls back to is exact.
pub fn cpuid_guest_state(
    leaf: u32,
    sub: u32,
    r: &mut [u32; 4],
    osxsave: bool,
    xcr0: u64,
    host: impl Fn(u32, u32) -> [u32; 4],
) {
    match (leaf, sub) {
        (1, _) => {
            if osxsave {
                r[2] |= 1 << 27;
            } else {
                r[2] &= !(1 << 27);
            }
        }
        (0xd, 0) => {
            let mut end = 576;
            for i in 2..64 {
                if xcr0 & (1 << i) != 0 {
                    let [size, offset, _, _] = host(0xd, i);
                    end = end.max(offset + size);
                }
            }
            r[1] = end;
        }
        (0xd, 1) => {
            let mut end = 576u32;
            for i in 2..64 {
                if xcr0 & (1 << i) != 0 {
                    let [size, _, flags, _] = host(0xd, i);
                    if flags & 2 != 0 {
                        end = end.next_multiple_of(64);
                    }
                    end += size;
                }
            }
            r[0] &= !((1 << 1) | (1 << 3));
            r[1] = end;
            r[2] = 0;
            r[3] = 0;
        }
        _ => {}
    }
}

/// CPUID leaf 0x15 for a TSC of `tsc_hz`: EAX = denominator, EBX =
/// numerator, ECX = the crystal's Hz, with TSC = ECX * EBX / EAX (to 1 kHz).
pub fn tsc_leaf(tsc_hz: u64) -> [u32; 4] {
    let denominator = 1000u64;
    let numerator = (tsc_hz * denominator / CRYSTAL_HZ).min(u64::from(u32::MAX));
    if numerator == 0 {
        return [0; 4];
    }
    [denominator as u32, numerator as u32, CRYSTAL_HZ as u32, 0]
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
        // IA32_XSS: no supervisor state component is offered.
        0xda0 => Some(0),
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
pub fn write_msr(msr: u32, value: u64) -> bool {
    match msr {
        0x8b | 0x2ff => true,
        // IA32_XSS: only 0 (no supervisor component is offered).
        0xda0 => value == 0,
        _ => false,
    }
}
