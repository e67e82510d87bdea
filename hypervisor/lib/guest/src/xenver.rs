//! The build-description strings of `xen_version` (Xen's `public/version.h`):
//! `XENVER_compile_info` and `XENVER_changeset`. Xen's Test Framework reads
//! them (its test `xsa-122`) and checks that every byte after the string's
//! terminating NUL is zero: a hypervisor that copies a string into an
//! uninitialised buffer leaks its stack there (XSA-122). Each field is built
//! here whole, zero-filled, and copied to the guest in one write.

/// `sizeof(xen_compile_info_t)`: `compiler[64]`, `compile_by[16]`,
/// `compile_domain[32]`, `compile_date[32]`.
pub const COMPILE_INFO_SIZE: usize = 64 + 16 + 32 + 32;
/// `sizeof(xen_changeset_info_t)`: `char[64]`.
pub const CHANGESET_SIZE: usize = 64;

/// Copies `text` into `field` as a C string: at most `field.len() - 1`
/// bytes (cut at a character boundary is not needed: the guest reads
/// bytes), a NUL, zeros after it. A NUL inside `text` ends it there.
fn put_c_string(field: &mut [u8], text: &str) {
    field.fill(0);
    let text = text.as_bytes();
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
    let n = text.len().min(field.len().saturating_sub(1));
    field[..n].copy_from_slice(&text[..n]);
}

/// What describes a build of Basalt, as `xen_compile_info_t` holds it.
#[derive(Debug, Clone, Copy)]
pub struct CompileInfo<'a> {
    /// The compiler, e.g. `rustc 1.96.0`.
    pub compiler: &'a str,
    /// Who built it (the build's user name).
    pub compile_by: &'a str,
    /// Where (the build machine's host name).
    pub compile_domain: &'a str,
    /// When (UTC).
    pub compile_date: &'a str,
}

impl CompileInfo<'_> {
    /// The structure's bytes: four NUL-terminated, zero-padded strings.
    pub fn to_bytes(&self) -> [u8; COMPILE_INFO_SIZE] {
        let mut out = [0u8; COMPILE_INFO_SIZE];
        let (compiler, rest) = out.split_at_mut(64);
        let (by, rest) = rest.split_at_mut(16);
        let (domain, date) = rest.split_at_mut(32);
        put_c_string(compiler, self.compiler);
        put_c_string(by, self.compile_by);
        put_c_string(domain, self.compile_domain);
        put_c_string(date, self.compile_date);
        out
    }
}

/// `xen_changeset_info_t`: the source revision, NUL-terminated and
/// zero-padded.
pub fn changeset(revision: &str) -> [u8; CHANGESET_SIZE] {
    let mut out = [0u8; CHANGESET_SIZE];
    put_c_string(&mut out, revision);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What XTF's xsa-122 checks: a NUL within the field, zeros after it.
    fn clean(field: &[u8]) -> bool {
        match field.iter().position(|&b| b == 0) {
            Some(end) => field[end..].iter().all(|&b| b == 0),
            None => false,
        }
    }

    #[test]
    fn compile_info_fields() {
        let info = CompileInfo {
            compiler: "rustc 1.96.0",
            compile_by: "a-very-long-user-name-indeed",
            compile_domain: "builder",
            compile_date: "2026-12-07 11:00:00 UTC",
        }
        .to_bytes();
        assert_eq!(&info[..13], b"rustc 1.96.0\0");
        // Cut to 15 bytes and terminated.
        assert_eq!(&info[64..80], b"a-very-long-use\0");
        assert_eq!(&info[80..88], b"builder\0");
        assert_eq!(&info[112..136], b"2026-12-07 11:00:00 UTC\0");
        for field in [&info[..64], &info[64..80], &info[80..112], &info[112..]] {
            assert!(clean(field));
        }
    }

    #[test]
    fn changeset_is_terminated_and_padded() {
        let c = changeset("v0.1-42-gabcdef0-dirty");
        assert!(c.starts_with(b"v0.1-42-gabcdef0-dirty\0"));
        assert!(clean(&c));
        let long = "x".repeat(100);
        let c = changeset(&long);
        assert_eq!(c[63], 0);
        assert!(clean(&c));
        // An embedded NUL ends the string; nothing after it leaks.
        let c = changeset("ab\0cd");
        assert_eq!(&c[..3], b"ab\0");
        assert!(clean(&c));
        assert!(clean(&changeset("")));
    }
}
