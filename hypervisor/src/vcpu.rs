//! The arch-neutral vCPU interface (docs/architecture.md, "The vendor
//! seam"): where a vCPU starts, the events injected into it, what a vendor
//! layer (VT-x now, AMD-V later) reports back after running a guest, and the
//! policies that do not depend on the vendor (which CPUID bits and MSRs a
//! guest sees). The vendor dispatch itself is `crate::arch::x86_64::hvm`.

use core::fmt;
use core::sync::atomic::AtomicBool;

/// `hvm_fep` (test-only, set at boot by `crate::hvm::fep::enable`): the
/// backends hand every #UD to the arch-neutral layer
/// ([`VcpuExit::InvalidOpcode`]).
pub static FEP: AtomicBool = AtomicBool::new(false);

pub use crate::arch::x86_64::hvm::{ArchVcpu, Loaded};

/// General registers in the SDM's numbering (the ModRM encoding), for
/// [`Loaded::reg`] and [`Loaded::set_reg`].
pub mod gpr {
    /// RAX.
    pub const RAX: u8 = 0;
    /// RCX.
    pub const RCX: u8 = 1;
    /// RDX.
    pub const RDX: u8 = 2;
    /// RBX.
    pub const RBX: u8 = 3;
    /// RSI.
    pub const RSI: u8 = 6;
    /// RDI.
    pub const RDI: u8 = 7;
    /// R8.
    pub const R8: u8 = 8;
    /// R10.
    pub const R10: u8 = 10;
}

/// Where and how a vCPU starts (docs/guests.md).
#[derive(Debug, Clone, Copy)]
pub enum StartState {
    /// Xen's PVH ABI: 32-bit protected mode, paging off.
    Pvh {
        /// Guest-physical entry point (EIP).
        rip: u64,
        /// Guest-physical address of `hvm_start_info` (EBX).
        start_info: u64,
    },
    /// Real mode at `cs`:`ip` (on VT-x this needs unrestricted guest): a
    /// `boot=real` image at 0000:7C00, or an application processor started
    /// by a start-up IPI at `vector << 8`:0000 (SDM Vol. 3A 10.4.4).
    RealMode {
        /// The code segment (its base is `cs << 4`).
        cs: u16,
        /// Entry offset in the segment (and the initial SP when `cs` is 0).
        ip: u16,
    },
    /// 64-bit mode with paging, as Xen's `VCPUOP_initialise` with
    /// `VCPU_HVM_MODE_64B` starts a secondary vCPU: flat 64-bit segments,
    /// the given registers.
    Long64(Long64State),
}

impl StartState {
    /// The linear address of the first instruction.
    pub fn entry_point(&self) -> u64 {
        match *self {
            Self::Pvh { rip, .. } => rip,
            Self::RealMode { cs, ip } => (u64::from(cs) << 4) + u64::from(ip),
            Self::Long64(s) => s.rip,
        }
    }

    /// The registers the vCPU starts with, in [`Long64State`]'s form: PVH's
    /// (CR0.PE and ET, RBX the start info) and real mode's (CR0.ET, SP = IP
    /// when CS is 0) with every other one 0; a 64-bit start's with EFER.LMA.
    pub fn registers(&self) -> Long64State {
        use basalt_cpu::cr::{cr0, efer};
        let (rip, rbx, rsp, cr0) = match *self {
            Self::Pvh { rip, start_info } => (rip, start_info, 0, cr0::PE | cr0::ET),
            Self::RealMode { cs, ip } => {
                let sp = if cs == 0 { u64::from(ip) } else { 0 };
                (u64::from(ip), 0, sp, cr0::ET)
            }
            Self::Long64(s) => {
                return Long64State {
                    efer: s.efer | efer::LMA,
                    ..s
                };
            }
        };
        Long64State {
            rip,
            rbx,
            rsp,
            cr0,
            ..Long64State::default()
        }
    }
}

/// The start state of a vCPU entered directly in 64-bit mode (the fields of
/// Xen's `struct vcpu_hvm_x86_64`, plus a GDTR: the Linux 64-bit entry
/// points it at the boot GDT whose selectors CS and DS name; Xen's
/// `VCPUOP_initialise` leaves it empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Long64State {
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl Long64State {
    /// The general registers it gives (R8-R15 are 0).
    pub fn gprs(&self) -> crate::arch::x86_64::gprs::GuestRegs {
        crate::arch::x86_64::gprs::GuestRegs {
            rax: self.rax,
            rbx: self.rbx,
            rcx: self.rcx,
            rdx: self.rdx,
            rsi: self.rsi,
            rdi: self.rdi,
            rbp: self.rbp,
            ..Default::default()
        }
    }
}

/// An event to inject into a vCPU at its next entry; the vendor layer
/// encodes it (VT-x: VM-entry interruption information; SVM: EVENTINJ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A maskable external interrupt: injected only when the guest can take
    /// it (RFLAGS.IF, no STI/MOV-SS blocking, no event already going in);
    /// otherwise the vendor layer asks for an interrupt-window exit.
    External(u8),
    /// An NMI: injected only when NMIs are not blocked; otherwise an
    /// NMI-window exit is asked for where the processor has one.
    Nmi,
    /// A hardware exception, with its error code where the vector has one
    /// (dropped in real mode, which pushes none).
    Exception {
        /// The vector.
        vector: u8,
        /// The error code.
        error_code: Option<u32>,
    },
    /// The software interrupt or exception (kind, vector) raised by the
    /// instruction at RIP of the given length (`hvm_fep`): delivered with
    /// the IDT checks of the instruction (VT-x); SVM does not inject it and
    /// the guest executes the instruction (docs/x86emul.md, "Forced
    /// emulation").
    Software(basalt_x86emul::SoftKind, u8, u8),
}

/// Why a vCPU stopped running, for the arch-neutral layer to handle.
#[derive(Debug)]
pub enum VcpuExit {
    /// VMCALL: a hypercall (registers in the vCPU).
    Hypercall,
    /// A #UD intercepted for `hvm_fep` (`crate::hvm::fep`).
    InvalidOpcode,
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

impl VcpuExit {
    /// The exit of a port access, whichever backend decoded it: INS/OUTS go
    /// to the string I/O emulator, IN waits for its value, OUT carries the
    /// low `size` bytes of `rax`.
    #[inline(always)]
    pub fn port_io(port: u16, size: u8, is_in: bool, string: bool, rep: bool, rax: u64) -> Self {
        if string {
            return Self::StringIo {
                port,
                size,
                is_in,
                rep,
            };
        }
        if is_in {
            return Self::IoIn { port, size };
        }
        let mask = match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        Self::IoOut {
            port,
            size,
            value: (rax & mask) as u32,
        }
    }
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
    /// The vendor layer failed: VM entry refused the state, a
    /// virtualization instruction failed, an exit Basalt does not handle.
    Backend(BackendError),
    /// Something Basalt does not emulate.
    Unsupported(&'static str),
    /// No memory for the vCPU's structures.
    OutOfMemory,
}

/// A failure of the vendor layer, described by it: what failed, the
/// vendor's code (exit reason, VM-instruction error, exit code) and its
/// meaning, e.g. "VM entry failed: INVALID_GUEST_STATE (code 33)". Static
/// text only: it travels in every [`VcpuExit`], which stays small so that
/// the exit path copies little.
#[derive(Debug, Clone, Copy)]
pub struct BackendError {
    /// What failed ("VM entry failed", "VMX instruction failed", ...).
    pub what: &'static str,
    /// The vendor's number for it, where the detail does not say it
    /// already (an exit reason, an exit code).
    pub code: Option<u32>,
    /// The vendor's name or description of it.
    pub detail: &'static str,
}

/// A vendor failure for the arch-neutral layer.
#[cold]
#[inline(never)]
pub fn backend_error(what: &'static str, code: Option<u32>, detail: &'static str) -> GuestError {
    GuestError::Backend(BackendError { what, code, detail })
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)?;
        match self.code {
            Some(code) => write!(f, " (code {code})"),
            None => Ok(()),
        }
    }
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
            Self::Backend(e) => write!(f, "{e}"),
            Self::Unsupported(what) => write!(f, "{what} is not emulated"),
            Self::OutOfMemory => write!(f, "out of memory for the vCPU"),
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

/// CPUID for a vCPU whose general registers are `regs` (RAX and RCX in,
/// RAX-RDX out), answered by the guest CPU model; CR4.OSXSAVE is read
/// (`osxsave`) only for the leaves that depend on it.
#[inline(always)]
pub fn cpuid(
    regs: &mut crate::arch::x86_64::gprs::GuestRegs,
    context: &CpuidContext,
    xcr0: u64,
    osxsave: impl Fn() -> bool,
) {
    let inputs = CpuidInputs {
        context,
        xcr0,
        osxsave,
    };
    let r = guest_cpu().cpuid(regs.rax as u32, regs.rcx as u32, &inputs);
    [regs.rax, regs.rbx, regs.rcx, regs.rdx] = r.map(u64::from);
}

/// What a CPUID answer of a vCPU depends on.
struct CpuidInputs<'a, F> {
    context: &'a CpuidContext,
    xcr0: u64,
    osxsave: F,
}

impl<F: Fn() -> bool> basalt_cpu::cpuid::VcpuState for CpuidInputs<'_, F> {
    fn signature(&self) -> [u8; 12] {
        self.context.signature
    }
    fn apic_id(&self) -> u32 {
        self.context.apic_id
    }
    fn tsc_hz(&self) -> u64 {
        self.context.tsc_hz
    }
    fn osxsave(&self) -> bool {
        (self.osxsave)()
    }
    fn xcr0(&self) -> u64 {
        self.xcr0
    }
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
        None => init_guest_cpu(&crate::arch::x86_64::hvm::guest_limits()),
    }
}

/// The MSRs the virtual platform answers (the arch-neutral layer, through
/// [`VcpuExit::RdMsr`] and [`VcpuExit::WrMsr`]): `IA32_APIC_BASE`,
/// `IA32_TSC_DEADLINE`, the x2APIC range and Xen's hypercall-page MSR.
pub fn is_platform_msr(msr: u32) -> bool {
    matches!(
        msr,
        0x1b | 0x6e0 | 0x800..=0x8ff | basalt_xen::HYPERCALL_PAGE_MSR
    )
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
        // IA32_DEBUGCTL: architectural since the P6, so read without a
        // fault handler (XTF's debug-regs); none of its controls (LBR, BTF,
        // BTS, freezes) is offered, so it stays 0.
        0x1d9 => Some(0),
        // IA32_MTRR_DEF_TYPE: MTRRs enabled, default write-back.
        0x2ff => Some(0x806),
        // AMD NB_CFG: Linux reads it on AMD CPUs (family 0x10 and later)
        // without a fault handler to enable extended PCI configuration
        // access through CF8; the guest's PCI bus is Basalt's, with none.
        0xc001_001f => Some(0),
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
        // IA32_DEBUGCTL: 0 only. Last-branch recording (bit 0), single-step
        // on branches (1) and branch trace store (6-8) are withheld: a
        // guest that sets them gets #GP, as on Xen for what it withholds.
        0x1d9 => value == 0,
        // IA32_MTRR_DEF_TYPE: only the type (2:0), FE (10) and E (11)
        // exist, and the type must be UC, WC, WT, WP or WB (SDM Vol. 3A
        // 12.11.2.1). The guest's memory stays write-back whatever it says.
        0x2ff => value & !0xc07 == 0 && matches!(value & 7, 0 | 1 | 4 | 5 | 6),
        // AMD NB_CFG: ignored (see `read_msr`).
        0xc001_001f => true,
        _ => false,
    }
}
