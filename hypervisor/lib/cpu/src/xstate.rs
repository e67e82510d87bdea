//! Extended processor state (SDM Vol. 1 ch. 13, "Managing State Using the XSAVE Feature Set"):
//! which XCR0 values a guest may set, and how large its save area must be.
//!
//! The rules are vendor-neutral: on VT-x `XSETBV` exits and Basalt checks the value before it
//! executes `XSETBV` itself in root mode (where an invalid value would raise #GP in the
//! hypervisor); on AMD-V without an XSETBV intercept the same check validates what the guest
//! left in XCR0.

/// x87 state (XCR0 bit 0): always set.
pub const X87: u64 = 1 << 0;
/// SSE state: XMM registers and MXCSR.
pub const SSE: u64 = 1 << 1;
/// AVX state: the upper halves of YMM0-15.
pub const AVX: u64 = 1 << 2;
/// MPX bound registers BND0-3.
pub const BNDREGS: u64 = 1 << 3;
/// MPX configuration and status.
pub const BNDCSR: u64 = 1 << 4;
/// AVX-512 opmask registers k0-7.
pub const OPMASK: u64 = 1 << 5;
/// AVX-512: the upper halves of ZMM0-15.
pub const ZMM_HI256: u64 = 1 << 6;
/// AVX-512: ZMM16-31.
pub const HI16_ZMM: u64 = 1 << 7;
/// The three AVX-512 components, which are enabled together or not at all.
pub const AVX512: u64 = OPMASK | ZMM_HI256 | HI16_ZMM;
/// Protection keys (PKRU).
pub const PKRU: u64 = 1 << 9;
/// AMX tile configuration.
pub const XTILECFG: u64 = 1 << 17;
/// AMX tile data.
pub const XTILEDATA: u64 = 1 << 18;
/// The components that belong in IA32_XSS, never in XCR0 (PT, PASID, CET user and
/// supervisor, HDC, UINTR, LBR, HWP).
pub const SUPERVISOR: u64 = (1 << 8) | (1 << 10) | (1 << 11) | (1 << 12) | (0xf << 13);

/// The user components Basalt can give a guest: their state is switched with the vCPU by
/// XSAVE/XRSTOR and nothing else about them needs virtualising. MPX is deprecated (and absent
/// from current CPUs); PKRU needs CR4.PKE, which Basalt does not offer; AMX needs XFD and a
/// save area of about 11 KiB per vCPU, both left out for now.
pub const VIRTUALISABLE: u64 = X87 | SSE | AVX | AVX512;

/// The legacy region (512 bytes) plus the XSAVE header (64 bytes): the smallest XSAVE area.
pub const LEGACY_AND_HEADER: u32 = 576;

/// Why an XSETBV faults (SDM Vol. 2C, XSETBV "Protected Mode Exceptions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsetbvFault {
    /// #UD: CR4.OSXSAVE is clear.
    Ud,
    /// #GP(0): CPL > 0, an unsupported XCR, or an invalid value.
    Gp,
}

/// The XSAVE components a guest may enable, and their standard-format layout, read once from
/// the host's CPUID leaf 0xD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XstatePolicy {
    /// The XCR0 bits a guest may set (a valid XCR0 itself: [`valid_xcr0`] holds for it).
    pub allowed: u64,
    /// Per component `i` (2..=63): `(size, offset)` in the standard format, from CPUID
    /// `(0xD, i)` EAX and EBX; zero for components not allowed.
    layout: [(u32, u32); 64],
    /// Per component: whether it is 64-byte aligned in the compacted format (`(0xD, i)` ECX
    /// bit 1).
    aligned: u64,
    /// CPUID `(0xD, 1)` EAX as a guest sees it: XSAVEOPT (bit 0) and XGETBV with ECX = 1 (bit
    /// 2) where the host has them; XSAVEC, XSAVES and XFD never.
    pub sub1_eax: u32,
}

/// Whether `xcr0` is a value XSETBV accepts on a processor that supports the components in
/// `supported` (SDM Vol. 1 13.3, "Enabling the XSAVE Feature Set and XSAVE-Enabled Features",
/// and Vol. 2C XSETBV): x87 set; nothing outside `supported` and no supervisor component; AVX
/// only with SSE; the two MPX components together; the three AVX-512 components together and
/// only with AVX; the two AMX components together.
pub fn valid_xcr0(xcr0: u64, supported: u64) -> bool {
    let pair = |mask: u64| {
        let bits = xcr0 & mask;
        bits == 0 || bits == mask
    };
    xcr0 & X87 != 0
        && xcr0 & !supported == 0
        && xcr0 & SUPERVISOR == 0
        && (xcr0 & AVX == 0 || xcr0 & SSE != 0)
        && pair(BNDREGS | BNDCSR)
        && pair(AVX512)
        && (xcr0 & AVX512 == 0 || xcr0 & AVX != 0)
        && pair(XTILECFG | XTILEDATA)
}

impl XstatePolicy {
    /// The policy for a host whose CPUID is `host` (`None` when the host has no XSAVE: then a
    /// guest sees none either and its FPU state is switched with FXSAVE). `wanted` limits the
    /// components further (normally [`VIRTUALISABLE`]).
    pub fn from_host(host: &impl Fn(u32, u32) -> [u32; 4], wanted: u64) -> Option<Self> {
        let max_leaf = host(0, 0)[0];
        if max_leaf < 0xd || host(1, 0)[2] & (1 << 26) == 0 {
            return None;
        }
        let [eax, _, _, edx] = host(0xd, 0);
        let supported = (u64::from(edx) << 32) | u64::from(eax);
        // The largest valid subset of what is both supported and wanted: drop every component
        // whose companions or prerequisites are missing.
        let mut allowed = supported & wanted & !SUPERVISOR | X87;
        if allowed & SSE == 0 {
            allowed &= !AVX;
        }
        if allowed & (BNDREGS | BNDCSR) != BNDREGS | BNDCSR {
            allowed &= !(BNDREGS | BNDCSR);
        }
        if allowed & AVX512 != AVX512 || allowed & AVX == 0 {
            allowed &= !AVX512;
        }
        if allowed & (XTILECFG | XTILEDATA) != XTILECFG | XTILEDATA {
            allowed &= !(XTILECFG | XTILEDATA);
        }
        let mut layout = [(0, 0); 64];
        let mut aligned = 0;
        for (i, slot) in layout.iter_mut().enumerate().skip(2) {
            if allowed & (1 << i) == 0 {
                continue;
            }
            let [size, offset, flags, _] = host(0xd, i as u32);
            if size == 0 || offset < LEGACY_AND_HEADER {
                // A user component must have a standard-format place; without one it cannot be
                // offered.
                allowed &= !(1 << i);
                continue;
            }
            *slot = (size, offset);
            if flags & 2 != 0 {
                aligned |= 1 << i;
            }
        }
        // Removing a component without a layout may break a group again.
        if !valid_xcr0(allowed, allowed) {
            allowed &= X87 | SSE | if allowed & AVX != 0 { AVX } else { 0 };
        }
        Some(Self {
            allowed,
            layout,
            aligned,
            sub1_eax: host(0xd, 1)[0] & ((1 << 0) | (1 << 2)),
        })
    }

    /// The standard-format size of an XSAVE area holding the components of `xcr0` (CPUID
    /// `(0xD, 0)` EBX for that XCR0).
    pub fn size(&self, xcr0: u64) -> u32 {
        let mut end = LEGACY_AND_HEADER;
        for i in 2..64 {
            if xcr0 & self.allowed & (1 << i) != 0 {
                let (size, offset) = self.layout[i];
                end = end.max(offset.saturating_add(size));
            }
        }
        end
    }

    /// The size of the area for the largest XCR0 a guest may choose (CPUID `(0xD, 0)` ECX): the
    /// size of every vCPU's save area.
    pub fn max_size(&self) -> u32 {
        self.size(self.allowed)
    }

    /// The compacted-format size for `xcr0` (CPUID `(0xD, 1)` EBX with IA32_XSS = 0).
    pub fn compacted_size(&self, xcr0: u64) -> u32 {
        let mut end = LEGACY_AND_HEADER;
        for i in 2..64 {
            if xcr0 & self.allowed & (1 << i) != 0 {
                if self.aligned & (1 << i) != 0 {
                    end = end.next_multiple_of(64);
                }
                end = end.saturating_add(self.layout[i].0);
            }
        }
        end
    }

    /// CPUID `(0xD, i)` for an allowed component `i` >= 2: size, standard offset, alignment
    /// flag; zeros otherwise.
    pub fn component_leaf(&self, i: u32) -> [u32; 4] {
        if !(2..64).contains(&i) || self.allowed & (1 << i) == 0 {
            return [0; 4];
        }
        let (size, offset) = self.layout[i as usize];
        let flags = if self.aligned & (1 << i) != 0 { 2 } else { 0 };
        [size, offset, flags, 0]
    }

    /// Checks a guest's `XSETBV` of `value` to XCR `index` at privilege level `cpl` with
    /// CR4.OSXSAVE = `osxsave`, in the order the processor checks (SDM Vol. 2C XSETBV): the
    /// value to load into XCR0, or the fault to inject. Only a value returned here may reach a
    /// real `XSETBV`.
    pub fn xsetbv(
        &self,
        index: u32,
        value: u64,
        cpl: u8,
        osxsave: bool,
    ) -> Result<u64, XsetbvFault> {
        if !osxsave {
            return Err(XsetbvFault::Ud);
        }
        if cpl != 0 || index != 0 || !valid_xcr0(value, self.allowed) {
            return Err(XsetbvFault::Gp);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with every user component of a Sapphire Rapids part (its CPUID 0xD values).
    fn spr(leaf: u32, sub: u32) -> [u32; 4] {
        match (leaf, sub) {
            (0, _) => [0x20, 0, 0, 0],
            (1, _) => [0, 0, 1 << 26, 0],
            (0xd, 0) => [0x0006_02e7, 0x2b00, 0x2b00, 0],
            (0xd, 2) => [0x100, 0x240, 0, 0],
            (0xd, 5) => [0x40, 0x440, 0, 0],
            (0xd, 6) => [0x200, 0x480, 0, 0],
            (0xd, 7) => [0x400, 0x680, 0, 0],
            (0xd, 9) => [8, 0xa80, 0, 0],
            (0xd, 17) => [0x40, 0xac0, 2, 0],
            (0xd, 18) => [0x2000, 0xb00, 6, 0],
            _ => [0; 4],
        }
    }

    #[test]
    fn every_invalid_class_is_refused() {
        let all = X87 | SSE | AVX | BNDREGS | BNDCSR | AVX512 | PKRU | XTILECFG | XTILEDATA;
        // (value, valid on a CPU with everything)
        let cases: &[(u64, bool)] = &[
            (0, false),   // x87 clear
            (SSE, false), // x87 clear
            (X87, true),
            (X87 | SSE, true),
            (X87 | AVX, false), // AVX without SSE
            (X87 | SSE | AVX, true),
            (X87 | BNDREGS, false), // MPX halves differ
            (X87 | BNDCSR, false),
            (X87 | BNDREGS | BNDCSR, true),
            (0x27, false), // opmask without the ZMM parts
            (X87 | SSE | AVX | OPMASK | ZMM_HI256, false),
            (X87 | SSE | AVX | HI16_ZMM, false),
            (X87 | SSE | AVX512, false), // AVX-512 without AVX
            (X87 | SSE | AVX | AVX512, true),
            (X87 | SSE | AVX | AVX512 | PKRU, true),
            (X87 | XTILECFG, false), // AMX halves differ
            (X87 | XTILEDATA, false),
            (X87 | SSE | XTILECFG | XTILEDATA, true),
            (X87 | (1 << 8), false),  // PT is a supervisor component
            (X87 | (1 << 11), false), // CET_U likewise
            (X87 | (1 << 12), false),
            (X87 | (1 << 63), false), // reserved
            (X87 | (1 << 19), false), // not supported
        ];
        for &(value, ok) in cases {
            assert_eq!(valid_xcr0(value, all), ok, "xcr0 {value:#x}");
        }
        // Nothing outside what the CPU supports.
        assert!(!valid_xcr0(X87 | SSE | AVX, X87 | SSE));
    }

    #[test]
    fn policy_on_a_host_with_amx_keeps_amx_and_pkru_out() {
        let p = XstatePolicy::from_host(&spr, VIRTUALISABLE).unwrap();
        assert_eq!(p.allowed, X87 | SSE | AVX | AVX512);
        // Hi16_ZMM ends at 0x680 + 0x400 = 0xa80: the area is 2688 bytes, not AMX's 11 KiB.
        assert_eq!(p.max_size(), 0xa80);
        assert_eq!(p.size(X87 | SSE), 576);
        assert_eq!(p.size(X87 | SSE | AVX), 0x340);
        assert_eq!(p.component_leaf(18), [0; 4]);
        assert_eq!(p.component_leaf(2), [0x100, 0x240, 0, 0]);
        // AMX itself is refused, and so is the XSETBV that worked before.
        assert_eq!(
            p.xsetbv(0, X87 | SSE | XTILECFG | XTILEDATA, 0, true),
            Err(XsetbvFault::Gp)
        );
        assert_eq!(p.xsetbv(0, 0x27, 0, true), Err(XsetbvFault::Gp));
        assert_eq!(p.xsetbv(0, 0xe7, 0, true), Ok(0xe7));
    }

    #[test]
    fn wanted_components_beyond_the_virtualisable_set() {
        let p = XstatePolicy::from_host(&spr, u64::MAX).unwrap();
        assert_eq!(
            p.allowed,
            X87 | SSE | AVX | AVX512 | PKRU | XTILECFG | XTILEDATA
        );
        assert_eq!(p.max_size(), 0xb00 + 0x2000);
    }

    #[test]
    fn xsetbv_checks_in_the_processors_order() {
        let p = XstatePolicy::from_host(&spr, VIRTUALISABLE).unwrap();
        assert_eq!(p.xsetbv(0, 3, 0, false), Err(XsetbvFault::Ud));
        assert_eq!(p.xsetbv(0, 3, 3, true), Err(XsetbvFault::Gp));
        assert_eq!(p.xsetbv(1, 3, 0, true), Err(XsetbvFault::Gp));
        assert_eq!(p.xsetbv(0, 3, 0, true), Ok(3));
    }

    #[test]
    fn no_xsave_no_policy() {
        let host = |leaf: u32, _| if leaf == 0 { [0xd, 0, 0, 0] } else { [0; 4] };
        assert_eq!(XstatePolicy::from_host(&host, VIRTUALISABLE), None);
    }

    #[test]
    fn half_an_avx512_host_offers_none_of_it() {
        let host = |leaf: u32, sub: u32| match (leaf, sub) {
            (0xd, 0) => [0x67, 0, 0, 0], // opmask and ZMM_Hi256 but no Hi16_ZMM
            _ => spr(leaf, sub),
        };
        let p = XstatePolicy::from_host(&host, VIRTUALISABLE).unwrap();
        assert_eq!(p.allowed, X87 | SSE | AVX);
        assert_eq!(p.max_size(), 0x340);
    }

    #[test]
    fn every_value_the_policy_accepts_fits_its_area() {
        let p = XstatePolicy::from_host(&spr, u64::MAX).unwrap();
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let value = seed & (0x7_02ff | (1 << 63) | (1 << 8));
            if let Ok(v) = p.xsetbv(0, value, 0, true) {
                assert!(valid_xcr0(v, p.allowed));
                assert!(p.size(v) <= p.max_size());
            }
        }
    }
}
