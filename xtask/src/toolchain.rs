//! Finding a Rust toolchain that builds for `x86_64-unknown-none`.
//!
//! In order of preference (docs/building.md):
//! 1. the toolchain `rust-toolchain.toml` selects (through rustup), when it
//!    has the prebuilt `x86_64-unknown-none` target: a plain build;
//! 2. the same toolchain with the `rust-src` component: `-Zbuild-std`;
//! 3. another toolchain with library sources, e.g. Debian's `rustc-web`,
//!    `cargo-web` and `rust-web-src` (`/usr/bin/rustc`): `-Zbuild-std`;
//! 4. asking rustup to add the target;
//! 5. installing Debian's toolchain with apt-get (root on Debian only).
//!
//! `BASALT_RUSTC` and `BASALT_CARGO` name a toolchain explicitly.

use crate::packages;
use crate::util::{self, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bare-metal target.
pub const TARGET: &str = "x86_64-unknown-none";

/// How the hypervisor gets built.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The cargo to run.
    pub cargo: PathBuf,
    /// The rustc it must use.
    pub rustc: PathBuf,
    /// The rustc's sysroot.
    pub sysroot: PathBuf,
    /// Whether `core` and `alloc` are built from source.
    pub build_std: bool,
    /// The linker and its rustc flavor.
    pub linker: (PathBuf, &'static str),
}

impl Toolchain {
    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, sysroot {}; {}; linker {})",
            util::output(Command::new(&self.rustc).arg("--version")).unwrap_or_default(),
            self.rustc.display(),
            self.sysroot.display(),
            if self.build_std {
                "core built from source"
            } else {
                "prebuilt target"
            },
            self.linker.0.display()
        )
    }

    /// A cargo command for this toolchain, with the target's flags set.
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.env("RUSTC", &self.rustc);
        // rustup's proxies would otherwise pick the toolchain from
        // rust-toolchain.toml for any nested rustc call.
        cmd.env_remove("RUSTC_WRAPPER");
        if self.build_std {
            // -Zbuild-std is unstable; this is how the Linux kernel builds
            // its Rust code with a stable compiler too.
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        let flags = [
            "-Crelocation-model=static".to_string(),
            format!("-Clinker={}", self.linker.0.display()),
            format!("-Clinker-flavor={}", self.linker.1),
            "-Cforce-frame-pointers=yes".to_string(),
        ];
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
        cmd
    }

    /// A `cargo check` command that runs clippy on the hypervisor with
    /// warnings denied, through the clippy-driver beside this rustc.
    pub fn clippy(&self) -> Result<Command> {
        let driver = self
            .rustc
            .parent()
            .map(|dir| dir.join("clippy-driver"))
            .filter(|d| d.is_file())
            .ok_or_else(|| {
                format!(
                    "no clippy-driver beside {}: install clippy (`rustup component add clippy`, \
                     or Debian's rust-web-clippy)",
                    self.rustc.display()
                )
            })?;
        let mut cmd = self.cargo();
        cmd.env("RUSTC_WORKSPACE_WRAPPER", driver)
            .env(
                "CLIPPY_ARGS",
                "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
            )
            .args(["check", "--release", "--package", "basalt"])
            .args(self.target_args());
        Ok(cmd)
    }

    /// The arguments that select the target (and build-std).
    pub fn target_args(&self) -> Vec<&'static str> {
        let mut args = vec!["--target", TARGET];
        if self.build_std {
            args.extend([
                "-Zbuild-std=core,alloc",
                "-Zbuild-std-features=compiler-builtins-mem",
            ]);
        }
        args
    }
}

fn sysroot(rustc: &Path) -> Option<PathBuf> {
    util::output(
        Command::new(rustc)
            .args(["--print", "sysroot"])
            .current_dir(util::root()),
    )
    .map(PathBuf::from)
}

fn has_prebuilt_target(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
}

fn has_library_source(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
}

/// GNU ld when present (every Linux machine with binutils), otherwise an
/// LLVM linker: rust-lld from any rustup toolchain, or ld.lld.
fn find_linker(sysroots: &[PathBuf]) -> Option<(PathBuf, &'static str)> {
    if let Some(path) = std::env::var_os("BASALT_LINKER").map(PathBuf::from) {
        let flavor = if path.to_string_lossy().contains("lld") {
            "gnu-lld"
        } else {
            "ld"
        };
        return Some((path, flavor));
    }
    if let Some(ld) = util::which("ld") {
        return Some((ld, "ld"));
    }
    for sysroot in sysroots {
        let lib = sysroot.join("lib/rustlib");
        for entry in std::fs::read_dir(&lib).into_iter().flatten().flatten() {
            let candidate = entry.path().join("bin/rust-lld");
            if candidate.is_file() {
                return Some((candidate, "gnu-lld"));
            }
        }
    }
    util::which("ld.lld").map(|p| (p, "gnu-lld"))
}

fn cargo_beside(rustc: &Path) -> PathBuf {
    rustc
        .parent()
        .map(|dir| dir.join("cargo"))
        .filter(|c| c.is_file())
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

fn candidates() -> Vec<(PathBuf, PathBuf)> {
    let mut list = Vec::new();
    if let Some(rustc) = std::env::var_os("BASALT_RUSTC").map(PathBuf::from) {
        let cargo = std::env::var_os("BASALT_CARGO")
            .map(PathBuf::from)
            .unwrap_or_else(|| cargo_beside(&rustc));
        list.push((rustc, cargo));
        return list;
    }
    // The toolchain rust-toolchain.toml selects: rustc from PATH (a rustup
    // proxy or a plain install) with the cargo that runs xtask.
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| "cargo".into());
    if let Some(rustc) = util::which("rustc") {
        list.push((rustc, cargo));
    }
    // Distribution toolchains with library sources.
    for rustc in ["/usr/bin/rustc", "/usr/local/bin/rustc"] {
        let rustc = PathBuf::from(rustc);
        if rustc.is_file() && !list.iter().any(|(r, _)| *r == rustc) {
            let cargo = cargo_beside(&rustc);
            list.push((rustc, cargo));
        }
    }
    list
}

fn detect() -> Option<Toolchain> {
    let found: Vec<(PathBuf, PathBuf, PathBuf)> = candidates()
        .into_iter()
        .filter_map(|(rustc, cargo)| sysroot(&rustc).map(|s| (rustc, cargo, s)))
        .collect();
    let sysroots: Vec<PathBuf> = found.iter().map(|(_, _, s)| s.clone()).collect();
    let linker = find_linker(&sysroots)?;
    let pick = |build_std: bool| {
        found.iter().find_map(|(rustc, cargo, sysroot)| {
            let ok = if build_std {
                has_library_source(sysroot)
            } else {
                has_prebuilt_target(sysroot)
            };
            ok.then(|| Toolchain {
                cargo: cargo.clone(),
                rustc: rustc.clone(),
                sysroot: sysroot.clone(),
                build_std,
                linker: linker.clone(),
            })
        })
    };
    pick(false).or_else(|| pick(true))
}

/// Finds (or installs) a toolchain for the hypervisor.
pub fn find() -> Result<Toolchain> {
    if let Some(toolchain) = detect() {
        return Ok(toolchain);
    }
    if util::which("rustup").is_some() && std::env::var_os("BASALT_RUSTC").is_none() {
        eprintln!(
            "==> no toolchain with the {TARGET} target or library sources; asking rustup to add the target"
        );
        let added = Command::new("rustup")
            .args(["target", "add", TARGET])
            .current_dir(util::root())
            .status()
            .is_ok_and(|s| s.success());
        if added && let Some(toolchain) = detect() {
            return Ok(toolchain);
        }
    }
    packages::ensure(
        packages::DEBIAN_RUST,
        "building Basalt for x86_64-unknown-none",
    )
    .map_err(|e| {
        format!(
            "{e}\nNo Rust toolchain here can build for {TARGET}. Either run \
                 `rustup target add {TARGET}` (needs network access to rustup's server), \
                 or on Debian 12 `apt-get install rustc-web cargo-web rust-web-src binutils`."
        )
    })?;
    detect().ok_or_else(|| {
        format!("Debian's Rust toolchain is installed but cannot build for {TARGET}; see docs/building.md")
    })
}
