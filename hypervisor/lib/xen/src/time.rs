//! The pvclock (`vcpu_time_info`): system time = `system_time` + ((TSC − `tsc_timestamp`)
//! shifted by `tsc_shift`) × `tsc_to_system_mul` / 2^32 (Xen `public/xen.h`, Linux
//! `pvclock.c`).

use crate::layout::time_info as ti;

/// The scale from TSC ticks to nanoseconds: `(mul, shift)` as Xen's `set_time_scale`
/// computes them: the tick rate is halved or doubled until it lies in (1 GHz, 2 GHz], then
/// `mul` = 10^9 × 2^32 / rate. `None` for a rate of 0.
pub fn scale(tsc_hz: u64) -> Option<(u32, i8)> {
    const NS: u64 = 1_000_000_000;
    if tsc_hz == 0 {
        return None;
    }
    let mut rate = tsc_hz;
    let mut shift: i8 = 0;
    while rate > 2 * NS {
        rate >>= 1;
        shift -= 1;
    }
    while rate <= NS {
        rate <<= 1;
        shift += 1;
    }
    let mul = ((NS as u128) << 32) / rate as u128;
    Some((u32::try_from(mul).ok()?, shift))
}

/// Nanoseconds for `ticks` TSC ticks at the scale `(mul, shift)`, as the guest computes them.
pub fn ticks_to_ns(ticks: u64, mul: u32, shift: i8) -> u64 {
    let t = if shift >= 0 {
        ticks << shift
    } else {
        ticks >> (-shift)
    };
    ((t as u128 * mul as u128) >> 32) as u64
}

/// A `vcpu_time_info` (its `version` field left to the writer, which makes it odd while it
/// writes the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pvclock {
    /// The guest TSC at `system_time`.
    pub tsc_timestamp: u64,
    /// System time (ns) at `tsc_timestamp`.
    pub system_time: u64,
    /// Scale.
    pub mul: u32,
    /// Shift.
    pub shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
}

impl Pvclock {
    /// Bytes 8..32 of the `vcpu_time_info` (everything after `version` and its padding).
    pub fn body(&self) -> [u8; ti::SIZE - 8] {
        let mut out = [0u8; ti::SIZE - 8];
        let at = |o: usize| o - 8;
        out[at(ti::TSC_TIMESTAMP)..at(ti::TSC_TIMESTAMP) + 8]
            .copy_from_slice(&self.tsc_timestamp.to_le_bytes());
        out[at(ti::SYSTEM_TIME)..at(ti::SYSTEM_TIME) + 8]
            .copy_from_slice(&self.system_time.to_le_bytes());
        out[at(ti::MUL)..at(ti::MUL) + 4].copy_from_slice(&self.mul.to_le_bytes());
        out[at(ti::SHIFT)] = self.shift as u8;
        out[at(ti::FLAGS)] = self.flags;
        out
    }

    /// The system time the guest computes from this clock at guest TSC `tsc`.
    pub fn read(&self, tsc: u64) -> u64 {
        self.system_time.wrapping_add(ticks_to_ns(
            tsc.wrapping_sub(self.tsc_timestamp),
            self.mul,
            self.shift,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales() {
        // 1 GHz: rate doubled once, mul = 2^31, shift 1: 1 tick = 1 ns.
        assert_eq!(scale(1_000_000_000), Some((1 << 31, 1)));
        assert_eq!(ticks_to_ns(1000, 1 << 31, 1), 1000);
        // 50 MHz (Bochs): 20 ns per tick.
        let (mul, shift) = scale(50_000_000).unwrap();
        assert_eq!(ticks_to_ns(1_000_000, mul, shift), 19_999_999 + 1);
        // 3.5 GHz: within 1 ppm over an hour of ticks.
        let (mul, shift) = scale(3_500_000_000).unwrap();
        assert!(shift < 0);
        let ns = ticks_to_ns(3_500_000_000 * 3600, mul, shift);
        assert!(ns.abs_diff(3_600_000_000_000) < 3_600_000, "{ns}");
        assert_eq!(scale(0), None);
        // A 1 Hz clock still fits.
        let (mul, shift) = scale(1).unwrap();
        assert_eq!(ticks_to_ns(3, mul, shift), 2_999_999_999 + 1);
    }

    #[test]
    fn clock_reads_and_layout() {
        let (mul, shift) = scale(2_000_000_000).unwrap();
        let c = Pvclock {
            tsc_timestamp: 1000,
            system_time: 5_000,
            mul,
            shift,
            flags: 1,
        };
        assert_eq!(c.read(3000), 6_000);
        let b = c.body();
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 1000);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 5000);
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), mul);
        assert_eq!(b[20] as i8, shift);
        assert_eq!(b[21], 1);
    }
}
