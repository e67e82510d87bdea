//! Xen's ioreq server (docs/toolstack.md, "Devices: the ioreq server"), as three test guests:
//! a device model in the control domain (`role=control`), a guest it serves (`guest=1`, an
//! ordinary domain without Xen's interface) and a guest whose device model never answers
//! (`guest=2`).
//!
//! The device model checks the refusals of `dm_op` and of the ioreq page's mapping, creates a
//! server for each guest, registers ports 0x5000-0x500F, memory 0xE000_0000-0xE000_0FFF and PCI
//! function 00:03.0 for guest 1 and port 0x6000-0x6003 for guest 2, maps both ioreq pages with
//! `XENMEM_acquire_resource`, binds each vCPU's `vp_eport` and enables the servers. It then
//! serves guest 1: each space is a register file (bytes written read back; the configuration
//! space starts with vendor 0x1AF4, device 0xBA51), a write of a vector to port 0x500C injects
//! that MSI before the write is answered, and 0xD0 to port 0x500F ends the test. Guest 2's
//! request is seen and never answered: Basalt must crash guest 2 after its timeout and
//! disconnect the device model's port.
//!
//! Guest 1 checks port accesses of each size (an `IN` of 8 bits keeps the rest of RAX), memory
//! loads and stores of each size, a read-modify-write `OR` and `CMP` on device memory, the
//! configuration space of 00:03.0 through 0xCF8/0xCFC (00:04.0 stays Basalt's: all ones) and
//! the MSI, taken right after the `OUT` that asked for it.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{inb, inl, inw, outb, outl, outw, set_interrupt_handler};
use basalt_test_guests::hypercall::{self, hypercall3, xen};
use basalt_test_guests::{Checks, arg, fail, println};
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

basalt_test_guests::entry!(main);

const DM_OP: u64 = 41;
const PORTS: u16 = 0x5000;
const MMIO: u64 = 0xE000_0000;
const SBDF: u64 = 0x18;
const STUCK_PORT: u16 = 0x6000;
/// Guest 1's and guest 2's ioreq pages (1 GiB: above its RAM, inside the 4 GiB the runtime
/// identity-maps).
const PAGE_GPFN: [u64; 2] = [0x40000, 0x40001];

/// The device model's shared_info (a page of its RAM).
#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);
static SHARED_INFO: Page = Page([const { AtomicU64::new(0) }; 512]);
const MSI_VECTOR: u8 = 0x61;
const FIRST_PORT: u32 = 4096;

fn main(cmdline: &str) -> u32 {
    match arg(cmdline, "guest") {
        Some("1") => guest(),
        Some(_) => stuck(),
        None => device_model(),
    }
}

fn sleep_ms(ms: u64) {
    let until = hypercall::system_time_ns() as u64 + ms * 1_000_000;
    while (hypercall::system_time_ns() as u64) < until {
        hypercall::sleep_until(until, hypercall::Wait::Hlt);
    }
}

/// `dm_op(dom, 1, [op])` with the 32-byte `struct xen_dm_op` `op` (written back).
fn dm_op(dom: u16, op: &mut [u8; 32]) -> i64 {
    let buf: [u64; 2] = [op.as_mut_ptr() as u64, 32];
    // SAFETY: the buffer array and the operation are this guest's memory.
    unsafe { hypercall3(DM_OP, u64::from(dom), 1, buf.as_ptr() as u64) }
}

/// An operation `code` with the union's bytes `body`.
fn op(code: u32, body: &[u8]) -> [u8; 32] {
    let mut o = [0u8; 32];
    o[0..4].copy_from_slice(&code.to_le_bytes());
    o[8..8 + body.len()].copy_from_slice(body);
    o
}

/// `XEN_DMOP_map_io_range_to_ioreq_server` (or unmap) of server `id`.
fn range(dom: u16, unmap: bool, id: u16, kind: u32, start: u64, end: u64) -> i64 {
    let mut b = [0u8; 24];
    b[0..2].copy_from_slice(&id.to_le_bytes());
    b[4..8].copy_from_slice(&kind.to_le_bytes());
    b[8..16].copy_from_slice(&start.to_le_bytes());
    b[16..24].copy_from_slice(&end.to_le_bytes());
    dm_op(dom, &mut op(if unmap { 4 } else { 3 }, &b))
}

/// The four words of vCPU 0's `ioreq_t` in page `gpfn`.
fn slot(gpfn: u64) -> &'static [AtomicU64; 4] {
    // SAFETY: the ioreq page is mapped at `gpfn` (identity-mapped by the runtime).
    unsafe { &*((gpfn * 4096) as *const [AtomicU64; 4]) }
}

fn device_model() -> u32 {
    let mut c = Checks::new();
    let mut create = op(1, &[1]);
    let refused = [
        dm_op(0, &mut op(20, &[])),
        dm_op(999, &mut op(20, &[])),
        dm_op(1, &mut create),
        xen::acquire_resource(1, 0, 0, 1, &[PAGE_GPFN[0]], 0).0,
        dm_op(1, &mut op(7, &[])),
    ];
    println!("ioreq: refused {refused:?}");
    c.check(
        refused == [-1, -3, -95, -2, -95],
        format_args!("dm_op on itself -EPERM, no domain -ESRCH, buffered ioreqs -EOPNOTSUPP, no server's page -ENOENT, an unknown op -EOPNOTSUPP"),
    );
    let mut nr = op(20, &[]);
    let r = dm_op(1, &mut nr);
    c.check(
        r == 0 && nr[8] == 1,
        format_args!("nr_vcpus of guest 1 is 1 ({r})"),
    );
    let mut ports = [0u32; 2];
    for (i, dom) in [1u16, 2].into_iter().enumerate() {
        let mut create = op(1, &[0]);
        let made = dm_op(dom, &mut create);
        let again = dm_op(dom, &mut op(1, &[0]));
        let info_gfns = dm_op(dom, &mut op(2, &[0, 0, 0, 0]));
        let info = dm_op(dom, &mut op(2, &[0, 0, 1, 0]));
        let other = dm_op(dom, &mut op(5, &[1, 0, 1]));
        println!(
            "ioreq: d{dom} create {made} (id {}), again {again}, info {info_gfns}/{info}, server 1 {other}",
            create[12]
        );
        c.check(
            (made, again, info_gfns, info, other) == (0, -28, -95, 0, -2),
            format_args!("create 0, a second -ENOSPC, info with gfns -EOPNOTSUPP and without 0, server 1 -ENOENT"),
        );
        let frame0 = xen::acquire_resource(dom, 0, 0, 0, &[PAGE_GPFN[i]], 0).0;
        let mapped = xen::acquire_resource(dom, 0, 0, 1, &[PAGE_GPFN[i]], 0).0;
        let eport = slot(PAGE_GPFN[i])[3].load(Ordering::SeqCst) as u32;
        c.check(
            frame0 == -22 && mapped == 0 && eport == FIRST_PORT,
            format_args!("the page is frame 1 ({frame0}, {mapped}), vp_eport {eport}"),
        );
        ports[i] = match xen::bind_interdomain(dom, eport) {
            Ok(p) => p,
            Err(e) => return fail!("bind to d{dom}'s vp_eport: {e}"),
        };
        let twice = xen::bind_interdomain(dom, eport);
        let no_vcpu = xen::bind_interdomain(dom, eport + 1);
        c.check(
            twice == Err(-22) && no_vcpu == Err(-22),
            format_args!("a second bind and a vCPU that does not exist: -EINVAL"),
        );
    }
    let bad = [
        range(1, false, 0, 3, 0, 1),
        range(1, false, 0, 0, 9, 8),
        range(1, false, 0, 0, 0x5000, 0x500f),
        range(1, false, 0, 0, 0x500f, 0x5010),
        range(1, true, 0, 0, 0x5000, 0x5001),
        range(1, false, 0, 1, MMIO, MMIO + 0xfff),
        range(1, false, 0, 2, SBDF, SBDF),
        range(2, false, 0, 0, 0x6000, 0x6003),
    ];
    println!("ioreq: ranges {bad:?}");
    c.check(
        bad == [-22, -22, 0, -17, -2, 0, 0, 0],
        format_args!("ranges: a bad kind and start after end -EINVAL, an overlap -EEXIST, unmapping a range never mapped -ENOENT"),
    );
    if xen::place_shared_info(&SHARED_INFO as *const Page as u64 >> 12) != 0 {
        return fail!("shared_info could not be placed");
    }
    for dom in [2u16, 1] {
        if dm_op(dom, &mut op(5, &[0, 0, 1])) != 0 {
            return fail!("enabling d{dom}'s server failed");
        }
    }
    serve(&mut c, ports);
    c.finish()
}

/// Clears `port`'s pending bit in shared_info.
fn clear_pending(port: u32) {
    SHARED_INFO.0[xen::SHARED_INFO_PENDING / 8 + (port / 64) as usize]
        .fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
}

/// Answers guest 1 until it says it is done and guest 2 was crashed.
fn serve(c: &mut Checks, ports: [u32; 2]) {
    let mut files = [[0u8; 16], [0u8; 16]];
    let mut mmio = [0u8; 4096];
    let mut config = [0u8; 256];
    config[0..4].copy_from_slice(&0xba51_1af4u32.to_le_bytes());
    let (mut served, mut stuck_seen, mut done) = (0u32, false, false);
    let until = hypercall::system_time_ns() as u64 + 120_000_000_000;
    while !(done && stuck_seen) && (hypercall::system_time_ns() as u64) < until {
        xen::poll(&ports);
        ports.iter().for_each(|p| clear_pending(*p));
        let w = slot(PAGE_GPFN[1]);
        if w[3].load(Ordering::Acquire) >> 48 & 0xf == 1 && !stuck_seen {
            stuck_seen = true;
            println!(
                "ioreq: d2 asks for port {:#x}; not answered",
                w[0].load(Ordering::SeqCst)
            );
        }
        let w = slot(PAGE_GPFN[0]);
        let last = w[3].load(Ordering::Acquire);
        if last >> 48 & 0xf != 1 {
            continue;
        }
        let (addr, data) = (w[0].load(Ordering::SeqCst), w[1].load(Ordering::SeqCst));
        let size = (w[2].load(Ordering::SeqCst) >> 32) as usize;
        let read = last >> 53 & 1 == 1;
        let (space, at): (&mut [u8], usize) = match last >> 56 & 0xff {
            0 => (&mut files[0], (addr - u64::from(PORTS)) as usize),
            1 => (&mut mmio, (addr - MMIO) as usize),
            _ => (&mut config, (addr & 0xff) as usize),
        };
        let Some(bytes) = space.get_mut(at..at + size) else {
            c.check(
                false,
                format_args!("request out of its range: {addr:#x}+{size}"),
            );
            break;
        };
        let mut answer = [0u8; 8];
        if read {
            answer[..size].copy_from_slice(bytes);
        } else {
            bytes.copy_from_slice(&data.to_le_bytes()[..size]);
            if last >> 56 & 0xff == 0 && addr == u64::from(PORTS) + 0xc {
                let mut msi = op(14, &[]);
                msi[8] = data as u8;
                msi[16..24].copy_from_slice(&0xfee0_0000u64.to_le_bytes());
                let bad = dm_op(1, &mut op(14, &[0x61, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12]));
                c.check(
                    dm_op(1, &mut msi) == 0 && bad == -22,
                    format_args!(
                        "inject_msi: 0 for the vector, -EINVAL for an address outside 0xFEExxxxx"
                    ),
                );
            }
            done |= last >> 56 & 0xff == 0 && addr == u64::from(PORTS) + 0xf && data == 0xd0;
        }
        served += 1;
        w[1].store(u64::from_le_bytes(answer), Ordering::SeqCst);
        w[3].store(last & !(0xf << 48) | 3 << 48, Ordering::Release);
        xen::send(ports[0]);
    }
    println!("ioreq: served {served} requests; d2 seen {stuck_seen}, d1 done {done}");
    c.check(
        done && stuck_seen && served > 20,
        format_args!("both guests reached the device model"),
    );
    // Guest 2's end must disconnect the port bound to its server.
    let mut status = xen::status(ports[1]);
    for _ in 0..3000 {
        if status != Ok(xen::EVTCHNSTAT_INTERDOMAIN) {
            break;
        }
        sleep_ms(10);
        status = xen::status(ports[1]);
    }
    c.check(
        status == Ok(1),
        format_args!("the port to crashed guest 2 waits again (unbound): {status:?}"),
    );
}

static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

fn on_interrupt(vector: u8) {
    if vector == MSI_VECTOR {
        INTERRUPTS.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: the local APIC's EOI register (xAPIC page, identity-mapped).
    unsafe { write_volatile(0xfee0_00b0 as *mut u32, 0) };
}

/// `IN AL, DX` with RAX's other bytes set: what RAX holds after it.
fn in_al_keeping(port: u16) -> u64 {
    let mut rax: u64 = 0xaaaa_aaaa_aaaa_aa00;
    // SAFETY: a port read; RAX is named as in and out.
    unsafe { core::arch::asm!("in al, dx", inout("rax") rax, in("dx") port) };
    rax
}

/// `OR DWORD [addr], imm` and then `CMP DWORD [addr], imm`: whether ZF was set.
fn or_then_cmp(addr: u64) -> bool {
    let zf: u8;
    // SAFETY: device memory of this guest, identity-mapped.
    unsafe {
        core::arch::asm!(
            "or dword ptr [{a}], 0xf0000000",
            "cmp dword ptr [{a}], 0xf5060708",
            "sete {z}",
            a = in(reg) addr, z = out(reg_byte) zf,
        );
    }
    zf == 1
}

fn guest() -> u32 {
    let mut c = Checks::new();
    // Basalt's platform answers all ones until the device model enables its server.
    for _ in 0..6000 {
        if inl(PORTS) != u32::MAX {
            break;
        }
        sleep_ms(10);
    }
    outl(PORTS, 0x1122_3344);
    outw(PORTS + 6, 0xbeef);
    outb(PORTS + 9, 0x5a);
    let got = (
        inl(PORTS),
        inw(PORTS + 6),
        inb(PORTS + 9),
        in_al_keeping(PORTS + 2),
    );
    println!(
        "ioreq: ports {:#x} {:#x} {:#x} {:#x}",
        got.0, got.1, got.2, got.3
    );
    c.check(
        got == (0x1122_3344, 0xbeef, 0x5a, 0xaaaa_aaaa_aaaa_aa22),
        format_args!("port writes read back; IN AL keeps the rest of RAX"),
    );
    let m = MMIO + 0x10;
    // SAFETY: device memory of this guest, identity-mapped.
    let loads = unsafe {
        write_volatile(m as *mut u64, 0x0102_0304_0506_0708);
        write_volatile((m + 8) as *mut u16, 0x4321);
        (
            read_volatile(m as *const u64),
            read_volatile((m + 3) as *const u8),
            read_volatile((m + 8) as *const u32),
        )
    };
    let zf = or_then_cmp(m);
    // SAFETY: as above.
    let after = unsafe { read_volatile(m as *const u32) };
    println!(
        "ioreq: memory {:#x} {:#x} {:#x}; after OR {after:#x}, CMP {zf}",
        loads.0, loads.1, loads.2
    );
    c.check(
        loads == (0x0102_0304_0506_0708, 0x05, 0x4321) && after == 0xf506_0708 && zf,
        format_args!("memory stores and loads of each size; OR and CMP on device memory"),
    );
    outl(0xcf8, 0x8000_1800);
    let id = inl(0xcfc);
    outl(0xcf8, 0x8000_183c);
    outb(0xcfd, 0x7e);
    let pin = inw(0xcfc);
    outl(0xcf8, 0x8000_2000);
    let absent = inl(0xcfc);
    outl(0xcf8, 0x8000_0000);
    let bridge = inl(0xcfc);
    println!(
        "ioreq: 00:03.0 id {id:#x}, reg 0x3c {pin:#x}; 00:04.0 {absent:#x}; 00:00.0 {bridge:#x}"
    );
    c.check(
        id == 0xba51_1af4 && pin == 0x7e00 && absent == u32::MAX && bridge != u32::MAX,
        format_args!("00:03.0 is the device model's; 00:04.0 and the host bridge are Basalt's"),
    );
    set_interrupt_handler(on_interrupt);
    // SAFETY: the local APIC's spurious-vector register: software-enable it.
    unsafe { write_volatile(0xfee0_00f0 as *mut u32, 0x1ff) };
    // SAFETY: interrupts on around the write that asks for the MSI.
    unsafe { core::arch::asm!("sti") };
    outb(PORTS + 0xc, MSI_VECTOR);
    let taken = INTERRUPTS.load(Ordering::SeqCst);
    // SAFETY: interrupts off again.
    unsafe { core::arch::asm!("cli") };
    c.check(
        taken == 1,
        format_args!("the MSI arrives right after the OUT that asked for it ({taken})"),
    );
    outb(PORTS + 0xf, 0xd0);
    c.finish()
}

fn stuck() -> u32 {
    for _ in 0..6000 {
        sleep_ms(10);
        // Blocks for good once the device model enabled the server.
        let v = inl(STUCK_PORT);
        if v != u32::MAX {
            return fail!("the stuck port answered {v:#x}");
        }
    }
    fail!("the device model never enabled its server")
}
