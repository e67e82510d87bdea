//! A domain's ioreq server (docs/toolstack.md, "Devices: the ioreq server"): the ranges a
//! device model in the control domain registered, the shared page with one Xen `ioreq_t` per
//! vCPU, and each vCPU's request in flight. A vCPU with a request waits (its wake-up is
//! [`IoreqState::wait_ends`], nothing else) until the device model answers and notifies, or
//! until [`TIMEOUT_NS`] passes; the answer is read from the page when the device model
//! notifies, so the scheduler's checks never touch the page.

use super::memory::GuestRam;
use alloc::vec::Vec;
use basalt_xen::ioreq::{self, FIRST_PORT, Ranges, Request, STATE_IORESP_READY};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Mutex;

/// How long a vCPU waits for its device model before the domain is crashed.
pub const TIMEOUT_NS: u64 = 5_000_000_000;

/// The server of a domain (Basalt has one per domain: id 0).
#[derive(Debug)]
pub struct Server {
    /// The domain whose device model created it.
    pub dm: u32,
    /// `XEN_DMOP_set_ioreq_server_state`: requests are sent only when on.
    pub enabled: bool,
    /// What it emulates.
    pub ranges: Ranges,
    /// Per vCPU, the device model's port bound to `FIRST_PORT + vcpu` (0: not bound).
    pub dm_ports: Vec<u32>,
}

/// What completes the instruction once the answer is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Nothing (a write: the instruction was completed when it was sent).
    Nothing,
    /// An `IN`: the value goes into RAX.
    PortIn,
    /// A memory read at this guest-physical address: the instruction is emulated again with
    /// the value.
    Mmio(u64),
}

/// A vCPU's request in flight.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// What was asked.
    pub req: Request,
    /// What its answer completes.
    pub then: Then,
    /// System time after which the device model counts as dead.
    pub deadline: u64,
    /// The device model's data, once it answered.
    pub answer: Option<u64>,
}

/// The ioreq state of a domain's platform.
#[derive(Debug)]
pub struct IoreqState {
    /// Whether the domain ever had a server (one load on the paths of the others).
    used: AtomicBool,
    /// The server.
    pub server: Mutex<Option<Server>>,
    /// Host frame of the shared page (the domain's, freed with its RAM; kept across a
    /// destroy and a new create), 0 before the first create.
    page: AtomicU64,
    waits: Vec<Mutex<Option<Pending>>>,
}

impl IoreqState {
    /// No server, for a domain with `vcpus` vCPUs.
    pub fn new(vcpus: u32) -> Self {
        Self {
            used: AtomicBool::new(false),
            server: Mutex::new(None),
            page: AtomicU64::new(0),
            waits: (0..vcpus).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Runs `f` on the four words of vCPU `vcpu`'s slot; `None` without a page or once the
    /// RAM was taken.
    fn slot<R>(
        &self,
        ram: &GuestRam,
        vcpu: u32,
        f: impl FnOnce(&[AtomicU64; 4]) -> R,
    ) -> Option<R> {
        let page = self.page.load(Ordering::SeqCst);
        if page == 0 || u64::from(vcpu) >= 4096 / ioreq::SLOT_SIZE || !ram.pin() {
            return None;
        }
        let at = crate::mm::DIRECT_MAP_BASE + page + u64::from(vcpu) * ioreq::SLOT_SIZE;
        // SAFETY: `page` is a 4 KiB frame of the domain (`alloc_frame`), direct-mapped and
        // freed only with its RAM, which the pin keeps; `at` is 32-aligned inside it. An
        // `AtomicU64` has the layout of a `u64`; the device model's accesses are its own.
        let r = f(unsafe { &*(at as *const [AtomicU64; 4]) });
        ram.unpin();
        Some(r)
    }

    /// `XEN_DMOP_create_ioreq_server` by domain `dm`: the page (one idle slot per vCPU, its
    /// `vp_eport` set) and an empty, disabled server. Xen's errno on failure.
    pub fn create(&self, ram: &GuestRam, dm: u32) -> Result<(), i64> {
        let mut s = self.server.lock();
        if s.is_some() {
            return Err(basalt_guest::hypercall::ENOSPC);
        }
        if self.page.load(Ordering::SeqCst) == 0 {
            let page = ram.alloc_frame().ok_or(basalt_guest::hypercall::ENOMEM)?;
            self.page.store(page, Ordering::SeqCst);
        }
        for v in 0..self.waits.len() as u32 {
            self.slot(ram, v, |w| {
                w.iter().for_each(|x| x.store(0, Ordering::SeqCst));
                w[3].store(u64::from(FIRST_PORT + v), Ordering::SeqCst);
            });
        }
        *s = Some(Server {
            dm,
            enabled: false,
            ranges: Ranges::default(),
            dm_ports: alloc::vec![0; self.waits.len()],
        });
        self.used.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The page's host frame, for the device model's mapping (`acquire_resource`).
    pub fn page(&self) -> Option<u64> {
        self.server.lock().as_ref()?;
        Some(self.page.load(Ordering::SeqCst)).filter(|p| *p != 0)
    }

    /// `XEN_DMOP_destroy_ioreq_server`: the server goes; a request in flight is answered
    /// with all ones (no device). Returns the device model's bound ports (to disconnect)
    /// and the vCPUs to wake.
    pub fn destroy(&self) -> Option<(Vec<u32>, Vec<u32>)> {
        let s = self.server.lock().take()?;
        let woken = (0..self.waits.len() as u32)
            .filter(|&v| {
                let mut w = self.waits[v as usize].lock();
                w.as_mut()
                    .filter(|p| p.answer.is_none())
                    .map(|p| p.answer = Some(u64::MAX))
                    .is_some()
            })
            .collect();
        Some((s.dm_ports, woken))
    }

    /// Whether a server was ever created for the domain (one load: the exit paths ask first).
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether an access of `len` units at `at` in range kind `kind` goes to the device
    /// model.
    pub fn claims(&self, kind: u32, at: u64, len: u64) -> bool {
        self.used()
            && self
                .server
                .lock()
                .as_ref()
                .is_some_and(|s| s.enabled && s.ranges.contains(kind, at, len))
    }

    /// Puts `req` in vCPU `vcpu`'s slot and records it; returns the device model's port to
    /// notify (0: not bound yet: the request waits for the timeout), `None` when the server
    /// went meanwhile (nothing recorded: the access is not the device model's).
    pub fn issue(
        &self,
        ram: &GuestRam,
        vcpu: u32,
        req: Request,
        then: Then,
        now: u64,
    ) -> Option<u32> {
        let server = self.server.lock();
        let port = server.as_ref()?.dm_ports[vcpu as usize];
        let words = req.words(FIRST_PORT + vcpu);
        self.slot(ram, vcpu, |w| {
            w.iter()
                .zip(words)
                .for_each(|(x, v)| x.store(v, Ordering::Release));
        });
        *self.waits[vcpu as usize].lock() = Some(Pending {
            req,
            then,
            deadline: now + TIMEOUT_NS,
            answer: None,
        });
        Some(port)
    }

    /// The device model notified vCPU `vcpu`'s channel: an answer in the slot is taken
    /// (the slot is free again). Whether the vCPU now has its answer.
    pub fn notified(&self, ram: &GuestRam, vcpu: u32) -> bool {
        let Some(mut w) = self.waits.get(vcpu as usize).map(|w| w.lock()) else {
            return false;
        };
        let Some(p) = w.as_mut().filter(|p| p.answer.is_none()) else {
            return false;
        };
        p.answer = self
            .slot(ram, vcpu, |w| {
                let last = w[3].load(Ordering::Acquire);
                (ioreq::state(last) == STATE_IORESP_READY).then(|| {
                    let data = w[1].load(Ordering::Relaxed);
                    w[3].store(last & !(0xf << 48), Ordering::Release);
                    data
                })
            })
            .flatten();
        p.answer.is_some()
    }

    /// `Some(ends)` while vCPU `vcpu` has a request in flight: only its answer, or its
    /// deadline passing, ends its wait.
    pub fn wait_ends(&self, vcpu: u32) -> Option<bool> {
        if !self.used.load(Ordering::Relaxed) {
            return None;
        }
        let w = self.waits.get(vcpu as usize)?.lock();
        let p = w.as_ref()?;
        Some(p.answer.is_some() || crate::time::now_ns() >= p.deadline)
    }

    /// The deadline of vCPU `vcpu`'s request in flight.
    pub fn deadline(&self, vcpu: u32) -> Option<u64> {
        if !self.used.load(Ordering::Relaxed) {
            return None;
        }
        Some(self.waits.get(vcpu as usize)?.lock().as_ref()?.deadline)
    }

    /// Takes vCPU `vcpu`'s request if it was answered (`Ok`, with the answer), or says it
    /// still waits (`Err`); `None` without one.
    pub fn take(&self, vcpu: u32) -> Option<Result<(Pending, u64), Pending>> {
        if !self.used.load(Ordering::Relaxed) {
            return None;
        }
        let mut w = self.waits.get(vcpu as usize)?.lock();
        let p = (*w)?;
        Some(match p.answer {
            Some(a) => {
                *w = None;
                Ok((p, a))
            }
            None => Err(p),
        })
    }
}
