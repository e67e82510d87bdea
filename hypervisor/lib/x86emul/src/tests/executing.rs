//! The executor against a model vCPU and device.

use super::*;
use crate::{
    AF, ARITHMETIC_FLAGS, CF, Cpu, Mmio, OF, PF, SF, ZF, alu, emulate, read_register,
    write_register,
};

#[derive(Debug, Default)]
struct TestCpu {
    regs: [u64; 16],
    rflags: u64,
}

impl Cpu for TestCpu {
    fn reg(&self, n: u8) -> u64 {
        self.regs[usize::from(n)]
    }
    fn set_reg(&mut self, n: u8, value: u64) {
        self.regs[usize::from(n)] = value;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.rflags = value;
    }
}

/// Records every access; reads return `value`, writes update it.
#[derive(Debug, Default)]
struct TestMmio {
    value: u64,
    log: Vec<(char, u64, u8, u64)>,
}

impl Mmio for TestMmio {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        self.log.push(('r', gpa, size, self.value));
        // Garbage above the access size must be ignored.
        self.value
            | 0xdead_0000_0000_0000_u64
                .checked_shl(8 * u32::from(size))
                .unwrap_or(0)
    }
    fn write(&mut self, gpa: u64, size: u8, value: u64) {
        self.log.push(('w', gpa, size, value));
        self.value = value;
    }
}

const GPA: u64 = 0xfee0_0030;

fn run(bytes: &[u8], mode: Mode, cpu: &mut TestCpu, mmio: &mut TestMmio) {
    let insn = d(bytes, mode);
    assert_eq!(emulate(&insn, cpu, mmio, GPA), bytes.len() as u64);
}

fn fill() -> TestCpu {
    let mut cpu = TestCpu::default();
    for (i, r) in cpu.regs.iter_mut().enumerate() {
        *r = 0x1111_1111_1111_1111_u64.wrapping_mul(i as u64 + 1);
    }
    cpu
}

#[test]
fn partial_register_writes() {
    let mut cpu = fill();
    let mut mmio = TestMmio {
        value: 0x8899_aabb_ccdd_eeff,
        ..Default::default()
    };
    // mov (%rbx),%al: only bits 0-7.
    run(&[0x8a, 0x03], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.regs[0], 0x1111_1111_1111_11ff);
    // mov 0x7f(%rbx),%dh: only bits 8-15 of RDX.
    run(&[0x8a, 0x73, 0x7f], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.regs[2], 0x3333_3333_3333_ff33);
    // mov (%rbx),%cx: bits 0-15.
    run(&[0x66, 0x8b, 0x0b], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.regs[1], 0x2222_2222_2222_eeff);
    // mov (%rbx),%esi: zero-extends.
    run(&[0x8b, 0x33], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.regs[6], 0xccdd_eeff);
    // mov (%rbx),%r9: all 64 bits.
    run(&[0x4c, 0x8b, 0x0b], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.regs[9], 0x8899_aabb_ccdd_eeff);
    // mov (%rbx),%sil (REX): bits 0-7 of RSI.
    run(&[0x40, 0x8a, 0x33], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.regs[6], 0xccdd_eeff);
    assert!(
        mmio.log
            .iter()
            .all(|&(k, gpa, _, _)| k == 'r' && gpa == GPA)
    );
    let sizes: Vec<u8> = mmio.log.iter().map(|e| e.2).collect();
    assert_eq!(sizes, [1, 1, 2, 4, 8, 1]);
}

#[test]
fn extensions() {
    let mut cpu = fill();
    let mut mmio = TestMmio {
        value: 0x80f0,
        ..Default::default()
    };
    run(&[0x0f, 0xb6, 0x08], Mode::Long64, &mut cpu, &mut mmio); // movzbl
    assert_eq!(cpu.regs[1], 0xf0);
    run(&[0x0f, 0xbe, 0x08], Mode::Long64, &mut cpu, &mut mmio); // movsbl
    assert_eq!(cpu.regs[1], 0xffff_fff0);
    run(&[0x48, 0x0f, 0xbf, 0x08], Mode::Long64, &mut cpu, &mut mmio); // movswq
    assert_eq!(cpu.regs[1], 0xffff_ffff_ffff_80f0);
    cpu.regs[1] = 0x1234_5678_9abc_def0;
    run(&[0x66, 0x0f, 0xbe, 0x08], Mode::Long64, &mut cpu, &mut mmio); // movsbw
    assert_eq!(cpu.regs[1], 0x1234_5678_9abc_fff0);
    run(&[0x0f, 0xb7, 0x08], Mode::Long64, &mut cpu, &mut mmio); // movzwl
    assert_eq!(cpu.regs[1], 0x80f0);
    run(&[0x4c, 0x0f, 0xb6, 0x38], Mode::Long64, &mut cpu, &mut mmio); // movzbq %r15
    assert_eq!(cpu.regs[15], 0xf0);
}

#[test]
fn stores() {
    let mut cpu = fill();
    let mut mmio = TestMmio::default();
    run(&[0x88, 0x66, 0x10], Mode::Long64, &mut cpu, &mut mmio); // mov %ah
    run(&[0x89, 0x03], Mode::Long64, &mut cpu, &mut mmio); // mov %eax
    run(
        &[0x4f, 0x89, 0x8c, 0xda, 0x78, 0x56, 0x34, 0x12],
        Mode::Long64,
        &mut cpu,
        &mut mmio,
    );
    run(
        &[0x48, 0xc7, 0x40, 0x08, 0xff, 0xff, 0xff, 0xff],
        Mode::Long64,
        &mut cpu,
        &mut mmio,
    );
    run(
        &[0x66, 0xc7, 0x00, 0x34, 0x12],
        Mode::Long64,
        &mut cpu,
        &mut mmio,
    );
    run(
        &[0x66, 0xa3, 0x78, 0x56, 0x34, 0x12],
        Mode::Protected32,
        &mut cpu,
        &mut mmio,
    );
    run(
        &[0x88, 0x7c, 0x4c, 0xfc],
        Mode::Protected32,
        &mut cpu,
        &mut mmio,
    ); // mov %bh
    assert_eq!(
        mmio.log,
        [
            ('w', GPA, 1, 0x11),
            ('w', GPA, 4, 0x1111_1111),
            ('w', GPA, 8, 0xaaaa_aaaa_aaaa_aaaa),
            ('w', GPA, 8, u64::MAX),
            ('w', GPA, 2, 0x1234),
            ('w', GPA, 2, 0x1111),
            ('w', GPA, 1, 0x44),
        ]
    );
    // Stores leave registers and flags alone.
    assert_eq!(cpu.regs, fill().regs);
    assert_eq!(cpu.rflags, 0);
}

#[test]
fn read_modify_write() {
    let mut cpu = fill();
    cpu.rflags = 0x2 | CF | OF;
    let mut mmio = TestMmio {
        value: 0xff00_0001,
        ..Default::default()
    };
    // lock orl $0x1,(%rdi) -> unchanged value, flags: SF (bit 31), PF (low byte 0x01 odd → no).
    run(&[0xf0, 0x83, 0x0f, 0x01], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(mmio.value, 0xff00_0001);
    assert_eq!(cpu.rflags, 0x2 | SF);
    // andl $0xfffffffe,(%rdi) -> 0xff000000: SF, PF (0x00 even).
    run(&[0x83, 0x27, 0xfe], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(mmio.value, 0xff00_0000);
    assert_eq!(cpu.rflags, 0x2 | SF | PF);
    assert_eq!(mmio.log.len(), 4);
    // testl $0x100,(%rdi): no write, ZF.
    run(
        &[0xf7, 0x07, 0x00, 0x01, 0, 0],
        Mode::Long64,
        &mut cpu,
        &mut mmio,
    );
    assert_eq!(mmio.log.len(), 5);
    assert_eq!(cpu.rflags, 0x2 | ZF | PF);
    // cmp %eax,(%rdi): mem - eax = 0xff000000 - 0x11111111 → borrow-free, no OF.
    run(&[0x39, 0x07], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(mmio.log.len(), 6);
    let (res, flags) = alu(AluOp::Sub, 0xff00_0000, 0x1111_1111, 4);
    assert_eq!(res, 0xedee_eeef);
    assert_eq!(cpu.rflags, 0x2 | flags);
    assert_eq!(flags, SF | AF);
    // or (%rdi),%eax -> eax = 0x11111111 | 0xff000000, zero-extended.
    run(&[0x0b, 0x07], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.regs[0], 0xff11_1111);
    // cmp (%rdi),%eax: register unchanged.
    run(&[0x3b, 0x07], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.regs[0], 0xff11_1111);
    assert_eq!(
        cpu.rflags,
        0x2 | (alu(AluOp::Cmp, 0xff11_1111, 0xff00_0000, 4).1)
    );
    // addq $-1,(%rdi) on 0xff000000 (read as 8 bytes).
    run(&[0x48, 0x83, 0x07, 0xff], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(mmio.value, 0xfeff_ffff);
    assert_eq!(cpu.rflags & CF, CF);
    // testb $1, (%rdi) with mem low byte 0xff → PF (0x01 odd: no), no ZF.
    run(&[0xf6, 0x07, 0x01], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.rflags, 0x2);
}

#[test]
fn alu_flags() {
    // add: carry and overflow.
    assert_eq!(alu(AluOp::Add, 0xff, 1, 1), (0, CF | ZF | PF | AF));
    assert_eq!(alu(AluOp::Add, 0x7f, 1, 1), (0x80, OF | SF | AF));
    assert_eq!(
        alu(AluOp::Add, 0x7fff_ffff, 1, 4),
        (0x8000_0000, OF | SF | AF | PF)
    );
    assert_eq!(alu(AluOp::Add, u64::MAX, 2, 8), (1, CF | AF));
    // sub/cmp: borrow and overflow.
    assert_eq!(alu(AluOp::Sub, 0, 1, 2), (0xffff, CF | SF | PF | AF));
    assert_eq!(alu(AluOp::Cmp, 0x8000, 1, 2), (0x7fff, OF | PF | AF));
    assert_eq!(alu(AluOp::Cmp, 5, 5, 8), (0, ZF | PF));
    // logic: CF/OF/AF cleared.
    assert_eq!(alu(AluOp::Xor, 0xf0, 0x0f, 1), (0xff, SF | PF));
    assert_eq!(alu(AluOp::And, 0xf0, 0x0f, 1), (0, ZF | PF));
    assert_eq!(alu(AluOp::Or, 0, 0x3, 4), (3, PF));
    assert_eq!(
        alu(AluOp::Test, 0x8000_0000_0000_0000, u64::MAX, 8).1,
        SF | PF
    );
    // Operands wider than the size are truncated first.
    assert_eq!(alu(AluOp::Add, 0x1ff, 0x100, 1), (0xff, SF | PF));
    for (_, flags) in [alu(AluOp::Add, 3, 4, 1), alu(AluOp::Sub, 3, 4, 8)] {
        assert_eq!(flags & !ARITHMETIC_FLAGS, 0);
    }
}

#[test]
fn register_helpers() {
    let mut cpu = fill();
    assert_eq!(read_register(&cpu, hi(3)), 0x44);
    assert_eq!(read_register(&cpu, r(3, 2)), 0x4444);
    write_register(&mut cpu, hi(3), 0x1ab);
    assert_eq!(cpu.regs[3], 0x4444_4444_4444_ab44);
    write_register(&mut cpu, r(3, 4), u64::MAX);
    assert_eq!(cpu.regs[3], 0xffff_ffff);
    write_register(&mut cpu, r(3, 1), 0x1_0000_0000);
    assert_eq!(cpu.regs[3], 0xffff_ff00);
}

#[test]
fn real_mode_load() {
    let mut cpu = fill();
    let mut mmio = TestMmio {
        value: 0xbeef,
        ..Default::default()
    };
    run(&[0x8b, 0x4e, 0x12], Mode::Real16, &mut cpu, &mut mmio); // mov 0x12(%bp),%cx
    assert_eq!(cpu.regs[1], 0x2222_2222_2222_beef);
    assert_eq!(mmio.log, [('r', GPA, 2, 0xbeef)]);
    // The effective address the caller checks: BP + 0x12, 16-bit.
    let insn = d(&[0x8b, 0x4e, 0x12], Mode::Real16);
    assert_eq!(
        insn.memory.offset(|n| cpu.regs[usize::from(n)], 0),
        0x6666 + 0x12
    );
}

#[test]
fn bit_test_sets_only_cf() {
    // bt %rdx,(%rax) on all ones (nothing at the address): CF set, the
    // other flags kept, memory only read.
    let mut cpu = fill();
    cpu.regs[2] = 0xfffd_0000_0000_0000; // XTF's xsa-195 offset: bit 0 of the unit
    cpu.rflags = 0x202 | ZF;
    let mut mmio = TestMmio {
        value: u64::MAX,
        ..TestMmio::default()
    };
    run(&[0x48, 0x0f, 0xa3, 0x10], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.rflags, 0x202 | ZF | CF);
    assert_eq!(mmio.log, [('r', GPA, 8, u64::MAX)]);
    // btl $33,(%rax) tests bit 1 (33 mod 32) of 0b01: CF clear.
    cpu.rflags = 0x202 | CF;
    mmio.value = 1;
    run(&[0x0f, 0xba, 0x20, 33], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.rflags, 0x202);
    // btl $32,(%rax) tests bit 0: CF set.
    run(&[0x0f, 0xba, 0x20, 32], Mode::Long64, &mut cpu, &mut mmio);
    assert_eq!(cpu.rflags, 0x202 | CF);
}
