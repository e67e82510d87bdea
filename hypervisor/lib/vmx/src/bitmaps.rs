//! The MSR bitmap (Intel SDM Vol. 3C, "Virtual Machine Control Structures", "VM-Execution
//! Control Fields": "MSR-Bitmap Address"; its use in "VMX Non-Root Operation", "Instructions
//! That Cause VM Exits Conditionally").
//!
//! A plain 4 KiB page the kernel allocates and whose physical address it writes to
//! [`crate::fields::ctrl::MSR_BITMAP`]. A set bit means "exit"; the wrapper starts from
//! "intercept everything" and opens holes. (The I/O bitmaps are two pages of one bit per port
//! that the kernel fills itself.)

use core::fmt;

/// An MSR outside the two ranges the MSR bitmap covers; RDMSR and WRMSR of it always exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsrOutOfRange(pub u32);

impl fmt::Display for MsrOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MSR {:#x} is outside the MSR bitmap (0-0x1fff, 0xc0000000-0xc0001fff) and always \
             exits",
            self.0
        )
    }
}

/// The 4 KiB MSR-bitmap page ("use MSR bitmaps" primary control).
///
/// Its four 1 KiB quarters are, in order: read bitmap for low MSRs (0000_0000h-0000_1FFFh),
/// read bitmap for high MSRs (C000_0000h-C000_1FFFh), write bitmap for low MSRs, write bitmap
/// for high MSRs; bit `n % 8` of byte `n / 8` of a quarter stands for MSR `base + n`. RDMSR or
/// WRMSR of any other MSR always causes a VM exit.
#[derive(Debug)]
pub struct MsrBitmap<'a>(&'a mut [u8; 4096]);

/// Byte offset of the read bitmap for low MSRs.
const READ_LOW: usize = 0;
/// Byte offset of the read bitmap for high MSRs.
const READ_HIGH: usize = 1024;
/// Byte offset of the write bitmap for low MSRs.
const WRITE_LOW: usize = 2048;
/// Byte offset of the write bitmap for high MSRs.
const WRITE_HIGH: usize = 3072;

impl<'a> MsrBitmap<'a> {
    /// Takes `page` over and sets every bit: every RDMSR and WRMSR exits.
    pub fn new(page: &'a mut [u8; 4096]) -> Self {
        page.fill(0xFF);
        Self(page)
    }

    /// (byte offset, bit mask) of `msr` within the read (`write = false`) or write bitmap.
    const fn locate(msr: u32, write: bool) -> Option<(usize, u8)> {
        let (index, low) = match msr {
            0..=0x1FFF => (msr, true),
            0xC000_0000..=0xC000_1FFF => (msr - 0xC000_0000, false),
            _ => return None,
        };
        let base = match (write, low) {
            (false, true) => READ_LOW,
            (false, false) => READ_HIGH,
            (true, true) => WRITE_LOW,
            (true, false) => WRITE_HIGH,
        };
        Some((base + (index / 8) as usize, 1 << (index % 8)))
    }

    fn set(&mut self, msr: u32, write: bool, intercept: bool) -> Result<(), MsrOutOfRange> {
        let (offset, mask) = Self::locate(msr, write).ok_or(MsrOutOfRange(msr))?;
        let byte = self.0.get_mut(offset).ok_or(MsrOutOfRange(msr))?;
        if intercept {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
        Ok(())
    }

    /// Lets the guest RDMSR `msr` without a VM exit.
    pub fn allow_read(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
        self.set(msr, false, false)
    }

    /// Lets the guest WRMSR `msr` without a VM exit.
    pub fn allow_write(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
        self.set(msr, true, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<'a> MsrBitmap<'a> {
        /// Wraps a page that already holds an MSR bitmap, without changing it.
        pub fn wrap(page: &'a mut [u8; 4096]) -> Self {
            Self(page)
        }

        /// The page's bytes.
        pub fn as_bytes(&self) -> &[u8; 4096] {
            self.0
        }

        fn get(&self, msr: u32, write: bool) -> bool {
            match Self::locate(msr, write) {
                Some((offset, mask)) => self.0.get(offset).is_none_or(|b| b & mask != 0),
                None => true,
            }
        }

        /// Lets the guest read and write `msr` without VM exits.
        pub fn allow(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
            self.allow_read(msr)?;
            self.allow_write(msr)
        }

        /// Makes RDMSR of `msr` exit again (MSRs outside the bitmap always exit).
        pub fn intercept_read(&mut self, msr: u32) {
            // Out-of-range MSRs are intercepted by the processor anyway.
            let _ = self.set(msr, false, true);
        }

        /// Makes WRMSR of `msr` exit again (MSRs outside the bitmap always exit).
        pub fn intercept_write(&mut self, msr: u32) {
            let _ = self.set(msr, true, true);
        }

        /// Whether RDMSR of `msr` causes a VM exit.
        pub fn intercepts_read(&self, msr: u32) -> bool {
            self.get(msr, false)
        }

        /// Whether WRMSR of `msr` causes a VM exit.
        pub fn intercepts_write(&self, msr: u32) -> bool {
            self.get(msr, true)
        }
    }

    #[test]
    fn msr_bitmap_layout() {
        let mut page = [0u8; 4096];
        let mut bitmap = MsrBitmap::new(&mut page);
        assert!(bitmap.as_bytes().iter().all(|&b| b == 0xFF));
        assert!(bitmap.intercepts_read(0xC000_0080));

        // IA32_EFER (C000_0080h): bit 0x80 of the read-high quarter at byte offset 1024.
        bitmap.allow_read(0xC000_0080).unwrap();
        assert!(!bitmap.intercepts_read(0xC000_0080));
        assert!(bitmap.intercepts_write(0xC000_0080));
        let bytes = bitmap.as_bytes();
        assert_eq!(bytes[1024 + 0x80 / 8], 0xFE);
        assert_eq!(bytes.iter().filter(|&&b| b != 0xFF).count(), 1);

        // IA32_SYSENTER_CS (174h), write: byte 2048 + 0x2E, bit 4.
        bitmap.allow_write(0x174).unwrap();
        assert_eq!(bitmap.as_bytes()[2048 + 0x2E], 0xEF);
        assert!(!bitmap.intercepts_write(0x174));
        assert!(bitmap.intercepts_read(0x174));

        // High write quarter, last MSR: byte 4095, bit 7.
        bitmap.allow(0xC000_1FFF).unwrap();
        assert_eq!(bitmap.as_bytes()[4095], 0x7F);
        assert_eq!(bitmap.as_bytes()[1024 + 1023], 0x7F);

        // Low read quarter, MSR 0: byte 0 bit 0.
        bitmap.allow_read(0).unwrap();
        assert_eq!(bitmap.as_bytes()[0], 0xFE);

        bitmap.intercept_read(0xC000_0080);
        assert!(bitmap.intercepts_read(0xC000_0080));
        bitmap.intercept_write(0x174);
        assert!(bitmap.intercepts_write(0x174));
    }

    #[test]
    fn msrs_outside_the_ranges_always_exit() {
        let mut page = [0u8; 4096];
        let mut bitmap = MsrBitmap::wrap(&mut page);
        for msr in [0x2000, 0xC000_2000, 0xBFFF_FFFF, 0x4000_0000, u32::MAX] {
            assert_eq!(bitmap.allow_read(msr), Err(MsrOutOfRange(msr)));
            assert!(bitmap.intercepts_read(msr));
            assert!(bitmap.intercepts_write(msr));
        }
        // A zeroed, wrapped page lets everything in range through.
        assert!(!bitmap.intercepts_read(0x1FFF));
        assert!(!bitmap.intercepts_write(0xC000_0000));
    }
}
