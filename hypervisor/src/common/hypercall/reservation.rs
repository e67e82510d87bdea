//! `XENMEM_decrease_reservation`: a domain with Xen's interface gives RAM
//! pages back (a balloon driver; Xen's Test Framework's xsa-195 and xsa-277
//! check what follows). Each page leaves the domain's stage-2 tables
//! (`GuestRam::remove_page`): the guest's next access to it faults like one
//! outside its RAM, and giving it back twice is refused. Also: a
//! grant-table frame placed over a RAM page (`XENMAPSPACE_grant_table` at a
//! frame of RAM, as XTF places it) first gives that page back, as Xen's
//! `add_to_physmap` replaces what was there.

use super::After;
use crate::common::domain::Running;
use crate::hvm::memory::GuestRam;
use crate::vcpu::gpr;
use basalt_guest::hypercall as hc;

/// `XENMEM_decrease_reservation`.
const XENMEM_DECREASE_RESERVATION: u64 = 1;
/// The low bits of a `memory_op` command; the rest is the first extent of
/// a continuation (`MEMOP_EXTENT_SHIFT`).
const MEMOP_EXTENT_SHIFT: u32 = 6;
/// Extents given back per VM exit before a continuation.
const BATCH: u64 = 256;

/// The `memory_op` commands answered here: `None` for the others.
pub(super) fn memory_op(v: &mut Running<'_>, cmd: u64, arg: u64) -> Option<(u64, After)> {
    match cmd & ((1 << MEMOP_EXTENT_SHIFT) - 1) {
        XENMEM_DECREASE_RESERVATION => {
            Some(decrease_reservation(v, cmd >> MEMOP_EXTENT_SHIFT, arg))
        }
        _ => None,
    }
}

/// `struct xen_memory_reservation` as the guest's mode lays it out.
struct Reservation {
    /// `extent_start`: the guest's array of frame numbers.
    extents: u64,
    /// `nr_extents`.
    count: u64,
    /// `extent_order`: pages per extent, log2.
    order: u32,
    /// `domid`.
    domid: u16,
}

fn read_reservation(v: &Running<'_>, arg: u64) -> Option<Reservation> {
    let read = |at: u64, out: &mut [u8]| {
        crate::hvm::guestmem::read_virt(&v.arch, &v.domain.ram, at, out).is_ok()
    };
    if v.arch.long_mode() {
        // { handle extent_start; xen_ulong_t nr_extents; unsigned int
        //   extent_order, mem_flags; domid_t domid; }: 8, 8, 4, 4, 2.
        let mut b = [0u8; 26];
        read(arg, &mut b).then(|| Reservation {
            extents: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
            count: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
            order: u32::from_le_bytes(b[16..20].try_into().unwrap_or_default()),
            domid: u16::from_le_bytes([b[24], b[25]]),
        })
    } else {
        // The 32-bit layout: 4, 4, 4, 4, 2.
        let mut b = [0u8; 18];
        read(arg, &mut b).then(|| Reservation {
            extents: u64::from(u32::from_le_bytes(b[0..4].try_into().unwrap_or_default())),
            count: u64::from(u32::from_le_bytes(b[4..8].try_into().unwrap_or_default())),
            order: u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()),
            domid: u16::from_le_bytes([b[16], b[17]]),
        })
    }
}

/// Gives back the pages listed from extent `start` on. The result is how
/// many extents are done in all, as Xen's: it stops at the first frame that
/// cannot be given back (not RAM, given back already, unreadable list), so
/// giving a page back twice answers 0. Only single pages (order 0): a
/// larger order does nothing. After [`BATCH`] extents the call continues
/// in a continuation (the command's high bits carry the next extent).
fn decrease_reservation(v: &mut Running<'_>, start: u64, arg: u64) -> (u64, After) {
    let Some(r) = read_reservation(v, arg) else {
        return (hc::errno_result(hc::EFAULT), After::Continue);
    };
    if r.domid != basalt_xen::DOMID_SELF && u32::from(r.domid) != v.domain.id {
        return (hc::errno_result(hc::EPERM), After::Continue);
    }
    if r.order != 0 || start >= r.count {
        return (start, After::Continue);
    }
    let long = v.arch.long_mode();
    let entry = if long { 8 } else { 4 };
    for i in start..r.count {
        if i - start == BATCH {
            let next = XENMEM_DECREASE_RESERVATION | (i << MEMOP_EXTENT_SHIFT);
            v.arch.set_reg(if long { gpr::RDI } else { gpr::RBX }, next);
            return (0, After::Again(false));
        }
        let mut raw = [0u8; 8];
        let at = r.extents.wrapping_add(i.wrapping_mul(entry));
        if crate::hvm::guestmem::read_virt(&v.arch, &v.domain.ram, at, &mut raw[..entry as usize])
            .is_err()
        {
            return (i, After::Continue);
        }
        let frame = u64::from_le_bytes(raw);
        let given = frame
            .checked_mul(4096)
            .is_some_and(|gpa| v.domain.ram.remove_page(gpa) == Ok(true));
        if !given {
            return (i, After::Continue);
        }
    }
    (r.count, After::Continue)
}

/// Before a frame of Basalt's (a grant-table frame) is mapped at
/// guest-physical `gpa`: a RAM page there is given back first. `false` if
/// it cannot be.
pub(super) fn make_room(ram: &GuestRam, gpa: u64) -> bool {
    gpa >= ram.size() || ram.remove_page(gpa).is_ok()
}
