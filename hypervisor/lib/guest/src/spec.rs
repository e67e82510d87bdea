//! The command line of a boot module: which domain it describes.
//!
//! Every Multiboot2 boot module is either a guest kernel (one domain each) or the initrd of a
//! guest kernel. Its command line (what follows the path on GRUB 2's `module2` line) says which,
//! and for a kernel, how to build the domain.
//!
//! # Syntax
//!
//! Words are separated by white space. Each word before a lone `--` is `key=value`; everything
//! after the `--` is passed on untouched (leading and trailing white space removed) as the
//! command line of the guest kernel, or of the initrd. A first word that starts with `/` (the
//! image path some loaders pass) is skipped. In keys, `-` and `_` are the same; keys are
//! lowercase, and each may be given once.
//!
//! A guest kernel module:
//!
//! | key | value | default | meaning |
//! |---|---|---|---|
//! | `name=` | 1 to 32 of `A`–`Z`, `a`–`z`, `0`–`9`, `_`, `.`, `-` | required | the domain's name |
//! | `memory=` | a size: a decimal number of bytes, or followed by `K`, `M`, `G` or `T` (binary units, either case); from 1M to 1T | `64M` | the domain's RAM (guest-physical `[0, memory)`) |
//! | `vcpus=` | a decimal number from 1 to 64 | `1` | virtual CPUs |
//! | `cpus=` | a comma-separated list of physical CPU numbers and ranges below 64, e.g. `0-3,6` | any CPU | physical CPUs the domain's vCPUs may run on |
//! | `weight=` | a decimal number from 1 to 65535 | `256` | the domain's share of CPU time, relative to other domains' weights |
//! | `cap=` | a decimal number from 0 to 6400 | `0` (none) | the most CPU time the domain may use, in percent of one CPU (150 = one and a half CPUs) |
//! | `boot=` | `pvh`, `linux` or `real` | detected | how the kernel is started ([`BootProtocol`]): without it, a bzImage boots as `linux`, anything else as `pvh` |
//! | `role=` | `control` or `guest` | `guest` | `control`: the control domain (domain 0, named `Domain-0`, Xen's interface with `SIF_INITDOMAIN`; docs/control-domain.md); at most one module may say so |
//! | `xen=` | `0` or `1` | `0` (`1` for the control domain) | `1`: the domain sees Xen's CPUID leaves and hypercalls (docs/control-domain.md) |
//!
//! The control domain's `name=` may be left out; if given it must be `Domain-0` (Xen's name,
//! which tools look for). `xen=0` is refused with `role=control`: dom0 is a Xen-interface domain.
//!
//! An initrd module takes `initrd-for=NAME` (the `name=` of its kernel's module) and no other
//! key; its own command line, if any, follows `--` (a PVH guest sees it as the module's
//! `cmdline_paddr`).
//!
//! Examples:
//!
//! ```text
//! module2 /boot/vmlinuz   name=web memory=512M vcpus=2 cpus=2-3 -- console=hvc0 root=/dev/ram0
//! module2 /boot/initrd.gz initrd-for=web
//! module2 /boot/test.elf  name=t1
//! ```
//!
//! The memory size is reported exactly as given: rounding it to the hypervisor's page size is
//! the hypervisor's business.

use core::fmt;

/// Memory a domain gets without `memory=`: 64 MiB.
pub const DEFAULT_MEMORY: u64 = 64 << 20;
/// The smallest `memory=`: 1 MiB.
pub const MIN_MEMORY: u64 = 1 << 20;
/// The largest `memory=`: 1 TiB.
pub const MAX_MEMORY: u64 = 1 << 40;
/// The largest `vcpus=`.
pub const MAX_VCPUS: u32 = 64;
/// The default `weight=` (Xen's).
pub const DEFAULT_WEIGHT: u16 = 256;
/// The largest `cap=`: 64 whole CPUs.
pub const MAX_CAP: u16 = 6400;
/// The longest `name=`, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// What a boot module is, from its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleRole<'a> {
    /// A guest kernel: one domain.
    Kernel(DomainSpec<'a>),
    /// The initrd (a PVH "module") of the domain named `domain`.
    Initrd {
        /// The `name=` of the domain this initrd belongs to.
        domain: &'a str,
        /// The initrd's own command line (after `--`; empty without one).
        cmdline: &'a str,
    },
}

/// How to build one domain, from its kernel module's command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainSpec<'a> {
    /// The domain's name (`name=`).
    pub name: &'a str,
    /// RAM in bytes (`memory=`), exactly as given; from [`MIN_MEMORY`] to [`MAX_MEMORY`].
    pub memory: u64,
    /// Whether `memory=` was given (the control domain's default is the hypervisor's).
    pub memory_given: bool,
    /// Number of virtual CPUs (`vcpus=`), from 1 to [`MAX_VCPUS`].
    pub vcpus: u32,
    /// Physical CPUs the vCPUs may run on (`cpus=`): bit `n` set for CPU `n`; `None`: any.
    /// Never `Some(0)`.
    pub cpus: Option<u64>,
    /// The guest kernel's own command line (after `--`; empty without one).
    pub cmdline: &'a str,
    /// How the kernel is started (`boot=`).
    pub boot: BootProtocol,
    /// Scheduling weight (`weight=`), 1 to 65535.
    pub weight: u16,
    /// CPU cap in percent of one CPU (`cap=`), 0 (none) to [`MAX_CAP`].
    pub cap: u16,
    /// `role=control`: the control domain.
    pub control: bool,
    /// Xen's interface (`xen=1`, implied by `role=control`).
    pub xen: bool,
}

/// The name of the control domain, as on Xen.
pub const CONTROL_NAME: &str = "Domain-0";

/// How a guest kernel module is started (`boot=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BootProtocol {
    /// No `boot=`: a Linux bzImage (boot flag 0xAA55 at 0x1fe and `"HdrS"` at 0x202) boots as
    /// [`Self::Linux`], anything else as [`Self::Pvh`].
    #[default]
    Auto,
    /// `boot=pvh`: an ELF entered through `XEN_ELFNOTE_PHYS32_ENTRY`.
    Pvh,
    /// `boot=linux`: a Linux bzImage entered at its 64-bit entry through the Linux x86 boot
    /// protocol (`boot_params`).
    Linux,
    /// `boot=real`: a flat binary loaded at guest-physical 0x7C00 and started
    /// in real mode at 0000:7C00 (like a boot sector, without a BIOS).
    Real,
}

/// A key of a module command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// `name=`
    Name,
    /// `memory=`
    Memory,
    /// `vcpus=`
    Vcpus,
    /// `cpus=`
    Cpus,
    /// `initrd-for=`
    InitrdFor,
    /// `boot=`
    Boot,
    /// `weight=`
    Weight,
    /// `cap=`
    Cap,
    /// `role=`
    Role,
    /// `xen=`
    Xen,
}

impl Key {
    const ALL: [Key; 10] = [
        Key::Name,
        Key::Memory,
        Key::Vcpus,
        Key::Cpus,
        Key::InitrdFor,
        Key::Boot,
        Key::Weight,
        Key::Cap,
        Key::Role,
        Key::Xen,
    ];

    /// The key as written on the command line (with `-`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Memory => "memory",
            Self::Vcpus => "vcpus",
            Self::Cpus => "cpus",
            Self::InitrdFor => "initrd-for",
            Self::Boot => "boot",
            Self::Weight => "weight",
            Self::Cap => "cap",
            Self::Role => "role",
            Self::Xen => "xen",
        }
    }

    /// What a value of this key must look like.
    pub fn expected(self) -> &'static str {
        match self {
            Self::Name => "expected a domain name of 1 to 32 letters, digits, `_`, `.` or `-`",
            Self::Memory => "expected a size such as 16M or 1G, from 1M to 1T",
            Self::Vcpus => "expected a number of virtual CPUs from 1 to 64",
            Self::Cpus => "expected a list of physical CPUs below 64 such as 0-3,6",
            Self::InitrdFor => {
                "expected the name= of a guest kernel module: 1 to 32 letters, digits, `_`, `.` \
                 or `-`"
            }
            Self::Boot => {
                "expected pvh (an ELF with a PVH entry note), linux (a bzImage) or real (a flat \
                 binary started in real mode)"
            }
            Self::Weight => "expected a scheduling weight from 1 to 65535 (default 256)",
            Self::Cap => {
                "expected a cap in percent of one CPU from 0 (none) to 6400, e.g. 50 for half a CPU"
            }
            Self::Role => {
                "expected control (the control domain, at most one) or guest (the default)"
            }
            Self::Xen => "expected 1 (Xen's interface) or 0 (Basalt's)",
        }
    }

    /// The key written `text` (`-` and `_` alike), if any.
    fn lookup(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|key| {
            let wanted = key.as_str();
            wanted.len() == text.len()
                && text
                    .bytes()
                    .zip(wanted.bytes())
                    .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a module command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError<'a> {
    /// A word before `--` without `=` (or with nothing before it).
    NotKeyValue {
        /// The word.
        token: &'a str,
    },
    /// A `key=value` word whose key is not one of [`Key`].
    UnknownKey {
        /// The whole word.
        token: &'a str,
    },
    /// A key given twice.
    DuplicateKey {
        /// The key.
        key: Key,
    },
    /// A value that does not fit its key ([`Key::expected`] says what does).
    BadValue {
        /// The key.
        key: Key,
        /// The value as written.
        value: &'a str,
    },
    /// A guest kernel module without `name=` (and not an initrd either).
    MissingName,
    /// An `initrd-for=` module with another key.
    InitrdWithKey {
        /// The first other key found.
        key: Key,
    },
    /// `role=control` with a `name=` other than [`CONTROL_NAME`].
    ControlName {
        /// The name given.
        name: &'a str,
    },
    /// `role=control` with `xen=0`.
    ControlWithoutXen,
}

impl fmt::Display for SpecError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotKeyValue { token } => write!(
                f,
                "`{token}`: expected key=value (or `--` before the guest's own command line)"
            ),
            Self::UnknownKey { token } => write!(
                f,
                "unknown key `{token}`; a module takes name=, memory=, vcpus=, cpus=, \
                 weight=, cap=, boot=, role=, xen= or initrd-for="
            ),
            Self::DuplicateKey { key } => {
                write!(f, "duplicate key `{key}`; give each key once")
            }
            Self::BadValue { key, value } => write!(f, "`{key}={value}`: {}", key.expected()),
            Self::MissingName => f.write_str(
                "no `name=`: a guest kernel module needs name=NAME (an initrd needs \
                 initrd-for=NAME)",
            ),
            Self::InitrdWithKey { key } => write!(
                f,
                "`{key}=` on an initrd-for= module: an initrd takes no other keys (give them to \
                 its kernel's module)"
            ),
            Self::ControlName { name } => write!(
                f,
                "`name={name}` with role=control: the control domain is always named \
                 {CONTROL_NAME}; drop name= (its initrd says initrd-for={CONTROL_NAME})"
            ),
            Self::ControlWithoutXen => f.write_str(
                "xen=0 with role=control: the control domain always has Xen's interface; \
                 drop xen=0",
            ),
        }
    }
}

/// Parses a boot module's command line (see the module documentation for the syntax).
pub fn parse_module(cmdline: &str) -> Result<ModuleRole<'_>, SpecError<'_>> {
    let mut values: [Option<&str>; Key::ALL.len()] = [None; Key::ALL.len()];
    let mut tail = "";
    let mut rest = cmdline;
    let mut first = true;
    loop {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let Some((token, after)) = rest.split_at_checked(end) else {
            break;
        };
        if token.is_empty() {
            break;
        }
        rest = after;
        if token == "--" {
            tail = rest.trim();
            break;
        }
        // Some loaders pass the image path as the first word.
        if first && token.starts_with('/') {
            first = false;
            continue;
        }
        first = false;
        let (key, value) = match token.split_once('=') {
            Some((key, value)) if !key.is_empty() => (key, value),
            _ => return Err(SpecError::NotKeyValue { token }),
        };
        let key = Key::lookup(key).ok_or(SpecError::UnknownKey { token })?;
        let slot = values
            .get_mut(key.index())
            .ok_or(SpecError::UnknownKey { token })?;
        if slot.is_some() {
            return Err(SpecError::DuplicateKey { key });
        }
        *slot = Some(value);
    }

    let value = |key: Key| values.get(key.index()).copied().flatten();
    if let Some(domain) = value(Key::InitrdFor) {
        if let Some(other) = Key::ALL
            .into_iter()
            .find(|&key| key != Key::InitrdFor && value(key).is_some())
        {
            return Err(SpecError::InitrdWithKey { key: other });
        }
        if !valid_name(domain) {
            return Err(SpecError::BadValue {
                key: Key::InitrdFor,
                value: domain,
            });
        }
        return Ok(ModuleRole::Initrd {
            domain,
            cmdline: tail,
        });
    }

    let control = match value(Key::Role) {
        None | Some("guest") => false,
        Some("control") => true,
        Some(text) => {
            return Err(SpecError::BadValue {
                key: Key::Role,
                value: text,
            });
        }
    };
    let xen = match value(Key::Xen) {
        None => control,
        Some("1") => true,
        Some("0") if control => return Err(SpecError::ControlWithoutXen),
        Some("0") => false,
        Some(text) => {
            return Err(SpecError::BadValue {
                key: Key::Xen,
                value: text,
            });
        }
    };
    let name = match value(Key::Name) {
        None if control => CONTROL_NAME,
        Some(name) if control && name != CONTROL_NAME => {
            return Err(SpecError::ControlName { name });
        }
        other => other.ok_or(SpecError::MissingName)?,
    };
    if !valid_name(name) {
        return Err(SpecError::BadValue {
            key: Key::Name,
            value: name,
        });
    }
    let memory = match value(Key::Memory) {
        None => DEFAULT_MEMORY,
        Some(text) => parse_size(text)
            .filter(|size| (MIN_MEMORY..=MAX_MEMORY).contains(size))
            .ok_or(SpecError::BadValue {
                key: Key::Memory,
                value: text,
            })?,
    };
    let vcpus = match value(Key::Vcpus) {
        None => 1,
        Some(text) => parse_decimal(text)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_VCPUS).contains(n))
            .ok_or(SpecError::BadValue {
                key: Key::Vcpus,
                value: text,
            })?,
    };
    let cpus = match value(Key::Cpus) {
        None => None,
        Some(text) => Some(parse_cpu_list(text).ok_or(SpecError::BadValue {
            key: Key::Cpus,
            value: text,
        })?),
    };
    let boot = match value(Key::Boot) {
        None => BootProtocol::Auto,
        Some("pvh") => BootProtocol::Pvh,
        Some("linux") => BootProtocol::Linux,
        Some("real") => BootProtocol::Real,
        Some(text) => {
            return Err(SpecError::BadValue {
                key: Key::Boot,
                value: text,
            });
        }
    };
    let number = |key: Key, range: core::ops::RangeInclusive<u16>, default: u16| match value(key) {
        None => Ok(default),
        Some(text) => parse_decimal(text)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| range.contains(n))
            .ok_or(SpecError::BadValue { key, value: text }),
    };
    let weight = number(Key::Weight, 1..=u16::MAX, DEFAULT_WEIGHT)?;
    let cap = number(Key::Cap, 0..=MAX_CAP, 0)?;
    Ok(ModuleRole::Kernel(DomainSpec {
        name,
        memory,
        memory_given: value(Key::Memory).is_some(),
        vcpus,
        cpus,
        cmdline: tail,
        boot,
        weight,
        cap,
        control,
        xen,
    }))
}

/// Whether `name` is 1 to [`MAX_NAME_LEN`] of `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A non-empty string of ASCII decimal digits, without overflow.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.bytes().try_fold(0u64, |acc, b| {
        let digit = u64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// A size: decimal bytes, optionally followed by `K`, `M`, `G` or `T` (binary units, either
/// case). `None` when malformed or above `u64::MAX`; range checks are the caller's.
pub fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at_checked(digits_end)?;
    let shift = match suffix {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return None,
    };
    let number = parse_decimal(number)?;
    let size = number.checked_shl(shift)?;
    // `checked_shl` only checks the shift amount, not lost bits.
    (size >> shift == number).then_some(size)
}

/// A physical CPU list such as `0-3,6`: bit `n` set for CPU `n`. `None` when malformed, empty,
/// a range is reversed, or a CPU is 64 or above.
pub fn parse_cpu_list(text: &str) -> Option<u64> {
    let cpu = |t: &str| parse_decimal(t).filter(|n| *n < 64);
    let mut mask = 0u64;
    for item in text.split(',') {
        let (low, high) = match item.split_once('-') {
            Some((low, high)) => (cpu(low)?, cpu(high)?),
            None => {
                let n = cpu(item)?;
                (n, n)
            }
        };
        if low > high {
            return None;
        }
        for n in low..=high {
            mask |= 1u64.checked_shl(n as u32)?;
        }
    }
    (mask != 0).then_some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(cmdline: &str) -> DomainSpec<'_> {
        match parse_module(cmdline) {
            Ok(ModuleRole::Kernel(spec)) => spec,
            other => panic!("{cmdline:?}: expected a kernel, got {other:?}"),
        }
    }

    fn error(cmdline: &str) -> SpecError<'_> {
        match parse_module(cmdline) {
            Err(e) => e,
            Ok(role) => panic!("{cmdline:?}: expected an error, got {role:?}"),
        }
    }

    #[test]
    fn boot_protocols() {
        let real = parse_module("name=r boot=real").unwrap();
        assert!(matches!(
            real,
            ModuleRole::Kernel(DomainSpec {
                boot: BootProtocol::Real,
                ..
            })
        ));
        assert_eq!(kernel("name=r").boot, BootProtocol::Auto);
        assert_eq!(kernel("name=r boot=pvh").boot, BootProtocol::Pvh);
        assert_eq!(kernel("name=r boot=linux").boot, BootProtocol::Linux);
        assert!(parse_module("name=r boot=bios").is_err());
        assert!(parse_module("name=r boot=bzimage").is_err());
        assert!(parse_module("name=r boot=Linux").is_err());
        assert!(parse_module("initrd-for=r boot=real").is_err());
        assert!(parse_module("initrd-for=r boot=linux").is_err());
        let message = error("name=r boot=bios").to_string();
        assert!(message.contains("linux (a bzImage)"), "{message}");
    }

    #[test]
    fn defaults() {
        assert_eq!(
            kernel("name=t1"),
            DomainSpec {
                name: "t1",
                memory: 64 << 20,
                memory_given: false,
                vcpus: 1,
                cpus: None,
                cmdline: "",
                boot: BootProtocol::Auto,
                weight: 256,
                cap: 0,
                control: false,
                xen: false,
            }
        );
    }

    #[test]
    fn control_role_and_xen() {
        let dom0 = kernel("role=control memory=256M -- console=hvc0");
        assert_eq!(
            (dom0.name, dom0.control, dom0.xen),
            ("Domain-0", true, true)
        );
        assert_eq!(dom0.cmdline, "console=hvc0");
        assert_eq!(kernel("role=control name=Domain-0").name, "Domain-0");
        assert!(kernel("role=control xen=1").xen);
        let guest = kernel("name=g role=guest xen=1");
        assert_eq!((guest.control, guest.xen), (false, true));
        assert!(!kernel("name=g xen=0").xen);
        assert!(matches!(
            error("role=control name=dom0"),
            SpecError::ControlName { name: "dom0" }
        ));
        assert!(
            error("role=control name=d")
                .to_string()
                .contains("Domain-0")
        );
        assert_eq!(error("role=control xen=0"), SpecError::ControlWithoutXen);
        for bad in [
            "name=g role=admin",
            "name=g xen=2",
            "name=g xen=yes",
            "name=g role=",
        ] {
            assert!(matches!(error(bad), SpecError::BadValue { .. }), "{bad}");
        }
        assert_eq!(error("role=guest"), SpecError::MissingName);
        assert!(matches!(
            error("initrd-for=Domain-0 role=control"),
            SpecError::InitrdWithKey { key: Key::Role }
        ));
    }

    #[test]
    fn weight_and_cap() {
        let spec = kernel("name=a weight=512 cap=20");
        assert_eq!((spec.weight, spec.cap), (512, 20));
        assert_eq!(kernel("name=a weight=1 cap=6400").weight, 1);
        assert_eq!(kernel("name=a weight=65535").weight, 65535);
        for bad in [
            "name=a weight=0",
            "name=a weight=65536",
            "name=a weight=x",
            "name=a cap=6401",
            "name=a cap=-1",
        ] {
            assert!(matches!(error(bad), SpecError::BadValue { .. }), "{bad}");
        }
        let message = error("name=a cap=7000").to_string();
        assert!(
            message.contains("cap=7000") && message.contains("percent"),
            "{message}"
        );
    }

    #[test]
    fn all_keys() {
        let spec = kernel(
            "  name=web.1_a-b\tmemory=512M vcpus=4 cpus=0-3,6 --  console=hvc0  root=/dev/ram0 ",
        );
        assert_eq!(spec.name, "web.1_a-b");
        assert_eq!(spec.memory, 512 << 20);
        assert_eq!(spec.vcpus, 4);
        assert_eq!(spec.cpus, Some(0b100_1111));
        assert_eq!(spec.cmdline, "console=hvc0  root=/dev/ram0");
    }

    #[test]
    fn underscore_in_keys_and_path_skipped() {
        assert_eq!(
            parse_module("/boot/initrd.gz initrd_for=web"),
            Ok(ModuleRole::Initrd {
                domain: "web",
                cmdline: ""
            })
        );
        assert_eq!(kernel("/boot/x.elf name=a").name, "a");
        // Only the first word may be a path.
        assert_eq!(
            error("name=a /boot/x"),
            SpecError::NotKeyValue { token: "/boot/x" }
        );
    }

    #[test]
    fn memory_sizes() {
        let memory = |m: &str| kernel(&format!("name=a memory={m}")).memory;
        assert_eq!(memory("1M"), 1 << 20);
        assert_eq!(memory("1m"), 1 << 20);
        assert_eq!(memory("1024K"), 1 << 20);
        assert_eq!(memory("1048576"), 1 << 20);
        assert_eq!(memory("3G"), 3 << 30);
        assert_eq!(memory("1T"), 1 << 40);
        assert_eq!(memory("1024G"), 1 << 40);
        assert_eq!(memory("1048577"), (1 << 20) + 1); // exact, not rounded
        assert_eq!(memory("100m"), 100 << 20);
        for bad in [
            "",
            "12Q",
            "M",
            "1MB",
            "0",
            "1023K",
            "1048575",
            "1025G",
            "2T",
            "-1M",
            "+1M",
            "1.5G",
            "0x100000",
            "99999999999999999999",
            "17179869184T",
            "1 M",
        ] {
            let cmdline = format!("name=a memory={bad}");
            let e = parse_module(&cmdline);
            let value = bad.split_whitespace().next().unwrap_or("");
            if bad == "1 M" {
                assert_eq!(e, Err(SpecError::NotKeyValue { token: "M" }));
                continue;
            }
            assert_eq!(
                e,
                Err(SpecError::BadValue {
                    key: Key::Memory,
                    value
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn vcpus() {
        assert_eq!(kernel("name=a vcpus=1").vcpus, 1);
        assert_eq!(kernel("name=a vcpus=64").vcpus, 64);
        for bad in ["0", "65", "", "x", "+2", "-1", "4294967297", "2x"] {
            let cmdline = format!("name=a vcpus={bad}");
            assert_eq!(
                parse_module(&cmdline),
                Err(SpecError::BadValue {
                    key: Key::Vcpus,
                    value: bad
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn cpu_lists() {
        let cpus = |c: &str| kernel(&format!("name=a cpus={c}")).cpus;
        assert_eq!(cpus("0"), Some(1));
        assert_eq!(cpus("63"), Some(1 << 63));
        assert_eq!(cpus("0-63"), Some(u64::MAX));
        assert_eq!(cpus("1,1,1-2"), Some(0b110));
        assert_eq!(cpus("5-5"), Some(1 << 5));
        for bad in [
            "", "64", "0-64", "3-1", ",", "1,", ",1", "a", "1-", "-1", "1--2", "0x1",
        ] {
            let cmdline = format!("name=a cpus={bad}");
            assert_eq!(
                parse_module(&cmdline),
                Err(SpecError::BadValue {
                    key: Key::Cpus,
                    value: bad
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("a"));
        assert!(valid_name(&"x".repeat(32)));
        assert!(!valid_name(&"x".repeat(33)));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("é"));
        for bad in ["", "a/b", "a,b", "ü", "a=b"] {
            let cmdline = format!("name={bad}");
            assert_eq!(
                parse_module(&cmdline),
                Err(SpecError::BadValue {
                    key: Key::Name,
                    value: bad
                }),
                "{bad}"
            );
        }
        let long = format!("name={}", "n".repeat(33));
        assert!(matches!(
            error(&long),
            SpecError::BadValue { key: Key::Name, .. }
        ));
    }

    #[test]
    fn initrd_modules() {
        assert_eq!(
            parse_module("initrd-for=web"),
            Ok(ModuleRole::Initrd {
                domain: "web",
                cmdline: ""
            })
        );
        assert_eq!(
            parse_module("initrd-for=web -- rootfstype=ramfs x"),
            Ok(ModuleRole::Initrd {
                domain: "web",
                cmdline: "rootfstype=ramfs x"
            })
        );
        assert_eq!(
            error("memory=1G initrd-for=web"),
            SpecError::InitrdWithKey { key: Key::Memory }
        );
        assert_eq!(
            error("initrd-for=web name=web"),
            SpecError::InitrdWithKey { key: Key::Name }
        );
        assert_eq!(
            error("initrd-for=a/b"),
            SpecError::BadValue {
                key: Key::InitrdFor,
                value: "a/b"
            }
        );
        assert_eq!(
            error("initrd-for="),
            SpecError::BadValue {
                key: Key::InitrdFor,
                value: ""
            }
        );
    }

    #[test]
    fn command_lines() {
        assert_eq!(kernel("name=a --").cmdline, "");
        assert_eq!(kernel("name=a -- -- x=1 name=b").cmdline, "-- x=1 name=b");
        assert_eq!(kernel("name=a --\n  a\tb \n").cmdline, "a\tb");
        // `--x` is not a lone `--`.
        assert_eq!(error("name=a --x"), SpecError::NotKeyValue { token: "--x" });
        // Keys after `--` belong to the guest.
        assert_eq!(error("-- name=a"), SpecError::MissingName);
    }

    #[test]
    fn errors() {
        assert_eq!(error(""), SpecError::MissingName);
        assert_eq!(error("   "), SpecError::MissingName);
        assert_eq!(error("memory=1G"), SpecError::MissingName);
        assert_eq!(error("/boot/vmlinuz"), SpecError::MissingName);
        assert_eq!(
            error("name=a colour=red"),
            SpecError::UnknownKey {
                token: "colour=red"
            }
        );
        assert_eq!(error("Name=a"), SpecError::UnknownKey { token: "Name=a" });
        assert_eq!(
            error("name=a name=b"),
            SpecError::DuplicateKey { key: Key::Name }
        );
        assert_eq!(
            error("name=a vcpus=1 vcpus=1"),
            SpecError::DuplicateKey { key: Key::Vcpus }
        );
        assert_eq!(
            error("initrd-for=a initrd_for=a"),
            SpecError::DuplicateKey {
                key: Key::InitrdFor
            }
        );
        assert_eq!(
            error("name=a verbose"),
            SpecError::NotKeyValue { token: "verbose" }
        );
        assert_eq!(error("=x"), SpecError::NotKeyValue { token: "=x" });
        // The first problem from the left is reported.
        assert_eq!(
            error("memory=2T colour=red"),
            SpecError::UnknownKey {
                token: "colour=red"
            }
        );
        assert_eq!(
            error("memory=2T name=a"),
            SpecError::BadValue {
                key: Key::Memory,
                value: "2T"
            }
        );
    }

    #[test]
    fn messages() {
        let msg = |cmdline: &str| error(cmdline).to_string();
        assert_eq!(
            msg("name=a memory=12Q"),
            "`memory=12Q`: expected a size such as 16M or 1G, from 1M to 1T"
        );
        assert_eq!(
            msg("memory=1G"),
            "no `name=`: a guest kernel module needs name=NAME (an initrd needs initrd-for=NAME)"
        );
        assert!(msg("name=a colour=red").starts_with("unknown key `colour=red`"));
        assert!(msg("name=a name=a").starts_with("duplicate key `name`"));
        assert!(msg("name=a vcpus=0").contains("from 1 to 64"));
        assert!(msg("name=a cpus=64").contains("below 64"));
        assert!(msg("name=a x").starts_with("`x`: expected key=value"));
        assert!(msg("initrd-for=a vcpus=2").starts_with("`vcpus=` on an initrd-for= module"));
        assert!(msg("name=").starts_with("`name=`: expected a domain name"));
    }

    #[test]
    fn sizes_directly() {
        assert_eq!(parse_size("16M"), Some(16 << 20));
        assert_eq!(parse_size("16777216T"), None); // 2^64
        assert_eq!(parse_size("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_size("18446744073709551616"), None);
        assert_eq!(parse_size("16777215T"), Some(16_777_215 << 40));
    }

    /// xorshift64*: a seeded PRNG without crates.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn random_strings_never_panic() {
        const ALPHABET: &[&str] = &[
            "name",
            "memory",
            "vcpus",
            "cpus",
            "initrd-for",
            "initrd_for",
            "=",
            "-",
            "--",
            " ",
            "\t",
            ",",
            "0",
            "1",
            "9",
            "64",
            "M",
            "G",
            "K",
            "T",
            "x",
            "/",
            "é",
            "\u{3000}",
            "",
            "-- ",
            "99999999999999999999",
        ];
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut text = String::new();
        for _ in 0..20_000 {
            text.clear();
            let words = next(&mut state) % 12;
            for _ in 0..words {
                let pick = (next(&mut state) % ALPHABET.len() as u64) as usize;
                text.push_str(ALPHABET[pick]);
            }
            if let Ok(ModuleRole::Kernel(spec)) = parse_module(&text) {
                assert!(valid_name(spec.name));
                assert!((MIN_MEMORY..=MAX_MEMORY).contains(&spec.memory));
                assert!((1..=MAX_VCPUS).contains(&spec.vcpus));
                assert_ne!(spec.cpus, Some(0));
            }
            // Errors render without panicking too.
            if let Err(e) = parse_module(&text) {
                assert!(!e.to_string().is_empty());
            }
        }
        // Arbitrary bytes (as UTF-8, lossily).
        for _ in 0..5_000 {
            let len = (next(&mut state) % 48) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_module(&text);
        }
    }
}
