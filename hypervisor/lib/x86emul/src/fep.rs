//! The forced-emulation prefix (test-only `hvm_fep`, docs/x86emul.md "Forced emulation"):
//! `ud2; .ascii "xen"` before an instruction makes the hypervisor emulate that instruction when
//! the `#UD` of the `ud2` reaches it. The few instructions handled here are those Xen's test
//! suite forces through it and that can be done exactly; any other is `#UD`, as Xen answers for
//! an instruction its emulator cannot handle.

use crate::decode::{Mode, Register, size_mask};
use crate::emulate::{Cpu, OF, sign_extend, write_register};
use crate::strio::{Exception, SegmentState};
use crate::walk::{
    GuestPhys, PAGE_SIZE, Paging, PagingMode, RIGHT_EXEC, RIGHT_USER, WalkError,
    translate_with_rights,
};
use crate::{CR4_LA57, CR4_PAE, MAX_LENGTH};

/// The prefix: `ud2` (`0F 0B`) and the ASCII bytes `xen`.
pub const SIGNATURE: [u8; 5] = [0x0f, 0x0b, b'x', b'e', b'n'];

/// `RFLAGS.TF`, `RFLAGS.RF` and `RFLAGS.VM`.
const TF: u64 = 1 << 8;
const RF: u64 = 1 << 16;
const VM: u64 = 1 << 17;
/// `IA32_EFER.NXE` and `CR4.SMEP`.
const EFER_NXE: u64 = 1 << 11;
const CR4_SMEP: u64 = 1 << 20;

/// Where the vCPU stands when the `#UD` reaches the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FepContext {
    /// The code size.
    pub mode: Mode,
    /// `CR0`, `CR3`, `CR4` and `IA32_EFER`.
    pub paging: PagingMode,
    /// The current privilege level: 3 makes the fetches user-mode accesses.
    pub cpl: u8,
    /// `CS`: its base and limit apply outside 64-bit mode.
    pub cs: SegmentState,
    /// `RIP`, at the `ud2`.
    pub rip: u64,
}

/// How the processor delivers a software event: its VT-x interruption type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftKind {
    /// `INT n` (type 4): the gate's DPL is checked against the CPL.
    Interrupt,
    /// `ICEBP` (`INT1`, type 5): no DPL check.
    Icebp,
    /// `INT3`, `INTO` (type 6): the gate's DPL is checked.
    Exception,
}

/// What the hypervisor does after a forced instruction; `RIP` moves to [`Forced::rip`] first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Nothing more: the registers are already updated.
    Done,
    /// Deliver the software interrupt or exception `vector` of the `length`-byte instruction at
    /// `RIP` (a trap: the return address is past it; a fault during delivery reports `RIP`).
    Event {
        /// The vector.
        vector: u8,
        /// The interruption type.
        kind: SoftKind,
        /// The instruction's length.
        length: u8,
    },
    /// Raise this exception (for `#PF`, `CR2` is its address).
    Exception(Exception),
    /// Raise `#UD`: the instruction is invalid, or not one this emulator performs.
    Undefined,
}

/// The outcome of a forced emulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Forced {
    /// The new `RIP`.
    pub rip: u64,
    /// What to do there.
    pub action: Action,
}

/// Reads the code bytes at `CS:rip` into `out` as the processor's instruction fetch at the
/// context's CPL would (the `CS` limit outside 64-bit mode, the canonical check, the walk with
/// the `U/S`, `XD` and `SMEP` checks). Returns how many bytes were read and, if fewer than
/// `out.len()`, the exception fetching the next one raises (`None`: it is not guest RAM).
fn fetch_code<M: GuestPhys + ?Sized>(
    mem: &M,
    ctx: &FepContext,
    rip: u64,
    out: &mut [u8],
) -> (usize, Option<Exception>) {
    let (p, long) = (&ctx.paging, ctx.mode == Mode::Long64);
    let user = ctx.cpl == 3;
    let nx = p.efer & EFER_NXE != 0;
    let smep = p.cr4 & CR4_SMEP != 0;
    let id = if (nx && p.cr4 & CR4_PAE != 0) || smep { 1 << 4 } else { 0 };
    let code = id | if user { 1 << 2 } else { 0 };
    let mut done = 0;
    while done < out.len() {
        let offset = rip.wrapping_add(done as u64);
        let mut room = out.len() - done;
        let linear = if long {
            offset
        } else {
            let eip = offset & 0xffff_ffff;
            let Some(left) = u64::from(ctx.cs.limit).checked_sub(eip) else {
                return (done, Some(Exception::GeneralProtection));
            };
            room = room.min(usize::try_from(left + 1).unwrap_or(usize::MAX));
            ctx.cs.base.wrapping_add(eip)
        };
        let linear = p.truncate(linear);
        let room = room.min((PAGE_SIZE - (linear & (PAGE_SIZE - 1))) as usize);
        let fault = |c| Some(Exception::PageFault { error_code: c, linear });
        let (gpa, rights) = match translate_with_rights(mem, p, linear) {
            Ok(t) => t,
            Err(WalkError::NotPresent { .. }) => return (done, fault(code)),
            Err(WalkError::Reserved { .. }) => return (done, fault(code | 0b1001)),
            Err(WalkError::NonCanonical { .. }) => return (done, Some(Exception::GeneralProtection)),
            Err(_) => return (done, None),
        };
        let denied = (user && rights & RIGHT_USER == 0)
            || (nx && rights & RIGHT_EXEC == 0)
            || (!user && smep && rights & RIGHT_USER != 0);
        if p.paging() != Paging::Off && denied {
            return (done, fault(code | 1));
        }
        if !mem.read_phys(gpa, &mut out[done..done + room]) {
            return (done, None);
        }
        done += room;
    }
    (done, None)
}

/// The `size`-byte little-endian immediate at `bytes[at..]`, or the index of the first byte
/// missing.
fn immediate(bytes: &[u8], at: usize, size: u8) -> Result<u64, usize> {
    let end = at + usize::from(size);
    let b = bytes.get(at..end).ok_or(end.min(bytes.len()))?;
    Ok(b.iter().rev().fold(0, |v, &x| (v << 8) | u64::from(x)))
}

/// Decodes and performs the instruction in `bytes` (fewer than needed when a fetch stopped):
/// the action and the instruction's length, or `Err(i)` when byte `i` is needed but missing.
fn perform(bytes: &[u8], mode: Mode, cpu: &mut impl Cpu) -> Result<(Action, usize), usize> {
    let at = |i: usize| bytes.get(i).copied().ok_or(i);
    let long = mode == Mode::Long64;
    let (mut i, mut rex, mut op16, mut lock) = (0, 0u8, false, false);
    let op = loop {
        let b = at(i)?;
        i += 1;
        match b {
            0x40..=0x4f if long => {
                rex = b;
                continue;
            }
            0x66 => op16 = true,
            0xf0 => lock = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x67 | 0xf2 | 0xf3 => {}
            _ => break b,
        }
        rex = 0; // A legacy prefix after REX voids it.
    };
    let size = match (rex & 8 != 0, op16 ^ (mode == Mode::Real16)) {
        (true, _) => 8,
        (false, true) => 2,
        (false, false) => 4,
    };
    let gpr = |n: u8, size: u8| {
        let high_byte = size == 1 && rex == 0 && (4..8).contains(&n);
        let number = if high_byte { n - 4 } else { n | ((rex & 1) << 3) };
        Register { number, size, high_byte }
    };
    let event = |vector, kind, length: usize| {
        let length = length as u8;
        Ok((Action::Event { vector, kind, length }, usize::from(length)))
    };
    let (reg, imm_at, imm) = match op {
        _ if lock => return Ok((Action::Undefined, i)),
        0x90 if rex & 1 == 0 => return Ok((Action::Done, i)),
        0xb0..=0xb7 => (gpr(op & 7, 1), i, 1),
        0xb8..=0xbf => (gpr(op & 7, size), i, size),
        // MOV r/m, imm with a register operand: ModRM mod 3, reg 0.
        0xc6 | 0xc7 if at(i)? & 0xf8 == 0xc0 => {
            let size = if op == 0xc6 { 1 } else { size };
            (gpr(bytes[i] & 7, size), i + 1, size.min(4))
        }
        0xcc => return event(3, SoftKind::Exception, i),
        0xcd if cpu.rflags() & VM == 0 => return event(at(i)?, SoftKind::Interrupt, i + 1),
        0xce if !long && cpu.rflags() & OF != 0 => return event(4, SoftKind::Exception, i),
        0xce if !long => return Ok((Action::Done, i)),
        0xf1 => return event(1, SoftKind::Icebp, i),
        _ => return Ok((Action::Undefined, i)),
    };
    let value = sign_extend(immediate(bytes, imm_at, imm)?, imm);
    write_register(cpu, reg, value & size_mask(reg.size));
    Ok((Action::Done, imm_at + usize::from(imm)))
}

/// Handles the `#UD` of a vCPU in `ctx`: `None` when the bytes at `RIP` are not the
/// [`SIGNATURE`] (or cannot be read: the `#UD` is the guest's own, to be delivered unchanged);
/// else the instruction after it performed on `cpu` (`RFLAGS.RF` cleared, as Xen does) and the
/// outcome. Single-stepping (`RFLAGS.TF`) is not emulated: `#UD`. An instruction that would end
/// with a non-canonical `RIP` in 64-bit mode (which a VM entry may refuse) raises `#GP(0)` at
/// `RIP` sign-extended instead, as Xen's fix for XSA-170 does.
pub fn forced<M: GuestPhys + ?Sized>(
    mem: &M,
    ctx: &FepContext,
    cpu: &mut impl Cpu,
) -> Option<Forced> {
    let mut sig = [0u8; 5];
    if fetch_code(mem, ctx, ctx.rip, &mut sig) != (5, None) || sig != SIGNATURE {
        return None;
    }
    cpu.set_rflags(cpu.rflags() & !RF);
    let long = ctx.mode == Mode::Long64;
    let wrap = |rip: u64| if long { rip } else { rip & 0xffff_ffff };
    let rip = wrap(ctx.rip.wrapping_add(5));
    let mut bytes = [0u8; MAX_LENGTH];
    let (n, stop) = fetch_code(mem, ctx, rip, &mut bytes);
    let result = if cpu.rflags() & TF == 0 {
        perform(&bytes[..n], ctx.mode, cpu)
    } else {
        Ok((Action::Undefined, 0))
    };
    let (rip, action) = match result {
        Ok((Action::Done, len)) => (wrap(rip.wrapping_add(len as u64)), Action::Done),
        Ok((action, _)) => (rip, action),
        Err(MAX_LENGTH..) => (rip, Action::Exception(Exception::GeneralProtection)),
        Err(_) => (rip, stop.map_or(Action::Undefined, Action::Exception)),
    };
    let bits = if ctx.paging.cr4 & CR4_LA57 != 0 { 7 } else { 16 };
    let canonical = (((rip << bits) as i64) >> bits) as u64;
    if long && canonical != rip {
        let action = Action::Exception(Exception::GeneralProtection);
        return Some(Forced { rip: canonical, action });
    }
    Some(Forced { rip, action })
}
