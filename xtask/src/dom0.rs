//! dom0's boot files (docs/control-domain.md, "dom0 as shipped"): the kernel
//! is `linux:vmlinux` (Debian's own, PVH entry; xtask/src/linux.rs), and
//! `target/dom0/initrd` is its initramfs (newc cpio, gzip), made from
//! Debian's packages the way `linux:initrd` is:
//!
//! - busybox (`busybox-static`) and its applet links;
//! - the kernel modules dom0 needs, from the same `linux-image-*` package
//!   as the vmlinux (`target/linux/kernel-version`), with every dependency
//!   their `.modinfo` names: Xen's (`xen-privcmd`, `xen-evtchn`,
//!   `xen-gntdev`, `xenfs`), disk (`ahci`, `ata_piix`, `sd_mod`, `ext4` and
//!   the `crc32c_generic` its soft dependency names, `virtio_blk`, `nvme`) and network (`e1000`, `e1000e`, `virtio_net`,
//!   `virtio_pci`; `tun` and `bridge` for guests' taps) and the ACPI power
//!   button's (`button`, `evdev`: for guests' initrds); a `modules.dep`
//!   so that `modprobe` works in the shell;
//! - the `basalt` command, built statically (`x86_64-unknown-linux-musl`
//!   when the toolchain has it, else glibc with `+crt-static`), at
//!   `/usr/sbin/basalt`, and `/usr/sbin/basaltd` linked to it (the
//!   toolstack's daemon, which `/init` restarts whenever it ends); and the
//!   device model `basalt-dm` (tools/basalt-dm) the same way, at
//!   `/usr/sbin/basalt-dm`;
//! - the test guest `hello` at `/usr/lib/basalt/hello`, a PVH kernel that
//!   `basalt create` can start from dom0, and a VM definition of it at
//!   `/etc/basalt/hello.toml` (docs/toolstack.md); and `spin` at
//!   `/usr/lib/basalt/spin`, a guest that ignores the power button;
//! - `/usr/lib/basalt/net-up TAP` ([`NET_UP`]): the bridge `basalt0`, a
//!   guest's tap on it and the guests' DHCP server;
//! - `/mnt`, and `udhcpc`'s script (`/etc/udhcpc/default.script`, where
//!   Debian's busybox looks: a lease sets the address, the default route
//!   and `/etc/resolv.conf`, and prints `dom0: dhcp: IFACE has ADDR/MASK
//!   ...`);
//! - `/init`: mounts proc, sys, devtmpfs, loads the modules in dependency
//!   order, mounts `xenfs` on `/proc/xen`, prints a `dom0: ...` line per
//!   step, with `dom0.disk` on the kernel's command line mounts `/dev/sda`
//!   (ext4) on `/mnt` and runs `/mnt/rc.sh` if it has one (`cargo xtask
//!   run`'s example VM, tests/scenarios/qemu-run-example.toml), and starts a root shell on the console (`hvc0` with
//!   `console=hvc0`), prompt `dom0# `; its last line, `dom0: root shell on
//!   CONSOLE at tsc=N`, carries the TSC read (`basalt tsc`) just before
//!   the shell (`cargo xtask bench dom0`: dom0's boot).
//!
//! A scenario names it `dom0:initrd` (xtask/src/modules.rs). It is made
//! again when what it was made from changed (the stamp beside it).

use crate::linux;
use crate::util::{self, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The asset names `dom0:NAME` accepts.
pub const NAMES: [&str; 2] = ["initrd", "basalt"];

/// The modules dom0 loads, by group, in this order (dependencies are added
/// before each).
pub const MODULES: &[(&str, &[&str])] = &[
    ("xen", &["xen-evtchn", "xen-privcmd", "xen-gntdev", "xenfs"]),
    (
        "disk",
        &[
            "ahci",
            "ata_piix",
            "sd_mod",
            "virtio_pci",
            "virtio_blk",
            "nvme",
            // ext4's `softdep=pre: crypto-crc32c` (its checksums): an alias,
            // so named here by its module.
            "crc32c_generic",
            "ext4",
        ],
    ),
    // `tun` and `bridge`: guests' networks (basalt-dm's taps on basalt0,
    // [`NET_UP`]).
    ("net", &["e1000", "e1000e", "virtio_net", "tun", "bridge"]),
    // The ACPI power button and its input events: shipped for the guests'
    // initrds made in dom0 (`basalt shutdown`, docs/toolstack.md; scenario
    // qemu-dom0-shutdown); loaded here too, harmlessly.
    ("acpi", &["button", "evdev"]),
];

/// Where the basalt command goes in the initramfs.
const BASALT_PATH: &str = "usr/sbin/basalt";
/// The toolstack's daemon: a link to the same executable, which is the
/// daemon when run under this name (tools/basalt/src/daemon.rs).
const BASALTD_PATH: &str = "usr/sbin/basaltd";
/// Where the device model goes.
const BASALT_DM_PATH: &str = "usr/sbin/basalt-dm";

/// Where the test guest `hello` goes in the initramfs: a PVH kernel for
/// `basalt create` to start from dom0.
const HELLO_PATH: &str = "usr/lib/basalt/hello";
/// The test guest `spin` (`iterations=0`: runs until destroyed; it has no
/// ACPI, so it ignores the power button): for `basalt shutdown`'s timeout.
const SPIN_PATH: &str = "usr/lib/basalt/spin";

/// Where Debian's busybox `udhcpc` looks for the script that applies a
/// lease (its `CONFIG_UDHCPC_DEFAULT_SCRIPT`).
const UDHCPC_SCRIPT_PATH: &str = "etc/udhcpc/default.script";

/// `udhcpc`'s script: on a lease it sets the interface's address, the
/// default route and the DNS servers, and prints `dom0: dhcp: ...`.
pub const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# Applies udhcpc's lease (busybox udhcpc; made by `cargo xtask dom0`).
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    for r in $router; do
        ip route add default via "$r" dev "$interface" && break
    done
    : > /etc/resolv.conf
    for d in $dns; do
        echo "nameserver $d" >> /etc/resolv.conf
    done
    echo "dom0: dhcp: $interface has $ip/${mask:-24} (router ${router:-none}, server ${serverid:-?})"
    ;;
leasefail|nak)
    echo "dom0: dhcp: no lease on $interface ($1${message:+: $message})"
    ;;
esac
exit 0
"#;

/// Where the guests' network helper goes.
const NET_UP_PATH: &str = "usr/lib/basalt/net-up";

/// `net-up TAP` (docs/toolstack.md, "virtio-net"): the bridge `basalt0`
/// with 10.99.0.1/24 if missing, tap TAP made if missing and put on it,
/// and busybox `udhcpd` serving 10.99.0.100-199 on it, started once.
pub const NET_UP: &str = r#"#!/bin/sh
# net-up TAP: a guest's tap on dom0's bridge basalt0, with DHCP (made by
# `cargo xtask dom0`; docs/toolstack.md, "virtio-net").
set -e
tap=$1
case "$tap" in
'' | */* | *' '* | ????????????????*)
    echo "usage: net-up TAP (an interface name of 1 to 15 characters)" >&2
    exit 2
    ;;
esac
br=basalt0
if [ ! -d /sys/class/net/$br ]; then
    brctl addbr $br
    ip addr add 10.99.0.1/24 dev $br
    echo "net-up: bridge $br made, 10.99.0.1/24"
fi
ip link set $br up
[ -d "/sys/class/net/$tap" ] || tunctl -t "$tap" >/dev/null
[ -e "/sys/class/net/$tap/brport" ] || brctl addif $br "$tap"
ip link set "$tap" up
mkdir -p /run/basalt
pid=$(cat /run/basalt/udhcpd.pid 2>/dev/null || true)
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    cat > /run/basalt/udhcpd.conf <<EOF
interface $br
start 10.99.0.100
end 10.99.0.199
max_leases 100
lease_file /run/basalt/udhcpd.leases
pidfile /run/basalt/udhcpd.pid
option subnet 255.255.255.0
option router 10.99.0.1
option dns 10.99.0.1
option lease 86400
EOF
    touch /run/basalt/udhcpd.leases
    udhcpd /run/basalt/udhcpd.conf
    echo "net-up: udhcpd serving 10.99.0.100-199 on $br"
fi
echo "net-up: $tap is on $br"
"#;

/// The list of modules `/init` loads: `group path` per line, in load order.
const MODULE_LIST: &str = "etc/dom0/modules";

/// The example VM definition in dom0 (docs/toolstack.md, "State").
const EXAMPLE_VM_PATH: &str = "etc/basalt/hello.toml";
const EXAMPLE_VM: &str =
    "# A VM definition: `basalt create /etc/basalt/hello.toml` (docs/toolstack.md).
name = \"hello\"
memory = 16              # MiB: a multiple of 2, from 2 to 3072
vcpus = 1
weight = 256             # its share of the CPUs against the others' weights
cap = 0                  # percent of one CPU at most (0: no cap)
kernel = \"/usr/lib/basalt/hello\"   # a PVH ELF kernel in dom0
cmdline = \"greeting=1\"
";

/// The directory with dom0's files (`target/dom0`).
pub fn dir() -> PathBuf {
    util::target_dir().join("dom0")
}

/// Where asset `name` is (built or not), if `name` is one of [`NAMES`].
pub fn path(name: &str) -> Option<PathBuf> {
    NAMES.contains(&name).then(|| dir().join(name))
}

/// Builds asset `name` if it is missing or stale; returns its path.
pub fn ensure(name: &str) -> Result<PathBuf> {
    let path = path(name).ok_or_else(|| {
        format!(
            "dom0:{name} is not one of dom0's files (there are: {})",
            NAMES.join(", ")
        )
    })?;
    let basalt = util::step("building the basalt command (static)", || {
        build_static("basalt-cli", "basalt")
    })?;
    if name == "basalt" {
        return Ok(basalt);
    }
    let dm = util::step("building the basalt-dm device model (static)", || {
        build_static("basalt-dm", "basalt-dm")
    })?;
    let vmlinux = linux::ensure("vmlinux")?;
    let built = crate::guests::build()?;
    let guests = [
        (HELLO_PATH, built.path("hello")),
        (SPIN_PATH, built.path("spin")),
    ];
    let kernel = kernel_package()?;
    let stamp = stamp(&kernel, &[&basalt, &dm], &vmlinux, &guests)?;
    let stamp_path = dir().join("initrd.stamp");
    if path.is_file() && std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(path);
    }
    util::step("making dom0's initramfs", || {
        build_initrd(
            &kernel,
            &[(BASALT_PATH, &basalt), (BASALT_DM_PATH, &dm)],
            &guests,
            &path,
        )
    })?;
    std::fs::write(&stamp_path, stamp).map_err(|e| format!("{}: {e}", stamp_path.display()))?;
    Ok(path)
}

/// `cargo xtask dom0`: builds dom0's files and prints their paths.
pub fn cmd_dom0() -> Result {
    let initrd = ensure("initrd")?;
    let vmlinux = linux::ensure("vmlinux")?;
    for (what, path) in [
        ("kernel (linux:vmlinux)", vmlinux),
        ("initramfs (dom0:initrd)", initrd),
        ("basalt command (dom0:basalt)", dir().join("basalt")),
        ("device model (basalt-dm)", dir().join("basalt-dm")),
    ] {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!("{what:<30} {} ({size} bytes)", path.display());
    }
    Ok(())
}

/// What the initramfs is made from, as text: it is made again when this
/// changes.
fn stamp(
    kernel: &str,
    tools: &[&Path],
    vmlinux: &Path,
    guests: &[(&str, PathBuf)],
) -> Result<String> {
    let meta = |p: &Path| -> Result<String> {
        let m = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(format!("{} {} {mtime}", p.display(), m.len()))
    };
    Ok(format!(
        "kernel {kernel}\ntools {:?}\nvmlinux {}\nguests {:?}\nmodules {MODULES:?}\ninit {:x}\n\
         udhcpc {:x}\nnet-up {:x}\n",
        tools.iter().map(|p| meta(p)).collect::<Result<Vec<_>>>()?,
        meta(vmlinux)?,
        guests
            .iter()
            .map(|(_, p)| meta(p))
            .collect::<Result<Vec<_>>>()?,
        fnv1a(INIT.as_bytes()),
        fnv1a(UDHCPC_SCRIPT.as_bytes()),
        fnv1a(NET_UP.as_bytes())
    ))
}

/// FNV-1a, 64 bits: a change detector for the stamp.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `linux-image-*` package the vmlinux came from, from
/// `target/linux/kernel-version` (`RELEASE (PACKAGE VERSION)`).
fn kernel_package() -> Result<String> {
    let file = linux::dir().join("kernel-version");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "{}: {e}: it is written with linux:bzImage; remove target/linux/bzImage and run \
             cargo xtask linux-assets",
            file.display()
        )
    })?;
    package_in(&text)
        .map(str::to_string)
        .ok_or_else(|| format!("{} names no linux-image package: {text:?}", file.display()))
}

/// The package name in a `kernel-version` line.
fn package_in(text: &str) -> Option<&str> {
    text.split(['(', ' ', ')'])
        .find(|w| w.starts_with("linux-image-"))
}

// ---------------------------------------------------------------------------
// The basalt command.

const MUSL: &str = "x86_64-unknown-linux-musl";
const GNU: &str = "x86_64-unknown-linux-gnu";

/// Whether the toolchain cargo uses here has the standard library for
/// `target` (rustup's `rust-std` component).
fn has_target(target: &str) -> bool {
    let out = util::output(Command::new("rustc").current_dir(util::root()).args([
        "--print",
        "target-libdir",
        "--target",
        target,
    ]));
    out.map(|dir| PathBuf::from(dir.trim())).is_some_and(|dir| {
        std::fs::read_dir(dir).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        })
    })
}

/// Builds `bin` of `package` (a tool of dom0) as a static x86-64 Linux
/// executable; copies it to `target/dom0/BIN`.
fn build_static(package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(util::root()).args([
        "build",
        "--release",
        "--package",
        package,
        "--bin",
        bin,
        "--config",
        "profile.release.strip=\"symbols\"",
        "--config",
        "profile.release.debug=false",
    ]);
    let target = if has_target(MUSL) {
        MUSL
    } else {
        // glibc's static libc.a (libc6-dev): basalt calls nothing that needs
        // NSS or dlopen, so a static glibc binary is complete.
        cmd.env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
        GNU
    };
    cmd.args(["--target", target]);
    util::run(&mut cmd)?;
    let built = util::target_dir().join(target).join("release").join(bin);
    let data = std::fs::read(&built).map_err(|e| format!("{}: {e}", built.display()))?;
    if has_interpreter(&data) {
        return Err(format!(
            "{} is dynamically linked (it has PT_INTERP): dom0's initramfs has no C library. \
             Add the musl target (rustup target add {MUSL}) or install glibc's static libc.a \
             (apt-get install libc6-dev)",
            built.display()
        ));
    }
    let out = dir().join(bin);
    std::fs::create_dir_all(dir()).map_err(|e| format!("{}: {e}", dir().display()))?;
    if std::fs::read(&out).ok().as_deref() != Some(&data[..]) {
        let tmp = out.with_extension("tmp");
        std::fs::write(&tmp, &data).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(out)
}

fn le16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn le32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn le64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// Whether the ELF64 `elf` has a `PT_INTERP` program header (it needs a
/// dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    let (Some(off), Some(size), Some(num)) = (le64(elf, 0x20), le16(elf, 0x36), le16(elf, 0x38))
    else {
        return true;
    };
    (0..usize::from(num)).any(|i| le32(elf, off as usize + i * usize::from(size)) == Some(3))
}

// ---------------------------------------------------------------------------
// Kernel modules.

/// The `.modinfo` section of the ELF64 module `ko`: its `key=value`
/// strings.
pub fn modinfo(ko: &[u8]) -> Option<Vec<String>> {
    if ko.get(..4) != Some(b"\x7fELF") || ko.get(4) != Some(&2) {
        return None;
    }
    let shoff = le64(ko, 0x28)? as usize;
    let shentsize = usize::from(le16(ko, 0x3A)?);
    let shnum = usize::from(le16(ko, 0x3C)?);
    let shstrndx = usize::from(le16(ko, 0x3E)?);
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            le32(ko, at)?,
            le64(ko, at + 0x18)? as usize,
            le64(ko, at + 0x20)? as usize,
        ))
    };
    let (_, names_off, names_size) = section(shstrndx)?;
    let names = ko.get(names_off..names_off.checked_add(names_size)?)?;
    for i in 0..shnum {
        let (name, off, size) = section(i)?;
        let name = names.get(name as usize..)?;
        let name = &name[..name.iter().position(|&b| b == 0)?];
        if name == b".modinfo" {
            let data = ko.get(off..off.checked_add(size)?)?;
            return Some(
                data.split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            );
        }
    }
    None
}

/// A module's name as the kernel knows it (`xen-privcmd.ko` → `xen_privcmd`).
pub fn module_name(file: &str) -> String {
    file.trim_end_matches(".ko").replace('-', "_")
}

/// The modules of a kernel tree: name → (path relative to
/// `lib/modules/RELEASE`, dependencies).
#[derive(Debug, Default)]
pub struct ModuleIndex {
    modules: BTreeMap<String, (String, Vec<String>)>,
}

impl ModuleIndex {
    /// Adds the module at `rel` with `.modinfo` strings `info`.
    pub fn add(&mut self, rel: &str, info: &[String]) {
        let file = rel.rsplit('/').next().unwrap_or(rel);
        let depends = info
            .iter()
            .find_map(|s| s.strip_prefix("depends="))
            .map(|d| {
                d.split(',')
                    .filter(|n| !n.is_empty())
                    .map(module_name)
                    .collect()
            })
            .unwrap_or_default();
        self.modules
            .insert(module_name(file), (rel.to_string(), depends));
    }

    /// `wanted` and every module they need, dependencies first, skipping
    /// what `loaded` already holds (which this adds to). An unknown name is
    /// an error naming it.
    pub fn load_order(
        &self,
        wanted: &[&str],
        loaded: &mut BTreeSet<String>,
    ) -> Result<Vec<String>> {
        let mut order = Vec::new();
        for name in wanted {
            self.visit(&module_name(name), loaded, &mut Vec::new(), &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        loaded: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result {
        if loaded.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            return Err(format!(
                "modules depend on each other in a cycle: {} -> {name}",
                path.join(" -> ")
            ));
        }
        let (rel, deps) = self
            .modules
            .get(name)
            .ok_or_else(|| format!("the kernel package has no module {name}"))?;
        path.push(name.to_string());
        for d in deps {
            self.visit(d, loaded, path, order)?;
        }
        path.pop();
        loaded.insert(name.to_string());
        order.push(rel.clone());
        Ok(())
    }

    /// `modules.dep` for the modules in `rels` (each line: the module,
    /// then every module it needs, nearest first, as depmod writes it).
    pub fn modules_dep(&self, rels: &[String]) -> String {
        let by_rel: BTreeMap<&str, &str> = self
            .modules
            .iter()
            .map(|(name, (rel, _))| (rel.as_str(), name.as_str()))
            .collect();
        let mut out = String::new();
        for rel in rels {
            let Some(name) = by_rel.get(rel.as_str()) else {
                continue;
            };
            let mut all = Vec::new();
            let mut seen = BTreeSet::new();
            self.closure(name, &mut seen, &mut all);
            let deps: Vec<&str> = all.iter().rev().skip(1).map(String::as_str).collect();
            out.push_str(&format!("{rel}: {}\n", deps.join(" ")).replace(": \n", ":\n"));
        }
        out
    }

    fn closure(&self, name: &str, seen: &mut BTreeSet<String>, out: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some((rel, deps)) = self.modules.get(name) {
            for d in deps {
                self.closure(d, seen, out);
            }
            out.push(rel.clone());
        }
    }
}

/// Every `.ko` under `dir`, relative to `base`.
fn find_modules(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            find_modules(base, &p, out);
        } else if p.extension().is_some_and(|x| x == "ko") {
            out.push(p.strip_prefix(base).unwrap_or(&p).to_path_buf());
        }
    }
}

// ---------------------------------------------------------------------------
// The initramfs.

/// dom0's `/init`.
pub const INIT: &str = r#"#!/bin/sh
# Basalt's dom0 initramfs (made by `cargo xtask dom0`, xtask/src/dom0.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox mount -t proc proc /proc
[ -e /bin/mount ] || /bin/busybox --install -s
echo "dom0: init up: /proc mounted"
mount -t sysfs sysfs /sys && echo "dom0: /sys mounted"
mount -t devtmpfs devtmpfs /dev 2>/dev/null && echo "dom0: /dev mounted (devtmpfs)"
release=$(uname -r)
echo "dom0: kernel $release"
xenfs() {
    [ -d /proc/xen ] || mkdir -p /proc/xen 2>/dev/null
    if mount -t xenfs xenfs /proc/xen 2>/tmp/err; then
        echo "dom0: xenfs mounted on /proc/xen"
        read -r caps < /proc/xen/capabilities
        echo "dom0: /proc/xen/capabilities: ${caps:-(empty: not the control domain)}"
    else
        echo "dom0: xenfs NOT mounted on /proc/xen: $(cat /tmp/err)"
    fi
}
group=
while read -r g path; do
    if [ "$g" != "$group" ]; then
        [ "$group" = xen ] && xenfs
        group=$g
        echo "dom0: loading the $g modules"
    fi
    name=${path##*/}
    name=${name%.ko}
    sysname=$(echo "$name" | tr - _)
    if [ -d "/sys/module/$sysname" ]; then
        echo "dom0: module $name: already loaded"
    elif insmod "/lib/modules/$release/$path" 2>/tmp/err; then
        echo "dom0: module $name: loaded"
    else
        echo "dom0: module $name: NOT loaded: $(cat /tmp/err)"
    fi
done < /etc/dom0/modules
[ "$group" = xen ] && xenfs
if [ -c /dev/xen/privcmd ]; then
    echo "dom0: /dev/xen/privcmd ready: basalt list shows the domains"
    # The toolstack's daemon, restarted when it dies (docs/toolstack.md). Its
    # store: the file system labelled basalt-state, else tmpfs.
    mkdir -p /var/lib/basalt /run/basalt
    store=$(findfs LABEL=basalt-state 2>/dev/null)
    if [ -z "$store" ]; then
        echo "dom0: no disk labelled basalt-state: VM store on tmpfs, VM definitions will NOT survive a reboot (to keep them: mke2fs -L basalt-state /dev/DISK, or mkfs.ext4 -L basalt-state DISK elsewhere, then reboot)"
    elif mount -t ext4 "$store" /var/lib/basalt 2>/tmp/err; then
        echo "dom0: VM store on $store (basalt-state)"
    else
        echo "dom0: VM store: $store (basalt-state) NOT mounted: $(cat /tmp/err); on tmpfs instead, VM definitions will NOT survive a reboot (fsck.ext4 $store, or make it again)"
        store=
    fi
    [ -n "$store" ] || mount -t tmpfs -o mode=0700 tmpfs /var/lib/basalt
    while :; do
        echo "dom0: basaltd (re)started"
        basaltd
        echo "dom0: basaltd ended (status $?); restarting it"
        sleep 1
    done </dev/null &
else
    echo "dom0: no /dev/xen/privcmd: the basalt command cannot reach Basalt"
fi
# A disk for dom0 (`dom0.disk` on its command line: `cargo xtask run`'s
# example, README.md): /dev/sda mounted on /mnt, its /mnt/rc.sh run.
case " $(cat /proc/cmdline) " in
*" dom0.disk "*)
    n=0
    while [ ! -b /dev/sda ] && [ $n -lt 50 ]; do sleep 0.2; n=$((n + 1)); done
    if mount -t ext4 /dev/sda /mnt 2>/tmp/err; then
        echo "dom0: /dev/sda mounted on /mnt"
        [ -f /mnt/rc.sh ] && sh /mnt/rc.sh
    else
        echo "dom0: /dev/sda NOT mounted on /mnt: $(cat /tmp/err)"
    fi
    ;;
esac
# The TSC just before the prompt (`cargo xtask bench dom0`: dom0's boot).
echo "dom0: root shell on $(cat /sys/class/tty/console/active 2>/dev/null || echo the console) at $(basalt tsc)"
export PS1='dom0# '
export HOME=/root
cd /root
exec setsid cttyhack /bin/sh
"#;

/// The initramfs from its parts: `busybox` and its `applets` links,
/// `modules` (path relative to `lib/modules/RELEASE`, bytes), their
/// `modules_dep`, the load `list`, the `tools` (path, bytes: `basalt` and
/// `basalt-dm`, executables), and `kernels` (path, bytes: guest kernels
/// under `usr/lib/basalt`).
#[allow(clippy::too_many_arguments)]
pub fn initramfs(
    busybox: &[u8],
    applets: &str,
    release: &str,
    modules: &[(String, Vec<u8>)],
    modules_dep: &str,
    list: &str,
    tools: &[(&str, &[u8])],
    kernels: &[(&str, &[u8])],
) -> Vec<u8> {
    let mut cpio = linux::Cpio::new();
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "etc",
        "etc/dom0",
        "root",
        "mnt",
        "lib",
        "lib/modules",
        "etc/udhcpc",
        "usr/lib",
        "usr/lib/basalt",
    ] {
        cpio.dir(dir, 0o755);
    }
    cpio.dir("tmp", 0o1777);
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    linux::busybox_links(
        &mut cpio,
        busybox,
        applets,
        &[BASALT_PATH, BASALTD_PATH, BASALT_DM_PATH],
    );
    let root = format!("lib/modules/{release}");
    let mut dirs = BTreeSet::new();
    for (rel, _) in modules {
        let mut at = root.clone();
        dirs.insert(at.clone());
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, d)| d)
        {
            at = format!("{at}/{part}");
            dirs.insert(at.clone());
        }
    }
    // Parents sort before their children.
    for d in &dirs {
        cpio.dir(d, 0o755);
    }
    for (rel, data) in modules {
        cpio.file(&format!("{root}/{rel}"), 0o644, data);
    }
    cpio.file(
        &format!("{root}/modules.dep"),
        0o644,
        modules_dep.as_bytes(),
    );
    cpio.file(MODULE_LIST, 0o644, list.as_bytes());
    cpio.file(UDHCPC_SCRIPT_PATH, 0o755, UDHCPC_SCRIPT.as_bytes());
    cpio.file(NET_UP_PATH, 0o755, NET_UP.as_bytes());
    for (path, data) in tools {
        cpio.file(path, 0o755, data);
    }
    cpio.symlink(BASALTD_PATH, "basalt");
    if !kernels.is_empty() {
        // An example VM definition (docs/toolstack.md): `basalt create
        // /etc/basalt/hello.toml`.
        cpio.dir("etc/basalt", 0o755);
        cpio.file(EXAMPLE_VM_PATH, 0o644, EXAMPLE_VM.as_bytes());
    }
    for (path, data) in kernels {
        cpio.file(path, 0o644, data);
    }
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.finish()
}

fn build_initrd(
    kernel: &str,
    tool_paths: &[(&str, &PathBuf)],
    guests: &[(&str, PathBuf)],
    out: &Path,
) -> Result {
    let work = linux::dir().join("work");
    let kroot = linux::fetch(kernel, &work)?;
    let modules_dir = kroot.join("lib/modules");
    let release = std::fs::read_dir(&modules_dir)
        .map_err(|e| format!("{kernel} has no lib/modules: {e}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| format!("{kernel} has an empty lib/modules"))?;
    let base = modules_dir.join(&release);
    let mut files = Vec::new();
    find_modules(&base, &base, &mut files);
    let mut index = ModuleIndex::default();
    for f in &files {
        let data = std::fs::read(base.join(f)).map_err(|e| format!("{}: {e}", f.display()))?;
        let info = modinfo(&data)
            .ok_or_else(|| format!("{}: no .modinfo section: not a kernel module", f.display()))?;
        index.add(&f.to_string_lossy(), &info);
    }
    let mut loaded = BTreeSet::new();
    let mut list = String::new();
    let mut rels = Vec::new();
    for (group, wanted) in MODULES {
        for rel in index.load_order(wanted, &mut loaded)? {
            list.push_str(&format!("{group} {rel}\n"));
            rels.push(rel);
        }
    }
    let mut modules = Vec::new();
    for rel in &rels {
        let data = std::fs::read(base.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
        modules.push((rel.clone(), data));
    }
    let dep = index.modules_dep(&rels);
    eprintln!(
        "    {} modules of {release} ({} bytes): {}",
        rels.len(),
        modules.iter().map(|(_, d)| d.len()).sum::<usize>(),
        rels.iter()
            .map(|r| module_name(r.rsplit('/').next().unwrap_or(r)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    linux::discard(&kroot);

    let bbroot = linux::fetch(linux::BUSYBOX, &work)?;
    let busybox_path = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| bbroot.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{} has no bin/busybox", linux::BUSYBOX))?;
    let busybox =
        std::fs::read(&busybox_path).map_err(|e| format!("{}: {e}", busybox_path.display()))?;
    let applets = util::output(Command::new(&busybox_path).arg("--list-full")).unwrap_or_default();
    linux::discard(&bbroot);
    let mut tools = Vec::new();
    for (at, path) in tool_paths {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        tools.push((*at, data));
    }
    let tools: Vec<(&str, &[u8])> = tools.iter().map(|(at, d)| (*at, &d[..])).collect();

    let mut kernels = Vec::new();
    for (at, path) in guests {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        kernels.push((*at, data));
    }
    let kernels: Vec<(&str, &[u8])> = kernels.iter().map(|(at, d)| (*at, &d[..])).collect();
    let cpio = initramfs(
        &busybox, &applets, &release, &modules, &dep, &list, &tools, &kernels,
    );
    let gz = gzip(&cpio)?;
    eprintln!("    cpio {} bytes, gzip {} bytes", cpio.len(), gz.len());
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &gz).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))
}

/// `data` compressed with the gzip command (`-n`: no name or time, so the
/// same input gives the same file).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run gzip: {e} (apt-get install gzip)"))?;
    let mut stdin = child.stdin.take().ok_or("gzip has no stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| format!("gzip: {e}"))?;
    writer
        .join()
        .map_err(|_| "gzip's writer thread panicked".to_string())?
        .map_err(|e| format!("gzip: {e}"))?;
    if !out.status.success() {
        return Err(format!("gzip failed ({})", out.status));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 relocatable with a `.modinfo` section.
    fn ko(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        let modinfo_off = f.len();
        f.extend_from_slice(modinfo);
        let strtab_off = f.len();
        f.extend_from_slice(shstrtab);
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len();
        let mut sh = |name: u32, kind: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&h);
        };
        sh(0, 0, 0, 0);
        sh(1, 1, modinfo_off, modinfo.len());
        sh(10, 3, strtab_off, shstrtab.len());
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        f[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        f[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes());
        f
    }

    #[test]
    fn reads_modinfo_strings() {
        let data = ko(b"license=GPL\0depends=xen-gntalloc,virtio\0\0name=xen_gntdev\0");
        let info = modinfo(&data).expect("has .modinfo");
        assert_eq!(
            info,
            [
                "license=GPL",
                "depends=xen-gntalloc,virtio",
                "name=xen_gntdev"
            ]
        );
        assert_eq!(modinfo(b"not an elf"), None);
        assert_eq!(modinfo(&data[..70]), None);
    }

    fn index() -> ModuleIndex {
        let mut i = ModuleIndex::default();
        let add = |i: &mut ModuleIndex, rel: &str, deps: &str| {
            i.add(rel, &[format!("depends={deps}"), "license=GPL".into()]);
        };
        add(&mut i, "kernel/drivers/ata/ahci.ko", "libahci,libata");
        add(&mut i, "kernel/drivers/ata/libahci.ko", "libata");
        add(&mut i, "kernel/drivers/ata/libata.ko", "scsi_mod");
        add(&mut i, "kernel/drivers/scsi/scsi_mod.ko", "");
        add(
            &mut i,
            "kernel/drivers/scsi/sd_mod.ko",
            "scsi_mod,scsi_common",
        );
        add(&mut i, "kernel/drivers/scsi/scsi_common.ko", "");
        add(&mut i, "kernel/drivers/xen/xen-privcmd.ko", "");
        i
    }

    #[test]
    fn load_order_puts_dependencies_first_once() {
        let i = index();
        let mut loaded = BTreeSet::new();
        let order = i
            .load_order(&["xen-privcmd", "ahci", "sd_mod"], &mut loaded)
            .expect("known");
        assert_eq!(
            order,
            [
                "kernel/drivers/xen/xen-privcmd.ko",
                "kernel/drivers/scsi/scsi_mod.ko",
                "kernel/drivers/ata/libata.ko",
                "kernel/drivers/ata/libahci.ko",
                "kernel/drivers/ata/ahci.ko",
                "kernel/drivers/scsi/scsi_common.ko",
                "kernel/drivers/scsi/sd_mod.ko",
            ]
        );
        // A later group does not load them again.
        assert!(
            i.load_order(&["ahci"], &mut loaded)
                .expect("known")
                .is_empty()
        );
        let e = i
            .load_order(&["e1000"], &mut BTreeSet::new())
            .expect_err("unknown");
        assert!(e.contains("no module e1000"), "{e}");
    }

    #[test]
    fn dependency_cycles_are_refused() {
        let mut i = ModuleIndex::default();
        i.add("a.ko", &["depends=b".into()]);
        i.add("b.ko", &["depends=a".into()]);
        let e = i
            .load_order(&["a"], &mut BTreeSet::new())
            .expect_err("cycle");
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn modules_dep_lists_every_needed_module() {
        let i = index();
        let rels: Vec<String> = i
            .load_order(&["ahci", "xen-privcmd"], &mut BTreeSet::new())
            .expect("known");
        let dep = i.modules_dep(&rels);
        assert!(
            dep.contains(
                "kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko\n"
            ),
            "{dep}"
        );
        assert!(
            dep.contains("kernel/drivers/xen/xen-privcmd.ko:\n"),
            "{dep}"
        );
    }

    #[test]
    fn initramfs_holds_init_modules_and_basalt() {
        let modules = vec![(
            "kernel/drivers/xen/xen-privcmd.ko".to_string(),
            b"KO".to_vec(),
        )];
        let cpio = initramfs(
            b"BB",
            "/bin/sh\n/sbin/insmod\n",
            "6.1.0-57-amd64",
            &modules,
            "kernel/drivers/xen/xen-privcmd.ko:\n",
            "xen kernel/drivers/xen/xen-privcmd.ko\n",
            &[(BASALT_PATH, b"BASALT"), (BASALT_DM_PATH, b"DM")],
            &[(HELLO_PATH, b"ELF")],
        );
        let text = String::from_utf8_lossy(&cpio);
        for name in [
            "lib/modules/6.1.0-57-amd64\0",
            "lib/modules/6.1.0-57-amd64/kernel/drivers/xen\0",
            "lib/modules/6.1.0-57-amd64/kernel/drivers/xen/xen-privcmd.ko\0",
            "lib/modules/6.1.0-57-amd64/modules.dep\0",
            "etc/dom0/modules\0",
            "usr/sbin/basalt\0",
            "usr/sbin/basaltd\0",
            "usr/sbin/basalt-dm\0",
            "usr/lib/basalt/hello\0",
            "etc/udhcpc/default.script\0",
            "usr/lib/basalt/net-up\0",
            "mnt\0",
            "sbin/insmod\0",
            "init\0",
            "TRAILER!!!\0",
        ] {
            assert!(text.contains(name), "no {name:?}");
        }
        assert!(cpio.windows(INIT.len()).any(|w| w == INIT.as_bytes()));
        // Every directory comes before what is in it.
        let at = |s: &str| text.find(s).expect("present");
        assert!(at("lib/modules/6.1.0-57-amd64/kernel\0") < at("xen-privcmd.ko\0"));
    }

    #[test]
    fn init_mounts_xenfs_and_starts_a_shell() {
        for step in [
            "mount -t xenfs xenfs /proc/xen",
            "insmod \"/lib/modules/$release/$path\"",
            "exec setsid cttyhack /bin/sh",
            "PS1='dom0# '",
            "store=$(findfs LABEL=basalt-state 2>/dev/null)",
            "mount -t ext4 \"$store\" /var/lib/basalt",
            "[ -n \"$store\" ] || mount -t tmpfs -o mode=0700 tmpfs /var/lib/basalt",
        ] {
            assert!(INIT.contains(step), "{step}");
        }
    }

    #[test]
    fn finds_the_kernel_package_name() {
        let text = "6.1.0-57-amd64 (linux-image-6.1.0-57-amd64 6.1.192-3)\n";
        assert_eq!(package_in(text), Some("linux-image-6.1.0-57-amd64"));
        assert_eq!(package_in("6.1.0-57-amd64\n"), None);
    }

    #[test]
    fn static_executables_have_no_interpreter() {
        let mut elf = vec![0u8; 0x40 + 2 * 56];
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3A].copy_from_slice(&2u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
        assert!(!has_interpreter(&elf));
        elf[0x40 + 56..0x40 + 60].copy_from_slice(&3u32.to_le_bytes());
        assert!(has_interpreter(&elf));
    }
}
