//! The executor: performs a decoded [`Instruction`] on a [`Cpu`] and an [`Mmio`] device.

use crate::decode::{AluOp, Extension, Instruction, Operation, Register, Source, size_mask};

/// The general-purpose registers and flags of the vCPU being emulated.
pub trait Cpu {
    /// The full 64-bit value of register `n` (0–15, `RAX`…`R15`).
    fn reg(&self, n: u8) -> u64;
    /// Sets the full 64-bit value of register `n`.
    fn set_reg(&mut self, n: u8, value: u64);
    /// `RFLAGS`.
    fn rflags(&self) -> u64;
    /// Sets `RFLAGS`.
    fn set_rflags(&mut self, value: u64);
}

/// The device behind the guest-physical page that faulted.
pub trait Mmio {
    /// Reads `size` bytes (1, 2, 4 or 8) at `gpa`; bits above `size` are ignored.
    fn read(&mut self, gpa: u64, size: u8) -> u64;
    /// Writes the low `size` bytes (1, 2, 4 or 8) of `value` at `gpa`.
    fn write(&mut self, gpa: u64, size: u8, value: u64);
}

/// Carry flag.
pub const CF: u64 = 1 << 0;
/// Parity flag.
pub const PF: u64 = 1 << 2;
/// Auxiliary-carry flag.
pub const AF: u64 = 1 << 4;
/// Zero flag.
pub const ZF: u64 = 1 << 6;
/// Sign flag.
pub const SF: u64 = 1 << 7;
/// Overflow flag.
pub const OF: u64 = 1 << 11;
/// The flags an ALU operation writes.
pub const ARITHMETIC_FLAGS: u64 = CF | PF | AF | ZF | SF | OF;

/// The value of a register operand (`AH` is bits 8–15 of `RAX`), zero-extended.
pub fn read_register(cpu: &impl Cpu, r: Register) -> u64 {
    let full = cpu.reg(r.number);
    if r.high_byte {
        (full >> 8) & 0xff
    } else {
        full & size_mask(r.size)
    }
}

/// Writes a register operand the way the processor does: 8- and 16-bit writes keep the other
/// bits of the register, 32-bit writes zero the upper half, 64-bit writes replace it all.
pub fn write_register(cpu: &mut impl Cpu, r: Register, value: u64) {
    let full = cpu.reg(r.number);
    let new = match (r.size, r.high_byte) {
        (1, true) => (full & !0xff00) | ((value & 0xff) << 8),
        (1 | 2, _) => {
            let mask = size_mask(r.size);
            (full & !mask) | (value & mask)
        }
        (4, _) => value & 0xffff_ffff,
        _ => value,
    };
    cpu.set_reg(r.number, new);
}

/// Sign-extends the low `size` bytes of `value` to 64 bits.
#[must_use]
pub const fn sign_extend(value: u64, size: u8) -> u64 {
    let shift = 64 - 8 * size as u32;
    (((value << shift) as i64) >> shift) as u64
}

/// Performs `insn`, whose memory operand is at guest-physical address `gpa` (the address of
/// the EPT violation; the caller checks it against [`crate::MemoryOperand::offset`] if it
/// wants to): reads and writes `mmio`, updates the registers and, for ALU operations, the
/// arithmetic flags of `cpu`. Returns the number of bytes to advance `RIP` by
/// ([`Instruction::length`]); `RIP` itself is the caller's.
///
/// A read-modify-write (`AND [mmio], eax`) is one read followed by one write (none for `CMP`
/// and `TEST`); `LOCK` changes nothing since the device sees only this vCPU's accesses in order.
pub fn emulate(insn: &Instruction, cpu: &mut impl Cpu, mmio: &mut impl Mmio, gpa: u64) -> u64 {
    let size = insn.size;
    let mask = size_mask(size);
    let source = |cpu: &mut _| match insn.source {
        Some(Source::Register(r)) => read_register(cpu, r),
        Some(Source::Immediate(v)) => v & mask,
        None => 0,
    };
    match insn.operation {
        Operation::Load => {
            let raw = mmio.read(gpa, size) & mask;
            let value = match insn.extension {
                Extension::Sign => sign_extend(raw, size),
                Extension::Zero | Extension::None => raw,
            };
            if let Some(r) = insn.destination {
                write_register(cpu, r, value);
            }
        }
        Operation::Store => {
            let value = source(cpu);
            mmio.write(gpa, size, value);
        }
        Operation::AluToMemory(op) => {
            let a = mmio.read(gpa, size) & mask;
            let b = source(cpu);
            let (result, flags) = alu(op, a, b, size);
            if op.writes_result() {
                mmio.write(gpa, size, result);
            }
            cpu.set_rflags((cpu.rflags() & !ARITHMETIC_FLAGS) | flags);
        }
        Operation::BitTest => {
            let value = mmio.read(gpa, size) & mask;
            let bit = source(cpu) & (8 * u64::from(size) - 1);
            let cf = if (value >> bit) & 1 != 0 { CF } else { 0 };
            cpu.set_rflags((cpu.rflags() & !CF) | cf);
        }
        Operation::AluToRegister(op) => {
            let b = mmio.read(gpa, size) & mask;
            if let Some(r) = insn.destination {
                let a = read_register(cpu, r);
                let (result, flags) = alu(op, a, b, size);
                if op.writes_result() {
                    write_register(cpu, r, result);
                }
                cpu.set_rflags((cpu.rflags() & !ARITHMETIC_FLAGS) | flags);
            }
        }
    }
    u64::from(insn.length)
}

/// `a OP b` on `size`-byte operands: the result (truncated) and the new arithmetic flags
/// (within [`ARITHMETIC_FLAGS`]; logic operations clear `CF`, `OF` and `AF`).
#[must_use]
pub fn alu(op: AluOp, a: u64, b: u64, size: u8) -> (u64, u64) {
    let mask = size_mask(size);
    let sign = 1u64 << (8 * u32::from(size) - 1);
    let (a, b) = (a & mask, b & mask);
    let (result, mut flags) = match op {
        AluOp::Add => {
            let r = a.wrapping_add(b) & mask;
            let mut f = 0;
            if r < a {
                f |= CF;
            }
            if (a ^ r) & (b ^ r) & sign != 0 {
                f |= OF;
            }
            (r, f | ((a ^ b ^ r) & AF))
        }
        AluOp::Sub | AluOp::Cmp => {
            let r = a.wrapping_sub(b) & mask;
            let mut f = 0;
            if a < b {
                f |= CF;
            }
            if (a ^ b) & (a ^ r) & sign != 0 {
                f |= OF;
            }
            (r, f | ((a ^ b ^ r) & AF))
        }
        AluOp::And | AluOp::Test => (a & b, 0),
        AluOp::Or => (a | b, 0),
        AluOp::Xor => (a ^ b, 0),
    };
    if result == 0 {
        flags |= ZF;
    }
    if result & sign != 0 {
        flags |= SF;
    }
    if (result as u8).count_ones().is_multiple_of(2) {
        flags |= PF;
    }
    (result, flags)
}
