//! Access to a guest's physical memory.

use core::fmt;

/// A guest-physical access that guest memory cannot serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// The range `[gpa, gpa + len)` is not inside `[0, size)` (or `gpa + len` overflows).
    OutOfRange {
        /// First guest-physical address of the access.
        gpa: u64,
        /// Length of the access in bytes.
        len: u64,
        /// Size of the guest's memory in bytes.
        size: u64,
    },
    /// The range is inside the guest's memory, but the page holding `gpa` could not be reached
    /// (for an implementation whose memory is not contiguous or not all mapped).
    Unmapped {
        /// The guest-physical address that could not be reached.
        gpa: u64,
    },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutOfRange { gpa, len, size } => write!(
                f,
                "guest-physical range 0x{gpa:x} + {len} bytes is outside the domain's memory \
                 (0x{size:x} bytes)"
            ),
            Self::Unmapped { gpa } => write!(
                f,
                "guest-physical address 0x{gpa:x} is not backed by a mapped frame"
            ),
        }
    }
}

/// Checks that `[gpa, gpa + len)` lies inside `[0, size)`.
///
/// A helper for [`GuestMemory`] implementations; an empty access at `gpa == size` is allowed.
pub fn check_range(size: u64, gpa: u64, len: u64) -> Result<(), MemoryError> {
    match gpa.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(MemoryError::OutOfRange { gpa, len, size }),
    }
}

/// A guest's physical memory, as seen by the domain builder.
///
/// Guest-physical addresses start at 0 and end at [`size`](Self::size). Implementations check
/// every access (see [`check_range`]) and never partially perform one that fails the check.
pub trait GuestMemory {
    /// Size of the guest's physical memory in bytes.
    fn size(&self) -> u64;

    /// Copies `bytes` to guest-physical address `gpa`.
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError>;

    /// Sets `len` bytes from guest-physical address `gpa` to `byte`.
    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError>;

    /// Copies `out.len()` bytes from guest-physical address `gpa` into `out`.
    fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), MemoryError>;
}

/// [`GuestMemory`] over one byte slice: guest-physical address `a` is `slice[a]`.
#[derive(Debug)]
pub struct SliceMemory<'a> {
    bytes: &'a mut [u8],
}

impl<'a> SliceMemory<'a> {
    /// Guest memory of `bytes.len()` bytes backed by `bytes`.
    pub fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes }
    }

    /// The backing bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    fn range(&self, gpa: u64, len: u64) -> Result<core::ops::Range<usize>, MemoryError> {
        let size = self.size();
        check_range(size, gpa, len)?;
        let err = MemoryError::OutOfRange { gpa, len, size };
        let start = usize::try_from(gpa).map_err(|_| err)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .ok_or(err)?;
        Ok(start..end)
    }
}

impl GuestMemory for SliceMemory<'_> {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let range = self.range(gpa, bytes.len() as u64)?;
        let size = self.size();
        let dst = self.bytes.get_mut(range).ok_or(MemoryError::OutOfRange {
            gpa,
            len: bytes.len() as u64,
            size,
        })?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        let range = self.range(gpa, len)?;
        let size = self.size();
        let dst = self
            .bytes
            .get_mut(range)
            .ok_or(MemoryError::OutOfRange { gpa, len, size })?;
        dst.fill(byte);
        Ok(())
    }

    fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let len = out.len() as u64;
        let range = self.range(gpa, len)?;
        let src = self.bytes.get(range).ok_or(MemoryError::OutOfRange {
            gpa,
            len,
            size: self.size(),
        })?;
        out.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_memory_checks_every_access() {
        let mut backing = [0u8; 16];
        let mut mem = SliceMemory::new(&mut backing);
        assert_eq!(mem.size(), 16);
        mem.write(2, &[1, 2, 3]).unwrap();
        mem.fill(5, 3, 0xaa).unwrap();
        let mut out = [0u8; 8];
        mem.read(1, &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 3, 0xaa, 0xaa, 0xaa, 0]);
        assert_eq!(
            mem.write(15, &[1, 2]),
            Err(MemoryError::OutOfRange {
                gpa: 15,
                len: 2,
                size: 16
            })
        );
        assert!(mem.fill(u64::MAX, 2, 0).is_err());
        assert!(mem.read(17, &mut []).is_err());
        mem.read(16, &mut []).unwrap();
        // Nothing was partially written.
        assert_eq!(mem.bytes()[15], 0);
    }

    #[test]
    fn check_range_overflow() {
        assert!(check_range(u64::MAX, u64::MAX, 1).is_err());
        assert!(check_range(10, 0, 10).is_ok());
        assert!(check_range(10, 0, 11).is_err());
    }

    #[test]
    fn display() {
        let e = MemoryError::OutOfRange {
            gpa: 0x1000,
            len: 4,
            size: 0x800,
        };
        assert_eq!(
            e.to_string(),
            "guest-physical range 0x1000 + 4 bytes is outside the domain's memory (0x800 bytes)"
        );
        assert!(
            MemoryError::Unmapped { gpa: 0x2000 }
                .to_string()
                .contains("0x2000")
        );
    }
}
