//! Decoding VM exits (Intel SDM Vol. 3C, Appendix C, "VMX Basic Exit Reasons"; "VM Exits":
//! "Basic VM-Exit Information" with its exit-qualification tables; "Virtual Machine Control
//! Structures": "VM-Exit Information Fields" and "VM-Entry Control Fields" for event
//! injection).

use crate::error::VmFail;
use crate::fields::{VmcsAccess, VmcsExt, ctrl};

macro_rules! exit_reasons {
    ($( $(#[$m:meta])* $V:ident = $n:literal, $name:literal; )*) => {
        /// A basic exit reason (bits 15:0 of the exit-reason field; SDM Appendix C, "VMX
        /// Basic Exit Reasons"). Numbers the appendix does not list (35, 38, 42, 71, 80 and
        /// up) decode to [`ExitReason::Unknown`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ExitReason {
            $( $(#[$m])* #[doc = concat!("(", stringify!($n), ") ", $name, ".")] $V, )*
            /// A number Appendix C does not define (or that is newer than this crate).
            Unknown(u16),
        }

        impl ExitReason {
            /// The exit reason with basic number `basic`.
            pub const fn from_basic(basic: u16) -> Self {
                match basic {
                    $( $n => Self::$V, )*
                    other => Self::Unknown(other),
                }
            }

            /// The basic exit-reason number.
            pub const fn number(self) -> u16 {
                match self {
                    $( Self::$V => $n, )*
                    Self::Unknown(n) => n,
                }
            }

            /// The SDM's name for the exit reason (Appendix C), e.g. `"EPT violation"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$V => $name, )*
                    Self::Unknown(_) => "unknown exit reason",
                }
            }
        }
    };
}

exit_reasons! {
    ExceptionOrNmi = 0, "exception or non-maskable interrupt (NMI)";
    ExternalInterrupt = 1, "external interrupt";
    TripleFault = 2, "triple fault";
    Init = 3, "INIT signal";
    Sipi = 4, "start-up IPI (SIPI)";
    IoSmi = 5, "I/O system-management interrupt (SMI)";
    OtherSmi = 6, "other SMI";
    InterruptWindow = 7, "interrupt window";
    NmiWindow = 8, "NMI window";
    TaskSwitch = 9, "task switch";
    Cpuid = 10, "CPUID";
    Getsec = 11, "GETSEC";
    Hlt = 12, "HLT";
    Invd = 13, "INVD";
    Invlpg = 14, "INVLPG";
    Rdpmc = 15, "RDPMC";
    Rdtsc = 16, "RDTSC";
    Rsm = 17, "RSM";
    Vmcall = 18, "VMCALL";
    Vmclear = 19, "VMCLEAR";
    Vmlaunch = 20, "VMLAUNCH";
    Vmptrld = 21, "VMPTRLD";
    Vmptrst = 22, "VMPTRST";
    Vmread = 23, "VMREAD";
    Vmresume = 24, "VMRESUME";
    Vmwrite = 25, "VMWRITE";
    Vmxoff = 26, "VMXOFF";
    Vmxon = 27, "VMXON";
    CrAccess = 28, "control-register accesses";
    MovDr = 29, "MOV DR";
    IoInstruction = 30, "I/O instruction";
    Rdmsr = 31, "RDMSR";
    Wrmsr = 32, "WRMSR";
    EntryFailGuestState = 33, "VM-entry failure due to invalid guest state";
    EntryFailMsrLoading = 34, "VM-entry failure due to MSR loading";
    Mwait = 36, "MWAIT";
    MonitorTrapFlag = 37, "monitor trap flag";
    Monitor = 39, "MONITOR";
    Pause = 40, "PAUSE";
    EntryFailMachineCheck = 41, "VM-entry failure due to machine-check event";
    TprBelowThreshold = 43, "TPR below threshold";
    ApicAccess = 44, "APIC access";
    VirtualizedEoi = 45, "virtualized EOI";
    GdtrIdtrAccess = 46, "access to GDTR or IDTR";
    LdtrTrAccess = 47, "access to LDTR or TR";
    EptViolation = 48, "EPT violation";
    EptMisconfig = 49, "EPT misconfiguration";
    Invept = 50, "INVEPT";
    Rdtscp = 51, "RDTSCP";
    PreemptionTimer = 52, "VMX-preemption timer expired";
    Invvpid = 53, "INVVPID";
    Wbinvd = 54, "WBINVD or WBNOINVD";
    Xsetbv = 55, "XSETBV";
    ApicWrite = 56, "APIC write";
    Rdrand = 57, "RDRAND";
    Invpcid = 58, "INVPCID";
    Vmfunc = 59, "VMFUNC";
    Encls = 60, "ENCLS";
    Rdseed = 61, "RDSEED";
    PmlFull = 62, "page-modification log full";
    Xsaves = 63, "XSAVES";
    Xrstors = 64, "XRSTORS";
    Pconfig = 65, "PCONFIG";
    Spp = 66, "SPP-related event";
    Umwait = 67, "UMWAIT";
    Tpause = 68, "TPAUSE";
    Loadiwkey = 69, "LOADIWKEY";
    Enclv = 70, "ENCLV";
    EnqcmdPasidFailure = 72, "ENQCMD PASID translation failure";
    EnqcmdsPasidFailure = 73, "ENQCMDS PASID translation failure";
    BusLock = 74, "bus lock";
    InstructionTimeout = 75, "instruction timeout";
    Seamcall = 76, "SEAMCALL";
    Tdcall = 77, "TDCALL";
    Rdmsrlist = 78, "RDMSRLIST";
    Wrmsrlist = 79, "WRMSRLIST";
}

impl ExitReason {
    /// The basic exit reason in bits 15:0 of a raw exit-reason field, ignoring the flag bits
    /// (use [`ExitReasonField::from_raw`] to see them, in particular "VM-entry failure").
    pub const fn from_raw(raw: u32) -> Self {
        Self::from_basic(raw as u16)
    }
}

impl core::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

/// The whole exit-reason field ([`crate::fields::exit::EXIT_REASON`]; SDM "VM-Exit
/// Information Fields", table "Format of Exit Reason").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitReasonField {
    /// Bits 15:0: the basic exit reason.
    pub reason: ExitReason,
    /// Bit 27: the exit happened from enclave mode.
    pub enclave_mode: bool,
    /// Bit 28: an MTF VM exit was pending (SMM VM exits).
    pub pending_mtf: bool,
    /// Bit 29: the exit happened from VMX root operation (SMM VM exits).
    pub from_vmx_root: bool,
    /// Bit 31: VM-entry failure. The entry did not happen; the guest state was not loaded
    /// (reasons 33, 34 and 41).
    pub entry_failure: bool,
}

impl ExitReasonField {
    /// Splits a raw exit-reason field.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            reason: ExitReason::from_basic(raw as u16),
            enclave_mode: raw & (1 << 27) != 0,
            pending_mtf: raw & (1 << 28) != 0,
            from_vmx_root: raw & (1 << 29) != 0,
            entry_failure: raw & (1 << 31) != 0,
        }
    }
}

/// The access type of a control-register exit (bits 5:4 of the qualification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrAccessType {
    /// 0: MOV to CR (write from [`CrAccess::gpr`]).
    MovToCr,
    /// 1: MOV from CR (read into [`CrAccess::gpr`]).
    MovFromCr,
    /// 2: CLTS.
    Clts,
    /// 3: LMSW (source in [`CrAccess::lmsw_source`]).
    Lmsw,
}

/// The exit qualification of a control-register access (exit reason 28; SDM "VM Exits",
/// table "Exit Qualification for Control-Register Accesses").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CrAccess {
    /// Bits 3:0: the control register (0 for CLTS and LMSW).
    pub cr: u8,
    /// Bits 5:4: the access type.
    pub access: CrAccessType,
    /// Bit 6 (LMSW only): the operand was in memory rather than a register.
    pub lmsw_memory_operand: bool,
    /// Bits 11:8 (MOV CR only): the general-purpose register, in the SDM's numbering (0 = RAX
    /// ... 15 = R15).
    pub gpr: u8,
    /// Bits 31:16 (LMSW only): the LMSW source data.
    pub lmsw_source: u16,
}

impl CrAccess {
    /// Decodes the exit qualification.
    pub const fn decode(qualification: u64) -> Self {
        Self {
            cr: (qualification & 0xF) as u8,
            access: match (qualification >> 4) & 3 {
                0 => CrAccessType::MovToCr,
                1 => CrAccessType::MovFromCr,
                2 => CrAccessType::Clts,
                _ => CrAccessType::Lmsw,
            },
            lmsw_memory_operand: qualification & (1 << 6) != 0,
            gpr: ((qualification >> 8) & 0xF) as u8,
            lmsw_source: (qualification >> 16) as u16,
        }
    }
}

/// The exit qualification of an I/O instruction (exit reason 30; SDM "VM Exits", table "Exit
/// Qualification for I/O Instructions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoAccess {
    /// Bits 2:0: the access size in bytes (1, 2 or 4).
    pub size: u8,
    /// Bit 3: IN/INS (1) rather than OUT/OUTS (0).
    pub is_in: bool,
    /// Bit 4: a string instruction (INS/OUTS).
    pub string: bool,
    /// Bit 5: a REP prefix.
    pub rep: bool,
    /// Bit 6: the port was an immediate operand (otherwise DX).
    pub immediate: bool,
    /// Bits 31:16: the port number.
    pub port: u16,
}

impl IoAccess {
    /// Decodes the exit qualification; `None` if the size field holds the undefined value 2.
    pub const fn decode(qualification: u64) -> Option<Self> {
        let size = match qualification & 7 {
            0 => 1,
            1 => 2,
            3 => 4,
            _ => return None,
        };
        Some(Self {
            size,
            is_in: qualification & (1 << 3) != 0,
            string: qualification & (1 << 4) != 0,
            rep: qualification & (1 << 5) != 0,
            immediate: qualification & (1 << 6) != 0,
            port: (qualification >> 16) as u16,
        })
    }
}

/// The exit qualification of an EPT violation (exit reason 48; SDM "VM Exits", table "Exit
/// Qualification for EPT Violations"). The faulting guest-physical address is in
/// [`crate::fields::exit::GUEST_PHYSICAL_ADDRESS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EptViolation {
    /// Bit 0: the access was a data read.
    pub read: bool,
    /// Bit 1: the access was a data write.
    pub write: bool,
    /// Bit 2: the access was an instruction fetch.
    pub fetch: bool,
    /// Bit 3: the guest-physical address was readable (AND of the EPT entries' read bits).
    pub readable: bool,
    /// Bit 4: the guest-physical address was writable.
    pub writable: bool,
    /// Bit 5: the guest-physical address was executable (for supervisor-mode linear
    /// addresses when mode-based execute control is on).
    pub executable: bool,
    /// Bit 6: executable for user-mode linear addresses (mode-based execute control only).
    pub user_executable: bool,
    /// Bit 7: the guest-linear-address field is valid.
    pub linear_address_valid: bool,
    /// Bit 8 (when bit 7 is set): the access was to the translation of a linear address (1)
    /// rather than to a guest paging-structure entry (0).
    pub linear_translation: bool,
    /// Bit 12: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl EptViolation {
    /// Decodes the exit qualification.
    pub const fn decode(qualification: u64) -> Self {
        let q = qualification;
        Self {
            read: bit(q, 0),
            write: bit(q, 1),
            fetch: bit(q, 2),
            readable: bit(q, 3),
            writable: bit(q, 4),
            executable: bit(q, 5),
            user_executable: bit(q, 6),
            linear_address_valid: bit(q, 7),
            linear_translation: bit(q, 8),
            nmi_unblocking: bit(q, 12),
        }
    }
}

const fn bit(value: u64, n: u32) -> bool {
    value & (1 << n) != 0
}

/// The interruption type (bits 10:8) of an interruption-information field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterruptionType {
    /// 0: external interrupt.
    External,
    /// 1: reserved.
    Reserved,
    /// 2: non-maskable interrupt (vector 2).
    Nmi,
    /// 3: hardware exception (every exception but #BP and #OF from INT3/INTO).
    HardwareException,
    /// 4: software interrupt (INT n).
    SoftwareInterrupt,
    /// 5: privileged software exception (INT1).
    PrivilegedSoftwareException,
    /// 6: software exception (INT3 or INTO).
    SoftwareException,
    /// 7: other event (e.g. the pending MTF VM exit, vector 0).
    Other,
}

impl InterruptionType {
    /// Decodes bits 2:0 of `raw`.
    pub const fn from_raw(raw: u32) -> Self {
        match raw & 7 {
            0 => Self::External,
            1 => Self::Reserved,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            _ => Self::Other,
        }
    }

    /// The 3-bit encoding.
    pub const fn raw(self) -> u32 {
        match self {
            Self::External => 0,
            Self::Reserved => 1,
            Self::Nmi => 2,
            Self::HardwareException => 3,
            Self::SoftwareInterrupt => 4,
            Self::PrivilegedSoftwareException => 5,
            Self::SoftwareException => 6,
            Self::Other => 7,
        }
    }
}

/// An interruption-information field: the VM-exit interruption information, the IDT-vectoring
/// information, or the VM-entry interruption information used for event injection (SDM
/// "Virtual Machine Control Structures": "VM-Entry Controls for Event Injection" and
/// "Information for VM Exits Due to Vectored Events").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterruptionInfo {
    /// Bits 7:0: the vector.
    pub vector: u8,
    /// Bits 10:8: the type.
    pub kind: InterruptionType,
    /// Bit 11: an error code is delivered (in the matching error-code field).
    pub error_code_valid: bool,
    /// Bit 12 (exit fields only): NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
    /// Bit 31: the field is valid.
    pub valid: bool,
}

impl InterruptionInfo {
    /// Decodes a raw field.
    pub const fn decode(raw: u32) -> Self {
        Self {
            vector: raw as u8,
            kind: InterruptionType::from_raw(raw >> 8),
            error_code_valid: raw & (1 << 11) != 0,
            nmi_unblocking: raw & (1 << 12) != 0,
            valid: raw & (1 << 31) != 0,
        }
    }

    /// Encodes the field (bit 12 is written as `nmi_unblocking`; it must be 0 for injection).
    pub const fn encode(self) -> u32 {
        (self.vector as u32)
            | (self.kind.raw() << 8)
            | ((self.error_code_valid as u32) << 11)
            | ((self.nmi_unblocking as u32) << 12)
            | ((self.valid as u32) << 31)
    }

    /// The VM-entry interruption information for injecting hardware exception `vector`,
    /// delivering an error code iff `error_code` is `Some` (write the code itself to
    /// [`crate::fields::ctrl::ENTRY_EXCEPTION_ERROR_CODE`], or use [`EventInjection`]).
    ///
    /// Use [`EventInjection::nmi`] for vector 2 and software-exception type for INT3/INTO.
    /// With an unrestricted guest in real mode (CR0.PE = 0) no error code may be delivered.
    pub const fn hardware_exception(vector: u8, error_code: Option<u32>) -> u32 {
        Self {
            vector,
            kind: InterruptionType::HardwareException,
            error_code_valid: error_code.is_some(),
            nmi_unblocking: false,
            valid: true,
        }
        .encode()
    }
}

/// An event to inject on the next VM entry: the three VM-entry event-injection fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventInjection {
    /// The VM-entry interruption-information field.
    pub info: u32,
    /// The VM-entry exception error code, if the event delivers one.
    pub error_code: Option<u32>,
    /// The VM-entry instruction length (software interrupts and exceptions only).
    pub instruction_length: Option<u32>,
}

impl EventInjection {
    /// A hardware exception.
    pub const fn hardware_exception(vector: u8, error_code: Option<u32>) -> Self {
        Self {
            info: InterruptionInfo::hardware_exception(vector, error_code),
            error_code,
            instruction_length: None,
        }
    }

    /// An external interrupt with `vector`.
    pub const fn external_interrupt(vector: u8) -> Self {
        let info = InterruptionInfo {
            vector,
            kind: InterruptionType::External,
            error_code_valid: false,
            nmi_unblocking: false,
            valid: true,
        };
        Self {
            info: info.encode(),
            error_code: None,
            instruction_length: None,
        }
    }

    /// A non-maskable interrupt (vector 2).
    pub const fn nmi() -> Self {
        let info = InterruptionInfo {
            vector: 2,
            kind: InterruptionType::Nmi,
            error_code_valid: false,
            nmi_unblocking: false,
            valid: true,
        };
        Self {
            info: info.encode(),
            error_code: None,
            instruction_length: None,
        }
    }

    /// A software event of `kind` (INT n; ICEBP; INT3 or INTO) raised by an instruction of
    /// `instruction_length` bytes.
    pub const fn software(kind: InterruptionType, vector: u8, instruction_length: u32) -> Self {
        let info = InterruptionInfo {
            vector,
            kind,
            error_code_valid: false,
            nmi_unblocking: false,
            valid: true,
        };
        Self {
            info: info.encode(),
            error_code: None,
            instruction_length: Some(instruction_length),
        }
    }

    /// Writes the event-injection fields of the current VMCS.
    pub fn write_to<V: VmcsAccess + ?Sized>(&self, vmcs: &mut V) -> Result<(), VmFail> {
        if let Some(code) = self.error_code {
            vmcs.write32(ctrl::ENTRY_EXCEPTION_ERROR_CODE, code)?;
        }
        if let Some(len) = self.instruction_length {
            vmcs.write32(ctrl::ENTRY_INSTRUCTION_LENGTH, len)?;
        }
        vmcs.write32(ctrl::ENTRY_INTERRUPTION_INFO, self.info)
    }
}

/// The SDM's numbering of general-purpose registers in exit qualifications and the
/// VM-exit instruction-information field (e.g. table "Exit Qualification for
/// Control-Register Accesses", bits 11:8), for the tests.
#[cfg(test)]
pub mod gpr {
    /// RAX.
    pub const RAX: u8 = 0;
    /// RCX.
    pub const RCX: u8 = 1;
    /// RDX.
    pub const RDX: u8 = 2;
    /// RBX.
    pub const RBX: u8 = 3;
    /// RSP (its guest value is in the VMCS, not in the saved registers).
    pub const RSP: u8 = 4;
    /// RBP.
    pub const RBP: u8 = 5;
    /// RSI.
    pub const RSI: u8 = 6;
    /// RDI.
    pub const RDI: u8 = 7;
    /// R8.
    pub const R8: u8 = 8;
    /// R9.
    pub const R9: u8 = 9;
    /// R10.
    pub const R10: u8 = 10;
    /// R11.
    pub const R11: u8 = 11;
    /// R12.
    pub const R12: u8 = 12;
    /// R13.
    pub const R13: u8 = 13;
    /// R14.
    pub const R14: u8 = 14;
    /// R15.
    pub const R15: u8 = 15;

    const NAMES: [&str; 16] = [
        "RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", "R8", "R9", "R10", "R11", "R12",
        "R13", "R14", "R15",
    ];

    /// The name of register `index` (0-15), or `"?"`.
    pub const fn name(index: u8) -> &'static str {
        if (index as usize) < NAMES.len() {
            NAMES[index as usize]
        } else {
            "?"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reason_numbers_round_trip() {
        for n in 0..=200u16 {
            assert_eq!(ExitReason::from_basic(n).number(), n);
        }
        for n in [35, 38, 42, 71, 80] {
            assert_eq!(ExitReason::from_basic(n), ExitReason::Unknown(n));
        }
        assert_eq!(ExitReason::from_basic(0), ExitReason::ExceptionOrNmi);
        assert_eq!(ExitReason::from_basic(10), ExitReason::Cpuid);
        assert_eq!(ExitReason::from_basic(30), ExitReason::IoInstruction);
        assert_eq!(ExitReason::from_basic(48), ExitReason::EptViolation);
        assert_eq!(ExitReason::from_basic(52), ExitReason::PreemptionTimer);
        assert_eq!(ExitReason::from_basic(69), ExitReason::Loadiwkey);
        assert_eq!(ExitReason::EptViolation.name(), "EPT violation");
        assert_eq!(ExitReason::Cpuid.to_string(), "CPUID (10)");
    }

    #[test]
    fn exit_reason_field_splits_entry_failure() {
        let f = ExitReasonField::from_raw(0x8000_0021);
        assert!(f.entry_failure);
        assert_eq!(f.reason, ExitReason::EntryFailGuestState);
        assert_eq!(
            ExitReason::from_raw(0x8000_0021),
            ExitReason::EntryFailGuestState
        );
        let f = ExitReasonField::from_raw(12);
        assert!(!f.entry_failure && !f.enclave_mode);
        assert_eq!(f.reason, ExitReason::Hlt);
        assert!(ExitReasonField::from_raw(1 << 27 | 1).enclave_mode);
    }

    #[test]
    fn cr_access_qualification() {
        // MOV to CR4 from R10.
        let q = CrAccess::decode(0x0A04);
        assert_eq!(q.cr, 4);
        assert_eq!(q.access, CrAccessType::MovToCr);
        assert_eq!(q.gpr, gpr::R10);
        // MOV RAX, CR3
        let q = CrAccess::decode(0x0013);
        assert_eq!(
            (q.cr, q.access, q.gpr),
            (3, CrAccessType::MovFromCr, gpr::RAX)
        );
        // CLTS
        assert_eq!(CrAccess::decode(0x20).access, CrAccessType::Clts);
        // LMSW [mem] with source 0x0011.
        let q = CrAccess::decode(0x0011_0070);
        assert_eq!(q.access, CrAccessType::Lmsw);
        assert!(q.lmsw_memory_operand);
        assert_eq!(q.lmsw_source, 0x11);
        assert_eq!(gpr::name(q.gpr), "RAX");
        assert_eq!(gpr::name(15), "R15");
        assert_eq!(gpr::name(16), "?");
    }

    #[test]
    fn io_qualification() {
        // OUT DX, AL to 0x3F8.
        let q = IoAccess::decode(0x03F8_0000).unwrap();
        assert_eq!(
            (q.size, q.is_in, q.string, q.rep, q.immediate, q.port),
            (1, false, false, false, false, 0x3F8)
        );
        // REP INSW from port 0x1F0 (DX).
        let q = IoAccess::decode(0x01F0_0039).unwrap();
        assert_eq!((q.size, q.is_in, q.string, q.rep), (2, true, true, true));
        assert_eq!(q.port, 0x1F0);
        // IN EAX, 0x71 (immediate).
        let q = IoAccess::decode(0x0071_004B).unwrap();
        assert_eq!(
            (q.size, q.is_in, q.immediate, q.port),
            (4, true, true, 0x71)
        );
        assert_eq!(IoAccess::decode(2), None);
    }

    #[test]
    fn ept_violation_qualification() {
        // Write to a read-only page through a linear address.
        let q = EptViolation::decode(0x18A);
        assert!(q.write && !q.read && !q.fetch);
        assert!(q.readable && !q.writable && !q.executable);
        assert!(q.linear_address_valid && q.linear_translation);
        let q = EptViolation::decode(0x1004);
        assert!(q.fetch && q.nmi_unblocking && !q.linear_address_valid);
    }

    #[test]
    fn interruption_info_round_trip() {
        let gp = InterruptionInfo::hardware_exception(13, Some(0));
        assert_eq!(gp, 0x8000_0B0D);
        let d = InterruptionInfo::decode(gp);
        assert_eq!(d.vector, 13);
        assert_eq!(d.kind, InterruptionType::HardwareException);
        assert!(d.error_code_valid && d.valid && !d.nmi_unblocking);
        assert_eq!(d.encode(), gp);
        assert_eq!(InterruptionInfo::hardware_exception(6, None), 0x8000_0306);
        for raw in [
            0x8000_0020u32,
            0x8000_0202,
            0x8000_0403,
            0x8000_1B0E,
            0x8000_0701,
            0,
        ] {
            assert_eq!(InterruptionInfo::decode(raw).encode(), raw);
        }
        for t in 0..8 {
            assert_eq!(InterruptionType::from_raw(t).raw(), t);
        }
        assert_eq!(EventInjection::nmi().info, 0x8000_0202);
        assert_eq!(EventInjection::external_interrupt(0x30).info, 0x8000_0030);
        assert_eq!(
            EventInjection::software(InterruptionType::SoftwareInterrupt, 0x80, 2).info,
            0x8000_0480
        );
    }

    struct Log(Vec<(u32, u64)>);

    impl VmcsAccess for Log {
        fn read_raw(&self, _: u32) -> Result<u64, VmFail> {
            Err(VmFail::Invalid)
        }
        fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
            self.0.push((encoding, value));
            Ok(())
        }
    }

    #[test]
    fn event_injection_writes_fields() {
        let mut log = Log(Vec::new());
        EventInjection::hardware_exception(14, Some(0x2))
            .write_to(&mut log)
            .unwrap();
        assert_eq!(log.0, vec![(0x4018, 0x2), (0x4016, 0x8000_0B0E)]);
        let mut log = Log(Vec::new());
        EventInjection::software(InterruptionType::SoftwareInterrupt, 0x21, 2)
            .write_to(&mut log)
            .unwrap();
        assert_eq!(log.0, vec![(0x401A, 2), (0x4016, 0x8000_0421)]);
    }
}
