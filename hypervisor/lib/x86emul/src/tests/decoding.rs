//! One test per supported encoding, per mode, and the refusals.

use super::*;
use crate::{DecodeError, MAX_LENGTH};

use Mode::{Long64, Protected32, Real16};

// ---- MOV r/m, r and MOV r, r/m ----

#[test]
fn mov_store_register_64() {
    assert_eq!(
        d(&[0x89, 0x03], Long64),
        store(2, 4, Source::Register(r(0, 4)), m64(3, 0))
    );
    assert_eq!(
        d(&[0x88, 0x03], Long64),
        store(2, 1, Source::Register(r(0, 1)), m64(3, 0))
    );
    // mov %ah,0x10(%rsi): legacy high byte without REX.
    assert_eq!(
        d(&[0x88, 0x66, 0x10], Long64),
        store(3, 1, Source::Register(hi(0)), m64(6, 0x10))
    );
    // mov %sil,(%rdi): with REX, register 6 is SIL.
    assert_eq!(
        d(&[0x40, 0x88, 0x37], Long64),
        store(3, 1, Source::Register(r(6, 1)), m64(7, 0))
    );
    // mov %cx,-8(%rsp): SP base → SS.
    let i = d(&[0x66, 0x89, 0x4c, 0x24, 0xf8], Long64);
    assert_eq!(i.size, 2);
    assert_eq!(i.source, Some(Source::Register(r(1, 2))));
    assert_eq!(
        i.memory,
        MemoryOperand {
            segment: Segment::Ss,
            ..m64(4, -8)
        }
    );
}

#[test]
fn mov_rex_sib_64() {
    // mov %r9,0x12345678(%r10,%r11,8)
    let i = d(&[0x4f, 0x89, 0x8c, 0xda, 0x78, 0x56, 0x34, 0x12], Long64);
    assert_eq!(
        i,
        store(
            8,
            8,
            Source::Register(r(9, 8)),
            MemoryOperand {
                index: Some(11),
                scale: 8,
                ..m64(10, 0x1234_5678)
            }
        )
    );
}

#[test]
fn mov_load_register_64() {
    // mov 0x8(%r13),%eax
    assert_eq!(
        d(&[0x41, 0x8b, 0x45, 0x08], Long64),
        load(4, 4, r(0, 4), m64(13, 8))
    );
    // mov (%r12),%ebx: SIB with base 4 + REX.B is R12, DS.
    assert_eq!(
        d(&[0x41, 0x8b, 0x1c, 0x24], Long64),
        load(4, 4, r(3, 4), m64(12, 0))
    );
    // mov 0x10(%rbp),%ecx: BP base → SS.
    assert_eq!(
        d(&[0x8b, 0x4d, 0x10], Long64),
        load(
            3,
            4,
            r(1, 4),
            MemoryOperand {
                segment: Segment::Ss,
                ..m64(5, 0x10)
            }
        )
    );
    // mov 0x0(,%rax,4),%edx: no base, index RAX*4, disp32.
    assert_eq!(
        d(&[0x8b, 0x14, 0x85, 0, 0, 0, 0], Long64),
        load(
            7,
            4,
            r(2, 4),
            MemoryOperand {
                base: None,
                index: Some(0),
                scale: 4,
                ..m64(0, 0)
            }
        )
    );
    // mov 0x8a(%rbx), %dh (8-bit load, high byte)
    assert_eq!(
        d(&[0x8a, 0x73, 0x7f], Long64),
        load(3, 1, hi(2), m64(3, 0x7f))
    );
}

#[test]
fn rip_relative_64() {
    // mov 0x0(%rip),%edx
    let i = d(&[0x8b, 0x15, 0, 0, 0, 0], Long64);
    assert_eq!(i.memory.base, Some(Base::Rip));
    assert_eq!(i.memory.displacement, 0);
    // mov 0x100(%rip),%r8d
    let i = d(&[0x44, 0x8b, 0x05, 0x00, 0x01, 0, 0], Long64);
    assert_eq!(i.destination, Some(r(8, 4)));
    assert_eq!(i.memory.base, Some(Base::Rip));
    assert_eq!(i.memory.offset(|_| 0, 0x1000), 0x1100);
    // mov 0x10(%eip),%eax: 32-bit RIP-relative wraps at 4 GiB.
    let i = d(&[0x67, 0x8b, 0x05, 0x10, 0, 0, 0], Long64);
    assert_eq!(i.memory.base, Some(Base::Rip));
    assert_eq!(i.memory.address_size, 4);
    assert_eq!(i.memory.offset(|_| 0, 0xffff_fff8), 8);
    // In 32-bit mode the same ModRM is an absolute disp32.
    let i = d(&[0x8b, 0x05, 0x10, 0, 0, 0], Protected32);
    assert_eq!(i.memory.base, None);
    assert_eq!(i.memory.displacement, 0x10);
}

#[test]
fn fs_override_64() {
    // mov %fs:0x28,%rax
    let i = d(&[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0], Long64);
    assert_eq!(
        i,
        load(
            9,
            8,
            r(0, 8),
            MemoryOperand {
                segment: Segment::Fs,
                base: None,
                ..m64(0, 0x28)
            }
        )
    );
}

#[test]
fn address_size_override_64() {
    // mov (%eax),%eax
    let i = d(&[0x67, 0x8b, 0x00], Long64);
    assert_eq!(i.memory.address_size, 4);
    assert_eq!(i.memory.offset(|_| 0x1_0000_0010, 0), 0x10);
}

// ---- MOV r/m, imm ----

#[test]
fn mov_immediate() {
    assert_eq!(
        d(&[0xc6, 0x00, 0x7f], Long64),
        store(3, 1, Source::Immediate(0x7f), m64(0, 0))
    );
    assert_eq!(
        d(&[0x66, 0xc7, 0x00, 0x34, 0x12], Long64),
        store(5, 2, Source::Immediate(0x1234), m64(0, 0))
    );
    assert_eq!(
        d(&[0xc7, 0x00, 0xef, 0xbe, 0xad, 0xde], Long64),
        store(6, 4, Source::Immediate(0xdead_beef), m64(0, 0))
    );
    // movq $-1,8(%rax): imm32 sign-extended to 64 bits.
    assert_eq!(
        d(&[0x48, 0xc7, 0x40, 0x08, 0xff, 0xff, 0xff, 0xff], Long64),
        store(8, 8, Source::Immediate(u64::MAX), m64(0, 8))
    );
    // movl $0,0xfee000b0 in 32-bit mode.
    let i = d(
        &[0xc7, 0x05, 0xb0, 0x00, 0xe0, 0xfe, 0, 0, 0, 0],
        Protected32,
    );
    assert_eq!(i.source, Some(Source::Immediate(0)));
    assert_eq!(i.memory.offset(|_| 0, 0), 0xfee0_00b0);
    // C6/C7 with /1../7 are not MOV.
    assert_eq!(
        decode(&[0xc7, 0x08, 0, 0, 0, 0], Long64),
        Err(DecodeError::UnsupportedGroup {
            opcode: 0xc7,
            digit: 1
        })
    );
}

// ---- MOVZX / MOVSX ----

#[test]
fn movzx_movsx() {
    let cases: &[(&[u8], u8, Register, Extension)] = &[
        (&[0x0f, 0xb6, 0x08], 1, r(1, 4), Extension::Zero), // movzbl
        (&[0x0f, 0xb7, 0x08], 2, r(1, 4), Extension::Zero), // movzwl
        (&[0x66, 0x0f, 0xb6, 0x08], 1, r(1, 2), Extension::Zero), // movzbw
        (&[0x4c, 0x0f, 0xb6, 0x38], 1, r(15, 8), Extension::Zero), // movzbq %r15
        (&[0x0f, 0xbe, 0x08], 1, r(1, 4), Extension::Sign), // movsbl
        (&[0x48, 0x0f, 0xbf, 0x08], 2, r(1, 8), Extension::Sign), // movswq
        (&[0x66, 0x0f, 0xbe, 0x08], 1, r(1, 2), Extension::Sign), // movsbw
        (&[0x66, 0x0f, 0xb7, 0x08], 2, r(1, 2), Extension::None), // movzww = mov
    ];
    for &(bytes, size, dst, ext) in cases {
        let len = bytes.len() as u8;
        assert_eq!(
            d(bytes, Long64),
            insn(
                len,
                Operation::Load,
                size,
                Some(dst),
                None,
                ext,
                m64(0, 0),
                false
            ),
            "{bytes:02x?}"
        );
    }
    // movzwl 0xfee000b0,%eax in 32-bit mode.
    let i = d(&[0x0f, 0xb7, 0x05, 0xb0, 0x00, 0xe0, 0xfe], Protected32);
    assert_eq!(
        (i.size, i.destination, i.extension),
        (2, Some(r(0, 4)), Extension::Zero)
    );
    // movzbw (%si),%ax in 16-bit mode.
    let i = d(&[0x0f, 0xb6, 0x04], Real16);
    assert_eq!(
        (i.size, i.destination, i.extension),
        (1, Some(r(0, 2)), Extension::Zero)
    );
    assert_eq!(i.memory.base, reg(6));
}

// ---- MOV moffs ----

#[test]
fn moffs_64() {
    let abs = |disp: i64| MemoryOperand {
        base: None,
        ..m64(0, disp)
    };
    let off = 0x1122_3344_5566_7788;
    let b = [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11];
    let with = |op: &[u8]| [op, &b[..]].concat();
    assert_eq!(d(&with(&[0xa1]), Long64), load(9, 4, r(0, 4), abs(off)));
    assert_eq!(d(&with(&[0xa0]), Long64), load(9, 1, r(0, 1), abs(off)));
    assert_eq!(
        d(&with(&[0x48, 0xa3]), Long64),
        store(10, 8, Source::Register(r(0, 8)), abs(off))
    );
    assert_eq!(
        d(&with(&[0xa2]), Long64),
        store(9, 1, Source::Register(r(0, 1)), abs(off))
    );
    // With 67, the offset is 4 bytes.
    let i = d(&[0x67, 0xa1, 0x78, 0x56, 0x34, 0x12], Long64);
    assert_eq!(i.memory.displacement, 0x1234_5678);
    assert_eq!(i.memory.address_size, 4);
}

#[test]
fn moffs_32_and_16() {
    let i = d(&[0xa1, 0x78, 0x56, 0x34, 0x12], Protected32);
    assert_eq!(
        (i.operation, i.size, i.destination),
        (Operation::Load, 4, Some(r(0, 4)))
    );
    assert_eq!(i.memory.offset(|_| 0, 0), 0x1234_5678);
    let i = d(&[0x66, 0xa3, 0x78, 0x56, 0x34, 0x12], Protected32);
    assert_eq!((i.operation, i.size), (Operation::Store, 2));
    // addr16 mov 0x1234,%al
    let i = d(&[0x67, 0xa0, 0x34, 0x12], Protected32);
    assert_eq!(
        (i.size, i.memory.address_size, i.memory.displacement),
        (1, 2, 0x1234)
    );
    let i = d(&[0xa2, 0x34, 0x12], Real16);
    assert_eq!(
        (i.operation, i.size, i.memory.displacement),
        (Operation::Store, 1, 0x1234)
    );
    let i = d(&[0xa1, 0x34, 0x12], Real16);
    assert_eq!((i.size, i.destination), (2, Some(r(0, 2))));
    // A high offset is not sign-extended into a bigger address.
    let i = d(&[0xa1, 0x00, 0x80], Real16);
    assert_eq!(i.memory.offset(|_| 0, 0), 0x8000);
}

// ---- 32-bit mode ----

#[test]
fn protected32_forms() {
    let m32 = |base: u8, disp: i64| MemoryOperand {
        address_size: 4,
        ..m64(base, disp)
    };
    assert_eq!(
        d(&[0x89, 0x03], Protected32),
        store(2, 4, Source::Register(r(0, 4)), m32(3, 0))
    );
    assert_eq!(
        d(&[0x8b, 0x4d, 0x10], Protected32),
        load(
            3,
            4,
            r(1, 4),
            MemoryOperand {
                segment: Segment::Ss,
                ..m32(5, 0x10)
            }
        )
    );
    // mov %es:(%esi),%dl
    assert_eq!(
        d(&[0x26, 0x8a, 0x16], Protected32),
        load(
            3,
            1,
            r(2, 1),
            MemoryOperand {
                segment: Segment::Es,
                ..m32(6, 0)
            }
        )
    );
    // mov %bh,-0x4(%esp,%ecx,2)
    assert_eq!(
        d(&[0x88, 0x7c, 0x4c, 0xfc], Protected32),
        store(
            4,
            1,
            Source::Register(hi(3)),
            MemoryOperand {
                segment: Segment::Ss,
                index: Some(1),
                scale: 2,
                ..m32(4, -4)
            }
        )
    );
    // 40-4F are INC/DEC outside 64-bit mode, not REX.
    assert_eq!(
        decode(&[0x48, 0x89, 0x03], Protected32),
        Err(DecodeError::Unsupported { opcode: 0x48 })
    );
}

#[test]
fn sixteen_bit_addressing() {
    let m16 = |base: Option<u8>, index: Option<u8>, disp: i64, segment| MemoryOperand {
        segment,
        base: base.map(Base::Register),
        index,
        scale: 1,
        displacement: disp,
        address_size: 2,
    };
    let (ds, ss) = (Segment::Ds, Segment::Ss);
    // addr16 mov (%bx,%si),%eax in 32-bit mode.
    assert_eq!(
        d(&[0x67, 0x8b, 0x00], Protected32),
        load(3, 4, r(0, 4), m16(Some(3), Some(6), 0, ds))
    );
    // addr16 mov 0x10(%bp,%di),%eax
    assert_eq!(
        d(&[0x67, 0x8b, 0x43, 0x10], Protected32),
        load(4, 4, r(0, 4), m16(Some(5), Some(7), 0x10, ss))
    );
    // Real16: mov %ax,(%bx,%si)
    assert_eq!(
        d(&[0x89, 0x00], Real16),
        store(
            2,
            2,
            Source::Register(r(0, 2)),
            m16(Some(3), Some(6), 0, ds)
        )
    );
    // mov 0x12(%bp),%cx
    assert_eq!(
        d(&[0x8b, 0x4e, 0x12], Real16),
        load(3, 2, r(1, 2), m16(Some(5), None, 0x12, ss))
    );
    // mov 0x1234,%dx: rm=6 mod=0 is disp16 only.
    assert_eq!(
        d(&[0x8b, 0x16, 0x34, 0x12], Real16),
        load(4, 2, r(2, 2), m16(None, None, 0x1234, ds))
    );
    // mov %eax,(%bx)
    assert_eq!(
        d(&[0x66, 0x89, 0x07], Real16),
        store(3, 4, Source::Register(r(0, 4)), m16(Some(3), None, 0, ds))
    );
    // mov %ss:(%bx,%di),%ah
    assert_eq!(
        d(&[0x36, 0x8a, 0x21], Real16),
        load(3, 1, hi(0), m16(Some(3), Some(7), 0, ss))
    );
    // mov -0x100(%bp,%si),%ax
    assert_eq!(
        d(&[0x8b, 0x82, 0x00, 0xff], Real16),
        load(4, 2, r(0, 2), m16(Some(5), Some(6), -0x100, ss))
    );
    // (%si) and (%di)
    assert_eq!(d(&[0x8b, 0x04], Real16).memory, m16(Some(6), None, 0, ds));
    assert_eq!(d(&[0x8b, 0x05], Real16).memory, m16(Some(7), None, 0, ds));
    // addr32 mov (%eax,%ebx,4),%ax
    let i = d(&[0x67, 0x8b, 0x04, 0x98], Real16);
    assert_eq!(i.memory.address_size, 4);
    assert_eq!(
        (i.memory.base, i.memory.index, i.memory.scale),
        (reg(0), Some(3), 4)
    );
    // movw $0x5678,(%di) and movl $0x12345678,(%si)
    assert_eq!(
        d(&[0xc7, 0x05, 0x78, 0x56], Real16).source,
        Some(Source::Immediate(0x5678))
    );
    let i = d(&[0x66, 0xc7, 0x04, 0x78, 0x56, 0x34, 0x12], Real16);
    assert_eq!(
        (i.size, i.source),
        (4, Some(Source::Immediate(0x1234_5678)))
    );
    // The 16-bit offset wraps.
    let i = d(&[0x8b, 0x47, 0x10], Real16); // mov 0x10(%bx),%ax
    assert_eq!(i.memory.offset(|n| if n == 3 { 0xfff8 } else { 0 }, 0), 8);
}

// ---- ALU ----

#[test]
fn alu_with_immediate() {
    let imm = Source::Immediate;
    // lock orl $0x1,(%rdi)
    assert_eq!(
        d(&[0xf0, 0x83, 0x0f, 0x01], Long64),
        Instruction {
            lock: true,
            ..alu_mem(4, AluOp::Or, 4, imm(1), m64(RDI, 0))
        }
    );
    // andl $0xfffffffe,0x4(%rdi): imm8 sign-extended.
    assert_eq!(
        d(&[0x83, 0x67, 0x04, 0xfe], Long64),
        alu_mem(4, AluOp::And, 4, imm(0xffff_fffe), m64(RDI, 4))
    );
    assert_eq!(
        d(&[0x80, 0x0f, 0x80], Long64),
        alu_mem(3, AluOp::Or, 1, imm(0x80), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0xf7, 0x07, 0x00, 0x01, 0, 0], Long64),
        alu_mem(6, AluOp::Test, 4, imm(0x100), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0xf6, 0x07, 0x01], Long64),
        alu_mem(3, AluOp::Test, 1, imm(1), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0x48, 0x83, 0x07, 0xff], Long64),
        alu_mem(4, AluOp::Add, 8, imm(u64::MAX), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0x81, 0x2f, 0x00, 0x10, 0, 0], Long64),
        alu_mem(6, AluOp::Sub, 4, imm(0x1000), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0x81, 0x37, 0x01, 0, 0, 0x80], Long64),
        alu_mem(6, AluOp::Xor, 4, imm(0x8000_0001), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0x80, 0x3f, 0x05], Long64),
        alu_mem(3, AluOp::Cmp, 1, imm(5), m64(RDI, 0))
    );
    // 81 with a 16-bit operand takes an imm16; 48 81 an imm32 sign-extended.
    assert_eq!(
        d(&[0x66, 0x81, 0x27, 0xff, 0x7f], Long64),
        alu_mem(5, AluOp::And, 2, imm(0x7fff), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0x48, 0x81, 0x27, 0x00, 0, 0, 0x80], Long64),
        alu_mem(7, AluOp::And, 8, imm(0xffff_ffff_8000_0000), m64(RDI, 0))
    );
    // testw $0x8000,0x10(%bx) in 16-bit mode.
    let i = d(&[0xf7, 0x47, 0x10, 0x00, 0x80], Real16);
    assert_eq!(
        (i.operation, i.size, i.source),
        (Operation::AluToMemory(AluOp::Test), 2, Some(imm(0x8000)))
    );
    // lock addl $1,(%ecx)
    assert!(d(&[0xf0, 0x83, 0x01, 0x01], Protected32).lock);
    // ADC, SBB, NOT, NEG... are refused.
    for (bytes, opcode, digit) in [
        (&[0x83, 0x17, 0x01][..], 0x83, 2),
        (&[0x80, 0x1f, 0x01][..], 0x80, 3),
        (&[0xf7, 0x17][..], 0xf7, 2),
        (&[0xf6, 0x1f][..], 0xf6, 3),
    ] {
        assert_eq!(
            decode(bytes, Long64),
            Err(DecodeError::UnsupportedGroup { opcode, digit }),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn alu_with_register() {
    let rs = |n, s| Source::Register(r(n, s));
    let to_reg = |len, op, size, dst| {
        insn(
            len,
            Operation::AluToRegister(op),
            size,
            Some(dst),
            None,
            Extension::None,
            m64(RDI, 0),
            false,
        )
    };
    assert_eq!(
        d(&[0x85, 0x07], Long64),
        alu_mem(2, AluOp::Test, 4, rs(0, 4), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0x84, 0x0f], Long64),
        alu_mem(2, AluOp::Test, 1, rs(1, 1), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0x21, 0x07], Long64),
        alu_mem(2, AluOp::And, 4, rs(0, 4), m64(RDI, 0))
    );
    assert_eq!(d(&[0x0b, 0x07], Long64), to_reg(2, AluOp::Or, 4, r(0, 4)));
    assert_eq!(
        d(&[0x39, 0x07], Long64),
        alu_mem(2, AluOp::Cmp, 4, rs(0, 4), m64(RDI, 0))
    );
    assert_eq!(d(&[0x3b, 0x07], Long64), to_reg(2, AluOp::Cmp, 4, r(0, 4)));
    assert_eq!(
        d(&[0x66, 0x31, 0x07], Long64),
        alu_mem(3, AluOp::Xor, 2, rs(0, 2), m64(RDI, 0))
    );
    assert_eq!(
        d(&[0xf0, 0x20, 0x07], Long64),
        Instruction {
            lock: true,
            ..alu_mem(3, AluOp::And, 1, rs(0, 1), m64(RDI, 0))
        }
    );
    // Every opcode of the 00-3B block: op = bits 3-5, direction = bit 1, width = bit 0.
    let ops = [
        (0x00, AluOp::Add),
        (0x08, AluOp::Or),
        (0x20, AluOp::And),
        (0x28, AluOp::Sub),
        (0x30, AluOp::Xor),
        (0x38, AluOp::Cmp),
    ];
    for (base, op) in ops {
        for low in 0..4u8 {
            let size = if low & 1 == 0 { 1 } else { 4 };
            let i = d(&[base + low, 0x07], Long64);
            if low & 2 == 0 {
                assert_eq!(i, alu_mem(2, op, size, rs(0, size), m64(RDI, 0)));
            } else {
                assert_eq!(i, to_reg(2, op, size, r(0, size)));
            }
        }
    }
    // ADC and SBB are not emulated.
    for opcode in [0x10u8, 0x11, 0x12, 0x13, 0x18, 0x19, 0x1a, 0x1b] {
        assert_eq!(
            decode(&[opcode, 0x07], Long64),
            Err(DecodeError::Unsupported {
                opcode: opcode.into()
            })
        );
    }
}

// ---- prefixes ----

#[test]
fn lock_rules() {
    let bad = Err(DecodeError::BadPrefix { prefix: 0xf0 });
    assert_eq!(decode(&[0xf0, 0x89, 0x03], Long64), bad); // MOV store
    assert_eq!(decode(&[0xf0, 0x8b, 0x03], Long64), bad); // MOV load
    assert_eq!(decode(&[0xf0, 0xc7, 0x00, 0, 0, 0, 0], Long64), bad);
    assert_eq!(decode(&[0xf0, 0x0f, 0xb6, 0x08], Long64), bad);
    assert_eq!(decode(&[0xf0, 0xa1, 0, 0, 0, 0, 0, 0, 0, 0], Long64), bad);
    assert_eq!(decode(&[0xf0, 0x85, 0x07], Long64), bad); // TEST
    assert_eq!(decode(&[0xf0, 0x39, 0x07], Long64), bad); // CMP
    assert_eq!(decode(&[0xf0, 0x80, 0x3f, 1], Long64), bad); // CMP imm
    assert_eq!(decode(&[0xf0, 0x0b, 0x07], Long64), bad); // OR to register
    assert!(d(&[0xf0, 0x09, 0x07], Long64).lock);
    assert!(d(&[0xf0, 0x29, 0x07], Long64).lock);
}

#[test]
fn rep_refused() {
    assert_eq!(
        decode(&[0xf3, 0x89, 0x03], Long64),
        Err(DecodeError::Repeat { prefix: 0xf3 })
    );
    assert_eq!(
        decode(&[0xf2, 0x8b, 0x03], Long64),
        Err(DecodeError::Repeat { prefix: 0xf2 })
    );
    // String instructions are refused too (without REP: unsupported opcode).
    assert_eq!(
        decode(&[0xf3, 0xa5], Long64),
        Err(DecodeError::Repeat { prefix: 0xf3 })
    );
    assert_eq!(
        decode(&[0xa5], Long64),
        Err(DecodeError::Unsupported { opcode: 0xa5 })
    );
}

#[test]
fn rex_placement() {
    // A REX followed by a legacy prefix is ignored: 48 66 89 03 is a 16-bit store.
    assert_eq!(d(&[0x48, 0x66, 0x89, 0x03], Long64).size, 2);
    // REX.W wins over 66.
    assert_eq!(d(&[0x66, 0x48, 0x89, 0x03], Long64).size, 8);
    // The last REX counts.
    assert_eq!(d(&[0x48, 0x40, 0x89, 0x03], Long64).size, 4);
    // REX.X with index 4 is R12; without it, no index.
    let i = d(&[0x42, 0x8b, 0x04, 0x20], Long64); // mov (%rax,%r12,1),%eax
    assert_eq!((i.memory.base, i.memory.index), (reg(0), Some(12)));
    let i = d(&[0x8b, 0x04, 0x20], Long64); // mov (%rax),%eax
    assert_eq!((i.memory.base, i.memory.index), (reg(0), None));
    // REX.B with SIB base 5 and mod 0 is still disp32 with no base.
    let i = d(&[0x41, 0x8b, 0x04, 0x25, 0x10, 0, 0, 0], Long64);
    assert_eq!((i.memory.base, i.memory.displacement), (None, 0x10));
    // R13 base (mod 1) uses DS, not SS.
    assert_eq!(
        d(&[0x41, 0x8b, 0x45, 0x00], Long64).memory.segment,
        Segment::Ds
    );
}

#[test]
fn segment_overrides() {
    let segs = [
        (0x26, Segment::Es),
        (0x2e, Segment::Cs),
        (0x36, Segment::Ss),
        (0x3e, Segment::Ds),
        (0x64, Segment::Fs),
        (0x65, Segment::Gs),
    ];
    for (prefix, seg) in segs {
        for mode in [Long64, Protected32, Real16] {
            assert_eq!(d(&[prefix, 0x8b, 0x07], mode).memory.segment, seg);
        }
    }
    // The SDM's numbering (ES = 0 ... GS = 5), by which the vendor backends
    // index their segment tables.
    for (i, (_, seg)) in segs.iter().enumerate() {
        assert_eq!(*seg as usize, i);
    }
    // The last override wins.
    assert_eq!(
        d(&[0x64, 0x65, 0x8b, 0x07], Long64).memory.segment,
        Segment::Gs
    );
    // DS override on a BP-based address.
    assert_eq!(
        d(&[0x3e, 0x8b, 0x45, 0x00], Protected32).memory.segment,
        Segment::Ds
    );
}

// ---- errors ----

#[test]
fn register_operands_refused() {
    assert_eq!(
        decode(&[0x89, 0xc3], Long64),
        Err(DecodeError::RegisterOperand { opcode: 0x89 })
    );
    assert_eq!(
        decode(&[0x0f, 0xb6, 0xc1], Long64),
        Err(DecodeError::RegisterOperand { opcode: 0x0fb6 })
    );
    assert_eq!(
        decode(&[0x0f, 0xbf, 0xc1], Long64),
        Err(DecodeError::RegisterOperand { opcode: 0x0fbf })
    );
}

#[test]
fn truncated_everywhere() {
    let full: &[u8] = &[0x64, 0x4f, 0x89, 0x8c, 0xda, 0x78, 0x56, 0x34, 0x12];
    assert_eq!(d(full, Long64).length, 9);
    for n in 0..full.len() {
        assert_eq!(
            decode(&full[..n], Long64),
            Err(DecodeError::Truncated),
            "{n}"
        );
    }
}

#[test]
fn fifteen_byte_limit() {
    // 14 prefixes + 89 03 = 16 bytes: too long.
    let mut bytes = [0x3e; 16];
    bytes[14] = 0x89;
    bytes[15] = 0x03;
    assert_eq!(decode(&bytes, Long64), Err(DecodeError::TooLong));
    // 13 prefixes + 89 03 = 15: fine.
    assert_eq!(d(&bytes[1..], Long64).length, 15);
    // Prefixes only, more than 15.
    assert_eq!(decode(&[0x66; 20], Protected32), Err(DecodeError::TooLong));
    assert_eq!(decode(&[0x66; 15], Protected32), Err(DecodeError::TooLong));
    assert_eq!(
        decode(&[0x66; 14], Protected32),
        Err(DecodeError::Truncated)
    );
    // The longest legal MOV: 64 + 66*4 + 67 + 48? no: movabs with prefixes up to 15.
    let mut long = vec![0x66; 4];
    long.extend_from_slice(&[0x48, 0xa1, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(d(&long, Long64).length, 14);
    assert_eq!(MAX_LENGTH, 15);
}

#[test]
fn unsupported_opcodes() {
    for (bytes, opcode) in [
        (&[0x90][..], 0x90u16),
        (&[0xff, 0x07][..], 0xff),
        (&[0x0f, 0x05][..], 0x0f05),
        (&[0x0f, 0xb0, 0x07][..], 0x0fb0), // CMPXCHG
        (&[0x87, 0x07][..], 0x87),         // XCHG
        (&[0x8d, 0x07][..], 0x8d),         // LEA
    ] {
        assert_eq!(
            decode(bytes, Long64),
            Err(DecodeError::Unsupported { opcode }),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn error_messages() {
    use std::string::ToString;
    assert_eq!(
        DecodeError::Unsupported { opcode: 0x0fb0 }.to_string(),
        "unsupported opcode 0x0fb0"
    );
    assert_eq!(
        DecodeError::UnsupportedGroup {
            opcode: 0x83,
            digit: 2
        }
        .to_string(),
        "unsupported opcode 0x83 /2"
    );
    assert_eq!(
        DecodeError::TooLong.to_string(),
        "instruction longer than 15 bytes"
    );
    assert!(
        DecodeError::Repeat { prefix: 0xf3 }
            .to_string()
            .contains("0xf3")
    );
    assert!(
        DecodeError::BadPrefix { prefix: 0xf0 }
            .to_string()
            .contains("0xf0")
    );
    assert!(
        DecodeError::RegisterOperand { opcode: 0x89 }
            .to_string()
            .contains("0x89")
    );
    assert!(DecodeError::Truncated.to_string().contains("truncated"));
}

// ---- BT ----

#[test]
fn bit_test() {
    // bt %rdx,(%rax) (XTF's xsa-195): REX.W, register bit offset.
    let insn = d(&[0x48, 0x0f, 0xa3, 0x10], Long64);
    assert_eq!(insn.operation, Operation::BitTest);
    assert_eq!(insn.size, 8);
    assert_eq!(insn.source, Some(Source::Register(r(2, 8))));
    assert_eq!(insn.memory, m64(0, 0));
    // btl $5,(%rax): immediate bit offset.
    let insn = d(&[0x0f, 0xba, 0x20, 0x05], Long64);
    assert_eq!(insn.operation, Operation::BitTest);
    assert_eq!(insn.size, 4);
    assert_eq!(insn.source, Some(Source::Immediate(5)));
    // bts/btr/btc write memory: not emulated.
    for digit in 5..8u8 {
        assert_eq!(
            decode(&[0x0f, 0xba, 0x20 | (digit << 3), 0x05], Long64),
            Err(DecodeError::UnsupportedGroup {
                opcode: 0x0fba,
                digit
            })
        );
    }
    // Register operand, LOCK: refused.
    assert_eq!(
        decode(&[0x0f, 0xa3, 0xc0], Long64),
        Err(DecodeError::RegisterOperand { opcode: 0x0fa3 })
    );
    assert_eq!(
        decode(&[0xf0, 0x0f, 0xa3, 0x10], Long64),
        Err(DecodeError::BadPrefix { prefix: 0xf0 })
    );
}
