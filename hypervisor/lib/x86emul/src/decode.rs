//! The decoder: bytes → [`Instruction`].

use core::fmt;

/// The code size the guest runs in, from `EFER.LMA`, `CS.L` and `CS.D`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// 64-bit mode (`EFER.LMA = 1`, `CS.L = 1`): 32-bit operands, 64-bit addresses, REX.
    Long64,
    /// 32-bit protected or compatibility mode (`CS.D = 1`): 32-bit operands and addresses.
    Protected32,
    /// 16-bit code (real mode, virtual-8086 or `CS.D = 0`): 16-bit operands and addresses.
    Real16,
}

/// What the instruction does with its memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `register ← memory`, widened by [`Instruction::extension`] when the register is wider than
    /// the access (`MOV r, r/m`, `MOVZX`, `MOVSX`, `MOV AL/eAX, moffs`).
    Load,
    /// `memory ← source` ([`Instruction::source`]) (`MOV r/m, r`, `MOV r/m, imm`,
    /// `MOV moffs, AL/eAX`).
    Store,
    /// `memory ← memory OP source`, flags updated (`ADD/OR/AND/SUB/XOR r/m, r|imm`); for
    /// [`AluOp::Cmp`] and [`AluOp::Test`] only the flags change.
    AluToMemory(AluOp),
    /// `register ← register OP memory`, flags updated (`ADD/OR/AND/SUB/XOR r, r/m`); for
    /// [`AluOp::Cmp`] (`CMP r, r/m`) only the flags change.
    AluToRegister(AluOp),
    /// `BT r/m, r|imm8` (`0F A3`, `0F BA /4`): `CF ←` bit ([`Instruction::source`] modulo the
    /// operand's bits) of memory; nothing is written, the other flags stay. With a register bit
    /// offset the processor accesses memory at the address the offset's high bits move it to;
    /// the emulator is given that access's address (the EPT violation's), so it uses only the
    /// offset's low bits.
    BitTest,
}

/// The arithmetic or logic operation of an [`Operation::AluToMemory`] or
/// [`Operation::AluToRegister`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    /// `ADD`.
    Add,
    /// `OR`.
    Or,
    /// `AND`.
    And,
    /// `SUB`.
    Sub,
    /// `XOR`.
    Xor,
    /// `CMP`: `SUB` that writes only the flags.
    Cmp,
    /// `TEST`: `AND` that writes only the flags.
    Test,
}

impl AluOp {
    /// Whether the result is written back (false for `CMP` and `TEST`).
    #[must_use]
    pub const fn writes_result(self) -> bool {
        !matches!(self, Self::Cmp | Self::Test)
    }
}

/// How a load narrower than its destination register is widened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Extension {
    /// Same width (plain `MOV`).
    None,
    /// Zero-extended (`MOVZX`).
    Zero,
    /// Sign-extended (`MOVSX`).
    Sign,
}

/// A general-purpose register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Register {
    /// Register number, 0–15 in the usual order (`RAX RCX RDX RBX RSP RBP RSI RDI R8`–`R15`).
    pub number: u8,
    /// Operand width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// The legacy high-byte registers `AH CH DH BH` (an 8-bit register 4–7 encoded without REX):
    /// then `number` is 0–3 and the operand is bits 8–15 of that register.
    pub high_byte: bool,
}

/// The second operand of a store or of an ALU operation on memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A register ([`Register::size`] equals the access size).
    Register(Register),
    /// An immediate, already sign-extended and truncated to the access size.
    Immediate(u64),
}

/// A segment register, in the SDM's numbering (ES = 0 ... GS = 5): the vendor
/// backends index their segment tables by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// `ES`.
    Es,
    /// `CS`.
    Cs,
    /// `SS`.
    Ss,
    /// `DS`.
    Ds,
    /// `FS`.
    Fs,
    /// `GS`.
    Gs,
}

/// The base of a memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Base {
    /// A general-purpose register (number 0–15).
    Register(u8),
    /// `RIP` (or `EIP` with a 67 prefix): the address of the *next* instruction, that is the
    /// instruction's address plus [`Instruction::length`]. Only in [`Mode::Long64`].
    Rip,
}

/// The memory operand: `segment:[base + index * scale + displacement]`, truncated to
/// `address_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryOperand {
    /// The segment: the override prefix if any (the last one), else `SS` for a `BP`/`SP`-based
    /// address and `DS` otherwise. In 64-bit mode only `FS` and `GS` have a base.
    pub segment: Segment,
    /// The base, if any.
    pub base: Option<Base>,
    /// The index register (number 0–15), if any.
    pub index: Option<u8>,
    /// The scale of the index: 1, 2, 4 or 8.
    pub scale: u8,
    /// The displacement, sign-extended (a 64-bit `moffs` is stored bit for bit).
    pub displacement: i64,
    /// Address width in bytes: 2, 4 or 8.
    pub address_size: u8,
}

impl MemoryOperand {
    /// The effective address (the offset within the segment), computed from the register values
    /// (`reg(n)` is the full 64-bit register `n`) and `next_rip`, the address of the next
    /// instruction; truncated to the address size.
    pub fn offset(&self, reg: impl Fn(u8) -> u64, next_rip: u64) -> u64 {
        let mut ea = self.displacement as u64;
        match self.base {
            Some(Base::Register(n)) => ea = ea.wrapping_add(reg(n)),
            Some(Base::Rip) => ea = ea.wrapping_add(next_rip),
            None => {}
        }
        if let Some(n) = self.index {
            ea = ea.wrapping_add(reg(n).wrapping_mul(u64::from(self.scale)));
        }
        ea & size_mask(self.address_size)
    }
}

/// One decoded instruction that accesses memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Instruction {
    /// Length in bytes, prefixes included (1–15): the RIP advance.
    pub length: u8,
    /// What the instruction does.
    pub operation: Operation,
    /// Width of the memory access in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// The register written by [`Operation::Load`] and [`Operation::AluToRegister`] (for a
    /// load it may be wider than `size`: see `extension`); `None` otherwise.
    pub destination: Option<Register>,
    /// The value stored by [`Operation::Store`] or combined with memory by
    /// [`Operation::AluToMemory`]; `None` otherwise.
    pub source: Option<Source>,
    /// How a [`Operation::Load`] widens the value read.
    pub extension: Extension,
    /// The memory operand.
    pub memory: MemoryOperand,
    /// Whether a `LOCK` prefix was given (only accepted on `ADD/OR/AND/SUB/XOR` to memory).
    pub lock: bool,
}

/// Why bytes were not decoded. Each variant's text (its `Display`) names the cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The instruction continues past the bytes given; fetch more bytes and decode again.
    Truncated,
    /// The instruction is longer than the 15 bytes the processor allows (it raises `#GP`).
    TooLong,
    /// The opcode (two-byte opcodes as `0x0fXX`) is not one this emulator handles.
    Unsupported {
        /// The opcode.
        opcode: u16,
    },
    /// The opcode's ModRM `reg` field selects an operation this emulator does not handle (for
    /// example `ADC`, `SBB`, `NOT` or `NEG`).
    UnsupportedGroup {
        /// The opcode.
        opcode: u16,
        /// The ModRM `reg` field (the `/digit`).
        digit: u8,
    },
    /// The instruction operates on registers only (ModRM `mod = 11`), so it cannot have caused a
    /// memory exit.
    RegisterOperand {
        /// The opcode.
        opcode: u16,
    },
    /// A prefix this instruction does not allow: `LOCK` on anything but a read-modify-write of
    /// memory (the processor raises `#UD`).
    BadPrefix {
        /// The prefix byte.
        prefix: u8,
    },
    /// A `REP`/`REPNE` (`F3`/`F2`) prefix: string and hint forms are not emulated.
    Repeat {
        /// The prefix byte.
        prefix: u8,
    },
}

/// Prints an opcode as `0x8b` or `0x0fb6`.
struct Opcode(u16);

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0xff {
            write!(f, "{:#06x}", self.0)
        } else {
            write!(f, "{:#04x}", self.0)
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated => {
                f.write_str("instruction truncated: it continues past the bytes fetched")
            }
            Self::TooLong => f.write_str("instruction longer than 15 bytes"),
            Self::Unsupported { opcode } => write!(f, "unsupported opcode {}", Opcode(opcode)),
            Self::UnsupportedGroup { opcode, digit } => {
                write!(f, "unsupported opcode {} /{digit}", Opcode(opcode))
            }
            Self::RegisterOperand { opcode } => {
                write!(
                    f,
                    "opcode {} with a register operand has no memory access",
                    Opcode(opcode)
                )
            }
            Self::BadPrefix { prefix } => {
                write!(f, "prefix {prefix:#04x} not allowed on this instruction")
            }
            Self::Repeat { prefix } => {
                write!(
                    f,
                    "REP prefix {prefix:#04x}: string and hinted forms are not emulated"
                )
            }
        }
    }
}

/// The most bytes an x86 instruction may have.
pub const MAX_LENGTH: usize = 15;

/// The mask of the low `size` bytes (1, 2, 4 or 8).
#[must_use]
pub const fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Reads bytes, refusing to go past the input or past 15 bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_LENGTH {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// A little-endian value of `n` bytes (1, 2, 4 or 8), sign-extended to 64 bits.
    fn signed(&mut self, n: u8) -> Result<i64, DecodeError> {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.byte()?) << (8 * i);
        }
        let shift = 64 - 8 * u32::from(n);
        Ok(((v << shift) as i64) >> shift)
    }
}

/// The ModRM byte, split.
#[derive(Clone, Copy)]
struct ModRm {
    md: u8,
    reg: u8,
    rm: u8,
}

/// What the prefixes said.
#[derive(Clone, Copy, Default)]
struct Prefixes {
    opsize: bool,
    addrsize: bool,
    segment: Option<Segment>,
    lock: bool,
    rep: Option<u8>,
    /// The REX byte, if one immediately precedes the opcode.
    rex: Option<u8>,
}

impl Prefixes {
    fn rex_bit(&self, bit: u8) -> u8 {
        u8::from(self.rex.is_some_and(|r| r & bit != 0))
    }
    fn w(&self) -> bool {
        self.rex_bit(8) != 0
    }
}

/// The operand shape of an opcode, before the ModRM byte.
#[derive(Clone, Copy)]
enum Form {
    /// ModRM memory operand; `reg` field is a register (`r/m, r` or `r, r/m`).
    RmReg { operation: Operation, byte: bool },
    /// `MOVZX`/`MOVSX`: register ← r/m of `mem` bytes.
    Extend { mem: u8, extension: Extension },
    /// ModRM memory operand with an immediate; the operation comes from the `/digit`.
    RmImm { opcode: u16, byte: bool, imm8: bool },
    /// `MOV` with a direct offset (`A0`–`A3`).
    Moffs { load: bool, byte: bool },
}

/// Decodes the instruction at the start of `bytes` in `mode`.
///
/// Reads at most [`MAX_LENGTH`] bytes and never past `bytes`; the result depends only on the
/// first [`Instruction::length`] bytes. Only memory-operand forms are decoded (see the crate
/// documentation for the list); everything else is an error.
pub fn decode(bytes: &[u8], mode: Mode) -> Result<Instruction, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let (p, opcode) = prefixes(&mut c, mode)?;
    if let Some(prefix) = p.rep {
        return Err(DecodeError::Repeat { prefix });
    }

    let form = match opcode {
        0x88 | 0x89 => Form::RmReg {
            operation: Operation::Store,
            byte: opcode == 0x88,
        },
        0x8a | 0x8b => Form::RmReg {
            operation: Operation::Load,
            byte: opcode == 0x8a,
        },
        0x84 | 0x85 => Form::RmReg {
            operation: Operation::AluToMemory(AluOp::Test),
            byte: opcode == 0x84,
        },
        0x00..=0x3f if opcode & 7 < 4 && alu_op((opcode >> 3) & 7).is_some() => {
            let op = alu_op((opcode >> 3) & 7).unwrap_or(AluOp::Add);
            let operation = if opcode & 2 == 0 {
                Operation::AluToMemory(op)
            } else {
                Operation::AluToRegister(op)
            };
            Form::RmReg {
                operation,
                byte: opcode & 1 == 0,
            }
        }
        0x80 => Form::RmImm {
            opcode: 0x80,
            byte: true,
            imm8: true,
        },
        0x81 => Form::RmImm {
            opcode: 0x81,
            byte: false,
            imm8: false,
        },
        0x83 => Form::RmImm {
            opcode: 0x83,
            byte: false,
            imm8: true,
        },
        0xc6 => Form::RmImm {
            opcode: 0xc6,
            byte: true,
            imm8: true,
        },
        0xc7 => Form::RmImm {
            opcode: 0xc7,
            byte: false,
            imm8: false,
        },
        0xf6 => Form::RmImm {
            opcode: 0xf6,
            byte: true,
            imm8: true,
        },
        0xf7 => Form::RmImm {
            opcode: 0xf7,
            byte: false,
            imm8: false,
        },
        0xa0..=0xa3 => Form::Moffs {
            load: opcode < 0xa2,
            byte: opcode & 1 == 0,
        },
        0x0f => {
            let second = c.byte()?;
            let full = 0x0f00 | u16::from(second);
            match second {
                0xb6 => Form::Extend {
                    mem: 1,
                    extension: Extension::Zero,
                },
                0xb7 => Form::Extend {
                    mem: 2,
                    extension: Extension::Zero,
                },
                0xbe => Form::Extend {
                    mem: 1,
                    extension: Extension::Sign,
                },
                0xbf => Form::Extend {
                    mem: 2,
                    extension: Extension::Sign,
                },
                0xa3 => Form::RmReg {
                    operation: Operation::BitTest,
                    byte: false,
                },
                0xba => Form::RmImm {
                    opcode: full,
                    byte: false,
                    imm8: true,
                },
                _ => return Err(DecodeError::Unsupported { opcode: full }),
            }
        }
        _ => {
            return Err(DecodeError::Unsupported {
                opcode: u16::from(opcode),
            });
        }
    };

    let full_opcode = match form {
        Form::Extend { mem, extension } => {
            0x0fb6 + u16::from(mem - 1) + if extension == Extension::Sign { 8 } else { 0 }
        }
        Form::RmReg {
            operation: Operation::BitTest,
            ..
        } => 0x0fa3,
        Form::RmImm { opcode, .. } => opcode,
        _ => u16::from(opcode),
    };
    let opsize = operand_size(mode, &p);
    let addrsize = address_size(mode, &p);

    let mut insn = match form {
        Form::Moffs { load, byte } => {
            let size = if byte { 1 } else { opsize };
            let displacement = c.signed(addrsize)?;
            let reg = Register {
                number: 0,
                size,
                high_byte: false,
            };
            let memory = MemoryOperand {
                segment: p.segment.unwrap_or(Segment::Ds),
                base: None,
                index: None,
                scale: 1,
                displacement,
                address_size: addrsize,
            };
            if load {
                load_insn(size, reg, Extension::None, memory)
            } else {
                store_insn(size, Source::Register(reg), memory)
            }
        }
        Form::RmReg { operation, byte } => {
            let (m, memory) = modrm(&mut c, mode, addrsize, &p, full_opcode)?;
            let size = if byte { 1 } else { opsize };
            let reg = gpr(m.reg | (p.rex_bit(4) << 3), size, &p);
            match operation {
                Operation::Load => load_insn(size, reg, Extension::None, memory),
                Operation::Store => store_insn(size, Source::Register(reg), memory),
                Operation::AluToMemory(_) | Operation::BitTest => Instruction {
                    source: Some(Source::Register(reg)),
                    ..blank(operation, size, memory)
                },
                Operation::AluToRegister(_) => Instruction {
                    destination: Some(reg),
                    ..blank(operation, size, memory)
                },
            }
        }
        Form::Extend { mem, extension } => {
            let (m, memory) = modrm(&mut c, mode, addrsize, &p, full_opcode)?;
            let reg = gpr(m.reg | (p.rex_bit(4) << 3), opsize, &p);
            // MOVZX/MOVSX r16, r/m16 is a plain 16-bit move.
            let extension = if mem == opsize {
                Extension::None
            } else {
                extension
            };
            load_insn(mem, reg, extension, memory)
        }
        Form::RmImm { opcode, byte, imm8 } => {
            let (m, memory) = modrm(&mut c, mode, addrsize, &p, full_opcode)?;
            let operation = match (opcode, m.reg) {
                (0xc6 | 0xc7, 0) => Operation::Store,
                (0xf6 | 0xf7, 0) => Operation::AluToMemory(AluOp::Test),
                (0x0fba, 4) => Operation::BitTest,
                (0x80 | 0x81 | 0x83, digit) => match alu_op(digit) {
                    Some(op) => Operation::AluToMemory(op),
                    None => return Err(DecodeError::UnsupportedGroup { opcode, digit }),
                },
                (_, digit) => return Err(DecodeError::UnsupportedGroup { opcode, digit }),
            };
            let size = if byte { 1 } else { opsize };
            let imm_bytes = if imm8 { 1 } else { size.min(4) };
            let imm = c.signed(imm_bytes)? as u64 & size_mask(size);
            Instruction {
                source: Some(Source::Immediate(imm)),
                ..blank(operation, size, memory)
            }
        }
    };

    if p.lock {
        let lockable = matches!(insn.operation, Operation::AluToMemory(op) if op.writes_result());
        if !lockable {
            return Err(DecodeError::BadPrefix { prefix: 0xf0 });
        }
        insn.lock = true;
    }
    // The cursor never passes 15 bytes.
    insn.length = c.pos as u8;
    Ok(insn)
}

/// A string port I/O instruction: `INS` (`6C`, `6D`) or `OUTS` (`6E`, `6F`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StringIo {
    /// Length in bytes, prefixes included (1–15): the `RIP` advance once it completes.
    pub length: u8,
    /// `INS` (port → memory at `ES:rDI`) rather than `OUTS` (memory at `seg:rSI` → port).
    pub is_in: bool,
    /// Element size in bytes: 1 (`6C`, `6E`), else 2 or 4 by the operand size (`66`; REX.W
    /// does not make it 8).
    pub size: u8,
    /// Address size in bytes (2, 4 or 8): the width of `rCX`, `rSI` and `rDI` used and updated.
    pub address_size: u8,
    /// The segment of the memory operand: always `ES` for `INS`; for `OUTS` the last segment
    /// override, else `DS`.
    pub segment: Segment,
    /// A `REP` prefix (`F3`, or `F2`, which `INS`/`OUTS` treat the same): repeat `rCX` times.
    pub rep: bool,
}

/// Decodes the string port I/O instruction (`INS`/`OUTS`) at the start of `bytes` in `mode`.
///
/// Prefixes: `66`, `67`, the segment overrides (they only change the source of `OUTS`: `INS`
/// always writes through `ES`), `F2`/`F3`, REX in 64-bit mode. Reads at most [`MAX_LENGTH`]
/// bytes and never past `bytes`.
///
/// # Errors
///
/// [`DecodeError::Truncated`], [`DecodeError::TooLong`], [`DecodeError::Unsupported`] for any
/// other opcode, [`DecodeError::BadPrefix`] for `LOCK` (the processor raises `#UD`).
pub fn decode_string_io(bytes: &[u8], mode: Mode) -> Result<StringIo, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let (p, opcode) = prefixes(&mut c, mode)?;
    if !(0x6c..=0x6f).contains(&opcode) {
        return Err(DecodeError::Unsupported {
            opcode: u16::from(opcode),
        });
    }
    if p.lock {
        return Err(DecodeError::BadPrefix { prefix: 0xf0 });
    }
    let is_in = opcode < 0x6e;
    let size = if opcode & 1 == 0 {
        1
    } else {
        // INS/OUTS have no 64-bit form, but REX.W still takes precedence
        // over 66 (SDM Vol. 2A 2.2.1.2): with it the operand is a dword, as
        // the processor reports in the exit (found by the fuzzer: 66 3e 4c 6d).
        let rex_w = p.rex.is_some_and(|r| r & 0x08 != 0);
        match (mode, p.opsize) {
            (Mode::Long64, _) if rex_w => 4,
            (Mode::Real16, false) | (Mode::Long64 | Mode::Protected32, true) => 2,
            _ => 4,
        }
    };
    Ok(StringIo {
        // The cursor never passes 15 bytes.
        length: c.pos as u8,
        is_in,
        size,
        address_size: address_size(mode, &p),
        segment: if is_in {
            Segment::Es
        } else {
            p.segment.unwrap_or(Segment::Ds)
        },
        rep: p.rep.is_some(),
    })
}

/// Reads the legacy and REX prefixes; returns them and the first opcode byte.
fn prefixes(c: &mut Cursor<'_>, mode: Mode) -> Result<(Prefixes, u8), DecodeError> {
    let mut p = Prefixes::default();
    let opcode = loop {
        let b = c.byte()?;
        match b {
            0x66 => p.opsize = true,
            0x67 => p.addrsize = true,
            0x26 => p.segment = Some(Segment::Es),
            0x2e => p.segment = Some(Segment::Cs),
            0x36 => p.segment = Some(Segment::Ss),
            0x3e => p.segment = Some(Segment::Ds),
            0x64 => p.segment = Some(Segment::Fs),
            0x65 => p.segment = Some(Segment::Gs),
            0xf0 => p.lock = true,
            0xf2 | 0xf3 => p.rep = Some(b),
            0x40..=0x4f if mode == Mode::Long64 => {
                // A REX counts only right before the opcode: a later legacy prefix voids it.
                p.rex = Some(b);
                continue;
            }
            _ => break b,
        }
        p.rex = None;
    };
    Ok((p, opcode))
}

/// The ALU operation of a `/digit` or of bits 3–5 of opcodes `00`–`3F`; `None` for `ADC`/`SBB`.
const fn alu_op(digit: u8) -> Option<AluOp> {
    match digit {
        0 => Some(AluOp::Add),
        1 => Some(AluOp::Or),
        4 => Some(AluOp::And),
        5 => Some(AluOp::Sub),
        6 => Some(AluOp::Xor),
        7 => Some(AluOp::Cmp),
        _ => None,
    }
}

fn blank(operation: Operation, size: u8, memory: MemoryOperand) -> Instruction {
    Instruction {
        length: 0,
        operation,
        size,
        destination: None,
        source: None,
        extension: Extension::None,
        memory,
        lock: false,
    }
}

fn load_insn(size: u8, reg: Register, extension: Extension, memory: MemoryOperand) -> Instruction {
    Instruction {
        destination: Some(reg),
        extension,
        ..blank(Operation::Load, size, memory)
    }
}

fn store_insn(size: u8, source: Source, memory: MemoryOperand) -> Instruction {
    Instruction {
        source: Some(source),
        ..blank(Operation::Store, size, memory)
    }
}

fn operand_size(mode: Mode, p: &Prefixes) -> u8 {
    match mode {
        Mode::Long64 if p.w() => 8,
        Mode::Long64 | Mode::Protected32 => {
            if p.opsize {
                2
            } else {
                4
            }
        }
        Mode::Real16 => {
            if p.opsize {
                4
            } else {
                2
            }
        }
    }
}

fn address_size(mode: Mode, p: &Prefixes) -> u8 {
    match (mode, p.addrsize) {
        (Mode::Long64, false) => 8,
        (Mode::Long64, true) | (Mode::Protected32, false) | (Mode::Real16, true) => 4,
        (Mode::Protected32, true) | (Mode::Real16, false) => 2,
    }
}

/// A register operand of `size` bytes; `n` already includes REX.R/REX.B.
fn gpr(n: u8, size: u8, p: &Prefixes) -> Register {
    if size == 1 && p.rex.is_none() && (4..8).contains(&n) {
        Register {
            number: n - 4,
            size,
            high_byte: true,
        }
    } else {
        Register {
            number: n,
            size,
            high_byte: false,
        }
    }
}

/// Reads the ModRM byte and the SIB and displacement after it; refuses register operands.
fn modrm(
    c: &mut Cursor<'_>,
    mode: Mode,
    addrsize: u8,
    p: &Prefixes,
    opcode: u16,
) -> Result<(ModRm, MemoryOperand), DecodeError> {
    let b = c.byte()?;
    let m = ModRm {
        md: b >> 6,
        reg: (b >> 3) & 7,
        rm: b & 7,
    };
    if m.md == 3 {
        return Err(DecodeError::RegisterOperand { opcode });
    }
    let mut mem = MemoryOperand {
        segment: Segment::Ds,
        base: None,
        index: None,
        scale: 1,
        displacement: 0,
        address_size: addrsize,
    };
    let mut stack = false;
    if addrsize == 2 {
        const BX: u8 = 3;
        const BP: u8 = 5;
        const SI: u8 = 6;
        const DI: u8 = 7;
        let (base, index) = match m.rm {
            0 => (Some(BX), Some(SI)),
            1 => (Some(BX), Some(DI)),
            2 => (Some(BP), Some(SI)),
            3 => (Some(BP), Some(DI)),
            4 => (Some(SI), None),
            5 => (Some(DI), None),
            6 if m.md == 0 => (None, None),
            6 => (Some(BP), None),
            _ => (Some(BX), None),
        };
        stack = base == Some(BP);
        mem.base = base.map(Base::Register);
        mem.index = index;
        mem.displacement = match (m.md, base) {
            (0, None) | (2, _) => c.signed(2)?,
            (1, _) => c.signed(1)?,
            _ => 0,
        };
    } else {
        let rex_b = p.rex_bit(1) << 3;
        let mut disp32 = false;
        if m.rm == 4 {
            let sib = c.byte()?;
            let (scale, index, base) = (sib >> 6, (sib >> 3) & 7, sib & 7);
            let index = index | (p.rex_bit(2) << 3);
            if index != 4 {
                mem.index = Some(index);
                mem.scale = 1 << scale;
            }
            if base == 5 && m.md == 0 {
                disp32 = true;
            } else {
                mem.base = Some(Base::Register(base | rex_b));
                stack = matches!(base | rex_b, 4 | 5);
            }
        } else if m.rm == 5 && m.md == 0 {
            disp32 = true;
            if mode == Mode::Long64 {
                mem.base = Some(Base::Rip);
            }
        } else {
            mem.base = Some(Base::Register(m.rm | rex_b));
            stack = m.rm | rex_b == 5;
        }
        mem.displacement = match m.md {
            1 => c.signed(1)?,
            2 => c.signed(4)?,
            _ if disp32 => c.signed(4)?,
            _ => 0,
        };
    }
    mem.segment = p
        .segment
        .unwrap_or(if stack { Segment::Ss } else { Segment::Ds });
    Ok((m, mem))
}
