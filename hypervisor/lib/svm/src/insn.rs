//! The instructions SVM intercepts, recognised from their bytes (docs/amd-v.md, "Instruction
//! length"). Without NRIPS (QEMU's TCG) a #VMEXIT gives no next RIP except for I/O, so the
//! backend reads the bytes at CS:RIP and this module says which intercepted instruction they
//! are and how long it is, prefixes included; without decode assists a CR write gives no
//! operand either, so MOV to CR is decoded here too. Bytes that are not the instruction the
//! exit names mean the guest changed its code between the intercept and the fetch (another
//! vCPU writing it): the backend then runs the guest again rather than guess.
//!
//! Legacy prefixes (AMD APM Vol. 3 §1.2) may repeat and come in any order; REX (64-bit mode
//! only) must come last. An instruction is at most 15 bytes long.

/// The code size the guest runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSize {
    /// Real or 16-bit protected mode.
    Bits16,
    /// 32-bit protected mode or compatibility mode.
    Bits32,
    /// 64-bit mode.
    Bits64,
}

/// An intercepted instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insn {
    /// CPUID (0F A2).
    Cpuid,
    /// RDMSR (0F 32).
    Rdmsr,
    /// WRMSR (0F 30).
    Wrmsr,
    /// HLT (F4).
    Hlt,
    /// VMMCALL (0F 01 D9): AMD's hypercall.
    Vmmcall,
    /// VMCALL (0F 01 C1): Intel's hypercall, which raises #UD on AMD.
    Vmcall,
    /// XSETBV (0F 01 D1).
    Xsetbv,
    /// INVD (0F 08).
    Invd,
    /// WBINVD (0F 09).
    Wbinvd,
    /// RDTSCP (0F 01 F9).
    Rdtscp,
    /// MONITOR/MONITORX (0F 01 C8 / 0F 01 FA).
    Monitor,
    /// MWAIT/MWAITX (0F 01 C9 / 0F 01 FB).
    Mwait,
    /// An SVM instruction: VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA (0F 01 D8,
    /// DA-DF).
    Svm,
    /// CLTS (0F 06): a CR0 write.
    Clts,
    /// LMSW with a register operand (0F 01 /6, mod 3): a CR0 write. The
    /// memory form is not recognised (no current OS uses it).
    Lmsw {
        /// The source register (its low 16 bits are the machine status word).
        gpr: u8,
    },
    /// MOV to a control register (0F 22 /r).
    MovToCr {
        /// The control register (0-15; LOCK MOV CR0 is CR8 on AMD).
        cr: u8,
        /// The source register, in the SDM's numbering (0 = RAX ... 15 = R15).
        gpr: u8,
    },
}

/// An instruction recognised at RIP: what it is and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// The instruction.
    pub insn: Insn,
    /// Its length, prefixes included.
    pub len: u8,
}

/// The longest instruction the processor accepts (a longer one raises #GP).
pub const MAX_LENGTH: usize = 15;

/// Recognises the intercepted instruction at the start of `bytes` (as many bytes as could be
/// fetched, up to 15). `None` when they are not one of [`Insn`], are cut short, or are longer
/// than 15 bytes.
pub fn decode(bytes: &[u8], size: CodeSize) -> Option<Decoded> {
    let bytes = &bytes[..bytes.len().min(MAX_LENGTH)];
    let mut i = 0;
    let mut lock = false;
    let mut rex = 0u8;
    // Legacy prefixes, then (64-bit mode) REX; a REX followed by a legacy prefix is ignored,
    // as the processor ignores it.
    loop {
        let b = *bytes.get(i)?;
        match b {
            0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 => rex = 0,
            0xf0 => {
                lock = true;
                rex = 0;
            }
            0x40..=0x4f if size == CodeSize::Bits64 => rex = b,
            _ => break,
        }
        i += 1;
    }
    let op = *bytes.get(i)?;
    let (insn, end) = match op {
        0xf4 => (Insn::Hlt, i + 1),
        0x0f => {
            let op2 = *bytes.get(i + 1)?;
            match op2 {
                0xa2 => (Insn::Cpuid, i + 2),
                0x32 => (Insn::Rdmsr, i + 2),
                0x30 => (Insn::Wrmsr, i + 2),
                0x06 => (Insn::Clts, i + 2),
                0x08 => (Insn::Invd, i + 2),
                0x09 => (Insn::Wbinvd, i + 2),
                0x01 => {
                    let modrm = *bytes.get(i + 2)?;
                    let insn = match modrm {
                        0xd9 => Insn::Vmmcall,
                        0xc1 => Insn::Vmcall,
                        0xd1 => Insn::Xsetbv,
                        0xf9 => Insn::Rdtscp,
                        0xc8 | 0xfa => Insn::Monitor,
                        0xc9 | 0xfb => Insn::Mwait,
                        0xd8 | 0xda..=0xdf => Insn::Svm,
                        0xf0..=0xf7 => Insn::Lmsw {
                            gpr: (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 },
                        },
                        _ => return None,
                    };
                    (insn, i + 3)
                }
                0x22 => {
                    // The ModRM mod field is ignored: the operand is always a register.
                    let modrm = *bytes.get(i + 2)?;
                    let mut cr = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
                    if lock && cr == 0 {
                        cr = 8;
                    }
                    let gpr = (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 };
                    (Insn::MovToCr { cr, gpr }, i + 3)
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    if end > bytes.len() {
        return None;
    }
    Some(Decoded {
        insn,
        len: end as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(bytes: &[u8], size: CodeSize) -> Option<(Insn, u8)> {
        decode(bytes, size).map(|d| (d.insn, d.len))
    }

    #[test]
    fn plain_instructions() {
        use CodeSize::*;
        assert_eq!(d(&[0x0f, 0xa2, 0x90], Bits64), Some((Insn::Cpuid, 2)));
        assert_eq!(d(&[0xf4], Bits16), Some((Insn::Hlt, 1)));
        assert_eq!(d(&[0x0f, 0x01, 0xd9], Bits32), Some((Insn::Vmmcall, 3)));
        assert_eq!(d(&[0x0f, 0x01, 0xc1], Bits64), Some((Insn::Vmcall, 3)));
        assert_eq!(d(&[0x0f, 0x01, 0xd1], Bits64), Some((Insn::Xsetbv, 3)));
        assert_eq!(d(&[0x0f, 0x32], Bits64), Some((Insn::Rdmsr, 2)));
        assert_eq!(d(&[0x0f, 0x30], Bits64), Some((Insn::Wrmsr, 2)));
        assert_eq!(d(&[0x0f, 0x09], Bits64), Some((Insn::Wbinvd, 2)));
        assert_eq!(d(&[0x0f, 0x01, 0xd8], Bits64), Some((Insn::Svm, 3)));
        assert_eq!(d(&[0x0f, 0x01, 0xfb], Bits64), Some((Insn::Mwait, 3)));
        assert_eq!(d(&[0x0f, 0x06], Bits32), Some((Insn::Clts, 2)));
        assert_eq!(
            d(&[0x0f, 0x01, 0xf0], Bits16),
            Some((Insn::Lmsw { gpr: 0 }, 3))
        );
        // lmsw [eax]: the memory form is not recognised.
        assert_eq!(d(&[0x0f, 0x01, 0x30], Bits32), None);
    }

    #[test]
    fn prefixes_count_in_the_length() {
        use CodeSize::*;
        // Redundant prefixes are legal on CPUID: a decoder that assumed 2 bytes would resume
        // the guest in the middle of the instruction.
        assert_eq!(d(&[0x66, 0x2e, 0x0f, 0xa2], Bits32), Some((Insn::Cpuid, 4)));
        assert_eq!(d(&[0x48, 0x0f, 0x30], Bits64), Some((Insn::Wrmsr, 3)));
        assert_eq!(
            d(&[0xf3, 0x0f, 0x01, 0xd9], Bits64),
            Some((Insn::Vmmcall, 4))
        );
        // 0x48 is DEC AX outside 64-bit mode: not a prefix.
        assert_eq!(d(&[0x48, 0x0f, 0x30], Bits32), None);
    }

    #[test]
    fn mov_to_cr() {
        use CodeSize::*;
        // mov cr4, rax
        assert_eq!(
            d(&[0x0f, 0x22, 0xe0], Bits64),
            Some((Insn::MovToCr { cr: 4, gpr: 0 }, 3))
        );
        // mov cr0, r13 (REX.B)
        assert_eq!(
            d(&[0x41, 0x0f, 0x22, 0xc5], Bits64),
            Some((Insn::MovToCr { cr: 0, gpr: 13 }, 4))
        );
        // mov cr8, rcx (REX.R)
        assert_eq!(
            d(&[0x44, 0x0f, 0x22, 0xc1], Bits64),
            Some((Insn::MovToCr { cr: 8, gpr: 1 }, 4))
        );
        // lock mov cr0, eax is CR8 on AMD
        assert_eq!(
            d(&[0xf0, 0x0f, 0x22, 0xc0], Bits32),
            Some((Insn::MovToCr { cr: 8, gpr: 0 }, 4))
        );
        // The mod field does not matter: 0F 22 /r always names a register.
        assert_eq!(
            d(&[0x0f, 0x22, 0x20], Bits32),
            Some((Insn::MovToCr { cr: 4, gpr: 0 }, 3))
        );
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        use CodeSize::*;
        assert_eq!(d(&[0x90], Bits64), None);
        assert_eq!(d(&[0x0f, 0x01, 0xd0], Bits64), None); // XGETBV: never intercepted
        assert_eq!(d(&[0x0f], Bits64), None); // cut short
        assert_eq!(d(&[0x0f, 0x22], Bits64), None);
        assert_eq!(d(&[], Bits64), None);
        // Fifteen prefixes leave no room for the opcode: #GP on hardware, None here.
        let mut long = [0x66u8; 16];
        long[15] = 0xf4;
        assert_eq!(d(&long, Bits64), None);
        let mut ok = [0x66u8; 15];
        ok[14] = 0xf4;
        assert_eq!(d(&ok, Bits64), Some((Insn::Hlt, 15)));
    }
}
