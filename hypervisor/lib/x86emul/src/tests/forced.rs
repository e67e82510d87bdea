//! The forced-emulation prefix: the signature check, the fetch's access checks at page and
//! canonical boundaries, the instructions performed and the events asked for. Byte strings
//! were assembled with GNU `as` and checked with `objdump -d`.

use super::random::Rng;
use super::walking::{Ram, level4};
use crate::{
    ADDRESS_MASK, Action, Cpu, Exception, Mode, PAGE_SIZE, PagingMode, SIGNATURE, SegmentState,
    SoftKind, forced,
};

type Forced = (u64, Action);
const UD: Action = Action::Exception(Exception::InvalidOpcode);

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const XD: u64 = 1 << 63;
const EFER_NXE: u64 = 1 << 11;
const CR4_SMEP: u64 = 1 << 20;
const OF: u64 = 1 << 11;
const TF: u64 = 1 << 8;
const RF: u64 = 1 << 16;
/// The page-fault error code bits: present, user, reserved, instruction fetch.
const PF_P: u32 = 1;
const PF_U: u32 = 4;
const PF_I: u32 = 16;

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Regs {
    gpr: [u64; 16],
    rflags: u64,
}

impl Cpu for Regs {
    fn reg(&self, n: u8) -> u64 {
        self.gpr[usize::from(n)]
    }
    fn set_reg(&mut self, n: u8, value: u64) {
        self.gpr[usize::from(n)] = value;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.rflags = value;
    }
}

/// A 4-level address space whose PML4 is at 0x1000, tables from 0x10_0000 on.
struct Space {
    ram: Ram,
    next_table: u64,
}

impl Space {
    fn new() -> Self {
        let mut ram = Ram::default();
        ram.write(0x1000, &[0; 4096]);
        Space {
            ram,
            next_table: 0x10_0000,
        }
    }

    /// Maps the 4 KiB page of `linear` to `phys` with leaf flags `flags` (the tables above it
    /// allow everything).
    fn map(&mut self, linear: u64, phys: u64, flags: u64) {
        let mut table = 0x1000;
        for n in (2..=4).rev() {
            let gpa = table + ((linear >> (12 + 9 * (n - 1))) & 0x1ff) * 8;
            let entry = self.ram.get64(gpa);
            table = if entry & P != 0 {
                entry & ADDRESS_MASK
            } else {
                let t = self.next_table;
                self.next_table += PAGE_SIZE;
                self.ram.write(t, &[0; 4096]);
                self.ram.set64(gpa, t | P | RW | US);
                t
            };
        }
        if !self.ram.pages.contains_key(&(phys & !0xfff)) {
            self.ram.write(phys & !0xfff, &[0; 4096]);
        }
        self.ram
            .set64(table + ((linear >> 12) & 0x1ff) * 8, phys | flags);
    }

    /// Writes `bytes` at linear `linear`, which must be mapped, page by page.
    fn put(&mut self, linear: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let at = linear.wrapping_add(i as u64);
            let gpa = crate::translate(&self.ram, &self.paging(), at).expect("mapped");
            self.ram.write(gpa, &[*b]);
        }
    }

    fn paging(&self) -> PagingMode {
        let mut p = level4(0x1000);
        p.efer |= EFER_NXE;
        p
    }
}

const CODE: u64 = 0x40_0000;

/// A supervisor code page at `CODE` holding the signature and `insn`.
fn kernel(insn: &[u8]) -> Space {
    let mut s = Space::new();
    s.map(CODE, 0x20_0000, P | RW);
    s.put(CODE, &SIGNATURE);
    s.put(CODE + 5, insn);
    s
}

/// 64-bit mode (CS's base and limit do not apply).
fn run(s: &Space, rip: u64, cpl: u8, regs: &mut Regs) -> Option<Forced> {
    let cs = SegmentState::default();
    forced(&s.ram, &s.paging(), (Mode::Long64, &cs, cpl), rip, regs)
}

/// 32-bit or 16-bit code with CS `cs` at CPL 0.
fn run_in(s: &Space, mode: Mode, cs: SegmentState, rip: u64, regs: &mut Regs) -> Option<Forced> {
    forced(&s.ram, &s.paging(), (mode, &cs, 0), rip, regs)
}

fn done(rip: u64) -> Option<Forced> {
    Some((rip, Action::Done))
}

fn exception(rip: u64, e: Exception) -> Option<Forced> {
    Some((rip, Action::Exception(e)))
}

fn event(rip: u64, vector: u8, kind: SoftKind, length: u8) -> Option<Forced> {
    Some((rip, Action::Event(kind, vector, length)))
}

/// Runs `insn` after the prefix at CPL 0 from registers all 0x1111…: the outcome, the registers.
fn kernel_run(insn: &[u8], rflags: u64) -> (Option<Forced>, Regs) {
    let s = kernel(insn);
    let mut regs = Regs {
        gpr: [0x1111_1111_1111_1111; 16],
        rflags,
    };
    let out = run(&s, CODE, 0, &mut regs);
    (out, regs)
}

#[test]
fn xtf_detection_sets_al() {
    // XTF's probe: xor %eax,%eax; FEP; mov $1,%al.
    let (out, regs) = kernel_run(&[0xb0, 0x01], 2 | RF);
    assert_eq!(out, done(CODE + 7));
    assert_eq!(regs.gpr[0], 0x1111_1111_1111_1101);
    // RF is cleared, as Xen does once it saw the prefix.
    assert_eq!(regs.rflags, 2);
}

#[test]
fn mov_immediate_forms() {
    let cases: &[(&[u8], u8, u64, u64)] = &[
        // mov $0x22,%ah: a high-byte register without REX.
        (&[0xb4, 0x22], 0, 0x1111_1111_1111_2211, 2),
        // mov $0x22,%spl: with any REX it is SPL.
        (&[0x40, 0xb4, 0x22], 4, 0x1111_1111_1111_1122, 3),
        // mov $0x1,%r8b.
        (&[0x41, 0xb0, 0x01], 8, 0x1111_1111_1111_1101, 3),
        // mov $0x12345678,%esi: zero-extends.
        (&[0xbe, 0x78, 0x56, 0x34, 0x12], 6, 0x1234_5678, 5),
        // mov $0x1234,%si: keeps the rest.
        (&[0x66, 0xbe, 0x34, 0x12], 6, 0x1111_1111_1111_1234, 4),
        // movabs $0x8877665544332211,%r15.
        (
            &[0x49, 0xbf, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
            15,
            0x8877_6655_4433_2211,
            10,
        ),
        // A REX voided by a later legacy prefix: 41 66 b8 = mov $imm16,%ax.
        (&[0x41, 0x66, 0xb8, 0x34, 0x12], 0, 0x1111_1111_1111_1234, 5),
    ];
    for &(insn, reg, value, len) in cases {
        let (out, regs) = kernel_run(insn, 2);
        assert_eq!(out, done(CODE + 5 + len), "{insn:02x?}");
        assert_eq!(regs.gpr[usize::from(reg)], value, "{insn:02x?}");
        for (i, r) in regs.gpr.iter().enumerate() {
            if i != usize::from(reg) {
                assert_eq!(*r, 0x1111_1111_1111_1111, "{insn:02x?}: r{i}");
            }
        }
    }
}

#[test]
fn nop_moves_rip_only() {
    assert_eq!(
        kernel_run(&[0x90], 2),
        (done(CODE + 6), kernel_run(&[0x90], 2).1)
    );
    assert_eq!(kernel_run(&[0x90], 2).1.gpr, [0x1111_1111_1111_1111; 16]);
    // 41 90 is xchg %eax,%r8d, not a NOP: not emulated.
    let (out, _) = kernel_run(&[0x41, 0x90], 2);
    assert_eq!(out.unwrap().1, UD);
}

#[test]
fn cpuid_is_left_to_the_caller_after_rip_moved() {
    // cpuid and rex.w cpuid.
    assert_eq!(
        kernel_run(&[0x0f, 0xa2], 2).0,
        Some((CODE + 7, Action::Cpuid))
    );
    assert_eq!(
        kernel_run(&[0x48, 0x0f, 0xa2], 2).0,
        Some((CODE + 8, Action::Cpuid))
    );
    assert_eq!(kernel_run(&[0xf0, 0x0f, 0xa2], 2).0, Some((CODE + 5, UD)));
}

#[test]
fn software_interrupts_become_events_of_their_length() {
    let at = CODE + 5;
    assert_eq!(
        kernel_run(&[0xcc], 2).0,
        event(at, 3, SoftKind::Exception, 1)
    );
    assert_eq!(
        kernel_run(&[0x67, 0xcc], 2).0,
        event(at, 3, SoftKind::Exception, 2)
    );
    assert_eq!(
        kernel_run(&[0xcd, 0x03], 2).0,
        event(at, 3, SoftKind::Interrupt, 2)
    );
    assert_eq!(
        kernel_run(&[0x67, 0xcd, 0x01], 2).0,
        event(at, 1, SoftKind::Interrupt, 3)
    );
    assert_eq!(kernel_run(&[0xf1], 2).0, event(at, 1, SoftKind::Icebp, 1));
    assert_eq!(
        kernel_run(&[0x67, 0xf1], 2).0,
        event(at, 1, SoftKind::Icebp, 2)
    );
    // INTO is invalid in 64-bit mode.
    let (out, _) = kernel_run(&[0xce], 2 | OF);

    assert_eq!(out.unwrap().1, UD);
}

#[test]
fn no_signature_is_the_guests_own_ud() {
    let mut s = kernel(&[0x90]);
    let mut regs = Regs::default();
    // A plain ud2.
    s.put(CODE + 2, b"xyz");
    assert_eq!(run(&s, CODE, 0, &mut regs), None);
    // The signature cut by an unmapped page: not readable, so not the prefix.
    let last = CODE + PAGE_SIZE - 3;
    s.put(last, &SIGNATURE[..3]);
    assert_eq!(run(&s, last, 0, &mut regs), None);
    // Nothing mapped at all.
    assert_eq!(run(&s, 0x7000_0000, 0, &mut regs), None);
    assert_eq!(regs, Regs::default());
}

#[test]
fn unhandled_lock_long_and_single_step() {
    // LOCK on anything is #UD; so is an instruction the emulator does not perform (UD2,
    // `mov $1,%r8` in its C7 form).
    for insn in [
        &[0xf0, 0xb0, 0x01][..],
        &[0x0f, 0x0b],
        &[0xc7, 0x00, 1, 0, 0, 0],
        &[0x49, 0xc7, 0xc0, 1, 0, 0, 0],
    ] {
        let (out, regs) = kernel_run(insn, 2);
        assert_eq!(out, Some((CODE + 5, UD)), "{insn:02x?}");
        assert_eq!(regs.gpr, [0x1111_1111_1111_1111; 16]);
    }
    // Fifteen prefixes and an opcode: longer than 15 bytes, #GP.
    let mut long = [0x66; 16];
    long[15] = 0x90;
    assert_eq!(
        kernel_run(&long, 2).0,
        exception(CODE + 5, Exception::GeneralProtection)
    );
    // With TF set nothing is performed.
    let (out, regs) = kernel_run(&[0xb0, 0x01], 2 | TF);
    assert_eq!(out.unwrap().1, UD);
    assert_eq!(regs.gpr[0], 0x1111_1111_1111_1111);
}

#[test]
fn fetch_faults_at_the_page_boundary() {
    // The signature fills the last bytes of a page; the next page is not mapped.
    let mut s = Space::new();
    s.map(CODE, 0x20_0000, P | RW);
    let rip = CODE + PAGE_SIZE - 5;
    s.put(rip, &SIGNATURE);
    let mut regs = Regs::default();
    let pf = |code, linear| Exception::PageFault {
        error_code: code,
        linear,
    };
    let next = CODE + PAGE_SIZE;
    assert_eq!(run(&s, rip, 0, &mut regs), exception(next, pf(PF_I, next)));
    // An instruction that ends before the boundary needs nothing from the next page.
    let rip = CODE + PAGE_SIZE - 7;
    s.put(rip, &SIGNATURE);
    s.put(rip + 5, &[0xb0, 0x07]);
    assert_eq!(run(&s, rip, 0, &mut regs), done(next));
    assert_eq!(regs.gpr[0], 7);
    // One that crosses it faults on the next page's address.
    let rip = CODE + PAGE_SIZE - 6;
    s.put(rip, &SIGNATURE);
    s.put(rip + 5, &[0xb0]);
    assert_eq!(
        run(&s, rip, 0, &mut regs),
        exception(rip + 5, pf(PF_I, next))
    );
    // Mapped without XD but not for user mode: a user fetch is a protection fault.
    s.map(next, 0x21_0000, P | RW);
    s.put(next, &[0x01]);
    assert_eq!(run(&s, rip, 0, &mut regs), done(next + 1));
    s.map(CODE, 0x20_0000, P | RW | US);
    assert_eq!(
        run(&s, rip, 3, &mut regs),
        exception(rip + 5, pf(PF_P | PF_U | PF_I, next))
    );
    // XD on the next page.
    s.map(next, 0x21_0000, P | RW | US | XD);
    assert_eq!(
        run(&s, rip, 3, &mut regs),
        exception(rip + 5, pf(PF_P | PF_U | PF_I, next))
    );
    // Not RAM behind the next page: #UD, as for an instruction not handled.
    s.map(next, 0x7000_0000, P | RW | US);
    s.ram.pages.remove(&0x7000_0000);
    assert_eq!(run(&s, rip, 3, &mut regs).unwrap().1, UD);
}

#[test]
fn smep_and_user_pages() {
    let mut s = kernel(&[0xb0, 0x01]);
    s.map(CODE, 0x20_0000, P | RW | US);
    let mut regs = Regs::default();
    assert_eq!(run(&s, CODE, 0, &mut regs), done(CODE + 7));
    // With SMEP the supervisor may not fetch from a user page: the signature is unreadable.
    let mut smep = s.paging();
    smep.cr4 |= CR4_SMEP;
    let cs = SegmentState::default();
    assert_eq!(
        forced(&s.ram, &smep, (Mode::Long64, &cs, 0), CODE, &mut regs),
        None
    );
    // A user fetch from a supervisor page cannot read it either.
    s.map(CODE, 0x20_0000, P | RW);
    assert_eq!(run(&s, CODE, 3, &mut regs), None);
}

#[test]
fn the_canonical_boundary() {
    // XSA-170: a NOP at the last canonical byte; RIP would become 0x0000_8000_0000_0000.
    let mut s = Space::new();
    let top = 0x7fff_ffff_f000;
    s.map(top, 0x20_0000, P | RW | US);
    s.put(0x7fff_ffff_fffa, &SIGNATURE);
    s.put(0x7fff_ffff_ffff, &[0x90]);
    let mut regs = Regs::default();
    assert_eq!(
        run(&s, 0x7fff_ffff_fffa, 3, &mut regs),
        exception(0xffff_8000_0000_0000, Exception::GeneralProtection)
    );
    // The signature ends at the boundary: the instruction is fetched from a non-canonical
    // address, #GP, with RIP made canonical as well.
    s.put(0x7fff_ffff_fffb, &SIGNATURE);
    assert_eq!(
        run(&s, 0x7fff_ffff_fffb, 3, &mut regs),
        exception(0xffff_8000_0000_0000, Exception::GeneralProtection)
    );
}

#[test]
fn the_fetch_wraps_at_2_pow_64() {
    // XSA-186: the signature at 2^64 - 6, then `67 cd 20` across the wrap to 0.
    let mut s = Space::new();
    s.map(0xffff_ffff_ffff_f000, 0x20_0000, P | RW);
    s.map(0, 0x21_0000, P | RW);
    let rip = 0xffff_ffff_ffff_fffa;
    s.put(rip, &SIGNATURE);
    s.put(rip.wrapping_add(5), &[0x67, 0xcd, 0x20, 0xc3]);
    let mut regs = Regs::default();
    assert_eq!(
        run(&s, rip, 0, &mut regs),
        event(u64::MAX, 0x20, SoftKind::Interrupt, 3)
    );
}

#[test]
fn random_bytes_and_places_never_panic() {
    let mut rng = Rng(0xfe9);
    for round in 0..1_500u64 {
        let mut s = Space::new();
        let page = rng.next() & 0xffff_ffff_f000;
        let page = if round % 3 == 0 {
            page | 0xffff_0000_0000_0000
        } else {
            page
        };
        s.map(page, 0x20_0000, rng.next() & (P | RW | US | XD));
        s.map(
            page.wrapping_add(PAGE_SIZE),
            0x21_0000,
            rng.next() & (P | RW | US | XD) | P,
        );
        let rip = page + PAGE_SIZE - 1 - (rng.next() % 24);
        let mut bytes = [0u8; 24];
        for b in &mut bytes {
            *b = rng.next() as u8;
        }
        bytes[..5].copy_from_slice(&SIGNATURE);
        let n = ((page + 2 * PAGE_SIZE).wrapping_sub(rip)).min(24) as usize;
        for (i, b) in bytes[..n].iter().enumerate() {
            if let Ok(gpa) = crate::translate(&s.ram, &s.paging(), rip.wrapping_add(i as u64)) {
                s.ram.write(gpa, &[*b]);
            }
        }
        let cpl = (rng.next() % 4) as u8;
        let mut paging = s.paging();
        paging.cr4 |= rng.next() & (CR4_SMEP | crate::CR4_LA57);
        let mut regs = Regs {
            rflags: rng.next(),
            ..Regs::default()
        };
        let mode = [Mode::Long64, Mode::Protected32, Mode::Real16][(rng.next() % 3) as usize];
        let cs = SegmentState {
            base: rng.next() & 0xffff_ffff,
            limit: rng.next() as u32,
            ..SegmentState::default()
        };
        if let Some((rip, _)) = forced(&s.ram, &paging, (mode, &cs, cpl), rip, &mut regs) {
            // Never a non-canonical RIP.
            let bits = if paging.cr4 & crate::CR4_LA57 != 0 {
                7
            } else {
                16
            };
            assert_eq!((((rip << bits) as i64) >> bits) as u64, rip);
        }
    }
}

#[test]
fn into_outside_64_bit_mode_traps_only_with_of() {
    let s = kernel(&[0x67, 0xce]);
    let flat = SegmentState {
        limit: u32::MAX,
        ..SegmentState::default()
    };
    let mut regs = Regs {
        rflags: 2 | OF,
        ..Regs::default()
    };
    let trap = event(CODE + 5, 4, SoftKind::Exception, 2);
    assert_eq!(run_in(&s, Mode::Protected32, flat, CODE, &mut regs), trap);
    regs.rflags = 2;
    assert_eq!(
        run_in(&s, Mode::Real16, flat, CODE, &mut regs),
        done(CODE + 7)
    );
}

#[test]
fn operand_size_and_rex_outside_64_bit_mode() {
    let flat = SegmentState {
        limit: u32::MAX,
        ..SegmentState::default()
    };
    let ones = Regs {
        gpr: [0x1111_1111_1111_1111; 16],
        rflags: 2,
    };
    // mov $0x5678,%ax in 16-bit code; with 66, mov $0x12345678,%eax.
    let s = kernel(&[0xb8, 0x78, 0x56]);
    let mut regs = ones;
    assert_eq!(
        run_in(&s, Mode::Real16, flat, CODE, &mut regs),
        done(CODE + 8)
    );
    assert_eq!(regs.gpr[0], 0x1111_1111_1111_5678);
    let s = kernel(&[0x66, 0xb8, 0x78, 0x56, 0x34, 0x12]);
    let mut regs = ones;
    assert_eq!(
        run_in(&s, Mode::Real16, flat, CODE, &mut regs),
        done(CODE + 11)
    );
    assert_eq!(regs.gpr[0], 0x1234_5678);
    // 41 is INC ECX outside 64-bit mode: not emulated.
    let s = kernel(&[0x41, 0xb0, 0x01]);
    let mut regs = ones;
    let out = run_in(&s, Mode::Protected32, flat, CODE, &mut regs);
    assert_eq!(out, Some((CODE + 5, UD)));
    assert_eq!(regs.gpr, ones.gpr);
}

#[test]
fn the_cs_base_and_limit_outside_64_bit_mode() {
    let s = kernel(&[0xb8, 1, 2, 3, 4]);
    let mut regs = Regs::default();
    let cs = |base, limit| SegmentState {
        base,
        limit,
        ..SegmentState::default()
    };
    // The immediate runs past the limit: #GP, RIP at the instruction.
    let out = run_in(
        &s,
        Mode::Protected32,
        cs(0, (CODE + 7) as u32),
        CODE,
        &mut regs,
    );
    assert_eq!(out, exception(CODE + 5, Exception::GeneralProtection));
    assert_eq!(regs.gpr[0], 0);
    let out = run_in(
        &s,
        Mode::Protected32,
        cs(0, (CODE + 9) as u32),
        CODE,
        &mut regs,
    );
    assert_eq!(out, done(CODE + 10));
    assert_eq!(regs.gpr[0], 0x0403_0201);
    // The same bytes through a segment based 0x100 below them.
    let out = run_in(
        &s,
        Mode::Protected32,
        cs(CODE - 0x100, u32::MAX),
        0x100,
        &mut regs,
    );
    assert_eq!(out, done(0x10a));
    // A signature that ends past the limit is not the prefix.
    assert_eq!(
        run_in(
            &s,
            Mode::Protected32,
            cs(CODE - 0x100, 0x103),
            0x100,
            &mut regs
        ),
        None
    );
    // EIP wraps at 4 GiB: the signature at 0xffff_fffe of a segment based at CODE + 2 is
    // at CODE; the instruction at EIP 3 (linear CODE + 5).
    let out = run_in(
        &s,
        Mode::Protected32,
        cs(CODE + 2, u32::MAX),
        0xffff_fffe,
        &mut regs,
    );
    assert_eq!(out, done(8));
}

#[test]
fn xd_anywhere_on_the_walk_forbids_the_fetch() {
    // XD in the PML4 entry above the code page: not executable, whatever the leaf says; the
    // signature is then unreadable as code.
    let mut s = kernel(&[0xb0, 0x01]);
    let mut regs = Regs::default();
    assert_eq!(run(&s, CODE, 0, &mut regs), done(CODE + 7));
    let pml4e = s.ram.get64(0x1000);
    s.ram.set64(0x1000, pml4e | XD);
    assert_eq!(run(&s, CODE, 0, &mut regs), None);
    // Without EFER.NXE the bit means nothing to this check.
    let mut no_nx = s.paging();
    no_nx.efer &= !EFER_NXE;
    let cs = SegmentState::default();
    let out = forced(&s.ram, &no_nx, (Mode::Long64, &cs, 0), CODE, &mut regs);
    assert_eq!(out, done(CODE + 7));
}
