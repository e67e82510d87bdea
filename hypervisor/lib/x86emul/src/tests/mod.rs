//! Host tests. Byte strings were assembled with GNU `as` and checked with `objdump -d`.

mod decoding;
mod executing;
mod forced;
mod random;
mod string_io;
mod walking;

use crate::{
    AluOp, Base, Extension, Instruction, MemoryOperand, Mode, Operation, Register, Segment, Source,
    decode,
};

/// Decodes `bytes` in `mode`, which must succeed and use every byte.
#[track_caller]
fn d(bytes: &[u8], mode: Mode) -> Instruction {
    let insn = decode(bytes, mode).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"));
    assert_eq!(usize::from(insn.length), bytes.len(), "{bytes:02x?}");
    insn
}

const fn r(number: u8, size: u8) -> Register {
    Register {
        number,
        size,
        high_byte: false,
    }
}

const fn hi(number: u8) -> Register {
    Register {
        number,
        size: 1,
        high_byte: true,
    }
}

const fn reg(n: u8) -> Option<Base> {
    Some(Base::Register(n))
}

/// `[base + disp]` with DS, 64-bit addresses.
const fn m64(base: u8, displacement: i64) -> MemoryOperand {
    MemoryOperand {
        segment: Segment::Ds,
        base: reg(base),
        index: None,
        scale: 1,
        displacement,
        address_size: 8,
    }
}

/// Builds the expected instruction.
#[allow(clippy::too_many_arguments)]
const fn insn(
    length: u8,
    operation: Operation,
    size: u8,
    destination: Option<Register>,
    source: Option<Source>,
    extension: Extension,
    memory: MemoryOperand,
    lock: bool,
) -> Instruction {
    Instruction {
        length,
        operation,
        size,
        destination,
        source,
        extension,
        memory,
        lock,
    }
}

const fn load(len: u8, size: u8, dst: Register, memory: MemoryOperand) -> Instruction {
    insn(
        len,
        Operation::Load,
        size,
        Some(dst),
        None,
        Extension::None,
        memory,
        false,
    )
}

const fn store(len: u8, size: u8, src: Source, memory: MemoryOperand) -> Instruction {
    insn(
        len,
        Operation::Store,
        size,
        None,
        Some(src),
        Extension::None,
        memory,
        false,
    )
}

const fn alu_mem(len: u8, op: AluOp, size: u8, src: Source, memory: MemoryOperand) -> Instruction {
    insn(
        len,
        Operation::AluToMemory(op),
        size,
        None,
        Some(src),
        Extension::None,
        memory,
        false,
    )
}

const RDI: u8 = 7;
