//! The guest CPU model built from recorded CPUID dumps of real server CPUs
//! (`tests/fixtures/*.txt`, each naming its source): what a guest sees on each.

use basalt_cpu::cpuid::{ALLOW, GuestCpu, Limits, MAX_BASIC_LEAF, VcpuView};
use basalt_cpu::cr::{CrState, cr0, cr4, efer};
use basalt_cpu::xstate;
use std::collections::HashMap;

struct Dump {
    leaves: HashMap<(u32, u32), [u32; 4]>,
}

impl Dump {
    fn load(name: &str) -> Self {
        let path = format!("{}/tests/fixtures/{name}.txt", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut leaves = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let f: Vec<u32> = line
                .split_whitespace()
                .map(|w| u32::from_str_radix(w, 16).unwrap_or_else(|_| panic!("{path}: {line}")))
                .collect();
            assert_eq!(f.len(), 6, "{path}: {line}");
            leaves.insert((f[0], f[1]), [f[2], f[3], f[4], f[5]]);
        }
        Self { leaves }
    }

    /// The host's CPUID: a leaf the dump leaves out (AIDA64 omits all-zero subleaves) reads 0.
    fn host(&self) -> impl Fn(u32, u32) -> [u32; 4] + '_ {
        |leaf, sub| {
            self.leaves
                .get(&(leaf, sub))
                .or_else(|| {
                    // Leaves without subleaves are recorded once, as subleaf 0.
                    let indexed = matches!(
                        leaf,
                        4 | 7
                            | 0xb
                            | 0xd
                            | 0xf
                            | 0x10
                            | 0x12
                            | 0x14
                            | 0x17
                            | 0x18
                            | 0x1d
                            | 0x1e
                            | 0x1f
                            | 0x20
                            | 0x8000_001d
                            | 0x8000_0020
                            | 0x8000_0026
                    );
                    if indexed {
                        None
                    } else {
                        self.leaves.get(&(leaf, 0))
                    }
                })
                .copied()
                .unwrap_or([0; 4])
        }
    }
}

const FIXTURES: [&str; 4] = [
    "GenuineIntel00806F8_SapphireRapids_05",
    "GenuineIntel0050654_SkylakeXeon",
    "AuthenticAMD0A10F11_K19_Genoa_01",
    "AuthenticAMD0A00F11_K19_Milan_02",
];

fn view(xcr0: u64, osxsave: bool) -> VcpuView {
    VcpuView {
        signature: *b"BasaltBasalt",
        apic_id: 3,
        tsc_hz: 2_000_000_000,
        osxsave,
        xcr0,
    }
}

fn bit(r: [u32; 4], reg: usize, b: u32) -> bool {
    r[reg] & (1 << b) != 0
}

#[test]
fn nothing_outside_the_allow_list_reaches_a_guest() {
    for name in FIXTURES {
        let dump = Dump::load(name);
        let host = dump.host();
        let cpu = GuestCpu::new(&host, &Limits::default());
        let v = view(xstate::X87 | xstate::SSE, true);
        // Every leaf a guest can ask: each bit it sees is allowed, forced or Basalt's own.
        for (&(leaf, sub), h) in &dump.leaves {
            let g = cpu.cpuid(leaf, sub, &v);
            let own = matches!(leaf, 0 | 1 | 7 | 0xd | 0x15 | 0x16 | 0x8000_0000);
            if own {
                continue;
            }
            let rule = ALLOW
                .iter()
                .find(|r| r.leaf == leaf && r.sub.is_none_or(|s| s == sub));
            for reg in 0..4 {
                let keep = rule.map_or(0, |r| r.keep[reg]);
                assert_eq!(
                    g[reg] & !(h[reg] & keep),
                    0,
                    "{name}: leaf {leaf:#x}.{sub} reg {reg}: guest {:#x}, host {:#x}",
                    g[reg],
                    h[reg]
                );
            }
        }
        // Leaves beyond the allow-list read 0.
        for leaf in [
            0x5,
            0x6,
            0xa,
            0xb,
            0x12,
            0x14,
            0x1d,
            0x1f,
            0x8000_000a,
            0x8000_001f,
        ] {
            assert_eq!(cpu.cpuid(leaf, 0, &v), [0; 4], "{name}: leaf {leaf:#x}");
        }
        assert_eq!(cpu.cpuid(0, 0, &v)[0], MAX_BASIC_LEAF);
        let l1 = cpu.cpuid(1, 0, &v);
        assert!(
            !bit(l1, 2, 5) && !bit(l1, 2, 6) && !bit(l1, 2, 3),
            "{name}: VMX/SMX/MONITOR"
        );
        assert!(
            bit(l1, 2, 31) && bit(l1, 2, 21) && bit(l1, 3, 9),
            "{name}: hypervisor, x2APIC, APIC"
        );
        assert_eq!(l1[1] >> 24, 3, "{name}: APIC ID");
        assert!(bit(l1, 2, 27), "{name}: OSXSAVE follows CR4");
        assert!(!bit(cpu.cpuid(1, 0, &view(1, false)), 2, 27));
        let l7 = cpu.cpuid(7, 0, &v);
        assert!(!bit(l7, 2, 3) && !bit(l7, 2, 4), "{name}: PKU/OSPKE");
        assert!(!bit(l7, 2, 5), "{name}: WAITPKG");
        assert!(!bit(l7, 2, 7) && !bit(l7, 3, 20), "{name}: CET");
        assert!(
            !bit(l7, 3, 22) && !bit(l7, 3, 24) && !bit(l7, 3, 25),
            "{name}: AMX"
        );
        assert!(!bit(l7, 1, 4) && !bit(l7, 1, 11), "{name}: TSX");
        assert!(
            !bit(l7, 3, 26) && !bit(l7, 3, 29),
            "{name}: speculation-control MSRs"
        );
        assert_eq!(
            cpu.cpuid(0xd, 1, &v)[0] & 0b11010,
            0,
            "{name}: XSAVEC/XSAVES/XFD"
        );
        assert!(!bit(cpu.cpuid(0x8000_0001, 0, &v), 2, 2), "{name}: SVM");
        // The CR model refuses what CPUID hides.
        let long = CrState {
            cr0: cr0::PE | cr0::ET | cr0::PG,
            cr3: 0x1000,
            cr4: cr4::PAE,
            efer: efer::LME | efer::LMA,
            cs_l: true,
        };
        for b in [cr4::PKE, cr4::CET, cr4::VMXE, cr4::SMXE, cr4::PKS, cr4::KL] {
            assert!(
                cpu.cr.mov_to_cr4(&long, cr4::PAE | b).is_err(),
                "{name}: CR4 {b:#x}"
            );
        }
        assert!(
            cpu.cr.wrmsr_efer(&long, long.efer | (1 << 12)).is_err(),
            "{name}: EFER.SVME"
        );
    }
}

#[test]
fn xsave_sizes_follow_the_policy() {
    for name in FIXTURES {
        let dump = Dump::load(name);
        let host = dump.host();
        let cpu = GuestCpu::new(&host, &Limits::default());
        let x = cpu.xstate.expect("every fixture has XSAVE");
        let v = view(x.allowed, true);
        let l0 = cpu.cpuid(0xd, 0, &v);
        assert_eq!(u64::from(l0[0]) | (u64::from(l0[3]) << 32), x.allowed);
        assert_eq!(l0[2], x.max_size(), "{name}");
        assert_eq!(l0[1], x.max_size(), "{name}: EBX for the largest XCR0");
        assert_eq!(cpu.cpuid(0xd, 0, &view(3, true))[1], 576);
        // The allowed set is a valid XCR0 and a subset of the host's.
        let h = host(0xd, 0);
        let host_xcr0 = u64::from(h[0]) | (u64::from(h[3]) << 32);
        assert!(xstate::valid_xcr0(x.allowed, host_xcr0), "{name}");
        // Never more than the host's own largest area.
        assert!(x.max_size() <= h[2], "{name}");
        // AVX-512 is offered exactly when the host has all of it; the CPUID bits agree.
        let l7 = cpu.cpuid(7, 0, &v);
        assert_eq!(
            x.allowed & xstate::AVX512 == xstate::AVX512,
            l7[1] & (1 << 16) != 0,
            "{name}: AVX512F agrees with XCR0"
        );
        assert_eq!(
            x.allowed & (xstate::PKRU | xstate::XTILECFG | xstate::XTILEDATA | xstate::BNDREGS),
            0
        );
    }
}

#[test]
fn sapphire_rapids_without_amx() {
    let dump = Dump::load("GenuineIntel00806F8_SapphireRapids_05");
    let host = dump.host();
    // The host's own area is 11 KiB with AMX.
    assert_eq!(host(0xd, 0)[2], 0x2b00);
    let cpu = GuestCpu::new(&host, &Limits::default());
    let x = cpu.xstate.unwrap();
    assert_eq!(x.allowed, 0xe7);
    assert_eq!(x.max_size(), 0xa80);
    assert_eq!(cpu.cpuid(0xd, 18, &view(0xe7, true)), [0; 4]);
    // Sub-leaf 1: the host's XSAVEOPT and XGETBV(1) (0x1f there), nothing compacted.
    assert_eq!(cpu.cpuid(0xd, 1, &view(0xe7, true))[0], 0x5);
    // The invalid values of issue 12 are refused.
    assert!(x.xsetbv(0, 0x27, 0, true).is_err());
    assert!(x.xsetbv(0, 0x60007, 0, true).is_err());
    assert_eq!(x.xsetbv(0, 0xe7, 0, true), Ok(0xe7));
}

#[test]
fn skylake_hides_mpx() {
    let dump = Dump::load("GenuineIntel0050654_SkylakeXeon");
    let host = dump.host();
    let cpu = GuestCpu::new(&host, &Limits::default());
    let x = cpu.xstate.unwrap();
    assert_eq!(x.allowed & (xstate::BNDREGS | xstate::BNDCSR), 0);
    assert!(x.xsetbv(0, 0x1f, 0, true).is_err());
    assert_eq!(
        cpu.cpuid(7, 0, &view(7, true))[1] & (1 << 14),
        0,
        "MPX hidden"
    );
}

#[test]
fn genoa_with_avx512_and_no_leaf_4() {
    let dump = Dump::load("AuthenticAMD0A10F11_K19_Genoa_01");
    let host = dump.host();
    let cpu = GuestCpu::new(&host, &Limits::default());
    let v = view(7, true);
    assert_eq!(cpu.xstate.unwrap().allowed, 0xe7);
    assert_eq!(cpu.cpuid(4, 0, &v), [0; 4]);
    assert_eq!(cpu.cpuid(0x8000_0000, 0, &v)[0], 0x8000_0008);
    // AMD's copy of the leaf 1 EDX bits and LM, NX, SYSCALL survive.
    let e1 = cpu.cpuid(0x8000_0001, 0, &v);
    assert!(bit(e1, 3, 29) && bit(e1, 3, 20) && bit(e1, 3, 11));
    assert!(!bit(e1, 3, 25), "FFXSR");
    assert_eq!(cpu.cr.efer_valid, efer::SCE | efer::LME | efer::NXE);
    assert_eq!(cpu.cr.maxphyaddr, 52);
}

#[test]
fn limits_of_the_virtualisation_layer() {
    let dump = Dump::load("GenuineIntel00806F8_SapphireRapids_05");
    let host = dump.host();
    let v = view(7, true);
    let full = GuestCpu::new(&host, &Limits::default());
    assert!(bit(full.cpuid(7, 0, &v), 1, 10), "INVPCID");
    // The host has LA57; guests are not shown it (hypercall arguments are walked with 4 levels).
    assert!(dump.host()(7, 0)[2] & (1 << 16) != 0);
    assert!(!bit(full.cpuid(7, 0, &v), 2, 16), "LA57");
    assert_eq!(full.cr.cr4_valid & cr4::LA57, 0);
    let limited = GuestCpu::new(
        &host,
        &Limits {
            invpcid: false,
            rdtscp: false,
            cr4_settable: !cr4::LA57,
            xcr0_wanted: xstate::X87 | xstate::SSE,
        },
    );
    let l7 = limited.cpuid(7, 0, &v);
    assert!(!bit(l7, 1, 10) && !bit(l7, 2, 22) && !bit(l7, 2, 16));
    assert!(!bit(limited.cpuid(0x8000_0001, 0, &v), 3, 27), "RDTSCP");
    // Without AVX state, no AVX-family bit.
    assert!(!bit(limited.cpuid(1, 0, &v), 2, 28) && !bit(l7, 1, 5) && !bit(l7, 1, 16));
    assert_eq!(limited.cr.cr4_valid & cr4::LA57, 0);
    let long = CrState {
        cr0: cr0::PE | cr0::ET | cr0::PG,
        cr3: 0,
        cr4: cr4::PAE,
        efer: efer::LME | efer::LMA,
        cs_l: true,
    };
    assert!(limited.cr.mov_to_cr4(&long, cr4::PAE | cr4::LA57).is_err());
}
