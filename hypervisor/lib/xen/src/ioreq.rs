//! Xen's ioreq-server interface, the parts without hardware (`public/hvm/ioreq.h`,
//! `public/hvm/dm_op.h`; docs/toolstack.md, "Devices: the ioreq server").
//!
//! A device model in the control domain registers ranges of a guest's port, memory and PCI
//! configuration space ([`Ranges`]); a guest access inside one becomes a [`Request`], written
//! into the vCPU's `ioreq_t` slot of the server's shared page ([`Request::words`]), and the
//! vCPU waits until the device model sets the slot's state to [`STATE_IORESP_READY`].

use alloc::vec::Vec;

/// `STATE_IOREQ_NONE`: the slot is free.
pub const STATE_NONE: u8 = 0;
/// `STATE_IOREQ_READY`: a request waits for the device model.
pub const STATE_READY: u8 = 1;
/// `STATE_IORESP_READY`: the device model answered.
pub const STATE_IORESP_READY: u8 = 3;
/// `IOREQ_TYPE_PIO`: port I/O, `addr` the port.
pub const TYPE_PIO: u8 = 0;
/// `IOREQ_TYPE_COPY`: memory, `addr` the guest-physical address.
pub const TYPE_COPY: u8 = 1;
/// `IOREQ_TYPE_PCI_CONFIG`: configuration space, `addr` = SBDF << 32 | register.
pub const TYPE_PCI_CONFIG: u8 = 2;
/// Bytes of one `ioreq_t`; the page holds one per vCPU.
pub const SLOT_SIZE: u64 = 32;
/// `vp_eport` of vCPU 0: the event channels between a guest's vCPUs and its device model are
/// Basalt's, outside the guest's own ports (below [`crate::evtchn::MAX_PORTS`]), so a guest
/// can neither see nor close them.
pub const FIRST_PORT: u32 = crate::evtchn::MAX_PORTS;
/// Xen's `MAX_NR_IO_RANGES`: ranges of one kind per server.
pub const MAX_RANGES: usize = 256;

/// One access for the device model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// [`TYPE_PIO`], [`TYPE_COPY`] or [`TYPE_PCI_CONFIG`].
    pub kind: u8,
    /// The port, address, or SBDF and register.
    pub addr: u64,
    /// The value written (0 for a read).
    pub data: u64,
    /// Bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// A read (`dir` = `IOREQ_READ`).
    pub read: bool,
}

impl Request {
    /// The slot's four little-endian words with state [`STATE_READY`] and event channel
    /// `port`: `addr`, `data`, `count` (1) | `size` << 32, and `vp_eport` | the state, `dir`
    /// (bit 5) and `df` bits at byte 30 | `type` at byte 31. The last word carries the state:
    /// it is stored last.
    pub fn words(&self, port: u32) -> [u64; 4] {
        let flags = u64::from(STATE_READY) | u64::from(self.read) << 5;
        [
            self.addr,
            self.data,
            1 | u64::from(self.size) << 32,
            u64::from(port) | flags << 48 | u64::from(self.kind) << 56,
        ]
    }
}

/// The state nibble of a slot's last word.
pub fn state(last_word: u64) -> u8 {
    (last_word >> 48) as u8 & 0xf
}

/// Why a range was refused, as Xen answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeError {
    /// `-EINVAL`: an unknown kind, or start after end.
    Invalid,
    /// `-EEXIST`: it overlaps a range of the server.
    Exists,
    /// `-ENOSPC`: [`MAX_RANGES`] of that kind already.
    NoSpace,
    /// `-ENOENT`: no such range to remove.
    NotFound,
}

/// A server's ranges (`XEN_DMOP_IO_RANGE_PORT`, `_MEMORY`, `_PCI`), each inclusive.
#[derive(Debug, Default)]
pub struct Ranges([Vec<(u64, u64)>; 3]);

/// `XEN_DMOP_IO_RANGE_PORT`.
pub const RANGE_PORT: u32 = 0;
/// `XEN_DMOP_IO_RANGE_MEMORY`.
pub const RANGE_MEMORY: u32 = 1;
/// `XEN_DMOP_IO_RANGE_PCI`: SBDFs (segment << 16 | bus << 8 | device << 3 | function).
pub const RANGE_PCI: u32 = 2;

impl Ranges {
    fn set(&mut self, kind: u32, start: u64, end: u64) -> Result<&mut Vec<(u64, u64)>, RangeError> {
        match self.0.get_mut(kind as usize) {
            Some(set) if start <= end => Ok(set),
            _ => Err(RangeError::Invalid),
        }
    }

    /// Adds `start..=end` of `kind`.
    pub fn map(&mut self, kind: u32, start: u64, end: u64) -> Result<(), RangeError> {
        let set = self.set(kind, start, end)?;
        if set.iter().any(|&(s, e)| s <= end && start <= e) {
            return Err(RangeError::Exists);
        }
        if set.len() >= MAX_RANGES {
            return Err(RangeError::NoSpace);
        }
        set.push((start, end));
        Ok(())
    }

    /// Removes the range `start..=end` of `kind` (as it was added).
    pub fn unmap(&mut self, kind: u32, start: u64, end: u64) -> Result<(), RangeError> {
        let set = self.set(kind, start, end)?;
        let at = set
            .iter()
            .position(|&r| r == (start, end))
            .ok_or(RangeError::NotFound)?;
        set.swap_remove(at);
        Ok(())
    }

    /// Whether `len` (≥ 1) units from `at` lie wholly in one range of `kind` (Xen passes an
    /// access to a server only then).
    pub fn contains(&self, kind: u32, at: u64, len: u64) -> bool {
        let Some(last) = at.checked_add(len.max(1) - 1) else {
            return false;
        };
        self.0
            .get(kind as usize)
            .is_some_and(|set| set.iter().any(|&(s, e)| s <= at && last <= e))
    }
}

#[cfg(test)]
mod tests;
