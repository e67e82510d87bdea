use super::*;
use core::cell::{Cell, RefCell};

/// shared_info and vcpu_info bits in plain memory.
struct Words {
    pending: RefCell<[u64; 64]>,
    mask: RefCell<[u64; 64]>,
    sel: RefCell<Vec<u64>>,
    upcalls: RefCell<Vec<u32>>,
    calls: Cell<u32>,
}

impl Words {
    fn new(vcpus: usize) -> Self {
        Self {
            pending: RefCell::new([0; 64]),
            mask: RefCell::new([0; 64]),
            sel: RefCell::new(alloc::vec![0; vcpus]),
            upcalls: RefCell::new(Vec::new()),
            calls: Cell::new(0),
        }
    }
    fn bit(words: &RefCell<[u64; 64]>, port: u32) -> bool {
        words.borrow()[(port / 64) as usize] & (1 << (port % 64)) != 0
    }
}

impl EventWords for Words {
    fn test_and_set_pending(&self, port: u32) -> bool {
        self.calls.set(self.calls.get() + 1);
        let was = Self::bit(&self.pending, port);
        self.pending.borrow_mut()[(port / 64) as usize] |= 1 << (port % 64);
        was
    }
    fn clear_pending(&self, port: u32) {
        self.pending.borrow_mut()[(port / 64) as usize] &= !(1 << (port % 64));
    }
    fn pending(&self, port: u32) -> bool {
        Self::bit(&self.pending, port)
    }
    fn masked(&self, port: u32) -> bool {
        Self::bit(&self.mask, port)
    }
    fn test_and_clear_mask(&self, port: u32) -> bool {
        let was = Self::bit(&self.mask, port);
        self.mask.borrow_mut()[(port / 64) as usize] &= !(1 << (port % 64));
        was
    }
    fn test_and_set_selector(&self, vcpu: u32, word: u32) -> bool {
        let mut sel = self.sel.borrow_mut();
        let was = sel[vcpu as usize] & (1 << word) != 0;
        sel[vcpu as usize] |= 1 << word;
        was
    }
    fn mark_upcall(&self, vcpu: u32) {
        self.upcalls.borrow_mut().push(vcpu);
    }
}

#[test]
fn ports_start_at_one_and_are_reused() {
    let mut c = Channels::new(2, MAX_PORTS);
    assert_eq!(c.bind_ipi(0), Ok(1));
    assert_eq!(c.bind_ipi(1), Ok(2));
    assert_eq!(c.close(1), Ok(Status::Ipi));
    assert_eq!(c.alloc_unbound(0), Ok(1));
    assert_eq!(c.in_use(), 2);
    assert_eq!(c.close(1), Ok(Status::Unbound { remote: 0 }));
    assert_eq!(c.close(1), Err(Error::Invalid));
    assert_eq!(c.close(0), Err(Error::Invalid));
    assert_eq!(c.close(5000), Err(Error::Invalid));
}

#[test]
fn ports_run_out_with_enospc() {
    let mut c = Channels::new(1, 100);
    for i in 1..100 {
        assert_eq!(c.alloc_unbound(0), Ok(i));
    }
    assert_eq!(c.alloc_unbound(0), Err(Error::NoSpace));
    assert_eq!(Error::NoSpace.errno(), 28);
    c.close(50).unwrap();
    assert_eq!(c.bind_ipi(0), Ok(50));
    let mut full = Channels::new(1, MAX_PORTS);
    for _ in 1..MAX_PORTS {
        full.bind_ipi(0).unwrap();
    }
    assert_eq!(full.bind_ipi(0), Err(Error::NoSpace));
    assert!(full.footprint() < 64 * 1024);
}

#[test]
fn virq_rules() {
    let mut c = Channels::new(2, MAX_PORTS);
    let t0 = c.bind_virq(VIRQ_TIMER, 0).unwrap();
    let t1 = c.bind_virq(VIRQ_TIMER, 1).unwrap();
    assert_ne!(t0, t1);
    assert_eq!(c.bind_virq(VIRQ_TIMER, 1), Err(Error::Exists));
    assert_eq!(c.bind_virq(VIRQ_CONSOLE, 1), Err(Error::Invalid));
    assert_eq!(c.bind_virq(VIRQ_TIMER, 2), Err(Error::NoEntry));
    assert_eq!(c.bind_virq(NR_VIRQS, 0), Err(Error::Invalid));
    assert_eq!(c.bind_virq(u32::MAX, 0), Err(Error::Invalid));
    let con = c.bind_virq(VIRQ_CONSOLE, 0).unwrap();
    assert_eq!(c.virq_port(VIRQ_CONSOLE, 1), Some(con));
    assert_eq!(c.virq_port(VIRQ_TIMER, 1), Some(t1));
    assert_eq!(c.virq_port(VIRQ_DEBUG, 0), None);
    assert_eq!(c.virq_port(VIRQ_TIMER, 9), None);
    // Sending on a VIRQ port is refused; per-vCPU VIRQs cannot move, global ones can.
    assert_eq!(c.send_target(t0, 0), Err(Error::Invalid));
    assert_eq!(c.bind_vcpu(t0, 1), Err(Error::Invalid));
    assert_eq!(c.bind_vcpu(con, 1), Ok(()));
    assert_eq!(c.status(con), Ok((Status::Virq(VIRQ_CONSOLE), 1)));
    c.close(t1).unwrap();
    assert_eq!(c.virq_port(VIRQ_TIMER, 1), None);
    assert_eq!(c.bind_virq(VIRQ_TIMER, 1), Ok(t1));
}

#[test]
fn interdomain_binding_both_ways() {
    // d0 allocates a port for d5; d5 binds it.
    let mut d0 = Channels::new(1, MAX_PORTS);
    let mut d5 = Channels::new(1, MAX_PORTS);
    let p0 = d0.alloc_unbound(5).unwrap();
    assert!(d0.waits_for(p0, 5));
    assert!(!d0.waits_for(p0, 6));
    let p5 = d5.bind_interdomain(0, p0).unwrap();
    d0.connect(p0, 5, p5).unwrap();
    assert_eq!(d0.connect(p0, 5, p5), Err(Error::Invalid));
    assert_eq!(
        d0.send_target(p0, 0),
        Ok(Target::Remote {
            domain: 5,
            port: p5
        })
    );
    assert_eq!(
        d5.send_target(p5, 5),
        Ok(Target::Remote {
            domain: 0,
            port: p0
        })
    );
    assert_eq!(
        d0.status(p0),
        Ok((
            Status::Interdomain {
                remote: 5,
                port: p5
            },
            0
        ))
    );
    assert_eq!(d0.peers().collect::<Vec<_>>(), [(p0, 5, p5)]);
    // d5 closes: d0's port waits for d5 again; a stale disconnect does nothing.
    assert_eq!(
        d5.close(p5),
        Ok(Status::Interdomain {
            remote: 0,
            port: p0
        })
    );
    d0.disconnect(p0, 5, p5);
    assert_eq!(d0.status(p0), Ok((Status::Unbound { remote: 5 }, 0)));
    d0.disconnect(p0, 5, p5);
    assert_eq!(d0.send_target(p0, 0), Ok(Target::Nowhere));
}

#[test]
fn loopback_binding_to_self() {
    // xenstored: dom0 binds its own unbound port (bind_interdomain(0, port)).
    let mut d0 = Channels::new(2, MAX_PORTS);
    let a = d0.alloc_unbound(0).unwrap();
    let b = d0.bind_interdomain(0, a).unwrap();
    d0.connect(a, 0, b).unwrap();
    d0.bind_vcpu(a, 1).unwrap();
    assert_eq!(d0.send_target(b, 0), Ok(Target::Local { port: a, vcpu: 1 }));
    assert_eq!(d0.send_target(a, 0), Ok(Target::Local { port: b, vcpu: 0 }));
}

#[test]
fn two_level_delivery() {
    let w = Words::new(2);
    // Unmasked: pending, selector, one upcall.
    assert!(set_pending(&w, 70, 1));
    assert!(w.pending(70));
    assert_eq!(w.sel.borrow()[1], 1 << 1);
    assert_eq!(*w.upcalls.borrow(), [1]);
    // Already pending: nothing more.
    assert!(!set_pending(&w, 70, 1));
    // Same word, selector already set: no second upcall.
    assert!(!set_pending(&w, 71, 1));
    assert_eq!(w.upcalls.borrow().len(), 1);
    // Masked: pending only; unmask delivers.
    w.mask.borrow_mut()[0] = 1 << 5;
    assert!(!set_pending(&w, 5, 0));
    assert!(w.pending(5));
    assert_eq!(w.sel.borrow()[0], 0);
    unmask(&w, 5, 0);
    assert_eq!(w.sel.borrow()[0], 1);
    assert_eq!(*w.upcalls.borrow(), [1, 0]);
    // Unmasking a port that is not masked does nothing.
    w.sel.borrow_mut()[0] = 0;
    unmask(&w, 5, 0);
    assert_eq!(w.upcalls.borrow().len(), 2);
    // Out of range ports never touch memory.
    let before = w.calls.get();
    assert!(!set_pending(&w, MAX_PORTS, 0));
    unmask(&w, u32::MAX, 0);
    assert_eq!(w.calls.get(), before);
}
