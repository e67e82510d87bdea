//! virtio-net (virtio 1.2, 5.1) over a tap of dom0.
//!
//! Queue 0 receives, queue 1 transmits; no control queue, no offloads:
//! features `VIRTIO_NET_F_MAC` and `VIRTIO_NET_F_STATUS` (link always up).
//! Every frame carries the 12-byte `virtio_net_hdr_v1` (VERSION_1): all
//! zero on receive but `num_buffers` = 1, ignored on transmit. Frames go
//! through this process's own buffers both ways. A frame read from the tap
//! waits here while the guest has no receive buffer, and the tap is not
//! read (nor polled) again until the guest posts one: a full ring leaves
//! the frames in the tap, whose queue drops the excess as a wire would.

use crate::virtio_pci::{Device, Mem};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::{Queue, QueueOwnedT, QueueT};

/// The receive queue.
pub const RX: usize = 0;
/// The transmit queue.
pub const TX: usize = 1;
/// `struct virtio_net_hdr_v1`'s size.
pub const HDR: usize = 12;
/// The largest frame either way (a tap's MTU is at most 64 KiB).
const FRAME_MAX: usize = 65536;
/// The queues' size.
const QUEUE_MAX: u16 = 256;

/// The device.
#[derive(Debug)]
pub struct Net {
    tap: File,
    mac: [u8; 6],
    /// The header, then a frame read from the tap: `pending` bytes of it
    /// wait for a receive buffer.
    rx: Vec<u8>,
    pending: Option<usize>,
    tx: Vec<u8>,
    /// The backend failed (its end closed): it is not polled any more.
    dead: bool,
}

impl Net {
    /// The device over `tap`, a non-blocking packet descriptor (a tap, or
    /// a datagram socket in tests), with address `mac`.
    pub fn new(tap: File, mac: [u8; 6]) -> Net {
        Net {
            tap,
            mac,
            rx: vec![0; HDR + FRAME_MAX],
            pending: None,
            tx: vec![0; HDR + FRAME_MAX],
            dead: false,
        }
    }

    /// Frames from the tap into the guest's receive buffers, until the tap
    /// is empty or the ring is.
    fn receive(&mut self, q: &mut Queue, mem: &Mem) -> Result<bool, String> {
        let mut used = false;
        loop {
            let n = match self.pending {
                Some(n) => n,
                None => match (&self.tap).read(&mut self.rx[HDR..]) {
                    Ok(n) if n > 0 => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => {
                        eprintln!("basalt-dm: the tap failed ({r:?}); the guest's network is cut");
                        self.dead = true;
                        break;
                    }
                },
            };
            self.pending = Some(n);
            let Some(chain) = q.iter(mem).map_err(|e| e.to_string())?.next() else {
                break;
            };
            self.pending = None;
            let head = chain.head_index();
            self.rx[..HDR].fill(0);
            self.rx[HDR - 2] = 1;
            // A buffer too small or outside guest memory: the frame is
            // dropped, the buffer returned empty (Linux drops it too).
            let len = match chain.writer(mem) {
                Ok(mut w) if w.available_bytes() >= HDR + n => {
                    w.write_all(&self.rx[..HDR + n]).map_or(0, |()| HDR + n)
                }
                _ => 0,
            };
            q.add_used(mem, head, len as u32)
                .map_err(|e| e.to_string())?;
            used = true;
        }
        Ok(used)
    }

    /// The guest's frames to the tap.
    fn transmit(&mut self, q: &mut Queue, mem: &Mem) -> Result<bool, String> {
        let chains: Vec<_> = q.iter(mem).map_err(|e| e.to_string())?.collect();
        let used = !chains.is_empty();
        for chain in chains {
            let head = chain.head_index();
            if let Ok(mut r) = chain.reader(mem) {
                let n = r.available_bytes();
                if n > HDR && n <= self.tx.len() && r.read_exact(&mut self.tx[..n]).is_ok() {
                    // A frame the tap refuses (down, full) is lost, as on a
                    // wire.
                    let _ = (&self.tap).write(&self.tx[HDR..n]);
                }
            }
            q.add_used(mem, head, 0).map_err(|e| e.to_string())?;
        }
        Ok(used)
    }
}

impl Device for Net {
    fn device_id(&self) -> u16 {
        VIRTIO_ID_NET as u16
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_STATUS
    }

    /// `struct virtio_net_config`: the MAC, the status (link up); the rest
    /// belongs to features not offered.
    fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 12];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c
    }

    fn queues(&self) -> usize {
        2
    }

    fn queue_max(&self) -> u16 {
        QUEUE_MAX
    }

    fn process(&mut self, queue: usize, q: &mut Queue, mem: &Mem) -> Result<bool, String> {
        match queue {
            RX => self.receive(q, mem),
            TX => self.transmit(q, mem),
            _ => Ok(false),
        }
    }

    fn input(&self) -> Option<(RawFd, usize)> {
        (self.pending.is_none() && !self.dead).then(|| (self.tap.as_raw_fd(), RX))
    }
}

/// `aa:bb:cc:dd:ee:ff`, a unicast address.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}

/// The MAC of the device in `slot` of domain `dom` when none is given:
/// locally administered (02:...), unique per domain and slot.
pub fn default_mac(dom: u16, slot: u8) -> [u8; 6] {
    let [hi, lo] = dom.to_be_bytes();
    [0x02, 0xba, 0x5a, hi, lo, slot]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

#[cfg(test)]
mod tests;
