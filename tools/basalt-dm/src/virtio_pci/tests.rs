//! A driver that does what Linux's virtio_pci_modern does, step by step,
//! against the function; used by the block device's tests too.

use super::*;
use crate::block::{self, Block};
use std::io::Write as _;
use vm_memory::{Bytes, GuestAddress};

/// The MSIs sent.
#[derive(Debug, Default)]
pub(crate) struct Recorder(pub Vec<(u64, u32)>);

impl Msi for Recorder {
    fn inject(&mut self, addr: u64, data: u32) {
        self.0.push((addr, data));
    }
}

pub(crate) const DESC: u64 = 0x1000;
pub(crate) const AVAIL: u64 = 0x2000;
pub(crate) const USED: u64 = 0x3000;
pub(crate) const QSIZE: u16 = 16;
/// Where the guest programs the BAR (not the preset address).
pub(crate) const BAR: u64 = 0xe080_0000;
pub(crate) const MSI_ADDR: u64 = 0xfee0_0000;

/// A temporary disk of `sectors`, filled with `fill(sector)` bytes.
pub(crate) fn disk(name: &str, sectors: u64, readonly: bool) -> (std::path::PathBuf, Block) {
    let path = std::env::temp_dir().join(format!("basalt-dm-{}-{name}", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("temp file");
    for s in 0..sectors {
        f.write_all(&[s as u8; 512]).expect("write");
    }
    drop(f);
    let file = block::open(path.to_str().expect("utf-8"), readonly).expect("open");
    let dev = Block::new(file, readonly, name).expect("block");
    (path, dev)
}

/// Queue `q`'s rings are at these plus `q * QSTRIDE`.
pub(crate) const QSTRIDE: u64 = 0x8000;

pub(crate) struct Driver<D = Block> {
    pub pci: VirtioPci<D>,
    pub mem: Mem,
    pub msi: Recorder,
    common: u64,
    notify: u64,
    notify_mult: u64,
    device: u64,
    isr: u64,
    table: u64,
    pba: u64,
    next_desc: [u16; 2],
    avail_idx: [u16; 2],
}

impl<D: Device> Driver<D> {
    pub fn cfg(&self, reg: u32, size: u32) -> u32 {
        self.pci.config_read(reg, size)
    }

    pub fn cfg_w(&mut self, reg: u32, size: u32, v: u32) {
        self.pci.config_write(reg, size, v, &mut self.msi);
    }

    pub fn rd(&mut self, off: u64, size: u32) -> u64 {
        self.pci
            .mmio(BAR + off, size, None, &self.mem, &mut self.msi)
    }

    pub fn wr(&mut self, off: u64, size: u32, v: u64) {
        self.pci
            .mmio(BAR + off, size, Some(v), &self.mem, &mut self.msi);
    }

    /// Probes the function as the PCI core and virtio_pci_modern do: ids,
    /// BAR sizing and placement, the capability list, MSI-X on.
    pub fn probe(dev: D) -> Driver<D> {
        let id = dev.device_id();
        let mut d = Driver {
            pci: VirtioPci::new(dev, 0xe000_0000),
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory"),
            msi: Recorder::default(),
            common: 0,
            notify: 0,
            notify_mult: 0,
            device: 0,
            isr: 0,
            table: 0,
            pba: 0,
            next_desc: [0; 2],
            avail_idx: [0; 2],
        };
        assert_eq!(d.cfg(0, 2), 0x1af4);
        assert_eq!(
            d.cfg(2, 2),
            0x1040 + u32::from(id),
            "0x1040 + the device id"
        );
        assert_eq!(d.cfg(0x0e, 1), 0, "a type-0 header");
        assert_eq!(d.cfg(0x3d, 1), 0, "no INTx pin");
        assert_eq!(d.pci.bar(), 0xe000_0000, "the preset address");
        // Sizing: decoding off, all ones, read back, restore (pci_read_bases).
        d.cfg_w(4, 2, 0);
        d.cfg_w(0x10, 4, 0xffff_ffff);
        d.cfg_w(0x14, 4, 0xffff_ffff);
        let (lo, hi) = (d.cfg(0x10, 4), d.cfg(0x14, 4));
        assert_eq!(lo & 0xf, 0b0100, "64-bit memory, not prefetchable");
        let size = !((u64::from(hi) << 32) | u64::from(lo & !0xf)) + 1;
        assert_eq!(size, BAR_SIZE);
        d.cfg_w(0x10, 4, BAR as u32);
        d.cfg_w(0x14, 4, (BAR >> 32) as u32);
        assert_eq!(d.pci.bar(), BAR);
        assert_eq!(d.rd(0, 4), 0xffff_ffff, "decoding is off");
        d.cfg_w(4, 2, 0b110);
        assert_eq!(d.cfg(6, 2) & 0x10, 0x10, "a capability list");
        let mut at = d.cfg(0x34, 1);
        let mut seen = 0;
        let mut kinds = 0;
        while at != 0 {
            seen += 1;
            assert!(seen < 16, "the capability list loops");
            let id = d.cfg(at, 1);
            if id == 0x09 {
                let (kind, bar) = (d.cfg(at + 3, 1), d.cfg(at + 4, 1));
                assert_eq!(bar, 0);
                let off = u64::from(d.cfg(at + 8, 4));
                let len = d.cfg(at + 12, 4);
                match kind {
                    1 => {
                        assert!(len >= 0x38);
                        d.common = off;
                        kinds |= 2;
                    }
                    2 => (d.notify, d.notify_mult) = (off, u64::from(d.cfg(at + 16, 4))),
                    3 => d.isr = off,
                    4 => d.device = off,
                    _ => {}
                }
            } else if id == 0x11 {
                assert_eq!(d.cfg(at + 2, 2) & 0x7ff, VECTORS as u32 - 1);
                let (t, p) = (d.cfg(at + 4, 4), d.cfg(at + 8, 4));
                assert_eq!((t & 7, p & 7), (0, 0), "both in BAR 0");
                (d.table, d.pba) = (u64::from(t & !7), u64::from(p & !7));
                // Linux enables MSI-X with the function masked, programs the
                // vectors, then unmasks the function.
                d.cfg_w(at + 2, 2, 0xc000);
                assert_eq!(d.cfg(at + 2, 2) & 0xc000, 0xc000);
                for v in 0..3u64 {
                    d.wr(d.table + 16 * v, 4, MSI_ADDR);
                    d.wr(d.table + 16 * v + 4, 4, 0);
                    d.wr(d.table + 16 * v + 8, 4, 0x4020 + v);
                    d.wr(d.table + 16 * v + 12, 4, 0);
                }
                d.cfg_w(at + 2, 2, 0x8000);
            }
            at = d.cfg(at + 1, 1);
        }
        assert!(kinds == 2 && d.notify != 0 && d.isr != 0 && d.device != 0 && d.table != 0);
        assert_eq!(d.notify_mult, 4);
        d
    }

    /// Status and feature negotiation (virtio 3.1.1); accepts the offer
    /// masked by `accept`: the device status afterwards.
    pub fn negotiate(&mut self, accept: u64) -> u8 {
        let c = self.common;
        self.wr(c + 0x14, 1, 0);
        assert_eq!(self.rd(c + 0x14, 1), 0);
        self.wr(c + 0x14, 1, 1);
        self.wr(c + 0x14, 1, 3);
        self.wr(c, 4, 0);
        let lo = self.rd(c + 4, 4);
        self.wr(c, 4, 1);
        let offer = lo | self.rd(c + 4, 4) << 32;
        let f = offer & accept;
        self.wr(c + 8, 4, 0);
        self.wr(c + 0xc, 4, f & 0xffff_ffff);
        self.wr(c + 8, 4, 1);
        self.wr(c + 0xc, 4, f >> 32);
        self.wr(c + 0x14, 1, 0xb);
        self.rd(c + 0x14, 1) as u8
    }

    /// The offered features.
    pub fn offer(&mut self) -> u64 {
        let c = self.common;
        self.wr(c, 4, 0);
        let lo = self.rd(c + 4, 4);
        self.wr(c, 4, 1);
        lo | self.rd(c + 4, 4) << 32
    }

    /// Each queue `q` with `QSIZE` entries on vector `1 + q`, config on
    /// vector 0, then DRIVER_OK (vp_modern's setup_vq and find_vqs).
    pub fn setup_queue(&mut self) {
        let c = self.common;
        self.wr(c + 0x10, 2, 0);
        assert_eq!(self.rd(c + 0x10, 2), 0, "config vector taken");
        let n = self.pci.dev.queues() as u64;
        assert_eq!(self.rd(c + 0x12, 2), n, "the device's queues");
        for q in 0..n {
            self.next_desc[q as usize] = 0;
            self.avail_idx[q as usize] = 0;
            self.wr(c + 0x16, 2, q);
            assert_eq!(self.rd(c + 0x18, 2), 256, "the maximum size");
            self.wr(c + 0x18, 2, u64::from(QSIZE));
            for (off, addr) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
                let addr = addr + q * QSTRIDE;
                self.wr(c + off, 4, addr & 0xffff_ffff);
                self.wr(c + off + 4, 4, addr >> 32);
                assert_eq!(self.rd(c + off, 4), addr);
            }
            self.wr(c + 0x1a, 2, 1 + q);
            assert_eq!(self.rd(c + 0x1a, 2), 1 + q, "queue vector taken");
            assert_eq!(self.rd(c + 0x1e, 2), q, "notify offset");
            self.wr(c + 0x1c, 2, 1);
            assert_eq!(self.rd(c + 0x1c, 2), 1);
        }
        self.wr(c + 0x14, 1, 0xf);
    }

    /// Puts a chain of `(address, length, device-writable)` buffers on
    /// queue 0 and notifies: the head.
    pub fn submit(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        self.submit_to(0, bufs)
    }

    /// The same on queue `q`.
    pub fn submit_to(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let base = q as u64 * QSTRIDE;
        let head = self.next_desc[q];
        for (i, &(addr, len, w)) in bufs.iter().enumerate() {
            let n = (self.next_desc[q] + i as u16) % QSIZE;
            let last = i + 1 == bufs.len();
            let flags: u16 = u16::from(!last) | if w { 2 } else { 0 };
            let next = (n + 1) % QSIZE;
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..].copy_from_slice(&next.to_le_bytes());
            self.mem
                .write_slice(&d, GuestAddress(base + DESC + 16 * u64::from(n)))
                .expect("desc");
        }
        self.next_desc[q] = (self.next_desc[q] + bufs.len() as u16) % QSIZE;
        let slot = base + AVAIL + 4 + 2 * u64::from(self.avail_idx[q] % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).expect("avail");
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q], GuestAddress(base + AVAIL + 2))
            .expect("idx");
        self.wr(self.notify + q as u64 * self.notify_mult, 2, q as u64);
        head
    }

    /// Used ring entry `i` of queue 0: (id, len), and the used index.
    pub fn used(&self, i: u16) -> ((u32, u32), u16) {
        self.used_of(0, i)
    }

    /// The same on queue `q`.
    pub fn used_of(&self, q: usize, i: u16) -> ((u32, u32), u16) {
        let used = USED + q as u64 * QSTRIDE;
        let at = used + 4 + 8 * u64::from(i % QSIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).expect("used");
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).expect("used");
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).expect("idx");
        ((id, len), idx)
    }

    pub fn device_cfg(&mut self, off: u64, size: u32) -> u64 {
        self.rd(self.device + off, size)
    }

    pub fn isr(&mut self) -> u64 {
        self.rd(self.isr, 1)
    }

    pub fn table(&self) -> u64 {
        self.table
    }

    pub fn pba(&self) -> u64 {
        self.pba
    }
}

#[test]
fn negotiation_requires_version_1_and_a_subset() {
    let (p, dev) = disk("neg", 8, false);
    let mut d = Driver::probe(dev);
    let offer = d.offer();
    assert_ne!(offer & 1 << 32, 0, "VERSION_1 offered");
    assert_ne!(offer & 1 << 9, 0, "FLUSH offered");
    assert_eq!(offer & 1 << 5, 0, "not read-only");
    assert_eq!(offer & 1 << 29, 0, "EVENT_IDX not offered");
    // A legacy driver (no VERSION_1) is refused: FEATURES_OK stays clear.
    assert_eq!(d.negotiate(!(1 << 32)), 0x3);
    // Features never offered are refused too.
    let c = d.common;
    d.wr(c + 0x14, 1, 0);
    d.wr(c + 0x14, 1, 3);
    d.wr(c + 8, 4, 0);
    d.wr(c + 0xc, 4, 1 << 6);
    d.wr(c + 8, 4, 1);
    d.wr(c + 0xc, 4, 1);
    d.wr(c + 0x14, 1, 0xb);
    assert_eq!(d.rd(c + 0x14, 1), 0x3);
    assert_eq!(d.negotiate(u64::MAX), 0xb);
    // Features are fixed once accepted.
    d.wr(c + 8, 4, 0);
    d.wr(c + 0xc, 4, 0);
    assert_eq!(d.rd(c + 0xc, 4), 1 << 9 | 1 << 2, "FLUSH and SEG_MAX");
    std::fs::remove_file(p).ok();
}

#[test]
fn reset_forgets_queues_and_vectors() {
    let (p, dev) = disk("reset", 8, false);
    let mut d = Driver::probe(dev);
    assert_eq!(d.negotiate(u64::MAX), 0xb);
    d.setup_queue();
    let c = d.common;
    d.wr(c + 0x14, 1, 0);
    assert_eq!(d.rd(c + 0x14, 1), 0);
    assert_eq!(d.rd(c + 0x10, 2), u64::from(NO_VECTOR));
    assert_eq!(d.rd(c + 0x1a, 2), u64::from(NO_VECTOR));
    assert_eq!(d.rd(c + 0x1c, 2), 0, "queue disabled");
    assert_eq!(d.rd(c + 0x18, 2), 256, "size back to the maximum");
    assert_eq!(d.rd(c + 0x20, 8), 0);
    // An out-of-range vector reads back as NO_VECTOR (the refusal).
    d.wr(c + 0x10, 2, VECTORS as u64);
    assert_eq!(d.rd(c + 0x10, 2), u64::from(NO_VECTOR));
    // Unknown queue and registers read 0; the device config is the capacity.
    d.wr(c + 0x16, 2, 5);
    assert_eq!(d.rd(c + 0x18, 2), 0);
    assert_eq!(d.device_cfg(0, 8), 8);
    assert_eq!(d.device_cfg(0x1000 - 4, 4), 0);
    std::fs::remove_file(p).ok();
}

#[test]
fn masked_vectors_pend_and_fire_on_unmask() {
    let (p, dev) = disk("msix", 8, false);
    let mut d = Driver::probe(dev);
    assert_eq!(d.negotiate(u64::MAX), 0xb);
    d.setup_queue();
    // Mask vector 1, then complete a flush: no message, the PBA bit.
    let t = d.table();
    d.wr(t + 16 + 12, 4, 1);
    d.mem.write_obj(4u32, GuestAddress(0x10000)).expect("hdr");
    d.submit(&[(0x10000, 16, false), (0x10100, 1, true)]);
    assert_eq!(d.used(0).1, 1, "completed");
    assert!(d.msi.0.is_empty());
    let pba = d.pba();
    assert_eq!(d.rd(pba, 8), 0b10);
    assert_eq!(d.isr() & 1, 1, "ISR says queue interrupt");
    assert_eq!(d.isr(), 0, "and reading cleared it");
    d.wr(t + 16 + 12, 4, 0);
    assert_eq!(d.msi.0, vec![(MSI_ADDR, 0x4021)]);
    assert_eq!(d.rd(pba, 8), 0);
    // The function mask holds messages of unmasked vectors too.
    let cap = (0x40..0x100)
        .find(|&a| d.cfg(a, 1) == 0x11 && d.cfg(a + 2, 2) & 0x8000 != 0)
        .expect("MSI-X capability");
    d.cfg_w(cap + 2, 2, 0xc000);
    d.submit(&[(0x10000, 16, false), (0x10100, 1, true)]);
    assert_eq!(d.msi.0.len(), 1);
    d.cfg_w(cap + 2, 2, 0x8000);
    assert_eq!(d.msi.0.len(), 2);
    // MSI-X off: nothing is sent (no INTx either).
    d.cfg_w(cap + 2, 2, 0);
    d.submit(&[(0x10000, 16, false), (0x10100, 1, true)]);
    assert_eq!(d.msi.0.len(), 2);
    assert_eq!(d.used(0).1, 3);
    std::fs::remove_file(p).ok();
}
