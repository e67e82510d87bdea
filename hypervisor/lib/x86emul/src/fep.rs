//! The forced-emulation prefix (test-only `hvm_fep`, docs/x86emul.md "Forced emulation"):
//! `ud2; .ascii "xen"` before an instruction makes the hypervisor emulate that instruction when
//! the `#UD` of the `ud2` reaches it. The few instructions handled here are those Xen's test
//! suite forces through it and that can be done exactly; any other is `#UD`, as Xen answers for
//! an instruction its emulator cannot handle.

use crate::decode::Register;
use crate::emulate::{Cpu, write_register};
use crate::strio::{Exception, SegmentState};
use crate::walk::{GuestPhys, PAGE_SIZE, PagingMode, RIGHT_EXEC, RIGHT_USER, WalkError};
use crate::{CR0_PG, CR4_LA57, CR4_PAE, MAX_LENGTH, Mode, translate_with_rights};

/// The prefix: `ud2` (`0F 0B`) and the ASCII bytes `xen`.
pub const SIGNATURE: [u8; 5] = *b"\x0f\x0bxen";

/// `RFLAGS.TF` and `RFLAGS.RF`.
const TF: u64 = 1 << 8;
const RF: u64 = 1 << 16;
const GP: Exception = Exception::GeneralProtection;
const UD: Action = Action::Exception(Exception::InvalidOpcode);

/// How the processor delivers a software event; the values are VT-x's interruption types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoftKind {
    /// `INT n`: the gate's DPL is checked against the CPL.
    Interrupt = 4,
    /// `ICEBP` (`INT1`): no DPL check.
    Icebp = 5,
    /// `INT3`: the gate's DPL is checked.
    Exception = 6,
}

/// What the hypervisor does once `RIP` is where [`forced`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Nothing more: the registers are already updated.
    Done,
    /// Perform `CPUID` (by the domain's CPUID policy).
    Cpuid,
    /// Deliver the software event (kind, vector) of the instruction at `RIP` and its length: a
    /// trap, whose return address is past the instruction; a fault during delivery reports
    /// `RIP`.
    Event(SoftKind, u8, u8),
    /// Raise this exception (for `#PF`, `CR2` is its address).
    Exception(Exception),
}

/// Decodes and performs the instruction in `bytes` (fewer than needed when a fetch stopped):
/// how far `RIP` moves and the action, or `Err(i)` when byte `i` is needed but missing.
fn perform(bytes: &[u8], mode: Mode, cpu: &mut impl Cpu) -> Result<(u64, Action), usize> {
    if cpu.rflags() & TF != 0 {
        return Ok((0, UD)); // Single-stepping is not emulated (its #DB needs DR6).
    }
    let at = |i: usize| bytes.get(i).copied().ok_or(i);
    let (long, mut i, mut rex, mut lock) = (mode == Mode::Long64, 0, 0u8, false);
    let mut op16 = mode == Mode::Real16; // 66 selects the other operand size.
    let op = loop {
        let b = at(i)?;
        i += 1;
        match b {
            0x66 => op16 = mode != Mode::Real16,
            0xf0 => lock = true,
            0x40..=0x4f if long => {}
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x67 | 0xf2 | 0xf3 => {}
            _ => break b,
        }
        rex = if b >> 4 == 4 { b } else { 0 }; // A legacy prefix after REX voids it.
    };
    let size = if rex & 8 != 0 { 8 } else { 4 >> u8::from(op16) };
    let gpr = |n: u8, size: u8| {
        let high_byte = size == 1 && rex == 0 && (4..8).contains(&n);
        let number = if high_byte {
            n - 4
        } else {
            n | ((rex & 1) << 3)
        };
        Register {
            number,
            size,
            high_byte,
        }
    };
    let event = |kind, vector, len: usize| Ok((0, Action::Event(kind, vector, len as u8)));
    let (reg, imm) = match op {
        _ if lock => return Ok((0, UD)),
        0x90 if rex & 1 == 0 => return Ok((i as u64, Action::Done)),
        0xb0..=0xb7 => (gpr(op & 7, 1), 1),
        0xb8..=0xbf => (gpr(op & 7, size), size),
        0x0f if at(i)? == 0xa2 => return Ok((i as u64 + 1, Action::Cpuid)),
        0xcc => return event(SoftKind::Exception, 3, i),
        // Not in virtual-8086 mode, where INT n checks IOPL.
        0xcd if cpu.rflags() & (1 << 17) == 0 => return event(SoftKind::Interrupt, at(i)?, i + 1),
        0xf1 => return event(SoftKind::Icebp, 1, i),
        0xce if !long && cpu.rflags() & (1 << 11) != 0 => return event(SoftKind::Exception, 4, i),
        0xce if !long => return Ok((i as u64, Action::Done)),
        _ => return Ok((0, UD)),
    };
    let end = i + usize::from(imm);
    let mut value = [0u8; 8];
    value[..usize::from(imm)].copy_from_slice(bytes.get(i..end).ok_or(bytes.len())?);
    write_register(cpu, reg, u64::from_le_bytes(value));
    Ok((end as u64, Action::Done))
}

/// Handles the `#UD` of a vCPU in `mode` at `cpl` with paging registers `p` and code segment
/// `cs` (its base and limit apply outside 64-bit mode, where addresses wrap at 4 GiB), at `rip`:
/// `None` when the bytes there are not the [`SIGNATURE`] (or cannot be fetched: the `#UD` is the
/// guest's own, to be delivered unchanged); else the instruction after it performed on `cpu`
/// (`RFLAGS.RF` cleared, as Xen does), the new `RIP` and the action. `MOV r, imm` (`B0`–`BF`),
/// `NOP` (`90`), `CPUID` (the caller's) and `INT3`, `INT n`, `ICEBP` (events) are performed;
/// `INTO` outside 64-bit mode; anything else is `#UD`. An instruction that would end with a non-canonical `RIP` (which a
/// VM entry may refuse) raises `#GP(0)` at `RIP` sign-extended instead, as Xen's fix for XSA-170
/// does.
///
/// The bytes are fetched as the processor's instruction fetch at `cpl` would (canonical check;
/// the walk with the `U/S`, `XD` and `SMEP` checks): a missing byte the instruction needs raises
/// the fetch's `#PF` or `#GP`, or `#UD` when it is not guest RAM.
pub fn forced<M: GuestPhys + ?Sized>(
    mem: &M,
    p: &PagingMode,
    (mode, cs, cpl): (Mode, &SegmentState, u8),
    rip: u64,
    cpu: &mut impl Cpu,
) -> Option<(u64, Action)> {
    let (user, nx, long) = (cpl == 3, p.efer & (1 << 11) != 0, mode == Mode::Long64);
    let smep = p.cr4 & (1 << 20) != 0 && p.cr0 & CR0_PG != 0;
    let wrap = |a: u64| if long { a } else { a & 0xffff_ffff };
    // #PF error code: I/D where NXE or SMEP define it, U/S for CPL 3.
    let code = (u32::from((nx && p.cr4 & CR4_PAE != 0) || smep) << 4) | (u32::from(user) << 2);
    // The bytes read at `rip` and, if fewer than asked, the exception the next one raises.
    let fetch = |rip: u64, out: &mut [u8]| {
        let mut done = 0;
        while done < out.len() {
            let (eip, limit) = (wrap(rip.wrapping_add(done as u64)), u64::from(cs.limit));
            if !long && eip > limit {
                return (done, Some(GP));
            }
            let linear = if long {
                eip
            } else {
                wrap(cs.base.wrapping_add(eip))
            };
            let room = (PAGE_SIZE - (linear & (PAGE_SIZE - 1))).min((out.len() - done) as u64);
            let room = if long {
                room
            } else {
                room.min(limit - eip + 1)
            };
            let fault = |error_code| Some(Exception::PageFault { error_code, linear });
            let (gpa, rights) = match translate_with_rights(mem, p, linear) {
                Ok(t) => t,
                Err(WalkError::NotPresent { .. }) => return (done, fault(code)),
                Err(WalkError::Reserved { .. }) => return (done, fault(code | 0b1001)),
                Err(WalkError::NonCanonical { .. }) => return (done, Some(GP)),
                Err(_) => return (done, None),
            };
            if (user && rights & RIGHT_USER == 0)
                || (nx && rights & RIGHT_EXEC == 0)
                || (!user && smep && rights & RIGHT_USER != 0)
            {
                return (done, fault(code | 1));
            }
            let end = done + room as usize;
            if !mem.read_phys(gpa, &mut out[done..end]) {
                return (done, None);
            }
            done = end;
        }
        (done, None)
    };
    let mut sig = [0u8; 5];
    if fetch(rip, &mut sig) != (5, None) || sig != SIGNATURE {
        return None;
    }
    cpu.set_rflags(cpu.rflags() & !RF);
    let rip = wrap(rip.wrapping_add(5));
    let mut bytes = [0u8; MAX_LENGTH];
    let (n, stop) = fetch(rip, &mut bytes);
    let (len, action) = match perform(&bytes[..n], mode, cpu) {
        Ok(done) => done,
        Err(MAX_LENGTH..) => (0, Action::Exception(GP)),
        Err(_) => (0, stop.map_or(UD, Action::Exception)),
    };
    let (rip, gp) = (wrap(rip.wrapping_add(len)), Action::Exception(GP));
    let bits = 16 - 9 * ((p.cr4 & CR4_LA57) >> 12);
    let canonical = (((rip << bits) as i64) >> bits) as u64;
    Some((canonical, if canonical == rip { action } else { gp }))
}
