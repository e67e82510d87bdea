//! The forced-emulation prefix (test-only `hvm_fep`, docs/x86emul.md
//! "Forced emulation"): with it, a guest's #UD reaches Basalt (VT-x: bit 6
//! of the exception bitmap; SVM intercepts #UD anyway), and `ud2; .ascii
//! "xen"` at RIP makes Basalt emulate the instruction after it (`basalt_x86emul::forced`). Any other #UD is delivered unchanged.

use super::memory::GuestRam;
use super::mmio::{Phys, Regs, code_mode};
use super::strio::raise;
use crate::vcpu::{Event, FEP, Loaded};
use basalt_x86emul::{Action, Exception, Segment};
use core::sync::atomic::Ordering;

/// Turns the prefix on (before any domain runs), with the warning.
pub fn enable() {
    FEP.store(true, Ordering::Relaxed);
    log::warn!(
        "hvm_fep: the forced-emulation prefix is ON: every guest program can reach Basalt's \
         instruction emulator. It exists to test Basalt; NEVER use it in production."
    );
}

/// A #UD of vCPU `arch` (of the domain with RAM `ram`) intercepted.
pub fn invalid_opcode(arch: &mut Loaded<'_>, ram: &GuestRam) {
    let (paging, rip) = (arch.paging_state(), arch.rip());
    let at = (code_mode(arch), &arch.segment(Segment::Cs), arch.cpl());
    let on = FEP.load(Ordering::Relaxed);
    let forced = on.then(|| basalt_x86emul::forced(&Phys(ram), &paging, at, rip, &mut Regs(arch)));
    let Some((next, action)) = forced.flatten() else {
        return raise(arch, Exception::InvalidOpcode);
    };
    arch.skip_emulated(next.wrapping_sub(rip));
    match action {
        Action::Done => {}
        Action::Cpuid => arch.cpuid(),
        Action::Event(kind, vector, len) => _ = arch.inject(Event::Software(kind, vector, len)),
        Action::Exception(e) => raise(arch, e),
    }
}
