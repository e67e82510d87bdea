//! A virtio-pci modern function (virtio 1.2, 4.1), as a state machine:
//! its configuration space with the virtio capabilities and MSI-X, and one
//! 64-bit memory BAR that holds everything else:
//!
//! | BAR offset | what |
//! |---|---|
//! | 0x0000 | common configuration (4.1.4.3) |
//! | 0x1000 | ISR status (4.1.4.5) |
//! | 0x2000 | device configuration (the device's own) |
//! | 0x3000 | notifications: queue `q` at `0x3000 + 4 q` (4.1.4.4) |
//! | 0x4000 | MSI-X table (PCI 3.0, 6.8.2) |
//! | 0x5000 | MSI-X pending bits |
//!
//! Interrupts are MSI-X only (no INTx: interrupt pin 0): a vector's message
//! is sent with [`Msi::inject`] (Xen's `inject_msi`); a masked vector sets
//! its pending bit, and the message goes when it is unmasked.

use crate::pci;
use std::os::fd::RawFd;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

/// The guest memory the devices work on.
pub type Mem = GuestMemoryMmap;

/// The BAR's size.
pub const BAR_SIZE: u64 = 0x8000;
const COMMON: u64 = 0x0000;
const ISR: u64 = 0x1000;
const DEVICE: u64 = 0x2000;
const NOTIFY: u64 = 0x3000;
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE: u64 = 0x4000;
const MSIX_PBA: u64 = 0x5000;
/// MSI-X vectors: one per queue and one for configuration changes, with room.
pub const VECTORS: usize = 8;
/// `VIRTIO_MSI_NO_VECTOR`.
pub const NO_VECTOR: u16 = 0xffff;
/// Virtio's PCI vendor id.
pub const VENDOR: u16 = 0x1af4;
/// MSI-X message control bits: enable, function mask.
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_MASKALL: u16 = 1 << 14;

/// Where MSIs go: Xen's `inject_msi`, or a test's record.
pub trait Msi {
    /// Sends the message `data` to `addr`.
    fn inject(&mut self, addr: u64, data: u32);
}

/// A virtio device behind the transport.
pub trait Device: std::fmt::Debug {
    /// Its virtio device id (5, "Device Types").
    fn device_id(&self) -> u16;
    /// The features it offers (without `VIRTIO_F_VERSION_1`, which the
    /// transport adds).
    fn features(&self) -> u64;
    /// Its configuration space.
    fn config(&self) -> Vec<u8>;
    /// How many queues.
    fn queues(&self) -> usize;
    /// The largest queue size.
    fn queue_max(&self) -> u16;
    /// Handles what the driver made available on `queue`: whether it put
    /// buffers in the used ring.
    fn process(&mut self, queue: usize, q: &mut Queue, mem: &Mem) -> Result<bool, String>;
    /// The descriptor whose input the device takes now, and the queue to
    /// process when it is readable (a tap and the receive queue).
    fn input(&self) -> Option<(RawFd, usize)> {
        None
    }
}

impl<T: Device + ?Sized> Device for Box<T> {
    fn device_id(&self) -> u16 {
        (**self).device_id()
    }
    fn features(&self) -> u64 {
        (**self).features()
    }
    fn config(&self) -> Vec<u8> {
        (**self).config()
    }
    fn queues(&self) -> usize {
        (**self).queues()
    }
    fn queue_max(&self) -> u16 {
        (**self).queue_max()
    }
    fn process(&mut self, queue: usize, q: &mut Queue, mem: &Mem) -> Result<bool, String> {
        (**self).process(queue, q, mem)
    }
    fn input(&self) -> Option<(RawFd, usize)> {
        (**self).input()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct MsixEntry {
    addr: u64,
    data: u32,
    masked: bool,
}

/// The function.
#[derive(Debug)]
pub struct VirtioPci<D> {
    cfg: pci::Config,
    msix_cap: usize,
    /// The device.
    pub dev: D,
    queues: Vec<(Queue, u16)>,
    device_select: u32,
    driver_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    config_vector: u16,
    isr: u8,
    msix: [MsixEntry; VECTORS],
    pending: u64,
}

/// A `virtio_pci_cap` of `kind` for `offset..offset + len` in BAR 0, with
/// `extra` bytes after it.
fn virtio_cap(kind: u8, offset: u64, len: u64, extra: &[u8]) -> Vec<u8> {
    let mut c = vec![0x09, 0, 16 + extra.len() as u8, kind, 0, 0, 0, 0];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(len as u32).to_le_bytes());
    c.extend_from_slice(extra);
    c
}

impl<D: Device> VirtioPci<D> {
    /// The function over `dev`, its BAR preset at `bar` (as firmware would).
    pub fn new(dev: D, bar: u64) -> Self {
        let id = dev.device_id();
        // Class: mass storage (01/80) for a block device, Ethernet (02/00)
        // for a network one, else "other" (ff).
        let class = match id {
            1 => 0x02_0000,
            2 => 0x01_8000,
            _ => 0xff_0000,
        };
        let mut cfg = pci::Config::new(VENDOR, 0x1040 + id, class, 1, (VENDOR, 0x40));
        cfg.bar64(0, BAR_SIZE, bar);
        cfg.add_capability(&virtio_cap(1, COMMON, 0x40, &[]));
        cfg.add_capability(&virtio_cap(3, ISR, 4, &[]));
        cfg.add_capability(&virtio_cap(4, DEVICE, 0x1000, &[]));
        let notify_len = 4 * dev.queues() as u64;
        cfg.add_capability(&virtio_cap(
            2,
            NOTIFY,
            notify_len,
            &NOTIFY_MULTIPLIER.to_le_bytes(),
        ));
        let mut msix = vec![0x11, 0];
        msix.extend_from_slice(&(VECTORS as u16 - 1).to_le_bytes());
        msix.extend_from_slice(&(MSIX_TABLE as u32).to_le_bytes());
        msix.extend_from_slice(&(MSIX_PBA as u32).to_le_bytes());
        let msix_cap = cfg.add_capability(&msix);
        cfg.writable(msix_cap + 3, &[0xc0]);
        let queues = (0..dev.queues())
            .map(|_| (Self::new_queue(dev.queue_max()), NO_VECTOR))
            .collect();
        VirtioPci {
            cfg,
            msix_cap,
            dev,
            queues,
            device_select: 0,
            driver_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            config_vector: NO_VECTOR,
            isr: 0,
            msix: [MsixEntry {
                masked: true,
                ..MsixEntry::default()
            }; VECTORS],
            pending: 0,
        }
    }

    fn new_queue(max: u16) -> Queue {
        // A device's maximum is a power of two up to 32768: always valid.
        Queue::new(max).unwrap_or_else(|_| unreachable!("queue size {max} is valid"))
    }

    /// The BAR's guest-physical address.
    pub fn bar(&self) -> u64 {
        self.cfg.bar64_address(0)
    }

    /// The features offered.
    fn offered(&self) -> u64 {
        self.dev.features() | 1 << VIRTIO_F_VERSION_1
    }

    /// A configuration-space read.
    pub fn config_read(&self, reg: u32, size: u32) -> u32 {
        self.cfg.read(reg, size)
    }

    /// A configuration-space write, with MSI-X's unmask effects.
    pub fn config_write(&mut self, reg: u32, size: u32, value: u32, msi: &mut impl Msi) {
        self.cfg.write(reg, size, value);
        self.deliver_pending(msi);
    }

    fn msix_control(&self) -> u16 {
        u16::from_le_bytes([
            self.cfg.byte(self.msix_cap + 2),
            self.cfg.byte(self.msix_cap + 3),
        ])
    }

    /// Raises `vector` (none for [`NO_VECTOR`], an unknown vector or MSI-X
    /// off: this function has no INTx).
    fn signal(&mut self, vector: u16, msi: &mut impl Msi) {
        let ctl = self.msix_control();
        let Some(e) = self.msix.get(vector as usize) else {
            return;
        };
        if ctl & MSIX_ENABLE == 0 {
            return;
        }
        if e.masked || ctl & MSIX_MASKALL != 0 {
            self.pending |= 1 << vector;
        } else {
            msi.inject(e.addr, e.data);
        }
    }

    /// Sends the pending messages of the vectors now unmasked.
    fn deliver_pending(&mut self, msi: &mut impl Msi) {
        let ctl = self.msix_control();
        if ctl & MSIX_ENABLE == 0 || ctl & MSIX_MASKALL != 0 {
            return;
        }
        for (v, e) in self.msix.iter().enumerate() {
            if self.pending & 1 << v != 0 && !e.masked {
                self.pending &= !(1 << v);
                msi.inject(e.addr, e.data);
            }
        }
    }

    /// Virtio reset (status 0).
    fn reset(&mut self) {
        let max = self.dev.queue_max();
        for (q, v) in &mut self.queues {
            *q = Self::new_queue(max);
            *v = NO_VECTOR;
        }
        self.device_select = 0;
        self.driver_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.queue_select = 0;
        self.config_vector = NO_VECTOR;
        self.isr = 0;
    }

    /// An access of `size` bytes at guest-physical `addr` in the BAR;
    /// `write` is the value written; a read answers its value.
    pub fn mmio(
        &mut self,
        addr: u64,
        size: u32,
        write: Option<u64>,
        mem: &Mem,
        msi: &mut impl Msi,
    ) -> u64 {
        let off = addr.wrapping_sub(self.bar());
        let ones = u64::MAX >> (64 - 8 * size.clamp(1, 8));
        if off >= BAR_SIZE || !self.cfg.memory_enabled() {
            return ones;
        }
        match off {
            COMMON..ISR => match write {
                None => self.common_read(off - COMMON) & ones,
                Some(v) => {
                    self.common_write(off - COMMON, size, v);
                    0
                }
            },
            ISR..DEVICE => {
                // Reading clears it (4.1.4.5).
                let v = u64::from(self.isr);
                if write.is_none() {
                    self.isr = 0;
                }
                v
            }
            DEVICE..NOTIFY => {
                let cfg = self.dev.config();
                let at = (off - DEVICE) as usize;
                let mut b = [0u8; 8];
                for (i, x) in b.iter_mut().take(size as usize).enumerate() {
                    *x = cfg.get(at + i).copied().unwrap_or(0);
                }
                u64::from_le_bytes(b) & ones
            }
            NOTIFY..MSIX_TABLE => {
                if write.is_some() {
                    let q = (off - NOTIFY) / u64::from(NOTIFY_MULTIPLIER);
                    self.notify(q as usize, mem, msi);
                }
                0
            }
            MSIX_TABLE..MSIX_PBA => self.msix_table(off - MSIX_TABLE, size, write, msi) & ones,
            _ => {
                let at = (off - MSIX_PBA) * 8;
                if at < 64 { self.pending >> at } else { 0 }
            }
        }
    }

    fn msix_table(&mut self, off: u64, size: u32, write: Option<u64>, msi: &mut impl Msi) -> u64 {
        let Some(e) = self.msix.get_mut((off / 16) as usize) else {
            return 0;
        };
        let field = off % 16;
        let Some(v) = write else {
            return match (field, size) {
                (0, 8) => e.addr,
                (0, _) => e.addr & 0xffff_ffff,
                (4, _) => e.addr >> 32,
                (8, 8) => u64::from(e.data) | u64::from(e.masked) << 32,
                (8, _) => u64::from(e.data),
                (12, _) => u64::from(e.masked),
                _ => 0,
            };
        };
        match (field, size) {
            (0, 8) => e.addr = v,
            (0, _) => e.addr = (e.addr & !0xffff_ffff) | (v & 0xffff_ffff),
            (4, _) => e.addr = (e.addr & 0xffff_ffff) | (v << 32),
            (8, 8) => (e.data, e.masked) = (v as u32, v >> 32 & 1 != 0),
            (8, _) => e.data = v as u32,
            (12, _) => e.masked = v & 1 != 0,
            _ => {}
        }
        self.deliver_pending(msi);
        0
    }

    fn common_read(&self, off: u64) -> u64 {
        let q = self.queues.get(self.queue_select as usize);
        let queue = |f: fn(&(Queue, u16)) -> u64| q.map_or(0, f);
        let half = |v: u64, sel: u32| match sel {
            0 => v & 0xffff_ffff,
            1 => v >> 32,
            _ => 0,
        };
        match off {
            0x00 => u64::from(self.device_select),
            0x04 => half(self.offered(), self.device_select),
            0x08 => u64::from(self.driver_select),
            0x0c => half(self.driver_features, self.driver_select),
            0x10 => u64::from(self.config_vector),
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.status),
            0x16 => u64::from(self.queue_select),
            0x18 => queue(|(q, _)| u64::from(q.size())),
            0x1a => queue(|(_, v)| u64::from(*v)),
            0x1c => queue(|(q, _)| u64::from(q.ready())),
            0x1e => q.map_or(0, |_| u64::from(self.queue_select)),
            0x20 => queue(|(q, _)| q.desc_table()),
            0x24 => queue(|(q, _)| q.desc_table() >> 32),
            0x28 => queue(|(q, _)| q.avail_ring()),
            0x2c => queue(|(q, _)| q.avail_ring() >> 32),
            0x30 => queue(|(q, _)| q.used_ring()),
            0x34 => queue(|(q, _)| q.used_ring() >> 32),
            // 0x15, the configuration generation: the configuration never
            // changes.
            _ => 0,
        }
    }

    fn common_write(&mut self, off: u64, size: u32, v: u64) {
        let features_locked = self.status & VIRTIO_CONFIG_S_FEATURES_OK as u8 != 0;
        let (lo, hi) = (Some(v as u32), (size == 8).then_some((v >> 32) as u32));
        match off {
            0x00 => self.device_select = v as u32,
            0x08 => self.driver_select = v as u32,
            0x0c if !features_locked => match self.driver_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | (v & 0xffff_ffff)
                }
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                _ => {}
            },
            0x10 => self.config_vector = vector(v),
            0x14 => self.set_status(v as u8),
            0x16 => self.queue_select = v as u16,
            _ => {
                let Some((q, vec)) = self.queues.get_mut(self.queue_select as usize) else {
                    return;
                };
                // A live queue's size and addresses stay (4.1.4.3.2).
                let live = q.ready();
                match off {
                    0x18 if !live => q.set_size(v as u16),
                    0x1a => *vec = vector(v),
                    0x1c if v == 1 => q.set_ready(true),
                    0x20 if !live => q.set_desc_table_address(lo, hi),
                    0x24 if !live => q.set_desc_table_address(None, lo),
                    0x28 if !live => q.set_avail_ring_address(lo, hi),
                    0x2c if !live => q.set_avail_ring_address(None, lo),
                    0x30 if !live => q.set_used_ring_address(lo, hi),
                    0x34 if !live => q.set_used_ring_address(None, lo),
                    _ => {}
                }
            }
        }
    }

    /// The driver writes the device status (2.1, 3.1.1).
    fn set_status(&mut self, s: u8) {
        if s == 0 {
            self.reset();
            return;
        }
        let mut s = s;
        let features_ok = VIRTIO_CONFIG_S_FEATURES_OK as u8;
        if s & features_ok != 0 && self.status & features_ok == 0 {
            // Accepted only as a subset of the offer with VERSION_1: else
            // FEATURES_OK stays clear, which the driver reads back (3.1.1).
            let f = self.driver_features;
            if f & !self.offered() != 0 || f & 1 << VIRTIO_F_VERSION_1 == 0 {
                s &= !features_ok;
            }
        }
        self.status = s;
    }

    /// The descriptor to poll for the device's input: only while the
    /// driver runs the device and the input's queue is live.
    pub fn input_fd(&self, mem: &Mem) -> Option<RawFd> {
        let (fd, queue) = self.dev.input()?;
        let ok = VIRTIO_CONFIG_S_DRIVER_OK as u8;
        let live = self.status & (ok | VIRTIO_CONFIG_S_NEEDS_RESET as u8) == ok;
        let (q, _) = self.queues.get(queue)?;
        (live && q.ready() && q.is_valid(mem)).then_some(fd)
    }

    /// The input descriptor is readable: its queue is processed.
    pub fn input(&mut self, mem: &Mem, msi: &mut impl Msi) {
        if let Some((_, queue)) = self.dev.input() {
            self.notify(queue, mem, msi);
        }
    }

    /// The driver notified `queue`.
    fn notify(&mut self, queue: usize, mem: &Mem, msi: &mut impl Msi) {
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK as u8 == 0 {
            return;
        }
        let Some((q, vector)) = self.queues.get_mut(queue) else {
            return;
        };
        if !q.ready() || !q.is_valid(mem) {
            return;
        }
        let vector = *vector;
        match self.dev.process(queue, q, mem) {
            Ok(true) => {
                if q.needs_notification(mem).unwrap_or(true) {
                    self.isr |= 1;
                    self.signal(vector, msi);
                }
            }
            Ok(false) => {}
            Err(e) => {
                eprintln!("basalt-dm: queue {queue}: {e}: the device needs a reset");
                self.status |= VIRTIO_CONFIG_S_NEEDS_RESET as u8;
                self.isr |= 2;
                let v = self.config_vector;
                self.signal(v, msi);
            }
        }
    }
}

/// A vector number the driver wrote: one of ours, or [`NO_VECTOR`] (which
/// the driver reads back as the refusal, 4.1.5.1.2).
fn vector(v: u64) -> u16 {
    if (v as usize) < VECTORS {
        v as u16
    } else {
        NO_VECTOR
    }
}

#[cfg(test)]
pub(crate) mod tests;
