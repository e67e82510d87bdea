//! CPUID as an allow-list (docs/platform.md, "CPUID"): every leaf and bit a guest sees is one
//! Basalt knows how to virtualise; everything else reads as 0.
//!
//! [`GuestCpu::new`] reads the host's CPUID once at boot and keeps, per leaf, the host's answer
//! ANDed with [`ALLOW`] (plus the bits Basalt emulates itself, [`FORCE`]); features whose state
//! or instructions the virtualisation layer cannot give the guest are then removed
//! ([`Limits`], the XSAVE policy). [`GuestCpu::cpuid`] answers a guest's CPUID from that table
//! and the vCPU's own state (its APIC ID, CR4.OSXSAVE, XCR0, TSC frequency).

use crate::cr::{CrModel, cr4, efer};
use crate::xstate::{self, XstatePolicy};

/// The highest basic leaf a guest sees: 0x16, so that it finds its TSC and APIC timer
/// frequencies in leaves 0x15 and 0x16.
pub const MAX_BASIC_LEAF: u32 = 0x16;
/// The highest extended leaf a guest sees.
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;
/// The first hypervisor leaf.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// The highest hypervisor leaf Basalt answers.
pub const HYPERVISOR_MAX_LEAF: u32 = 0x4000_0001;
/// The frequency of the guest's "core crystal clock" (CPUID leaf 0x15), which is also the clock
/// of its local APIC timer.
pub const CRYSTAL_HZ: u64 = 1_000_000;

/// Register indexes in a CPUID answer.
const EAX: usize = 0;
const EBX: usize = 1;
const ECX: usize = 2;
const EDX: usize = 3;

const fn bits(list: &[u32]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < list.len() {
        m |= 1 << list[i];
        i += 1;
    }
    m
}

/// One row of the allow-list: the bits of `[EAX, EBX, ECX, EDX]` of leaf `leaf` (every
/// subleaf unless `sub` is given) that pass from the host to the guest.
#[derive(Debug, Clone, Copy)]
pub struct Allow {
    /// The leaf.
    pub leaf: u32,
    /// The subleaf (`None`: all).
    pub sub: Option<u32>,
    /// The bits kept, per register.
    pub keep: [u32; 4],
}

/// The allow-list. Leaves not named here read as 0; a leaf named here keeps only these bits.
/// Leaf 0xD is the XSAVE policy's ([`XstatePolicy`]); leaves 0x15 and 0x16 and the hypervisor
/// leaves are Basalt's own.
pub const ALLOW: &[Allow] = &[
    // Vendor string (EBX, EDX, ECX); EAX is replaced by MAX_BASIC_LEAF.
    Allow {
        leaf: 0,
        sub: None,
        keep: [0, !0, !0, !0],
    },
    Allow {
        leaf: 1,
        sub: None,
        keep: [
            // Family, model, stepping.
            !0,
            // Brand index, CLFLUSH line size (APIC ID and logical count are Basalt's).
            0xffff,
            // SSE3 PCLMULQDQ SSSE3 FMA CX16 PCID SSE4.1 SSE4.2 MOVBE POPCNT AES XSAVE AVX F16C
            // RDRAND. Not: DTES64 MONITOR DS-CPL VMX SMX EST TM2 CNXT-ID SDBG xTPR PDCM DCA.
            bits(&[0, 1, 9, 12, 13, 17, 19, 20, 22, 23, 25, 26, 28, 29, 30]),
            // FPU VME DE PSE TSC MSR PAE CX8 SEP MTRR PGE CMOV PAT PSE-36 CLFSH MMX FXSR SSE
            // SSE2 SS. Not: MCE MCA PSN DS ACPI HTT TM PBE.
            bits(&[
                0, 1, 2, 3, 4, 5, 6, 8, 11, 12, 13, 15, 16, 17, 19, 23, 24, 25, 26, 27,
            ]),
        ],
    },
    // Cache descriptors.
    Allow {
        leaf: 2,
        sub: None,
        keep: [!0, !0, !0, !0],
    },
    // Deterministic cache parameters: type, level, self-initialising, fully associative;
    // geometry. The sharing counts (EAX 31:14) are 0: one core, one thread.
    Allow {
        leaf: 4,
        sub: None,
        keep: [0x3ff, !0, !0, !0],
    },
    Allow {
        leaf: 7,
        sub: Some(0),
        keep: [
            // The highest subleaf (capped at 1 below).
            !0,
            // FSGSBASE BMI1 AVX2 FDP_EXCPTN_ONLY SMEP BMI2 ERMS INVPCID FCS/FDS-deprecation
            // AVX512F AVX512DQ RDSEED ADX SMAP AVX512_IFMA CLFLUSHOPT CLWB AVX512PF AVX512ER
            // AVX512CD SHA AVX512BW AVX512VL. Not: TSC_ADJUST SGX HLE RTM RDT-M MPX RDT-A PT.
            bits(&[
                0, 3, 5, 6, 7, 8, 9, 10, 13, 16, 17, 18, 19, 20, 21, 23, 24, 26, 27, 28, 29, 30, 31,
            ]),
            // PREFETCHWT1 AVX512_VBMI UMIP AVX512_VBMI2 GFNI VAES VPCLMULQDQ AVX512_VNNI
            // AVX512_BITALG AVX512_VPOPCNTDQ RDPID CLDEMOTE MOVDIRI MOVDIR64B. Not: PKU
            // OSPKE WAITPKG CET_SS TME LA57 (Basalt's walks of guest-virtual hypercall
            // arguments know 4-level paging only) KL BUS_LOCK_DETECT ENQCMD SGX_LC PKS.
            bits(&[0, 1, 2, 6, 8, 9, 10, 11, 12, 14, 22, 25, 27, 28]),
            // AVX512_4VNNIW AVX512_4FMAPS FSRM AVX512_VP2INTERSECT MD_CLEAR SERIALIZE
            // AVX512_FP16. Not: UINTR TSX controls HYBRID PCONFIG ARCH_LBR CET_IBT AMX
            // IBRS/IBPB STIBP L1D_FLUSH ARCH_CAPABILITIES CORE_CAPABILITIES SSBD (their MSRs
            // are not virtualised).
            bits(&[2, 3, 4, 8, 10, 14, 23]),
        ],
    },
    // AVX-VNNI AVX512_BF16 fast zero-length MOVSB, short STOSB, short CMPSB/SCASB.
    Allow {
        leaf: 7,
        sub: Some(1),
        keep: [bits(&[4, 5, 10, 11, 12]), 0, 0, 0],
    },
    // Vendor string again on AMD; EAX is replaced by the highest extended leaf.
    Allow {
        leaf: 0x8000_0000,
        sub: None,
        keep: [0, !0, !0, !0],
    },
    Allow {
        leaf: 0x8000_0001,
        sub: None,
        keep: [
            !0,
            0,
            // LAHF/SAHF ABM(LZCNT) SSE4A MisAlignSse 3DNowPrefetch XOP FMA4 TBM. Not: SVM
            // ExtApicSpace AltMovCr8 OSVW IBS SKINIT WDT LWP TopoExt perf counters MONITORX.
            bits(&[0, 5, 6, 7, 8, 11, 16, 21]),
            // AMD's copies of leaf 1 EDX (FPU..FXSR as allowed there), SYSCALL NX MMXEXT
            // Page1GB RDTSCP LM. Not: FFXSR (an EFER bit) 3DNow!.
            bits(&[
                0, 1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 15, 16, 17, 20, 22, 23, 24, 26, 27, 29,
            ]),
        ],
    },
    // Brand string.
    Allow {
        leaf: 0x8000_0002,
        sub: None,
        keep: [!0, !0, !0, !0],
    },
    Allow {
        leaf: 0x8000_0003,
        sub: None,
        keep: [!0, !0, !0, !0],
    },
    Allow {
        leaf: 0x8000_0004,
        sub: None,
        keep: [!0, !0, !0, !0],
    },
    // L1 and L2/L3 cache and TLB descriptions.
    Allow {
        leaf: 0x8000_0005,
        sub: None,
        keep: [!0, !0, !0, !0],
    },
    Allow {
        leaf: 0x8000_0006,
        sub: None,
        keep: [!0, !0, !0, !0],
    },
    // Invariant TSC only (no power-management features).
    Allow {
        leaf: 0x8000_0007,
        sub: None,
        keep: [0, 0, 0, 1 << 8],
    },
    // Physical and linear address sizes; CLZERO, XSAVEERPTR, WBNOINVD. No core count (one
    // core), no speculation-control features (their MSRs are not virtualised).
    Allow {
        leaf: 0x8000_0008,
        sub: None,
        keep: [0xffff, bits(&[0, 2, 9]), 0, 0],
    },
];

/// Bits Basalt shows whatever the host has, because it emulates them: x2APIC and the
/// TSC-deadline timer (the local APIC model), "hypervisor present" (leaf 1 ECX), the APIC
/// (leaf 1 EDX).
pub const FORCE: &[(u32, u32, [u32; 4])] = &[(1, 0, [0, 0, bits(&[21, 24, 31]), 1 << 9])];

/// Feature bits that need AVX state: (leaf, subleaf, register, bits).
const NEEDS_AVX: &[(u32, u32, usize, u32)] = &[
    (1, 0, ECX, bits(&[12, 28, 29])),       // FMA AVX F16C
    (7, 0, EBX, 1 << 5),                    // AVX2
    (7, 0, ECX, bits(&[9, 10])),            // VAES VPCLMULQDQ
    (7, 1, EAX, 1 << 4),                    // AVX-VNNI
    (0x8000_0001, 0, ECX, bits(&[11, 16])), // XOP FMA4
];
/// Feature bits that need the AVX-512 state.
const NEEDS_AVX512: &[(u32, u32, usize, u32)] = &[
    (7, 0, EBX, bits(&[16, 17, 21, 26, 27, 28, 30, 31])),
    (7, 0, ECX, bits(&[1, 6, 11, 12, 14])),
    (7, 0, EDX, bits(&[2, 3, 8, 23])),
    (7, 1, EAX, 1 << 5),
];

/// What the virtualisation layer (VT-x or AMD-V) can give a guest, beyond what CPUID says the
/// host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// INVPCID runs in the guest (VT-x: "enable INVPCID").
    pub invpcid: bool,
    /// RDTSCP and RDPID run in the guest (VT-x: "enable RDTSCP").
    pub rdtscp: bool,
    /// The CR4 bits the guest may have set (VT-x: IA32_VMX_CR4_FIXED1 without VMXE).
    pub cr4_settable: u64,
    /// The XCR0 components worth offering (normally [`xstate::VIRTUALISABLE`]).
    pub xcr0_wanted: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            invpcid: true,
            rdtscp: true,
            cr4_settable: !0,
            xcr0_wanted: xstate::VIRTUALISABLE,
        }
    }
}

/// The CPU a guest sees: the allow-listed CPUID table, the XSAVE policy and the
/// control-register model that follow from it.
#[derive(Debug, Clone)]
pub struct GuestCpu {
    basic: [[u32; 4]; MAX_BASIC_LEAF as usize + 1],
    /// Leaf 4, subleaves 0..8.
    caches: [[u32; 4]; 8],
    /// Leaf 7 subleaf 1.
    leaf7_1: [u32; 4],
    extended: [[u32; 4]; (MAX_EXTENDED_LEAF - 0x8000_0000) as usize + 1],
    /// The XSAVE components a guest may enable (`None`: no XSAVE).
    pub xstate: Option<XstatePolicy>,
    /// The CR4 and EFER bits a guest may set.
    pub cr: CrModel,
}

/// The per-vCPU inputs of a CPUID answer, asked only for the leaves that need them (the
/// common leaves are answered from the table alone).
pub trait VcpuState {
    /// The hypervisor signature (per domain: a control domain may be shown Xen's).
    fn signature(&self) -> [u8; 12];
    /// The vCPU's initial APIC ID.
    fn apic_id(&self) -> u32;
    /// The guest TSC frequency in Hz.
    fn tsc_hz(&self) -> u64;
    /// CR4.OSXSAVE as the guest set it.
    fn osxsave(&self) -> bool;
    /// The guest's XCR0.
    fn xcr0(&self) -> u64;
}

/// The per-vCPU inputs of a CPUID answer as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuView {
    /// The hypervisor signature.
    pub signature: [u8; 12],
    /// The vCPU's initial APIC ID.
    pub apic_id: u32,
    /// The guest TSC frequency in Hz.
    pub tsc_hz: u64,
    /// CR4.OSXSAVE as the guest set it.
    pub osxsave: bool,
    /// The guest's XCR0.
    pub xcr0: u64,
}

impl VcpuState for VcpuView {
    fn signature(&self) -> [u8; 12] {
        self.signature
    }
    fn apic_id(&self) -> u32 {
        self.apic_id
    }
    fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }
    fn osxsave(&self) -> bool {
        self.osxsave
    }
    fn xcr0(&self) -> u64 {
        self.xcr0
    }
}

fn allowed(host: &impl Fn(u32, u32) -> [u32; 4], leaf: u32, sub: u32) -> [u32; 4] {
    let Some(rule) = ALLOW
        .iter()
        .find(|r| r.leaf == leaf && r.sub.is_none_or(|s| s == sub))
    else {
        return [0; 4];
    };
    let h = host(leaf, sub);
    let mut r = [0; 4];
    for i in 0..4 {
        r[i] = h[i] & rule.keep[i];
    }
    for &(l, s, force) in FORCE {
        if l == leaf && s == sub {
            for i in 0..4 {
                r[i] |= force[i];
            }
        }
    }
    r
}

impl GuestCpu {
    /// The guest CPU for a host whose CPUID is `host`, run under a virtualisation layer that
    /// can give what `limits` says.
    pub fn new(host: &impl Fn(u32, u32) -> [u32; 4], limits: &Limits) -> Self {
        let host_max = host(0, 0)[EAX];
        let host_max_ext = host(0x8000_0000, 0)[EAX];
        // A leaf above the host's highest reads as 0 (Intel would repeat its highest leaf).
        let read = |leaf: u32, sub: u32| {
            let present = if leaf >= 0x8000_0000 {
                leaf <= host_max_ext
            } else {
                leaf <= host_max
            };
            if present {
                allowed(host, leaf, sub)
            } else {
                [0; 4]
            }
        };
        let mut basic = [[0; 4]; MAX_BASIC_LEAF as usize + 1];
        for (leaf, slot) in basic.iter_mut().enumerate() {
            *slot = read(leaf as u32, 0);
        }
        basic[0][EAX] = MAX_BASIC_LEAF;
        let mut caches = [[0; 4]; 8];
        for (sub, slot) in caches.iter_mut().enumerate() {
            *slot = read(4, sub as u32);
        }
        let mut leaf7_1 = if basic[7][EAX] >= 1 {
            read(7, 1)
        } else {
            [0; 4]
        };
        basic[7][EAX] = basic[7][EAX].min(1);
        let mut extended = [[0; 4]; (MAX_EXTENDED_LEAF - 0x8000_0000) as usize + 1];
        for (i, slot) in extended.iter_mut().enumerate() {
            *slot = read(0x8000_0000 + i as u32, 0);
        }
        extended[0][EAX] = if host_max_ext >= 0x8000_0000 {
            host_max_ext.min(MAX_EXTENDED_LEAF)
        } else {
            0
        };

        // What the virtualisation layer cannot give.
        if !limits.invpcid {
            basic[7][EBX] &= !(1 << 10);
        }
        if !limits.rdtscp {
            basic[7][ECX] &= !(1 << 22);
            extended[1][EDX] &= !(1 << 27);
        }
        let xstate = if basic[1][ECX] & (1 << 26) != 0 {
            XstatePolicy::from_host(host, limits.xcr0_wanted)
        } else {
            None
        };
        let xcr0 = xstate.map_or(0, |x| x.allowed);
        if xstate.is_none() {
            basic[1][ECX] &= !(1 << 26);
        }
        let mut clear = |list: &[(u32, u32, usize, u32)]| {
            for &(leaf, sub, reg, mask) in list {
                match (leaf, sub) {
                    (7, 1) => leaf7_1[reg] &= !mask,
                    (l, _) if l >= 0x8000_0000 => {
                        extended[(l - 0x8000_0000) as usize][reg] &= !mask
                    }
                    (l, _) => basic[l as usize][reg] &= !mask,
                }
            }
        };
        if xcr0 & xstate::AVX == 0 {
            clear(NEEDS_AVX);
        }
        if xcr0 & xstate::AVX512 != xstate::AVX512 {
            clear(NEEDS_AVX512);
        }
        if limits.cr4_settable & cr4::LA57 == 0 {
            basic[7][ECX] &= !(1 << 16);
        }

        // The control-register model follows the features shown.
        let has = |leaf: usize, reg: usize, bit: u32| basic[leaf][reg] & (1 << bit) != 0;
        let mut cr4_valid = cr4::BASE;
        for (present, bit) in [
            (has(7, ECX, 2), cr4::UMIP),
            (has(7, ECX, 16), cr4::LA57),
            (has(7, EBX, 0), cr4::FSGSBASE),
            (has(1, ECX, 17), cr4::PCIDE),
            (xstate.is_some(), cr4::OSXSAVE),
            (has(7, EBX, 7), cr4::SMEP),
            (has(7, EBX, 20), cr4::SMAP),
        ] {
            if present {
                cr4_valid |= bit;
            }
        }
        cr4_valid &= limits.cr4_settable | cr4::BASE;
        let ext1 = extended[1];
        let mut efer_valid = 0;
        if ext1[EDX] & (1 << 11) != 0 || ext1[EDX] & (1 << 29) != 0 {
            efer_valid |= efer::SCE;
        }
        if ext1[EDX] & (1 << 29) != 0 {
            efer_valid |= efer::LME;
        }
        if ext1[EDX] & (1 << 20) != 0 {
            efer_valid |= efer::NXE;
        }
        let maxphyaddr = match extended[8][EAX] & 0xff {
            0 => 36,
            n => n as u8,
        };
        Self {
            basic,
            caches,
            leaf7_1,
            extended,
            xstate,
            cr: CrModel {
                cr4_valid,
                efer_valid,
                maxphyaddr,
            },
        }
    }

    /// The guest's CPUID answer for `leaf`/`sub` on the vCPU `v` (SDM Vol. 2A, CPUID).
    #[inline]
    pub fn cpuid(&self, leaf: u32, sub: u32, v: &impl VcpuState) -> [u32; 4] {
        match leaf {
            1 => {
                let mut r = self.basic[1];
                // Initial APIC ID, one logical processor per package.
                r[EBX] |= (1 << 16) | ((v.apic_id() & 0xff) << 24);
                if v.osxsave() {
                    r[ECX] |= 1 << 27;
                }
                r
            }
            4 => self.caches.get(sub as usize).copied().unwrap_or([0; 4]),
            7 => match sub {
                0 => self.basic[7],
                1 => self.leaf7_1,
                _ => [0; 4],
            },
            0xd => self.xsave_leaf(sub, v.xcr0()),
            0x15 => tsc_leaf(v.tsc_hz()),
            0x16 => {
                // Base and maximum frequency in MHz, bus (reference) 100 MHz.
                let mhz = (v.tsc_hz() / 1_000_000).min(0xffff) as u32;
                [mhz, mhz, 100, 0]
            }
            0..=MAX_BASIC_LEAF => self.basic[leaf as usize],
            HYPERVISOR_LEAF..=XEN_MAX_LEAF if v.signature() == XEN_SIGNATURE => {
                xen_leaf(leaf, sub, v)
            }
            HYPERVISOR_LEAF => signature_leaf(&v.signature(), HYPERVISOR_MAX_LEAF),
            0x8000_0000..=MAX_EXTENDED_LEAF => {
                let i = (leaf - 0x8000_0000) as usize;
                if leaf > self.extended[0][EAX] {
                    [0; 4]
                } else {
                    self.extended[i]
                }
            }
            _ => [0; 4],
        }
    }

    /// Leaf 0xD for a guest whose XCR0 is `xcr0`: the components it may enable and the area
    /// sizes for its XCR0 (subleaf 0), XSAVEOPT and XGETBV with ECX = 1 (subleaf 1: XSAVEC,
    /// XSAVES and XFD are not offered, so IA32_XSS has no component), and each allowed
    /// component's size and offset.
    fn xsave_leaf(&self, sub: u32, xcr0: u64) -> [u32; 4] {
        let Some(x) = &self.xstate else {
            return [0; 4];
        };
        match sub {
            0 => [
                x.allowed as u32,
                x.size(xcr0),
                x.max_size(),
                (x.allowed >> 32) as u32,
            ],
            1 => [x.sub1_eax, x.compacted_size(xcr0), 0, 0],
            i => x.component_leaf(i),
        }
    }
}

/// CPUID leaf 0x15 for a TSC of `tsc_hz`: EAX = denominator, EBX = numerator, ECX = the
/// crystal's Hz, with TSC = ECX * EBX / EAX (to 1 kHz).
pub fn tsc_leaf(tsc_hz: u64) -> [u32; 4] {
    let denominator = 1000u64;
    let numerator = (tsc_hz.saturating_mul(denominator) / CRYSTAL_HZ).min(u64::from(u32::MAX));
    if numerator == 0 {
        return [0; 4];
    }
    [denominator as u32, numerator as u32, CRYSTAL_HZ as u32, 0]
}

/// Xen's signature: a domain shown it gets Xen's hypervisor leaves ([`xen_leaf`]).
pub const XEN_SIGNATURE: [u8; 12] = *b"XenVMMXenVMM";
/// The last of Xen's hypervisor leaves (Xen 4.17 reports base + 5).
pub const XEN_MAX_LEAF: u32 = 0x4000_0005;
/// The interface version Basalt reports in leaf 0x40000001: Xen 4.17.
pub const XEN_VERSION: u32 = (4 << 16) | 17;
/// Leaf 0x40000004 EAX bit 3, `XEN_HVM_CPUID_VCPU_ID_PRESENT`: EBX holds the vCPU id.
pub const XEN_HVM_VCPU_ID_PRESENT: u32 = 1 << 3;
/// Leaf 0x40000004 EAX bit 6, `XEN_HVM_CPUID_UPCALL_VECTOR`: per-vCPU upcall vectors
/// (`HVMOP_set_evtchn_upcall_vector`).
pub const XEN_HVM_UPCALL_VECTOR: u32 = 1 << 6;

/// Xen's hypervisor leaves (Xen `public/arch-x86/cpuid.h`, `arch/x86/traps.c`
/// `cpuid_hypervisor_leaves`) for a domain with Xen's interface:
/// - 0x40000000: the highest leaf and `"XenVMMXenVMM"`;
/// - 0x40000001: the version, 4.17;
/// - 0x40000002: one hypercall page, written through MSR 0x40000000;
/// - 0x40000003: time: subleaf 0 ECX = the guest TSC in kHz (no TSC emulation, no scaling),
///   subleaf 2 EAX = the host TSC in kHz;
/// - 0x40000004: HVM features: the vCPU id in EBX and per-vCPU upcall vectors. Nothing about
///   APIC virtualisation, MSI extended destination ids or PIRQs is offered;
/// - 0x40000005: no PV features.
pub fn xen_leaf(leaf: u32, sub: u32, v: &impl VcpuState) -> [u32; 4] {
    let khz = u32::try_from(v.tsc_hz() / 1000).unwrap_or(u32::MAX);
    match leaf - HYPERVISOR_LEAF {
        0 => signature_leaf(&XEN_SIGNATURE, XEN_MAX_LEAF),
        1 => [XEN_VERSION, 0, 0, 0],
        2 => [1, 0x4000_0000, 0, 0],
        3 => match sub {
            0 => [0, 0, khz, 0],
            2 => [khz, 0, 0, 0],
            _ => [0; 4],
        },
        4 => [
            XEN_HVM_VCPU_ID_PRESENT | XEN_HVM_UPCALL_VECTOR,
            v.apic_id(),
            0,
            0,
        ],
        _ => [0; 4],
    }
}

/// The hypervisor base leaf: EAX = `max_leaf`, the 12-byte signature in EBX, ECX, EDX (bytes
/// 0-3, 4-7, 8-11, little-endian, as Xen and KVM lay theirs out).
pub fn signature_leaf(signature: &[u8; 12], max_leaf: u32) -> [u32; 4] {
    let [b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3] = *signature;
    [
        max_leaf,
        u32::from_le_bytes([b0, b1, b2, b3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
        u32::from_le_bytes([d0, d1, d2, d3]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_leaves() {
        let v = VcpuView {
            signature: XEN_SIGNATURE,
            apic_id: 3,
            tsc_hz: 2_500_000_000,
            osxsave: false,
            xcr0: 1,
        };
        assert_eq!(xen_leaf(0x4000_0000, 0, &v)[0], 0x4000_0005);
        assert_eq!(xen_leaf(0x4000_0001, 0, &v), [0x0004_0011, 0, 0, 0]);
        assert_eq!(xen_leaf(0x4000_0002, 0, &v), [1, 0x4000_0000, 0, 0]);
        assert_eq!(xen_leaf(0x4000_0003, 0, &v)[2], 2_500_000);
        assert_eq!(xen_leaf(0x4000_0004, 0, &v), [(1 << 3) | (1 << 6), 3, 0, 0]);
        assert_eq!(xen_leaf(0x4000_0005, 0, &v), [0; 4]);
    }

    #[test]
    fn xen_signature_registers() {
        let [eax, ebx, ecx, edx] = signature_leaf(b"XenVMMXenVMM", 0x4000_0005);
        assert_eq!(eax, 0x4000_0005);
        // The values Xen's guests compare against (e.g. Linux's xen_cpuid_base()).
        assert_eq!(ebx, 0x566e_6558); // "XenV"
        assert_eq!(ecx, 0x65584d4d); // "MMXe"
        assert_eq!(edx, 0x4d4d_566e); // "nVMM"
    }

    #[test]
    fn tsc_leaf_gives_back_the_frequency() {
        let [den, num, crystal, _] = tsc_leaf(2_100_000_000);
        assert_eq!(
            u64::from(crystal) * u64::from(num) / u64::from(den),
            2_100_000_000
        );
        assert_eq!(tsc_leaf(0), [0; 4]);
        assert_eq!(tsc_leaf(u64::MAX)[1], u32::MAX, "saturates");
    }
}
