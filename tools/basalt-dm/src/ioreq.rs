//! Xen's ioreq interface, as a device model sees it: the `dm_op` requests
//! (`public/hvm/dm_op.h`) and the synchronous ioreq page
//! (`public/hvm/ioreq.h`), one 32-byte `struct ioreq` per vCPU:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | `addr`: port, guest-physical address, or `SBDF << 32 \| register` |
//! | 8 | 8 | `data` (or, with `data_is_ptr`, the guest-physical address of it) |
//! | 16 | 4 | `count` (repetitions) |
//! | 20 | 4 | `size` (bytes, 1-8) |
//! | 24 | 4 | `vp_eport`: the vCPU's event channel, in the guest |
//! | 28 | 2 | padding |
//! | 30 | 1 | `state` (bits 3:0), `data_is_ptr` (4), `dir` (5, 1 = read), `df` (6) |
//! | 31 | 1 | `type`: PIO 0, COPY (MMIO) 1, PCI_CONFIG 2 |
//!
//! Bytes 24-31 are read and written as one word: the state is bits 51:48.

use std::sync::atomic::{AtomicU64, Ordering};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

pub use basalt_xen::ioreq::{
    STATE_IORESP_READY, STATE_READY, TYPE_COPY, TYPE_PCI_CONFIG, TYPE_PIO,
};
/// `STATE_IOREQ_INPROCESS`: the device model is on it (only device models set it).
pub const STATE_INPROCESS: u8 = 2;
/// Slots in a page.
pub const SLOTS: usize = 4096 / basalt_xen::ioreq::SLOT_SIZE as usize;

/// One access, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// An I/O port.
    Port(u64),
    /// A guest-physical address.
    Mmio(u64),
    /// A PCI function's configuration register.
    PciConfig {
        /// Xen's SBDF: segment 31:16, bus 15:8, device 7:3, function 2:0.
        sbdf: u32,
        /// Register offset.
        reg: u32,
    },
}

/// Whoever answers accesses: `write` is `Some(value)` for a write; a read
/// returns its value (`size` bytes, low-order).
pub trait Handler {
    /// One access of `size` bytes.
    fn access(&mut self, at: Access, size: u32, write: Option<u64>) -> u64;
}

/// The synchronous ioreq page, shared with the hypervisor.
#[derive(Debug)]
pub struct Page<'a> {
    words: &'a [AtomicU64],
}

impl<'a> Page<'a> {
    /// Over `words` (512 of them).
    pub fn new(words: &'a [AtomicU64]) -> Page<'a> {
        Page { words }
    }

    fn word(&self, vcpu: usize, i: usize) -> &AtomicU64 {
        &self.words[vcpu * 4 + i]
    }

    /// vCPU `vcpu`'s event channel, as the hypervisor wrote it.
    pub fn vp_eport(&self, vcpu: usize) -> u32 {
        self.word(vcpu, 3).load(Ordering::Acquire) as u32
    }

    /// Answers vCPU `vcpu`'s request if it is READY: whether it was.
    pub fn serve<M: GuestMemory>(&self, vcpu: usize, mem: &M, handler: &mut impl Handler) -> bool {
        if vcpu >= SLOTS || vcpu * 4 + 3 >= self.words.len() {
            return false;
        }
        let w3 = self.word(vcpu, 3).load(Ordering::Acquire);
        if basalt_xen::ioreq::state(w3) != STATE_READY {
            return false;
        }
        let set_state = |s: u8, order| {
            self.word(vcpu, 3)
                .store((w3 & !(0xf << 48)) | (u64::from(s) << 48), order)
        };
        set_state(STATE_INPROCESS, Ordering::Relaxed);
        let addr = self.word(vcpu, 0).load(Ordering::Relaxed);
        let data = self.word(vcpu, 1).load(Ordering::Relaxed);
        let w2 = self.word(vcpu, 2).load(Ordering::Relaxed);
        let (count, size) = (w2 as u32, (w2 >> 32) as u32);
        let flags = (w3 >> 48) as u8;
        let (data_is_ptr, read, df) = (flags & 0x10 != 0, flags & 0x20 != 0, flags & 0x40 != 0);
        let kind = (w3 >> 56) as u8;
        let at = |a: u64| match kind {
            TYPE_PIO => Some(Access::Port(a)),
            TYPE_COPY => Some(Access::Mmio(a)),
            TYPE_PCI_CONFIG => Some(Access::PciConfig {
                sbdf: (a >> 32) as u32,
                reg: a as u32,
            }),
            _ => None,
        };
        let size = size.clamp(1, 8);
        let mut out = data;
        if !data_is_ptr {
            if let Some(a) = at(addr) {
                let v = handler.access(a, size, (!read).then_some(data));
                if read {
                    out = v;
                }
            } else if read {
                out = u64::MAX;
            }
        } else {
            // `rep ins`/`outs`/`movs`: `count` items between the device
            // and guest memory at `data`, stepping down with `df`.
            let step = |i: u64| i.wrapping_mul(u64::from(size));
            for i in 0..u64::from(count.min(4096)) {
                let (dev, ram) = if df {
                    (addr.wrapping_sub(step(i)), data.wrapping_sub(step(i)))
                } else {
                    (addr.wrapping_add(step(i)), data.wrapping_add(step(i)))
                };
                let dev = if kind == TYPE_PIO { addr } else { dev };
                let Some(a) = at(dev) else { break };
                let mut bytes = [0u8; 8];
                let n = size as usize;
                if read {
                    bytes = handler.access(a, size, None).to_le_bytes();
                    if mem.write_slice(&bytes[..n], GuestAddress(ram)).is_err() {
                        break;
                    }
                } else {
                    if mem.read_slice(&mut bytes[..n], GuestAddress(ram)).is_err() {
                        break;
                    }
                    handler.access(a, size, Some(u64::from_le_bytes(bytes)));
                }
            }
        }
        self.word(vcpu, 1).store(out, Ordering::Relaxed);
        set_state(STATE_IORESP_READY, Ordering::Release);
        true
    }
}

/// `XEN_DMOP_*` numbers.
pub mod op {
    /// `create_ioreq_server`.
    pub const CREATE_IOREQ_SERVER: u32 = 1;
    /// `map_io_range_to_ioreq_server`.
    pub const MAP_IO_RANGE: u32 = 3;
    /// `unmap_io_range_from_ioreq_server`.
    pub const UNMAP_IO_RANGE: u32 = 4;
    /// `set_ioreq_server_state`.
    pub const SET_STATE: u32 = 5;
    /// `destroy_ioreq_server`.
    pub const DESTROY: u32 = 6;
    /// `inject_msi`.
    pub const INJECT_MSI: u32 = 14;
    /// `nr_vcpus`.
    pub const NR_VCPUS: u32 = 20;
}

/// `XEN_DMOP_IO_RANGE_*` (ports, 0, are not used here).
pub mod range {
    /// Guest-physical memory.
    pub const MEMORY: u32 = 1;
    /// PCI functions, by SBDF.
    pub const PCI: u32 = 2;
}

/// Bytes of a `struct xen_dm_op` (its largest union member is 32 bytes;
/// Xen reads only as many as the op needs).
pub const DM_OP_SIZE: usize = 40;

/// A `struct xen_dm_op`: `op` (u32), pad (u32), then the op's fields.
pub fn dm_op(op: u32, fields: &[u8]) -> [u8; DM_OP_SIZE] {
    let mut b = [0u8; DM_OP_SIZE];
    b[..4].copy_from_slice(&op.to_le_bytes());
    b[8..8 + fields.len()].copy_from_slice(fields);
    b
}

/// `create_ioreq_server` without buffered ioreqs; the id is OUT at byte 12.
pub fn create_server() -> [u8; DM_OP_SIZE] {
    dm_op(op::CREATE_IOREQ_SERVER, &[0; 6])
}

/// The server id `create_server` returned.
pub fn created_id(b: &[u8; DM_OP_SIZE]) -> u16 {
    u16::from_le_bytes([b[12], b[13]])
}

/// `map_io_range_to_ioreq_server` (or unmap): `[start, end]` inclusive.
pub fn io_range(map: bool, id: u16, kind: u32, start: u64, end: u64) -> [u8; DM_OP_SIZE] {
    let mut f = [0u8; 24];
    f[..2].copy_from_slice(&id.to_le_bytes());
    f[4..8].copy_from_slice(&kind.to_le_bytes());
    f[8..16].copy_from_slice(&start.to_le_bytes());
    f[16..].copy_from_slice(&end.to_le_bytes());
    dm_op(
        if map {
            op::MAP_IO_RANGE
        } else {
            op::UNMAP_IO_RANGE
        },
        &f,
    )
}

/// `set_ioreq_server_state`.
pub fn set_state(id: u16, enabled: bool) -> [u8; DM_OP_SIZE] {
    let [a, b] = id.to_le_bytes();
    dm_op(op::SET_STATE, &[a, b, u8::from(enabled), 0])
}

/// `destroy_ioreq_server`.
pub fn destroy(id: u16) -> [u8; DM_OP_SIZE] {
    let [a, b] = id.to_le_bytes();
    dm_op(op::DESTROY, &[a, b, 0, 0])
}

/// `inject_msi`.
pub fn inject_msi(addr: u64, data: u32) -> [u8; DM_OP_SIZE] {
    let mut f = [0u8; 16];
    f[..4].copy_from_slice(&data.to_le_bytes());
    f[8..].copy_from_slice(&addr.to_le_bytes());
    dm_op(op::INJECT_MSI, &f)
}

/// `nr_vcpus`; the count is OUT at byte 8.
pub fn nr_vcpus() -> [u8; DM_OP_SIZE] {
    dm_op(op::NR_VCPUS, &[0; 4])
}

/// Xen's SBDF of `0000:00:slot.0`.
pub fn sbdf(slot: u8) -> u32 {
    u32::from(slot & 0x1f) << 3
}

#[cfg(test)]
mod tests;
