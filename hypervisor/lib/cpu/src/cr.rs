//! Control-register and EFER writes: the architectural checks of `MOV to CR0/CR3/CR4/CR8` and
//! `WRMSR IA32_EFER` (SDM Vol. 2B "MOV—Move to/from Control Registers", Vol. 3A 2.5 "Control
//! Registers", 2.2.1 "Extended Feature Enable Register", 4.10.1 "Process-Context Identifiers"),
//! for the CPU model a guest sees: a bit whose feature the guest's CPUID does not show is
//! reserved, and setting it raises #GP exactly as on a processor without the feature.
//!
//! Each check returns the value to load, or [`Gp`]: the caller injects #GP(0) and leaves the
//! register as it was.

/// CR0 bits (SDM Vol. 3A 2.5).
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// Emulation.
    pub const EM: u64 = 1 << 2;
    /// Task switched.
    pub const TS: u64 = 1 << 3;
    /// Extension type: hard-wired to 1 on every processor since the i486DX.
    pub const ET: u64 = 1 << 4;
    /// Numeric error.
    pub const NE: u64 = 1 << 5;
    /// Write protect.
    pub const WP: u64 = 1 << 16;
    /// Alignment mask.
    pub const AM: u64 = 1 << 18;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
    /// Every defined bit. Writes to the other bits of the low half are ignored (they read as
    /// 0); a bit set in the high half raises #GP.
    pub const DEFINED: u64 = PE | MP | EM | TS | ET | NE | WP | AM | NW | CD | PG;
}

/// CR4 bits (SDM Vol. 3A 2.5).
pub mod cr4 {
    /// Virtual-8086 mode extensions.
    pub const VME: u64 = 1 << 0;
    /// Protected-mode virtual interrupts.
    pub const PVI: u64 = 1 << 1;
    /// Time stamp disable.
    pub const TSD: u64 = 1 << 2;
    /// Debugging extensions.
    pub const DE: u64 = 1 << 3;
    /// Page size extensions.
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Machine-check enable.
    pub const MCE: u64 = 1 << 6;
    /// Page global enable.
    pub const PGE: u64 = 1 << 7;
    /// Performance-monitoring counter enable.
    pub const PCE: u64 = 1 << 8;
    /// FXSAVE/FXRSTOR and SSE support.
    pub const OSFXSR: u64 = 1 << 9;
    /// Unmasked SIMD floating-point exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// User-mode instruction prevention.
    pub const UMIP: u64 = 1 << 11;
    /// 57-bit linear addresses (5-level paging).
    pub const LA57: u64 = 1 << 12;
    /// VMX enable.
    pub const VMXE: u64 = 1 << 13;
    /// SMX enable.
    pub const SMXE: u64 = 1 << 14;
    /// RDFSBASE and friends.
    pub const FSGSBASE: u64 = 1 << 16;
    /// Process-context identifiers.
    pub const PCIDE: u64 = 1 << 17;
    /// XSAVE and extended states.
    pub const OSXSAVE: u64 = 1 << 18;
    /// Key locker.
    pub const KL: u64 = 1 << 19;
    /// Supervisor-mode execution prevention.
    pub const SMEP: u64 = 1 << 20;
    /// Supervisor-mode access prevention.
    pub const SMAP: u64 = 1 << 21;
    /// Protection keys for user pages.
    pub const PKE: u64 = 1 << 22;
    /// Control-flow enforcement.
    pub const CET: u64 = 1 << 23;
    /// Protection keys for supervisor pages.
    pub const PKS: u64 = 1 << 24;
    /// The bits every x86-64 processor has.
    pub const BASE: u64 = VME | PVI | TSD | DE | PSE | PAE | MCE | PGE | PCE | OSFXSR | OSXMMEXCPT;
}

/// IA32_EFER bits (SDM Vol. 3A 2.2.1; APM Vol. 2 3.1.7).
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active (read-only: the processor sets it).
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
}

/// The fault a refused write raises: #GP(0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gp;

/// The guest state a write is checked against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrState {
    /// CR0 as the guest sees it.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 as the guest sees it.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// CS.L: the guest runs 64-bit code (with EFER.LMA).
    pub cs_l: bool,
}

impl CrState {
    fn long_mode(&self) -> bool {
        self.efer & efer::LMA != 0
    }
}

/// The control-register bits of the CPU model a guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrModel {
    /// The CR4 bits a guest may set; every other bit is reserved.
    pub cr4_valid: u64,
    /// The EFER bits a guest may set.
    pub efer_valid: u64,
    /// The guest's physical-address width (CPUID 0x8000_0008 EAX\[7:0\]).
    pub maxphyaddr: u8,
}

/// The CR4 bits a guest may flip without Basalt seeing it (when the virtualisation layer lets
/// it): bits of features the processor has (they are offered only then), whose transition
/// rules (PAE in IA-32e mode, PCIDE and CR3) the processor enforces itself exactly as the
/// guest's model says. LA57, CET, PKE and everything reserved are always intercepted.
const CR4_FREE: u64 =
    cr4::BASE | cr4::UMIP | cr4::FSGSBASE | cr4::PCIDE | cr4::OSXSAVE | cr4::SMEP | cr4::SMAP;

impl CrModel {
    /// The checks of MOV to CR0 with `value`: #GP for a bit of 63:32, PG without PE, NW
    /// without CD, paging switched on with EFER.LME and CR4.PAE clear or from 64-bit code,
    /// paging switched off in 64-bit mode or with CR4.PCIDE, WP cleared with CR4.CET. Returns
    /// the value to load: the undefined low bits cleared, ET set.
    pub fn mov_to_cr0(&self, s: &CrState, value: u64) -> Result<u64, Gp> {
        if value >> 32 != 0 {
            return Err(Gp);
        }
        let value = (value & cr0::DEFINED) | cr0::ET;
        let pg = value & cr0::PG != 0;
        if pg && value & cr0::PE == 0 {
            return Err(Gp);
        }
        if value & cr0::NW != 0 && value & cr0::CD == 0 {
            return Err(Gp);
        }
        let was_pg = s.cr0 & cr0::PG != 0;
        if pg && !was_pg && s.efer & efer::LME != 0 && (s.cr4 & cr4::PAE == 0 || s.cs_l) {
            return Err(Gp);
        }
        if !pg && was_pg && ((s.long_mode() && s.cs_l) || s.cr4 & cr4::PCIDE != 0) {
            return Err(Gp);
        }
        if value & cr0::WP == 0 && s.cr4 & cr4::CET != 0 {
            return Err(Gp);
        }
        Ok(value)
    }

    /// The checks of MOV to CR4 with `value`: #GP for a reserved bit (a feature the guest is
    /// not shown), PAE cleared or LA57 changed in IA-32e mode, PCIDE set outside IA-32e mode
    /// or with CR3\[11:0\] not 0, CET set with CR0.WP clear.
    pub fn mov_to_cr4(&self, s: &CrState, value: u64) -> Result<u64, Gp> {
        if value & !self.cr4_valid != 0 {
            return Err(Gp);
        }
        if s.long_mode() && (value & cr4::PAE == 0 || (value ^ s.cr4) & cr4::LA57 != 0) {
            return Err(Gp);
        }
        if value & cr4::PCIDE != 0
            && s.cr4 & cr4::PCIDE == 0
            && (!s.long_mode() || s.cr3 & 0xfff != 0)
        {
            return Err(Gp);
        }
        if value & cr4::CET != 0 && s.cr0 & cr0::WP == 0 {
            return Err(Gp);
        }
        Ok(value)
    }

    /// The checks of MOV to CR3 in IA-32e mode: #GP for a bit at or above MAXPHYADDR (bit 63
    /// excepted with CR4.PCIDE: it asks not to flush and is not loaded). Returns the value to
    /// load.
    pub fn mov_to_cr3(&self, s: &CrState, value: u64) -> Result<u64, Gp> {
        let value = if s.cr4 & cr4::PCIDE != 0 {
            value & !(1 << 63)
        } else {
            value
        };
        if s.long_mode() && value >> self.maxphyaddr.min(63) != 0 {
            return Err(Gp);
        }
        Ok(value)
    }

    /// The check of MOV to CR8: bits 63:4 are reserved. Returns the task priority.
    pub fn mov_to_cr8(value: u64) -> Result<u8, Gp> {
        if value >> 4 != 0 {
            return Err(Gp);
        }
        Ok(value as u8)
    }

    /// The checks of WRMSR IA32_EFER: #GP for a reserved bit or for changing LME while paging
    /// is on. LMA is the processor's: the value to load keeps the current one.
    pub fn wrmsr_efer(&self, s: &CrState, value: u64) -> Result<u64, Gp> {
        if value & !(self.efer_valid | efer::LMA) != 0 {
            return Err(Gp);
        }
        if s.cr0 & cr0::PG != 0 && (value ^ s.efer) & efer::LME != 0 {
            return Err(Gp);
        }
        Ok((value & !efer::LMA) | (s.efer & efer::LMA))
    }

    /// Whether `s` is a state the guest could be in: what a start state it supplies (Xen's
    /// `VCPUOP_initialise`) must satisfy before it is loaded. The same rules as the writes:
    /// no reserved CR0/CR4/EFER bit, PG only with PE, NW only with CD, CET only with WP,
    /// IA-32e mode (LME with PG) only with PAE and with LMA set, PCIDE only in IA-32e mode,
    /// CR3 below MAXPHYADDR.
    pub fn check_state(&self, s: &CrState) -> Result<(), Gp> {
        let pg = s.cr0 & cr0::PG != 0;
        let ia32e = pg && s.efer & efer::LME != 0;
        let bad = s.cr0 >> 32 != 0
            || (pg && s.cr0 & cr0::PE == 0)
            || (s.cr0 & cr0::NW != 0 && s.cr0 & cr0::CD == 0)
            || s.cr4 & !self.cr4_valid != 0
            || s.efer & !(self.efer_valid | efer::LMA) != 0
            || ia32e != s.long_mode()
            || (ia32e && s.cr4 & cr4::PAE == 0)
            || (s.cr4 & cr4::CET != 0 && s.cr0 & cr0::WP == 0)
            || (s.cr4 & cr4::PCIDE != 0 && !ia32e)
            || (!ia32e && s.cs_l);
        if bad {
            return Err(Gp);
        }
        self.mov_to_cr3(s, s.cr3).map(|_| ())
    }

    /// The CR4 bits a guest may own (change without an exit). Every other bit, and every bit of
    /// the high half, is intercepted and checked by [`Self::mov_to_cr4`].
    pub fn cr4_guest_owned(&self) -> u64 {
        CR4_FREE & self.cr4_valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: CrModel = CrModel {
        cr4_valid: cr4::BASE | cr4::OSXSAVE | cr4::PCIDE | cr4::SMEP | cr4::FSGSBASE,
        efer_valid: efer::SCE | efer::LME | efer::NXE,
        maxphyaddr: 46,
    };
    const WITH_CET_LA57: CrModel = CrModel {
        cr4_valid: MODEL.cr4_valid | cr4::CET | cr4::LA57,
        ..MODEL
    };

    const LONG: CrState = CrState {
        cr0: cr0::PE | cr0::ET | cr0::WP | cr0::PG,
        cr3: 0x1000,
        cr4: cr4::PAE,
        efer: efer::LME | efer::LMA,
        cs_l: true,
    };
    const PROT: CrState = CrState {
        cr0: cr0::PE | cr0::ET,
        cr3: 0,
        cr4: 0,
        efer: 0,
        cs_l: false,
    };
    const COMPAT: CrState = CrState {
        cs_l: false,
        ..LONG
    };

    enum Op {
        Cr0,
        Cr3,
        Cr4,
        Cr8,
        Efer,
    }

    /// (rule, model, state, op, value, expected)
    type Case = (&'static str, CrModel, CrState, Op, u64, Result<u64, Gp>);

    fn cases() -> Vec<Case> {
        use Op::*;
        let pe_et = cr0::PE | cr0::ET;
        vec![
            ("CR0 high half", MODEL, PROT, Cr0, 1 << 32 | pe_et, Err(Gp)),
            ("CR0 bit 63", MODEL, LONG, Cr0, 1 << 63 | LONG.cr0, Err(Gp)),
            (
                "CR0 undefined low bits ignored",
                MODEL,
                PROT,
                Cr0,
                pe_et | 0x7fc0,
                Ok(pe_et),
            ),
            ("CR0 ET reads 1", MODEL, PROT, Cr0, cr0::PE, Ok(pe_et)),
            ("CR0 PG without PE", MODEL, PROT, Cr0, cr0::PG, Err(Gp)),
            (
                "CR0 NW without CD",
                MODEL,
                PROT,
                Cr0,
                pe_et | cr0::NW,
                Err(Gp),
            ),
            (
                "CR0 CD and NW",
                MODEL,
                PROT,
                Cr0,
                pe_et | cr0::NW | cr0::CD,
                Ok(pe_et | cr0::NW | cr0::CD),
            ),
            (
                "CR0 PG",
                MODEL,
                PROT,
                Cr0,
                pe_et | cr0::PG,
                Ok(pe_et | cr0::PG),
            ),
            (
                "CR0 PG with LME, PAE clear",
                MODEL,
                CrState {
                    efer: efer::LME,
                    ..PROT
                },
                Cr0,
                pe_et | cr0::PG,
                Err(Gp),
            ),
            (
                "CR0 PG with LME and PAE",
                MODEL,
                CrState {
                    efer: efer::LME,
                    cr4: cr4::PAE,
                    ..PROT
                },
                Cr0,
                pe_et | cr0::PG,
                Ok(pe_et | cr0::PG),
            ),
            (
                "CR0 PG with LME from 64-bit code",
                MODEL,
                CrState {
                    efer: efer::LME,
                    cr4: cr4::PAE,
                    cs_l: true,
                    ..PROT
                },
                Cr0,
                pe_et | cr0::PG,
                Err(Gp),
            ),
            (
                "CR0 PG cleared in 64-bit mode",
                MODEL,
                LONG,
                Cr0,
                pe_et,
                Err(Gp),
            ),
            (
                "CR0 PG cleared in compatibility mode",
                MODEL,
                COMPAT,
                Cr0,
                pe_et,
                Ok(pe_et),
            ),
            (
                "CR0 PG cleared with PCIDE",
                MODEL,
                CrState {
                    cr4: cr4::PAE | cr4::PCIDE,
                    ..COMPAT
                },
                Cr0,
                pe_et,
                Err(Gp),
            ),
            (
                "CR0 WP cleared with CET",
                WITH_CET_LA57,
                CrState {
                    cr4: cr4::PAE | cr4::CET,
                    ..LONG
                },
                Cr0,
                LONG.cr0 & !cr0::WP,
                Err(Gp),
            ),
            (
                "CR0 WP cleared without CET",
                MODEL,
                LONG,
                Cr0,
                LONG.cr0 & !cr0::WP,
                Ok(LONG.cr0 & !cr0::WP),
            ),
            ("CR4 reserved bit 15", MODEL, PROT, Cr4, 1 << 15, Err(Gp)),
            ("CR4 high half", MODEL, PROT, Cr4, 1 << 40, Err(Gp)),
            (
                "CR4 VMXE is not offered",
                MODEL,
                PROT,
                Cr4,
                cr4::VMXE,
                Err(Gp),
            ),
            (
                "CR4 SMXE is not offered",
                MODEL,
                PROT,
                Cr4,
                cr4::SMXE,
                Err(Gp),
            ),
            (
                "CR4 PKE without PKU",
                MODEL,
                LONG,
                Cr4,
                cr4::PAE | cr4::PKE,
                Err(Gp),
            ),
            (
                "CR4 LA57 without LA57",
                MODEL,
                PROT,
                Cr4,
                cr4::LA57,
                Err(Gp),
            ),
            (
                "CR4 CET without CET",
                MODEL,
                LONG,
                Cr4,
                cr4::PAE | cr4::CET,
                Err(Gp),
            ),
            (
                "CR4 UMIP without UMIP",
                MODEL,
                PROT,
                Cr4,
                cr4::UMIP,
                Err(Gp),
            ),
            (
                "CR4 SMEP offered",
                MODEL,
                PROT,
                Cr4,
                cr4::SMEP,
                Ok(cr4::SMEP),
            ),
            (
                "CR4 PAE cleared in IA-32e mode",
                MODEL,
                LONG,
                Cr4,
                0,
                Err(Gp),
            ),
            (
                "CR4 PAE cleared in compatibility mode",
                MODEL,
                COMPAT,
                Cr4,
                0,
                Err(Gp),
            ),
            (
                "CR4 LA57 set in IA-32e mode",
                WITH_CET_LA57,
                LONG,
                Cr4,
                cr4::PAE | cr4::LA57,
                Err(Gp),
            ),
            (
                "CR4 LA57 cleared in IA-32e mode",
                WITH_CET_LA57,
                CrState {
                    cr4: cr4::PAE | cr4::LA57,
                    ..LONG
                },
                Cr4,
                cr4::PAE,
                Err(Gp),
            ),
            (
                "CR4 LA57 set outside IA-32e mode",
                WITH_CET_LA57,
                PROT,
                Cr4,
                cr4::LA57,
                Ok(cr4::LA57),
            ),
            (
                "CR4 PCIDE outside IA-32e mode",
                MODEL,
                PROT,
                Cr4,
                cr4::PCIDE,
                Err(Gp),
            ),
            (
                "CR4 PCIDE with CR3[11:0] set",
                MODEL,
                CrState {
                    cr3: 0x1001,
                    ..LONG
                },
                Cr4,
                cr4::PAE | cr4::PCIDE,
                Err(Gp),
            ),
            (
                "CR4 PCIDE in IA-32e mode",
                MODEL,
                LONG,
                Cr4,
                cr4::PAE | cr4::PCIDE,
                Ok(cr4::PAE | cr4::PCIDE),
            ),
            (
                "CR4 PCIDE kept with CR3[11:0] set",
                MODEL,
                CrState {
                    cr3: 0x1001,
                    cr4: cr4::PAE | cr4::PCIDE,
                    ..LONG
                },
                Cr4,
                cr4::PAE | cr4::PCIDE | cr4::PGE,
                Ok(cr4::PAE | cr4::PCIDE | cr4::PGE),
            ),
            (
                "CR4 CET with WP clear",
                WITH_CET_LA57,
                CrState {
                    cr0: LONG.cr0 & !cr0::WP,
                    ..LONG
                },
                Cr4,
                cr4::PAE | cr4::CET,
                Err(Gp),
            ),
            (
                "CR4 CET with WP set",
                WITH_CET_LA57,
                LONG,
                Cr4,
                cr4::PAE | cr4::CET,
                Ok(cr4::PAE | cr4::CET),
            ),
            ("CR3 above MAXPHYADDR", MODEL, LONG, Cr3, 1 << 46, Err(Gp)),
            (
                "CR3 below MAXPHYADDR",
                MODEL,
                LONG,
                Cr3,
                (1 << 46) - 0x1000,
                Ok((1 << 46) - 0x1000),
            ),
            (
                "CR3 bit 63 without PCIDE",
                MODEL,
                LONG,
                Cr3,
                1 << 63 | 0x1000,
                Err(Gp),
            ),
            (
                "CR3 bit 63 with PCIDE: no flush",
                MODEL,
                CrState {
                    cr4: cr4::PAE | cr4::PCIDE,
                    ..LONG
                },
                Cr3,
                1 << 63 | 0x1005,
                Ok(0x1005),
            ),
            ("CR8 reserved bit 4", MODEL, LONG, Cr8, 16, Err(Gp)),
            ("CR8 bit 63", MODEL, LONG, Cr8, 1 << 63, Err(Gp)),
            ("CR8 15", MODEL, LONG, Cr8, 15, Ok(15)),
            ("EFER reserved bit 1", MODEL, PROT, Efer, 2, Err(Gp)),
            (
                "EFER SVME is not offered",
                MODEL,
                PROT,
                Efer,
                1 << 12,
                Err(Gp),
            ),
            ("EFER NXE", MODEL, PROT, Efer, efer::NXE, Ok(efer::NXE)),
            ("EFER LMA is read-only", MODEL, PROT, Efer, efer::LMA, Ok(0)),
            (
                "EFER LME with paging on",
                MODEL,
                CrState {
                    cr0: pe_et | cr0::PG,
                    ..PROT
                },
                Efer,
                efer::LME,
                Err(Gp),
            ),
            (
                "EFER LME cleared in long mode",
                MODEL,
                LONG,
                Efer,
                efer::LMA,
                Err(Gp),
            ),
            (
                "EFER NXE in long mode",
                MODEL,
                LONG,
                Efer,
                efer::LME | efer::NXE,
                Ok(efer::LME | efer::LMA | efer::NXE),
            ),
        ]
    }

    #[test]
    fn every_rule() {
        for (rule, model, state, op, value, expected) in cases() {
            let got = match op {
                Op::Cr0 => model.mov_to_cr0(&state, value),
                Op::Cr3 => model.mov_to_cr3(&state, value),
                Op::Cr4 => model.mov_to_cr4(&state, value),
                Op::Cr8 => CrModel::mov_to_cr8(value).map(u64::from),
                Op::Efer => model.wrmsr_efer(&state, value),
            };
            assert_eq!(got, expected, "{rule}: value {value:#x}");
        }
    }

    #[test]
    fn whole_states() {
        assert_eq!(MODEL.check_state(&LONG), Ok(()));
        assert_eq!(MODEL.check_state(&COMPAT), Ok(()));
        assert_eq!(MODEL.check_state(&PROT), Ok(()));
        let bad = [
            CrState {
                efer: efer::LME,
                ..LONG
            }, // LMA missing
            CrState { cr4: 0, ..LONG }, // no PAE
            CrState {
                cr4: cr4::PAE | cr4::PKE,
                ..LONG
            }, // reserved CR4 bit
            CrState {
                cr0: LONG.cr0 | 1 << 40,
                ..LONG
            }, // CR0 high half
            CrState {
                efer: LONG.efer | 1 << 12,
                ..LONG
            }, // EFER.SVME
            CrState {
                cr3: 1 << 50,
                ..LONG
            }, // CR3 beyond MAXPHYADDR
            CrState {
                cr0: cr0::PG,
                ..PROT
            }, // PG without PE
            CrState {
                cr4: cr4::PCIDE,
                ..PROT
            }, // PCIDE outside IA-32e
            CrState { cs_l: true, ..PROT }, // 64-bit code without IA-32e
        ];
        for s in bad {
            assert_eq!(MODEL.check_state(&s), Err(Gp), "{s:x?}");
        }
    }

    #[test]
    fn owned_bits_are_valid_and_free_of_transition_rules() {
        for model in [MODEL, WITH_CET_LA57] {
            let owned = model.cr4_guest_owned();
            assert_eq!(owned & !model.cr4_valid, 0);
            assert_eq!(owned & (cr4::LA57 | cr4::CET | cr4::PKE | cr4::VMXE), 0);
            assert_eq!(owned >> 32, 0);
        }
    }
}
