//! The UEFI system table's header (UEFI 2.10 §4.2-4.3), which Multiboot2
//! tag 12 points to: Basalt names the firmware it booted on. It calls none
//! of the firmware's services.

/// `EFI_SYSTEM_TABLE_SIGNATURE`: "IBI SYST".
pub const SIGNATURE: u64 = 0x5453_5953_2049_4249;
/// How many bytes of the table [`SystemTable::parse`] reads.
pub const LEN: usize = 36;
/// How many UCS-2 characters of the vendor's name [`vendor`] reads.
pub const VENDOR_CHARS: usize = 48;

/// What Basalt takes from the system table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemTable {
    /// The UEFI revision: major in the high 16 bits, minor (70 for 2.7,
    /// 100 for 2.10) in the low ones.
    pub revision: u32,
    /// Physical address of the vendor's name (UCS-2, NUL-terminated).
    pub vendor: u64,
    /// The vendor's firmware revision.
    pub firmware_revision: u32,
}

impl SystemTable {
    /// Reads the table's first [`LEN`] bytes; `None` without the signature.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        (u64_at(0)? == SIGNATURE).then_some(())?;
        Some(Self {
            revision: u32_at(8)?,
            vendor: u64_at(24)?,
            firmware_revision: u32_at(32)?,
        })
    }
}

/// The vendor's name from its UCS-2 bytes, up to the NUL, in `out`: ASCII
/// kept, anything else printed as `?`.
pub fn vendor<'a>(ucs2: &[u8], out: &'a mut [u8; VENDOR_CHARS]) -> &'a str {
    let chars = ucs2
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    let mut len = 0;
    for (slot, c) in out.iter_mut().zip(chars.take_while(|&c| c != 0)) {
        *slot = if (0x20..0x7f).contains(&c) {
            c as u8
        } else {
            b'?'
        };
        len += 1;
    }
    core::str::from_utf8(&out[..len]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(signature: u64) -> Vec<u8> {
        let mut t = signature.to_le_bytes().to_vec();
        t.extend_from_slice(&((2 << 16) | 70u32).to_le_bytes());
        t.extend_from_slice(&120u32.to_le_bytes()); // header size
        t.extend_from_slice(&[0; 8]); // CRC32, reserved
        t.extend_from_slice(&0x1f9e_c000u64.to_le_bytes());
        t.extend_from_slice(&0x1_0000u32.to_le_bytes());
        t
    }

    #[test]
    fn reads_ovmfs_header() {
        let st = SystemTable::parse(&table(SIGNATURE)).expect("signed");
        assert_eq!(st.revision, 0x2_0046);
        assert_eq!(st.vendor, 0x1f9e_c000);
        assert_eq!(st.firmware_revision, 0x1_0000);
        assert_eq!(SystemTable::parse(&table(SIGNATURE ^ 1)), None);
        assert_eq!(SystemTable::parse(&table(SIGNATURE)[..LEN - 1]), None);
        assert_eq!(SystemTable::parse(&[]), None);
    }

    #[test]
    fn vendor_names_are_cut_and_kept_printable() {
        let ucs2 = |s: &[u16]| s.iter().flat_map(|c| c.to_le_bytes()).collect::<Vec<u8>>();
        let mut out = [0; VENDOR_CHARS];
        let edk = ucs2(&[
            b'E' as u16,
            b'D' as u16,
            b'K' as u16,
            b' ' as u16,
            b'I' as u16,
            b'I' as u16,
            0,
            b'x' as u16,
        ]);
        assert_eq!(vendor(&edk, &mut out), "EDK II");
        assert_eq!(vendor(&ucs2(&[0x263a, b'A' as u16, 7]), &mut out), "?A?");
        assert_eq!(vendor(&[b'A', 0, b'B'], &mut out), "A"); // an odd byte is dropped
        let long = ucs2(&[b'x' as u16; 100]);
        assert_eq!(vendor(&long, &mut out).len(), VENDOR_CHARS);
        assert_eq!(vendor(&[], &mut out), "");
    }
}
