//! String port I/O: the decoder (encodings assembled with GNU `as`, checked with `objdump -d`)
//! and the executor against hand-built page tables, a fake port and fake RAM.

use super::random::Rng;
use crate::{
    CR0_PG, CR0_WP, CR4_PAE, CR4_SMAP, Cpu, DecodeError, EFER_LMA, Exception, GuestPhys, GuestRam,
    Mode, PagingMode, PortWrite, Ports, Segment, SegmentState, StringIo, StringIoContext,
    StringIoOutcome, decode_string_io, execute_string_io,
};
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------------
// Decoding

fn sio(
    length: u8,
    is_in: bool,
    size: u8,
    address_size: u8,
    segment: Segment,
    rep: bool,
) -> StringIo {
    StringIo {
        length,
        is_in,
        size,
        address_size,
        segment,
        rep,
    }
}

#[test]
fn decodes_every_form() {
    use Mode::{Long64 as L, Protected32 as P, Real16 as R};
    use Segment::{Ds, Es, Fs, Gs};
    let cases: &[(&[u8], Mode, StringIo)] = &[
        (&[0xf3, 0x6c], L, sio(2, true, 1, 8, Es, true)), // rep insb
        (&[0x66, 0x6d], L, sio(2, true, 2, 8, Es, false)), // insw
        (&[0x6d], L, sio(1, true, 4, 8, Es, false)),      // insl
        (&[0x48, 0x6d], L, sio(2, true, 4, 8, Es, false)), // rex.W insl: still 4 bytes
        // REX.W takes precedence over 66: a dword (the fuzzer's 66 3e 4c 6d, as Bochs reports).
        (&[0x66, 0x3e, 0x4c, 0x6d], L, sio(4, true, 4, 8, Es, false)),
        (&[0x66, 0x49, 0x6f], L, sio(3, false, 4, 8, Ds, false)),
        (
            &[0x36, 0xf2, 0x66, 0x4c, 0x6d],
            L,
            sio(5, true, 4, 8, Es, true),
        ),
        // A REX voided by a later legacy prefix: 66 applies.
        (&[0x48, 0x66, 0x6d], L, sio(3, true, 2, 8, Es, false)),
        (&[0xf3, 0x6e], L, sio(2, false, 1, 8, Ds, true)), // rep outsb
        (&[0x64, 0x6e], L, sio(2, false, 1, 8, Fs, false)), // fs outsb
        (&[0x65, 0x66, 0xf3, 0x6f], L, sio(4, false, 2, 8, Gs, true)), // gs rep outsw
        (&[0x67, 0xf3, 0x6c], L, sio(3, true, 1, 4, Es, true)), // addr32 rep insb
        (&[0x64, 0x6c], L, sio(2, true, 1, 8, Es, false)), // fs insb: INS ignores it
        (&[0xf2, 0x6e], L, sio(2, false, 1, 8, Ds, true)), // repne outsb repeats too
        (&[0x66, 0xf3, 0x6d], P, sio(3, true, 2, 4, Es, true)), // rep insw
        (&[0x67, 0x6e], P, sio(2, false, 1, 2, Ds, false)), // addr16 outsb
        (&[0x26, 0x6f], P, sio(2, false, 4, 4, Es, false)), // es outsl
        (&[0x6d], R, sio(1, true, 2, 2, Es, false)),       // insw
        (&[0x66, 0x6d], R, sio(2, true, 4, 2, Es, false)), // insl
        (&[0x67, 0xf3, 0x6e], R, sio(3, false, 1, 4, Ds, true)), // addr32 rep outsb
        (&[0x40, 0x6c], L, sio(2, true, 1, 8, Es, false)), // a bare REX
    ];
    for (bytes, mode, want) in cases {
        assert_eq!(
            decode_string_io(bytes, *mode),
            Ok(*want),
            "{bytes:02x?} {mode:?}"
        );
    }
}

#[test]
fn refuses_what_is_not_string_io() {
    assert_eq!(
        decode_string_io(&[0xf0, 0x6c], Mode::Long64),
        Err(DecodeError::BadPrefix { prefix: 0xf0 })
    );
    assert_eq!(
        decode_string_io(&[0xec], Mode::Long64),
        Err(DecodeError::Unsupported { opcode: 0xec })
    );
    // Outside 64-bit mode 0x48 is DEC EAX, not a prefix.
    assert_eq!(
        decode_string_io(&[0x48, 0x6d], Mode::Protected32),
        Err(DecodeError::Unsupported { opcode: 0x48 })
    );
    assert_eq!(
        decode_string_io(&[0xf3, 0x66], Mode::Long64),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        decode_string_io(&[0x66; 16], Mode::Long64),
        Err(DecodeError::TooLong)
    );
    // The MMIO decoder still refuses the REP forms.
    assert_eq!(
        crate::decode(&[0xf3, 0x6c], Mode::Long64),
        Err(DecodeError::Repeat { prefix: 0xf3 })
    );
}

// ---------------------------------------------------------------------------------------------
// The machine

/// RAM below `limit`, zero until written; nothing above is RAM.
struct Ram {
    limit: u64,
    pages: HashMap<u64, Box<[u8; 4096]>>,
}

impl Ram {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            pages: HashMap::new(),
        }
    }
    fn byte(&self, a: u64) -> u8 {
        self.pages
            .get(&(a & !0xfff))
            .map_or(0, |p| p[(a & 0xfff) as usize])
    }
    fn poke(&mut self, a: u64, b: u8) {
        self.pages
            .entry(a & !0xfff)
            .or_insert_with(|| Box::new([0; 4096]))[(a & 0xfff) as usize] = b;
    }
    fn set64(&mut self, a: u64, v: u64) {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            self.poke(a + i as u64, *b);
        }
    }
}

impl GuestPhys for Ram {
    fn read_phys(&self, gpa: u64, out: &mut [u8]) -> bool {
        if gpa
            .checked_add(out.len() as u64)
            .is_none_or(|end| end > self.limit)
        {
            return false;
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte(gpa + i as u64);
        }
        true
    }
}

impl GuestRam for Ram {
    fn write_phys(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        if gpa
            .checked_add(bytes.len() as u64)
            .is_none_or(|end| end > self.limit)
        {
            return false;
        }
        for (i, b) in bytes.iter().enumerate() {
            self.poke(gpa + i as u64, *b);
        }
        true
    }
}

#[derive(Clone, Copy, Default)]
struct Regs {
    r: [u64; 16],
    rflags: u64,
}

impl Cpu for Regs {
    fn reg(&self, n: u8) -> u64 {
        self.r[usize::from(n & 15)]
    }
    fn set_reg(&mut self, n: u8, value: u64) {
        self.r[usize::from(n & 15)] = value;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.rflags = value;
    }
}

/// A port that returns 0x11, 0x12, … (as wide as asked) and records writes; a write of
/// `stop_value` ends the guest; after `room` writes (when given) it is busy.
#[derive(Default)]
struct Port {
    next: u32,
    reads: u64,
    writes: Vec<(u16, u8, u32)>,
    stop_value: Option<u32>,
    room: Option<usize>,
}

impl Ports for Port {
    fn read(&mut self, _port: u16, size: u8) -> u32 {
        self.reads += 1;
        let mut v = 0;
        for i in 0..u32::from(size) {
            self.next += 1;
            v |= ((0x10 + self.next) & 0xff) << (8 * i);
        }
        v
    }
    fn write(&mut self, port: u16, size: u8, value: u32) -> PortWrite {
        if self.room.is_some_and(|r| self.writes.len() >= r) {
            return PortWrite::Busy;
        }
        self.writes.push((port, size, value));
        if self.stop_value == Some(value) {
            PortWrite::Ended
        } else {
            PortWrite::Done
        }
    }
}

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 1 << 7;
const RCX: usize = 1;
const RSI: usize = 6;
const RDI: usize = 7;
const DF: u64 = 1 << 10;

/// Test pages in the 4 KiB-mapped window 0x20_0000..0x40_0000 (identity otherwise).
const HOLE: u64 = 0x30_0000; // not present
const READ_ONLY: u64 = 0x30_1000;
const SUPERVISOR: u64 = 0x30_2000;
const DEVICE: u64 = 0x30_3000; // maps guest-physical 0xfee0_0000: not RAM
const RESERVED: u64 = 0xc0_0000; // a 2 MiB PDE with reserved bit 13 set

/// Where the page tables are (PML4, PDPT, PD, PT).
const TABLES: u64 = 0xf0_0000;

/// 4-level paging: 0..16 MiB identity (2 MiB pages, user, writable) except 2..4 MiB in 4 KiB
/// pages with the special pages above. RAM is 16 MiB.
fn long_mode_ram() -> (Ram, PagingMode) {
    let mut ram = Ram::new(16 << 20);
    ram.set64(TABLES, (TABLES + 0x1000) | P | RW | US);
    ram.set64(TABLES + 0x1000, (TABLES + 0x2000) | P | RW | US);
    for i in 0..8u64 {
        if i == 1 {
            ram.set64(TABLES + 0x2000 + 8, (TABLES + 0x3000) | P | RW | US);
        } else {
            let reserved = if i << 21 == RESERVED { 1 << 13 } else { 0 };
            ram.set64(
                TABLES + 0x2000 + 8 * i,
                (i << 21) | P | RW | US | PS | reserved,
            );
        }
    }
    for i in 0..512u64 {
        let page = 0x20_0000 + (i << 12);
        let entry = match page {
            HOLE => 0,
            READ_ONLY => page | P | US,
            SUPERVISOR => page | P | RW,
            DEVICE => 0xfee0_0000 | P | RW | US,
            _ => page | P | RW | US,
        };
        ram.set64(TABLES + 0x3000 + 8 * i, entry);
    }
    let paging = PagingMode {
        cr0: CR0_PG | 1 | CR0_WP,
        cr3: TABLES,
        cr4: CR4_PAE,
        efer: EFER_LMA | (1 << 8),
    };
    (ram, paging)
}

fn flat(limit: u32) -> SegmentState {
    SegmentState {
        base: 0,
        limit,
        attributes: 0x93 | (1 << 14),
        usable: true,
    }
}

fn ctx64(paging: PagingMode) -> StringIoContext {
    StringIoContext {
        mode: Mode::Long64,
        protected: true,
        segment: flat(u32::MAX),
        paging,
        cpl: 0,
        port: 0x80,
    }
}

struct Run {
    outcome: StringIoOutcome,
    done: u64,
    regs: Regs,
    ram: Ram,
    port: Port,
}

fn run(bytes: &[u8], ctx: &StringIoContext, regs: Regs, mut ram: Ram, budget: u64) -> Run {
    let insn = decode_string_io(bytes, ctx.mode).expect("decodes");
    let mut regs = regs;
    let mut port = Port::default();
    let (outcome, done) = execute_string_io(&insn, ctx, &mut regs, &mut ram, &mut port, budget);
    Run {
        outcome,
        done,
        regs,
        ram,
        port,
    }
}

fn regs(rcx: u64, rsi: u64, rdi: u64, rflags: u64) -> Regs {
    let mut r = Regs {
        rflags: rflags | 2,
        ..Regs::default()
    };
    r.r[RCX] = rcx;
    r.r[RSI] = rsi;
    r.r[RDI] = rdi;
    r
}

fn pf(error_code: u32, linear: u64) -> StringIoOutcome {
    StringIoOutcome::Exception(Exception::PageFault { error_code, linear })
}

// ---------------------------------------------------------------------------------------------
// The table

struct Case {
    name: &'static str,
    bytes: &'static [u8],
    mode: Mode,
    /// rcx, rsi, rdi, rflags
    before: (u64, u64, u64, u64),
    budget: u64,
    outcome: StringIoOutcome,
    done: u64,
    after: (u64, u64, u64),
}

#[test]
fn register_results() {
    use StringIoOutcome::{Done, Yield};
    const GP: StringIoOutcome = StringIoOutcome::Exception(Exception::GeneralProtection);
    let l = Mode::Long64;
    let p = Mode::Protected32;
    let r = Mode::Real16;
    let cases = [
        Case {
            name: "insb",
            bytes: &[0x6c],
            mode: l,
            before: (7, 0, 0x1000, 0),
            budget: 100,
            outcome: Done,
            done: 1,
            after: (7, 0, 0x1001),
        },
        Case {
            name: "insw",
            bytes: &[0x66, 0x6d],
            mode: l,
            before: (7, 0, 0x1000, 0),
            budget: 100,
            outcome: Done,
            done: 1,
            after: (7, 0, 0x1002),
        },
        Case {
            name: "insd",
            bytes: &[0x6d],
            mode: l,
            before: (7, 0, 0x1000, 0),
            budget: 100,
            outcome: Done,
            done: 1,
            after: (7, 0, 0x1004),
        },
        Case {
            name: "outsd DF",
            bytes: &[0x6f],
            mode: l,
            before: (7, 0x1000, 0, DF),
            budget: 100,
            outcome: Done,
            done: 1,
            after: (7, 0xffc, 0),
        },
        Case {
            name: "rep insb",
            bytes: &[0xf3, 0x6c],
            mode: l,
            before: (5, 0, 0x1000, 0),
            budget: 100,
            outcome: Done,
            done: 5,
            after: (0, 0, 0x1005),
        },
        Case {
            name: "rep insw DF",
            bytes: &[0x66, 0xf3, 0x6d],
            mode: l,
            before: (5, 0, 0x1000, DF),
            budget: 100,
            outcome: Done,
            done: 5,
            after: (0, 0, 0x1000 - 10),
        },
        Case {
            name: "rep outsd",
            bytes: &[0xf3, 0x6f],
            mode: l,
            before: (3, 0x2000, 9, 0),
            budget: 100,
            outcome: Done,
            done: 3,
            after: (0, 0x200c, 9),
        },
        Case {
            name: "rep rcx=0",
            bytes: &[0xf3, 0x6c],
            mode: l,
            before: (0, 0, 0x1000, 0),
            budget: 100,
            outcome: Done,
            done: 0,
            after: (0, 0, 0x1000),
        },
        Case {
            name: "rep, only ecx counts with a32",
            bytes: &[0x67, 0xf3, 0x6c],
            mode: l,
            before: (0x5_0000_0000, 0, 0x1000, 0),
            budget: 100,
            outcome: Done,
            done: 0,
            after: (0x5_0000_0000, 0, 0x1000),
        },
        Case {
            name: "a32 clears the upper halves",
            bytes: &[0x67, 0xf3, 0x6c],
            mode: l,
            before: (0x9_0000_0002, 0, 0x7_0000_1000, 0),
            budget: 100,
            outcome: Done,
            done: 2,
            after: (0, 0, 0x1002),
        },
        Case {
            name: "a32 wrap, then fault at 4 GiB - 1",
            bytes: &[0x67, 0xf3, 0x6c],
            mode: l,
            before: (3, 0, 1, DF),
            budget: 100,
            outcome: pf(2, 0xffff_ffff),
            done: 2,
            after: (1, 0, 0xffff_ffff),
        },
        Case {
            name: "budget",
            bytes: &[0xf3, 0x6c],
            mode: l,
            before: (10, 0, 0x1000, 0),
            budget: 4,
            outcome: Yield,
            done: 4,
            after: (6, 0, 0x1004),
        },
        Case {
            name: "budget exactly",
            bytes: &[0xf3, 0x6c],
            mode: l,
            before: (4, 0, 0x1000, 0),
            budget: 4,
            outcome: Done,
            done: 4,
            after: (0, 0, 0x1004),
        },
        Case {
            name: "no rep ignores rcx",
            bytes: &[0x6e],
            mode: l,
            before: (0, 0x1000, 0, 0),
            budget: 100,
            outcome: Done,
            done: 1,
            after: (0, 0x1001, 0),
        },
        Case {
            name: "fault half way",
            bytes: &[0xf3, 0x6c],
            mode: l,
            before: (100, 0, HOLE - 3, 0),
            budget: 1000,
            outcome: pf(2, HOLE),
            done: 3,
            after: (97, 0, HOLE),
        },
        Case {
            name: "insd across into the hole",
            bytes: &[0xf3, 0x6d],
            mode: l,
            before: (100, 0, HOLE - 6, 0),
            budget: 1000,
            outcome: pf(2, HOLE),
            done: 1,
            after: (99, 0, HOLE - 2),
        },
        Case {
            name: "outs DF out of the hole",
            bytes: &[0xf3, 0x6e],
            mode: l,
            before: (100, HOLE + 0x1001, 0, DF),
            budget: 1000,
            outcome: pf(0, HOLE + 0xfff),
            done: 2,
            after: (98, HOLE + 0xfff, 0),
        },
        Case {
            name: "ins to read-only, CPL 0, WP",
            bytes: &[0xf3, 0x6c],
            mode: l,
            before: (2, 0, READ_ONLY, 0),
            budget: 9,
            outcome: pf(3, READ_ONLY),
            done: 0,
            after: (2, 0, READ_ONLY),
        },
        Case {
            name: "outs from read-only",
            bytes: &[0xf3, 0x6e],
            mode: l,
            before: (2, READ_ONLY, 0, 0),
            budget: 9,
            outcome: Done,
            done: 2,
            after: (0, READ_ONLY + 2, 0),
        },
        Case {
            name: "reserved bit",
            bytes: &[0x6e],
            mode: l,
            before: (0, RESERVED, 0, 0),
            budget: 9,
            outcome: pf(9, RESERVED),
            done: 0,
            after: (0, RESERVED, 0),
        },
        Case {
            name: "non-canonical",
            bytes: &[0x6c],
            mode: l,
            before: (0, 0, 0x8000_0000_0000, 0),
            budget: 9,
            outcome: GP,
            done: 0,
            after: (0, 0, 0x8000_0000_0000),
        },
        Case {
            name: "dword crossing into non-canonical",
            bytes: &[0x6d],
            mode: l,
            before: (0, 0, 0x7fff_ffff_fffe, 0),
            budget: 9,
            outcome: GP,
            done: 0,
            after: (0, 0, 0x7fff_ffff_fffe),
        },
        Case {
            name: "32-bit",
            bytes: &[0xf3, 0x6d],
            mode: p,
            before: (2, 0, 0xffff_fff8, 0),
            budget: 9,
            outcome: Done,
            done: 2,
            after: (0, 0, 0),
        },
        Case {
            name: "32-bit a16 wraps di, keeps the rest",
            bytes: &[0x67, 0xf3, 0x6c],
            mode: p,
            before: (0x1234_0002, 0, 0xabcd_0000, DF),
            budget: 9,
            outcome: Done,
            done: 2,
            after: (0x1234_0000, 0, 0xabcd_fffe),
        },
        Case {
            name: "real mode",
            bytes: &[0xf3, 0x6c],
            mode: r,
            before: (3, 0, 0xfffd, 0),
            budget: 9,
            outcome: Done,
            done: 3,
            after: (0, 0, 0),
        },
        Case {
            name: "real mode word at 0xffff: #GP",
            bytes: &[0xf3, 0x6d],
            mode: r,
            before: (3, 0, 0xfffd, 0),
            budget: 9,
            outcome: GP,
            done: 1,
            after: (2, 0, 0xffff),
        },
        Case {
            name: "real mode a32 beyond the limit",
            bytes: &[0x67, 0x6c],
            mode: r,
            before: (0, 0, 0x1_0000, 0),
            budget: 9,
            outcome: GP,
            done: 0,
            after: (0, 0, 0x1_0000),
        },
    ];
    for c in &cases {
        let (ram, paging) = long_mode_ram();
        let ctx = match c.mode {
            Mode::Long64 => ctx64(paging),
            // A base that makes linear addresses wrap at 4 GiB back into RAM.
            Mode::Protected32 => StringIoContext {
                mode: c.mode,
                protected: true,
                segment: SegmentState {
                    base: 0x1000,
                    ..flat(u32::MAX)
                },
                paging: PagingMode::default(),
                cpl: 0,
                port: 0x80,
            },
            Mode::Real16 => StringIoContext {
                mode: c.mode,
                protected: false,
                segment: SegmentState {
                    base: 0x1_0000,
                    limit: 0xffff,
                    attributes: 0x93,
                    usable: true,
                },
                paging: PagingMode::default(),
                cpl: 0,
                port: 0x80,
            },
        };
        let (rcx, rsi, rdi, rflags) = c.before;
        let out = run(c.bytes, &ctx, regs(rcx, rsi, rdi, rflags), ram, c.budget);
        assert_eq!(out.outcome, c.outcome, "{}", c.name);
        assert_eq!(out.done, c.done, "{}", c.name);
        assert_eq!(
            (out.regs.r[RCX], out.regs.r[RSI], out.regs.r[RDI]),
            c.after,
            "{}: rcx, rsi, rdi",
            c.name
        );
        let is_in = c.bytes.iter().any(|&b| b == 0x6c || b == 0x6d);
        if is_in {
            assert!(out.port.writes.is_empty(), "{}", c.name);
            assert_eq!(
                out.port.reads, c.done,
                "{}: a faulting INS reads no port",
                c.name
            );
        } else {
            assert_eq!(out.port.writes.len() as u64, c.done, "{}", c.name);
        }
        let untouched = out
            .regs
            .r
            .iter()
            .enumerate()
            .all(|(i, &v)| [RCX, RSI, RDI].contains(&i) || v == 0);
        assert!(untouched, "{}: other registers changed", c.name);
        assert_eq!(out.regs.rflags, rflags | 2, "{}: flags changed", c.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Data and rights

#[test]
fn ins_and_outs_move_the_data() {
    let (ram, paging) = long_mode_ram();
    // rep insw, DF = 0, straddling the 2 MiB/4 KiB boundary at 0x20_0000.
    let out = run(
        &[0x66, 0xf3, 0x6d],
        &ctx64(paging),
        regs(3, 0, 0x1f_fffe, 0),
        ram,
        100,
    );
    assert_eq!(out.outcome, StringIoOutcome::Done);
    let got: Vec<u8> = (0..6).map(|i| out.ram.byte(0x1f_fffe + i)).collect();
    assert_eq!(got, [0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
    // rep outsd, DF = 1, from 0x20_0008 down: elements at 8, 4, 0.
    let mut ram = out.ram;
    for i in 0..12u64 {
        ram.poke(0x20_0000 + i, 0xa0 + i as u8);
    }
    let out = run(
        &[0xf3, 0x6f],
        &ctx64(paging),
        regs(3, 0x20_0008, 0, DF),
        ram,
        100,
    );
    assert_eq!(out.outcome, StringIoOutcome::Done);
    assert_eq!(
        out.port.writes,
        [
            (0x80, 4, 0xabaa_a9a8),
            (0x80, 4, 0xa7a6_a5a4),
            (0x80, 4, 0xa3a2_a1a0)
        ]
    );
    assert_eq!(out.regs.r[RSI], 0x20_0008 - 12);
    // An insd across a page boundary writes both pages.
    let out = run(
        &[0x6d],
        &ctx64(paging),
        regs(0, 0, 0x20_0ffe, 0),
        out.ram,
        100,
    );
    assert_eq!(out.outcome, StringIoOutcome::Done);
    let got: Vec<u8> = (0..4).map(|i| out.ram.byte(0x20_0ffe + i)).collect();
    assert_eq!(got, [0x11, 0x12, 0x13, 0x14]);
}

#[test]
fn segment_override_base_in_64_bit_mode() {
    let (mut ram, paging) = long_mode_ram();
    ram.poke(0x50_0010, 0x5a);
    let mut ctx = ctx64(paging);
    ctx.segment.base = 0x50_0000;
    // fs outsb uses FS.base; a DS (or ES) base is ignored in 64-bit mode.
    let out = run(&[0x64, 0x6e], &ctx, regs(0, 0x10, 0, 0), ram, 9);
    assert_eq!(out.port.writes, [(0x80, 1, 0x5a)]);
    let out = run(&[0x3e, 0x6e], &ctx, regs(0, 0x10, 0, 0), out.ram, 9);
    assert_eq!(out.port.writes, [(0x80, 1, 0)]);
}

#[test]
fn segments_outside_64_bit_mode() {
    let mut ram = Ram::new(16 << 20);
    ram.poke(0x12_3456, 0x77);
    let mut ctx = StringIoContext {
        mode: Mode::Protected32,
        protected: true,
        segment: SegmentState {
            base: 0x12_0000,
            limit: 0x3456,
            attributes: 0x93,
            usable: true,
        },
        paging: PagingMode::default(),
        cpl: 0,
        port: 0x80,
    };
    let out = run(&[0x2e, 0x6e], &ctx, regs(0, 0x3456, 0, 0), ram, 9);
    assert_eq!(out.port.writes, [(0x80, 1, 0x77)]);
    // One past the limit: #GP, or #SS through SS.
    let out = run(&[0x6e], &ctx, regs(0, 0x3457, 0, 0), out.ram, 9);
    assert_eq!(
        out.outcome,
        StringIoOutcome::Exception(Exception::GeneralProtection)
    );
    let out = run(&[0x36, 0x6e], &ctx, regs(0, 0x3457, 0, 0), out.ram, 9);
    assert_eq!(
        out.outcome,
        StringIoOutcome::Exception(Exception::StackFault)
    );
    // INS into a read-only data segment or a code segment; OUTS from execute-only code.
    for (attributes, bytes, ok) in [
        (0x91u16, &[0x6c][..], false),
        (0x9b, &[0x6c][..], false),
        (0x99, &[0x2e, 0x6e][..], false),
        (0x9b, &[0x2e, 0x6e][..], true),
    ] {
        ctx.segment.attributes = attributes;
        let out = run(bytes, &ctx, regs(0, 0, 0, 0), Ram::new(16 << 20), 9);
        assert_eq!(
            out.outcome == StringIoOutcome::Done,
            ok,
            "{attributes:#x} {bytes:02x?}"
        );
    }
    // Expand-down, 16-bit: valid offsets are limit + 1 ..= 0xffff.
    ctx.segment.attributes = 0x97;
    ctx.segment.limit = 0x0fff;
    for (offset, ok) in [
        (0x0fff, false),
        (0x1000, true),
        (0xffff, true),
        (0x1_0000, false),
    ] {
        let out = run(&[0x6c], &ctx, regs(0, 0, offset, 0), Ram::new(16 << 20), 9);
        assert_eq!(
            out.outcome == StringIoOutcome::Done,
            ok,
            "expand-down {offset:#x}"
        );
    }
    // A null selector.
    ctx.segment = SegmentState::default();
    let out = run(&[0x6c], &ctx, regs(0, 0, 0, 0), Ram::new(1 << 20), 9);
    assert_eq!(
        out.outcome,
        StringIoOutcome::Exception(Exception::GeneralProtection)
    );
}

#[test]
fn access_rights() {
    let (ram, paging) = long_mode_ram();
    let mut ctx = ctx64(paging);
    // CR0.WP = 0: a supervisor INS may write a read-only page.
    ctx.paging.cr0 &= !CR0_WP;
    let out = run(&[0x6c], &ctx, regs(0, 0, READ_ONLY, 0), ram, 9);
    assert_eq!(out.outcome, StringIoOutcome::Done);
    assert_eq!(out.ram.byte(READ_ONLY), 0x11);
    // CPL 3: read-only faults whatever WP says, supervisor pages fault for reads too.
    ctx.cpl = 3;
    let out = run(&[0x6c], &ctx, regs(0, 0, READ_ONLY, 0), out.ram, 9);
    assert_eq!(out.outcome, pf(7, READ_ONLY));
    let out = run(&[0x6e], &ctx, regs(0, SUPERVISOR + 5, 0, 0), out.ram, 9);
    assert_eq!(out.outcome, pf(5, SUPERVISOR + 5));
    let out = run(&[0x6e], &ctx, regs(0, HOLE + 5, 0, 0), out.ram, 9);
    assert_eq!(out.outcome, pf(4, HOLE + 5));
    // CPL 0 reaches supervisor pages; SMAP keeps it off user pages unless RFLAGS.AC.
    ctx.cpl = 0;
    let out = run(&[0x6e], &ctx, regs(0, SUPERVISOR, 0, 0), out.ram, 9);
    assert_eq!(out.outcome, StringIoOutcome::Done);
    ctx.paging.cr4 |= CR4_SMAP;
    let out = run(&[0x6c], &ctx, regs(0, 0, 0x1000, 0), out.ram, 9);
    assert_eq!(out.outcome, pf(3, 0x1000));
    let out = run(&[0x6c], &ctx, regs(0, 0, 0x1000, crate::AC), out.ram, 9);
    assert_eq!(out.outcome, StringIoOutcome::Done);
    let out = run(&[0x6c], &ctx, regs(0, 0, SUPERVISOR, 0), out.ram, 9);
    assert_eq!(out.outcome, StringIoOutcome::Done);
}

#[test]
fn rights_in_32_bit_and_pae_paging() {
    use crate::{CR4_PSE, RIGHT_EXEC, RIGHT_USER, RIGHT_WRITE, translate_with_rights};
    const RWU: u64 = RIGHT_WRITE | RIGHT_USER;
    // No XD bit on the way (32-bit paging has none): fetches allowed.
    const X: u64 = RIGHT_EXEC;
    // 32-bit paging: PD at 0x1000; PD[0] -> PT at 0x2000 (user, writable); PT[5] read-only user,
    // PT[6] writable supervisor; PD[1] a 4 MiB supervisor page.
    let mut ram = Ram::new(16 << 20);
    let put32 = |ram: &mut Ram, a: u64, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            ram.poke(a + i as u64, *b);
        }
    };
    put32(&mut ram, 0x1000, 0x2000 | 7);
    put32(&mut ram, 0x1004, 0x40_0000 | 0x83);
    put32(&mut ram, 0x2000 + 5 * 4, 0x5000 | 5);
    put32(&mut ram, 0x2000 + 6 * 4, 0x6000 | 3);
    put32(&mut ram, 0x2000 + 7 * 4, 0x7000 | 7);
    let bits32 = PagingMode {
        cr0: CR0_PG | 1,
        cr3: 0x1000,
        cr4: CR4_PSE,
        efer: 0,
    };
    for (linear, want) in [
        (0x5123, (0x5123, RIGHT_USER | X)),
        (0x6123, (0x6123, RIGHT_WRITE | X)),
        (0x7123, (0x7123, RWU | X)),
        (0x41_2345, (0x41_2345, RIGHT_WRITE | X)),
    ] {
        assert_eq!(
            translate_with_rights(&ram, &bits32, linear),
            Ok(want),
            "{linear:#x}"
        );
    }
    // PAE: PDPT at 0x8000 (PDPTE 0 present, no rights bits), PD at 0x9000: PD[0] -> PT at 0xa000
    // (user, writable), PD[1] a 2 MiB user read-only page; PT[5] supervisor read-only.
    ram.set64(0x8000, 0x9000 | P);
    ram.set64(0x9000, 0xa000 | P | RW | US);
    ram.set64(0x9008, 0x20_0000 | P | US | PS);
    ram.set64(0xa000 + 5 * 8, 0x5000 | P);
    ram.set64(0xa000 + 7 * 8, 0x7000 | P | RW | US);
    let pae = PagingMode {
        cr0: CR0_PG | 1,
        cr3: 0x8000,
        cr4: CR4_PAE,
        efer: 0,
    };
    for (linear, want) in [
        (0x5123, (0x5123, X)),
        (0x7123, (0x7123, RWU | X)),
        (0x21_2345, (0x21_2345, RIGHT_USER | X)),
    ] {
        assert_eq!(
            translate_with_rights(&ram, &pae, linear),
            Ok(want),
            "{linear:#x}"
        );
    }
}

#[test]
fn not_ram_and_ending_writes() {
    let (ram, paging) = long_mode_ram();
    let out = run(
        &[0xf3, 0x6c],
        &ctx64(paging),
        regs(5, 0, DEVICE - 2, 0),
        ram,
        9,
    );
    assert_eq!(
        out.outcome,
        StringIoOutcome::NotRam {
            linear: DEVICE,
            gpa: 0xfee0_0000
        }
    );
    assert_eq!((out.done, out.regs.r[RCX], out.regs.r[RDI]), (2, 3, DEVICE));
    assert_eq!(
        out.port.reads, 2,
        "no port read for the element that is not RAM"
    );
    // A write that ends the guest stops the REP right after it.
    let insn = decode_string_io(&[0xf3, 0x6e], Mode::Long64).unwrap();
    let mut ram = out.ram;
    for (i, b) in [1u8, 2, 0xee, 4].iter().enumerate() {
        ram.poke(0x1000 + i as u64, *b);
    }
    let mut port = Port {
        stop_value: Some(0xee),
        ..Port::default()
    };
    let mut r = regs(4, 0x1000, 0, 0);
    let (outcome, done) = execute_string_io(&insn, &ctx64(paging), &mut r, &mut ram, &mut port, 9);
    assert_eq!((outcome, done), (StringIoOutcome::Ended, 3));
    assert_eq!((r.r[RCX], r.r[RSI]), (1, 0x1003));
}

#[test]
fn budget_resumes_where_it_left() {
    let (mut ram, paging) = long_mode_ram();
    let ctx = ctx64(paging);
    let insn = decode_string_io(&[0xf3, 0x6c], Mode::Long64).unwrap();
    let mut r = regs(1000, 0, 0x10_0000, 0);
    let mut port = Port::default();
    let mut calls = 0;
    loop {
        calls += 1;
        let (outcome, done) = execute_string_io(&insn, &ctx, &mut r, &mut ram, &mut port, 64);
        assert!(done <= 64);
        match outcome {
            StringIoOutcome::Yield => {}
            StringIoOutcome::Done => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(calls, 16);
    assert_eq!((r.r[RCX], r.r[RDI]), (0, 0x10_0000 + 1000));
    for i in 0..1000u64 {
        assert_eq!(u32::from(ram.byte(0x10_0000 + i)), (0x11 + i as u32) & 0xff);
    }
}

#[test]
fn a_write_that_ends_the_guest_on_the_last_element() {
    let (mut ram, paging) = long_mode_ram();
    ram.poke(0x1000, 0xee);
    let insn = decode_string_io(&[0xf3, 0x6e], Mode::Long64).unwrap();
    let mut port = Port {
        stop_value: Some(0xee),
        ..Port::default()
    };
    let mut r = regs(1, 0x1000, 0, 0);
    let (outcome, done) = execute_string_io(&insn, &ctx64(paging), &mut r, &mut ram, &mut port, 9);
    assert_eq!(
        (outcome, done, r.r[RCX], r.r[RSI]),
        (StringIoOutcome::Ended, 1, 0, 0x1001)
    );
}

#[test]
fn a_busy_port_stops_the_rep_before_the_element_it_refused() {
    let (mut ram, paging) = long_mode_ram();
    for i in 0..8 {
        ram.poke(0x1000 + i, 0x40 + i as u8);
    }
    let insn = decode_string_io(&[0xf3, 0x6e], Mode::Long64).unwrap();
    let mut port = Port {
        room: Some(3),
        ..Port::default()
    };
    let mut r = regs(8, 0x1000, 0, 0);
    let (outcome, done) = execute_string_io(&insn, &ctx64(paging), &mut r, &mut ram, &mut port, 64);
    // Three bytes went out; RCX and RSI say so, and the instruction runs again from the fourth.
    assert_eq!(
        (outcome, done, r.r[RCX], r.r[RSI]),
        (StringIoOutcome::Yield, 3, 5, 0x1003)
    );
    port.room = None;
    let (outcome, done) = execute_string_io(&insn, &ctx64(paging), &mut r, &mut ram, &mut port, 64);
    assert_eq!(
        (outcome, done, r.r[RCX], r.r[RSI]),
        (StringIoOutcome::Done, 5, 0, 0x1008)
    );
    let sent: Vec<u32> = port.writes.iter().map(|w| w.2).collect();
    assert_eq!(sent, (0x40..0x48).collect::<Vec<u32>>());
    // A single OUTS refused: nothing done, nothing moved.
    let single = decode_string_io(&[0x6e], Mode::Long64).unwrap();
    let mut full = Port {
        room: Some(0),
        ..Port::default()
    };
    let mut r = regs(0, 0x1000, 0, 0);
    let (outcome, done) =
        execute_string_io(&single, &ctx64(paging), &mut r, &mut ram, &mut full, 64);
    assert_eq!(
        (outcome, done, r.r[RSI]),
        (StringIoOutcome::Yield, 0, 0x1000)
    );
}

/// The end of [`to_the_end`]: the last outcome, the registers, the port's writes and reads, the
/// calls made.
type End = (StringIoOutcome, Regs, Vec<(u16, u8, u32)>, u64, u64);

/// Runs `insn` to its end, `budget` elements per call.
fn to_the_end(
    insn: &StringIo,
    ctx: &StringIoContext,
    mut r: Regs,
    ram: &mut Ram,
    budget: u64,
) -> End {
    let mut port = Port::default();
    let mut calls = 0;
    loop {
        calls += 1;
        let (outcome, _) = execute_string_io(insn, ctx, &mut r, ram, &mut port, budget);
        if outcome != StringIoOutcome::Yield {
            return (outcome, r, port.writes, port.reads, calls);
        }
    }
}

#[test]
fn runs_match_one_element_at_a_time() {
    // The same instruction done with a large budget (runs of up to 256 bytes) and with a budget
    // of 1 (one element per call): same registers, memory, port traffic and outcome.
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let (base, paging) = long_mode_ram();
    let ctx = ctx64(paging);
    let forms: [&[u8]; 8] = [
        &[0xf3, 0x6c],
        &[0x66, 0xf3, 0x6d],
        &[0xf3, 0x6d],
        &[0xf3, 0x6e],
        &[0x66, 0xf3, 0x6f],
        &[0xf3, 0x6f],
        &[0x67, 0xf3, 0x6d],
        &[0x67, 0xf3, 0x6f],
    ];
    for round in 0..160 {
        let bytes = forms[round % forms.len()];
        let insn = decode_string_io(bytes, Mode::Long64).unwrap();
        let near = [HOLE, READ_ONLY, 0x20_0000, 0x10_0000, 0x1_0000_0000, DEVICE];
        let pointer = near[rng.below(near.len() as u64) as usize] + rng.below(0x3000) - 0x1800;
        let r = regs(
            rng.below(1500),
            pointer,
            pointer,
            if rng.below(2) == 0 { DF } else { 0 },
        );
        let mut a = Ram::new(base.limit);
        let mut b = Ram::new(base.limit);
        for (page, data) in &base.pages {
            a.pages.insert(*page, data.clone());
            b.pages.insert(*page, data.clone());
        }
        for k in 0..0x4000u64 {
            let byte = rng.next() as u8;
            a.poke(0x1f_e000 + k, byte);
            b.poke(0x1f_e000 + k, byte);
        }
        let big = to_the_end(&insn, &ctx, r, &mut a, 100_000);
        let one = to_the_end(&insn, &ctx, r, &mut b, 1);
        assert_eq!(big.0, one.0, "{bytes:02x?} at {pointer:#x}");
        assert_eq!(big.1.r, one.1.r, "{bytes:02x?} at {pointer:#x}");
        assert_eq!(
            (&big.2, big.3),
            (&one.2, one.3),
            "{bytes:02x?} at {pointer:#x}"
        );
        assert!(
            a.pages
                .iter()
                .all(|(p, d)| b.pages.get(p).is_some_and(|e| e == d))
        );
        assert!(big.4 <= one.4);
    }
}

// ---------------------------------------------------------------------------------------------
// Random

#[test]
fn random_never_panics() {
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    let interesting = [
        0x66u8, 0x67, 0xf3, 0xf2, 0x64, 0x65, 0x26, 0x2e, 0x36, 0x3e, 0x48, 0x6c, 0x6d, 0x6e, 0x6f,
    ];
    let (base_ram, paging) = long_mode_ram();
    let mut ram = base_ram;
    let (mut elements, mut faults) = (0u64, 0u64);
    for _ in 0..20_000 {
        let mode = [Mode::Long64, Mode::Protected32, Mode::Real16][rng.below(3) as usize];
        let n = 1 + rng.below(6) as usize;
        let mut bytes: Vec<u8> = (0..n)
            .map(|_| interesting[rng.below(interesting.len() as u64) as usize])
            .collect();
        *bytes.last_mut().unwrap() = 0x6c + rng.below(4) as u8;
        let Ok(insn) = decode_string_io(&bytes, mode) else {
            continue;
        };
        assert!(usize::from(insn.length) <= bytes.len());
        let pick = |rng: &mut Rng| match rng.below(4) {
            0 => rng.next(),
            1 => rng.below(0x100_0000),
            2 => HOLE - rng.below(16),
            _ => 0xffff_ffff - rng.below(8),
        };
        let mut r = regs(
            rng.below(40),
            pick(&mut rng),
            pick(&mut rng),
            rng.next() & (DF | crate::AC),
        );
        let ctx = StringIoContext {
            mode,
            protected: rng.below(2) == 0,
            segment: SegmentState {
                base: rng.next() & 0xffff_ffff,
                limit: rng.next() as u32,
                attributes: rng.next() as u16,
                usable: rng.below(8) != 0,
            },
            paging: if mode == Mode::Long64 || rng.below(2) == 0 {
                PagingMode {
                    cr0: paging.cr0 & !(rng.next() & CR0_WP),
                    cr4: paging.cr4 | (rng.next() & CR4_SMAP),
                    ..paging
                }
            } else {
                PagingMode::default()
            },
            cpl: rng.below(4) as u8,
            port: rng.next() as u16,
        };
        let before = r;
        let mut port = Port::default();
        let budget = rng.below(50);
        let (outcome, done) = execute_string_io(&insn, &ctx, &mut r, &mut ram, &mut port, budget);
        assert!(done <= budget.max(1), "{bytes:02x?}");
        elements += done;
        faults += u64::from(matches!(outcome, StringIoOutcome::Exception(_)));
        if !insn.rep {
            assert!(done <= 1);
            assert_eq!(r.r[RCX], before.r[RCX]);
        }
        if matches!(outcome, StringIoOutcome::Yield) {
            assert!(insn.rep && done == budget.max(1));
        }
        if insn.is_in {
            assert_eq!(r.r[RSI], before.r[RSI]);
        } else {
            assert_eq!(r.r[RDI], before.r[RDI]);
        }
    }
    // The run exercised both paths.
    assert!(
        elements > 5_000 && faults > 1_000,
        "{elements} elements, {faults} faults"
    );
}
