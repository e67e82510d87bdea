//! Planning the control domain's identity-mapped RAM (docs/control-domain.md,
//! "Memory ownership"): which low range of host RAM becomes dom0's, and where
//! the boot data that sits in that range moves before anything else uses
//! memory. Pure, host-tested; `mm::init` carries the plan out.

use crate::FixedVec;

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// Ranges, `[start, end)`.
pub type Ranges = FixedVec<(u64, u64), 512>;

/// `pieces` with `[cut_start, cut_end)` cut out (page-aligned outward).
pub fn cut(pieces: &Ranges, cut_start: u64, cut_end: u64) -> Ranges {
    let (rs, re) = (cut_start & !(PAGE - 1), cut_end.next_multiple_of(PAGE));
    let mut out = Ranges::new();
    for &(s, e) in pieces.iter() {
        if re <= s || e <= rs {
            let _ = out.push((s, e));
            continue;
        }
        if s < rs {
            let _ = out.push((s, rs));
        }
        if re < e {
            let _ = out.push((re, e));
        }
    }
    out
}

/// The end of the control domain's identity range: the lowest 2 MiB
/// boundary below which `usable` RAM from 1 MiB up, minus `keep` (Basalt's
/// image), adds up to `bytes`. The first MiB comes on top, as Xen maps it.
/// `None` when the machine has not that much RAM.
pub fn identity_end(usable: &[(u64, u64)], keep: (u64, u64), bytes: u64) -> Option<u64> {
    let mut left = bytes;
    for &(s, e) in usable {
        let s = s.max(MIB);
        let mut pieces = Ranges::new();
        if s < e {
            let _ = pieces.push((s, e));
        }
        for &(s, e) in cut(&pieces, keep.0, keep.1).iter() {
            if e - s >= left {
                return Some((s + left).next_multiple_of(2 * MIB));
            }
            left -= e - s;
        }
    }
    None
}

/// Places blocks of `sizes` bytes top-down in `free` below `limit`, each on
/// a page boundary and outside the others; the addresses go to `out`.
/// `None` if one does not fit.
pub fn place_high(free: &Ranges, limit: u64, sizes: &[u64], out: &mut [u64]) -> Option<()> {
    let mut room = *free;
    for (size, slot) in sizes.iter().zip(out.iter_mut()) {
        let size = size.next_multiple_of(PAGE).max(PAGE);
        let at = room
            .iter()
            .filter_map(|&(s, e)| {
                let e = e.min(limit) & !(PAGE - 1);
                (e >= s && e - s >= size).then(|| e - size)
            })
            .max()?;
        *slot = at;
        room = cut(&room, at, at + size);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(r: &[(u64, u64)]) -> Ranges {
        let mut out = Ranges::new();
        for &x in r {
            out.push(x).unwrap();
        }
        out
    }

    #[test]
    fn identity_end_skips_the_image_and_the_first_mib() {
        let usable = [(0, 0x9fc00), (MIB, 512 * MIB)];
        let image = (2 * MIB, 3 * MIB + 0x4000);
        // 256 MiB from 1 MiB, without the image's 1.016 MiB: ends past 258 MiB,
        // rounded to 2 MiB.
        let end = identity_end(&usable, image, 256 * MIB).unwrap();
        assert_eq!(end, 260 * MIB);
        assert_eq!(identity_end(&usable, image, 512 * MIB), None);
        // Split across two usable regions.
        let usable = [(MIB, 16 * MIB), (32 * MIB, 64 * MIB)];
        assert_eq!(identity_end(&usable, (0, 0), 20 * MIB), Some(38 * MIB));
    }

    #[test]
    fn placement_is_top_down_disjoint_and_below_the_limit() {
        let free = ranges(&[(300 * MIB, 400 * MIB), (600 * MIB, 700 * MIB)]);
        let mut out = [0; 3];
        place_high(&free, 650 * MIB, &[40 * MIB, 20 * MIB, 5000], &mut out).unwrap();
        assert_eq!(out[0], 610 * MIB);
        assert_eq!(
            out[1],
            380 * MIB,
            "what is left below the limit is too small"
        );
        assert_eq!(out[2], 610 * MIB - 2 * PAGE, "but a small one fits there");
        assert_eq!(place_high(&free, 650 * MIB, &[200 * MIB], &mut out), None);
    }

    #[test]
    fn cut_aligns_outward() {
        let r = cut(&ranges(&[(0, 0x10000)]), 0x1800, 0x2001);
        assert_eq!(
            r.iter().copied().collect::<Vec<_>>(),
            [(0, 0x1000), (0x3000, 0x10000)]
        );
    }
}
