//! Guest segment access rights in the VMCS (Intel SDM Vol. 3C, "Virtual Machine Control
//! Structures", "Guest Register State", table "Format of Access Rights"; the rules they must
//! follow are in "VM Entries", "Checks on Guest Segment Registers").

/// A segment's access rights as the VMCS stores them: the descriptor's attribute bits, moved
/// down, plus an "unusable" bit.
///
/// | bits | meaning |
/// | --- | --- |
/// | 3:0 | segment type |
/// | 4 | S: descriptor type (0 = system, 1 = code or data) |
/// | 6:5 | DPL |
/// | 7 | P: present |
/// | 11:8 | reserved (0) |
/// | 12 | AVL |
/// | 13 | L: 64-bit code segment (CS only) |
/// | 14 | D/B: default operation size (0 = 16-bit, 1 = 32-bit) |
/// | 15 | G: granularity |
/// | 16 | segment unusable (0 = usable) |
/// | 31:17 | reserved (0) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessRights(pub u32);

impl AccessRights {
    /// Bit 4: code or data segment (S = 1).
    pub const S: u32 = 1 << 4;
    /// Bit 7: present.
    pub const P: u32 = 1 << 7;
    /// Bit 13: 64-bit code segment.
    pub const L: u32 = 1 << 13;
    /// Bit 14: default operation size 32-bit.
    pub const DB: u32 = 1 << 14;
    /// Bit 15: limit in 4 KiB units.
    pub const G: u32 = 1 << 15;
    /// Bit 16: the segment is unusable (a null selector was loaded).
    pub const UNUSABLE_BIT: u32 = 1 << 16;

    /// Type 3: read/write data, accessed.
    pub const TYPE_DATA_RW_ACCESSED: u32 = 0x3;
    /// Type 11: execute/read code, accessed.
    pub const TYPE_CODE_RX_ACCESSED: u32 = 0xB;
    /// Type 11: busy 32-bit TSS, or busy 64-bit TSS in IA-32e mode (system).
    pub const TYPE_TSS_BUSY: u32 = 0xB;

    /// Flat 64-bit code: type 11, S, DPL 0, P, L, G (`0xA09B`).
    pub const CODE64: Self =
        Self(Self::TYPE_CODE_RX_ACCESSED | Self::S | Self::P | Self::L | Self::G);
    /// Flat 32-bit code: type 11, S, DPL 0, P, D, G (`0xC09B`).
    pub const CODE32: Self =
        Self(Self::TYPE_CODE_RX_ACCESSED | Self::S | Self::P | Self::DB | Self::G);
    /// Flat 32-bit (or 64-bit-mode) read/write data: type 3, S, DPL 0, P, B, G (`0xC093`).
    pub const DATA32: Self =
        Self(Self::TYPE_DATA_RW_ACCESSED | Self::S | Self::P | Self::DB | Self::G);
    /// Real-mode code: type 11, S, P, 16-bit, byte granular (`0x9B`).
    pub const REAL_MODE_CODE: Self = Self(Self::TYPE_CODE_RX_ACCESSED | Self::S | Self::P);
    /// Real-mode data: type 3, S, P, 16-bit, byte granular (`0x93`).
    pub const REAL_MODE_DATA: Self = Self(Self::TYPE_DATA_RW_ACCESSED | Self::S | Self::P);
    /// A busy TSS (type 11, P; `0x8B`): what TR must hold on VM entry (a 64-bit TSS in IA-32e
    /// mode, a 32-bit one otherwise; also accepted for real-mode guests).
    pub const TSS_BUSY: Self = Self(Self::TYPE_TSS_BUSY | Self::P);
    /// An unusable segment (`0x10000`), e.g. LDTR when the guest has no LDT.
    pub const UNUSABLE: Self = Self(Self::UNUSABLE_BIT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rights_encodings() {
        assert_eq!(AccessRights::CODE64.0, 0xA09B);
        assert_eq!(AccessRights::CODE32.0, 0xC09B);
        assert_eq!(AccessRights::DATA32.0, 0xC093);
        assert_eq!(AccessRights::REAL_MODE_CODE.0, 0x9B);
        assert_eq!(AccessRights::REAL_MODE_DATA.0, 0x93);
        assert_eq!(AccessRights::TSS_BUSY.0, 0x8B);
        assert_eq!(AccessRights::UNUSABLE.0, 0x1_0000);
    }
}
