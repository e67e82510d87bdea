//! An event-channel round trip between the control domain and a guest
//! (`cargo xtask bench dom0`, docs/control-domain.md "Measured"). The same
//! image plays both sides:
//!
//! - as the control domain (`role=control`, `peer=ID count=N`): places its
//!   shared_info, allocates an unbound port for domain `peer`, waits for
//!   the peer's first event (it has bound the port), then N times clears the port's pending bit,
//!   sends, and polls (`SCHEDOP_poll`) until the peer's answer makes the
//!   port pending again. It prints `evtchn_round_trip_ticks=T per=P
//!   count=N` (TSC ticks; instructions under Bochs with one CPU) and
//!   passes.
//! - as the peer (`xen=1`, `answer=1`): places its shared_info, sets its
//!   upcall vector (`HVMOP_set_evtchn_upcall_vector`) with the local APIC
//!   enabled, binds the control domain's unbound port (trying ports 1-15
//!   until one is offered to it), sends a first event ("ready") and waits
//!   in `sti; hlt`. Its upcall
//!   handler clears the pending state, sends back on its port and EOIs; it
//!   runs until the control domain's end stops it.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{rdtsc, set_interrupt_handler};
use basalt_test_guests::hypercall::{self, xen};
use basalt_test_guests::{arg, arg_u64, fail, pass, println};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

basalt_test_guests::entry!(main);

/// The upcall vector of the peer.
const UPCALL_VECTOR: u8 = 0xf3;
/// The local APIC (xAPIC MMIO, identity-mapped by the test runtime).
const LAPIC: u64 = 0xfee0_0000;
const LAPIC_SVR: u64 = 0xf0;
const LAPIC_EOI: u64 = 0xb0;

/// The page that becomes shared_info (this guest's own RAM).
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; 4096]>);

// SAFETY: Basalt and the upcall handler change the page only through the
// atomic accessors below.
unsafe impl Sync for Page {}

static SHARED_INFO: Page = Page(UnsafeCell::new([0; 4096]));

/// The peer's bound port (0: none yet).
static PORT: AtomicU32 = AtomicU32::new(0);
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Interrupts the peer took (any vector).
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

fn word(offset: usize) -> &'static AtomicU64 {
    // SAFETY: `offset` is 8-aligned inside the page, which lives forever;
    // Basalt writes it with atomic operations too.
    unsafe {
        &*(SHARED_INFO
            .0
            .get()
            .cast::<u8>()
            .add(offset)
            .cast::<AtomicU64>())
    }
}

/// Bit of `port` in the bitmap at `base` of shared_info: (word, mask).
fn bit(base: usize, port: u32) -> (&'static AtomicU64, u64) {
    (word(base + (port as usize / 64) * 8), 1 << (port % 64))
}

fn pending(port: u32) -> bool {
    let (w, m) = bit(xen::SHARED_INFO_PENDING, port);
    w.load(Ordering::SeqCst) & m != 0
}

fn clear_pending(port: u32) -> bool {
    let (w, m) = bit(xen::SHARED_INFO_PENDING, port);
    w.fetch_and(!m, Ordering::SeqCst) & m != 0
}

fn lapic_write(reg: u64, value: u32) {
    // SAFETY: the local APIC's registers, identity-mapped uncached MMIO.
    unsafe { core::ptr::write_volatile((LAPIC + reg) as *mut u32, value) };
}

/// The peer's upcall: vCPU 0's vcpu_info is the start of shared_info
/// (`evtchn_upcall_pending` at 0, `evtchn_pending_sel` at 8).
fn on_upcall(vector: u8) {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    if vector == UPCALL_VECTOR {
        // SAFETY: byte 0 of the page (`evtchn_upcall_pending`).
        let upcall = unsafe { &*(SHARED_INFO.0.get().cast::<AtomicU8>()) };
        upcall.store(0, Ordering::SeqCst);
        word(8).swap(0, Ordering::SeqCst);
        let port = PORT.load(Ordering::SeqCst);
        if port != 0 && clear_pending(port) {
            UPCALLS.fetch_add(1, Ordering::Relaxed);
            xen::send(port);
        }
    }
    lapic_write(LAPIC_EOI, 0);
}

fn gpfn() -> u64 {
    SHARED_INFO.0.get() as u64 >> 12
}

fn peer() -> u32 {
    set_interrupt_handler(on_upcall);
    // Software-enable the local APIC, spurious vector 0xff.
    lapic_write(LAPIC_SVR, 0x1ff);
    let r = xen::place_shared_info(gpfn());
    if r != 0 {
        return fail!("add_to_physmap(shared_info) returned {r}");
    }
    let r = xen::set_upcall_vector(0, UPCALL_VECTOR);
    if r != 0 {
        return fail!("set_evtchn_upcall_vector returned {r}");
    }
    let port = loop {
        if let Some(p) = (1..16).find_map(|p| xen::bind_interdomain(0, p).ok()) {
            break p;
        }
        hypercall::sched_yield();
    };
    // The bind made the port pending (as Xen does): start clean, then say
    // "ready" with a first event (interrupts are off until the `hlt` loop,
    // and the control domain sends nothing before it, so no event is lost).
    clear_pending(port);
    PORT.store(port, Ordering::SeqCst);
    println!("evtchn: bound the control domain's port as port {port}; answering");
    let r = xen::send(port);
    if r != 0 {
        return fail!("send on port {port} returned {r}");
    }
    let mut reported = false;
    loop {
        // SAFETY: the IDT sends the upcall to `on_upcall`; STI's shadow
        // makes `sti; hlt` wait atomically.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        if !reported && UPCALLS.load(Ordering::Relaxed) > 0 {
            reported = true;
            println!(
                "evtchn: first answer sent ({} interrupts)",
                INTERRUPTS.load(Ordering::Relaxed)
            );
        }
    }
}

fn control(peer: u16, count: u64) -> u32 {
    let r = xen::place_shared_info(gpfn());
    if r != 0 {
        return fail!("add_to_physmap(shared_info) returned {r}");
    }
    let port = match xen::alloc_unbound(peer) {
        Ok(p) => p,
        Err(e) => return fail!("alloc_unbound for d{peer} returned {e}"),
    };
    // No upcall here: the port stays masked and is polled.
    let (w, m) = bit(xen::SHARED_INFO_MASK, port);
    w.fetch_or(m, Ordering::SeqCst);
    // The peer's first event says it has bound the port and is ready.
    let mut polls = 0u64;
    while !pending(port) {
        if polls == 1_000_000 {
            return match xen::status(port) {
                Ok(s) => fail!("no event from d{peer} on port {port} (status {s})"),
                Err(e) => fail!("status of port {port} returned {e}"),
            };
        }
        polls += 1;
        let r = xen::poll(&[port]);
        if r != 0 {
            return fail!("poll returned {r}");
        }
    }
    match xen::status(port) {
        Ok(xen::EVTCHNSTAT_INTERDOMAIN) => {}
        Ok(s) => return fail!("port {port} has an event but status {s}, not interdomain"),
        Err(e) => return fail!("status of port {port} returned {e}"),
    }
    println!("evtchn: port {port} bound by d{peer}; {count} round trips");
    let round_trip = || {
        clear_pending(port);
        let r = xen::send(port);
        if r != 0 {
            return r;
        }
        let mut polls = 0u32;
        while !pending(port) {
            let r = xen::poll(&[port]);
            if r != 0 {
                return r;
            }
            polls += 1;
            if polls == 100_000 {
                // Reported as a failure by the caller.
                return 1;
            }
        }
        0
    };
    // Warm up (the peer's first upcall, caches of the emulator).
    for _ in 0..10 {
        let r = round_trip();
        if r == 1 {
            return fail!("no answer from d{peer} after 100000 polls");
        }
        if r != 0 {
            return fail!("send or poll returned {r}");
        }
    }
    let start = rdtsc();
    for _ in 0..count {
        let r = round_trip();
        if r == 1 {
            return fail!("no answer from d{peer} after 100000 polls");
        }
        if r != 0 {
            return fail!("send or poll returned {r}");
        }
    }
    let ticks = rdtsc() - start;
    println!(
        "evtchn_round_trip_ticks={ticks} per={} count={count}",
        ticks / count.max(1)
    );
    pass()
}

fn main(cmdline: &str) -> u32 {
    if arg(cmdline, "answer").is_some() {
        return peer();
    }
    control(
        arg_u64(cmdline, "peer", 1) as u16,
        arg_u64(cmdline, "count", 1000),
    )
}
