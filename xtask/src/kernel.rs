//! Building the hypervisor ELF.

use crate::toolchain::{self, TARGET};
use crate::util::{self, Result};
use std::path::PathBuf;
use std::process::Command;

/// A built hypervisor.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The ELF with symbols and debug information (for debuggers).
    pub elf: PathBuf,
    /// The same without debug information (for images: smaller, boots faster
    /// under Bochs).
    pub stripped: PathBuf,
}

/// Builds the hypervisor (always optimised: it runs under slow emulators).
pub fn build() -> Result<Kernel> {
    let toolchain = toolchain::find()?;
    eprintln!("==> toolchain: {}", toolchain.describe());
    let what = if toolchain.build_std {
        "building the hypervisor (and core/alloc from source on first build)"
    } else {
        "building the hypervisor"
    };
    util::step(what, || {
        let mut cmd = toolchain.cargo();
        cmd.current_dir(util::root())
            .args(["build", "--release", "--package", "basalt"])
            .args(toolchain.target_args())
            .env("BASALT_VERSION", util::git_version());
        util::run(&mut cmd)
    })?;
    let elf = util::target_dir().join(TARGET).join("release/basalt");
    if !elf.is_file() {
        return Err(format!(
            "the build succeeded but {} is missing",
            elf.display()
        ));
    }
    let stripped = util::target_dir().join("basalt/basalt.elf");
    std::fs::create_dir_all(stripped.parent().unwrap_or(&util::target_dir()))
        .map_err(|e| e.to_string())?;
    if util::which("strip").is_some() {
        util::run(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&stripped)
                .arg(&elf),
        )?;
    } else {
        std::fs::copy(&elf, &stripped).map_err(|e| e.to_string())?;
    }
    Ok(Kernel { elf, stripped })
}
