//! Exit dispatch (docs/architecture.md, "Layers"): what each neutral
//! [`VcpuExit`] of a running vCPU does. Port I/O goes to the domain's
//! platform (`hvm::vdev`), string I/O and device-page accesses to the
//! emulators (`hvm::strio`, `hvm::mmio`), platform MSRs to its APICs
//! (`hvm::vapic`), VMCALL to [`hypercall`]; the answer ([`Next`]) tells the
//! scheduler's run loop what to do with the vCPU. What a handler asks of the
//! scheduler (ending the domain, the `VCPUOP`s) goes through [`SchedOps`],
//! a parameter the scheduler passes in: this module does not name it.

use super::domain::{EndReason, Running};
use super::hypercall::{self, After, SchedOps};
use crate::hvm::vdev::IoEffect;
use crate::hvm::{mmio, strio, vapic, vdev};
use crate::vcpu::{Event, GuestError, VcpuExit, gpr};

pub mod ioreq;
use core::fmt::Write as _;

/// What the run loop does after an exit.
pub enum Next {
    /// Run the same vCPU again.
    Continue,
    /// An interrupt arrived (timer, tickle, console): look around.
    Interrupted,
    /// The slice ended.
    Preempted,
    /// The guest yielded.
    Yield,
    /// The guest blocked.
    Block,
    /// The vCPU went down.
    Down,
    /// The domain ended.
    Ended,
}

pub fn handle(v: &mut Running<'_>, exit: VcpuExit, ops: &impl SchedOps) -> Next {
    match exit {
        VcpuExit::Hypercall => match hypercall::dispatch(v, ops) {
            After::Continue => Next::Continue,
            After::Yield => Next::Yield,
            After::Block => Next::Block,
            After::Down => Next::Down,
            After::Again(wait) => {
                if wait {
                    Next::Yield
                } else {
                    Next::Continue
                }
            }
            After::Ended(reason) => {
                let domain = v.domain.clone();
                ops.end_domain(&domain, reason);
                Next::Ended
            }
        },
        VcpuExit::InvalidOpcode => {
            crate::hvm::fep::invalid_opcode(&mut v.arch, &v.domain.ram);
            Next::Continue
        }
        VcpuExit::IoOut { port, size, value } => {
            log::trace!("d{}: out{size} {port:#x} <- {value:#x}", v.domain.id);
            if let Some(next) = ioreq::port(v, port, size, Some(value)) {
                return next;
            }
            let effect = vdev::io_out(&v.domain.platform, port, size, value);
            if effect == IoEffect::Retry {
                // The console is full: the OUT runs again after a yield.
                return Next::Yield;
            }
            v.arch.skip_instruction();
            io_effect(v, effect, ops)
        }
        VcpuExit::StringIo {
            port,
            size,
            is_in,
            rep,
        } => {
            // Held as for MMIO below (the work per exit as before the split).
            let domain = v.domain.clone();
            if domain
                .platform
                .ioreq
                .claims(basalt_xen::ioreq::RANGE_PORT, port.into(), 1)
            {
                let detail = alloc::format!(
                    "string I/O to port {port:#x}, which its device model emulates, is not \
                     forwarded"
                );
                crash(v, &detail, ops);
                return Next::Ended;
            }
            match strio::emulate(
                &mut v.arch,
                &domain.ram,
                &domain.platform,
                port,
                size,
                is_in,
                rep,
            ) {
                Ok(effect) => io_effect(v, effect, ops),
                Err(e) => {
                    let detail = alloc::format!("{e}");
                    crash(v, &detail, ops);
                    Next::Ended
                }
            }
        }
        VcpuExit::IoIn { port, size } => {
            log::trace!("d{}: in{size} {port:#x}", v.domain.id);
            if let Some(next) = ioreq::port(v, port, size, None) {
                return next;
            }
            let value = vdev::io_in(&v.domain.platform, port, size);
            complete_in(v, size, value);
            Next::Continue
        }
        VcpuExit::Mmio { gpa } => {
            // The domain is held by a reference of its own for the
            // emulation, as before the split: the emulators only borrow the
            // RAM and the platform, but the work per exit on this path is
            // kept as it was (bochs-guest-apic's periodic timer, whose
            // EOIs are MMIO writes, is sensitive to it: docs/vmx.md).
            let domain = v.domain.clone();
            if let Err(e) = mmio::emulate(&mut v.arch, &domain.ram, &domain.platform, v.index, gpa)
            {
                let detail = alloc::format!("{e}");
                crash(v, &detail, ops);
                return Next::Ended;
            }
            Next::Continue
        }
        VcpuExit::RdMsr { msr } => {
            match vapic::rdmsr(&v.domain.platform, v.index, msr) {
                Some(value) => {
                    v.arch.set_reg(gpr::RAX, value & 0xffff_ffff);
                    v.arch.set_reg(gpr::RDX, value >> 32);
                    v.arch.skip_instruction();
                }
                None => inject_gp(v),
            }
            Next::Continue
        }
        VcpuExit::WrMsr { msr, value } if msr == basalt_xen::HYPERCALL_PAGE_MSR => {
            if hypercall_page(v, value) {
                v.arch.skip_instruction();
            } else {
                inject_gp(v);
            }
            Next::Continue
        }
        VcpuExit::WrMsr { msr, value } => {
            if vapic::wrmsr(&v.domain.platform, v.index, msr, value) {
                v.arch.skip_instruction();
            } else {
                inject_gp(v);
            }
            Next::Continue
        }
        VcpuExit::Halt => Next::Block,
        VcpuExit::Preempted => Next::Preempted,
        VcpuExit::Interrupted => Next::Interrupted,
        // The pending interrupt is injected before the next entry.
        VcpuExit::InterruptWindow => Next::Continue,
        // The control domain reads all ones where it has neither RAM nor a
        // device, as Xen's PVH dom0 does (XTF probes the HPET Basalt keeps);
        // any other domain is stopped (docs/control-domain.md).
        VcpuExit::Error(GuestError::OutsideMemory {
            gpa, fetch: false, ..
        }) if v.domain.xen.as_ref().is_some_and(|x| x.control) => {
            let domain = v.domain.clone();
            if crate::hvm::passthrough::map_absent(&domain.ram, gpa) {
                return Next::Continue;
            }
            if let Err(e) = mmio::emulate_absent(&mut v.arch, &domain.ram, gpa) {
                let detail = alloc::format!("{e}");
                crash(v, &detail, ops);
                return Next::Ended;
            }
            Next::Continue
        }
        VcpuExit::Error(GuestError::OutsideMemory {
            gpa, fetch: false, ..
        }) if ioreq::claims_memory(v, gpa) => ioreq::memory(v, gpa, None, ops),
        VcpuExit::Error(e) => {
            let detail = alloc::format!("{e}");
            crash(v, &detail, ops);
            Next::Ended
        }
    }
}

/// Carries out what a port write asked for: an ACPI soft off or reset ends
/// the domain; a full console (the domain that has it) makes the vCPU yield
/// and run the instruction again.
fn io_effect(v: &Running<'_>, effect: IoEffect, ops: &impl SchedOps) -> Next {
    let reason = match effect {
        IoEffect::None => return Next::Continue,
        // The console of the domain that has it is full: the instruction
        // runs again after a yield.
        IoEffect::Retry => return Next::Yield,
        IoEffect::Unmap(start, end) => {
            (start..end)
                .step_by(4096)
                .for_each(|p| _ = v.domain.ram.unmap_extra(p));
            ops.after_flush(alloc::boxed::Box::new(|| ()));
            return Next::Continue;
        }
        IoEffect::PowerOff => EndReason::Poweroff,
        IoEffect::Reset => EndReason::Reboot,
    };
    log::info!(
        "d{}: ACPI {}",
        v.domain.id,
        if reason == EndReason::Poweroff {
            "soft off (S5)"
        } else {
            "reset register"
        }
    );
    let domain = v.domain.clone();
    ops.end_domain(&domain, reason);
    Next::Ended
}

/// A write of Xen's hypercall-page MSR (a domain with Xen's interface):
/// the page at guest-physical `value` (bits 11:0 select the page: only 0
/// exists) is filled with the hypercall stubs, using the instruction of
/// this machine's backend. Anything else is refused (#GP).
fn hypercall_page(v: &Running<'_>, value: u64) -> bool {
    if v.domain.xen.is_none() || value & 0xfff != 0 {
        return false;
    }
    let insn = if crate::arch::x86_64::hvm::stage2_is_npt() {
        basalt_xen::CallInsn::Vmmcall
    } else {
        basalt_xen::CallInsn::Vmcall
    };
    let page = basalt_xen::hypercall_page(insn);
    v.domain.ram.write(value, &page).is_ok()
}

/// Injects #GP(0) (an MSR access the platform refuses).
fn inject_gp(v: &mut Running<'_>) {
    v.arch.inject(Event::Exception {
        vector: 13,
        error_code: Some(0),
    });
}

/// Ends the running vCPU's domain for a guest error, with a diagnostic line
/// and the vendor's view of the vCPU (VT-x: the VMCS).
pub fn crash(v: &Running<'_>, reason: &str, ops: &impl SchedOps) {
    let d = v.domain.clone();
    // One unit: no other domain's line comes between the lines of the dump.
    let mut out = crate::console::Report::new();
    let _ = writeln!(
        out,
        "domain d{} ({}) vCPU{}: {reason} at RIP {:#x}; the domain is stopped",
        d.id,
        d.name,
        v.index,
        v.arch.rip()
    );
    v.arch.dump(&mut out);
    out.emit();
    ops.end_domain(&d, EndReason::Crash);
}

/// Completes an `IN` of `size` bytes with `value`: 8 or 16 bits keep the rest of RAX, 32 bits
/// zero its upper half.
fn complete_in(v: &mut Running<'_>, size: u8, value: u32) {
    let mask = u64::from(vdev::size_mask(size));
    let rax = v.arch.reg(gpr::RAX);
    let rax = if size == 4 {
        u64::from(value)
    } else {
        (rax & !mask) | (u64::from(value) & mask)
    };
    v.arch.set_reg(gpr::RAX, rax);
    v.arch.skip_instruction();
}
