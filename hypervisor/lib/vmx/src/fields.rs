//! VMCS field encodings (Intel SDM Vol. 3C, Appendix B, "Field Encoding in VMCS"), typed by
//! width, and the [`VmcsAccess`] trait the kernel implements with `VMREAD`/`VMWRITE`.
//!
//! # Encoding
//!
//! A field is named by a 32-bit encoding (SDM "Virtual Machine Control Structures", "VMREAD,
//! VMWRITE, and Encodings of VMCS Fields", table "Structure of VMCS Component Encoding"):
//!
//! | bits | meaning |
//! | --- | --- |
//! | 0 | access type: 0 = full, 1 = high (upper 32 bits of a 64-bit field) |
//! | 9:1 | index |
//! | 11:10 | type: 0 = control, 1 = VM-exit information (read-only), 2 = guest, 3 = host |
//! | 12 | reserved (0) |
//! | 14:13 | width: 0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 = natural-width |
//! | 31:15 | reserved (0) |
//!
//! Basalt runs in 64-bit mode, so every 64-bit field is accessed "full" (bit 0 clear) and
//! natural-width fields are 64 bits wide. Each width has its own Rust type ([`Field16`],
//! [`Field32`], [`Field64`], [`FieldNatural`]) and [`VmcsExt`] only accepts a value of the
//! matching width. For the tests, each group's `FIELDS` lists its constants with their names;
//! one checks that each constant's width bits agree with its type.

use crate::error::VmFail;

/// The width of a VMCS field, from bits 14:13 of its encoding.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    /// 16-bit field (width bits 0).
    W16,
    /// 64-bit field (width bits 1).
    W64,
    /// 32-bit field (width bits 2).
    W32,
    /// Natural-width field (width bits 3): 64 bits on a 64-bit processor.
    Natural,
}

#[cfg(test)]
impl Width {
    /// The width that bits 14:13 of `encoding` declare.
    pub const fn of_encoding(encoding: u32) -> Self {
        match (encoding >> 13) & 3 {
            0 => Self::W16,
            1 => Self::W64,
            2 => Self::W32,
            _ => Self::Natural,
        }
    }
}

/// The kind of a VMCS field, from bits 11:10 of its encoding.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// VM-execution, VM-exit and VM-entry control fields (type 0).
    Control,
    /// Read-only VM-exit information fields (type 1), including the VM-instruction error.
    ExitInfo,
    /// Guest-state fields (type 2).
    Guest,
    /// Host-state fields (type 3).
    Host,
}

#[cfg(test)]
impl Group {
    /// The group that bits 11:10 of `encoding` declare.
    pub const fn of_encoding(encoding: u32) -> Self {
        match (encoding >> 10) & 3 {
            0 => Self::Control,
            1 => Self::ExitInfo,
            2 => Self::Guest,
            _ => Self::Host,
        }
    }

    /// The name of this crate's submodule holding the group's constants.
    pub const fn module(self) -> &'static str {
        match self {
            Self::Control => "ctrl",
            Self::ExitInfo => "exit",
            Self::Guest => "guest",
            Self::Host => "host",
        }
    }
}

macro_rules! field_type {
    ($(#[$m:meta])* $name:ident, $width:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub u32);

        #[cfg(test)]
        impl $name {
            /// The width every field of this type has.
            pub const WIDTH: Width = $width;
        }

        impl $name {
            /// The field's encoding, the operand of `VMREAD`/`VMWRITE`.
            pub const fn encoding(self) -> u32 {
                self.0
            }
        }
    };
}

field_type!(
    /// A 16-bit VMCS field (encoding bits 14:13 = 0).
    Field16,
    Width::W16
);
field_type!(
    /// A 32-bit VMCS field (encoding bits 14:13 = 2).
    Field32,
    Width::W32
);
field_type!(
    /// A 64-bit VMCS field, accessed "full" (encoding bits 14:13 = 1, bit 0 = 0).
    Field64,
    Width::W64
);
field_type!(
    /// A natural-width VMCS field (encoding bits 14:13 = 3): 64 bits on Basalt.
    FieldNatural,
    Width::Natural
);

/// One entry of a group's `FIELDS`: a field constant's name, group, encoding and declared width.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldInfo {
    /// The submodule the constant lives in.
    pub group: Group,
    /// The constant's name, e.g. `"RIP"` for [`guest::RIP`].
    pub name: &'static str,
    /// The field encoding.
    pub encoding: u32,
    /// The width of the constant's Rust type (which a test checks against the encoding).
    pub width: Width,
}

#[cfg(test)]
impl core::fmt::Display for FieldInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}::{}", self.group.module(), self.name)
    }
}

/// `VMREAD`/`VMWRITE` of the current VMCS by raw encoding, implemented by the kernel (and by
/// fakes in tests).
///
/// Values are passed zero-extended to 64 bits whatever the field's width, as `VMREAD` returns
/// them in 64-bit mode. Use the typed accessors of [`VmcsExt`] rather than these.
pub trait VmcsAccess {
    /// `VMREAD` of the field `encoding`.
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail>;
    /// `VMWRITE` of `value` to the field `encoding`.
    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail>;
}

/// Width-typed VMCS accessors for every [`VmcsAccess`].
///
/// Reads truncate to the field's width (the processor zero-extends narrower fields, so
/// nothing is lost); writes zero-extend.
pub trait VmcsExt: VmcsAccess {
    /// Reads a 16-bit field.
    fn read16(&self, field: Field16) -> Result<u16, VmFail> {
        self.read_raw(field.0).map(|v| v as u16)
    }
    /// Reads a 32-bit field.
    fn read32(&self, field: Field32) -> Result<u32, VmFail> {
        self.read_raw(field.0).map(|v| v as u32)
    }
    /// Reads a 64-bit field.
    fn read64(&self, field: Field64) -> Result<u64, VmFail> {
        self.read_raw(field.0)
    }
    /// Reads a natural-width field.
    fn read_nat(&self, field: FieldNatural) -> Result<u64, VmFail> {
        self.read_raw(field.0)
    }
    /// Writes a 16-bit field.
    fn write16(&mut self, field: Field16, value: u16) -> Result<(), VmFail> {
        self.write_raw(field.0, u64::from(value))
    }
    /// Writes a 32-bit field.
    fn write32(&mut self, field: Field32, value: u32) -> Result<(), VmFail> {
        self.write_raw(field.0, u64::from(value))
    }
    /// Writes a 64-bit field.
    fn write64(&mut self, field: Field64, value: u64) -> Result<(), VmFail> {
        self.write_raw(field.0, value)
    }
    /// Writes a natural-width field.
    fn write_nat(&mut self, field: FieldNatural, value: u64) -> Result<(), VmFail> {
        self.write_raw(field.0, value)
    }
}

impl<T: VmcsAccess + ?Sized> VmcsExt for T {}

/// Defines typed field constants and the module's `FIELDS` table.
macro_rules! fields {
    ($group:expr; $( $(#[$doc:meta])* $name:ident: $ty:ident = $enc:literal; )*) => {
        $( $(#[$doc])* pub const $name: $ty = $ty($enc); )*

        /// Every field constant of this module, in encoding order within each width.
        #[cfg(test)]
        pub const FIELDS: &[$crate::fields::FieldInfo] = &[
            $(
                $crate::fields::FieldInfo {
                    group: $group,
                    name: stringify!($name),
                    encoding: $enc,
                    width: $ty::WIDTH,
                },
            )*
        ];
    };
}

/// The registers of one guest segment (or system-segment register) in the VMCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentFields {
    /// The register's name, e.g. `"CS"`.
    pub name: &'static str,
    /// The selector field.
    pub selector: Field16,
    /// The segment-limit field.
    pub limit: Field32,
    /// The access-rights field (format: [`crate::segment::AccessRights`]).
    pub access_rights: Field32,
    /// The base-address field.
    pub base: FieldNatural,
}

impl SegmentFields {
    const fn of(
        name: &'static str,
        selector: Field16,
        limit: Field32,
        access_rights: Field32,
        base: FieldNatural,
    ) -> Self {
        Self {
            name,
            selector,
            limit,
            access_rights,
            base,
        }
    }
}

/// Guest-state fields (Appendix B; described in "Virtual Machine Control Structures",
/// "Guest-State Area": "Guest Register State" and "Guest Non-Register State").
pub mod guest {
    use super::{Field16, Field32, Field64, FieldNatural, SegmentFields};

    fields! { super::Group::Guest;
        /// Guest ES selector.
        ES_SELECTOR: Field16 = 0x0800;
        /// Guest CS selector.
        CS_SELECTOR: Field16 = 0x0802;
        /// Guest SS selector.
        SS_SELECTOR: Field16 = 0x0804;
        /// Guest DS selector.
        DS_SELECTOR: Field16 = 0x0806;
        /// Guest FS selector.
        FS_SELECTOR: Field16 = 0x0808;
        /// Guest GS selector.
        GS_SELECTOR: Field16 = 0x080A;
        /// Guest LDTR selector.
        LDTR_SELECTOR: Field16 = 0x080C;
        /// Guest TR selector.
        TR_SELECTOR: Field16 = 0x080E;
        /// Guest interrupt status (virtual-interrupt delivery: RVI in bits 7:0, SVI in 15:8).
        INTERRUPT_STATUS: Field16 = 0x0810;
        /// PML index (page-modification logging).
        PML_INDEX: Field16 = 0x0812;

        /// VMCS link pointer; must be all ones unless VMCS shadowing is used.
        VMCS_LINK_POINTER: Field64 = 0x2800;
        /// Guest IA32_DEBUGCTL.
        IA32_DEBUGCTL: Field64 = 0x2802;
        /// Guest IA32_PAT.
        IA32_PAT: Field64 = 0x2804;
        /// Guest IA32_EFER.
        IA32_EFER: Field64 = 0x2806;
        /// Guest IA32_PERF_GLOBAL_CTRL.
        IA32_PERF_GLOBAL_CTRL: Field64 = 0x2808;
        /// Guest PDPTE0 (PAE paging with EPT).
        PDPTE0: Field64 = 0x280A;
        /// Guest PDPTE1.
        PDPTE1: Field64 = 0x280C;
        /// Guest PDPTE2.
        PDPTE2: Field64 = 0x280E;
        /// Guest PDPTE3.
        PDPTE3: Field64 = 0x2810;
        /// Guest IA32_BNDCFGS.
        IA32_BNDCFGS: Field64 = 0x2812;

        /// Guest ES limit.
        ES_LIMIT: Field32 = 0x4800;
        /// Guest CS limit.
        CS_LIMIT: Field32 = 0x4802;
        /// Guest SS limit.
        SS_LIMIT: Field32 = 0x4804;
        /// Guest DS limit.
        DS_LIMIT: Field32 = 0x4806;
        /// Guest FS limit.
        FS_LIMIT: Field32 = 0x4808;
        /// Guest GS limit.
        GS_LIMIT: Field32 = 0x480A;
        /// Guest LDTR limit.
        LDTR_LIMIT: Field32 = 0x480C;
        /// Guest TR limit.
        TR_LIMIT: Field32 = 0x480E;
        /// Guest GDTR limit.
        GDTR_LIMIT: Field32 = 0x4810;
        /// Guest IDTR limit.
        IDTR_LIMIT: Field32 = 0x4812;
        /// Guest ES access rights.
        ES_ACCESS_RIGHTS: Field32 = 0x4814;
        /// Guest CS access rights.
        CS_ACCESS_RIGHTS: Field32 = 0x4816;
        /// Guest SS access rights.
        SS_ACCESS_RIGHTS: Field32 = 0x4818;
        /// Guest DS access rights.
        DS_ACCESS_RIGHTS: Field32 = 0x481A;
        /// Guest FS access rights.
        FS_ACCESS_RIGHTS: Field32 = 0x481C;
        /// Guest GS access rights.
        GS_ACCESS_RIGHTS: Field32 = 0x481E;
        /// Guest LDTR access rights.
        LDTR_ACCESS_RIGHTS: Field32 = 0x4820;
        /// Guest TR access rights.
        TR_ACCESS_RIGHTS: Field32 = 0x4822;
        /// Guest interruptibility state ([`crate::state::Interruptibility`]).
        INTERRUPTIBILITY_STATE: Field32 = 0x4824;
        /// Guest activity state ([`crate::state::ActivityState`]).
        ACTIVITY_STATE: Field32 = 0x4826;
        /// Guest SMBASE.
        SMBASE: Field32 = 0x4828;
        /// Guest IA32_SYSENTER_CS.
        IA32_SYSENTER_CS: Field32 = 0x482A;
        /// VMX-preemption timer value.
        PREEMPTION_TIMER_VALUE: Field32 = 0x482E;

        /// Guest CR0.
        CR0: FieldNatural = 0x6800;
        /// Guest CR3.
        CR3: FieldNatural = 0x6802;
        /// Guest CR4.
        CR4: FieldNatural = 0x6804;
        /// Guest ES base.
        ES_BASE: FieldNatural = 0x6806;
        /// Guest CS base.
        CS_BASE: FieldNatural = 0x6808;
        /// Guest SS base.
        SS_BASE: FieldNatural = 0x680A;
        /// Guest DS base.
        DS_BASE: FieldNatural = 0x680C;
        /// Guest FS base.
        FS_BASE: FieldNatural = 0x680E;
        /// Guest GS base.
        GS_BASE: FieldNatural = 0x6810;
        /// Guest LDTR base.
        LDTR_BASE: FieldNatural = 0x6812;
        /// Guest TR base.
        TR_BASE: FieldNatural = 0x6814;
        /// Guest GDTR base.
        GDTR_BASE: FieldNatural = 0x6816;
        /// Guest IDTR base.
        IDTR_BASE: FieldNatural = 0x6818;
        /// Guest DR7.
        DR7: FieldNatural = 0x681A;
        /// Guest RSP.
        RSP: FieldNatural = 0x681C;
        /// Guest RIP.
        RIP: FieldNatural = 0x681E;
        /// Guest RFLAGS.
        RFLAGS: FieldNatural = 0x6820;
        /// Guest pending debug exceptions.
        PENDING_DEBUG_EXCEPTIONS: FieldNatural = 0x6822;
        /// Guest IA32_SYSENTER_ESP.
        IA32_SYSENTER_ESP: FieldNatural = 0x6824;
        /// Guest IA32_SYSENTER_EIP.
        IA32_SYSENTER_EIP: FieldNatural = 0x6826;
    }

    /// The eight guest segment registers, in the SDM's order (ES, CS, SS, DS, FS, GS, LDTR,
    /// TR), each with its selector, limit, access-rights and base fields.
    pub const SEGMENTS: [SegmentFields; 8] = [
        SegmentFields::of("ES", ES_SELECTOR, ES_LIMIT, ES_ACCESS_RIGHTS, ES_BASE),
        SegmentFields::of("CS", CS_SELECTOR, CS_LIMIT, CS_ACCESS_RIGHTS, CS_BASE),
        SegmentFields::of("SS", SS_SELECTOR, SS_LIMIT, SS_ACCESS_RIGHTS, SS_BASE),
        SegmentFields::of("DS", DS_SELECTOR, DS_LIMIT, DS_ACCESS_RIGHTS, DS_BASE),
        SegmentFields::of("FS", FS_SELECTOR, FS_LIMIT, FS_ACCESS_RIGHTS, FS_BASE),
        SegmentFields::of("GS", GS_SELECTOR, GS_LIMIT, GS_ACCESS_RIGHTS, GS_BASE),
        SegmentFields::of(
            "LDTR",
            LDTR_SELECTOR,
            LDTR_LIMIT,
            LDTR_ACCESS_RIGHTS,
            LDTR_BASE,
        ),
        SegmentFields::of("TR", TR_SELECTOR, TR_LIMIT, TR_ACCESS_RIGHTS, TR_BASE),
    ];
}

/// Host-state fields (Appendix B; described in "Virtual Machine Control Structures",
/// "Host-State Area"). The processor loads them on every VM exit.
pub mod host {
    use super::{Field16, Field32, Field64, FieldNatural};

    fields! { super::Group::Host;
        /// Host ES selector.
        ES_SELECTOR: Field16 = 0x0C00;
        /// Host CS selector.
        CS_SELECTOR: Field16 = 0x0C02;
        /// Host SS selector.
        SS_SELECTOR: Field16 = 0x0C04;
        /// Host DS selector.
        DS_SELECTOR: Field16 = 0x0C06;
        /// Host FS selector.
        FS_SELECTOR: Field16 = 0x0C08;
        /// Host GS selector.
        GS_SELECTOR: Field16 = 0x0C0A;
        /// Host TR selector.
        TR_SELECTOR: Field16 = 0x0C0C;

        /// Host IA32_PAT (loaded when the "load IA32_PAT" exit control is 1).
        IA32_PAT: Field64 = 0x2C00;
        /// Host IA32_EFER (loaded when the "load IA32_EFER" exit control is 1).
        IA32_EFER: Field64 = 0x2C02;
        /// Host IA32_PERF_GLOBAL_CTRL.
        IA32_PERF_GLOBAL_CTRL: Field64 = 0x2C04;

        /// Host IA32_SYSENTER_CS.
        IA32_SYSENTER_CS: Field32 = 0x4C00;

        /// Host CR0.
        CR0: FieldNatural = 0x6C00;
        /// Host CR3.
        CR3: FieldNatural = 0x6C02;
        /// Host CR4.
        CR4: FieldNatural = 0x6C04;
        /// Host FS base.
        FS_BASE: FieldNatural = 0x6C06;
        /// Host GS base.
        GS_BASE: FieldNatural = 0x6C08;
        /// Host TR base.
        TR_BASE: FieldNatural = 0x6C0A;
        /// Host GDTR base.
        GDTR_BASE: FieldNatural = 0x6C0C;
        /// Host IDTR base.
        IDTR_BASE: FieldNatural = 0x6C0E;
        /// Host IA32_SYSENTER_ESP.
        IA32_SYSENTER_ESP: FieldNatural = 0x6C10;
        /// Host IA32_SYSENTER_EIP.
        IA32_SYSENTER_EIP: FieldNatural = 0x6C12;
        /// Host RSP: the stack pointer after a VM exit.
        RSP: FieldNatural = 0x6C14;
        /// Host RIP: where a VM exit resumes the hypervisor.
        RIP: FieldNatural = 0x6C16;
    }
}

/// Control fields (Appendix B; described in "Virtual Machine Control Structures":
/// "VM-Execution Control Fields", "VM-Exit Control Fields", "VM-Entry Control Fields").
pub mod ctrl {
    use super::{Field16, Field32, Field64, FieldNatural};

    fields! { super::Group::Control;
        /// Virtual-processor identifier (VPID); must not be 0 when "enable VPID" is 1.
        VPID: Field16 = 0x0000;
        /// Posted-interrupt notification vector.
        POSTED_INTERRUPT_NOTIFICATION_VECTOR: Field16 = 0x0002;
        /// EPTP index (EPT-violation #VE).
        EPTP_INDEX: Field16 = 0x0004;

        /// Address of I/O bitmap A (ports 0000h-7FFFh).
        IO_BITMAP_A: Field64 = 0x2000;
        /// Address of I/O bitmap B (ports 8000h-FFFFh).
        IO_BITMAP_B: Field64 = 0x2002;
        /// Address of the MSR bitmaps.
        MSR_BITMAP: Field64 = 0x2004;
        /// VM-exit MSR-store address.
        EXIT_MSR_STORE_ADDRESS: Field64 = 0x2006;
        /// VM-exit MSR-load address.
        EXIT_MSR_LOAD_ADDRESS: Field64 = 0x2008;
        /// VM-entry MSR-load address.
        ENTRY_MSR_LOAD_ADDRESS: Field64 = 0x200A;
        /// Executive-VMCS pointer (dual-monitor treatment of SMM).
        EXECUTIVE_VMCS_POINTER: Field64 = 0x200C;
        /// PML address.
        PML_ADDRESS: Field64 = 0x200E;
        /// TSC offset.
        TSC_OFFSET: Field64 = 0x2010;
        /// Virtual-APIC address.
        VIRTUAL_APIC_ADDRESS: Field64 = 0x2012;
        /// APIC-access address.
        APIC_ACCESS_ADDRESS: Field64 = 0x2014;
        /// Posted-interrupt descriptor address.
        POSTED_INTERRUPT_DESCRIPTOR: Field64 = 0x2016;
        /// VM-function controls.
        VM_FUNCTION_CONTROLS: Field64 = 0x2018;
        /// EPT pointer (EPTP; format in "Extended-Page-Table Pointer (EPTP)").
        EPT_POINTER: Field64 = 0x201A;
        /// EOI-exit bitmap 0 (vectors 0-63).
        EOI_EXIT_BITMAP0: Field64 = 0x201C;
        /// EOI-exit bitmap 1 (vectors 64-127).
        EOI_EXIT_BITMAP1: Field64 = 0x201E;
        /// EOI-exit bitmap 2 (vectors 128-191).
        EOI_EXIT_BITMAP2: Field64 = 0x2020;
        /// EOI-exit bitmap 3 (vectors 192-255).
        EOI_EXIT_BITMAP3: Field64 = 0x2022;
        /// EPTP-list address (VM function 0, EPTP switching).
        EPTP_LIST_ADDRESS: Field64 = 0x2024;
        /// VMREAD-bitmap address (VMCS shadowing).
        VMREAD_BITMAP: Field64 = 0x2026;
        /// VMWRITE-bitmap address (VMCS shadowing).
        VMWRITE_BITMAP: Field64 = 0x2028;
        /// Virtualization-exception information address.
        VE_INFORMATION_ADDRESS: Field64 = 0x202A;
        /// XSS-exiting bitmap.
        XSS_EXITING_BITMAP: Field64 = 0x202C;
        /// ENCLS-exiting bitmap.
        ENCLS_EXITING_BITMAP: Field64 = 0x202E;
        /// TSC multiplier (TSC scaling).
        TSC_MULTIPLIER: Field64 = 0x2032;
        /// Tertiary processor-based VM-execution controls (a 64-bit control field).
        TERTIARY_PROCESSOR_BASED: Field64 = 0x2034;

        /// Pin-based VM-execution controls ([`crate::controls::PinBased`]).
        PIN_BASED: Field32 = 0x4000;
        /// Primary processor-based VM-execution controls
        /// ([`crate::controls::PrimaryControls`]).
        PRIMARY_PROCESSOR_BASED: Field32 = 0x4002;
        /// Exception bitmap (bit n set: exception n causes a VM exit).
        EXCEPTION_BITMAP: Field32 = 0x4004;
        /// Page-fault error-code mask.
        PAGE_FAULT_ERROR_CODE_MASK: Field32 = 0x4006;
        /// Page-fault error-code match.
        PAGE_FAULT_ERROR_CODE_MATCH: Field32 = 0x4008;
        /// CR3-target count.
        CR3_TARGET_COUNT: Field32 = 0x400A;
        /// VM-exit controls ([`crate::controls::ExitControls`]).
        EXIT_CONTROLS: Field32 = 0x400C;
        /// VM-exit MSR-store count.
        EXIT_MSR_STORE_COUNT: Field32 = 0x400E;
        /// VM-exit MSR-load count.
        EXIT_MSR_LOAD_COUNT: Field32 = 0x4010;
        /// VM-entry controls ([`crate::controls::EntryControls`]).
        ENTRY_CONTROLS: Field32 = 0x4012;
        /// VM-entry MSR-load count.
        ENTRY_MSR_LOAD_COUNT: Field32 = 0x4014;
        /// VM-entry interruption-information field (event injection;
        /// [`crate::exit::InterruptionInfo`]).
        ENTRY_INTERRUPTION_INFO: Field32 = 0x4016;
        /// VM-entry exception error code.
        ENTRY_EXCEPTION_ERROR_CODE: Field32 = 0x4018;
        /// VM-entry instruction length (software interrupts and exceptions).
        ENTRY_INSTRUCTION_LENGTH: Field32 = 0x401A;
        /// TPR threshold.
        TPR_THRESHOLD: Field32 = 0x401C;
        /// Secondary processor-based VM-execution controls
        /// ([`crate::controls::SecondaryControls`]).
        SECONDARY_PROCESSOR_BASED: Field32 = 0x401E;
        /// PLE_Gap (PAUSE-loop exiting).
        PLE_GAP: Field32 = 0x4020;
        /// PLE_Window (PAUSE-loop exiting).
        PLE_WINDOW: Field32 = 0x4022;

        /// CR0 guest/host mask: set bits are owned by the host.
        CR0_GUEST_HOST_MASK: FieldNatural = 0x6000;
        /// CR4 guest/host mask: set bits are owned by the host.
        CR4_GUEST_HOST_MASK: FieldNatural = 0x6002;
        /// CR0 read shadow: what the guest reads for host-owned CR0 bits.
        CR0_READ_SHADOW: FieldNatural = 0x6004;
        /// CR4 read shadow: what the guest reads for host-owned CR4 bits.
        CR4_READ_SHADOW: FieldNatural = 0x6006;
        /// CR3-target value 0.
        CR3_TARGET_VALUE0: FieldNatural = 0x6008;
        /// CR3-target value 1.
        CR3_TARGET_VALUE1: FieldNatural = 0x600A;
        /// CR3-target value 2.
        CR3_TARGET_VALUE2: FieldNatural = 0x600C;
        /// CR3-target value 3.
        CR3_TARGET_VALUE3: FieldNatural = 0x600E;
    }
}

/// Read-only VM-exit information fields (Appendix B; described in "Virtual Machine Control
/// Structures", "VM-Exit Information Fields"). `VMWRITE` to them fails with
/// [`crate::error::VmInstructionError::WriteReadOnly`] unless `IA32_VMX_MISC` bit 29 is set.
pub mod exit {
    use super::{Field32, Field64, FieldNatural};

    fields! { super::Group::ExitInfo;
        /// Guest-physical address (EPT violations and misconfigurations).
        GUEST_PHYSICAL_ADDRESS: Field64 = 0x2400;

        /// VM-instruction error (after VMfailValid; [`crate::error::VmInstructionError`]).
        VM_INSTRUCTION_ERROR: Field32 = 0x4400;
        /// Exit reason ([`crate::exit::ExitReasonField`]).
        EXIT_REASON: Field32 = 0x4402;
        /// VM-exit interruption information ([`crate::exit::InterruptionInfo`]).
        INTERRUPTION_INFO: Field32 = 0x4404;
        /// VM-exit interruption error code.
        INTERRUPTION_ERROR_CODE: Field32 = 0x4406;
        /// IDT-vectoring information field ([`crate::exit::InterruptionInfo`] layout).
        IDT_VECTORING_INFO: Field32 = 0x4408;
        /// IDT-vectoring error code.
        IDT_VECTORING_ERROR_CODE: Field32 = 0x440A;
        /// VM-exit instruction length.
        INSTRUCTION_LENGTH: Field32 = 0x440C;
        /// VM-exit instruction information.
        INSTRUCTION_INFO: Field32 = 0x440E;

        /// Exit qualification (meaning depends on the exit reason).
        EXIT_QUALIFICATION: FieldNatural = 0x6400;
        /// I/O RCX (SMIs after I/O instructions).
        IO_RCX: FieldNatural = 0x6402;
        /// I/O RSI.
        IO_RSI: FieldNatural = 0x6404;
        /// I/O RDI.
        IO_RDI: FieldNatural = 0x6406;
        /// I/O RIP.
        IO_RIP: FieldNatural = 0x6408;
        /// Guest-linear address.
        GUEST_LINEAR_ADDRESS: FieldNatural = 0x640A;
    }
}

/// Every field constant, with its name and declared width: for the width and uniqueness tests
/// and the one-field-per-line dump of the tests.
#[cfg(test)]
pub(crate) mod all {
    use super::*;

    impl FieldInfo {
        const PLACEHOLDER: Self = Self {
            group: Group::Control,
            name: "",
            encoding: u32::MAX,
            width: Width::W16,
        };
    }

    const ALL_FIELDS_LEN: usize =
        ctrl::FIELDS.len() + exit::FIELDS.len() + guest::FIELDS.len() + host::FIELDS.len();

    const fn concat<const N: usize>(groups: &[&[FieldInfo]]) -> [FieldInfo; N] {
        let mut out = [FieldInfo::PLACEHOLDER; N];
        let mut i = 0;
        let mut g = 0;
        while g < groups.len() {
            let group = groups[g];
            let mut j = 0;
            while j < group.len() {
                out[i] = group[j];
                i += 1;
                j += 1;
            }
            g += 1;
        }
        out
    }

    /// Every field constant of [`ctrl`], [`exit`], [`guest`] and [`host`], with its name and
    /// declared width (used by [`crate::dump::dump_all`] and by the width test).
    pub const ALL_FIELDS: [FieldInfo; ALL_FIELDS_LEN] =
        concat(&[ctrl::FIELDS, exit::FIELDS, guest::FIELDS, host::FIELDS]);

    /// Looks up the constant whose encoding is `encoding`.
    pub fn lookup(encoding: u32) -> Option<&'static FieldInfo> {
        ALL_FIELDS.iter().find(|f| f.encoding == encoding)
    }
}

#[cfg(test)]
mod tests {
    use super::all::{ALL_FIELDS, lookup};
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn encodings_match_sdm() {
        assert_eq!(guest::RIP.encoding(), 0x681E);
        assert_eq!(guest::CR0.encoding(), 0x6800);
        assert_eq!(exit::EXIT_REASON.encoding(), 0x4402);
        assert_eq!(exit::EXIT_QUALIFICATION.encoding(), 0x6400);
        assert_eq!(ctrl::EPT_POINTER.encoding(), 0x201A);
        assert_eq!(ctrl::VPID.encoding(), 0x0000);
        assert_eq!(ctrl::PIN_BASED.encoding(), 0x4000);
        assert_eq!(ctrl::PRIMARY_PROCESSOR_BASED.encoding(), 0x4002);
        assert_eq!(ctrl::SECONDARY_PROCESSOR_BASED.encoding(), 0x401E);
        assert_eq!(ctrl::EXIT_CONTROLS.encoding(), 0x400C);
        assert_eq!(ctrl::ENTRY_CONTROLS.encoding(), 0x4012);
        assert_eq!(guest::VMCS_LINK_POINTER.encoding(), 0x2800);
        assert_eq!(host::RIP.encoding(), 0x6C16);
        assert_eq!(host::RSP.encoding(), 0x6C14);
        assert_eq!(guest::PREEMPTION_TIMER_VALUE.encoding(), 0x482E);
        assert_eq!(ctrl::MSR_BITMAP.encoding(), 0x2004);
        assert_eq!(ctrl::IO_BITMAP_A.encoding(), 0x2000);
        assert_eq!(ctrl::IO_BITMAP_B.encoding(), 0x2002);
        assert_eq!(guest::ES_SELECTOR.encoding(), 0x0800);
        assert_eq!(guest::CS_ACCESS_RIGHTS.encoding(), 0x4816);
        assert_eq!(guest::INTERRUPTIBILITY_STATE.encoding(), 0x4824);
        assert_eq!(guest::ACTIVITY_STATE.encoding(), 0x4826);
        assert_eq!(guest::IA32_EFER.encoding(), 0x2806);
        assert_eq!(host::IA32_EFER.encoding(), 0x2C02);
        assert_eq!(exit::VM_INSTRUCTION_ERROR.encoding(), 0x4400);
        assert_eq!(exit::GUEST_PHYSICAL_ADDRESS.encoding(), 0x2400);
        assert_eq!(ctrl::XSS_EXITING_BITMAP.encoding(), 0x202C);
        assert_eq!(ctrl::TSC_OFFSET.encoding(), 0x2010);
        assert_eq!(ctrl::CR0_READ_SHADOW.encoding(), 0x6004);
        assert_eq!(guest::IA32_SYSENTER_CS.encoding(), 0x482A);
        assert_eq!(host::IA32_SYSENTER_CS.encoding(), 0x4C00);
        assert_eq!(guest::PDPTE3.encoding(), 0x2810);
        assert_eq!(exit::INSTRUCTION_INFO.encoding(), 0x440E);
    }

    #[test]
    fn every_constant_width_matches_its_type() {
        assert!(ALL_FIELDS.len() > 150);
        for f in &ALL_FIELDS {
            assert!(!f.name.is_empty(), "placeholder left in ALL_FIELDS");
            assert_eq!(
                Width::of_encoding(f.encoding),
                f.width,
                "{f} {:#06x}",
                f.encoding
            );
            // Bits 11:10 (type) agree with the submodule.
            assert_eq!(
                Group::of_encoding(f.encoding),
                f.group,
                "{f} {:#06x}",
                f.encoding
            );
            // Full access only, bit 12 and bits 31:15 reserved (zero).
            assert_eq!(f.encoding & 1, 0, "{f}");
            assert_eq!(f.encoding & !0x6FFF, 0, "{f}");
        }
    }

    #[test]
    fn constants_are_unique_and_lookup_works() {
        let mut seen = HashSet::new();
        let mut names = HashSet::new();
        for f in &ALL_FIELDS {
            assert!(
                seen.insert(f.encoding),
                "duplicate encoding {:#x}",
                f.encoding
            );
            assert!(names.insert((f.group, f.name)), "duplicate name {f}");
        }
        assert_eq!(lookup(0x681E).map(|f| f.name), Some("RIP"));
        assert_eq!(lookup(0x681E).map(|f| f.group), Some(Group::Guest));
        assert_eq!(
            lookup(0x4402).map(ToString::to_string).as_deref(),
            Some("exit::EXIT_REASON")
        );
        assert!(lookup(0x0001).is_none());
    }

    #[test]
    fn segment_table_is_consistent() {
        for (i, s) in guest::SEGMENTS.iter().enumerate() {
            let i = i as u32;
            assert_eq!(s.selector.encoding(), 0x0800 + 2 * i);
            assert_eq!(s.limit.encoding(), 0x4800 + 2 * i);
            assert_eq!(s.access_rights.encoding(), 0x4814 + 2 * i);
            assert_eq!(s.base.encoding(), 0x6806 + 2 * i);
        }
    }

    struct Recorder(Vec<(u32, u64)>);

    impl VmcsAccess for Recorder {
        fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
            Ok(u64::from(encoding) | 0xFFFF_FFFF_0000_0000)
        }
        fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
            self.0.push((encoding, value));
            Ok(())
        }
    }

    #[test]
    fn typed_accessors_pass_widths() {
        let mut r = Recorder(Vec::new());
        r.write16(guest::CS_SELECTOR, 0x10).unwrap();
        r.write32(ctrl::PIN_BASED, 0x16).unwrap();
        r.write64(guest::VMCS_LINK_POINTER, u64::MAX).unwrap();
        r.write_nat(guest::RIP, 0x7C00).unwrap();
        assert_eq!(
            r.0,
            vec![
                (0x802, 0x10),
                (0x4000, 0x16),
                (0x2800, u64::MAX),
                (0x681E, 0x7C00)
            ]
        );
        assert_eq!(r.read16(guest::CS_SELECTOR).unwrap(), 0x0802);
        assert_eq!(r.read32(ctrl::PIN_BASED).unwrap(), 0x4000);
        assert_eq!(r.read64(ctrl::EPT_POINTER).unwrap(), 0xFFFF_FFFF_0000_201A);
        // Through a trait object too.
        let dynamic: &dyn VmcsAccess = &r;
        assert_eq!(dynamic.read_nat(guest::RIP).unwrap(), 0xFFFF_FFFF_0000_681E);
    }
}
