use super::*;
use std::sync::atomic::AtomicU64;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Records accesses; reads answer `0x1122_3344_5566_7788` masked to size.
#[derive(Default)]
struct Log(Vec<(Access, u32, Option<u64>)>);

impl Handler for Log {
    fn access(&mut self, at: Access, size: u32, write: Option<u64>) -> u64 {
        self.0.push((at, size, write));
        0x1122_3344_5566_7788 & (u64::MAX >> (64 - 8 * size))
    }
}

fn page() -> Vec<AtomicU64> {
    (0..512).map(|_| AtomicU64::new(0)).collect()
}

/// One request as the hypervisor writes it.
struct Req {
    addr: u64,
    data: u64,
    count: u32,
    size: u32,
    flags: u8,
    kind: u8,
}

/// Fills vCPU `v`'s slot as the hypervisor would.
fn fill(p: &[AtomicU64], v: usize, r: Req) {
    let s = Ordering::Relaxed;
    p[v * 4].store(r.addr, s);
    p[v * 4 + 1].store(r.data, s);
    p[v * 4 + 2].store(u64::from(r.count) | u64::from(r.size) << 32, s);
    let port = 40 + v as u64;
    let w3 = port | u64::from(r.flags | STATE_READY) << 48 | u64::from(r.kind) << 56;
    p[v * 4 + 3].store(w3, Ordering::Release);
}

fn req(addr: u64, data: u64, count: u32, size: u32, flags: u8, kind: u8) -> Req {
    Req {
        addr,
        data,
        count,
        size,
        flags,
        kind,
    }
}

fn state(p: &[AtomicU64], v: usize) -> u64 {
    (p[v * 4 + 3].load(Ordering::Acquire) >> 48) & 0xf
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory")
}

#[test]
fn layout_matches_xen() {
    // struct ioreq as Xen lays it out: byte 30 holds the state and flags,
    // byte 31 the type; vp_eport at 24.
    let p = page();
    fill(&p, 3, req(0xcf8, 0, 1, 4, 0x20, TYPE_PIO));
    let w3 = p[15].load(Ordering::Relaxed).to_le_bytes();
    assert_eq!(&w3[..4], &43u32.to_le_bytes());
    assert_eq!(w3[6], 0x21, "state READY, dir read");
    assert_eq!(w3[7], TYPE_PIO);
    assert_eq!(Page::new(&p).vp_eport(3), 43);
}

#[test]
fn serves_reads_and_writes_of_each_type() {
    let p = page();
    let pg = Page::new(&p);
    let m = mem();
    let mut log = Log::default();
    fill(&p, 0, req(0xe000_0014, 0, 1, 1, 0x20, TYPE_COPY));
    fill(&p, 1, req(0x10, 0xdead, 1, 2, 0, TYPE_PIO));
    fill(
        &p,
        2,
        req((0x20u64 << 32) | 0x10, 0, 1, 4, 0x20, TYPE_PCI_CONFIG),
    );
    for v in 0..3 {
        assert!(pg.serve(v, &m, &mut log));
        assert_eq!(state(&p, v), u64::from(STATE_IORESP_READY));
    }
    assert_eq!(
        log.0,
        vec![
            (Access::Mmio(0xe000_0014), 1, None),
            (Access::Port(0x10), 2, Some(0xdead)),
            (
                Access::PciConfig {
                    sbdf: 0x20,
                    reg: 0x10
                },
                4,
                None
            ),
        ]
    );
    assert_eq!(p[1].load(Ordering::Relaxed), 0x88, "a read's value");
    assert_eq!(p[5].load(Ordering::Relaxed), 0xdead, "a write's data stays");
    assert_eq!(p[9].load(Ordering::Relaxed), 0x5566_7788);
    assert_eq!(pg.vp_eport(2), 42, "the rest of the word kept");
    // Answered or empty slots are left alone.
    assert!(!pg.serve(0, &m, &mut log));
    assert!(!pg.serve(5, &m, &mut log));
    assert!(!pg.serve(SLOTS, &m, &mut log));
    assert_eq!(log.0.len(), 3);
}

#[test]
fn rep_transfers_go_through_guest_memory() {
    let p = page();
    let pg = Page::new(&p);
    let m = mem();
    let mut log = Log::default();
    // rep insw from port 0x60, 3 items, into guest memory at 0x100.
    fill(&p, 0, req(0x60, 0x100, 3, 2, 0x30, TYPE_PIO));
    assert!(pg.serve(0, &m, &mut log));
    let mut b = [0u8; 6];
    m.read_slice(&mut b, GuestAddress(0x100)).expect("read");
    assert_eq!(b, [0x88, 0x77, 0x88, 0x77, 0x88, 0x77]);
    assert!(log.0.iter().all(|e| e.0 == Access::Port(0x60)));
    // rep movsd to MMIO, backwards (df), from 0x208.
    m.write_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0], GuestAddress(0x200))
        .expect("write");
    log.0.clear();
    fill(&p, 1, req(0xe000_0008, 0x208, 3, 4, 0x50, TYPE_COPY));
    assert!(pg.serve(1, &m, &mut log));
    assert_eq!(
        log.0,
        vec![
            (Access::Mmio(0xe000_0008), 4, Some(3)),
            (Access::Mmio(0xe000_0004), 4, Some(2)),
            (Access::Mmio(0xe000_0000), 4, Some(1)),
        ]
    );
    // A pointer outside guest memory stops the transfer, still answered.
    log.0.clear();
    fill(&p, 2, req(0x60, 0xffff_0000, 1000, 4, 0x30, TYPE_PIO));
    assert!(pg.serve(2, &m, &mut log));
    assert_eq!(state(&p, 2), u64::from(STATE_IORESP_READY));
    assert_eq!(log.0.len(), 1);
}

#[test]
fn unknown_types_read_all_ones() {
    let p = page();
    let m = mem();
    let mut log = Log::default();
    fill(&p, 0, req(0, 5, 1, 4, 0x20, 7));
    assert!(Page::new(&p).serve(0, &m, &mut log));
    assert_eq!(p[1].load(Ordering::Relaxed), u64::MAX);
    assert!(log.0.is_empty());
}

#[test]
fn dm_op_encodings() {
    let mut b = create_server();
    assert_eq!(&b[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(b[8], 0, "no buffered ioreqs");
    b[12] = 7;
    assert_eq!(created_id(&b), 7);
    let b = io_range(true, 3, range::PCI, 0x20, 0x20);
    assert_eq!(u32::from_le_bytes(b[..4].try_into().expect("op")), 3);
    assert_eq!(&b[8..12], &[3, 0, 0, 0]);
    assert_eq!(&b[12..16], &[2, 0, 0, 0]);
    assert_eq!(
        u64::from_le_bytes(b[16..24].try_into().expect("start")),
        0x20
    );
    assert_eq!(u64::from_le_bytes(b[24..32].try_into().expect("end")), 0x20);
    assert_eq!(io_range(false, 3, range::MEMORY, 0, 1)[0], 4);
    assert_eq!(
        &set_state(9, true)[..12],
        &[5, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0]
    );
    assert_eq!(&destroy(9)[..12], &[6, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0]);
    let b = inject_msi(0xfee0_1000, 0x4041);
    assert_eq!(b[0], 14);
    assert_eq!(
        u32::from_le_bytes(b[8..12].try_into().expect("data")),
        0x4041
    );
    assert_eq!(
        u64::from_le_bytes(b[16..24].try_into().expect("addr")),
        0xfee0_1000
    );
    assert_eq!(nr_vcpus()[0], 20);
    assert_eq!(sbdf(4), 0x20, "0000:00:04.0");
    assert_eq!(sbdf(31), 0xf8);
}

/// A request as ring 0 encodes it (`basalt_xen::ioreq::Request::words`, the other reading of
/// Xen's header) is served as that access, and answered in place.
#[test]
fn serves_what_ring_0_writes() {
    let p = page();
    let r = basalt_xen::ioreq::Request {
        kind: TYPE_PIO,
        addr: 0xc050,
        data: 0,
        size: 2,
        read: true,
    };
    for (i, w) in r.words(4097).into_iter().enumerate() {
        p[4 + i].store(w, Ordering::Release);
    }
    let mut log = Log::default();
    assert!(Page::new(&p).serve(1, &mem(), &mut log));
    assert_eq!(log.0, vec![(Access::Port(0xc050), 2, None)]);
    assert_eq!(Page::new(&p).vp_eport(1), 4097);
    assert_eq!(p[5].load(Ordering::Acquire), 0x7788);
    assert_eq!(state(&p, 1), u64::from(STATE_IORESP_READY));
}
