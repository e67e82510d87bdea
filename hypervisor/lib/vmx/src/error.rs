//! VMX instruction failures (Intel SDM Vol. 3C, "VMX Instruction Reference": "Conventions"
//! and "VM Instruction Error Numbers").
//!
//! Every VMX instruction reports one of three outcomes in RFLAGS:
//!
//! - VMsucceed: CF = ZF = 0;
//! - VMfailInvalid: CF = 1 — there is no current VMCS, so no error number can be stored;
//! - VMfailValid: ZF = 1 — the error number is in the current VMCS's read-only
//!   VM-instruction error field ([`crate::fields::exit::VM_INSTRUCTION_ERROR`]).
//!
//! The kernel's instruction wrappers turn those flags into [`VmFail`].

use core::fmt;

/// A failed VMX instruction (SDM "VMX Instruction Reference", "Conventions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmFail {
    /// VMfailInvalid (CF = 1): there is no current VMCS (or the failure happened before one
    /// could be used), so no error number is available.
    Invalid,
    /// VMfailValid (ZF = 1): the VM-instruction error field of the current VMCS holds the
    /// reason.
    Valid(VmInstructionError),
}

impl fmt::Display for VmFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid => f.write_str("VMfailInvalid (no current VMCS)"),
            Self::Valid(e) => write!(f, "VMfailValid, VM-instruction error {}: {e}", e.number()),
        }
    }
}

/// The VM-instruction error numbers (SDM "VMX Instruction Reference", table "VM-Instruction
/// Error Numbers"), as stored in the VM-instruction error field after a VMfailValid.
///
/// Numbers 14, 21 and 27 are reserved by the SDM and map to [`Self::Reserved`]; numbers the
/// SDM does not list (0, 29 and up) map to [`Self::Unknown`]. [`Self::number`] gives back the
/// raw number in every case, so `from_raw(n).number() == n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmInstructionError {
    /// 1: VMCALL executed in VMX root operation.
    VmcallInRoot,
    /// 2: VMCLEAR with invalid physical address.
    VmclearInvalidAddress,
    /// 3: VMCLEAR with VMXON pointer.
    VmclearVmxonPointer,
    /// 4: VMLAUNCH with non-clear VMCS.
    VmlaunchNonClear,
    /// 5: VMRESUME with non-launched VMCS.
    VmresumeNonLaunched,
    /// 6: VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME).
    VmresumeAfterVmxoff,
    /// 7: VM entry with invalid control field(s).
    EntryInvalidControl,
    /// 8: VM entry with invalid host-state field(s).
    EntryInvalidHostState,
    /// 9: VMPTRLD with invalid physical address.
    VmptrldInvalidAddress,
    /// 10: VMPTRLD with VMXON pointer.
    VmptrldVmxonPointer,
    /// 11: VMPTRLD with incorrect VMCS revision identifier.
    VmptrldBadRevision,
    /// 12: VMREAD/VMWRITE from/to unsupported VMCS component.
    UnsupportedComponent,
    /// 13: VMWRITE to read-only VMCS component.
    WriteReadOnly,
    /// 15: VMXON executed in VMX root operation.
    VmxonInRoot,
    /// 16: VM entry with invalid executive-VMCS pointer.
    EntryInvalidExecutivePointer,
    /// 17: VM entry with non-launched executive VMCS.
    EntryNonLaunchedExecutive,
    /// 18: VM entry with executive-VMCS pointer not VMXON pointer (when attempting to
    /// deactivate the dual-monitor treatment of SMIs and SMM).
    EntryExecutiveNotVmxon,
    /// 19: VMCALL with non-clear VMCS (when attempting to activate the dual-monitor treatment
    /// of SMIs and SMM).
    VmcallNonClear,
    /// 20: VMCALL with invalid VM-exit control fields.
    VmcallInvalidExitControls,
    /// 22: VMCALL with incorrect MSEG revision identifier (when attempting to activate the
    /// dual-monitor treatment of SMIs and SMM).
    VmcallBadMsegRevision,
    /// 23: VMXOFF under dual-monitor treatment of SMIs and SMM.
    VmxoffDualMonitor,
    /// 24: VMCALL with invalid SMM-monitor features (when attempting to activate the
    /// dual-monitor treatment of SMIs and SMM).
    VmcallInvalidSmmFeatures,
    /// 25: VM entry with invalid VM-execution control fields in executive VMCS (when
    /// attempting to return from SMM).
    EntryInvalidExecutiveControls,
    /// 26: VM entry with events blocked by MOV SS.
    EntryBlockedByMovSs,
    /// 28: Invalid operand to INVEPT/INVVPID.
    InvalidInveptInvvpidOperand,
    /// 14, 21 or 27: numbers the SDM's table lists as reserved.
    Reserved(u32),
    /// Any number the SDM's table does not list (including 0).
    Unknown(u32),
}

impl VmInstructionError {
    /// Decodes the VM-instruction error field.
    pub const fn from_raw(raw: u32) -> Self {
        match raw {
            1 => Self::VmcallInRoot,
            2 => Self::VmclearInvalidAddress,
            3 => Self::VmclearVmxonPointer,
            4 => Self::VmlaunchNonClear,
            5 => Self::VmresumeNonLaunched,
            6 => Self::VmresumeAfterVmxoff,
            7 => Self::EntryInvalidControl,
            8 => Self::EntryInvalidHostState,
            9 => Self::VmptrldInvalidAddress,
            10 => Self::VmptrldVmxonPointer,
            11 => Self::VmptrldBadRevision,
            12 => Self::UnsupportedComponent,
            13 => Self::WriteReadOnly,
            15 => Self::VmxonInRoot,
            16 => Self::EntryInvalidExecutivePointer,
            17 => Self::EntryNonLaunchedExecutive,
            18 => Self::EntryExecutiveNotVmxon,
            19 => Self::VmcallNonClear,
            20 => Self::VmcallInvalidExitControls,
            22 => Self::VmcallBadMsegRevision,
            23 => Self::VmxoffDualMonitor,
            24 => Self::VmcallInvalidSmmFeatures,
            25 => Self::EntryInvalidExecutiveControls,
            26 => Self::EntryBlockedByMovSs,
            28 => Self::InvalidInveptInvvpidOperand,
            14 | 21 | 27 => Self::Reserved(raw),
            _ => Self::Unknown(raw),
        }
    }

    /// The error number, as stored in the VM-instruction error field.
    pub const fn number(self) -> u32 {
        match self {
            Self::VmcallInRoot => 1,
            Self::VmclearInvalidAddress => 2,
            Self::VmclearVmxonPointer => 3,
            Self::VmlaunchNonClear => 4,
            Self::VmresumeNonLaunched => 5,
            Self::VmresumeAfterVmxoff => 6,
            Self::EntryInvalidControl => 7,
            Self::EntryInvalidHostState => 8,
            Self::VmptrldInvalidAddress => 9,
            Self::VmptrldVmxonPointer => 10,
            Self::VmptrldBadRevision => 11,
            Self::UnsupportedComponent => 12,
            Self::WriteReadOnly => 13,
            Self::VmxonInRoot => 15,
            Self::EntryInvalidExecutivePointer => 16,
            Self::EntryNonLaunchedExecutive => 17,
            Self::EntryExecutiveNotVmxon => 18,
            Self::VmcallNonClear => 19,
            Self::VmcallInvalidExitControls => 20,
            Self::VmcallBadMsegRevision => 22,
            Self::VmxoffDualMonitor => 23,
            Self::VmcallInvalidSmmFeatures => 24,
            Self::EntryInvalidExecutiveControls => 25,
            Self::EntryBlockedByMovSs => 26,
            Self::InvalidInveptInvvpidOperand => 28,
            Self::Reserved(n) | Self::Unknown(n) => n,
        }
    }

    /// The SDM's description of the error ("VM Instruction Error Numbers" table).
    pub const fn message(self) -> &'static str {
        match self {
            Self::VmcallInRoot => "VMCALL executed in VMX root operation",
            Self::VmclearInvalidAddress => "VMCLEAR with invalid physical address",
            Self::VmclearVmxonPointer => "VMCLEAR with VMXON pointer",
            Self::VmlaunchNonClear => "VMLAUNCH with non-clear VMCS",
            Self::VmresumeNonLaunched => "VMRESUME with non-launched VMCS",
            Self::VmresumeAfterVmxoff => {
                "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)"
            }
            Self::EntryInvalidControl => "VM entry with invalid control field(s)",
            Self::EntryInvalidHostState => "VM entry with invalid host-state field(s)",
            Self::VmptrldInvalidAddress => "VMPTRLD with invalid physical address",
            Self::VmptrldVmxonPointer => "VMPTRLD with VMXON pointer",
            Self::VmptrldBadRevision => "VMPTRLD with incorrect VMCS revision identifier",
            Self::UnsupportedComponent => "VMREAD/VMWRITE from/to unsupported VMCS component",
            Self::WriteReadOnly => "VMWRITE to read-only VMCS component",
            Self::VmxonInRoot => "VMXON executed in VMX root operation",
            Self::EntryInvalidExecutivePointer => "VM entry with invalid executive-VMCS pointer",
            Self::EntryNonLaunchedExecutive => "VM entry with non-launched executive VMCS",
            Self::EntryExecutiveNotVmxon => {
                "VM entry with executive-VMCS pointer not VMXON pointer (when attempting to \
                 deactivate the dual-monitor treatment of SMIs and SMM)"
            }
            Self::VmcallNonClear => {
                "VMCALL with non-clear VMCS (when attempting to activate the dual-monitor \
                 treatment of SMIs and SMM)"
            }
            Self::VmcallInvalidExitControls => "VMCALL with invalid VM-exit control fields",
            Self::VmcallBadMsegRevision => {
                "VMCALL with incorrect MSEG revision identifier (when attempting to activate \
                 the dual-monitor treatment of SMIs and SMM)"
            }
            Self::VmxoffDualMonitor => "VMXOFF under dual-monitor treatment of SMIs and SMM",
            Self::VmcallInvalidSmmFeatures => {
                "VMCALL with invalid SMM-monitor features (when attempting to activate the \
                 dual-monitor treatment of SMIs and SMM)"
            }
            Self::EntryInvalidExecutiveControls => {
                "VM entry with invalid VM-execution control fields in executive VMCS (when \
                 attempting to return from SMM)"
            }
            Self::EntryBlockedByMovSs => "VM entry with events blocked by MOV SS",
            Self::InvalidInveptInvvpidOperand => "Invalid operand to INVEPT/INVVPID",
            Self::Reserved(_) => "reserved VM-instruction error number",
            Self::Unknown(_) => "unknown VM-instruction error number",
        }
    }
}

impl fmt::Display for VmInstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reserved(n) | Self::Unknown(n) => write!(f, "{} {n}", self.message()),
            _ => f.write_str(self.message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for n in 0..64 {
            assert_eq!(VmInstructionError::from_raw(n).number(), n);
        }
        for n in [14, 21, 27] {
            assert_eq!(
                VmInstructionError::from_raw(n),
                VmInstructionError::Reserved(n)
            );
        }
        assert_eq!(
            VmInstructionError::from_raw(0),
            VmInstructionError::Unknown(0)
        );
        assert_eq!(
            VmInstructionError::from_raw(29),
            VmInstructionError::Unknown(29)
        );
        for n in (1..=28).filter(|n| ![14, 21, 27].contains(n)) {
            let e = VmInstructionError::from_raw(n);
            assert!(!matches!(
                e,
                VmInstructionError::Reserved(_) | VmInstructionError::Unknown(_)
            ));
        }
    }

    #[test]
    fn messages_match_sdm() {
        let cases = [
            (4, "VMLAUNCH with non-clear VMCS"),
            (5, "VMRESUME with non-launched VMCS"),
            (7, "VM entry with invalid control field(s)"),
            (8, "VM entry with invalid host-state field(s)"),
            (11, "VMPTRLD with incorrect VMCS revision identifier"),
            (12, "VMREAD/VMWRITE from/to unsupported VMCS component"),
            (13, "VMWRITE to read-only VMCS component"),
            (15, "VMXON executed in VMX root operation"),
            (26, "VM entry with events blocked by MOV SS"),
            (28, "Invalid operand to INVEPT/INVVPID"),
        ];
        for (n, text) in cases {
            assert_eq!(VmInstructionError::from_raw(n).to_string(), text);
        }
        assert_eq!(
            VmInstructionError::from_raw(99).to_string(),
            "unknown VM-instruction error number 99"
        );
    }

    #[test]
    fn vm_fail_display() {
        assert_eq!(
            VmFail::Invalid.to_string(),
            "VMfailInvalid (no current VMCS)"
        );
        assert_eq!(
            VmFail::Valid(VmInstructionError::EntryInvalidControl).to_string(),
            "VMfailValid, VM-instruction error 7: VM entry with invalid control field(s)"
        );
    }
}
