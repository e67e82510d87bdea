//! The hypercalls of Xen's interface (docs/control-domain.md), for domains
//! built with it (`xen=1`, `role=control`): event channels, shared_info and
//! vcpu_info placement, memory-map and HVM-parameter queries, the features
//! and the timer VIRQ. The state lives in `hvm::xen`; the pure rules in
//! `basalt-xen`. Operations answered the same way for every domain
//! (console, shutdown, vCPU start) stay in the parent module.
//!
//! Every argument structure is copied once from the guest (a linear
//! address, user-mode ones included) and checked before anything changes.

pub mod dm;
mod grant;

use super::{After, SchedOps, errno};
use crate::common::domain::{self, Domain, Running};
use crate::hvm::guestmem::{read_virt, write_virt};
use crate::hvm::xen::{NR_PARAMS, XenDomain};
use alloc::sync::Arc;
use basalt_guest::hypercall as hc;
use basalt_xen::DOMID_SELF;
use basalt_xen::evtchn::{self, Status, Target};
use basalt_xen::ioreq::FIRST_PORT;
use core::sync::atomic::Ordering;

/// `__HYPERVISOR_event_channel_op`.
const EVENT_CHANNEL_OP: u64 = 32;
/// `__HYPERVISOR_hvm_op`.
const HVM_OP: u64 = 34;
/// `__HYPERVISOR_set_timer_op`.
const SET_TIMER_OP: u64 = 15;

// EVTCHNOP_* (public/event_channel.h).
const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
const EVTCHNOP_BIND_VIRQ: u64 = 1;
const EVTCHNOP_CLOSE: u64 = 3;
const EVTCHNOP_SEND: u64 = 4;
const EVTCHNOP_STATUS: u64 = 5;
const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
const EVTCHNOP_BIND_IPI: u64 = 7;
const EVTCHNOP_BIND_VCPU: u64 = 8;
const EVTCHNOP_UNMASK: u64 = 9;
const EVTCHNOP_INIT_CONTROL: u64 = 11;

// XENMEM_* (public/memory.h).
const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
const XENMEM_MEMORY_MAP: u64 = 9;
const XENMEM_REMOVE_FROM_PHYSMAP: u64 = 15;
const XENMEM_ADD_TO_PHYSMAP_BATCH: u64 = 23;
const XENMEM_ACQUIRE_RESOURCE: u64 = 28;
const XENMAPSPACE_GMFN_FOREIGN: u16 = 4;
/// Entries of an `add_to_physmap_batch` done per VM exit; the rest is a
/// continuation.
const BATCH_PER_EXIT: u64 = 64;
const XENMAPSPACE_SHARED_INFO: u32 = 0;
const XENMAPSPACE_GRANT_TABLE: u32 = 1;

/// `__HYPERVISOR_grant_table_op`.
const GRANT_TABLE_OP: u64 = 20;
const PHYSDEV_OP: u64 = 33;
const DM_OP: u64 = 41;
const PHYSDEVOP_PCI_DEVICE_ADD: u64 = 25;
const GNTTABOP_MAP_GRANT_REF: u64 = 0;
const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
const GNTTABOP_COPY: u64 = 5;
const GNTTABOP_QUERY_SIZE: u64 = 6;
const GNTTABOP_SET_VERSION: u64 = 8;
const GNTTABOP_GET_VERSION: u64 = 10;

// HVMOP_* (public/hvm/hvm_op.h).
const HVMOP_SET_PARAM: u64 = 0;
const HVMOP_GET_PARAM: u64 = 1;
const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u64 = 23;

// VCPUOP_* (public/vcpu.h) handled here.
const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;

// XENVER_* (public/version.h) handled here.
const XENVER_CAPABILITIES: u64 = 3;
const XENVER_GET_FEATURES: u64 = 6;
const XENVER_GUEST_HANDLE: u64 = 8;
const XENVER_COMMANDLINE: u64 = 9;

// XENFEAT_* (public/features.h): what a Xen-interface domain is told.
const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;
const XENFEAT_DOM0: u32 = 11;

/// The feature bits of submap 0 for a domain (`XENVER_get_features`).
fn features(control: bool) -> u32 {
    let mut f = (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP)
        | (1 << XENFEAT_HVM_CALLBACK_VECTOR)
        | (1 << XENFEAT_HVM_SAFE_PVCLOCK);
    if control {
        f |= 1 << XENFEAT_DOM0;
    }
    f
}

type Answer = (u64, After);

fn ok(r: u64) -> Answer {
    (r, After::Continue)
}

fn err(e: i64) -> Answer {
    (errno(e), After::Continue)
}

/// Reads `N` bytes of an argument structure at linear address `at`.
fn read<const N: usize>(v: &Running<'_>, at: u64) -> Result<[u8; N], Answer> {
    let mut b = [0u8; N];
    read_virt(&v.arch, &v.domain.ram, at, &mut b).map_err(|()| err(hc::EFAULT))?;
    Ok(b)
}

fn write(v: &Running<'_>, at: u64, bytes: &[u8]) -> Result<(), Answer> {
    write_virt(&v.arch, &v.domain.ram, at, bytes).map_err(|()| err(hc::EFAULT))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The Xen-interface state of a domain that has it.
fn xen(d: &Domain) -> &XenDomain {
    // Only called from `handle`, which is reached for such domains only.
    d.xen.as_ref().unwrap_or_else(|| unreachable!())
}

/// The operations of Xen's interface; `None` leaves the call to the
/// parent module (the ones every domain has).
pub fn handle(v: &mut Running<'_>, call: &hc::Call, ops: &impl SchedOps) -> Option<Answer> {
    let [a1, a2, a3, _, _] = call.args;
    Some(match call.op {
        EVENT_CHANNEL_OP => event_channel_op(v, a1, a2),
        hc::HYPERVISOR_MEMORY_OP => memory_op(v, a1, a2, ops)?,
        HVM_OP => hvm_op(v, a1, a2),
        GRANT_TABLE_OP => grant_table_op(v, a1, a2, a3, ops),
        DM_OP => dm::dm_op(v, a1, a2, a3),
        // Xen answers -ENOSYS to any other domain.
        PHYSDEV_OP if a1 == PHYSDEVOP_PCI_DEVICE_ADD && xen(v.domain).control => {
            // struct physdev_pci_device_add { uint16_t seg; uint8_t bus; uint8_t devfn; ... }:
            // a function Linux found. Basalt reaches segment 0 through
            // configuration mechanism #1 only, where it must answer; it is
            // not used further until Basalt has an IOMMU to place it in.
            match read::<4>(v, a2) {
                Ok(b)
                    if u16_at(&b, 0) == 0
                        && crate::hvm::pci_pass::present(u16_at(&b, 2).swap_bytes()) =>
                {
                    ok(0)
                }
                Ok(_) => err(hc::ENODEV),
                Err(e) => e,
            }
        }
        hc::HYPERVISOR_XEN_VERSION => match a1 {
            XENVER_GET_FEATURES => {
                // struct xen_feature_info { unsigned int submap_idx; uint32_t submap; }
                let b = match read::<8>(v, a2) {
                    Ok(b) => b,
                    Err(e) => return Some(e),
                };
                let submap = match u32_at(&b, 0) {
                    0 => features(xen(v.domain).control),
                    _ => 0,
                };
                match write(v, a2 + 4, &submap.to_le_bytes()) {
                    Ok(()) => ok(0),
                    Err(e) => e,
                }
            }
            XENVER_CAPABILITIES => {
                // xen_capabilities_info_t: char[1024].
                let mut text = [0u8; 1024];
                let caps = b"hvm-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p";
                text[..caps.len()].copy_from_slice(caps);
                match write(v, a2, &text) {
                    Ok(()) => ok(0),
                    Err(e) => e,
                }
            }
            // xen_domain_handle_t (a 16-byte UUID, none given) and the
            // hypervisor's command line (char[1024], not shown to guests).
            XENVER_GUEST_HANDLE => match write(v, a2, &[0u8; 16]) {
                Ok(()) => ok(0),
                Err(e) => e,
            },
            XENVER_COMMANDLINE => match write(v, a2, &[0u8; 1024]) {
                Ok(()) => ok(0),
                Err(e) => e,
            },
            _ => return None,
        },
        hc::HYPERVISOR_VCPU_OP => vcpu_op(v, a1, a2, a3, ops)?,
        SET_TIMER_OP => {
            // set_timer_op(timeout): a single-shot timer at system time
            // `timeout` ns; 0 stops it.
            v.domain.timer(v.index).store(a1, Ordering::SeqCst);
            ok(0)
        }
        hc::HYPERVISOR_SCHED_OP if a1 == hc::SCHEDOP_POLL => sched_poll(v, a2),
        _ => return None,
    })
}

/// `SCHEDOP_poll`: returns at once when one of the listed ports is
/// pending; otherwise the vCPU gives up the CPU (a wake-up without an
/// event is allowed: Linux's callers check their condition and poll again).
fn sched_poll(v: &mut Running<'_>, arg: u64) -> Answer {
    // struct sched_poll { XEN_GUEST_HANDLE(evtchn_port_t) ports; unsigned int nr_ports; uint64_t timeout; }
    let b = match read::<24>(v, arg) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let (ports, count) = (u64_at(&b, 0), u32_at(&b, 8));
    // Xen's limit: at most 128 ports per poll.
    if count > 128 {
        return err(hc::EINVAL);
    }
    let d = v.domain;
    let x = xen(d);
    let Some(words) = x.words(&d.ram, &d.platform, Some(v.index)) else {
        return (0, After::Yield);
    };
    for i in 0..u64::from(count) {
        let p = match read::<4>(v, ports.wrapping_add(i * 4)) {
            Ok(p) => u32::from_le_bytes(p),
            Err(e) => return e,
        };
        if p >= evtchn::MAX_PORTS {
            return err(hc::EINVAL);
        }
        if evtchn::EventWords::pending(&words, p) {
            return ok(0);
        }
    }
    (0, After::Yield)
}

/// Sends the event of `port` of domain `d` (the calling domain), wherever
/// it goes.
fn send(v: &Running<'_>, port: u32) -> Answer {
    let d = v.domain;
    let x = xen(d);
    let target = x.channels.lock().send_target(port, d.id as u16);
    match target {
        Ok(Target::Local { port, .. }) => {
            x.deliver(&d.ram, &d.platform, port, Some(v.index));
            ok(0)
        }
        Ok(Target::Remote { domain, port }) => {
            if port >= FIRST_PORT
                && let Some(peer) = domain::get(u32::from(domain))
            {
                dm::notify(&peer, port);
            } else if let Some(peer) = domain::get(u32::from(domain))
                && let Some(px) = &peer.xen
            {
                px.deliver(&peer.ram, &peer.platform, port, None);
            }
            ok(0)
        }
        Ok(Target::Nowhere) => ok(0),
        Err(e) => err(e.errno()),
    }
}

/// The domain id an argument names (`DOMID_SELF` = the caller).
fn domid(v: &Running<'_>, id: u16) -> u16 {
    if id == DOMID_SELF {
        v.domain.id as u16
    } else {
        id
    }
}

fn event_channel_op(v: &mut Running<'_>, cmd: u64, arg: u64) -> Answer {
    let d = v.domain;
    let x = xen(d);
    let me = d.id as u16;
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            // struct evtchn_alloc_unbound { domid_t dom, remote_dom; evtchn_port_t port; }
            let b = match read::<8>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let (dom, remote) = (domid(v, u16_at(&b, 0)), domid(v, u16_at(&b, 2)));
            // Only for itself (another domain's ports are the toolstack's,
            // through the domain-control interface).
            if dom != me {
                return err(hc::EPERM);
            }
            let port = match x.channels.lock().alloc_unbound(remote) {
                Ok(p) => p,
                Err(e) => return err(e.errno()),
            };
            put_port(v, arg + 4, port)
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            // struct evtchn_bind_interdomain { domid_t remote_dom; evtchn_port_t remote_port; evtchn_port_t local_port; }
            let b = match read::<12>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let (remote, remote_port) = (domid(v, u16_at(&b, 0)), u32_at(&b, 4));
            let port = if remote == me {
                let mut c = x.channels.lock();
                if !c.waits_for(remote_port, me) {
                    return err(hc::EINVAL);
                }
                let local = match c.bind_interdomain(me, remote_port) {
                    Ok(p) => p,
                    Err(e) => return err(e.errno()),
                };
                let _ = c.connect(remote_port, me, local);
                local
            } else {
                let Some(peer) = domain::get(u32::from(remote)) else {
                    return err(hc::ESRCH);
                };
                if remote_port >= FIRST_PORT {
                    match dm::bind(v, &peer, remote_port) {
                        Ok(local) => return put_port(v, arg + 8, local),
                        Err(e) => return err(e),
                    }
                }
                let Some(px) = &peer.xen else {
                    return err(hc::EINVAL);
                };
                // Lock order: the lower domain id first.
                let (mut mine, mut theirs) = if me < remote {
                    let a = x.channels.lock();
                    (a, px.channels.lock())
                } else {
                    let b = px.channels.lock();
                    (x.channels.lock(), b)
                };
                if !theirs.waits_for(remote_port, me) {
                    return err(hc::EINVAL);
                }
                let local = match mine.bind_interdomain(remote, remote_port) {
                    Ok(p) => p,
                    Err(e) => return err(e.errno()),
                };
                let _ = theirs.connect(remote_port, me, local);
                local
            };
            // Xen sets the new port pending, so that an event sent before
            // the bind is not lost.
            x.deliver(&d.ram, &d.platform, port, Some(v.index));
            put_port(v, arg + 8, port)
        }
        EVTCHNOP_BIND_VIRQ => {
            // struct evtchn_bind_virq { uint32_t virq; uint32_t vcpu; evtchn_port_t port; }
            let b = match read::<12>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let port = match x.channels.lock().bind_virq(u32_at(&b, 0), u32_at(&b, 4)) {
                Ok(p) => p,
                Err(e) => return err(e.errno()),
            };
            put_port(v, arg + 8, port)
        }
        EVTCHNOP_BIND_IPI => {
            // struct evtchn_bind_ipi { uint32_t vcpu; evtchn_port_t port; }
            let b = match read::<8>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let port = match x.channels.lock().bind_ipi(u32_at(&b, 0)) {
                Ok(p) => p,
                Err(e) => return err(e.errno()),
            };
            put_port(v, arg + 4, port)
        }
        EVTCHNOP_CLOSE => {
            let port = match read::<4>(v, arg) {
                Ok(b) => u32::from_le_bytes(b),
                Err(e) => return e,
            };
            close(d, port)
        }
        EVTCHNOP_SEND => match read::<4>(v, arg) {
            Ok(b) => send(v, u32::from_le_bytes(b)),
            Err(e) => e,
        },
        EVTCHNOP_UNMASK => {
            let port = match read::<4>(v, arg) {
                Ok(b) => u32::from_le_bytes(b),
                Err(e) => return e,
            };
            let Some(vcpu) = x.channels.lock().notify_vcpu(port) else {
                return err(hc::EINVAL);
            };
            if let Some(words) = x.words(&d.ram, &d.platform, Some(v.index)) {
                evtchn::unmask(&words, port, vcpu);
            }
            ok(0)
        }
        EVTCHNOP_STATUS => {
            // struct evtchn_status { domid_t dom; evtchn_port_t port; uint32_t status; uint32_t vcpu; union {...} u; } (24 bytes)
            let b = match read::<8>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            if domid(v, u16_at(&b, 0)) != me {
                return err(hc::EPERM);
            }
            let (status, vcpu) = match x.channels.lock().status(u32_at(&b, 4)) {
                Ok(s) => s,
                Err(e) => return err(e.errno()),
            };
            let mut out = [0u8; 16];
            out[0..4].copy_from_slice(&status.code().to_le_bytes());
            out[4..8].copy_from_slice(&vcpu.to_le_bytes());
            match status {
                Status::Unbound { remote } => out[8..10].copy_from_slice(&remote.to_le_bytes()),
                Status::Interdomain { remote, port } => {
                    out[8..10].copy_from_slice(&remote.to_le_bytes());
                    out[12..16].copy_from_slice(&port.to_le_bytes());
                }
                Status::Virq(virq) => out[8..12].copy_from_slice(&virq.to_le_bytes()),
                Status::Closed | Status::Ipi => {}
            }
            match write(v, arg + 8, &out) {
                Ok(()) => ok(0),
                Err(e) => e,
            }
        }
        EVTCHNOP_BIND_VCPU => {
            // struct evtchn_bind_vcpu { evtchn_port_t port; uint32_t vcpu; }
            let b = match read::<8>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            match x.channels.lock().bind_vcpu(u32_at(&b, 0), u32_at(&b, 4)) {
                Ok(()) => ok(0),
                Err(e) => err(e.errno()),
            }
        }
        EVTCHNOP_INIT_CONTROL => {
            // FIFO event channels are not offered: Linux falls back to the
            // 2-level ABI. A control block that could not be one is refused
            // as Xen refuses it (struct evtchn_init_control { uint64_t
            // control_gfn; uint32_t offset; uint32_t vcpu; uint8_t link_bits; }).
            let b = match read::<16>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let offset = u32_at(&b, 8);
            // The control frame must be the domain's RAM (XTF's xsa-188
            // names frame 2^64-2: -EINVAL, as Xen's map_guest_page gives).
            let frame_in_ram = u64_at(&b, 0)
                .checked_mul(4096)
                .is_some_and(|gpa| gpa < d.ram.size());
            if !frame_in_ram
                || offset & 7 != 0
                || offset > 4096 - 64
                || u32_at(&b, 12) >= d.vcpu_count
            {
                return err(hc::EINVAL);
            }
            err(hc::ENOSYS)
        }
        _ => err(hc::ENOSYS),
    }
}

/// Writes a new port number back into the caller's structure.
fn put_port(v: &Running<'_>, at: u64, port: u32) -> Answer {
    match write(v, at, &port.to_le_bytes()) {
        Ok(()) => ok(0),
        Err(e) => {
            // The caller cannot learn the port: do not leak it.
            let _ = close(v.domain, port);
            e
        }
    }
}

/// `EVTCHNOP_close` of `port` of domain `d`: an interdomain peer's port
/// waits for `d` again; the port's pending bit is cleared.
pub fn close(d: &Domain, port: u32) -> Answer {
    let x = xen(d);
    let was = x.channels.lock().close(port);
    match was {
        Ok(Status::Interdomain { remote, port: peer }) => {
            if u32::from(remote) == d.id {
                x.channels.lock().disconnect(peer, remote, port);
            } else if peer >= FIRST_PORT
                && let Some(p) = domain::get(u32::from(remote))
            {
                dm::unbind(&p, peer, port);
            } else if let Some(p) = domain::get(u32::from(remote))
                && let Some(px) = &p.xen
            {
                px.channels.lock().disconnect(peer, d.id as u16, port);
            }
        }
        Ok(_) => {}
        Err(e) => return err(e.errno()),
    }
    if let Some(words) = x.words(&d.ram, &d.platform, None) {
        evtchn::EventWords::clear_pending(&words, port);
    }
    ok(0)
}

/// Disconnects every interdomain peer of a domain that is going away, so
/// their ports wait again and no event reaches a dead domain, and drops its
/// grant mappings (the granters' flags and pins through `after_flush`, the
/// scheduler's [`SchedOps::after_flush`]).
pub fn domain_gone(d: &Domain, after_flush: fn(alloc::boxed::Box<dyn FnOnce() + Send>)) {
    // The control domain hears of every domain that ends (VIRQ_DOM_EXC).
    if d.id != 0
        && let Some(dom0) = domain::get(0)
        && let Some(x0) = &dom0.xen
    {
        x0.send_virq(&dom0.ram, &dom0.platform, evtchn::VIRQ_DOM_EXC, 0);
    }
    dm::destroy(d);
    let Some(x) = &d.xen else {
        return;
    };
    grant::mapper_gone(d, after_flush);
    let peers: alloc::vec::Vec<_> = x.channels.lock().peers().collect();
    for (port, remote, peer) in peers {
        if u32::from(remote) == d.id {
            continue;
        }
        if let Some(p) = domain::get(u32::from(remote))
            && let Some(px) = &p.xen
        {
            px.channels.lock().disconnect(peer, d.id as u16, port);
        }
    }
}

fn memory_op(v: &mut Running<'_>, cmd: u64, arg: u64, ops: &impl SchedOps) -> Option<Answer> {
    let d = v.domain;
    let x = xen(d);
    // The low 6 bits are the command; the rest a continuation's start.
    Some(match cmd & 0x3f {
        XENMEM_ADD_TO_PHYSMAP => {
            // struct xen_add_to_physmap { domid_t domid; uint16_t size; unsigned int space; xen_ulong_t idx; xen_pfn_t gpfn; }
            let b = match read::<24>(v, arg) {
                Ok(b) => b,
                Err(e) => return Some(e),
            };
            if domid(v, u16_at(&b, 0)) != d.id as u16 {
                return Some(err(hc::EPERM));
            }
            let (space, idx, gpfn) = (u32_at(&b, 4), u64_at(&b, 8), u64_at(&b, 16));
            match space {
                XENMAPSPACE_SHARED_INFO if idx == 0 => {
                    let Some(gpa) = gpfn.checked_mul(4096) else {
                        return Some(err(hc::EINVAL));
                    };
                    if x.place_shared_info(&d.ram, gpa, d.tsc_offset) {
                        ok(0)
                    } else {
                        err(hc::EINVAL)
                    }
                }
                XENMAPSPACE_SHARED_INFO => err(hc::EINVAL),
                XENMAPSPACE_GRANT_TABLE => {
                    // Status frames (bit 31) exist only in grant-table v2.
                    let gpa = gpfn.checked_mul(4096);
                    match (u32::try_from(idx), gpa) {
                        (Ok(i), Some(gpa))
                            if super::reservation::make_room(&d.ram, gpa)
                                && x.map_grant_frame(&d.ram, i, gpa).is_ok() =>
                        {
                            ok(0)
                        }
                        _ => err(hc::EINVAL),
                    }
                }
                _ => err(hc::ENOSYS),
            }
        }
        XENMEM_ADD_TO_PHYSMAP_BATCH => add_to_physmap_batch(v, arg),
        XENMEM_ACQUIRE_RESOURCE => acquire_resource(v, arg),
        XENMEM_REMOVE_FROM_PHYSMAP => {
            // struct xen_remove_from_physmap { domid_t domid; xen_pfn_t gpfn; }
            let b = match read::<16>(v, arg) {
                Ok(b) => b,
                Err(e) => return Some(e),
            };
            if domid(v, u16_at(&b, 0)) != d.id as u16 {
                return Some(err(hc::EPERM));
            }
            let gpa = u64_at(&b, 8).wrapping_mul(4096);
            let mut table = FOREIGN.lock();
            match table.get(&(d.id, gpa)) {
                Some(_) if d.ram.unmap_extra(gpa).is_err() => {
                    // Still mapped: the pin must stay.
                    err(hc::EINVAL)
                }
                Some(_) => {
                    let owner = table.remove(&(d.id, gpa));
                    drop(table);
                    if let Some(owner) = owner {
                        ops.unpin_after_flush(owner);
                    }
                    ok(0)
                }
                // Only foreign mappings can be removed (no ballooning).
                None => err(hc::EINVAL),
            }
        }
        XENMEM_MEMORY_MAP => {
            // struct xen_memory_map { unsigned int nr_entries; XEN_GUEST_HANDLE(void) buffer; }
            // with e820 entries (u64 addr, u64 size, u32 type: 20 bytes).
            let b = match read::<16>(v, arg) {
                Ok(b) => b,
                Err(e) => return Some(e),
            };
            let (room, buffer) = (u32_at(&b, 0), u64_at(&b, 8));
            let mut map = [basalt_guest::start_info::MemmapEntry::default(); 8];
            let n = basalt_guest::start_info::guest_memmap(d.ram.size(), &mut map);
            let n = n.min(room as usize);
            for (i, e) in map[..n].iter().enumerate() {
                let mut raw = [0u8; 20];
                raw[0..8].copy_from_slice(&e.addr.to_le_bytes());
                raw[8..16].copy_from_slice(&e.size.to_le_bytes());
                raw[16..20].copy_from_slice(&e.kind.to_le_bytes());
                if let Err(e) = write(v, buffer.wrapping_add(i as u64 * 20), &raw) {
                    return Some(e);
                }
            }
            match write(v, arg, &(n as u32).to_le_bytes()) {
                Ok(()) => ok(0),
                Err(e) => e,
            }
        }
        // XENMEM_decrease_reservation; everything else -ENOSYS.
        _ => super::reservation::memory_op(v, cmd, arg)
            .unwrap_or((errno(hc::ENOSYS), After::Continue)),
    })
}

/// `grant_table_op(cmd, uop, count)`: mapping, unmapping and copying
/// granted pages (`grant`), the table's size and version.
fn grant_table_op(
    v: &mut Running<'_>,
    cmd: u64,
    arg: u64,
    count: u64,
    ops: &impl SchedOps,
) -> Answer {
    // count is an unsigned int.
    let count = count & 0xffff_ffff;
    match cmd {
        GNTTABOP_MAP_GRANT_REF => return grant::map(v, arg, count),
        GNTTABOP_UNMAP_GRANT_REF => return grant::unmap(v, arg, count, ops),
        GNTTABOP_COPY => return grant::copy(v, arg, count),
        _ => {}
    }
    let d = v.domain;
    let x = xen(d);
    if count != 1 {
        return err(hc::EINVAL);
    }
    match cmd {
        GNTTABOP_QUERY_SIZE => {
            // struct gnttab_query_size { domid_t dom; uint32_t nr_frames, max_nr_frames; int16_t status; }
            let b = match read::<16>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let mut out = [0u8; 10];
            if domid(v, u16_at(&b, 0)) == d.id as u16 {
                out[0..4].copy_from_slice(&x.grant_frames().to_le_bytes());
                out[4..8].copy_from_slice(&crate::hvm::xen::MAX_GRANT_FRAMES.to_le_bytes());
            } else {
                // GNTST_permission_denied: another domain's table.
                out[8..10].copy_from_slice(&(-8i16).to_le_bytes());
            }
            match write(v, arg + 4, &out) {
                Ok(()) => ok(0),
                Err(e) => e,
            }
        }
        GNTTABOP_SET_VERSION => {
            // struct gnttab_set_version { uint32_t version; }: v1 only.
            match read::<4>(v, arg).map(u32::from_le_bytes) {
                Ok(1) => ok(0),
                // v2 exists but is not offered: -ENOSYS, as Xen answers with
                // gnttab_max_version=1 (XTF's selftest then skips v2).
                Ok(2) => err(hc::ENOSYS),
                Ok(_) => err(hc::EINVAL),
                Err(e) => e,
            }
        }
        GNTTABOP_GET_VERSION => {
            // struct gnttab_get_version { domid_t dom; uint16_t pad; uint32_t version; }
            let b = match read::<8>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            if domid(v, u16_at(&b, 0)) != d.id as u16 {
                return err(hc::EPERM);
            }
            match write(v, arg + 4, &1u32.to_le_bytes()) {
                Ok(()) => ok(0),
                Err(e) => e,
            }
        }
        _ => err(hc::ENOSYS),
    }
}

/// The control domain's foreign mappings: (mapper id, guest-physical
/// address in the mapper) → the domain whose frame is mapped there (its RAM
/// pinned once per entry).
static FOREIGN: spin::Mutex<alloc::collections::BTreeMap<(u32, u64), Arc<Domain>>> =
    spin::Mutex::new(alloc::collections::BTreeMap::new());

/// The foreign mappings domain `mapper` held, forgotten (it is ending; its
/// stage-2 tables go with it): the domains whose pins the caller drops
/// once every CPU has flushed.
pub fn drop_foreign_of(mapper: u32) -> alloc::vec::Vec<Arc<Domain>> {
    let mut table = FOREIGN.lock();
    let keys: alloc::vec::Vec<(u32, u64)> = table
        .keys()
        .filter(|(m, _)| *m == mapper)
        .copied()
        .collect();
    keys.iter().filter_map(|k| table.remove(k)).collect()
}

/// `XENMEM_add_to_physmap_batch` with `XENMAPSPACE_gmfn_foreign`: privcmd's
/// MMAPBATCH. Each entry maps frame `idxs[i]` of domain `foreign_domid`
/// at the caller's frame `gpfns[i]` (outside its RAM) and writes 0 or an
/// errno to `errs[i]`. Control domain only. At most [`BATCH_PER_EXIT`]
/// entries per exit: the structure in guest memory is advanced and the call
/// continues, as Xen does.
fn add_to_physmap_batch(v: &mut Running<'_>, arg: u64) -> Answer {
    // struct xen_add_to_physmap_batch { domid_t domid; uint16_t space; uint16_t size;
    //   domid_t foreign_domid; XEN_GUEST_HANDLE(xen_ulong_t) idxs;
    //   XEN_GUEST_HANDLE(xen_pfn_t) gpfns; XEN_GUEST_HANDLE(int) errs; }
    let d = v.domain;
    let b = match read::<32>(v, arg) {
        Ok(b) => b,
        Err(e) => return e,
    };
    if !xen(d).control {
        return err(hc::EPERM);
    }
    if domid(v, u16_at(&b, 0)) != d.id as u16 {
        return err(hc::EPERM);
    }
    if u16_at(&b, 2) != XENMAPSPACE_GMFN_FOREIGN {
        return err(hc::ENOSYS);
    }
    let size = u64::from(u16_at(&b, 4));
    let foreign = u16_at(&b, 6);
    let (idxs, gpfns, errs) = (u64_at(&b, 8), u64_at(&b, 16), u64_at(&b, 24));
    if u32::from(foreign) == d.id || foreign == DOMID_SELF {
        return err(hc::EINVAL);
    }
    let Some(owner) = domain::get(u32::from(foreign)) else {
        return err(hc::ESRCH);
    };
    let n = size.min(BATCH_PER_EXIT);
    for i in 0..n {
        let idx = match read::<8>(v, idxs.wrapping_add(i * 8)) {
            Ok(x) => u64::from_le_bytes(x),
            Err(e) => return e,
        };
        let gpfn = match read::<8>(v, gpfns.wrapping_add(i * 8)) {
            Ok(x) => u64::from_le_bytes(x),
            Err(e) => return e,
        };
        let result: i32 = match map_foreign(d, &owner, idx, gpfn) {
            Ok(()) => 0,
            Err(e) => -(e as i32),
        };
        if let Err(e) = write(v, errs.wrapping_add(i * 4), &result.to_le_bytes()) {
            return e;
        }
    }
    if n == size {
        return ok(0);
    }
    // Continuation: the rest of the batch, from the guest's structure.
    let mut rest = b;
    rest[4..6].copy_from_slice(&((size - n) as u16).to_le_bytes());
    rest[8..16].copy_from_slice(&idxs.wrapping_add(n * 8).to_le_bytes());
    rest[16..24].copy_from_slice(&gpfns.wrapping_add(n * 8).to_le_bytes());
    rest[24..32].copy_from_slice(&errs.wrapping_add(n * 4).to_le_bytes());
    match write(v, arg, &rest) {
        Ok(()) => (0, After::Again(false)),
        Err(e) => e,
    }
}

/// Maps frame `idx` of `owner` at frame `gpfn` of the control domain `d`.
fn map_foreign(d: &Domain, owner: &Arc<Domain>, idx: u64, gpfn: u64) -> Result<(), i64> {
    let from = idx.checked_mul(4096).ok_or(hc::EINVAL)?;
    map_foreign_with(d, owner, gpfn, || {
        owner.ram.pin_frame(from).ok_or(hc::EINVAL)
    })
}

/// Maps the frame `pin` pins (once, in `owner`'s RAM) at frame `gpfn` of
/// the control domain `d`, remembered in [`FOREIGN`].
fn map_foreign_with(
    d: &Domain,
    owner: &Arc<Domain>,
    gpfn: u64,
    pin: impl FnOnce() -> Result<u64, i64>,
) -> Result<(), i64> {
    let gpa = gpfn.checked_mul(4096).ok_or(hc::EINVAL)?;
    if owner.life.is_ending() {
        return Err(hc::ESRCH);
    }
    let mut table = FOREIGN.lock();
    if table.contains_key(&(d.id, gpa)) {
        return Err(hc::EBUSY);
    }
    let hpa = pin()?;
    if d.ram.map_extra(gpa, hpa).is_err() {
        owner.ram.unpin();
        return Err(hc::EINVAL);
    }
    table.insert((d.id, gpa), owner.clone());
    Ok(())
}

/// `XENMEM_acquire_resource` (privcmd's MMAP_RESOURCE), control domain
/// only: frames `frame..frame + nr_frames` of a resource of another domain
/// appear at the caller's frames `frame_list[i]` as foreign mappings
/// (`XENMEM_remove_from_physmap` ends each). A null `frame_list` with
/// `nr_frames` 0 asks the resource's size. The resources: the grant
/// table's shared frames (type 1, id 0), grown to the frames asked for, as
/// Xen does (its status frames, id 1, exist only in v2: size 0), and the
/// page of an ioreq server (type 0, frame 1; `hvm::ioreq`).
fn acquire_resource(v: &mut Running<'_>, arg: u64) -> Answer {
    // struct xen_mem_acquire_resource { domid_t domid; uint16_t type; uint32_t id;
    //   uint32_t nr_frames; uint32_t pad; uint64_t frame; XEN_GUEST_HANDLE(xen_pfn_t) frame_list; }
    let d = v.domain;
    let b = match read::<32>(v, arg) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let (kind, id, nr, frame, list) = (
        u16_at(&b, 2),
        u32_at(&b, 4),
        u32_at(&b, 8),
        u64_at(&b, 16),
        u64_at(&b, 24),
    );
    if !xen(d).control {
        return err(hc::EPERM);
    }
    if u32_at(&b, 12) != 0 {
        return err(hc::EINVAL);
    }
    let foreign = u32::from(domid(v, u16_at(&b, 0)));
    if foreign == d.id {
        return err(hc::EINVAL);
    }
    let Some(owner) = domain::get(foreign) else {
        return err(hc::ESRCH);
    };
    // Type 0, Xen's ioreq server `id` (Basalt's one is 0, its page is frame 1: there is no
    // buffered-ioreq frame 0); type 1, the grant table.
    let page = owner.platform.ioreq.page().filter(|_| id == 0);
    let max = match (kind, &owner.xen) {
        (0, _) if page.is_some() => 2,
        (0, _) => return err(hc::ENOENT),
        (1, Some(_)) if id == 0 => crate::hvm::xen::MAX_GRANT_FRAMES,
        (1, Some(_)) => 0,
        _ => return err(hc::EOPNOTSUPP),
    };
    if list == 0 {
        if nr != 0 {
            return err(hc::EINVAL);
        }
        return match write(v, arg + 8, &max.to_le_bytes()) {
            Ok(()) => ok(0),
            Err(e) => e,
        };
    }
    if nr == 0
        || frame
            .checked_add(u64::from(nr))
            .is_none_or(|end| end > u64::from(max))
    {
        return err(hc::EINVAL);
    }
    for i in 0..u64::from(nr) {
        let gpfn = match read::<8>(v, list.wrapping_add(i * 8)) {
            Ok(x) => u64::from_le_bytes(x),
            Err(e) => return e,
        };
        let pin = || {
            let hpa = match (kind, &owner.xen) {
                (0, _) => page.filter(|_| frame + i == 1).ok_or(hc::EINVAL)?,
                (_, Some(ox)) => ox
                    .grant_frame(&owner.ram, (frame + i) as u32)
                    .ok_or(hc::ENOMEM)?,
                _ => return Err(hc::EINVAL),
            };
            if owner.ram.pin() {
                Ok(hpa)
            } else {
                Err(hc::ESRCH)
            }
        };
        // As Xen: a failure after the first frame is -EIO (some are mapped).
        if let Err(e) = map_foreign_with(d, &owner, gpfn, pin) {
            return err(if i == 0 { e } else { hc::EIO });
        }
    }
    ok(0)
}

fn hvm_op(v: &mut Running<'_>, cmd: u64, arg: u64) -> Answer {
    let d = v.domain;
    let x = xen(d);
    match cmd {
        HVMOP_SET_PARAM | HVMOP_GET_PARAM => {
            // struct xen_hvm_param { domid_t domid; uint32_t index; uint64_t value; }
            let b = match read::<16>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            if domid(v, u16_at(&b, 0)) != d.id as u16 {
                return err(hc::EPERM);
            }
            let index = u32_at(&b, 4) as usize;
            if index >= NR_PARAMS {
                return err(hc::EINVAL);
            }
            if cmd == HVMOP_GET_PARAM {
                let value = x.params.lock()[index];
                return match write(v, arg + 8, &value.to_le_bytes()) {
                    Ok(()) => ok(0),
                    Err(e) => e,
                };
            }
            // A guest may set only its callback; the store and console
            // parameters are the toolstack's.
            if index != crate::hvm::xen::PARAM_CALLBACK_IRQ {
                return err(hc::EPERM);
            }
            x.params.lock()[index] = u64_at(&b, 8);
            ok(0)
        }
        HVMOP_SET_EVTCHN_UPCALL_VECTOR => {
            // struct xen_hvm_evtchn_upcall_vector { uint32_t vcpu; uint8_t vector; }
            let b = match read::<8>(v, arg) {
                Ok(b) => b,
                Err(e) => return e,
            };
            if x.set_upcall_vector(u32_at(&b, 0), b[4]) {
                ok(0)
            } else {
                err(hc::EINVAL)
            }
        }
        _ => err(hc::ENOSYS),
    }
}

fn vcpu_op(
    v: &mut Running<'_>,
    cmd: u64,
    vcpu: u64,
    arg: u64,
    ops: &impl SchedOps,
) -> Option<Answer> {
    let d = v.domain;
    let x = xen(d);
    if vcpu >= u64::from(d.vcpu_count) {
        return None;
    }
    let vcpu = vcpu as u32;
    Some(match cmd {
        VCPUOP_REGISTER_VCPU_INFO => {
            // struct vcpu_register_vcpu_info { uint64_t mfn; uint32_t offset; uint32_t rsvd; }
            let b = match read::<16>(v, arg) {
                Ok(b) => b,
                Err(e) => return Some(e),
            };
            let (frame, offset, rsvd) = (u64_at(&b, 0), u32_at(&b, 8), u32_at(&b, 12));
            let gpa = frame
                .checked_mul(4096)
                .and_then(|g| g.checked_add(u64::from(offset)));
            match gpa {
                Some(gpa)
                    if rsvd == 0
                        && offset < 4096
                        && x.register_vcpu_info(&d.ram, vcpu, gpa, d.tsc_offset) =>
                {
                    ok(0)
                }
                _ => err(hc::EINVAL),
            }
        }
        VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            // struct vcpu_register_runstate_memory_area { union { handle; uint64_t p; } addr; }:
            // a linear address, translated now through the caller's tables.
            let b = match read::<8>(v, arg) {
                Ok(b) => b,
                Err(e) => return Some(e),
            };
            let gva = u64_at(&b, 0);
            let Some(gpa) = crate::hvm::guestmem::translate_range(
                &v.arch,
                &d.ram,
                gva,
                basalt_xen::layout::runstate::SIZE,
            ) else {
                return Some(err(hc::EFAULT));
            };
            if x.register_runstate(&d.ram, vcpu, gpa) {
                ok(0)
            } else {
                err(hc::EINVAL)
            }
        }
        VCPUOP_SET_PERIODIC_TIMER | VCPUOP_STOP_PERIODIC_TIMER => {
            // struct vcpu_set_periodic_timer { uint64_t period_ns; }: at
            // least 1 ms and at most Xen's STIME_DELTA_MAX (2^62 - 1).
            let period = if cmd == VCPUOP_SET_PERIODIC_TIMER {
                match read::<8>(v, arg).map(u64::from_le_bytes) {
                    Ok(p) if (1_000_000..1 << 62).contains(&p) => p,
                    Ok(_) => return Some(err(hc::EINVAL)),
                    Err(e) => return Some(e),
                }
            } else {
                0
            };
            if let [p, next] = d.periodic(vcpu) {
                next.store(0, Ordering::SeqCst);
                p.store(period, Ordering::SeqCst);
                if period != 0 {
                    next.store(crate::time::now_ns() + period, Ordering::SeqCst);
                }
            }
            // Another vCPU of the caller's, halted, looks at its timers again.
            if vcpu != v.index {
                ops.retime_vcpu(d, vcpu);
            }
            ok(0)
        }
        hc::VCPUOP_GET_RUNSTATE_INFO => {
            let Some(r) = x.runstate(vcpu) else {
                return Some(err(hc::EINVAL));
            };
            match write(v, arg, &r.to_bytes()) {
                Ok(()) => ok(0),
                Err(e) => e,
            }
        }
        _ => return None,
    })
}

/// vCPU `vcpu`'s single-shot or periodic timer is due at `now` (system
/// ns): the single-shot one is cleared, the periodic one moved a period
/// past `now` (as Xen does: missed periods are not made up), and, for a
/// domain with Xen's interface, VIRQ_TIMER sent. Returns whether one was due.
pub fn timer_due(d: &Domain, vcpu: u32, now: u64) -> bool {
    let timer = d.timer(vcpu);
    let at = timer.load(Ordering::SeqCst);
    let one = at != 0
        && at <= now
        && timer
            .compare_exchange(at, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
    let [period, next] = d.periodic(vcpu) else {
        return one;
    };
    let (p, n) = (period.load(Ordering::SeqCst), next.load(Ordering::SeqCst));
    let tick = p != 0
        && n != 0
        && n <= now
        && next
            .compare_exchange(n, now.saturating_add(p), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
    if !(one || tick) {
        return false;
    }
    if let Some(x) = &d.xen {
        x.timer_fired(vcpu);
        x.send_virq(&d.ram, &d.platform, evtchn::VIRQ_TIMER, vcpu);
    }
    true
}

/// Whether vCPU `vcpu`'s single-shot timer fired while it ran since it
/// last blocked (a domain with Xen's interface takes the timer's event
/// while running; the block that follows must still return).
pub fn timer_fired_while_running(d: &Domain, vcpu: u32) -> bool {
    d.xen.as_ref().is_some_and(|x| x.take_timer_fired(vcpu))
}
