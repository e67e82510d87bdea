//! Guest segment registers in the VMCS (Intel SDM Vol. 3C, "Virtual Machine Control
//! Structures", "Guest Register State", table "Format of Access Rights"; the rules they must
//! follow are in "VM Entries", "Checks on Guest Segment Registers").

use crate::error::VmFail;
use crate::fields::{SegmentFields, VmcsAccess, VmcsExt};

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
    /// Bit 12: available to software.
    pub const AVL: u32 = 1 << 12;
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
    /// Type 2: LDT (system).
    pub const TYPE_LDT: u32 = 0x2;
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
    /// An LDT (type 2, P; `0x82`).
    pub const LDT: Self = Self(Self::TYPE_LDT | Self::P);
    /// An unusable segment (`0x10000`), e.g. LDTR when the guest has no LDT.
    pub const UNUSABLE: Self = Self(Self::UNUSABLE_BIT);

    /// Bits 3:0: the segment type.
    pub const fn segment_type(self) -> u8 {
        (self.0 & 0xF) as u8
    }
    /// Bit 4: a code or data segment (rather than a system segment).
    pub const fn code_or_data(self) -> bool {
        self.0 & Self::S != 0
    }
    /// Bits 6:5: the descriptor privilege level.
    pub const fn dpl(self) -> u8 {
        ((self.0 >> 5) & 3) as u8
    }
    /// Bit 7: present.
    pub const fn present(self) -> bool {
        self.0 & Self::P != 0
    }
    /// Bit 13: 64-bit code.
    pub const fn long_mode(self) -> bool {
        self.0 & Self::L != 0
    }
    /// Bit 14: default/big.
    pub const fn default_big(self) -> bool {
        self.0 & Self::DB != 0
    }
    /// Bit 15: granularity.
    pub const fn granularity(self) -> bool {
        self.0 & Self::G != 0
    }
    /// Bit 16: unusable.
    pub const fn unusable(self) -> bool {
        self.0 & Self::UNUSABLE_BIT != 0
    }
    /// The same rights with DPL `dpl` (0-3).
    pub const fn with_dpl(self, dpl: u8) -> Self {
        Self((self.0 & !(3 << 5)) | (((dpl & 3) as u32) << 5))
    }
}

/// A whole guest segment register: selector, base, limit and access rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment {
    /// The visible selector.
    pub selector: u16,
    /// The base address.
    pub base: u64,
    /// The limit in bytes (already scaled by G: `0xFFFF_FFFF` for a flat 4 GiB segment).
    pub limit: u32,
    /// The access rights.
    pub access: AccessRights,
}

impl Segment {
    /// A real-mode data segment: base `selector << 4`, limit `0xFFFF`, access rights `0x93`.
    pub const fn real_mode_data(selector: u16) -> Self {
        Self {
            selector,
            base: (selector as u64) << 4,
            limit: 0xFFFF,
            access: AccessRights::REAL_MODE_DATA,
        }
    }

    /// A real-mode code segment: base `selector << 4`, limit `0xFFFF`, access rights `0x9B`.
    pub const fn real_mode_code(selector: u16) -> Self {
        Self {
            selector,
            base: (selector as u64) << 4,
            limit: 0xFFFF,
            access: AccessRights::REAL_MODE_CODE,
        }
    }

    /// A flat 64-bit code segment (base 0, limit 4 GiB, `0xA09B`).
    pub const fn flat_code64(selector: u16) -> Self {
        Self {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            access: AccessRights::CODE64,
        }
    }

    /// A flat 32-bit code segment (base 0, limit 4 GiB, `0xC09B`).
    pub const fn flat_code32(selector: u16) -> Self {
        Self {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            access: AccessRights::CODE32,
        }
    }

    /// A flat read/write data segment (base 0, limit 4 GiB, `0xC093`).
    pub const fn flat_data(selector: u16) -> Self {
        Self {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            access: AccessRights::DATA32,
        }
    }

    /// A busy TSS at `base` with `limit` (`0x8B`), for TR.
    pub const fn tss(selector: u16, base: u64, limit: u32) -> Self {
        Self {
            selector,
            base,
            limit,
            access: AccessRights::TSS_BUSY,
        }
    }

    /// An unusable segment with a null selector (e.g. LDTR without an LDT, or a null data
    /// segment in 64-bit mode).
    pub const fn unusable() -> Self {
        Self {
            selector: 0,
            base: 0,
            limit: 0,
            access: AccessRights::UNUSABLE,
        }
    }

    /// Writes the register's four VMCS fields.
    pub fn write_guest<V: VmcsAccess + ?Sized>(
        &self,
        vmcs: &mut V,
        fields: &SegmentFields,
    ) -> Result<(), VmFail> {
        vmcs.write16(fields.selector, self.selector)?;
        vmcs.write_nat(fields.base, self.base)?;
        vmcs.write32(fields.limit, self.limit)?;
        vmcs.write32(fields.access_rights, self.access.0)
    }

    /// Reads the register's four VMCS fields.
    pub fn read_guest<V: VmcsAccess + ?Sized>(
        vmcs: &V,
        fields: &SegmentFields,
    ) -> Result<Self, VmFail> {
        Ok(Self {
            selector: vmcs.read16(fields.selector)?,
            base: vmcs.read_nat(fields.base)?,
            limit: vmcs.read32(fields.limit)?,
            access: AccessRights(vmcs.read32(fields.access_rights)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::guest;
    use std::collections::HashMap;

    #[test]
    fn access_rights_encodings() {
        assert_eq!(AccessRights::CODE64.0, 0xA09B);
        assert_eq!(AccessRights::CODE32.0, 0xC09B);
        assert_eq!(AccessRights::DATA32.0, 0xC093);
        assert_eq!(AccessRights::REAL_MODE_CODE.0, 0x9B);
        assert_eq!(AccessRights::REAL_MODE_DATA.0, 0x93);
        assert_eq!(AccessRights::TSS_BUSY.0, 0x8B);
        assert_eq!(AccessRights::LDT.0, 0x82);
        assert_eq!(AccessRights::UNUSABLE.0, 0x1_0000);
        let cs = AccessRights::CODE64;
        assert_eq!(cs.segment_type(), 0xB);
        assert!(cs.code_or_data() && cs.present() && cs.long_mode() && cs.granularity());
        assert!(!cs.default_big() && !cs.unusable());
        assert_eq!(cs.with_dpl(3).0, 0xA0FB);
        assert_eq!(cs.with_dpl(3).dpl(), 3);
        assert!(!AccessRights::TSS_BUSY.code_or_data());
    }

    #[test]
    fn real_mode_segments() {
        let cs = Segment::real_mode_code(0x07C0);
        assert_eq!(cs.base, 0x7C00);
        assert_eq!(cs.limit, 0xFFFF);
        assert_eq!(cs.access.0, 0x9B);
        let ds = Segment::real_mode_data(0xF000);
        assert_eq!(ds.base, 0xF_0000);
        assert_eq!(ds.access.0, 0x93);
    }

    struct Map(HashMap<u32, u64>);

    impl VmcsAccess for Map {
        fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
            self.0.get(&encoding).copied().ok_or(VmFail::Invalid)
        }
        fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
            self.0.insert(encoding, value);
            Ok(())
        }
    }

    #[test]
    fn segment_round_trips_through_vmcs() {
        let mut vmcs = Map(HashMap::new());
        let cs = &guest::SEGMENTS[1];
        Segment::flat_code64(0x08)
            .write_guest(&mut vmcs, cs)
            .unwrap();
        assert_eq!(vmcs.0[&0x0802], 0x08);
        assert_eq!(vmcs.0[&0x4816], 0xA09B);
        assert_eq!(vmcs.0[&0x4802], 0xFFFF_FFFF);
        assert_eq!(vmcs.0[&0x6808], 0);
        assert_eq!(
            Segment::read_guest(&vmcs, cs).unwrap(),
            Segment::flat_code64(0x08)
        );
        assert_eq!(
            Segment::read_guest(&vmcs, &guest::SEGMENTS[7]),
            Err(VmFail::Invalid)
        );
        Segment::unusable()
            .write_guest(&mut vmcs, &guest::SEGMENTS[6])
            .unwrap();
        assert_eq!(vmcs.0[&0x4820], 0x1_0000);
        Segment::tss(0x28, 0x1000, 0x67)
            .write_guest(&mut vmcs, &guest::SEGMENTS[7])
            .unwrap();
        assert_eq!(vmcs.0[&0x4822], 0x8B);
        Segment::flat_data(0x10)
            .write_guest(&mut vmcs, &guest::SEGMENTS[2])
            .unwrap();
        Segment::flat_code32(0x18)
            .write_guest(&mut vmcs, &guest::SEGMENTS[0])
            .unwrap();
        assert_eq!(vmcs.0[&0x4818], 0xC093);
    }
}
