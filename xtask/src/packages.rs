//! Installing what a fresh machine lacks: emulators, image tools and, where
//! rustup cannot provide it, a Rust toolchain that can build for
//! `x86_64-unknown-none`.
//!
//! On a Debian-like machine where we are root, missing packages are
//! installed with apt-get, saying what and why. Elsewhere the exact command
//! to run is printed instead.

use crate::util::{self, Result};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// A file or program that a Debian package provides.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// A program name (looked up on PATH) or an absolute file path.
    pub what: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
}

const fn need(what: &'static str, package: &'static str) -> Need {
    Need { what, package }
}

/// Tools to make a GRUB rescue ISO that boots through BIOS and UEFI
/// (`grub-mkrescue` puts in every GRUB platform installed).
pub const ISO_TOOLS: &[Need] = &[
    need("grub-mkrescue", "grub-common"),
    need("/usr/lib/grub/i386-pc/multiboot2.mod", "grub-pc-bin"),
    need(
        "/usr/lib/grub/x86_64-efi/multiboot2.mod",
        "grub-efi-amd64-bin",
    ),
    need("xorriso", "xorriso"),
    need("mformat", "mtools"),
    need("strip", "binutils"),
];

/// QEMU for x86_64 (TCG and KVM).
pub const QEMU: &[Need] = &[need("qemu-system-x86_64", "qemu-system-x86")];

/// UEFI firmware for QEMU (scenarios with `firmware = "ovmf"`).
pub const OVMF: &[Need] = &[
    need(basalt_tests::emulator::OVMF_CODE, "ovmf"),
    need(basalt_tests::emulator::OVMF_VARS, "ovmf"),
];

/// Bochs with its BIOS images and a display library that runs headless.
pub const BOCHS: &[Need] = &[
    need("bochs-bin", "bochs"),
    need("/usr/share/bochs/BIOS-bochs-latest", "bochsbios"),
    need("/usr/share/vgabios/vgabios.bin", "vgabios"),
    need(
        "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_sdl2_gui.so.0.0.0",
        "bochs-sdl",
    ),
];

/// Debian's Rust toolchain with library sources (build-std), and a linker.
pub const DEBIAN_RUST: &[Need] = &[
    need("/usr/bin/rustc", "rustc-web"),
    need("/usr/bin/cargo", "cargo-web"),
    need(
        "/usr/lib/rustlib/src/rust/library/core/Cargo.toml",
        "rust-web-src",
    ),
    need("ld", "binutils"),
];

/// Unpacking Debian packages and the kernel's XZ payload (the Linux test
/// assets, xtask/src/linux.rs).
pub const LINUX_TOOLS: &[Need] = &[need("dpkg-deb", "dpkg"), need("xz", "xz-utils")];

/// Making the ext4 disk image of a scenario with `disk` (tests/src/devices.rs).
pub const DISK_TOOLS: &[Need] = &[need("/usr/sbin/mke2fs", "e2fsprogs")];

/// Building Xen's Test Framework with its own Makefile (xtask/src/xtf.rs).
pub const XTF_TOOLS: &[Need] = &[
    need("gcc", "gcc"),
    need("make", "make"),
    need("python3", "python3"),
    need("objcopy", "binutils"),
];

/// Clippy for the toolchain Debian provides (`cargo xtask lint`).
pub const DEBIAN_CLIPPY: &[Need] = &[need("/usr/bin/clippy-driver", "rust-web-clippy")];

fn present(need: &Need) -> bool {
    if need.what.starts_with('/') {
        Path::new(need.what).exists()
    } else {
        util::which(need.what).is_some()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Runs `apt-get update` if this run has not done it yet; returns whether it
/// ran now.
pub fn apt_update_once() -> Result<bool> {
    if APT_UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(false);
    }
    util::step("apt-get update", || {
        util::run(
            Command::new("apt-get")
                .args(["-q", "update"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    })?;
    Ok(true)
}

/// Makes sure everything in `needs` is present, installing the missing
/// packages when this machine allows it. `purpose` says what they are for.
pub fn ensure(needs: &[Need], purpose: &str) -> Result {
    let mut packages: Vec<&str> = needs
        .iter()
        .filter(|n| !present(n))
        .map(|n| n.package)
        .collect();
    packages.dedup();
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    let apt = util::which("apt-get").is_some();
    if !(apt && is_root()) {
        let how = if apt {
            format!("sudo apt-get install {list}")
        } else {
            format!(
                "install the packages that provide {list} (Debian names) with your package manager"
            )
        };
        return Err(format!(
            "{purpose} needs packages that are missing: {list}. Run: {how}"
        ));
    }
    util::step(&format!("installing {list} ({purpose})"), || {
        apt_update_once()?;
        util::run(
            Command::new("apt-get")
                .args(["-q", "-y", "install", "--no-install-recommends"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    })?;
    match needs.iter().find(|n| !present(n)) {
        Some(n) => Err(format!("installed {list}, but {} is still missing", n.what)),
        None => Ok(()),
    }
}
