//! Building the PVH test guests in tests/guests (docs/testing.md).
//!
//! Each `tests/guests/src/bin/<name>.rs` is one guest: a small `no_std` ELF
//! for `x86_64-unknown-none`, linked at 1 MiB with `tests/guests/guest.ld`
//! (through the crate's build.rs) and carrying the Xen PVH entry note. They
//! build into `target/guests` (their own target directory: other rustflags
//! than the hypervisor's), and the images without debug information go to
//! `target/guests/bin/<name>`.

use crate::toolchain::{self, TARGET};
use crate::util::{self, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The built test guests.
#[derive(Debug, Clone)]
pub struct Guests {
    /// The directory with one stripped ELF per guest binary
    /// (`target/guests/bin`).
    pub dir: PathBuf,
}

impl Guests {
    /// The ELF of guest `name` (e.g. `hello`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The guest crate, relative to the repository root.
const CRATE_DIR: &str = "tests/guests";

/// The guests' names: the file stems of `src/bin/*.rs`, sorted.
fn guest_names(crate_dir: &Path) -> Result<Vec<String>> {
    let bin_dir = crate_dir.join("src/bin");
    let entries = std::fs::read_dir(&bin_dir)
        .map_err(|e| format!("cannot list {}: {e}", bin_dir.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!("no test guests in {}", bin_dir.display()));
    }
    Ok(names)
}

/// Builds every test guest (release profile) and writes the images without
/// debug information to `target/guests/bin/<name>`.
pub fn build() -> Result<Guests> {
    let toolchain = toolchain::find()?;
    let root = util::root();
    let crate_dir = root.join(CRATE_DIR);
    let names = guest_names(&crate_dir)?;
    let target_dir = util::target_dir().join("guests");
    util::step("building the test guests", || {
        let mut cmd = toolchain.cargo();
        // The guests' own flags (the linker script comes from their
        // build.rs): statically linked at fixed addresses, by the linker the
        // hypervisor uses.
        let flags = [
            "-Crelocation-model=static".to_string(),
            format!("-Clinker={}", toolchain.linker.0.display()),
            format!("-Clinker-flavor={}", toolchain.linker.1),
        ];
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
            .current_dir(&root)
            .arg("build")
            .arg("--release")
            .arg("--manifest-path")
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .args(toolchain.target_args());
        util::run(&mut cmd)
    })?;

    let built = target_dir.join(TARGET).join("release");
    let dir = target_dir.join("bin");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let strip = util::which("strip");
    for name in &names {
        let elf = built.join(name);
        if !elf.is_file() {
            return Err(format!(
                "the guest build succeeded but {} is missing",
                elf.display()
            ));
        }
        let out = dir.join(name);
        if strip.is_some() {
            util::run(
                Command::new("strip")
                    .arg("--strip-debug")
                    .arg("-o")
                    .arg(&out)
                    .arg(&elf),
            )?;
        } else {
            std::fs::copy(&elf, &out)
                .map_err(|e| format!("cannot copy {} to {}: {e}", elf.display(), out.display()))?;
        }
    }
    build_flat_guests(&crate_dir, &dir)?;
    Ok(Guests { dir })
}

/// Assembles the flat real-mode guests in `tests/guests/real/*.S` (GNU as,
/// 16-bit code linked at 0x7C00 into a raw binary): guests started with
/// `boot=real` (docs/guests.md).
fn build_flat_guests(crate_dir: &Path, out: &Path) -> Result<()> {
    let src = crate_dir.join("real");
    let Ok(entries) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "S") {
            continue;
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let object = out.join(format!("{name}.o"));
        util::run(
            Command::new("as")
                .arg("--32")
                .arg("-o")
                .arg(&object)
                .arg(&path),
        )?;
        util::run(
            Command::new("ld")
                .args(["-m", "elf_i386", "-Ttext=0x7c00", "--oformat=binary", "-o"])
                .arg(out.join(&name))
                .arg(&object),
        )?;
        let _ = std::fs::remove_file(&object);
    }
    Ok(())
}
