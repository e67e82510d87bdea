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
//! [[disk]]                 # virtio-blk, served by basalt-dm
//! path = "/srv/web1.img"   # in dom0: a raw image file (sparse allowed) or a block device
//! readonly = false
//!
//! [[network]]              # virtio-net on a tap on dom0's bridge (8 devices in all)
//! bridge = "basalt0"       # the one bridge dom0 makes (10.99.0.1/24, DHCP)
//! mac = "02:00:00:00:00:01"  # default: derived from the VM's name, the same at every start
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
    /// Its virtio network interfaces' MACs, in order (each on [`BRIDGE`]).
    pub nets: Vec<[u8; 6]>,
}

/// A `[[disk]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The file or block device in dom0.
    pub path: String,
    /// Whether the guest may only read it.
    pub readonly: bool,
}

/// The most devices (disks and network interfaces) a VM has: PCI slots of its device model.
pub const MAX_DEVICES: usize = 8;
/// The bridge in dom0 a VM's interfaces are on (`/usr/lib/basalt/net-up` makes it).
pub const BRIDGE: &str = "basalt0";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNet {
    bridge: Option<Spanned<String>>,
    mac: Option<Spanned<String>>,
}

/// A MAC address written `xx:xx:xx:xx:xx:xx`, unicast.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let p = parts.next().filter(|p| p.len() == 2)?;
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}

/// VM `name`'s interface `index`'s MAC when none is written: locally administered, from the
/// name (FNV-1a), so it stays the same at every start (and so does its DHCP address).
pub fn default_mac(name: &str, index: usize) -> [u8; 6] {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let b = h.to_le_bytes();
    [0x02, 0xba, b[0], b[1], b[2], index as u8]
}
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
    network: Option<Spanned<Vec<RawNet>>>,
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
    let later = [("boot", &raw.boot, "booting from a disk")];
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
        let nets = raw.network.as_ref().map_or(0, |n| n.get_ref().len());
        if list.get_ref().len() + nets > MAX_DEVICES {
            return Err(format!(
                "{}: disk: {} disks and {nets} network interfaces, at most {MAX_DEVICES} devices",
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
    let mut nets = Vec::new();
    for (i, n) in raw.network.iter().flat_map(|l| l.get_ref()).enumerate() {
        if let Some(b) = &n.bridge
            && b.get_ref() != BRIDGE
        {
            return Err(format!(
                "{}: network bridge = {:?}: dom0 has one bridge for guests, {BRIDGE:?} (leave \
                 bridge out)",
                at(b.span()),
                b.get_ref()
            ));
        }
        nets.push(match &n.mac {
            Some(m) => parse_mac(m.get_ref()).ok_or_else(|| {
                format!(
                    "{}: network mac = {:?}: six hex bytes like \"02:00:00:00:00:01\", the \
                     first even (unicast)",
                    at(m.span()),
                    m.get_ref()
                )
            })?,
            None => default_mac(raw.name.get_ref(), i),
        });
    }
    if nets.len() > MAX_DEVICES {
        return Err(format!(
            "{file}: {} network interfaces, at most {MAX_DEVICES} devices",
            nets.len()
        ));
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
        nets,
    })
}

#[cfg(test)]
mod tests;
