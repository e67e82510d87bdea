//! Turning the machine off: the sleep-type values of the S5 (soft off) state, which the
//! firmware gives only in its DSDT, as the AML object `\_S5_` (ACPI 6.5, 7.4.2 "\_Sx (System
//! States)"): a package whose first two elements are the `SLP_TYP` values for PM1a_CNT and
//! PM1b_CNT.
//!
//! Only the usual static form `Name (_S5, Package () { a, b, ... })` is recognised; firmware
//! that computes `_S5` in a method is not (the caller then cannot power off through ACPI and
//! says so).

/// AML `NameOp`.
const NAME_OP: u8 = 0x08;
/// AML `PackageOp`.
const PACKAGE_OP: u8 = 0x12;

/// The `(SLP_TYPa, SLP_TYPb)` values of `\_S5_` in the AML byte code `aml` (a DSDT's body).
pub fn s5_sleep_types(aml: &[u8]) -> Option<(u8, u8)> {
    let mut from = 0;
    while let Some(at) = find(&aml[from..], b"_S5_").map(|i| i + from) {
        from = at + 4;
        // NameOp, optionally the root prefix `\`, then the name.
        let named = match at {
            0 => false,
            1 => aml[0] == NAME_OP,
            _ => aml[at - 1] == NAME_OP || (aml[at - 1] == b'\\' && aml[at - 2] == NAME_OP),
        };
        if !named || aml.get(at + 4) != Some(&PACKAGE_OP) {
            continue;
        }
        let mut p = at + 5;
        // PkgLength: bits 7:6 of the lead byte count the bytes that follow.
        let lead = *aml.get(p)?;
        p += 1 + usize::from(lead >> 6);
        // NumElements.
        let count = *aml.get(p)?;
        p += 1;
        if count < 2 {
            continue;
        }
        let (a, next) = element(aml, p)?;
        let (b, _) = element(aml, next)?;
        return Some((a, b));
    }
    None
}

/// One integer package element: `ZeroOp`, `OneOp`, `BytePrefix b` or `WordPrefix w` (the low
/// byte; SLP_TYP is 3 bits). Returns the value and where the next element starts.
fn element(aml: &[u8], at: usize) -> Option<(u8, usize)> {
    match *aml.get(at)? {
        0x00 => Some((0, at + 1)),
        0x01 => Some((1, at + 1)),
        0x0a => Some((*aml.get(at + 1)?, at + 2)),
        0x0b => Some((*aml.get(at + 1)?, at + 3)),
        _ => None,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How this machine is powered off and reset, from the FADT and the DSDT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerInfo {
    /// PM1a_CNT I/O port.
    pub pm1a_cnt: Option<u16>,
    /// PM1b_CNT I/O port (rare).
    pub pm1b_cnt: Option<u16>,
    /// `SLP_TYP` values for S5 (PM1a, PM1b).
    pub s5: Option<(u8, u8)>,
    /// The FADT reset register (an I/O port) and value.
    pub reset: Option<(u16, u8)>,
    /// The ACPI PM timer's I/O port.
    pub pm_tmr: Option<u16>,
}

/// PM1 control's sleep-enable bit (ACPI 6.5 §4.8.3.2.1).
pub const SLP_EN: u16 = 1 << 13;

/// What an OUT by the control domain to host ports does, where Basalt keeps
/// some (docs/control-domain.md, "Ports").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dom0Out {
    /// It goes to the host's ports.
    Forward,
    /// Dropped: the PM timer, Basalt's UARTs, or a kept register reached at
    /// a width or offset it does not take (a word over port 0x64, a dword
    /// across PCI configuration), which would bypass Basalt's checks.
    Drop,
    /// A reset request: the control domain reboots, and the host with it.
    Reset,
    /// S5: the control domain powers off, and the host with it.
    PowerOff,
    /// Another sleep state (its `SLP_TYP`), which Basalt does not enter.
    Sleep(u8),
}

/// Whether `p` is one of the `len` ports from `base`.
fn within(base: Option<u16>, p: u16, len: u16) -> bool {
    base.is_some_and(|b| p.wrapping_sub(b) < len)
}

impl PowerInfo {
    /// Whether `port` is one whose writes Basalt checks for the control
    /// domain (a reset or sleep request): PCI configuration 0xCF8-0xCFF,
    /// 0x64, 0x92, the FADT reset port, PM1a/PM1b_CNT.
    pub fn checked(&self, port: u16) -> bool {
        (0xcf8..=0xcff).contains(&port)
            || matches!(port, 0x64 | 0x92)
            || within(self.reset.map(|r| r.0), port, 1)
            || within(self.pm1a_cnt, port, 2)
            || within(self.pm1b_cnt, port, 2)
    }

    /// Whether `port` is one the control domain never writes: the PM timer
    /// (emulated) or one of the UARTs at `uarts` (Basalt's console).
    pub fn never_written(&self, uarts: &[Option<u16>], port: u16) -> bool {
        within(self.pm_tmr, port, 4) || uarts.iter().any(|&u| within(u, port, 8))
    }

    /// What the control domain's OUT of `size` (1, 2 or 4) bytes of `value`
    /// at `port` does (PCI configuration accesses that `pci_pass` takes
    /// are not asked here): every byte it covers counts. [`Self::checked`]
    /// ports are taken only at their width (byte registers; PM1x_CNT a word
    /// or either byte); [`Self::never_written`] ones are never written.
    pub fn dom0_out(&self, uarts: &[Option<u16>], port: u16, size: u8, value: u32) -> Dom0Out {
        let pm1 = [(self.pm1a_cnt, 0), (self.pm1b_cnt, 1)];
        let span = (0..u16::from(size)).map(|i| port.wrapping_add(i));
        if span.clone().any(|p| self.never_written(uarts, p)) {
            return Dom0Out::Drop;
        }
        let byte = value as u8;
        for (base, i) in pm1 {
            // SLP_TYP (bits 12:10) and SLP_EN (13) are in the high byte.
            let high = match (base.map(|b| port.wrapping_sub(b)), size) {
                (Some(0), 2) => (value >> 8) as u8,
                (Some(1), 1) => byte,
                (Some(0), 1) => return Dom0Out::Forward,
                _ => continue,
            };
            if u16::from(high) << 8 & SLP_EN == 0 {
                return Dom0Out::Forward;
            }
            let typ = (high >> 2) & 7;
            let s5 = self.s5.map(|(a, b)| (if i == 0 { a } else { b }) & 7);
            return if s5 == Some(typ) {
                Dom0Out::PowerOff
            } else {
                Dom0Out::Sleep(typ)
            };
        }
        if size == 1 && self.checked(port) {
            let reset = (port == 0xcf9 && byte & 4 != 0)
                || (port == 0x64 && byte == 0xfe)
                || (port == 0x92 && byte & 1 != 0)
                || self.reset == Some((port, byte));
            return if reset {
                Dom0Out::Reset
            } else {
                Dom0Out::Forward
            };
        }
        if span.clone().any(|p| self.checked(p)) {
            Dom0Out::Drop
        } else {
            Dom0Out::Forward
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU's PIIX4: PM1a_CNT at 0x604, PM timer 0x608, S5 type 0, reset
    /// register 0xCF9 ← 6; Basalt's UART at 0x3F8.
    const PIIX: PowerInfo = PowerInfo {
        pm1a_cnt: Some(0x604),
        pm1b_cnt: None,
        s5: Some((0, 0)),
        reset: Some((0xcf9, 6)),
        pm_tmr: Some(0x608),
    };
    const UARTS: [Option<u16>; 2] = [Some(0x3f8), None];

    fn out(port: u16, size: u8, value: u32) -> Dom0Out {
        PIIX.dom0_out(&UARTS, port, size, value)
    }

    #[test]
    fn dom0_resets_and_sleeps() {
        assert_eq!(out(0xcf9, 1, 6), Dom0Out::Reset);
        assert_eq!(
            out(0xcf9, 1, 2),
            Dom0Out::Forward,
            "SYS_RST without RST_CPU"
        );
        assert_eq!(out(0x64, 1, 0xfe), Dom0Out::Reset);
        assert_eq!(out(0x64, 1, 0xd1), Dom0Out::Forward);
        assert_eq!(out(0x92, 1, 1), Dom0Out::Reset);
        assert_eq!(out(0x92, 1, 2), Dom0Out::Forward, "fast A20 only");
        // S5 as a word and as the high byte; S3 refused; SCI_EN alone passes.
        assert_eq!(out(0x604, 2, 0x2000), Dom0Out::PowerOff);
        assert_eq!(out(0x605, 1, 0x20), Dom0Out::PowerOff);
        assert_eq!(out(0x604, 2, 0x2000 | 1 << 10), Dom0Out::Sleep(1));
        assert_eq!(out(0x604, 2, 1), Dom0Out::Forward);
        assert_eq!(
            out(0x604, 1, 0x20),
            Dom0Out::Forward,
            "the low byte has no SLP bits"
        );
        assert_eq!(out(0x605, 1, 0x00), Dom0Out::Forward);
    }

    #[test]
    fn dom0_straddles_are_dropped() {
        // A word or dword reaching a kept byte register from beside it.
        assert_eq!(out(0x62, 4, 0x00fe_0000), Dom0Out::Drop);
        assert_eq!(out(0x63, 2, 0xfe00), Dom0Out::Drop);
        assert_eq!(out(0x91, 2, 0x0100), Dom0Out::Drop);
        assert_eq!(
            out(0x64, 2, 0x00fe),
            Dom0Out::Drop,
            "0x64 is a byte register"
        );
        assert_eq!(
            out(0xcf6, 4, 0x0600_0000),
            Dom0Out::Drop,
            "across 0xCF8/0xCF9"
        );
        assert_eq!(
            out(0x603, 2, 0x2000),
            Dom0Out::Drop,
            "PM1a_CNT at an offset"
        );
        assert_eq!(out(0x604, 4, 0x2000), Dom0Out::Drop, "PM1a_CNT is a word");
        assert_eq!(out(0x605, 2, 0x20), Dom0Out::Drop);
        // The PM timer and Basalt's UART, at any width.
        assert_eq!(out(0x608, 4, 0), Dom0Out::Drop);
        assert_eq!(out(0x3f6, 4, 0x4100_0000), Dom0Out::Drop);
        assert_eq!(out(0x3ff, 1, 0), Dom0Out::Drop);
        // Beside them, untouched.
        assert_eq!(out(0x60, 1, 0xfe), Dom0Out::Forward);
        assert_eq!(out(0x3f4, 4, 0), Dom0Out::Forward);
        assert_eq!(out(0x600, 4, 0), Dom0Out::Forward);
        assert_eq!(out(0xffff, 4, 0), Dom0Out::Forward, "wraps to port 2");
        // Without ACPI only the fixed ports are kept.
        let none = PowerInfo::default();
        assert_eq!(none.dom0_out(&[], 0x604, 2, 0x2000), Dom0Out::Forward);
        assert_eq!(none.dom0_out(&[], 0xcf9, 1, 4), Dom0Out::Reset);
    }

    #[test]
    fn qemu_and_bochs_forms() {
        // QEMU's PIIX DSDT: Name (_S5, Package (0x04) { Zero, Zero, Zero, Zero }).
        let qemu = [
            0x10, 0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0,
        ];
        assert_eq!(s5_sleep_types(&qemu[1..]), Some((0, 0)));
        // BytePrefix values, root prefix, a decoy `_S5_` in a string before it.
        let aml = [
            0x0d, b'_', b'S', b'5', b'_', 0x00, 0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08,
            0x04, 0x0a, 0x05, 0x0a, 0x07, 0x00, 0x00,
        ];
        assert_eq!(s5_sleep_types(&aml), Some((5, 7)));
        // A two-byte PkgLength and One/Word elements.
        let long = [
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x40, 0x01, 0x02, 0x01, 0x0b, 0x03, 0x00,
        ];
        assert_eq!(s5_sleep_types(&long), Some((1, 3)));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(s5_sleep_types(b""), None);
        assert_eq!(s5_sleep_types(b"_S5_"), None);
        // A method (not a Name): not recognised.
        assert_eq!(
            s5_sleep_types(&[0x14, 0x09, b'_', b'S', b'5', b'_', 0x00]),
            None
        );
        // Truncated.
        assert_eq!(
            s5_sleep_types(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0x0a]),
            None
        );
        assert_eq!(
            s5_sleep_types(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x01, 0x00]),
            None
        );
    }
}
