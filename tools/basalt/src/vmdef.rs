//! VM definitions (docs/toolstack.md, "State"): the TOML file `basalt
//! create FILE` takes. Parsed and checked whole before anything is created;
//! every error names the file's line and the key, and what is allowed.
//!
//! ```toml
//! name = "web1"            # 1 to 31 of A-Z a-z 0-9 - _ .
//! memory = 64              # MiB, even, 2 to 3072
//! vcpus = 1                # 1 to 64
//! weight = 256             # scheduling weight, 1 to 65535
//! cap = 0                  # percent of one CPU, 0 = none
//! cpus = [0, 1]            # the host CPUs it may run on (all when left out)
//! kernel = "/usr/lib/basalt/hello"   # in dom0: a PVH ELF kernel or a bzImage
//! initrd = "/srv/initrd.img"         # in dom0 (optional): boot_params' or the start info's
//! cmdline = "greeting=1"
//! xen = false              # Xen's interface for the guest
//! on_poweroff = "destroy"  # when it ends: "destroy" (stays stopped) or "restart";
//! on_reboot = "restart"    # the defaults are xl's
//! on_crash = "destroy"
//!
//! [[disk]]                 # virtio-blk, served by basalt-dm (up to 8)
//! path = "/srv/web1.img"   # in dom0: a raw image file (sparse allowed) or a block device
//! readonly = false
//! ```

use basalt_domctl as dc;
use serde::Deserialize;
use toml::Spanned;

/// A checked VM definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDef {
    /// The domain's name.
    pub name: String,
    /// Memory in bytes.
    pub memory: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Scheduling weight.
    pub weight: u16,
    /// CPU cap, percent of one CPU (0 = none).
    pub cap: u16,
    /// CPU pinning mask (0 = any CPU).
    pub affinity: u64,
    /// The kernel's path in dom0, and the line that names it.
    pub kernel: (String, usize),
    /// The initrd's path in dom0 and the line that names it.
    pub initrd: Option<(String, usize)>,
    /// The kernel command line.
    pub cmdline: String,
    /// Whether the guest gets Xen's interface.
    pub xen: bool,
    /// What basaltd does when the domain powers off, reboots, crashes.
    pub on_end: [OnEnd; 3],
    /// Its virtio disks, in order.
    pub disks: Vec<Disk>,
}

/// A `[[disk]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The file or block device in dom0.
    pub path: String,
    /// Whether the guest may only read it.
    pub readonly: bool,
}

/// The most disks a VM has (PCI slots of its device model).
pub const MAX_DISKS: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    path: Spanned<String>,
    readonly: Option<bool>,
}

/// What basaltd does when a VM's domain ends (`on_poweroff`, `on_reboot`, `on_crash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnEnd {
    /// The VM stays stopped.
    Destroy,
    /// The VM is started again (a new domain).
    Restart,
}

/// The file as written; `Spanned` keeps where each value is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Spanned<String>,
    memory: Spanned<u64>,
    vcpus: Option<Spanned<u32>>,
    weight: Option<Spanned<u32>>,
    cap: Option<Spanned<u32>>,
    cpus: Option<Spanned<Vec<u32>>>,
    kernel: Spanned<String>,
    cmdline: Option<Spanned<String>>,
    xen: Option<bool>,
    initrd: Option<Spanned<String>>,
    // Keys of later slices (docs/toolstack.md): recognised, refused.
    disk: Option<Spanned<Vec<RawDisk>>>,
    network: Option<Spanned<toml::Value>>,
    boot: Option<Spanned<toml::Value>>,
    on_poweroff: Option<Spanned<String>>,
    on_reboot: Option<Spanned<String>>,
    on_crash: Option<Spanned<String>>,
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The control domain's name, which no VM may take.
const CONTROL_DOMAIN: &str = "Domain-0";

/// Parses and checks the definition in `text` (from `file`, for messages).
pub fn parse(file: &str, text: &str) -> Result<VmDef, String> {
    let at = |span: core::ops::Range<usize>| format!("{file}:{}", line_of(text, span.start));
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(String::from(file), at);
        format!("{line}: {}", e.message().trim_end())
    })?;
    let later = [
        (
            "network",
            &raw.network,
            "network interfaces (they come with the device models)",
        ),
        ("boot", &raw.boot, "booting from a disk"),
    ];
    let mut on_end = [OnEnd::Destroy, OnEnd::Restart, OnEnd::Destroy];
    let keys = [
        ("on_poweroff", &raw.on_poweroff),
        ("on_reboot", &raw.on_reboot),
        ("on_crash", &raw.on_crash),
    ];
    for (slot, (key, value)) in on_end.iter_mut().zip(keys) {
        let Some(v) = value else { continue };
        *slot = match v.get_ref().as_str() {
            "destroy" => OnEnd::Destroy,
            "restart" => OnEnd::Restart,
            other => {
                return Err(format!(
                    "{}: {key} = {other:?}: \"destroy\" (the VM stays stopped) or \"restart\" \
                     (Basalt keeps no ended domain, so xl's \"preserve\" and \"coredump-*\" are \
                     not offered)",
                    at(v.span())
                ));
            }
        };
    }
    let mut disks = Vec::new();
    if let Some(list) = &raw.disk {
        if list.get_ref().len() > MAX_DISKS {
            return Err(format!(
                "{}: disk: {} disks, at most {MAX_DISKS}",
                at(list.span()),
                list.get_ref().len()
            ));
        }
        for d in list.get_ref() {
            let path = d.path.get_ref();
            let kind = std::fs::metadata(path).map(|m| m.file_type());
            let usable = kind
                .as_ref()
                .is_ok_and(|t| t.is_file() || std::os::unix::fs::FileTypeExt::is_block_device(t));
            if !usable {
                let why = match kind {
                    Err(e) => e.to_string(),
                    Ok(_) => "not a file or block device".into(),
                };
                return Err(format!(
                    "{}: disk path {path:?}: {why} (the path is dom0's: create the image, e.g. \
                     truncate -s 8G {path}, or correct it)",
                    at(d.path.span())
                ));
            }
            disks.push(Disk {
                path: path.clone(),
                readonly: d.readonly.unwrap_or(false),
            });
        }
    }
    if let Some((key, Some(v), what)) = later.iter().find(|l| l.1.is_some()) {
        return Err(format!(
            "{}: {key}: this basalt cannot set up {what} yet (docs/toolstack.md, \"Slices\")",
            at(v.span())
        ));
    }
    let range = |key: &str, v: &Spanned<u32>, lo: u32, hi: u32, what: &str| {
        let n = *v.get_ref();
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(format!(
                "{}: {key} = {n}: {what}, from {lo} to {hi}",
                at(v.span())
            ))
        }
    };
    let name = raw.name.get_ref();
    if !dc::Name::new(name).is_some_and(|n| n.is_valid_new()) {
        return Err(format!(
            "{}: name = {name:?}: a name is 1 to 31 of A-Z a-z 0-9 - _ .",
            at(raw.name.span())
        ));
    }
    if name == CONTROL_DOMAIN {
        return Err(format!(
            "{}: name = {name:?}: that is the control domain's name; choose another",
            at(raw.name.span())
        ));
    }
    let mib = *raw.memory.get_ref();
    let (step, max) = (dc::MEMORY_ALIGN >> 20, dc::MAX_MEMORY >> 20);
    if !mib.is_multiple_of(step) || !(step..=max).contains(&mib) {
        return Err(format!(
            "{}: memory = {mib}: memory is in MiB, a multiple of {step} from {step} to {max}",
            at(raw.memory.span())
        ));
    }
    let one =
        |v: &Option<Spanned<u32>>, default: u32| v.clone().unwrap_or(Spanned::new(0..0, default));
    let vcpus = range("vcpus", &one(&raw.vcpus, 1), 1, dc::MAX_VCPUS, "vCPUs")?;
    let weight = range(
        "weight",
        &one(&raw.weight, 256),
        1,
        65535,
        "a scheduling weight",
    )? as u16;
    let cap = range(
        "cap",
        &one(&raw.cap, 0),
        0,
        100 * vcpus,
        "percent of one CPU (0: no cap)",
    )? as u16;
    let mut affinity = 0u64;
    if let Some(cpus) = &raw.cpus {
        for &c in cpus.get_ref() {
            if c >= 64 {
                return Err(format!(
                    "{}: cpus: CPU {c}: host CPUs are numbered 0 to 63",
                    at(cpus.span())
                ));
            }
            affinity |= 1 << c;
        }
        if affinity == 0 {
            return Err(format!(
                "{}: cpus = []: name at least one CPU, or leave cpus out",
                at(cpus.span())
            ));
        }
    }
    let cmdline = raw.cmdline.map(Spanned::into_inner).unwrap_or_default();
    if cmdline.len() > crate::pvh::CMDLINE_MAX {
        return Err(format!(
            "{file}: cmdline: {} bytes, at most {}",
            cmdline.len(),
            crate::pvh::CMDLINE_MAX
        ));
    }
    Ok(VmDef {
        name: name.clone(),
        memory: mib << 20,
        vcpus,
        weight,
        cap,
        affinity,
        kernel: (
            raw.kernel.get_ref().clone(),
            line_of(text, raw.kernel.span().start),
        ),
        initrd: raw
            .initrd
            .map(|i| (i.get_ref().clone(), line_of(text, i.span().start))),
        cmdline,
        xen: raw.xen.unwrap_or(false),
        on_end,
        disks,
    })
}

#[cfg(test)]
mod tests;
