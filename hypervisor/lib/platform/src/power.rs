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

#[cfg(test)]
mod tests {
    use super::*;

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
