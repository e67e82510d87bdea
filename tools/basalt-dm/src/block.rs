//! virtio-blk (virtio 1.2, 5.2) over a raw file or a block device of dom0.
//!
//! A request is a descriptor chain: the 16-byte header (type u32, reserved
//! u32, sector u64) readable, then the data (readable for a write,
//! writable for a read), then one writable status byte. Every byte goes
//! through this process's own buffer (never `O_DIRECT`, never a guest page
//! handed to the kernel for I/O); a request the device cannot honour gets
//! `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP`, and a chain too broken to
//! carry a status is returned used with length 0.

use crate::virtio_pci::{Device, Mem};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

/// A sector, the unit of `sector` and of the capacity.
pub const SECTOR: u64 = 512;
/// The queue's size.
const QUEUE_MAX: u16 = 256;
/// The largest piece copied at once.
const CHUNK: usize = 128 << 10;

/// The device.
#[derive(Debug)]
pub struct Block {
    file: File,
    readonly: bool,
    /// Bytes: a whole number of sectors (a partial last sector is left out).
    size: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    buf: Vec<u8>,
}

/// Opens `path` for the device: read-only or read-write, never with
/// `O_DIRECT` (no flag beyond the access mode and `O_CLOEXEC`).
pub fn open(path: &str, readonly: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(!readonly).open(path)
}

impl Block {
    /// The device over `file` (from [`open`]), named `name` for GET_ID.
    pub fn new(mut file: File, readonly: bool, name: &str) -> io::Result<Block> {
        // A block device's metadata says 0 bytes: its end says how many.
        let size = file.seek(SeekFrom::End(0))? / SECTOR * SECTOR;
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = name.len().min(id.len());
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(Block {
            file,
            readonly,
            size,
            id,
            buf: vec![0; CHUNK],
        })
    }

    /// The capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR
    }

    /// One request: its status and the bytes written into the guest's
    /// writable descriptors.
    fn request(&mut self, chain: virtio_queue::DescriptorChain<&Mem>, mem: &Mem) -> u32 {
        let Ok(mut r) = chain.clone().reader(mem) else {
            return 0;
        };
        let Ok(mut w) = chain.writer(mem) else {
            return 0;
        };
        let Some(data_len) = w.available_bytes().checked_sub(1) else {
            return 0;
        };
        let Ok(mut status_w) = w.split_at(data_len) else {
            return 0;
        };
        let mut header = [0u8; 16];
        let status = if r.read_exact(&mut header).is_err() {
            VIRTIO_BLK_S_IOERR
        } else {
            let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let sector = u64::from_le_bytes(header[8..].try_into().unwrap_or_default());
            match self.transfer(kind, sector, &mut r, &mut w) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("basalt-dm: block request {kind} at sector {sector}: {e}");
                    VIRTIO_BLK_S_IOERR
                }
            }
        };
        if status_w.write_all(&[status as u8]).is_err() {
            return 0;
        }
        (w.bytes_written() + 1) as u32
    }

    /// The request's work: its status, or an I/O error.
    fn transfer(
        &mut self,
        kind: u32,
        sector: u64,
        r: &mut virtio_queue::Reader<'_>,
        w: &mut virtio_queue::Writer<'_>,
    ) -> io::Result<u32> {
        let in_range = |len: usize| {
            sector
                .checked_mul(SECTOR)
                .and_then(|at| at.checked_add(len as u64).map(|end| (at, end)))
                .filter(|&(_, end)| end <= self.size)
                .map(|(at, _)| at)
        };
        match kind {
            VIRTIO_BLK_T_IN => {
                let Some(mut at) = in_range(w.available_bytes()) else {
                    return Ok(VIRTIO_BLK_S_IOERR);
                };
                while w.available_bytes() > 0 {
                    let n = w.available_bytes().min(CHUNK);
                    self.file.read_exact_at(&mut self.buf[..n], at)?;
                    w.write_all(&self.buf[..n])?;
                    at += n as u64;
                }
                Ok(VIRTIO_BLK_S_OK)
            }
            VIRTIO_BLK_T_OUT => {
                let Some(mut at) = in_range(r.available_bytes()) else {
                    return Ok(VIRTIO_BLK_S_IOERR);
                };
                if self.readonly {
                    return Ok(VIRTIO_BLK_S_IOERR);
                }
                while r.available_bytes() > 0 {
                    let n = r.available_bytes().min(CHUNK);
                    r.read_exact(&mut self.buf[..n])?;
                    self.file.write_all_at(&self.buf[..n], at)?;
                    at += n as u64;
                }
                Ok(VIRTIO_BLK_S_OK)
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.readonly {
                    self.file.sync_data()?;
                }
                Ok(VIRTIO_BLK_S_OK)
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = w.available_bytes().min(self.id.len());
                w.write_all(&self.id[..n])?;
                Ok(VIRTIO_BLK_S_OK)
            }
            _ => Ok(VIRTIO_BLK_S_UNSUPP),
        }
    }
}

impl Device for Block {
    fn device_id(&self) -> u16 {
        VIRTIO_ID_BLOCK as u16
    }

    fn features(&self) -> u64 {
        let ro = if self.readonly {
            1 << VIRTIO_BLK_F_RO
        } else {
            0
        };
        // SEG_MAX: without it Linux puts one segment in a request, so a
        // read of scattered page-cache pages costs one request per page.
        1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_SEG_MAX | ro
    }

    /// `struct virtio_blk_config`: the capacity in sectors and `seg_max`
    /// (a request's data buffers: the ring less the header and the status,
    /// as QEMU offers); the rest 0 (features not offered).
    fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 0x40];
        c[..8].copy_from_slice(&self.sectors().to_le_bytes());
        c[12..16].copy_from_slice(&u32::from(QUEUE_MAX - 2).to_le_bytes());
        c
    }

    fn queues(&self) -> usize {
        1
    }

    fn queue_max(&self) -> u16 {
        QUEUE_MAX
    }

    fn process(&mut self, _queue: usize, q: &mut Queue, mem: &Mem) -> Result<bool, String> {
        // One pass: without `VIRTIO_F_EVENT_IDX` and with notifications
        // never suppressed, the driver notifies again for what it adds later.
        let chains: Vec<_> = q.iter(mem).map_err(|e| e.to_string())?.collect();
        let used = !chains.is_empty();
        for chain in chains {
            let head = chain.head_index();
            let len = self.request(chain, mem);
            q.add_used(mem, head, len).map_err(|e| e.to_string())?;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests;
