//! The VMX capability MSRs (Intel SDM Vol. 3C, Appendix A, "VMX Capability Reporting
//! Facility") and `IA32_FEATURE_CONTROL` ("Enabling and Entering VMX Operation").
//!
//! [`VmxCaps::read`] reads every capability MSR through a [`MsrSource`] (the kernel's `RDMSR`,
//! or a table in tests) and decodes it. The control fields' allowed settings follow Appendix
//! A, "VM-Execution Controls": bits 31:0 of each MSR are the *allowed 0-settings* (a 1 means
//! the control must be 1), bits 63:32 the *allowed 1-settings* (a 0 means the control must be
//! 0). When `IA32_VMX_BASIC` bit 55 is 1 the `IA32_VMX_TRUE_*` MSRs are used instead, which may
//! allow some *default1* controls (CR3-load/store exiting, save/load debug controls) to be 0;
//! see [`AllowedBits`].

use core::fmt;

use crate::controls::{PrimaryControls, SecondaryControls, named_bits};

/// `IA32_FEATURE_CONTROL`: firmware's lock and enables for VMX.
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// `IA32_VMX_BASIC` (Appendix A, "Basic VMX Information").
pub const IA32_VMX_BASIC: u32 = 0x480;
/// `IA32_VMX_PINBASED_CTLS`: allowed pin-based controls.
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
/// `IA32_VMX_PROCBASED_CTLS`: allowed primary processor-based controls.
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// `IA32_VMX_EXIT_CTLS`: allowed VM-exit controls.
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
/// `IA32_VMX_ENTRY_CTLS`: allowed VM-entry controls.
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
/// `IA32_VMX_MISC` (Appendix A, "Miscellaneous Data").
pub const IA32_VMX_MISC: u32 = 0x485;
/// `IA32_VMX_CR0_FIXED0`: CR0 bits that must be 1 in VMX operation.
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// `IA32_VMX_CR0_FIXED1`: CR0 bits that may be 1 in VMX operation.
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
/// `IA32_VMX_CR4_FIXED0`: CR4 bits that must be 1 in VMX operation.
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
/// `IA32_VMX_CR4_FIXED1`: CR4 bits that may be 1 in VMX operation.
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
/// `IA32_VMX_VMCS_ENUM` (Appendix A, "VMCS Enumeration").
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48A;
/// `IA32_VMX_PROCBASED_CTLS2`: allowed secondary processor-based controls (exists only if
/// the primary controls allow "activate secondary controls" to be 1).
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
/// `IA32_VMX_EPT_VPID_CAP` (Appendix A, "VPID and EPT Capabilities"; exists only if EPT or
/// VPID may be enabled).
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
/// `IA32_VMX_TRUE_PINBASED_CTLS` (exists if `IA32_VMX_BASIC` bit 55 is 1).
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
/// `IA32_VMX_TRUE_PROCBASED_CTLS`.
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
/// `IA32_VMX_TRUE_EXIT_CTLS`.
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
/// `IA32_VMX_TRUE_ENTRY_CTLS`.
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;

/// Reads model-specific registers; implemented by the kernel with `RDMSR`.
pub trait MsrSource {
    /// The value of `msr`, or `None` if reading it faults (#GP: the MSR does not exist).
    fn read_msr(&self, msr: u32) -> Option<u64>;
}

bitflags::bitflags! {
    /// `IA32_FEATURE_CONTROL` bits (SDM Vol. 3C "Enabling and Entering VMX Operation";
    /// Vol. 4 for the MSR). Firmware normally sets and locks it; `VMXON` raises #GP unless the
    /// MSR is locked with the enable for the current mode set.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct FeatureControl: u64 {
        /// Bit 0: lock. Once set, writes raise #GP until reset.
        const LOCK = 1 << 0;
        /// Bit 1: enable VMX inside SMX operation.
        const VMX_INSIDE_SMX = 1 << 1;
        /// Bit 2: enable VMX outside SMX operation (what Basalt needs).
        const VMX_OUTSIDE_SMX = 1 << 2;
    }
}

/// What `IA32_FEATURE_CONTROL` allows, for VMXON outside SMX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureControlState {
    /// Locked with VMX outside SMX enabled: `VMXON` may be used.
    Enabled,
    /// Locked with VMX outside SMX disabled: firmware turned VMX off ("disabled in the BIOS").
    LockedDisabled,
    /// Not locked: software may set its lock and VMX-outside-SMX bits, after
    /// which `VMXON` may be used.
    Unlocked,
}

impl FeatureControl {
    /// Classifies a value read from `IA32_FEATURE_CONTROL`.
    pub const fn state(value: u64) -> FeatureControlState {
        let locked = value & Self::LOCK.bits() != 0;
        let enabled = value & Self::VMX_OUTSIDE_SMX.bits() != 0;
        match (locked, enabled) {
            (true, true) => FeatureControlState::Enabled,
            (true, false) => FeatureControlState::LockedDisabled,
            (false, _) => FeatureControlState::Unlocked,
        }
    }
}

/// The allowed settings of one 32-bit control field (Appendix A, "VM-Execution Controls").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AllowedBits {
    /// Allowed 0-settings (MSR bits 31:0): a 1 bit means the control must be 1.
    pub allowed0: u32,
    /// Allowed 1-settings (MSR bits 63:32): a 0 bit means the control must be 0.
    pub allowed1: u32,
    /// The *default1* class: controls whose default setting is 1, from the non-TRUE MSR's
    /// bits 31:0. Equal to `allowed0` when the TRUE MSRs are not used (or do not exist);
    /// 0 for the secondary controls, which have no default1 class.
    ///
    /// The SDM (Appendix A, "VM-Execution Controls", and "Algorithms for Determining VMX
    /// Capabilities") advises keeping default1 controls at 1 unless software knows it wants
    /// them 0; [`crate::negotiate::negotiate`] does that.
    pub default1: u32,
}

impl AllowedBits {
    /// Nothing may be 1 (used for the secondary controls when they cannot be activated).
    pub const NONE: Self = Self {
        allowed0: 0,
        allowed1: 0,
        default1: 0,
    };

    /// Decodes a non-TRUE capability MSR (or `IA32_VMX_PROCBASED_CTLS2`).
    pub const fn from_msr(value: u64) -> Self {
        let allowed0 = value as u32;
        Self {
            allowed0,
            allowed1: (value >> 32) as u32,
            default1: allowed0,
        }
    }

    /// Decodes a TRUE capability MSR, with the default1 class from the matching non-TRUE MSR.
    pub const fn from_true_msr(true_value: u64, plain_value: u64) -> Self {
        Self {
            allowed0: true_value as u32,
            allowed1: (true_value >> 32) as u32,
            default1: plain_value as u32,
        }
    }

    /// Whether every bit of `bits` may be 1.
    pub const fn may_be_one(self, bits: u32) -> bool {
        self.allowed1 & bits == bits
    }
}

/// `IA32_VMX_BASIC`, decoded (Appendix A, "Basic VMX Information").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BasicInfo {
    /// Bits 30:0: the VMCS revision identifier, written at the start of the VMXON region and of
    /// every VMCS.
    pub revision_id: u32,
    /// Bits 44:32: bytes to allocate for the VMXON region and each VMCS (1 to 4096).
    pub region_size: u32,
    /// Bit 48: the VMXON region, VMCS and the structures they point to must be below 4 GiB.
    pub phys_addr_32bit: bool,
    /// Bit 49: the dual-monitor treatment of SMIs and SMM is supported.
    pub dual_monitor_smm: bool,
    /// Bits 53:50: memory type the processor uses for the VMCS and its structures (0 = UC,
    /// 6 = WB).
    pub memory_type: u8,
    /// Bit 54: VM exits for INS/OUTS report the instruction-information field.
    pub ins_outs_info: bool,
    /// Bit 55: the TRUE control MSRs exist and default1 controls may be cleared.
    pub true_controls: bool,
    /// Bit 56: VM entry may deliver hardware exceptions without the error-code consistency
    /// checks.
    pub no_error_code_check: bool,
}

impl BasicInfo {
    /// The VMCS memory type write-back.
    pub const MEMORY_TYPE_WB: u8 = 6;

    /// Decodes `IA32_VMX_BASIC`.
    pub const fn decode(value: u64) -> Self {
        Self {
            revision_id: (value & 0x7FFF_FFFF) as u32,
            region_size: ((value >> 32) & 0x1FFF) as u32,
            phys_addr_32bit: value & (1 << 48) != 0,
            dual_monitor_smm: value & (1 << 49) != 0,
            memory_type: ((value >> 50) & 0xF) as u8,
            ins_outs_info: value & (1 << 54) != 0,
            true_controls: value & (1 << 55) != 0,
            no_error_code_check: value & (1 << 56) != 0,
        }
    }
}

/// `IA32_VMX_MISC`, decoded (Appendix A, "Miscellaneous Data").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MiscInfo {
    /// Bits 4:0: the VMX-preemption timer counts down by 1 each time bit X of the TSC
    /// changes, i.e. at the TSC rate shifted right by this amount.
    pub preemption_timer_shift: u8,
    /// Bit 5: VM exits store IA32_EFER.LMA into the "IA-32e mode guest" entry control. The SDM
    /// says this bit is 1 on every processor that supports "unrestricted guest", and Basalt's
    /// unrestricted guests rely on it (a guest that enters long mode on its own keeps it
    /// across exits).
    pub lma_store: bool,
    /// Bit 6: activity state HLT is supported.
    pub activity_hlt: bool,
    /// Bit 7: activity state shutdown is supported.
    pub activity_shutdown: bool,
    /// Bit 8: activity state wait-for-SIPI is supported.
    pub activity_wait_for_sipi: bool,
    /// Bit 14: Intel PT may be used in VMX operation.
    pub pt_in_vmx: bool,
    /// Bit 15: RDMSR in SMM can read IA32_SMBASE.
    pub smbase_readable: bool,
    /// Bits 24:16: number of CR3-target values supported.
    pub cr3_target_count: u16,
    /// Bits 27:25: recommended maximum entries in each MSR load/store list, as a count
    /// (512 × (N + 1)).
    pub max_msr_list_entries: u32,
    /// Bit 28: bit 2 of IA32_SMM_MONITOR_CTL can be set to 1.
    pub smm_monitor_ctl_bit2: bool,
    /// Bit 29: VMWRITE may write any supported field, including the VM-exit information
    /// fields.
    pub vmwrite_any_field: bool,
    /// Bit 30: VM entry may inject software interrupts/exceptions with instruction length 0.
    pub zero_length_injection: bool,
    /// Bits 63:32: MSEG revision identifier.
    pub mseg_revision: u32,
}

impl MiscInfo {
    /// Decodes `IA32_VMX_MISC`.
    pub const fn decode(value: u64) -> Self {
        Self {
            preemption_timer_shift: (value & 0x1F) as u8,
            lma_store: value & (1 << 5) != 0,
            activity_hlt: value & (1 << 6) != 0,
            activity_shutdown: value & (1 << 7) != 0,
            activity_wait_for_sipi: value & (1 << 8) != 0,
            pt_in_vmx: value & (1 << 14) != 0,
            smbase_readable: value & (1 << 15) != 0,
            cr3_target_count: ((value >> 16) & 0x1FF) as u16,
            max_msr_list_entries: 512 * (((value >> 25) & 7) as u32 + 1),
            smm_monitor_ctl_bit2: value & (1 << 28) != 0,
            vmwrite_any_field: value & (1 << 29) != 0,
            zero_length_injection: value & (1 << 30) != 0,
            mseg_revision: (value >> 32) as u32,
        }
    }
}

named_bits! {
    /// `IA32_VMX_EPT_VPID_CAP` (Appendix A, "VPID and EPT Capabilities"), bit for bit.
    ///
    /// [`EptVpidCaps::decode`] drops the INVEPT types when INVEPT itself (bit 20) is not
    /// supported, and the INVVPID types when INVVPID (bit 32) is not.
    pub struct EptVpidCaps: u64 {
        /// Bit 0: EPT entries may be execute-only (bits 2:0 = 100b).
        const EXECUTE_ONLY = 0, "EPT execute-only pages";
        /// Bit 6: a page-walk length of 4 (4-level EPT).
        const WALK_4 = 6, "EPT 4-level page walk";
        /// Bit 7: a page-walk length of 5.
        const WALK_5 = 7, "EPT 5-level page walk";
        /// Bit 8: the EPT paging structures may be uncacheable (EPTP memory type 0).
        const MEMTYPE_UC = 8, "EPT uncacheable memory type";
        /// Bit 14: the EPT paging structures may be write-back (EPTP memory type 6).
        const MEMTYPE_WB = 14, "EPT write-back memory type";
        /// Bit 16: EPT PDEs may map 2-MByte pages.
        const PAGE_2M = 16, "EPT 2-MByte pages";
        /// Bit 17: EPT PDPTEs may map 1-GByte pages.
        const PAGE_1G = 17, "EPT 1-GByte pages";
        /// Bit 20: INVEPT is supported.
        const INVEPT = 20, "INVEPT";
        /// Bit 21: accessed and dirty flags for EPT.
        const ACCESSED_DIRTY = 21, "EPT accessed and dirty flags";
        /// Bit 22: advanced VM-exit information for EPT violations.
        const ADVANCED_EXIT_INFO = 22, "advanced EPT-violation exit information";
        /// Bit 23: supervisor shadow-stack control.
        const SUPERVISOR_SHADOW_STACK = 23, "EPT supervisor shadow-stack control";
        /// Bit 25: single-context INVEPT.
        const INVEPT_SINGLE_CONTEXT = 25, "INVEPT single-context";
        /// Bit 26: all-context INVEPT.
        const INVEPT_ALL_CONTEXT = 26, "INVEPT all-context";
        /// Bit 32: INVVPID is supported.
        const INVVPID = 32, "INVVPID";
        /// Bit 40: individual-address INVVPID.
        const INVVPID_INDIVIDUAL_ADDRESS = 40, "INVVPID individual-address";
        /// Bit 41: single-context INVVPID.
        const INVVPID_SINGLE_CONTEXT = 41, "INVVPID single-context";
        /// Bit 42: all-context INVVPID.
        const INVVPID_ALL_CONTEXT = 42, "INVVPID all-context";
        /// Bit 43: single-context-retaining-globals INVVPID.
        const INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS = 43,
            "INVVPID single-context-retaining-globals";
    }
}

impl EptVpidCaps {
    const INVEPT_TYPES: Self = Self::INVEPT_SINGLE_CONTEXT.union(Self::INVEPT_ALL_CONTEXT);
    const INVVPID_TYPES: Self = Self::INVVPID_INDIVIDUAL_ADDRESS
        .union(Self::INVVPID_SINGLE_CONTEXT)
        .union(Self::INVVPID_ALL_CONTEXT)
        .union(Self::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS);

    /// Decodes `IA32_VMX_EPT_VPID_CAP`, ignoring undefined bits, and dropping the INVEPT
    /// (INVVPID) types when the instruction itself is not supported.
    pub const fn decode(value: u64) -> Self {
        let mut caps = Self::from_bits_truncate(value);
        if !caps.contains(Self::INVEPT) {
            caps = caps.difference(Self::INVEPT_TYPES);
        }
        if !caps.contains(Self::INVVPID) {
            caps = caps.difference(Self::INVVPID_TYPES);
        }
        caps
    }
}

/// Why [`VmxCaps::read`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapsError {
    /// Reading a capability MSR that must exist faulted.
    Unreadable {
        /// The MSR's index.
        msr: u32,
    },
    /// `IA32_VMX_BASIC` reports a VMCS region size outside 1..=4096 bytes.
    BadRegionSize(u32),
}

impl fmt::Display for CapsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { msr } => write!(f, "reading VMX capability MSR {msr:#x} faulted"),
            Self::BadRegionSize(size) => {
                write!(
                    f,
                    "IA32_VMX_BASIC reports an invalid VMCS region size of {size} bytes"
                )
            }
        }
    }
}

/// Every VMX capability Basalt looks at, decoded from the capability MSRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VmxCaps {
    /// `IA32_VMX_BASIC`.
    pub basic: BasicInfo,
    /// Allowed pin-based controls (TRUE MSR when [`BasicInfo::true_controls`]).
    pub pin: AllowedBits,
    /// Allowed primary processor-based controls (TRUE MSR when available).
    pub primary: AllowedBits,
    /// Allowed secondary processor-based controls; [`AllowedBits::NONE`] when the primary
    /// controls cannot activate them.
    pub secondary: AllowedBits,
    /// Allowed VM-exit controls (TRUE MSR when available).
    pub exit: AllowedBits,
    /// Allowed VM-entry controls (TRUE MSR when available).
    pub entry: AllowedBits,
    /// EPT and VPID capabilities; empty when neither EPT nor VPID may be enabled.
    pub ept_vpid: EptVpidCaps,
    /// `IA32_VMX_MISC`.
    pub misc: MiscInfo,
    /// `IA32_VMX_CR0_FIXED0`: CR0 bits that must be 1.
    pub cr0_fixed0: u64,
    /// `IA32_VMX_CR0_FIXED1`: CR0 bits that may be 1 (a 0 bit must be 0).
    pub cr0_fixed1: u64,
    /// `IA32_VMX_CR4_FIXED0`: CR4 bits that must be 1.
    pub cr4_fixed0: u64,
    /// `IA32_VMX_CR4_FIXED1`: CR4 bits that may be 1.
    pub cr4_fixed1: u64,
    /// `IA32_VMX_VMCS_ENUM` bits 9:1: the highest index value used in any VMCS encoding.
    pub vmcs_max_index: u16,
}

impl VmxCaps {
    /// Reads and decodes the capability MSRs.
    ///
    /// The caller has checked that the processor supports VMX (`CPUID.1:ECX.VMX[bit 5]`);
    /// this reads `IA32_VMX_BASIC`, `_MISC`, the fixed-bit MSRs and `_VMCS_ENUM`, the four
    /// control MSRs (the TRUE ones when `IA32_VMX_BASIC` bit 55 is 1, together with the plain
    /// ones for the default1 class), `IA32_VMX_PROCBASED_CTLS2` only if "activate secondary
    /// controls" may be 1, and `IA32_VMX_EPT_VPID_CAP` only if EPT or VPID may be enabled.
    pub fn read(src: &impl MsrSource) -> Result<Self, CapsError> {
        let read = |msr: u32| src.read_msr(msr).ok_or(CapsError::Unreadable { msr });
        let basic = BasicInfo::decode(read(IA32_VMX_BASIC)?);
        if basic.region_size == 0 || basic.region_size > 4096 {
            return Err(CapsError::BadRegionSize(basic.region_size));
        }
        let control = |plain: u32, true_msr: u32| -> Result<AllowedBits, CapsError> {
            let plain_value = read(plain)?;
            if basic.true_controls {
                Ok(AllowedBits::from_true_msr(read(true_msr)?, plain_value))
            } else {
                Ok(AllowedBits::from_msr(plain_value))
            }
        };
        let pin = control(IA32_VMX_PINBASED_CTLS, IA32_VMX_TRUE_PINBASED_CTLS)?;
        let primary = control(IA32_VMX_PROCBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS)?;
        let exit = control(IA32_VMX_EXIT_CTLS, IA32_VMX_TRUE_EXIT_CTLS)?;
        let entry = control(IA32_VMX_ENTRY_CTLS, IA32_VMX_TRUE_ENTRY_CTLS)?;

        let secondary = if primary.may_be_one(PrimaryControls::ACTIVATE_SECONDARY.bits()) {
            let mut s = AllowedBits::from_msr(read(IA32_VMX_PROCBASED_CTLS2)?);
            s.default1 = 0;
            s
        } else {
            AllowedBits::NONE
        };
        let ept_or_vpid = SecondaryControls::ENABLE_EPT.union(SecondaryControls::ENABLE_VPID);
        let ept_vpid = if secondary.allowed1 & ept_or_vpid.bits() != 0 {
            EptVpidCaps::decode(read(IA32_VMX_EPT_VPID_CAP)?)
        } else {
            EptVpidCaps::empty()
        };

        Ok(Self {
            basic,
            pin,
            primary,
            secondary,
            exit,
            entry,
            ept_vpid,
            misc: MiscInfo::decode(read(IA32_VMX_MISC)?),
            cr0_fixed0: read(IA32_VMX_CR0_FIXED0)?,
            cr0_fixed1: read(IA32_VMX_CR0_FIXED1)?,
            cr4_fixed0: read(IA32_VMX_CR4_FIXED0)?,
            cr4_fixed1: read(IA32_VMX_CR4_FIXED1)?,
            vmcs_max_index: ((read(IA32_VMX_VMCS_ENUM)? >> 1) & 0x1FF) as u16,
        })
    }
}

/// Capability MSR values for tests.
#[cfg(test)]
pub(crate) mod testdata {
    use super::*;
    use std::collections::HashMap;

    /// A table of MSR values.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct FakeMsrs(pub(crate) HashMap<u32, u64>);

    impl MsrSource for FakeMsrs {
        fn read_msr(&self, msr: u32) -> Option<u64> {
            self.0.get(&msr).copied()
        }
    }

    impl FakeMsrs {
        pub(crate) fn set(&mut self, msr: u32, value: u64) {
            self.0.insert(msr, value);
        }
        pub(crate) fn get(&self, msr: u32) -> u64 {
            self.0.get(&msr).copied().unwrap_or(0)
        }
        /// Clears `bits` in the allowed 1-settings (bits 63:32) of `msr`.
        pub(crate) fn disallow(&mut self, msr: u32, bits: u32) {
            let v = self.get(msr) & !(u64::from(bits) << 32);
            self.set(msr, v);
        }
    }

    /// A Skylake-X-like processor with TRUE controls (the values a Skylake server part
    /// reports, which Bochs' `corei7_skylake_x` model imitates), with VMCS revision 0x2b, a
    /// 4 KiB VMCS and a preemption-timer rate of TSC >> 0.
    pub(crate) fn skylake_x() -> FakeMsrs {
        let mut m = FakeMsrs::default();
        // Revision 0x2b, 4096 bytes, WB (6 << 50), INS/OUTS info (54), TRUE controls (55).
        m.set(IA32_VMX_BASIC, 0x00D8_1000_0000_002B);
        m.set(IA32_VMX_PINBASED_CTLS, 0x0000_00FF_0000_0016);
        m.set(IA32_VMX_TRUE_PINBASED_CTLS, 0x0000_00FF_0000_0016);
        m.set(IA32_VMX_PROCBASED_CTLS, 0xFFF9_FFFE_0401_E172);
        m.set(IA32_VMX_TRUE_PROCBASED_CTLS, 0xFFF9_FFFE_0400_6172);
        m.set(IA32_VMX_EXIT_CTLS, 0x01FF_FFFF_0003_6DFF);
        m.set(IA32_VMX_TRUE_EXIT_CTLS, 0x01FF_FFFF_0003_6DFB);
        m.set(IA32_VMX_ENTRY_CTLS, 0x0003_FFFF_0000_11FF);
        m.set(IA32_VMX_TRUE_ENTRY_CTLS, 0x0003_FFFF_0000_11FB);
        // Timer rate shift 0, LMA store, HLT/shutdown/wait-for-SIPI, 4 CR3 targets,
        // VMWRITE to any field.
        m.set(IA32_VMX_MISC, 0x2004_01E0);
        m.set(IA32_VMX_CR0_FIXED0, 0x8000_0021);
        m.set(IA32_VMX_CR0_FIXED1, 0xFFFF_FFFF);
        m.set(IA32_VMX_CR4_FIXED0, 0x2000);
        m.set(IA32_VMX_CR4_FIXED1, 0x0077_27FF);
        m.set(IA32_VMX_VMCS_ENUM, 0x2E);
        // Bits 0-18, 20, 22, 25 of the secondary controls.
        m.set(IA32_VMX_PROCBASED_CTLS2, 0x0257_FFFF_0000_0000);
        m.set(IA32_VMX_EPT_VPID_CAP, 0x0000_0F01_0673_4141);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

    #[test]
    fn reads_skylake_capabilities() {
        let caps = VmxCaps::read(&skylake_x()).unwrap();
        assert_eq!(caps.basic.revision_id, 0x2B);
        assert_eq!(caps.basic.region_size, 4096);
        assert!(caps.basic.true_controls);
        assert_eq!(caps.basic.memory_type, BasicInfo::MEMORY_TYPE_WB);
        assert!(caps.basic.ins_outs_info);
        assert!(!caps.basic.phys_addr_32bit);
        // TRUE MSRs in use: CR3-load/store exiting may be 0, but are default1.
        assert_eq!(caps.primary.allowed0, 0x0400_6172);
        assert_eq!(caps.primary.default1, 0x0401_E172);
        assert_eq!(caps.exit.allowed0, 0x0003_6DFB);
        assert_eq!(caps.secondary.allowed1, 0x0257_FFFF);
        assert_eq!(caps.secondary.default1, 0);
        let e = caps.ept_vpid;
        assert!(e.contains(EptVpidCaps::EXECUTE_ONLY | EptVpidCaps::WALK_4));
        assert!(e.contains(EptVpidCaps::MEMTYPE_WB | EptVpidCaps::MEMTYPE_UC));
        assert!(e.contains(EptVpidCaps::PAGE_2M | EptVpidCaps::PAGE_1G));
        assert!(e.contains(EptVpidCaps::INVEPT_SINGLE_CONTEXT | EptVpidCaps::INVEPT_ALL_CONTEXT));
        assert!(e.contains(EptVpidCaps::ACCESSED_DIRTY));
        assert!(e.contains(EptVpidCaps::INVVPID_SINGLE_CONTEXT | EptVpidCaps::INVVPID_ALL_CONTEXT));
        assert!(!e.contains(EptVpidCaps::WALK_5));
        assert_eq!(caps.misc.preemption_timer_shift, 0);
        assert!(caps.misc.lma_store);
        assert!(caps.misc.activity_hlt && caps.misc.activity_wait_for_sipi);
        assert_eq!(caps.misc.cr3_target_count, 4);
        assert_eq!(caps.misc.max_msr_list_entries, 512);
        assert!(caps.misc.vmwrite_any_field);
        assert_eq!(caps.cr0_fixed0, 0x8000_0021);
        assert_eq!(caps.cr4_fixed0, 0x2000);
        assert_eq!(caps.vmcs_max_index, 0x17);
    }

    #[test]
    fn without_true_controls_uses_plain_msrs() {
        let mut m = skylake_x();
        m.set(IA32_VMX_BASIC, m.get(IA32_VMX_BASIC) & !(1 << 55));
        m.0.remove(&IA32_VMX_TRUE_PROCBASED_CTLS);
        let caps = VmxCaps::read(&m).unwrap();
        assert!(!caps.basic.true_controls);
        assert_eq!(caps.primary.allowed0, 0x0401_E172);
        assert_eq!(caps.primary.default1, caps.primary.allowed0);
    }

    #[test]
    fn secondary_and_ept_depend_on_primary() {
        let mut m = skylake_x();
        m.disallow(
            IA32_VMX_TRUE_PROCBASED_CTLS,
            PrimaryControls::ACTIVATE_SECONDARY.bits(),
        );
        m.0.remove(&IA32_VMX_PROCBASED_CTLS2);
        m.0.remove(&IA32_VMX_EPT_VPID_CAP);
        let caps = VmxCaps::read(&m).unwrap();
        assert_eq!(caps.secondary, AllowedBits::NONE);
        assert!(caps.ept_vpid.is_empty());
    }

    #[test]
    fn invept_types_need_invept() {
        let raw = (EptVpidCaps::INVEPT_ALL_CONTEXT | EptVpidCaps::INVVPID_ALL_CONTEXT).bits();
        assert!(EptVpidCaps::decode(raw).is_empty());
        let raw = raw | (1 << 20) | (1 << 32) | (1 << 63);
        assert_eq!(
            EptVpidCaps::decode(raw),
            EptVpidCaps::INVEPT
                | EptVpidCaps::INVEPT_ALL_CONTEXT
                | EptVpidCaps::INVVPID
                | EptVpidCaps::INVVPID_ALL_CONTEXT
        );
    }

    #[test]
    fn read_errors() {
        let mut m = skylake_x();
        m.0.remove(&IA32_VMX_MISC);
        assert_eq!(
            VmxCaps::read(&m),
            Err(CapsError::Unreadable { msr: IA32_VMX_MISC })
        );
        let mut m = skylake_x();
        m.set(IA32_VMX_BASIC, 0x00D8_0000_0000_002B);
        assert_eq!(VmxCaps::read(&m), Err(CapsError::BadRegionSize(0)));
        assert_eq!(
            CapsError::Unreadable { msr: 0x48B }.to_string(),
            "reading VMX capability MSR 0x48b faulted"
        );
    }

    #[test]
    fn feature_control() {
        assert_eq!(FeatureControl::state(0x5), FeatureControlState::Enabled);
        assert_eq!(
            FeatureControl::state(0x1),
            FeatureControlState::LockedDisabled
        );
        assert_eq!(FeatureControl::state(0x4), FeatureControlState::Unlocked);
        assert_eq!(IA32_FEATURE_CONTROL, 0x3A);
    }
}
