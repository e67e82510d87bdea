#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Decoding and emulating the x86 instructions that touch emulated device memory (MMIO): pure
//! logic, testable on the host.
//!
//! When a guest driver reads or writes a page that belongs to an emulated device, EPT stops the
//! access (an EPT violation exit) and the hypervisor must do what the instruction would have
//! done. It fetches the instruction bytes at the guest's `RIP`, then:
//!
//! 1. [`decode`] turns them into an [`Instruction`]: length, [`Operation`], access size,
//!    register operand, immediate, sign/zero extension and the [`MemoryOperand`] (segment,
//!    base, index, scale, displacement) so the caller can check that the instruction really
//!    addresses the faulting page ([`MemoryOperand::offset`]).
//! 2. [`emulate`] performs it against the vCPU's registers ([`Cpu`]) and the device ([`Mmio`])
//!    and returns the `RIP` advance.
//!
//! String port I/O (`INS`/`OUTS`, with `REP`) has its own pair: [`decode_string_io`] and
//! [`execute_string_io`], which walks the guest's page tables for every element with the access
//! rights checked and reports the exception the processor would raise (docs/x86emul.md).
//!
//! The bytes themselves come from [`fetch`], which walks the guest's page tables ([`translate`],
//! every x86 paging mode: off, 32-bit, PAE, 4-level, 5-level) through the guest's physical
//! memory ([`GuestPhys`]) to read up to 15 bytes at `CS.base + RIP`, page by page.
//!
//! # What is decoded
//!
//! Memory-operand forms only (a register-only form cannot cause an MMIO exit):
//!
//! - `MOV r/m, r` (`88`, `89`), `MOV r, r/m` (`8A`, `8B`), `MOV r/m, imm` (`C6 /0`, `C7 /0`),
//!   `MOV` with a direct offset (`A0`–`A3`);
//! - `MOVZX` (`0F B6`, `0F B7`) and `MOVSX` (`0F BE`, `0F BF`);
//! - `ADD`, `OR`, `AND`, `SUB`, `XOR`, `CMP` in both directions (`00`–`03`, `08`–`0B`,
//!   `20`–`23`, `28`–`2B`, `30`–`33`, `38`–`3B`) and with an immediate (`80`, `81`, `83`
//!   `/0 /1 /4 /5 /6 /7`);
//! - `TEST r/m, r` (`84`, `85`) and `TEST r/m, imm` (`F6 /0`, `F7 /0`).
//! - `BT r/m, r` (`0F A3`) and `BT r/m, imm8` (`0F BA /4`): only `CF` changes.
//!
//! Prefixes: `66`, `67`, the segment overrides, REX (64-bit mode; voided by a later legacy
//! prefix, as on hardware), `LOCK` on the read-modify-write ALU forms. Everything else —
//! other opcodes, `ADC`/`SBB`, `REP`/`REPNE`, `LOCK` on `MOV`/`CMP`/`TEST`/loads, register
//! operands, more than 15 bytes — is a [`DecodeError`]; the hypervisor then stops the domain
//! with a dump rather than guess. docs/x86emul.md has the design.
//!
//! [`forced`] handles the test-only forced-emulation prefix (`hvm_fep`): after `ud2; .ascii
//! "xen"` it performs `NOP`, `MOV reg, imm`, `CPUID` or a software interrupt (`INT3`, `INT n`,
//! `INTO`, `ICEBP`), fetching with the access checks of a real instruction fetch.
//!
//! No input makes any function panic, and nothing needs `alloc`.

mod decode;
mod emulate;
mod fep;
mod strio;
mod walk;

pub use decode::{
    AluOp, Base, DecodeError, Extension, Instruction, MAX_LENGTH, MemoryOperand, Mode, Operation,
    Register, Segment, Source, StringIo, decode, decode_string_io, size_mask,
};
pub use emulate::{
    AF, ARITHMETIC_FLAGS, CF, Cpu, Mmio, OF, PF, SF, ZF, alu, emulate, read_register, sign_extend,
    write_register,
};
pub use fep::{Action, SIGNATURE, SoftKind, forced};
pub use strio::{
    AC, CR0_WP, CR4_SMAP, DF, Exception, GuestRam, PortWrite, Ports, SegmentState, StringIoContext,
    StringIoOutcome, execute_string_io,
};
pub use walk::{
    ADDRESS_MASK, CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA, GuestPhys, Level, PAGE_SIZE,
    Paging, PagingMode, RIGHT_EXEC, RIGHT_USER, RIGHT_WRITE, WalkError, fetch, translate,
    translate_with_rights,
};

#[cfg(test)]
mod tests;
