//! A PCI function's type-0 configuration space (PCI Local Bus 3.0, 6.1):
//! 256 bytes with a write mask, so that read-only fields stay, a BAR reads
//! back its size mask when the guest writes all ones (6.2.5.1), and the
//! capability list (6.7) is data written once.

/// Command register (0x04) bits the guest may set: I/O space, memory space,
/// bus master, INTx disable.
const COMMAND_WRITABLE: u16 = 0x0407;
/// Status bit "capabilities list".
const STATUS_CAP_LIST: u16 = 1 << 4;
/// BAR type bits of a 64-bit memory BAR, not prefetchable.
const BAR_MEM64: u32 = 0b100;

/// The configuration space.
#[derive(Debug, Clone)]
pub struct Config {
    bytes: [u8; 256],
    wmask: [u8; 256],
    /// Where the next capability goes, and the last one's `next` byte.
    cap_end: usize,
    cap_last_next: usize,
}

impl Config {
    /// A function of `vendor`/`device`, class code `class` (base, sub,
    /// interface in bits 23:0), revision `revision`, subsystem ids.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8, subsystem: (u16, u16)) -> Self {
        let mut c = Config {
            bytes: [0; 256],
            wmask: [0; 256],
            cap_end: 0x40,
            cap_last_next: 0x34,
        };
        c.put(0x00, &vendor.to_le_bytes());
        c.put(0x02, &device.to_le_bytes());
        c.put(0x06, &STATUS_CAP_LIST.to_le_bytes());
        c.put(0x08, &(class << 8 | u32::from(revision)).to_le_bytes());
        c.put(0x2c, &subsystem.0.to_le_bytes());
        c.put(0x2e, &subsystem.1.to_le_bytes());
        c.writable(0x04, &COMMAND_WRITABLE.to_le_bytes());
        // Interrupt line: scratch for the guest.
        c.writable(0x3c, &[0xff]);
        c
    }

    /// Sets bytes at `at` (read-only unless made writable).
    pub fn put(&mut self, at: usize, data: &[u8]) {
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }

    /// Makes the bits of `mask` at `at` writable by the guest.
    pub fn writable(&mut self, at: usize, mask: &[u8]) {
        self.wmask[at..at + mask.len()].copy_from_slice(mask);
    }

    /// BAR `index` (and `index + 1`) as one 64-bit memory BAR of `size`
    /// bytes (a power of two, at least 16) at `address`.
    pub fn bar64(&mut self, index: usize, size: u64, address: u64) {
        let at = 0x10 + 4 * index;
        let mask = !(size - 1);
        self.put(
            at,
            &((address as u32 & mask as u32) | BAR_MEM64).to_le_bytes(),
        );
        self.put(at + 4, &((address >> 32) as u32).to_le_bytes());
        self.writable(at, &(mask as u32 & !0xf).to_le_bytes());
        self.writable(at + 4, &((mask >> 32) as u32).to_le_bytes());
    }

    /// The address BAR `index` holds (a 64-bit one).
    pub fn bar64_address(&self, index: usize) -> u64 {
        let at = 0x10 + 4 * index;
        let lo = u64::from(self.read(at as u32, 4) & !0xf);
        lo | u64::from(self.read(at as u32 + 4, 4)) << 32
    }

    /// Whether the guest enabled memory decoding (command bit 1).
    pub fn memory_enabled(&self) -> bool {
        self.bytes[0x04] & 0b10 != 0
    }

    /// Appends a capability whose body starts with its id (`body[1]`, the
    /// next pointer, is filled in): its offset.
    pub fn add_capability(&mut self, body: &[u8]) -> usize {
        let at = self.cap_end;
        self.put(at, body);
        self.bytes[at + 1] = 0;
        self.bytes[self.cap_last_next] = at as u8;
        self.cap_last_next = at + 1;
        self.cap_end = (at + body.len()).next_multiple_of(4);
        at
    }

    /// A read of `size` (1, 2 or 4) bytes at `reg`; outside the space or
    /// misaligned, all ones.
    pub fn read(&self, reg: u32, size: u32) -> u32 {
        let (at, n) = (reg as usize, size as usize);
        if !matches!(n, 1 | 2 | 4) || at % n != 0 || at + n > 256 {
            return u32::MAX >> (32 - 8 * n.clamp(1, 4));
        }
        let mut b = [0u8; 4];
        b[..n].copy_from_slice(&self.bytes[at..at + n]);
        u32::from_le_bytes(b)
    }

    /// A write of `size` bytes at `reg`: only the writable bits change.
    pub fn write(&mut self, reg: u32, size: u32, value: u32) {
        let (at, n) = (reg as usize, size as usize);
        if !matches!(n, 1 | 2 | 4) || at % n != 0 || at + n > 256 {
            return;
        }
        for (i, v) in value.to_le_bytes()[..n].iter().enumerate() {
            let m = self.wmask[at + i];
            self.bytes[at + i] = (self.bytes[at + i] & !m) | (v & m);
        }
    }

    /// The byte at `at`.
    pub fn byte(&self, at: usize) -> u8 {
        self.bytes[at]
    }
}

#[cfg(test)]
mod tests;
