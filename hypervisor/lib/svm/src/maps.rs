//! The I/O and MSR permission maps (APM Vol. 2 §15.10.1 "I/O Permissions Map", §15.11 "MSR
//! Intercepts"). A set bit intercepts. Both start with everything intercepted; holes are
//! opened for what a guest may touch directly.

/// Size of the I/O permission map: one bit per port, plus the bits an access that starts at
/// port 0xFFFF and spans past it reads (12 KiB, 4 KiB aligned).
pub const IOPM_SIZE: usize = 12 * 1024;
/// Size of the MSR permission map (8 KiB, 4 KiB aligned).
pub const MSRPM_SIZE: usize = 8 * 1024;

/// The I/O permission map.
#[derive(Debug)]
pub struct Iopm<'a>(pub &'a mut [u8; IOPM_SIZE]);

impl<'a> Iopm<'a> {
    /// Takes the map over with every port intercepted.
    pub fn new(map: &'a mut [u8; IOPM_SIZE]) -> Self {
        map.fill(0xff);
        Self(map)
    }

    /// Lets the guest access `port` directly (an access wider than a byte exits unless every
    /// port it touches is allowed).
    pub fn allow(&mut self, port: u16) {
        self.0[usize::from(port / 8)] &= !(1 << (port % 8));
    }

    /// Whether an access to `port` of `size` bytes is intercepted.
    #[cfg(test)]
    pub fn intercepts(&self, port: u16, size: u8) -> bool {
        (0..u32::from(size.max(1))).any(|i| {
            let p = u32::from(port) + i;
            self.0[(p / 8) as usize] & (1 << (p % 8)) != 0
        })
    }
}

/// An MSR outside the three ranges the map covers: its accesses always exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrOutOfRange(pub u32);

/// The MSR permission map: three 2 KiB vectors for MSRs 0000_0000h-0000_1FFFh,
/// C000_0000h-C000_1FFFh and C001_0000h-C001_1FFFh, two bits per MSR (read, then write).
#[derive(Debug)]
pub struct Msrpm<'a>(&'a mut [u8; MSRPM_SIZE]);

fn msr_bit(msr: u32) -> Result<usize, MsrOutOfRange> {
    let (base, vector) = match msr {
        0x0000_0000..=0x0000_1fff => (0x0000_0000, 0),
        0xc000_0000..=0xc000_1fff => (0xc000_0000, 1),
        0xc001_0000..=0xc001_1fff => (0xc001_0000, 2),
        _ => return Err(MsrOutOfRange(msr)),
    };
    Ok(vector * 2048 * 8 + (msr - base) as usize * 2)
}

impl<'a> Msrpm<'a> {
    /// Takes the map over with every MSR intercepted.
    pub fn new(map: &'a mut [u8; MSRPM_SIZE]) -> Self {
        map.fill(0xff);
        Self(map)
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 8] &= !(1 << (bit % 8));
    }

    /// Lets the guest read `msr` directly.
    pub fn allow_read(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
        let bit = msr_bit(msr)?;
        self.clear(bit);
        Ok(())
    }

    /// Lets the guest write `msr` directly.
    pub fn allow_write(&mut self, msr: u32) -> Result<(), MsrOutOfRange> {
        let bit = msr_bit(msr)? + 1;
        self.clear(bit);
        Ok(())
    }

    /// Whether a read (`write` false) or write of `msr` is intercepted.
    #[cfg(test)]
    pub fn intercepts(&self, msr: u32, write: bool) -> bool {
        match msr_bit(msr) {
            Ok(bit) => {
                let bit = bit + usize::from(write);
                self.0[bit / 8] & (1 << (bit % 8)) != 0
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_bits_are_where_the_apm_puts_them() {
        let mut page = Box::new([0u8; MSRPM_SIZE]);
        let mut m = Msrpm::new(&mut page);
        m.allow_read(0xc000_0080).unwrap(); // EFER: vector 1, MSR 0x80 -> bit 0x100 of 0x800
        m.allow_write(0xc000_0102).unwrap();
        m.allow_read(0x10).unwrap();
        m.allow_write(0xc001_0117).unwrap();
        assert!(!m.intercepts(0xc000_0080, false) && m.intercepts(0xc000_0080, true));
        assert!(!m.intercepts(0xc000_0102, true) && m.intercepts(0xc000_0102, false));
        assert!(m.intercepts(0x4000_0000, false), "outside the map");
        assert_eq!(m.allow_read(0x4000_0000), Err(MsrOutOfRange(0x4000_0000)));
        assert_eq!(page[0x800 + 0x80 * 2 / 8], 0xfe);
        assert_eq!(page[0x10 * 2 / 8], 0xfe);
        assert_eq!(
            page[0x1000 + 0x117 * 2 / 8] & (1 << ((0x117 * 2 + 1) % 8)),
            0
        );
    }

    #[test]
    fn io_accesses_spanning_ports() {
        let mut page = Box::new([0u8; IOPM_SIZE]);
        let mut m = Iopm::new(&mut page);
        m.allow(0x80);
        assert!(!m.intercepts(0x80, 1));
        assert!(m.intercepts(0x80, 2), "touches 0x81 too");
        assert!(m.intercepts(0xffff, 4), "the bits past 0xffff are set");
    }
}
