//! The Linux guest test assets, from Debian's packages (platform facts §5):
//! Debian's own kernel, a busybox initramfs for it and the Debian
//! installer's kernel and initrd. They are boot modules named
//! `linux:NAME` (xtask/src/modules.rs), built on demand into
//! `target/linux/` and kept there: an asset is made again only when its
//! file is missing.
//!
//! | `linux:NAME`        | file                               | what |
//! |---------------------|------------------------------------|------|
//! | `vmlinux`           | `target/linux/vmlinux`             | the uncompressed kernel ELF (PVH entry note) |
//! | `bzImage`           | `target/linux/bzImage`             | the kernel as Debian ships it (`/boot/vmlinuz-*`) |
//! | `initrd`            | `target/linux/initrd`              | uncompressed newc cpio: static busybox and `/init` |
//! | `installer-linux`   | `target/linux/installer-linux`     | the Debian 12 installer's kernel (bzImage) |
//! | `installer-initrd`  | `target/linux/installer-initrd.gz` | the installer's initrd (gzip) |
//! | `installer-vmlinux` | `target/linux/installer-vmlinux`   | the installer's kernel ELF, extracted like `vmlinux` |
//!
//! The packages are fetched with `apt-get download` (the real kernel package
//! is the one `linux-image-amd64` depends on, looked up with `apt-cache
//! depends`) and unpacked with `dpkg-deb -x` under `target/linux/work/`.
//!
//! `/init` prints `basalt-linux: init up`, `basalt-linux: cpus online N` and
//! `basalt-linux: uptime SECONDS`, then starts an interactive shell with job
//! control on the console, prompt `linux# ` (or, when the kernel command line
//! holds `basalt.bench`, powers off a second later: `cargo xtask bench linux`). An
//! initrd whose `/init` is not this file's [`INIT`] is made again.

use crate::packages;
use crate::util::{self, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The asset names `linux:NAME` accepts.
pub const NAMES: [&str; 6] = [
    "vmlinux",
    "bzImage",
    "initrd",
    "installer-linux",
    "installer-initrd",
    "installer-vmlinux",
];

/// The meta package whose dependency is the current kernel package.
const KERNEL_META: &str = "linux-image-amd64";
/// The package with a statically linked busybox.
pub const BUSYBOX: &str = "busybox-static";
/// The Debian 12 installer's netboot images.
const INSTALLER: &str = "debian-installer-12-netboot-amd64";
/// Where the installer package keeps its text-mode kernel and initrd.
const INSTALLER_DIR: &str = "usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64";

/// The XZ stream header magic.
pub const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry point note.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 0x12;

/// The directory with the assets (`target/linux`).
pub fn dir() -> PathBuf {
    util::target_dir().join("linux")
}

/// The file name of asset `name` in [`dir`], if `name` is one of [`NAMES`].
pub fn file_name(name: &str) -> Option<&'static str> {
    match name {
        "vmlinux" => Some("vmlinux"),
        "bzImage" => Some("bzImage"),
        "initrd" => Some("initrd"),
        "installer-linux" => Some("installer-linux"),
        "installer-initrd" => Some("installer-initrd.gz"),
        "installer-vmlinux" => Some("installer-vmlinux"),
        _ => None,
    }
}

/// Where asset `name` is (built or not), if `name` is one of [`NAMES`].
pub fn path(name: &str) -> Option<PathBuf> {
    file_name(name).map(|f| dir().join(f))
}

/// Builds asset `name` if its file is missing; returns its path.
pub fn ensure(name: &str) -> Result<PathBuf> {
    let path = path(name).ok_or_else(|| {
        format!(
            "linux:{name} is not a Linux test asset (there are: {})",
            NAMES.join(", ")
        )
    })?;
    if path.is_file() && is_current(name, &path) {
        return Ok(path);
    }
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    match name {
        "bzImage" => build_bzimage(&dir)?,
        "vmlinux" => {
            let bzimage = ensure("bzImage")?;
            util::step("extracting vmlinux from the bzImage", || {
                build_vmlinux(&bzimage, &path, &dir.join("work"))
            })?;
        }
        "installer-vmlinux" => {
            let bzimage = ensure("installer-linux")?;
            util::step(
                "extracting installer-vmlinux from the installer's kernel",
                || build_vmlinux(&bzimage, &path, &dir.join("work")),
            )?;
        }
        "initrd" => util::step("making the busybox initramfs", || build_initrd(&dir))?,
        _ => build_installer(&dir)?,
    }
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "made linux:{name}, but {} is missing",
            path.display()
        ))
    }
}

/// Whether the existing file of asset `name` is up to date. The initrd is
/// an uncompressed cpio, so it holds `/init` verbatim: one made with another
/// [`INIT`] is stale. The other assets change only with Debian's packages.
fn is_current(name: &str, path: &Path) -> bool {
    name != "initrd" || std::fs::read(path).is_ok_and(|data| holds_init(&data))
}

/// Whether `initrd` holds this [`INIT`].
fn holds_init(initrd: &[u8]) -> bool {
    initrd.windows(INIT.len()).any(|w| w == INIT.as_bytes())
}

/// Builds every asset that is missing; returns `(name, path)` pairs.
pub fn ensure_all() -> Result<Vec<(&'static str, PathBuf)>> {
    NAMES
        .iter()
        .map(|&name| ensure(name).map(|p| (name, p)))
        .collect()
}

/// `cargo xtask linux-assets`: builds the assets and prints their paths.
pub fn cmd_assets() -> Result {
    let assets = ensure_all()?;
    if let Ok(version) = std::fs::read_to_string(dir().join("kernel-version")) {
        println!("kernel {}", version.trim());
    }
    for (name, path) in assets {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!("linux:{name:<17} {} ({size} bytes)", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Fetching Debian packages.

/// What to do when the packages cannot be fetched here.
fn fetch_help() -> String {
    format!(
        "the Linux test assets are made from the Debian 12 packages that {KERNEL_META} depends on \
         (linux-image-VERSION-amd64: apt-cache depends {KERNEL_META}), {BUSYBOX} and {INSTALLER}, \
         fetched with apt-get download. On Debian 12 run as root: apt-get update && \
         cargo xtask linux-assets; or make them on such a machine and copy its target/linux/ to {}",
        dir().display()
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `cmd` and returns its standard output, or an error with its
/// standard error.
fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", util::describe(cmd)))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            util::describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `attempt`; if it fails and we are root, runs `apt-get update` once
/// (the package lists may be missing or old) and tries again.
fn with_apt_update<T>(mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    match attempt() {
        Ok(v) => Ok(v),
        Err(first) if is_root() && packages::apt_update_once()? => {
            attempt().map_err(|e| format!("{e} (also before apt-get update: {first})"))
        }
        Err(e) => Err(e),
    }
}

/// Makes sure apt-get and the unpacking tools are here.
fn check_tools() -> Result {
    if util::which("apt-get").is_none() || util::which("apt-cache").is_none() {
        return Err(format!("this machine has no apt-get: {}", fetch_help()));
    }
    packages::ensure(packages::LINUX_TOOLS, "making the Linux test assets")
}

/// The kernel package `linux-image-amd64` depends on, from `apt-cache
/// depends` output.
pub fn kernel_package(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let rest = line
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?;
        let name = rest.trim();
        (name.starts_with("linux-image-") && name != KERNEL_META && !name.starts_with('<'))
            .then(|| name.to_string())
    })
}

fn resolve_kernel_package() -> Result<String> {
    with_apt_update(|| {
        let out = capture(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
        kernel_package(&out)
            .ok_or_else(|| format!("apt-cache depends {KERNEL_META} names no linux-image package"))
    })
}

/// Downloads and unpacks `package` under `work`; returns the directory it
/// was unpacked in.
pub fn fetch(package: &str, work: &Path) -> Result<PathBuf> {
    let debs = work.join("debs");
    let root = work.join("root").join(package);
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    if root.join(".unpacked").is_file() {
        return Ok(root);
    }
    std::fs::create_dir_all(&debs).map_err(|e| io(&debs, e))?;
    let find_deb = || -> Option<PathBuf> {
        let prefix = format!("{package}_");
        std::fs::read_dir(&debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && n.ends_with(".deb")
                })
            })
            .max()
    };
    let deb = match find_deb() {
        Some(deb) => deb,
        None => {
            util::step(&format!("apt-get download {package}"), || {
                with_apt_update(|| {
                    capture(
                        Command::new("apt-get")
                            .args(["-q", "download", package])
                            .current_dir(&debs),
                    )
                    .map(drop)
                })
                .map_err(|e| format!("{e}\n{}", fetch_help()))
            })?;
            find_deb().ok_or_else(|| {
                format!(
                    "apt-get download {package} succeeded but left no {package}_*.deb in {}",
                    debs.display()
                )
            })?
        }
    };
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| io(&root, e))?;
    }
    std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let version = capture(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Version"),
    )?;
    std::fs::write(root.join(".unpacked"), version.trim()).map_err(|e| io(&root, e))?;
    Ok(root)
}

/// Removes an unpacked package tree once the assets are made from it.
pub fn discard(root: &Path) {
    let _ = std::fs::remove_dir_all(root);
}

/// Copies `from` to `to` through a temporary file, so that an interrupted
/// copy never looks like a finished asset.
fn copy_into_place(from: &Path, to: &Path) -> Result {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp)
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))
}

fn write_into_place(to: &Path, data: &[u8]) -> Result {
    let tmp = to.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))
}

// ---------------------------------------------------------------------------
// The kernel.

fn build_bzimage(dir: &Path) -> Result {
    check_tools()?;
    let kernel = resolve_kernel_package().map_err(|e| format!("{e}\n{}", fetch_help()))?;
    let work = dir.join("work");
    let root = fetch(&kernel, &work)?;
    let boot = root.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .map_err(|e| format!("{kernel} has no /boot: {e}"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| format!("{kernel} has no /boot/vmlinuz-*"))?;
    copy_into_place(&vmlinuz, &dir.join("bzImage"))?;
    let version = std::fs::read_to_string(root.join(".unpacked")).unwrap_or_default();
    let release = vmlinuz
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_string()
        })
        .unwrap_or_default();
    let _ = std::fs::write(
        dir.join("kernel-version"),
        format!("{release} ({kernel} {version})\n"),
    );
    discard(&root);
    Ok(())
}

/// Every offset in `data` where an XZ stream header magic starts.
pub fn xz_offsets(data: &[u8]) -> Vec<usize> {
    data.windows(XZ_MAGIC.len())
        .enumerate()
        .filter(|(_, w)| *w == XZ_MAGIC)
        .map(|(i, _)| i)
        .collect()
}

/// Decompresses the XZ payload of `bzimage` into the ELF `out`.
///
/// Debian builds its kernels with `CONFIG_KERNEL_XZ=y`: the bzImage holds
/// one XZ stream (x86 BCJ filter, CRC32 check) followed by other data. It
/// is decompressed with the `xz` command from xz-utils, whose
/// `--single-stream` stops at the end of the first stream and ignores what
/// follows: xz-utils is the reference XZ implementation, it is on every
/// Debian machine (dpkg and apt themselves use liblzma), and it keeps xtask
/// free of a decompression crate.
fn build_vmlinux(bzimage: &Path, out: &Path, work: &Path) -> Result {
    packages::ensure(packages::LINUX_TOOLS, "extracting vmlinux")?;
    let data = std::fs::read(bzimage).map_err(|e| format!("{}: {e}", bzimage.display()))?;
    let offsets = xz_offsets(&data);
    if offsets.is_empty() {
        return Err(format!(
            "{} holds no XZ stream (magic FD 37 7A 58 5A 00): not a kernel built with CONFIG_KERNEL_XZ",
            bzimage.display()
        ));
    }
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    let payload = work.join("payload.xz");
    let tmp = out.with_extension("tmp");
    let mut failures = Vec::new();
    // The first magic is the payload; a later one would only be tried if
    // the first were a chance match in the setup code.
    for offset in offsets {
        std::fs::write(&payload, &data[offset..])
            .map_err(|e| format!("{}: {e}", payload.display()))?;
        let file = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut cmd = Command::new("xz");
        cmd.args(["--decompress", "--stdout", "--single-stream"])
            .arg(&payload)
            .stdout(Stdio::from(file))
            .stderr(Stdio::piped());
        let result = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", util::describe(&cmd)))?;
        if !result.status.success() {
            failures.push(format!(
                "at offset {offset:#x}: xz: {}",
                String::from_utf8_lossy(&result.stderr).trim()
            ));
            continue;
        }
        let elf = std::fs::read(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        match pvh_entry(&elf) {
            Ok(entry) => {
                let _ = std::fs::remove_file(&payload);
                std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
                eprintln!(
                    "    XZ stream at offset {offset:#x} of the bzImage: ELF64 of {} bytes, PVH entry {entry:#x}",
                    elf.len()
                );
                return Ok(());
            }
            Err(e) => failures.push(format!("at offset {offset:#x}: {e}")),
        }
    }
    let _ = std::fs::remove_file(&payload);
    let _ = std::fs::remove_file(&tmp);
    Err(format!(
        "no XZ stream in {} decompresses to a PVH kernel ELF: {}",
        bzimage.display(),
        failures.join("; ")
    ))
}

fn le16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn le32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn le64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// The `XEN_ELFNOTE_PHYS32_ENTRY` value in a block of ELF notes.
fn find_phys32_entry(notes: &[u8]) -> Option<u64> {
    let align = |n: usize| n.div_ceil(4) * 4;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let namesz = le32(notes, at)? as usize;
        let descsz = le32(notes, at + 4)? as usize;
        let kind = le32(notes, at + 8)?;
        let name = notes.get(at + 12..at + 12 + namesz)?;
        let desc_at = at + 12 + align(namesz);
        let desc = notes.get(desc_at..desc_at + descsz)?;
        if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
            return match descsz {
                4 => le32(desc, 0).map(u64::from),
                8 => le64(desc, 0),
                _ => None,
            };
        }
        at = desc_at + align(descsz);
    }
    None
}

/// Checks that `elf` is an x86-64 ELF64 with a Xen `PHYS32_ENTRY` note (in
/// a `PT_NOTE` segment or an `SHT_NOTE` section); returns the entry.
pub fn pvh_entry(elf: &[u8]) -> Result<u64> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) || le16(elf, 18) != Some(62) {
        return Err("not a little-endian x86-64 ELF64".into());
    }
    let bad = || "truncated ELF headers".to_string();
    let table = |off_at: usize, size_at: usize, num_at: usize| -> Result<Vec<usize>> {
        let off = le64(elf, off_at).ok_or_else(bad)? as usize;
        let size = le16(elf, size_at).ok_or_else(bad)? as usize;
        let num = le16(elf, num_at).ok_or_else(bad)? as usize;
        Ok((0..num).map(|i| off + i * size).collect())
    };
    let notes_at = |off: Option<u64>, size: Option<u64>| -> Option<&[u8]> {
        let off = usize::try_from(off?).ok()?;
        let size = usize::try_from(size?).ok()?;
        elf.get(off..off.checked_add(size)?)
    };
    // Program headers: p_type at 0 (PT_NOTE = 4), p_offset at 8, p_filesz at 0x20.
    let segments = table(0x20, 0x36, 0x38)?
        .into_iter()
        .filter(|&ph| le32(elf, ph) == Some(4))
        .map(|ph| (le64(elf, ph + 8), le64(elf, ph + 0x20)));
    // Section headers: sh_type at 4 (SHT_NOTE = 7), sh_offset at 0x18, sh_size at 0x20.
    let sections = table(0x28, 0x3A, 0x3C)?
        .into_iter()
        .filter(|&sh| le32(elf, sh + 4) == Some(7))
        .map(|sh| (le64(elf, sh + 0x18), le64(elf, sh + 0x20)));
    if let Some(entry) = segments
        .chain(sections)
        .find_map(|(off, size)| notes_at(off, size).and_then(find_phys32_entry))
    {
        return Ok(entry);
    }
    Err(format!(
        "an ELF64 without the Xen note XEN_ELFNOTE_PHYS32_ENTRY (type {XEN_ELFNOTE_PHYS32_ENTRY:#x}): not a PVH kernel (CONFIG_PVH)"
    ))
}

// ---------------------------------------------------------------------------
// The initramfs.

/// A newc ("070701") cpio archive, written in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    data: Vec<u8>,
    next_ino: u32,
}

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn pad4(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    /// One entry: the 110-byte header, the name (NUL-terminated, padded to
    /// 4 bytes), the data (padded to 4 bytes). Owner root, mtime 0.
    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let ino = if name == "TRAILER!!!" {
            0
        } else {
            self.next_ino
        };
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        for field in fields {
            let _ = write!(header, "{field:08X}");
        }
        self.data.extend_from_slice(header.as_bytes());
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad4();
        self.data.extend_from_slice(data);
        self.pad4();
    }

    /// A directory (`name` without a leading `/`).
    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, S_IFDIR | perm, 2, (0, 0), &[]);
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, 1, (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, 1, (major, minor), &[]);
    }

    /// The archive with its `TRAILER!!!` entry.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.data
    }
}

/// The initramfs' `/init`.
pub const INIT: &str = r#"#!/bin/sh
# Basalt's Linux test initramfs (made by `cargo xtask`, xtask/src/linux.rs).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox mount -t proc proc /proc
[ -e /bin/mount ] || /bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "basalt-linux: init up"
n=0
if read online < /sys/devices/system/cpu/online; then
    IFS=,
    for r in $online; do
        case $r in
            *-*) n=$((n + ${r#*-} - ${r%-*} + 1)) ;;
            *) n=$((n + 1)) ;;
        esac
    done
    unset IFS
fi
[ "$n" -gt 0 ] || n=$(nproc)
echo "basalt-linux: cpus online $n"
read up idle < /proc/uptime
echo "basalt-linux: uptime $up"
read -r cmdline < /proc/cmdline
# The benchmark powers off at once, after the UART has sent the lines.
case " $cmdline " in *" basalt.bench "*) sleep 1; poweroff -f ;; esac
export PS1='linux# '
exec setsid cttyhack /bin/sh
"#;

/// The initramfs: `busybox` (a static binary), the symbolic links named in
/// `applets` (`busybox --list-full` output: `bin/sh`, `sbin/poweroff`, ...)
/// and `/init`.
pub fn initramfs(busybox: &[u8], applets: &str) -> Vec<u8> {
    let mut cpio = Cpio::new();
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "etc", "root",
    ] {
        cpio.dir(dir, 0o755);
    }
    cpio.dir("tmp", 0o1777);
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/ttyS0", 0o660, 4, 64);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    busybox_links(&mut cpio, busybox, applets, &[]);
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.finish()
}

/// `/bin/busybox` and a symbolic link to it for each applet `applets`
/// names (`busybox --list-full` output) in `bin/`, `sbin/`, `usr/bin/` or
/// `usr/sbin/`, and `bin/sh` always; not the paths in `except` (files of
/// the initramfs's own).
pub fn busybox_links(cpio: &mut Cpio, busybox: &[u8], applets: &str, except: &[&str]) {
    cpio.file("bin/busybox", 0o755, busybox);
    let mut links: Vec<&str> = applets
        .lines()
        .map(|l| l.trim().trim_start_matches('/'))
        .filter(|l| {
            !l.is_empty()
                && *l != "bin/busybox"
                && !except.contains(l)
                && ["bin/", "sbin/", "usr/bin/", "usr/sbin/"]
                    .iter()
                    .any(|d| l.strip_prefix(d).is_some_and(|n| !n.contains('/')))
        })
        .collect();
    if !links.contains(&"bin/sh") {
        links.push("bin/sh");
    }
    links.sort_unstable();
    links.dedup();
    for link in links {
        cpio.symlink(link, "/bin/busybox");
    }
}

fn build_initrd(dir: &Path) -> Result {
    check_tools()?;
    let root = fetch(BUSYBOX, &dir.join("work"))?;
    let busybox_path = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{BUSYBOX} has no bin/busybox"))?;
    let busybox =
        std::fs::read(&busybox_path).map_err(|e| format!("{}: {e}", busybox_path.display()))?;
    // The applet list from the static binary itself; if it cannot run
    // here, /init installs the links at boot (`busybox --install -s`).
    let applets =
        util::output(Command::new(&busybox_path).arg("--list-full")).unwrap_or_else(|| {
            eprintln!(
                "    cannot run {} --list-full here: /init will install the applet links",
                busybox_path.display()
            );
            String::new()
        });
    write_into_place(&dir.join("initrd"), &initramfs(&busybox, &applets))?;
    discard(&root);
    Ok(())
}

// ---------------------------------------------------------------------------
// The Debian installer.

fn build_installer(dir: &Path) -> Result {
    check_tools()?;
    let root = fetch(INSTALLER, &dir.join("work"))?;
    let images = root.join(INSTALLER_DIR);
    copy_into_place(&images.join("linux"), &dir.join("installer-linux"))?;
    copy_into_place(&images.join("initrd.gz"), &dir.join("installer-initrd.gz"))?;
    discard(&root);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed newc entry: (name, mode, nlink, rdevmajor, rdevminor, data).
    type Entry = (String, u32, u32, u32, u32, Vec<u8>);

    fn parse_newc(mut data: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut offset = 0;
        loop {
            assert_eq!(offset % 4, 0, "entry at an unaligned offset");
            assert_eq!(&data[..6], b"070701", "bad magic at {offset}");
            let field = |i: usize| {
                let text = std::str::from_utf8(&data[6 + i * 8..6 + i * 8 + 8]).expect("ascii");
                u32::from_str_radix(text, 16).expect("hex")
            };
            let (mode, nlink, size, rmaj, rmin, namesize) =
                (field(1), field(4), field(6), field(9), field(10), field(11));
            let name_end = 110 + namesize as usize;
            assert_eq!(data[name_end - 1], 0, "name not NUL-terminated");
            let name = String::from_utf8(data[110..name_end - 1].to_vec()).expect("utf-8");
            let data_at = name_end.div_ceil(4) * 4;
            let body = data[data_at..data_at + size as usize].to_vec();
            let next = (data_at + size as usize).div_ceil(4) * 4;
            offset += next;
            data = &data[next..];
            if name == "TRAILER!!!" {
                assert!(data.is_empty(), "data after the trailer");
                return entries;
            }
            entries.push((name, mode, nlink, rmaj, rmin, body));
        }
    }

    #[test]
    fn cpio_entries_round_trip() {
        let mut cpio = Cpio::new();
        cpio.dir("dev", 0o755);
        cpio.char_dev("dev/console", 0o600, 5, 1);
        cpio.file("a", 0o644, b"hello");
        cpio.file("bb", 0o755, b"1234");
        cpio.symlink("bin/sh", "/bin/busybox");
        let data = cpio.finish();
        assert_eq!(data.len() % 4, 0);
        // The first header, field by field.
        assert_eq!(
            std::str::from_utf8(&data[..110]).expect("ascii"),
            "070701\
             00000001000041ED000000000000000000000002000000000000000000000000\
             00000000000000000000000000000004\
             00000000"
        );
        let entries = parse_newc(&data);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "a", "bb", "bin/sh"]);
        assert_eq!(entries[0].1, 0o040755);
        assert_eq!(entries[0].2, 2);
        assert_eq!(entries[1].1, 0o020600);
        assert_eq!((entries[1].3, entries[1].4), (5, 1));
        assert_eq!(entries[2].1, 0o100644);
        assert_eq!(entries[2].5, b"hello");
        assert_eq!(entries[3].5, b"1234");
        assert_eq!(entries[4].1, 0o120777);
        assert_eq!(entries[4].5, b"/bin/busybox");
    }

    #[test]
    fn cpio_empty_archive_is_a_trailer() {
        let data = Cpio::new().finish();
        assert!(parse_newc(&data).is_empty());
        assert_eq!(&data[110..121], b"TRAILER!!!\0");
    }

    #[test]
    fn initramfs_holds_busybox_links_devices_and_init() {
        let data = initramfs(
            b"\x7fELF-busybox",
            "/bin/busybox\nbin/sh\nsbin/poweroff\nusr/bin/setsid\nbin/ls\nweird/x\n../etc\n",
        );
        let entries = parse_newc(&data);
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.0 == name)
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert_eq!(find("bin/busybox").5, b"\x7fELF-busybox");
        for link in ["bin/sh", "sbin/poweroff", "usr/bin/setsid", "bin/ls"] {
            assert_eq!(find(link).1, 0o120777, "{link}");
        }
        assert!(!entries.iter().any(|e| e.0 == "weird/x" || e.0 == "../etc"));
        assert_eq!(
            entries.iter().filter(|e| e.0 == "bin/busybox").count(),
            1,
            "busybox is no link to itself"
        );
        let console = find("dev/console");
        assert_eq!((console.1, console.3, console.4), (0o020600, 5, 1));
        let tty = find("dev/ttyS0");
        assert_eq!((tty.3, tty.4), (4, 64));
        let null = find("dev/null");
        assert_eq!((null.3, null.4), (1, 3));
        for dir in ["dev", "proc", "sys", "tmp", "etc", "root"] {
            assert_eq!(find(dir).1 & 0o170000, S_IFDIR, "{dir}");
        }
        let init = find("init");
        assert_eq!(init.1, 0o100755);
        let text = std::str::from_utf8(&init.5).expect("utf-8");
        assert!(text.starts_with("#!/bin/sh\n"));
        assert!(text.contains("echo \"basalt-linux: init up\""));
        assert!(text.contains("PS1='linux# '"));
        assert!(text.contains("exec setsid cttyhack /bin/sh"));
        let bench = text.find("poweroff -f").expect("bench poweroff");
        assert!(text.find("echo \"basalt-linux: uptime $up\"") < Some(bench));
        // Parents come before what they hold.
        let pos = |name: &str| entries.iter().position(|e| e.0 == name);
        assert!(pos("usr/bin") < pos("usr/bin/setsid"));
        assert!(pos("dev") < pos("dev/console"));
    }

    #[test]
    fn an_initrd_with_another_init_is_stale() {
        let data = initramfs(b"bb", "");
        assert!(holds_init(&data));
        let old = INIT.replace("poweroff -f", "true");
        let mut stale = data.clone();
        let at = stale
            .windows(INIT.len())
            .position(|w| w == INIT.as_bytes())
            .expect("init in the archive");
        stale.splice(at..at + INIT.len(), old.bytes());
        assert!(!holds_init(&stale));
        assert!(!holds_init(b""));
    }

    #[test]
    fn initramfs_without_applet_list_still_has_sh() {
        let entries = parse_newc(&initramfs(b"bb", ""));
        assert!(
            entries
                .iter()
                .any(|e| e.0 == "bin/sh" && e.5 == b"/bin/busybox")
        );
    }

    #[test]
    fn xz_offsets_finds_every_magic() {
        assert!(xz_offsets(b"").is_empty());
        assert!(xz_offsets(&XZ_MAGIC[..5]).is_empty());
        assert_eq!(xz_offsets(&XZ_MAGIC), [0]);
        let mut image = vec![0u8; 0x4000];
        image[0x1F1] = 0x1D; // a setup header byte, no magic
        image[0x3000..0x3006].copy_from_slice(&XZ_MAGIC);
        image[0x3F00..0x3F06].copy_from_slice(&XZ_MAGIC);
        // Almost the magic (last byte differs): no match.
        image[0x100..0x106].copy_from_slice(&[0xFD, b'7', b'z', b'X', b'Z', 0x01]);
        assert_eq!(xz_offsets(&image), [0x3000, 0x3F00]);
        // The magic at the very end still counts.
        let mut tail = vec![1u8; 10];
        tail.extend_from_slice(&XZ_MAGIC);
        assert_eq!(xz_offsets(&tail), [10]);
    }

    /// A minimal ELF64 with one PT_NOTE segment holding `notes`.
    fn elf_with_notes(notes: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[6] = 1;
        elf[18..20].copy_from_slice(&62u16.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[0x38..0x3A].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        elf[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        elf[ph + 8..ph + 16].copy_from_slice(&(120u64).to_le_bytes());
        elf[ph + 0x20..ph + 0x28].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        elf.extend_from_slice(notes);
        elf
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n.extend_from_slice(desc);
        n.resize(n.len().div_ceil(4) * 4, 0);
        n
    }

    #[test]
    fn pvh_entry_reads_the_xen_note() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3]);
        notes.extend(note(b"Xen\0", 0x12, &0x0100_0abcu64.to_le_bytes()));
        assert_eq!(pvh_entry(&elf_with_notes(&notes)), Ok(0x0100_0abc));
        let four = note(b"Xen\0", 0x12, &0x2000u32.to_le_bytes());
        assert_eq!(pvh_entry(&elf_with_notes(&four)), Ok(0x2000));
        let other = note(b"Xen\0", 0x11, &[0; 8]);
        assert!(
            pvh_entry(&elf_with_notes(&other))
                .expect_err("no entry")
                .contains("PHYS32_ENTRY")
        );
        assert!(pvh_entry(b"MZ").is_err());
        let mut elf32 = elf_with_notes(&four);
        elf32[4] = 1;
        assert!(pvh_entry(&elf32).is_err());
        // A note running past the end of its segment is not read.
        let mut truncated = elf_with_notes(&four);
        truncated.truncate(truncated.len() - 4);
        assert!(pvh_entry(&truncated).is_err());
    }

    #[test]
    fn kernel_package_from_apt_cache_depends() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            kernel_package(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(kernel_package("linux-image-amd64\n"), None);
        let alt =
            "linux-image-amd64\n |Depends: linux-image-6.1.0-9-amd64\n  Depends: <linux-image-x>\n";
        assert_eq!(
            kernel_package(alt).as_deref(),
            Some("linux-image-6.1.0-9-amd64")
        );
        assert_eq!(
            kernel_package("x\n  Depends: <linux-image-virtual>\n"),
            None
        );
    }

    #[test]
    fn asset_names_map_to_files() {
        for name in NAMES {
            assert!(file_name(name).is_some(), "{name}");
        }
        assert_eq!(file_name("installer-initrd"), Some("installer-initrd.gz"));
        assert_eq!(file_name("installer-vmlinux"), Some("installer-vmlinux"));
        assert_eq!(file_name("vmlinuz"), None);
    }
}
