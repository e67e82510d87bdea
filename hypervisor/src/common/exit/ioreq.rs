//! Forwarding a guest's accesses to its device model (docs/toolstack.md, "Devices: the ioreq
//! server"). A port access, a configuration access through 0xCFC-0xCFF to a function, or a
//! memory access that the domain's ioreq server claims becomes a Xen ioreq in the vCPU's slot,
//! the device model's port is notified and the vCPU blocks (`Next::Block`; only the answer, or
//! the timeout, ends the wait: `sched::event_waiting`). Before the vCPU enters the guest again
//! and before any interrupt is injected, [`resume`] completes the instruction with the answer:
//! an `IN`'s value into RAX, a memory read's instruction emulated with the value. A write
//! completes the instruction when it is sent; the vCPU still waits for the acknowledgement, so
//! the guest sees its accesses in order. A device model that does not answer within
//! `hvm::ioreq::TIMEOUT_NS` crashes the guest with a message, nothing else.

use super::{Next, crash};
use crate::common::domain::{self, Running};
use crate::common::hypercall::SchedOps;
use crate::hvm::ioreq::Then;
use crate::hvm::mmio::{self, Forward};
use basalt_xen::ioreq::{RANGE_PCI, RANGE_PORT, Request, TYPE_COPY, TYPE_PCI_CONFIG, TYPE_PIO};

/// A port access (`out`: the value of an `OUT`) the server claims: the request is sent;
/// `None` leaves it to Basalt's platform.
pub fn port(v: &mut Running<'_>, port: u16, size: u8, out: Option<u32>) -> Option<Next> {
    let p = &v.domain.platform;
    if !p.ioreq.used() {
        return None;
    }
    let (kind, addr) = if p.ioreq.claims(RANGE_PORT, port.into(), size.into()) {
        (TYPE_PIO, u64::from(port))
    } else if (0xcfc..=0xcff).contains(&port) {
        // Configuration mechanism #1: enable bit 31, bus, device and function in 23:8.
        let a = p.pci.lock().address();
        let sbdf = (a >> 8) & 0xffff;
        if a & 0x8000_0000 == 0 || !p.ioreq.claims(RANGE_PCI, sbdf.into(), 1) {
            return None;
        }
        let reg = a & 0xfc | u32::from(port & 3);
        (TYPE_PCI_CONFIG, u64::from(sbdf) << 32 | u64::from(reg))
    } else {
        return None;
    };
    let req = Request {
        kind,
        addr,
        data: out.map_or(0, u64::from),
        size,
        read: out.is_none(),
    };
    let then = if out.is_some() {
        v.arch.skip_instruction();
        Then::Nothing
    } else {
        Then::PortIn
    };
    Some(send(v, req, then))
}

/// Whether a memory access at `gpa` goes to the device model.
pub fn claims_memory(v: &Running<'_>, gpa: u64) -> bool {
    let io = &v.domain.platform.ioreq;
    io.claims(basalt_xen::ioreq::RANGE_MEMORY, gpa, 1)
}

/// A memory access at `gpa` the server claims: emulated with the answer of its read
/// (`answer`, once there), its write sent.
pub fn memory(v: &mut Running<'_>, gpa: u64, answer: Option<u64>, ops: &impl SchedOps) -> Next {
    let domain = v.domain.clone();
    let (size, data, then) = match mmio::emulate_forwarded(&mut v.arch, &domain.ram, gpa, answer) {
        Ok(Forward::Read(size)) => (size, None, Then::Mmio(gpa)),
        Ok(Forward::Write(size, value)) => (size, Some(value), Then::Nothing),
        Ok(Forward::Done) => return Next::Continue,
        Err(e) => {
            crash(v, &alloc::format!("{e}"), ops);
            return Next::Ended;
        }
    };
    let req = Request {
        kind: TYPE_COPY,
        addr: gpa,
        data: data.unwrap_or(0),
        size,
        read: data.is_none(),
    };
    send(v, req, then)
}

/// Puts `req` in the vCPU's slot and notifies the device model (in the control domain). A
/// server destroyed meanwhile takes nothing: the instruction runs again (a write was done).
fn send(v: &Running<'_>, req: Request, then: Then) -> Next {
    let d = v.domain;
    let Some(port) = (d.platform.ioreq).issue(&d.ram, v.index, req, then, crate::time::now_ns())
    else {
        return Next::Continue;
    };
    if port != 0
        && let Some(dom0) = domain::get(0)
        && let Some(x0) = &dom0.xen
    {
        x0.deliver(&dom0.ram, &dom0.platform, port, None);
    }
    Next::Block
}

/// What the run loop does with a vCPU before it enters the guest.
pub enum Resume {
    /// Enter (no request, or its instruction completed).
    Go,
    /// The request still waits: block.
    Wait,
    /// The domain was crashed.
    Ended,
}

/// Completes the instruction of the vCPU's answered request, before anything else reaches
/// the vCPU; crashes the domain when the device model let the deadline pass.
pub fn resume(v: &mut Running<'_>, ops: &impl SchedOps) -> Resume {
    match v.domain.platform.ioreq.take(v.index) {
        None => Resume::Go,
        Some(Err(p)) if crate::time::now_ns() < p.deadline => Resume::Wait,
        Some(Err(p)) => {
            let r = p.req;
            let what = alloc::format!(
                "its device model (in d0) did not answer within {} s a {}-byte {} of {} {:#x}; \
                 see the device model's log in the control domain",
                crate::hvm::ioreq::TIMEOUT_NS / 1_000_000_000,
                r.size,
                if r.read { "read" } else { "write" },
                ["port", "guest-physical address", "PCI configuration"][usize::from(r.kind.min(2))],
                r.addr
            );
            crash(v, &what, ops);
            Resume::Ended
        }
        Some(Ok((p, data))) => match p.then {
            Then::Nothing => Resume::Go,
            Then::PortIn => {
                super::complete_in(v, p.req.size, data as u32);
                Resume::Go
            }
            Then::Mmio(gpa) => match memory(v, gpa, Some(data), ops) {
                Next::Block => Resume::Wait,
                Next::Ended => Resume::Ended,
                _ => Resume::Go,
            },
        },
    }
}
