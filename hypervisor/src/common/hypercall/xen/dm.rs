//! `HYPERVISOR_dm_op` and the event channels of ioreq servers (Xen's `public/hvm/dm_op.h`;
//! docs/toolstack.md, "Devices: the ioreq server"): the control domain's device model creates
//! a server for a guest, registers ranges, maps the server's page (`acquire_resource`, in the
//! parent module) and binds one event channel per guest vCPU; it answers requests and raises
//! the guest's interrupts. The state is `hvm::ioreq`; forwarding is `common::ioreq`.

use super::{Answer, err, ok, u16_at, u32_at, u64_at, xen};
use crate::common::domain::{self, Domain, Running};
use crate::hvm::guestmem::{read_virt, write_virt};
use basalt_guest::hypercall as hc;
use basalt_xen::ioreq::{FIRST_PORT, RangeError};

const CREATE_IOREQ_SERVER: u32 = 1;
const GET_IOREQ_SERVER_INFO: u32 = 2;
const MAP_IO_RANGE: u32 = 3;
const UNMAP_IO_RANGE: u32 = 4;
const SET_IOREQ_SERVER_STATE: u32 = 5;
const DESTROY_IOREQ_SERVER: u32 = 6;
const INJECT_MSI: u32 = 14;
const NR_VCPUS: u32 = 20;
/// `XEN_DMOP_no_gfns`: the device model maps the pages with `acquire_resource`.
const NO_GFNS: u16 = 1;
/// Bytes of `struct xen_dm_op` (the op, a pad, the largest member of the union).
const OP_SIZE: usize = 32;

/// `dm_op(domid, nr_bufs, bufs)`, the control domain only: `bufs` is an array of
/// `struct xen_dm_op_buf { XEN_GUEST_HANDLE(void) h; xen_ulong_t size; }` whose first buffer
/// holds the `struct xen_dm_op`; what an operation hands back is written there.
pub(super) fn dm_op(v: &Running<'_>, domid: u64, nr_bufs: u64, bufs: u64) -> Answer {
    if !xen(v.domain).control {
        return err(hc::EPERM);
    }
    let mut buf = [0u8; 16];
    if nr_bufs == 0 {
        return err(hc::EINVAL);
    }
    if read_virt(&v.arch, &v.domain.ram, bufs, &mut buf).is_err() {
        return err(hc::EFAULT);
    }
    let (at, size) = (
        u64_at(&buf, 0),
        u64_at(&buf, 8).min(OP_SIZE as u64) as usize,
    );
    let mut op = [0u8; OP_SIZE];
    if size < 8 || read_virt(&v.arch, &v.domain.ram, at, &mut op[..size]).is_err() {
        return err(hc::EFAULT);
    }
    let target = match u16::try_from(domid).map(u32::from) {
        Ok(id) if id == v.domain.id => return err(hc::EPERM),
        Ok(id) => domain::get(id),
        Err(_) => None,
    };
    let Some(t) = target.filter(|t| !t.life.is_ending()) else {
        return err(hc::ESRCH);
    };
    match handle(v.domain, &t, &mut op) {
        Ok(()) => match write_virt(&v.arch, &v.domain.ram, at, &op[..size]) {
            Ok(()) => ok(0),
            Err(()) => err(hc::EFAULT),
        },
        Err(e) => err(e),
    }
}

/// Carries out `op` of device-model domain `dm` on guest `t`; the answer goes into `op`.
fn handle(dm: &Domain, t: &Domain, op: &mut [u8; OP_SIZE]) -> Result<(), i64> {
    let io = &t.platform.ioreq;
    let code = u32_at(op, 0);
    match code {
        CREATE_IOREQ_SERVER if op[8] != 0 => return Err(hc::EOPNOTSUPP),
        CREATE_IOREQ_SERVER => {
            io.create(&t.ram, dm.id)?;
            op[12..14].copy_from_slice(&0u16.to_le_bytes());
            log::info!("d{}: ioreq server created by d{}", t.id, dm.id);
            return Ok(());
        }
        INJECT_MSI => {
            let msg =
                basalt_vapic::ioapic::IoApicInterrupt::from_msi(u64_at(op, 16), u32_at(op, 8))
                    .ok_or(hc::EINVAL)?;
            crate::hvm::vapic::raise_msi(&t.platform, msg);
            return Ok(());
        }
        NR_VCPUS => {
            op[8..12].copy_from_slice(&t.vcpu_count.to_le_bytes());
            return Ok(());
        }
        GET_IOREQ_SERVER_INFO..=DESTROY_IOREQ_SERVER => {}
        _ => return Err(hc::EOPNOTSUPP),
    }
    // The operations on server `id` (Basalt's one server is 0), its creator's only.
    let mut guard = io.server.lock();
    let s = match guard.as_mut() {
        Some(s) if u16_at(op, 8) == 0 && s.dm == dm.id => s,
        Some(_) if u16_at(op, 8) == 0 => return Err(hc::EPERM),
        _ => return Err(hc::ENOENT),
    };
    match code {
        // Legacy gfn-mapped pages are not offered: `XENMEM_acquire_resource` only.
        GET_IOREQ_SERVER_INFO if u16_at(op, 10) & NO_GFNS == 0 => Err(hc::EOPNOTSUPP),
        GET_IOREQ_SERVER_INFO => {
            op[12..OP_SIZE].fill(0);
            Ok(())
        }
        MAP_IO_RANGE | UNMAP_IO_RANGE => {
            let (kind, start, end) = (u32_at(op, 12), u64_at(op, 16), u64_at(op, 24));
            let r = if code == MAP_IO_RANGE {
                s.ranges.map(kind, start, end)
            } else {
                s.ranges.unmap(kind, start, end)
            };
            r.map_err(|e| match e {
                RangeError::Invalid => hc::EINVAL,
                RangeError::Exists => hc::EEXIST,
                RangeError::NoSpace => hc::ENOSPC,
                RangeError::NotFound => hc::ENOENT,
            })
        }
        SET_IOREQ_SERVER_STATE => {
            s.enabled = op[10] != 0;
            Ok(())
        }
        _ => {
            drop(guard);
            destroy(t);
            Ok(())
        }
    }
}

/// Ends the ioreq server of `t` (a `destroy`, or `t` ended): the device model's ports wait
/// again, a vCPU waiting for an answer gets all ones.
pub fn destroy(t: &Domain) {
    let Some((ports, woken)) = t.platform.ioreq.destroy() else {
        return;
    };
    if let Some(dom0) = domain::get(0)
        && let Some(x0) = &dom0.xen
    {
        let mut c = x0.channels.lock();
        for (v, port) in (0u32..).zip(ports).filter(|(_, p)| *p != 0) {
            c.disconnect(port, t.id as u16, FIRST_PORT + v);
        }
    }
    woken.into_iter().for_each(|v| t.platform.irq.kick(v));
}

/// `EVTCHNOP_bind_interdomain` of the device model to `peer`'s ioreq port `remote_port`
/// (one per vCPU, in each slot's `vp_eport`): the new local port, or Xen's errno.
pub(super) fn bind(v: &Running<'_>, peer: &Domain, remote_port: u32) -> Result<u32, i64> {
    let vcpu = (remote_port - FIRST_PORT) as usize;
    let mut guard = peer.platform.ioreq.server.lock();
    let Some(slot) = guard
        .as_mut()
        .filter(|s| s.dm == v.domain.id)
        .and_then(|s| s.dm_ports.get_mut(vcpu))
        .filter(|p| **p == 0)
    else {
        return Err(hc::EINVAL);
    };
    let local = xen(v.domain)
        .channels
        .lock()
        .bind_interdomain(peer.id as u16, remote_port)
        .map_err(|e| e.errno())?;
    *slot = local;
    Ok(local)
}

/// The device model sent on its port to `peer`'s ioreq port `port`: vCPU `port -
/// FIRST_PORT`'s answer is taken and the vCPU woken.
pub(super) fn notify(peer: &Domain, port: u32) {
    let vcpu = port - FIRST_PORT;
    if peer.platform.ioreq.notified(&peer.ram, vcpu) {
        peer.platform.irq.kick(vcpu);
    }
}

/// The device model closed its port bound to `peer`'s ioreq port `port`.
pub(super) fn unbind(peer: &Domain, port: u32, local: u32) {
    if let Some(s) = peer.platform.ioreq.server.lock().as_mut()
        && let Some(p) = s.dm_ports.get_mut((port - FIRST_PORT) as usize)
        && *p == local
    {
        *p = 0;
    }
}
