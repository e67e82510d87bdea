//! virtio-net driven as Linux's virtio_net does (small receive buffers of
//! header + 1518 bytes, one transmit chain per frame), over a datagram
//! socket pair standing in for the tap.

use super::*;
use crate::virtio_pci::tests::{Driver, MSI_ADDR, QSIZE, QSTRIDE};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_MRG_RXBUF,
};
use vm_memory::{Bytes, GuestAddress};

const MAC: [u8; 6] = [2, 0xba, 0x5a, 0, 7, 5];
/// Receive buffers at `RXBUF + 0x1000 i`, transmit data at `TXBUF`.
const RXBUF: u64 = 0x40000;
const TXBUF: u64 = 0x80000;
/// Linux's small receive buffer: the header and GOOD_PACKET_LEN.
const RXLEN: u32 = (HDR + 1518) as u32;

/// The device probed, negotiated and running, and the tap's other end.
fn ready() -> (Driver<Net>, UnixDatagram) {
    let (ours, peer) = UnixDatagram::pair().expect("socketpair");
    ours.set_nonblocking(true).expect("nonblocking");
    peer.set_nonblocking(true).expect("nonblocking");
    let mut d = Driver::probe(Net::new(File::from(OwnedFd::from(ours)), MAC));
    assert_eq!(d.negotiate(u64::MAX), 0xb);
    d.setup_queue();
    (d, peer)
}

fn frame(n: usize, tag: u8) -> Vec<u8> {
    (0..n).map(|i| tag ^ i as u8).collect()
}

/// Posts receive buffer `i` (one writable descriptor of `len`).
fn post(d: &mut Driver<Net>, i: u64, len: u32) {
    d.submit_to(RX, &[(RXBUF + 0x1000 * i, len, true)]);
}

/// Whether the device wants the tap polled; if so, it is told it is
/// readable (as basalt-dm's loop does).
fn poll_input(d: &mut Driver<Net>) -> bool {
    let fd = d.pci.input_fd(&d.mem);
    if fd.is_some() {
        d.pci.input(&d.mem, &mut d.msi);
    }
    fd.is_some()
}

#[test]
fn offers_mac_and_status_and_no_offloads() {
    let (ours, _peer) = UnixDatagram::pair().expect("socketpair");
    let mut d = Driver::probe(Net::new(File::from(OwnedFd::from(ours)), MAC));
    assert_eq!(d.cfg(0x0a, 2), 0x0200, "class: Ethernet controller");
    let offer = d.offer();
    assert_ne!(offer & 1 << VIRTIO_NET_F_MAC, 0);
    assert_ne!(offer & 1 << VIRTIO_NET_F_STATUS, 0);
    assert_ne!(offer & 1 << 32, 0, "VERSION_1");
    for f in [
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_CTRL_VQ,
    ] {
        assert_eq!(offer & 1 << f, 0, "feature {f} offered");
    }
    // virtio_net reads the MAC byte by byte and the status as a u16.
    let mac: Vec<u8> = (0..6).map(|i| d.device_cfg(i, 1) as u8).collect();
    assert_eq!(mac, MAC);
    assert_eq!(d.device_cfg(6, 2), 1, "link up");
    // Not running yet: the tap is not polled.
    assert!(d.pci.input_fd(&d.mem).is_none());
    assert_eq!(d.negotiate(u64::MAX), 0xb);
    assert!(d.pci.input_fd(&d.mem).is_none(), "no DRIVER_OK yet");
    d.setup_queue();
    assert!(d.pci.input_fd(&d.mem).is_some());
}

#[test]
fn frames_from_the_tap_reach_receive_buffers() {
    let (mut d, peer) = ready();
    post(&mut d, 0, RXLEN);
    post(&mut d, 1, RXLEN);
    assert!(d.msi.0.is_empty(), "nothing received yet");
    let (a, b) = (frame(60, 0x11), frame(1514, 0x22));
    peer.send(&a).expect("send");
    peer.send(&b).expect("send");
    assert!(poll_input(&mut d));
    assert_eq!(d.used_of(RX, 0), ((0, (HDR + 60) as u32), 2));
    assert_eq!(d.used_of(RX, 1).0, (1, (HDR + 1514) as u32));
    let mut got = vec![0u8; HDR + 1514];
    d.mem
        .read_slice(&mut got[..HDR + 60], GuestAddress(RXBUF))
        .expect("read");
    let mut hdr = [0u8; HDR];
    hdr[10] = 1;
    assert_eq!(got[..HDR], hdr, "virtio_net_hdr_v1: num_buffers 1");
    assert_eq!(got[HDR..HDR + 60], a[..]);
    d.mem
        .read_slice(&mut got, GuestAddress(RXBUF + 0x1000))
        .expect("read");
    assert_eq!(got[HDR..], b[..]);
    assert_eq!(
        d.msi.0,
        vec![(MSI_ADDR, 0x4021)],
        "the receive vector, once"
    );
}

#[test]
fn a_full_ring_leaves_frames_in_the_tap() {
    let (mut d, peer) = ready();
    post(&mut d, 0, RXLEN);
    for t in 1..=3 {
        peer.send(&frame(100, t)).expect("send");
    }
    assert!(poll_input(&mut d));
    assert_eq!(d.used_of(RX, 0).1, 1);
    // The second frame waits for a buffer; the tap is not polled meanwhile
    // (no busy loop), and the third stays in it.
    assert!(!poll_input(&mut d), "polled with no receive buffer");
    let mut probe = [0u8; 200];
    assert!(
        peer.recv(&mut probe).is_err(),
        "nothing came back to the peer"
    );
    // The driver refills (and notifies): both arrive, in order.
    post(&mut d, 1, RXLEN);
    assert_eq!(d.used_of(RX, 1).1, 2, "the waiting frame on the notify");
    post(&mut d, 2, RXLEN);
    assert_eq!(d.used_of(RX, 2).1, 3, "and the next from the tap");
    for (i, t) in [(1u64, 2u8), (2, 3)] {
        let mut got = vec![0u8; 100];
        d.mem
            .read_slice(&mut got, GuestAddress(RXBUF + 0x1000 * i + HDR as u64))
            .expect("read");
        assert_eq!(got, frame(100, t));
    }
    assert!(poll_input(&mut d), "polled again");
    assert_eq!(d.msi.0.len(), 3);
}

#[test]
fn frames_too_large_or_buffers_outside_memory_are_dropped() {
    let (mut d, peer) = ready();
    post(&mut d, 0, 64);
    d.submit_to(RX, &[(0x7fff_0000, RXLEN, true)]);
    post(&mut d, 2, RXLEN);
    for t in 1..=3 {
        peer.send(&frame(100, t)).expect("send");
    }
    assert!(poll_input(&mut d));
    assert_eq!(d.used_of(RX, 0).0.1, 0, "too small: returned empty");
    assert_eq!(d.used_of(RX, 1).0.1, 0, "outside memory: returned empty");
    assert_eq!(d.used_of(RX, 2), ((2, (HDR + 100) as u32), 3));
    let mut got = vec![0u8; 100];
    d.mem
        .read_slice(&mut got, GuestAddress(RXBUF + 0x2000 + HDR as u64))
        .expect("read");
    assert_eq!(got, frame(100, 3));
}

#[test]
fn transmitted_frames_reach_the_tap() {
    let (mut d, peer) = ready();
    // Header and frame in one descriptor (VERSION_1's layout), then split.
    let f1 = frame(1514, 0x33);
    d.mem
        .write_slice(&[0u8; HDR], GuestAddress(TXBUF))
        .expect("hdr");
    d.mem
        .write_slice(&f1, GuestAddress(TXBUF + HDR as u64))
        .expect("frame");
    d.submit_to(TX, &[(TXBUF, (HDR + 1514) as u32, false)]);
    let f2 = frame(42, 0x44);
    d.mem
        .write_slice(&f2, GuestAddress(TXBUF + 0x1000))
        .expect("frame");
    d.submit_to(
        TX,
        &[
            (TXBUF + 0x2000, HDR as u32, false),
            (TXBUF + 0x1000, 42, false),
        ],
    );
    let mut got = vec![0u8; 2000];
    let n = peer.recv(&mut got).expect("first frame");
    assert_eq!(got[..n], f1[..]);
    let n = peer.recv(&mut got).expect("second frame");
    assert_eq!(got[..n], f2[..]);
    assert_eq!(d.used_of(TX, 0), ((0, 0), 2));
    assert_eq!(d.used_of(TX, 1).0, (1, 0));
    assert_eq!(
        d.msi.0,
        vec![(MSI_ADDR, 0x4022), (MSI_ADDR, 0x4022)],
        "the transmit vector per completion"
    );
    // A header alone, or writable buffers: nothing sent, still returned.
    d.submit_to(TX, &[(TXBUF, HDR as u32, false)]);
    d.submit_to(TX, &[(TXBUF, 100, true)]);
    assert!(peer.recv(&mut got).is_err());
    assert_eq!(d.used_of(TX, 3).1, 4);
}

#[test]
fn random_chains_never_panic() {
    let (mut d, peer) = ready();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut rx_used, mut tx_sent) = (0u32, 0u32);
    let mut buf = vec![0u8; 70000];
    for round in 0..3000u32 {
        let q = rnd() % 2;
        let base = q * QSTRIDE;
        for n in 0..u64::from(QSIZE) {
            let mut desc = [0u8; 16];
            let addr = match rnd() % 4 {
                0 => rnd(),
                1 => rnd() % (1 << 20),
                _ => RXBUF + (rnd() % 0x60000),
            };
            desc[..8].copy_from_slice(&addr.to_le_bytes());
            desc[8..12].copy_from_slice(&((rnd() % 3000) as u32).to_le_bytes());
            desc[12..14].copy_from_slice(&((rnd() % 8) as u16).to_le_bytes());
            desc[14..].copy_from_slice(&((rnd() % 20) as u16).to_le_bytes());
            d.mem
                .write_slice(&desc, GuestAddress(base + 0x1000 + 16 * n))
                .expect("desc");
        }
        let idx: u16 = d.mem.read_obj(GuestAddress(base + 0x2002)).expect("idx");
        for i in 0..4u16 {
            let slot = base + 0x2004 + 2 * u64::from(idx.wrapping_add(i) % QSIZE);
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
            .write_obj(idx.wrapping_add(step), GuestAddress(base + 0x2002))
            .expect("idx");
        if rnd() % 2 == 0 {
            let _ = peer.send(&frame((rnd() % 1600) as usize + 1, round as u8));
        }
        let before: u16 = d.mem.read_obj(GuestAddress(0x3002)).expect("used");
        d.wr(0x3000 + 4 * q, 2, q);
        poll_input(&mut d);
        let after: u16 = d.mem.read_obj(GuestAddress(0x3002)).expect("used");
        rx_used += u32::from(after.wrapping_sub(before));
        while let Ok(n) = peer.recv(&mut buf) {
            assert!(n > 0);
            tx_sent += 1;
        }
        if wild || round % 100 == 99 {
            assert_eq!(d.negotiate(u64::MAX), 0xb);
            d.setup_queue();
            for q in 0..2 {
                let base = q * QSTRIDE;
                d.mem
                    .write_obj(0u16, GuestAddress(base + 0x2002))
                    .expect("idx");
                d.mem
                    .write_obj(0u16, GuestAddress(base + 0x3002))
                    .expect("idx");
            }
        }
    }
    assert!(rx_used > 200, "only {rx_used} receive buffers used");
    assert!(tx_sent > 50, "only {tx_sent} frames sent");
}
