//! The memory type the host's MTRRs give a physical address (Intel SDM
//! Vol. 3A §12.11 "Memory Type Range Registers (MTRRs)", precedences in
//! §12.11.4.1; AMD APM Vol. 2 §7.7), for the control domain's
//! passed-through device memory (docs/control-domain.md).

/// Memory types (SDM Table 12-8).
pub const UC: u8 = 0;
/// Write-combining.
pub const WC: u8 = 1;
/// Write-through.
pub const WT: u8 = 4;
/// Write-protected.
pub const WP: u8 = 5;
/// Write-back.
pub const WB: u8 = 6;

/// Variable ranges kept (IA32_MTRRCAP.VCNT; processors have 8 to 10).
pub const MAX_VARIABLE: usize = 16;

/// The host's MTRRs as read at boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mtrrs {
    /// IA32_MTRR_DEF_TYPE: the default type (7:0), FE (10), E (11).
    pub def_type: u64,
    /// The 11 fixed-range registers in MSR order (64K_00000, 16K_80000,
    /// 16K_A0000, 4K_C0000 … 4K_F8000), when IA32_MTRRCAP.FIX is set.
    pub fixed: Option<[u64; 11]>,
    /// IA32_MTRR_PHYSBASEn / PHYSMASKn pairs (the first `count` are used).
    pub variable: [(u64, u64); MAX_VARIABLE],
    /// How many variable ranges the processor has (at most [`MAX_VARIABLE`]).
    pub count: usize,
}

impl Mtrrs {
    /// The type of the 4 KiB page at `addr` (MTRRs have 4 KiB granularity).
    pub fn type_of(&self, addr: u64) -> u8 {
        if self.def_type & 1 << 11 == 0 {
            return UC;
        }
        if let Some(fixed) = self
            .fixed
            .filter(|_| self.def_type & 1 << 10 != 0 && addr < 1 << 20)
        {
            // 8 ranges per register: 64 KiB below 512 KiB, 16 KiB to 768 KiB, 4 KiB above.
            let (reg, slot) = match addr {
                0..0x8_0000 => (0, addr >> 16),
                0x8_0000..0xc_0000 => (1 + (addr - 0x8_0000) / 0x2_0000, (addr >> 14) & 7),
                _ => (3 + (addr - 0xc_0000) / 0x8000, (addr >> 12) & 7),
            };
            return (fixed[reg as usize] >> (slot * 8)) as u8;
        }
        let mut found: Option<u8> = None;
        for &(base, mask) in &self.variable[..self.count.min(MAX_VARIABLE)] {
            let m = mask & !0xfff;
            if mask & 1 << 11 == 0 || addr & m != base & m {
                continue;
            }
            let t = base as u8;
            // Overlaps: the same type; UC wins; WT and WB give WT; anything
            // else is undefined, taken as UC.
            found = Some(match found {
                None => t,
                Some(f) if f == t => t,
                Some(f) if (f, t) == (WT, WB) || (f, t) == (WB, WT) => WT,
                Some(_) => UC,
            });
        }
        found.unwrap_or(self.def_type as u8)
    }
}

#[cfg(test)]
mod tests;
