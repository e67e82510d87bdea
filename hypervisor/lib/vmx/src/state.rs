//! Guest non-register state (Intel SDM Vol. 3C, "Virtual Machine Control Structures",
//! "Guest Non-Register State"): activity state, interruptibility state and the VMCS link
//! pointer.

bitflags::bitflags! {
    /// The guest interruptibility state ([`crate::fields::guest::INTERRUPTIBILITY_STATE`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Interruptibility: u32 {
        /// Bit 0: blocking by STI (the instruction after STI).
        const BLOCKING_BY_STI = 1 << 0;
        /// Bit 1: blocking by MOV SS / POP SS.
        const BLOCKING_BY_MOV_SS = 1 << 1;
        /// Bit 2: blocking by SMI.
        const BLOCKING_BY_SMI = 1 << 2;
        /// Bit 3: blocking by NMI (or virtual-NMI blocking with "virtual NMIs").
        const BLOCKING_BY_NMI = 1 << 3;
        /// Bit 4: enclave interruption.
        const ENCLAVE_INTERRUPTION = 1 << 4;
    }
}

/// The guest activity state ([`crate::fields::guest::ACTIVITY_STATE`]). States other than
/// active need the matching `IA32_VMX_MISC` bit ([`crate::caps::MiscInfo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivityState {
    /// 0: executing instructions.
    Active,
    /// 1: halted after HLT.
    Hlt,
    /// 2: shutdown after a triple fault.
    Shutdown,
    /// 3: waiting for a start-up IPI.
    WaitForSipi,
}

impl ActivityState {
    /// Decodes the field; `None` for values the SDM does not define.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Active),
            1 => Some(Self::Hlt),
            2 => Some(Self::Shutdown),
            3 => Some(Self::WaitForSipi),
            _ => None,
        }
    }

    /// The field value.
    #[cfg(test)]
    pub const fn raw(self) -> u32 {
        match self {
            Self::Active => 0,
            Self::Hlt => 1,
            Self::Shutdown => 2,
            Self::WaitForSipi => 3,
        }
    }

    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Hlt => "HLT",
            Self::Shutdown => "shutdown",
            Self::WaitForSipi => "wait-for-SIPI",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_states_round_trip() {
        for raw in 0..4 {
            assert_eq!(
                ActivityState::from_raw(raw).map(ActivityState::raw),
                Some(raw)
            );
        }
        assert_eq!(ActivityState::from_raw(4), None);
        assert_eq!(ActivityState::Hlt.name(), "HLT");
    }

    #[test]
    fn interruptibility_bits() {
        assert_eq!(Interruptibility::BLOCKING_BY_NMI.bits(), 8);
        assert_eq!(Interruptibility::all().bits(), 0x1F);
    }
}
