//! The string port I/O executor: performs a decoded `INS`/`OUTS` ([`StringIo`]) element by
//! element against the vCPU's registers ([`Cpu`]), the guest's memory ([`GuestRam`], reached
//! through its own page tables) and the port bus ([`Ports`]), exactly as the processor would
//! (SDM Vol. 2B, "INS/INSB/INSW/INSD", "OUTS/OUTSB/OUTSW/OUTSD", "REP/REPE/REPZ/REPNE/REPNZ").
//!
//! Per element: the offset is `rSI` (`OUTS`) or `rDI` (`INS`) of the address size; the segment
//! is checked (limit, type, usability; outside 64-bit mode) or the address made canonical (64-bit
//! mode), the linear address translated with the access rights checked (`R/W`, `U/S`, `CR0.WP`,
//! SMAP), then the port is read and memory written (`INS`) or memory read and the port written
//! (`OUTS`). The pointer moves by the element size, backwards with `RFLAGS.DF`; with `REP`,
//! `rCX` counts down and the instruction ends when it is 0 (at once if it was 0). Only the low
//! 16 or 32 bits of `rCX`/`rSI`/`rDI` are used with a 16- or 32-bit address size: a 16-bit
//! update keeps the rest of the register, a 32-bit update clears bits 63:32 (as every 32-bit
//! register write does).
//!
//! A fault leaves the registers as the last completed element left them; the instruction is
//! not finished, so `RIP` stays at it and the guest re-executes it from there once its handler
//! returns, as on hardware. The memory access is checked *before* the port is touched, so an
//! `INS` that faults has read nothing from the device.

use crate::decode::{Mode, Segment, StringIo, size_mask};
use crate::emulate::Cpu;
use crate::walk::{
    GuestPhys, PAGE_SIZE, Paging, PagingMode, RIGHT_USER, RIGHT_WRITE, WalkError,
    translate_with_rights,
};

/// The guest's RAM: [`GuestPhys`] for reads, and writes.
pub trait GuestRam: GuestPhys {
    /// Writes `bytes` at guest-physical `gpa`. Returns `false` (and writes nothing) when any of
    /// those bytes is not guest RAM (a hole, a device page, beyond the end).
    fn write_phys(&mut self, gpa: u64, bytes: &[u8]) -> bool;
}

/// The port bus.
pub trait Ports {
    /// Reads `size` bytes (1, 2 or 4) from `port`; bits above `size` are ignored.
    fn read(&mut self, port: u16, size: u8) -> u32;
    /// Writes the low `size` bytes of `value` to `port`, or says why it did not complete.
    fn write(&mut self, port: u16, size: u8, value: u32) -> PortWrite;
}

/// What a port write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortWrite {
    /// The device took the value.
    Done,
    /// The device took the value and the write ends the guest (a power-off or reset register):
    /// the executor stops right after it ([`StringIoOutcome::Ended`]).
    Ended,
    /// The device cannot take the value now (a console whose output is full): the element is
    /// not done, and the executor stops before it ([`StringIoOutcome::Yield`]), so the
    /// instruction runs again from that element.
    Busy,
}

/// A segment register's hidden part (SDM Vol. 3A §3.4.3, "Segment Registers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SegmentState {
    /// The base address.
    pub base: u64,
    /// The limit, in bytes (granularity already applied).
    pub limit: u32,
    /// The descriptor's attributes in the layout of bits 8–23 of its high doubleword
    /// (SDM Vol. 3A §3.4.5): type in bits 3:0, `S` in 4, `DPL` in 6:5, `P` in 7, `D/B` in 14.
    pub attributes: u16,
    /// Whether the register holds a usable segment (a null selector loaded in protected mode
    /// is not).
    pub usable: bool,
}

/// `CR0.WP` (bit 16): supervisor writes honour read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// `CR4.SMAP` (bit 21): supervisor accesses to user pages fault unless `RFLAGS.AC`.
pub const CR4_SMAP: u64 = 1 << 21;
/// `RFLAGS.DF` (bit 10): string instructions step backwards.
pub const DF: u64 = 1 << 10;
/// `RFLAGS.AC` (bit 18): alignment check, and SMAP override.
pub const AC: u64 = 1 << 18;

/// What the instruction runs in, besides its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StringIoContext {
    /// The code size ([`Mode::Long64`] is 64-bit mode: no segment limits, canonical addresses).
    pub mode: Mode,
    /// Protected mode (`CR0.PE = 1`, `RFLAGS.VM = 0`): segment types are checked. In real and
    /// virtual-8086 mode only limits are.
    pub protected: bool,
    /// The memory operand's segment ([`StringIo::segment`]). In 64-bit mode only the base of
    /// `FS` and `GS` is used, and nothing else of any segment.
    pub segment: SegmentState,
    /// The guest's `CR0`, `CR3`, `CR4` and `IA32_EFER` (paging, `CR0.WP`, `CR4.SMAP`,
    /// `CR4.LA57`).
    pub paging: PagingMode,
    /// The current privilege level (3: user-mode accesses).
    pub cpl: u8,
    /// The port (`DX`).
    pub port: u16,
}

/// An exception the instruction raises; the caller injects it (and for a page fault sets `CR2`
/// to [`Exception::PageFault::linear`] first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exception {
    /// `#PF` (vector 14).
    PageFault {
        /// The error code (SDM Vol. 3A §4.7): bit 0 P (a protection violation, not a
        /// non-present page), 1 W/R, 2 U/S (CPL 3), 3 RSVD.
        error_code: u32,
        /// The faulting linear address, for `CR2`.
        linear: u64,
    },
    /// `#GP(0)` (vector 13): segment limit or type, non-canonical address.
    GeneralProtection,
    /// `#SS(0)` (vector 12): as `#GP`, for an operand in the `SS` segment.
    StackFault,
    /// `#UD` (vector 6, no error code): an invalid instruction, or one the emulator does not
    /// perform ([`crate::forced`]).
    InvalidOpcode,
}

impl Exception {
    /// The vector and error code to inject.
    #[must_use]
    pub const fn vector_and_code(self) -> (u8, Option<u32>) {
        match self {
            Self::PageFault { error_code, .. } => (14, Some(error_code)),
            Self::GeneralProtection => (13, Some(0)),
            Self::StackFault => (12, Some(0)),
            Self::InvalidOpcode => (6, None),
        }
    }
}

/// Page-fault error code bits (SDM Vol. 3A §4.7).
const PF_P: u32 = 1 << 0;
const PF_W: u32 = 1 << 1;
const PF_U: u32 = 1 << 2;
const PF_RSVD: u32 = 1 << 3;

/// How a call to [`execute_string_io`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StringIoOutcome {
    /// The instruction is complete: advance `RIP` by [`StringIo::length`].
    Done,
    /// The budget ran out with elements left, or the port was busy ([`PortWrite::Busy`]):
    /// re-enter the guest with `RIP` unchanged (it re-executes the instruction and exits again;
    /// pending interrupts are taken in between, as hardware allows between iterations of a
    /// `REP` string instruction).
    Yield,
    /// Inject this exception, `RIP` unchanged.
    Exception(Exception),
    /// A port write ended the guest ([`Ports::write`] returned [`PortWrite::Ended`]).
    Ended,
    /// The memory operand is not guest RAM (a device page, a hole, beyond the end): the
    /// hypervisor does not emulate that; `linear` translated to `gpa`.
    NotRam {
        /// The linear address.
        linear: u64,
        /// Its guest-physical address.
        gpa: u64,
    },
    /// The guest's page tables could not be read ([`WalkError::TableOutsideMemory`]).
    Tables(WalkError),
}

/// General-purpose register numbers.
const RCX: u8 = 1;
const RSI: u8 = 6;
const RDI: u8 = 7;

/// Writes the low `address_size` bytes of register `n` the way a string instruction updates
/// it: 16 bits keep the rest, 32 bits zero-extend, 64 bits replace.
fn set_address_register(cpu: &mut impl Cpu, n: u8, address_size: u8, value: u64) {
    let old = cpu.reg(n);
    let new = match address_size {
        2 => (old & !0xffff) | (value & 0xffff),
        4 => value & 0xffff_ffff,
        _ => value,
    };
    cpu.set_reg(n, new);
}

/// One translated piece of an element: its guest-physical address and length.
#[derive(Clone, Copy, Default)]
struct Piece {
    gpa: u64,
    len: usize,
}

/// The translation of the last page touched (valid for this instruction only: the processor
/// may keep a translation in its TLB just as long).
struct Tlb {
    linear_page: u64,
    gpa_page: u64,
    valid: bool,
}

/// Why an element cannot be performed.
enum Stop {
    Exception(Exception),
    Tables(WalkError),
}

struct Translator<'a, M: GuestPhys + ?Sized> {
    mem: &'a M,
    ctx: &'a StringIoContext,
    write: bool,
    rflags: u64,
    tlb: Tlb,
}

impl<M: GuestPhys + ?Sized> Translator<'_, M> {
    /// The guest-physical address of the page of `linear` (page-aligned `linear`), with the
    /// access rights checked.
    fn page(&mut self, linear_page: u64, linear: u64) -> Result<u64, Stop> {
        if self.tlb.valid && self.tlb.linear_page == linear_page {
            return Ok(self.tlb.gpa_page);
        }
        let ctx = self.ctx;
        let user = ctx.cpl == 3;
        let mut code = if self.write { PF_W } else { 0 };
        if user {
            code |= PF_U;
        }
        let fault = |error_code| {
            Stop::Exception(Exception::PageFault {
                error_code,
                linear: ctx.paging.truncate(linear),
            })
        };
        let (gpa, rights) = match translate_with_rights(self.mem, &ctx.paging, linear) {
            Ok(t) => t,
            Err(WalkError::NotPresent { .. }) => return Err(fault(code)),
            Err(WalkError::Reserved { .. }) => return Err(fault(code | PF_P | PF_RSVD)),
            Err(WalkError::NonCanonical { .. }) => {
                return Err(Stop::Exception(Exception::GeneralProtection));
            }
            Err(e) => return Err(Stop::Tables(e)),
        };
        if ctx.paging.paging() != Paging::Off {
            let denied = (user && rights & RIGHT_USER == 0)
                || (self.write
                    && rights & RIGHT_WRITE == 0
                    && (user || ctx.paging.cr0 & CR0_WP != 0))
                || (!user
                    && rights & RIGHT_USER != 0
                    && ctx.paging.cr4 & CR4_SMAP != 0
                    && self.rflags & AC == 0);
            if denied {
                return Err(fault(code | PF_P));
            }
        }
        let gpa_page = gpa & !(PAGE_SIZE - 1);
        self.tlb = Tlb {
            linear_page,
            gpa_page,
            valid: true,
        };
        Ok(gpa_page)
    }

    /// Translates the `size` bytes at `linear` (already truncated outside 64-bit mode): one
    /// piece, or two when the element crosses a page boundary (the second page is translated on
    /// its own; a fault there reports that page's first byte).
    fn element(&mut self, linear: u64, size: u8) -> Result<[Piece; 2], Stop> {
        let mut pieces = [Piece::default(); 2];
        let in_page = (PAGE_SIZE - (linear & (PAGE_SIZE - 1))) as usize;
        let first = usize::from(size).min(in_page);
        let page = linear & !(PAGE_SIZE - 1);
        pieces[0] = Piece {
            gpa: self.page(page, linear)? | (linear & (PAGE_SIZE - 1)),
            len: first,
        };
        if first < usize::from(size) {
            let mut next = linear.wrapping_add(first as u64);
            if self.ctx.mode != Mode::Long64 {
                next &= 0xffff_ffff;
            }
            pieces[1] = Piece {
                gpa: self.page(next, next)?,
                len: usize::from(size) - first,
            };
        }
        Ok(pieces)
    }
}

/// The linear address of the element at `offset`, with the segment (outside 64-bit mode) or
/// canonical (64-bit mode) checks of SDM Vol. 3A §5.3 and §3.3.7.1.
fn linear_address(ctx: &StringIoContext, insn: &StringIo, offset: u64) -> Result<u64, Exception> {
    let fault = if insn.segment == Segment::Ss {
        Exception::StackFault
    } else {
        Exception::GeneralProtection
    };
    let last = u64::from(insn.size) - 1;
    let seg = &ctx.segment;
    if ctx.mode == Mode::Long64 {
        let base = match insn.segment {
            Segment::Fs | Segment::Gs => seg.base,
            _ => 0,
        };
        let linear = base.wrapping_add(offset);
        let unused = if ctx.paging.cr4 & crate::walk::CR4_LA57 != 0 {
            7
        } else {
            16
        };
        let canonical = |a: u64| (((a << unused) as i64) >> unused) as u64 == a;
        if !canonical(linear) || !canonical(linear.wrapping_add(last)) {
            return Err(fault);
        }
        return Ok(linear);
    }
    if !seg.usable {
        return Err(fault);
    }
    let ty = seg.attributes & 0xf;
    let code = ty & 0b1000 != 0;
    if ctx.protected {
        // INS writes: a writable data segment. OUTS reads: data, or readable code.
        let allowed = if insn.is_in {
            !code && ty & 0b0010 != 0
        } else {
            !code || ty & 0b0010 != 0
        };
        if !allowed {
            return Err(fault);
        }
    }
    let end = offset + last;
    let limit = u64::from(seg.limit);
    let inside = if !code && ty & 0b0100 != 0 {
        // Expand-down: offsets above the limit, up to 64 KiB or 4 GiB by D/B.
        let top = if seg.attributes & (1 << 14) != 0 {
            0xffff_ffff
        } else {
            0xffff
        };
        offset > limit && end <= top
    } else {
        end <= limit
    };
    if !inside {
        return Err(fault);
    }
    Ok(seg.base.wrapping_add(offset) & 0xffff_ffff)
}

/// The most bytes one run moves between RAM and the ports with one RAM access (see
/// [`execute_string_io`]).
const RUN_BYTES: usize = 256;

/// How many elements, from the one at `offset` (linear `linear`), can be done as one run: the
/// same page, no address-size wrap, at most `max` and [`RUN_BYTES`]. 0 when the element at
/// `offset` itself crosses a page boundary.
fn run_length(offset: u64, linear: u64, size: u64, amask: u64, down: bool, max: u64) -> u64 {
    let in_page = linear & (PAGE_SIZE - 1);
    let (page_room, wrap_room) = if down {
        (
            if in_page + size <= PAGE_SIZE {
                in_page / size + 1
            } else {
                0
            },
            offset / size + 1,
        )
    } else {
        (
            (PAGE_SIZE - in_page) / size,
            ((amask - offset) / size).saturating_add(1),
        )
    };
    page_room
        .min(wrap_room)
        .min(max)
        .min(RUN_BYTES as u64 / size)
}

/// Performs string port I/O instruction `insn` (decoded by [`crate::decode_string_io`]) on
/// `cpu`, the guest's memory `mem` and the port bus `ports`, at most `budget` elements (at
/// least one is attempted). Returns how it ended and how many elements were completed.
///
/// The registers (`rCX`, `rSI`, `rDI`) are updated after each completed element, so whatever
/// the outcome they are what the processor would hold after that element. `RIP` is the
/// caller's: it advances by [`StringIo::length`] only on [`StringIoOutcome::Done`].
///
/// Elements that lie in one page, in order, are done as a *run*: the segment and paging checks
/// of the first and last element cover them all (both are intervals), RAM is read (`OUTS`) or
/// written (`INS`) once for the run, the ports are accessed element by element in order. What
/// the guest and its devices see is the same as one element at a time.
pub fn execute_string_io(
    insn: &StringIo,
    ctx: &StringIoContext,
    cpu: &mut impl Cpu,
    mem: &mut impl GuestRam,
    ports: &mut impl Ports,
    budget: u64,
) -> (StringIoOutcome, u64) {
    let amask = size_mask(insn.address_size);
    let pointer = if insn.is_in { RDI } else { RSI };
    let size = insn.size;
    let width = u64::from(size);
    let rflags = cpu.rflags();
    let down = rflags & DF != 0;
    let budget = budget.max(1);
    let mut done = 0u64;
    let mut tlb = Tlb {
        linear_page: 0,
        gpa_page: 0,
        valid: false,
    };
    loop {
        let remaining = if insn.rep {
            let count = cpu.reg(RCX) & amask;
            if count == 0 {
                return (StringIoOutcome::Done, done);
            }
            if done >= budget {
                return (StringIoOutcome::Yield, done);
            }
            count
        } else {
            1
        };
        let offset = cpu.reg(pointer) & amask;
        let linear = match linear_address(ctx, insn, offset) {
            Ok(l) => l,
            Err(e) => return (StringIoOutcome::Exception(e), done),
        };
        let mut n = run_length(
            offset,
            linear,
            width,
            amask,
            down,
            remaining.min(budget - done),
        );
        if n > 1 {
            let last = if down {
                offset - (n - 1) * width
            } else {
                offset + (n - 1) * width
            };
            if linear_address(ctx, insn, last).is_err() {
                // The element that fails is reached one at a time.
                n = 1;
            }
        }
        let mut t = Translator {
            mem: &*mem,
            ctx,
            write: insn.is_in,
            rflags,
            tlb,
        };
        let pieces = if n == 0 {
            t.element(linear, size)
        } else {
            // The run's lowest byte and its length, in one page.
            let low = if down {
                linear - (n - 1) * width
            } else {
                linear
            };
            t.page(linear & !(PAGE_SIZE - 1), linear).map(|page| {
                [
                    Piece {
                        gpa: page | (low & (PAGE_SIZE - 1)),
                        len: (n * width) as usize,
                    },
                    Piece::default(),
                ]
            })
        };
        tlb = t.tlb;
        let pieces = match pieces {
            Ok(p) => p,
            Err(Stop::Exception(e)) => return (StringIoOutcome::Exception(e), done),
            Err(Stop::Tables(e)) => return (StringIoOutcome::Tables(e), done),
        };
        // A run is all RAM or none of it (RAM is made of whole pages): it names the first
        // element.
        let run = n > 0;
        let n = n.max(1);
        let first_gpa = (pieces[0].gpa & !(PAGE_SIZE - 1)) | (linear & (PAGE_SIZE - 1));
        let not_ram = |p: &Piece| StringIoOutcome::NotRam {
            linear,
            gpa: if run { first_gpa } else { p.gpa },
        };
        // The memory is checked to be RAM before any port is touched.
        let mut bytes = [0u8; RUN_BYTES];
        let mut at = 0;
        for p in pieces.iter().filter(|p| p.len > 0) {
            if !mem.read_phys(p.gpa, &mut bytes[at..at + p.len]) {
                return (not_ram(p), done);
            }
            at += p.len;
        }
        let total = at;
        // Element k of the run is at byte (k * size) of the run, or counting from the end when
        // going down.
        let index = |k: u64| {
            let e = if down { n - 1 - k } else { k };
            (e * width) as usize
        };
        let mut completed = n;
        let mut ended = false;
        let mut busy = false;
        if insn.is_in {
            for k in 0..n {
                let value = ports.read(ctx.port, size).to_le_bytes();
                let i = index(k);
                bytes[i..i + usize::from(size)].copy_from_slice(&value[..usize::from(size)]);
            }
            let mut at = 0;
            for p in pieces.iter().filter(|p| p.len > 0) {
                if !mem.write_phys(p.gpa, &bytes[at..at + p.len]) {
                    return (not_ram(p), done);
                }
                at += p.len;
            }
        } else {
            for k in 0..n {
                let i = index(k);
                let mut value = [0u8; 4];
                value[..usize::from(size)].copy_from_slice(&bytes[i..i + usize::from(size)]);
                match ports.write(ctx.port, size, u32::from_le_bytes(value)) {
                    PortWrite::Done => {}
                    PortWrite::Ended => {
                        completed = k + 1;
                        ended = true;
                        break;
                    }
                    PortWrite::Busy => {
                        completed = k;
                        busy = true;
                        break;
                    }
                }
            }
        }
        debug_assert_eq!(total, (n * width) as usize);
        let moved = completed * width;
        let next = if down {
            offset.wrapping_sub(moved)
        } else {
            offset.wrapping_add(moved)
        };
        set_address_register(cpu, pointer, insn.address_size, next);
        if insn.rep {
            set_address_register(cpu, RCX, insn.address_size, remaining - completed);
        }
        done += completed;
        if ended {
            return (StringIoOutcome::Ended, done);
        }
        if busy {
            return (StringIoOutcome::Yield, done);
        }
        if !insn.rep {
            return (StringIoOutcome::Done, done);
        }
    }
}
