use super::*;
use crate::virtio_pci::tests::{Driver, MSI_ADDR, QSIZE, disk};
use vm_memory::{Bytes, GuestAddress};

const HDR: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x30000;

fn header(d: &Driver, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    d.mem.write_slice(&h, GuestAddress(HDR)).expect("header");
    d.mem
        .write_obj(0xffu8, GuestAddress(STATUS))
        .expect("status");
}

fn status(d: &Driver) -> u8 {
    d.mem.read_obj(GuestAddress(STATUS)).expect("status")
}

fn ready(name: &str, sectors: u64, readonly: bool) -> (std::path::PathBuf, Driver) {
    let (p, dev) = disk(name, sectors, readonly);
    let mut d = Driver::probe(dev);
    assert_eq!(d.negotiate(u64::MAX), 0xb);
    d.setup_queue();
    (p, d)
}

#[test]
fn reads_writes_flushes_and_ids_like_linux() {
    let (p, mut d) = ready("rw", 64, false);
    assert_eq!(d.device_cfg(0, 8), 64, "capacity in sectors");
    assert_eq!(d.offer() & 1 << 2, 1 << 2, "SEG_MAX offered");
    assert_eq!(d.device_cfg(12, 4), 254, "seg_max");
    // Read sectors 3-4 into two data buffers.
    header(&d, VIRTIO_BLK_T_IN, 3);
    let head = d.submit(&[
        (HDR, 16, false),
        (DATA, 512, true),
        (DATA + 0x1000, 512, true),
        (STATUS, 1, true),
    ]);
    assert_eq!(status(&d), VIRTIO_BLK_S_OK as u8);
    let mut got = [0u8; 512];
    d.mem
        .read_slice(&mut got, GuestAddress(DATA))
        .expect("read");
    assert_eq!(got, [3u8; 512]);
    d.mem
        .read_slice(&mut got, GuestAddress(DATA + 0x1000))
        .expect("read");
    assert_eq!(got, [4u8; 512]);
    assert_eq!(
        d.used(0),
        ((u32::from(head), 1025), 1),
        "data + status written"
    );
    assert_eq!(
        d.msi.0,
        vec![(MSI_ADDR, 0x4021)],
        "queue vector 1's message"
    );

    // Write sector 10 from guest memory, then flush.
    d.mem
        .write_slice(&[0xa5; 1024], GuestAddress(DATA))
        .expect("fill");
    header(&d, VIRTIO_BLK_T_OUT, 10);
    d.submit(&[(HDR, 16, false), (DATA, 1024, false), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_OK as u8);
    assert_eq!(d.used(1), ((4, 1), 2), "only the status is written");
    header(&d, VIRTIO_BLK_T_FLUSH, 0);
    d.submit(&[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_OK as u8);
    let file = std::fs::read(&p).expect("disk");
    assert_eq!(&file[10 * 512..12 * 512], &[0xa5; 1024][..]);
    assert_eq!(
        &file[12 * 512..13 * 512],
        &[12u8; 512][..],
        "nothing past it"
    );

    // GET_ID: the file's name, NUL-padded to 20 bytes.
    header(&d, VIRTIO_BLK_T_GET_ID, 0);
    d.submit(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_OK as u8);
    let mut id = [0u8; 20];
    d.mem.read_slice(&mut id, GuestAddress(DATA)).expect("id");
    assert_eq!(&id[..2], b"rw");
    assert_eq!(id[2..], [0u8; 18]);
    assert_eq!(d.used(3).0.1, 21);
    assert_eq!(d.msi.0.len(), 4, "one message per completion");
    std::fs::remove_file(p).ok();
}

#[test]
fn bad_requests_get_a_status_not_a_panic() {
    let (p, mut d) = ready("bad", 16, false);
    // Past the end: IOERR, the file untouched.
    header(&d, VIRTIO_BLK_T_OUT, 15);
    d.submit(&[(HDR, 16, false), (DATA, 1024, false), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_IOERR as u8);
    header(&d, VIRTIO_BLK_T_IN, u64::MAX / 256);
    d.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_IOERR as u8, "sector overflow");
    // An unknown type: UNSUPP.
    header(&d, 0x77, 0);
    d.submit(&[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_UNSUPP as u8);
    // A short header: IOERR.
    header(&d, VIRTIO_BLK_T_IN, 0);
    d.submit(&[(HDR, 8, false), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_IOERR as u8);
    // No writable byte for the status: used with length 0.
    header(&d, VIRTIO_BLK_T_IN, 0);
    d.submit(&[(HDR, 16, false)]);
    assert_eq!(d.used(4).0.1, 0);
    assert_eq!(status(&d), 0xff);
    // A buffer outside guest memory: used with length 0.
    d.submit(&[
        (HDR, 16, false),
        (0x7fff_0000, 512, true),
        (STATUS, 1, true),
    ]);
    assert_eq!(d.used(5).0.1, 0);
    assert_eq!(std::fs::read(&p).expect("disk")[15 * 512], 15);
    std::fs::remove_file(p).ok();
}

#[test]
fn read_only_disks_refuse_writes() {
    let (p, mut d) = ready("ro", 4, true);
    assert_ne!(d.offer() & 1 << VIRTIO_BLK_F_RO, 0);
    d.mem
        .write_slice(&[9; 512], GuestAddress(DATA))
        .expect("fill");
    header(&d, VIRTIO_BLK_T_OUT, 1);
    d.submit(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_IOERR as u8);
    header(&d, VIRTIO_BLK_T_IN, 1);
    d.submit(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_OK as u8);
    assert_eq!(d.mem.read_obj::<u8>(GuestAddress(DATA)).expect("read"), 1);
    header(&d, VIRTIO_BLK_T_FLUSH, 0);
    d.submit(&[(HDR, 16, false), (STATUS, 1, true)]);
    assert_eq!(status(&d), VIRTIO_BLK_S_OK as u8);
    assert_eq!(std::fs::read(&p).expect("disk")[512], 1);
    std::fs::remove_file(p).ok();
}

#[test]
fn never_opened_with_o_direct() {
    for ro in [true, false] {
        let (p, _) = disk(&format!("flags{ro}"), 1, ro);
        let f = open(p.to_str().expect("utf-8"), ro).expect("open");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|v| i32::from_str_radix(v.trim(), 8).expect("octal"))
            .expect("flags line");
        assert_eq!(flags & libc::O_DIRECT, 0, "{info}");
        assert_eq!(
            flags & libc::O_ACCMODE,
            if ro { libc::O_RDONLY } else { libc::O_RDWR }
        );
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn random_descriptor_chains_never_panic() {
    let (p, mut d) = ready("fuzz", 32, false);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut completed, mut last) = (0u32, 0u16);
    for round in 0..3000u32 {
        // Random descriptors over the whole table: addresses in and out of
        // memory, lengths, flags (NEXT, WRITE, INDIRECT) and next indices.
        for n in 0..u64::from(QSIZE) {
            let mut desc = [0u8; 16];
            let addr = match rnd() % 4 {
                0 => rnd(),
                1 => rnd() % (1 << 20),
                _ => HDR + (rnd() % 0x30000),
            };
            desc[..8].copy_from_slice(&addr.to_le_bytes());
            desc[8..12].copy_from_slice(&((rnd() % 5000) as u32).to_le_bytes());
            desc[12..14].copy_from_slice(&((rnd() % 8) as u16).to_le_bytes());
            desc[14..].copy_from_slice(&((rnd() % 20) as u16).to_le_bytes());
            d.mem
                .write_slice(&desc, GuestAddress(0x1000 + 16 * n))
                .expect("desc");
        }
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&((rnd() % 10) as u32).to_le_bytes());
        h[8..].copy_from_slice(&(rnd() % 40).to_le_bytes());
        for i in 0..8 {
            d.mem
                .write_slice(&h, GuestAddress(HDR + 0x1000 * i))
                .expect("hdr");
        }
        // Random avail entries and now and then a wild avail index.
        let idx: u16 = d.mem.read_obj(GuestAddress(0x2002)).expect("idx");
        for i in 0..4u16 {
            let slot = 0x2004 + 2 * u64::from(idx.wrapping_add(i) % QSIZE);
            d.mem
                .write_obj((rnd() % 20) as u16, GuestAddress(slot))
                .expect("avail");
        }
        let wild = round % 50 == 25;
        let step = if wild {
            rnd() as u16
        } else {
            (rnd() % 4) as u16
        };
        d.mem
            .write_obj(idx.wrapping_add(step), GuestAddress(0x2002))
            .expect("idx");
        d.wr(0x3000, 2, 0);
        let used: u16 = d.mem.read_obj(GuestAddress(0x3002)).expect("used");
        completed += u32::from(used.wrapping_sub(last));
        last = used;
        if wild || round % 100 == 99 {
            // The device may have asked for a reset: the driver does it.
            assert_eq!(d.negotiate(u64::MAX), 0xb);
            d.setup_queue();
            d.mem.write_obj(0u16, GuestAddress(0x2002)).expect("idx");
            d.mem.write_obj(0u16, GuestAddress(0x3002)).expect("idx");
            last = 0;
        }
    }
    assert!(completed > 1000, "only {completed} chains completed");
    assert_eq!(
        std::fs::metadata(&p).expect("disk").len(),
        32 * 512,
        "never grown"
    );
    std::fs::remove_file(p).ok();
}
