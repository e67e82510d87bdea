//! 2-level event channels (Xen `public/event_channel.h`, `common/event_channel.c`,
//! `common/event_2l.c`).
//!
//! A domain's [`Channels`] is the table Basalt keeps in its own memory: what each port is
//! bound to and which vCPU it notifies. The pending and mask bits are the guest's, in its
//! `shared_info`, and `pending_sel`/`upcall_pending` in each `vcpu_info`: ring 0 reaches them
//! through [`EventWords`] with atomic operations, because the guest changes them at any time.
//! Nothing read from there is trusted: it only decides whether to notify.

use alloc::vec::Vec;

/// Ports of the 2-level ABI with 64-bit words: 64 × 64.
pub const MAX_PORTS: u32 = 4096;
/// `NR_VIRQS`.
pub const NR_VIRQS: u32 = 24;
/// `VIRQ_TIMER`: per vCPU.
pub const VIRQ_TIMER: u32 = 0;
/// `VIRQ_DEBUG`: per vCPU.
pub const VIRQ_DEBUG: u32 = 1;
/// `VIRQ_CONSOLE`: global (vCPU 0).
pub const VIRQ_CONSOLE: u32 = 2;
/// `VIRQ_DOM_EXC`: global; a domain ended.
pub const VIRQ_DOM_EXC: u32 = 3;

/// Whether `virq` is bound per vCPU (Xen's `virq_is_global` is the complement): TIMER,
/// DEBUG, XENOPROF (5) and XENPMU (13). Every other VIRQ is global and bound on vCPU 0.
pub fn virq_is_per_vcpu(virq: u32) -> bool {
    matches!(virq, 0 | 1 | 5 | 13)
}

/// `EVTCHNSTAT_*`, what `EVTCHNOP_status` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `EVTCHNSTAT_closed` (0).
    Closed,
    /// `EVTCHNSTAT_unbound` (1): waits for `remote` to bind.
    Unbound {
        /// The domain allowed to bind.
        remote: u16,
    },
    /// `EVTCHNSTAT_interdomain` (2).
    Interdomain {
        /// The peer domain.
        remote: u16,
        /// The peer's port.
        port: u32,
    },
    /// `EVTCHNSTAT_virq` (4).
    Virq(u32),
    /// `EVTCHNSTAT_ipi` (5).
    Ipi,
}

impl Status {
    /// The `EVTCHNSTAT_*` number.
    pub fn code(&self) -> u32 {
        match self {
            Self::Closed => 0,
            Self::Unbound { .. } => 1,
            Self::Interdomain { .. } => 2,
            Self::Virq(_) => 4,
            Self::Ipi => 5,
        }
    }
}

/// Why an event-channel operation was refused, as Xen's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// `-EINVAL`: no such port, vCPU or VIRQ, or a port in the wrong state.
    Invalid,
    /// `-ENOSPC`: every port is in use.
    NoSpace,
    /// `-EEXIST`: the VIRQ is already bound on that vCPU.
    Exists,
    /// `-ENOENT`: no such vCPU.
    NoEntry,
}

impl Error {
    /// The Xen errno (positive; the hypercall returns its negation).
    pub fn errno(self) -> i64 {
        match self {
            Self::Invalid => 22,
            Self::NoSpace => 28,
            Self::Exists => 17,
            Self::NoEntry => 2,
        }
    }
}

/// One port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Port {
    status: Status,
    /// The vCPU it notifies.
    vcpu: u32,
}

const FREE: Port = Port {
    status: Status::Closed,
    vcpu: 0,
};

/// Where an event sent on a port goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A port of the same domain, notifying `vcpu` (an IPI, a VIRQ, or an interdomain
    /// channel whose peer is this domain).
    Local {
        /// The port to set pending.
        port: u32,
        /// The vCPU to notify.
        vcpu: u32,
    },
    /// The peer `port` of domain `domain` (which says which vCPU).
    Remote {
        /// The peer domain.
        domain: u16,
        /// Its port.
        port: u32,
    },
    /// Nothing: the port is unbound (Xen drops the event silently).
    Nowhere,
}

/// A domain's event-channel table.
#[derive(Debug)]
pub struct Channels {
    ports: Vec<Port>,
    /// `virqs[vcpu][virq]`: the bound port, 0 = none.
    virqs: Vec<[u16; NR_VIRQS as usize]>,
    /// The most ports this domain may use.
    limit: u32,
}

impl Channels {
    /// A table for a domain with `vcpus` vCPUs that may use ports below `limit` (at most
    /// [`MAX_PORTS`]). Port 0 is never handed out (Linux treats it as "none").
    pub fn new(vcpus: u32, limit: u32) -> Self {
        Self {
            ports: alloc::vec![FREE],
            virqs: alloc::vec![[0; NR_VIRQS as usize]; vcpus as usize],
            limit: limit.clamp(1, MAX_PORTS),
        }
    }

    /// Ports in use.
    pub fn in_use(&self) -> usize {
        self.ports
            .iter()
            .filter(|p| p.status != Status::Closed)
            .count()
    }

    /// Bytes of memory the table holds.
    pub fn footprint(&self) -> usize {
        self.ports.capacity() * core::mem::size_of::<Port>()
            + self.virqs.capacity() * core::mem::size_of::<[u16; NR_VIRQS as usize]>()
    }

    fn vcpus(&self) -> u32 {
        self.virqs.len() as u32
    }

    fn get(&self, port: u32) -> Result<&Port, Error> {
        if port == 0 {
            return Err(Error::Invalid);
        }
        self.ports.get(port as usize).ok_or(Error::Invalid)
    }

    fn get_mut(&mut self, port: u32) -> Result<&mut Port, Error> {
        if port == 0 {
            return Err(Error::Invalid);
        }
        self.ports.get_mut(port as usize).ok_or(Error::Invalid)
    }

    /// The lowest free port, growing the table in steps of 64.
    fn allocate(&mut self, status: Status, vcpu: u32) -> Result<u32, Error> {
        let free = self
            .ports
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, p)| p.status == Status::Closed)
            .map(|(i, _)| i);
        let index = match free {
            Some(i) => i,
            None => {
                let next = self.ports.len();
                if next as u32 >= self.limit {
                    return Err(Error::NoSpace);
                }
                let grow = (next + 64).min(self.limit as usize);
                self.ports.resize(grow, FREE);
                next
            }
        };
        self.ports[index] = Port { status, vcpu };
        Ok(index as u32)
    }

    /// `EVTCHNOP_alloc_unbound`: a port that `remote` may bind to.
    pub fn alloc_unbound(&mut self, remote: u16) -> Result<u32, Error> {
        self.allocate(Status::Unbound { remote }, 0)
    }

    /// `EVTCHNOP_bind_virq`: per-vCPU VIRQs on any vCPU, global ones on vCPU 0 only.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, Error> {
        if virq >= NR_VIRQS {
            return Err(Error::Invalid);
        }
        if vcpu >= self.vcpus() {
            return Err(Error::NoEntry);
        }
        if !virq_is_per_vcpu(virq) && vcpu != 0 {
            return Err(Error::Invalid);
        }
        if self.virqs[vcpu as usize][virq as usize] != 0 {
            return Err(Error::Exists);
        }
        let port = self.allocate(Status::Virq(virq), vcpu)?;
        self.virqs[vcpu as usize][virq as usize] = port as u16;
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<u32, Error> {
        if vcpu >= self.vcpus() {
            return Err(Error::NoEntry);
        }
        self.allocate(Status::Ipi, vcpu)
    }

    /// The local half of `EVTCHNOP_bind_interdomain`: a new port connected to `remote`'s
    /// `remote_port`, notifying vCPU 0. The caller has checked (and, on success, updates)
    /// the peer's side with [`Self::connect`].
    pub fn bind_interdomain(&mut self, remote: u16, remote_port: u32) -> Result<u32, Error> {
        self.allocate(
            Status::Interdomain {
                remote,
                port: remote_port,
            },
            0,
        )
    }

    /// Whether `port` is unbound and waiting for domain `binder` (the check of the peer side
    /// of a bind).
    pub fn waits_for(&self, port: u32, binder: u16) -> bool {
        matches!(self.get(port), Ok(p) if p.status == Status::Unbound { remote: binder })
    }

    /// The peer side of a bind: the unbound `port` becomes connected to `remote`'s
    /// `remote_port`. Fails unless [`Self::waits_for`] holds.
    pub fn connect(&mut self, port: u32, remote: u16, remote_port: u32) -> Result<(), Error> {
        let p = self.get_mut(port)?;
        if p.status != (Status::Unbound { remote }) {
            return Err(Error::Invalid);
        }
        p.status = Status::Interdomain {
            remote,
            port: remote_port,
        };
        Ok(())
    }

    /// The undoing of a bind by the peer closing its port: `port`, if it is still connected
    /// to `remote`'s `remote_port`, waits for `remote` again (Xen's behaviour).
    pub fn disconnect(&mut self, port: u32, remote: u16, remote_port: u32) {
        if let Ok(p) = self.get_mut(port)
            && p.status
                == (Status::Interdomain {
                    remote,
                    port: remote_port,
                })
        {
            p.status = Status::Unbound { remote };
        }
    }

    /// `EVTCHNOP_close`: frees `port`; returns what it was, so that the caller disconnects an
    /// interdomain peer and clears the port's pending bit.
    pub fn close(&mut self, port: u32) -> Result<Status, Error> {
        let p = *self.get(port)?;
        if p.status == Status::Closed {
            return Err(Error::Invalid);
        }
        if let Status::Virq(virq) = p.status
            && let Some(slot) = self
                .virqs
                .get_mut(p.vcpu as usize)
                .and_then(|v| v.get_mut(virq as usize))
        {
            *slot = 0;
        }
        self.ports[port as usize] = FREE;
        Ok(p.status)
    }

    /// `EVTCHNOP_status`: the binding and the vCPU notified.
    pub fn status(&self, port: u32) -> Result<(Status, u32), Error> {
        if port == 0 || port >= self.limit {
            return Err(Error::Invalid);
        }
        Ok(match self.ports.get(port as usize) {
            Some(p) => (p.status, p.vcpu),
            None => (Status::Closed, 0),
        })
    }

    /// `EVTCHNOP_bind_vcpu`: interdomain and unbound ports, and global VIRQs, may move; IPIs
    /// and per-vCPU VIRQs may not (Xen's rule, `-EINVAL`).
    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), Error> {
        if vcpu >= self.vcpus() {
            return Err(Error::NoEntry);
        }
        let p = self.get_mut(port)?;
        match p.status {
            Status::Interdomain { .. } | Status::Unbound { .. } => p.vcpu = vcpu,
            Status::Virq(v) if !virq_is_per_vcpu(v) => p.vcpu = vcpu,
            _ => return Err(Error::Invalid),
        }
        Ok(())
    }

    /// The vCPU `port` notifies (`None`: the port is closed or out of range).
    pub fn notify_vcpu(&self, port: u32) -> Option<u32> {
        self.get(port)
            .ok()
            .filter(|p| p.status != Status::Closed)
            .map(|p| p.vcpu)
    }

    /// The port `virq` is bound to on `vcpu` (global VIRQs: on vCPU 0).
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<u32> {
        let vcpu = if virq_is_per_vcpu(virq) { vcpu } else { 0 };
        let port = *self.virqs.get(vcpu as usize)?.get(virq as usize)?;
        (port != 0).then_some(u32::from(port))
    }

    /// `EVTCHNOP_send` on `port`, from the domain `me`: where the event goes. Only
    /// interdomain and IPI ports can be sent on (a VIRQ port: `-EINVAL`, as on Xen).
    pub fn send_target(&self, port: u32, me: u16) -> Result<Target, Error> {
        let p = self.get(port)?;
        match p.status {
            Status::Ipi => Ok(Target::Local { port, vcpu: p.vcpu }),
            Status::Interdomain { remote, port } if remote == me => {
                let vcpu = self.notify_vcpu(port).ok_or(Error::Invalid)?;
                Ok(Target::Local { port, vcpu })
            }
            Status::Interdomain { remote, port } => Ok(Target::Remote {
                domain: remote,
                port,
            }),
            Status::Unbound { .. } => Ok(Target::Nowhere),
            Status::Closed | Status::Virq(_) => Err(Error::Invalid),
        }
    }

    /// Every interdomain peer (domain, port) of this table: what must be disconnected when
    /// the domain goes away.
    pub fn peers(&self) -> impl Iterator<Item = (u32, u16, u32)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p.status {
                Status::Interdomain { remote, port } => Some((i as u32, remote, port)),
                _ => None,
            })
    }
}

/// The guest-owned bits of 2-level delivery (shared_info and each vcpu_info), accessed
/// atomically by ring 0.
pub trait EventWords {
    /// Sets pending bit `port`; returns whether it was already set.
    fn test_and_set_pending(&self, port: u32) -> bool;
    /// Clears pending bit `port`.
    fn clear_pending(&self, port: u32);
    /// Whether pending bit `port` is set.
    fn pending(&self, port: u32) -> bool;
    /// Whether mask bit `port` is set.
    fn masked(&self, port: u32) -> bool;
    /// Clears mask bit `port`; returns whether it was set.
    fn test_and_clear_mask(&self, port: u32) -> bool;
    /// Sets bit `word` of `vcpu`'s `evtchn_pending_sel`; returns whether it was already set.
    fn test_and_set_selector(&self, vcpu: u32, word: u32) -> bool;
    /// Sets `vcpu`'s `evtchn_upcall_pending` and raises its upcall.
    fn mark_upcall(&self, vcpu: u32);
}

/// Xen's `evtchn_2l_set_pending`: sets `port` pending; if it was not and is unmasked, sets
/// its word in `vcpu`'s selector and, if that was clear, raises the upcall. Returns whether
/// the vCPU was notified.
pub fn set_pending(words: &impl EventWords, port: u32, vcpu: u32) -> bool {
    if port >= MAX_PORTS || words.test_and_set_pending(port) {
        return false;
    }
    if !words.masked(port) && !words.test_and_set_selector(vcpu, port / 64) {
        words.mark_upcall(vcpu);
        return true;
    }
    false
}

/// Xen's `evtchn_2l_unmask`: clears the mask; a port left pending while masked is delivered
/// now.
pub fn unmask(words: &impl EventWords, port: u32, vcpu: u32) {
    if port >= MAX_PORTS {
        return;
    }
    if words.test_and_clear_mask(port)
        && words.pending(port)
        && !words.test_and_set_selector(vcpu, port / 64)
    {
        words.mark_upcall(vcpu);
    }
}

#[cfg(test)]
mod tests;
