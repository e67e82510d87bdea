//! String port I/O (`INS`/`OUTS`, with or without `REP`; docs/x86emul.md,
//! "String port I/O"): the exit names the port, size and direction, but the
//! memory operand, its segment and address size are in the instruction, so
//! the instruction at RIP is fetched through the guest's page tables and
//! decoded (as [`crate::hvm::mmio`] does), then `basalt-x86emul`'s executor moves
//! the elements between the domain's port bus ([`crate::hvm::vdev`]) and its RAM.
//!
//! At most [`BUDGET`] elements are done per exit: a longer `REP` re-enters
//! the guest with RIP still at the instruction and the registers where the
//! last element left them (hardware allows this between iterations), so the
//! scheduler's slice and pending interrupts are honoured. A fault is
//! injected as the processor would raise it (`#PF` with CR2, `#GP(0)`,
//! `#SS(0)`); memory that is not the domain's RAM stops the domain.

use super::mmio::{Phys, Regs};
use super::platform::Platform;
use super::vdev::IoEffect;
use crate::vcpu::{Event, Loaded};
use basalt_x86emul::{
    DecodeError, Exception, GuestRam, PortWrite, Ports, StringIoContext, StringIoOutcome,
    WalkError, decode_string_io, execute_string_io,
};
use core::fmt;

/// Elements per exit. Under Bochs one element costs a few hundred
/// instructions of Basalt's, so this bounds the time one exit holds the CPU
/// to well under a scheduler slice; the extra exits cost little beside it.
pub const BUDGET: u64 = 1024;

/// Why a string I/O instruction could not be emulated: the domain stops.
#[derive(Debug)]
pub enum StringIoError {
    /// The instruction bytes could not be read.
    Fetch(WalkError),
    /// The bytes at RIP are not the INS/OUTS the exit reported (the guest
    /// rewrote its code under another vCPU without synchronising: undefined
    /// on hardware).
    Decode {
        /// What the decoder said, if it refused the bytes.
        error: Option<DecodeError>,
        /// The bytes fetched.
        bytes: [u8; 15],
        /// How many.
        len: usize,
    },
    /// The memory operand is not the domain's RAM.
    NotRam {
        /// INS (a write) rather than OUTS.
        is_in: bool,
        /// The linear address.
        linear: u64,
        /// Its guest-physical address.
        gpa: u64,
    },
    /// The guest's page tables are not in its RAM.
    Tables(WalkError),
}

impl fmt::Display for StringIoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fetch(e) => write!(
                f,
                "string port I/O: the instruction cannot be fetched ({e})"
            ),
            Self::Decode { error, bytes, len } => {
                f.write_str("string port I/O: the bytes at RIP are not the INS/OUTS that exited")?;
                if let Some(e) = error {
                    write!(f, " ({e})")?;
                }
                f.write_str("; bytes:")?;
                for b in &bytes[..*len] {
                    write!(f, " {b:02x}")?;
                }
                Ok(())
            }
            Self::NotRam { is_in, linear, gpa } => write!(
                f,
                "string port I/O ({}) at linear {linear:#x} = guest-physical {gpa:#x}, which is \
                 not the domain's RAM: string I/O to or from device memory or holes is not \
                 emulated",
                if *is_in { "INS" } else { "OUTS" }
            ),
            Self::Tables(e) => write!(f, "string port I/O: {e}"),
        }
    }
}

impl GuestRam for Phys<'_> {
    fn write_phys(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        self.0.write(gpa, bytes).is_ok()
    }
}

/// The domain's port bus; remembers a write that ends the domain.
struct Bus<'a> {
    platform: &'a Platform,
    effect: IoEffect,
}

impl Ports for Bus<'_> {
    fn read(&mut self, port: u16, size: u8) -> u32 {
        super::vdev::io_in(self.platform, port, size)
    }
    fn write(&mut self, port: u16, size: u8, value: u32) -> PortWrite {
        let effect = super::vdev::io_out(self.platform, port, size, value);
        if effect != IoEffect::None {
            self.effect = effect;
        }
        match effect {
            // An unmap is carried out after the instruction, which goes on.
            IoEffect::None | IoEffect::Unmap(..) => PortWrite::Done,
            // The console of the domain that has it is full: this element
            // waits (the instruction runs again after a yield).
            IoEffect::Retry => PortWrite::Busy,
            _ => PortWrite::Ended,
        }
    }
}

/// Injects the exception `e` an emulated instruction of `arch` raised (for
/// a page fault, with CR2 set to its address).
pub(crate) fn raise(arch: &mut Loaded<'_>, e: Exception) {
    if let Exception::PageFault { linear, .. } = e {
        arch.set_cr2(linear);
    }
    let (vector, error_code) = e.vector_and_code();
    arch.inject(Event::Exception { vector, error_code });
}

/// Emulates the INS/OUTS at the RIP of vCPU `arch` (of the domain with RAM `ram`
/// and devices `platform`), which exited for `port`, `size`
/// bytes, `is_in`, `rep` (the port and the processor's I/O permission checks,
/// IOPL and the TSS bitmap, come before the exit: SDM Vol. 3C 26.1.1). Returns the effect of the last port write (a
/// power-off or reset the caller must carry out), or why the domain stops.
pub fn emulate(
    arch: &mut Loaded<'_>,
    ram: &super::memory::GuestRam,
    platform: &Platform,
    port: u16,
    size: u8,
    is_in: bool,
    rep: bool,
) -> Result<IoEffect, StringIoError> {
    let super::mmio::AtRip {
        bytes,
        len,
        mode,
        paging,
    } = super::mmio::fetch_at_rip(arch, ram).map_err(StringIoError::Fetch)?;
    let bad = |error| StringIoError::Decode { error, bytes, len };
    let insn = decode_string_io(&bytes[..len], mode).map_err(|e| bad(Some(e)))?;
    // The REP bit of the exit is not compared: whether an F2 prefix counts
    // there is the processor's business; the decoded prefix is what runs.
    let _ = rep;
    if (insn.size, insn.is_in) != (size, is_in) {
        return Err(bad(None));
    }
    const RFLAGS_VM: u64 = 1 << 17;
    let ctx = StringIoContext {
        mode,
        protected: paging.cr0 & 1 != 0 && arch.rflags() & RFLAGS_VM == 0,
        segment: arch.segment(insn.segment),
        paging,
        cpl: arch.cpl(),
        port,
    };
    let mut bus = Bus {
        platform,
        effect: IoEffect::None,
    };
    let (outcome, done) = execute_string_io(
        &insn,
        &ctx,
        &mut Regs(arch),
        &mut Phys(ram),
        &mut bus,
        BUDGET,
    );
    match outcome {
        StringIoOutcome::Done => arch.skip_emulated(u64::from(insn.length)),
        // Elements were done: the instruction boundary STI or MOV SS
        // blocked interrupts for is behind (RIP stays).
        StringIoOutcome::Yield if done > 0 => arch.skip_emulated(0),
        StringIoOutcome::Yield | StringIoOutcome::Ended => {}
        StringIoOutcome::Exception(e) => raise(arch, e),
        StringIoOutcome::NotRam { linear, gpa } => {
            return Err(StringIoError::NotRam {
                is_in: insn.is_in,
                linear,
                gpa,
            });
        }
        StringIoOutcome::Tables(e) => return Err(StringIoError::Tables(e)),
    }
    Ok(bus.effect)
}
