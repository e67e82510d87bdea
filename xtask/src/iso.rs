//! GRUB rescue ISOs: BIOS (GRUB i386-pc) and UEFI (GRUB x86_64-efi on an EFI
//! system partition image) in one file, isohybrid so that it also boots from
//! a USB stick (docs/boot.md, "UEFI").

use crate::packages;
use crate::util::{self, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A boot module given as `'PATH ARGS'`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleArg {
    /// The file.
    pub path: PathBuf,
    /// Its command line.
    pub args: String,
}

impl ModuleArg {
    /// Parses `PATH [ARGS...]`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let (path, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        if path.is_empty() {
            return Err("--module needs 'PATH [ARGS]'".into());
        }
        Ok(Self {
            path: path.into(),
            args: args.trim().into(),
        })
    }
}

/// Which GRUB command loads the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Loader {
    /// `multiboot2`: the way to boot Basalt.
    Multiboot2,
    /// `multiboot`: only for the test that Basalt refuses it clearly.
    Multiboot1,
    /// `linux` and `initrd`: a plain Linux bzImage on the bare machine, no
    /// hypervisor (the bare half of `cargo xtask bench linux`). The kernel
    /// file is the bzImage, the command line the kernel's, and the modules
    /// (without arguments) are its initrds, in order.
    Linux,
}

impl Loader {
    /// Where the ISO keeps the kernel file.
    pub fn kernel_path(self) -> &'static str {
        match self {
            Self::Multiboot2 | Self::Multiboot1 => "/boot/basalt.elf",
            Self::Linux => "/boot/vmlinuz",
        }
    }
}

/// What goes into an ISO.
#[derive(Debug, Clone)]
pub struct IsoSpec<'a> {
    /// The hypervisor ELF (the bzImage with [`Loader::Linux`]).
    pub kernel: &'a Path,
    /// The hypervisor command line (the kernel's with [`Loader::Linux`]).
    pub cmdline: &'a str,
    /// Boot modules.
    pub modules: &'a [ModuleArg],
    /// Loader command.
    pub loader: Loader,
    /// GRUB menu timeout in seconds.
    pub timeout: u32,
}

/// Quotes one word for grub.cfg: single quotes keep everything literal.
fn grub_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// The grub.cfg text for `spec`, with modules stored as `names`.
pub fn grub_cfg(spec: &IsoSpec<'_>, names: &[String], version: &str) -> String {
    let mut cfg = String::new();
    cfg.push_str(
        "# Basalt boot menu (made by `cargo xtask iso`).\n\
         serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
         terminal_input serial console\n\
         terminal_output serial console\n",
    );
    let _ = writeln!(cfg, "set timeout={}", spec.timeout);
    let _ = writeln!(cfg, "set default=0\n");
    // `--nounzip`: a module reaches Basalt as the file it is. Without it
    // GRUB unpacks gzip and xz files itself, which inside an emulator
    // takes longer than the guest kernel unpacking the same initrd.
    let (kernel_cmd, module_cmd) = match spec.loader {
        Loader::Multiboot2 => ("multiboot2", "module2 --nounzip"),
        Loader::Multiboot1 => ("multiboot", "module --nounzip"),
        Loader::Linux => ("linux", "initrd"),
    };
    if spec.loader == Loader::Linux {
        let _ = writeln!(cfg, "menuentry 'Linux without Basalt ({version})' {{");
    } else {
        let _ = writeln!(cfg, "menuentry 'Basalt {version}' {{");
    }
    let _ = write!(cfg, "    {kernel_cmd} {}", spec.loader.kernel_path());
    for word in spec.cmdline.split_whitespace() {
        let _ = write!(cfg, " {}", grub_quote(word));
    }
    cfg.push('\n');
    if spec.loader == Loader::Linux {
        // One `initrd` command loads every file, concatenated.
        if !names.is_empty() {
            let _ = write!(cfg, "    {module_cmd}");
            for name in names {
                let _ = write!(cfg, " /boot/modules/{name}");
            }
            cfg.push('\n');
        }
        cfg.push_str("    boot\n}\n");
        return cfg;
    }
    for (module, name) in spec.modules.iter().zip(names) {
        let _ = write!(cfg, "    {module_cmd} /boot/modules/{name}");
        for word in module.args.split_whitespace() {
            let _ = write!(cfg, " {}", grub_quote(word));
        }
        cfg.push('\n');
    }
    cfg.push_str("    boot\n}\n");
    cfg
}

/// Builds an ISO at `out`, staging its files in `work`.
pub fn build(spec: &IsoSpec<'_>, work: &Path, out: &Path) -> Result {
    packages::ensure(packages::ISO_TOOLS, "making a bootable ISO")?;
    let io = |e: std::io::Error| format!("{}: {e}", work.display());
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(io)?;
    }
    std::fs::create_dir_all(work.join("boot/grub")).map_err(io)?;
    std::fs::create_dir_all(work.join("boot/modules")).map_err(io)?;
    if spec.loader == Loader::Linux
        && let Some(m) = spec.modules.iter().find(|m| !m.args.is_empty())
    {
        return Err(format!(
            "{}: an initrd for GRUB's `initrd` takes no arguments (got {:?})",
            m.path.display(),
            m.args
        ));
    }
    std::fs::copy(
        spec.kernel,
        work.join(spec.loader.kernel_path().trim_start_matches('/')),
    )
    .map_err(|e| format!("{}: {e}", spec.kernel.display()))?;
    let mut names = Vec::new();
    for (i, module) in spec.modules.iter().enumerate() {
        let path = if module.path.is_absolute() {
            module.path.clone()
        } else {
            util::root().join(&module.path)
        };
        let base: String = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{i}-{base}");
        std::fs::copy(&path, work.join("boot/modules").join(&name))
            .map_err(|e| format!("module {}: {e}", path.display()))?;
        names.push(name);
    }
    std::fs::write(
        work.join("boot/grub/grub.cfg"),
        grub_cfg(spec, &names, &util::git_version()),
    )
    .map_err(io)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(out)
        .arg(work)
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "grub-mkrescue failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_args() {
        let m = ModuleArg::parse("guest.elf name=t1 memory=16M").expect("ok");
        assert_eq!(m.path, PathBuf::from("guest.elf"));
        assert_eq!(m.args, "name=t1 memory=16M");
        assert_eq!(ModuleArg::parse("x").expect("ok").args, "");
        assert!(ModuleArg::parse("  ").is_err());
    }

    #[test]
    fn grub_cfg_quotes_words_and_lists_modules() {
        let modules = [ModuleArg::parse("a.elf name='x' $y").expect("ok")];
        let spec = IsoSpec {
            kernel: Path::new("k"),
            cmdline: "loglvl=debug bogus=$1",
            modules: &modules,
            loader: Loader::Multiboot2,
            timeout: 0,
        };
        let cfg = grub_cfg(&spec, &["0-a.elf".into()], "v1");
        assert!(
            cfg.contains("multiboot2 /boot/basalt.elf 'loglvl=debug' 'bogus=$1'\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains("module2 --nounzip /boot/modules/0-a.elf 'name='\\''x'\\''' '$y'\n"),
            "{cfg}"
        );
        assert!(cfg.contains("set timeout=0"));
        assert!(cfg.contains("serial --unit=0 --speed=115200"));
        let mb1 = IsoSpec {
            loader: Loader::Multiboot1,
            ..spec
        };
        assert!(grub_cfg(&mb1, &["0-a.elf".into()], "v1").contains("multiboot /boot/basalt.elf"));
    }

    #[test]
    fn grub_cfg_for_plain_linux_uses_linux_and_one_initrd_line() {
        let modules = [
            ModuleArg::parse("initrd").expect("ok"),
            ModuleArg::parse("extra.cpio").expect("ok"),
        ];
        let spec = IsoSpec {
            kernel: Path::new("bzImage"),
            cmdline: "console=ttyS0 quiet basalt.bench",
            modules: &modules,
            loader: Loader::Linux,
            timeout: 0,
        };
        let cfg = grub_cfg(&spec, &["0-initrd".into(), "1-extra.cpio".into()], "v1");
        assert!(
            cfg.contains(
                "    linux /boot/vmlinuz 'console=ttyS0' 'quiet' 'basalt.bench'\n\
                 \x20   initrd /boot/modules/0-initrd /boot/modules/1-extra.cpio\n\
                 \x20   boot\n}\n"
            ),
            "{cfg}"
        );
        assert!(!cfg.contains("multiboot"), "{cfg}");
        assert!(!cfg.contains("Basalt v1"), "{cfg}");
        let bare = IsoSpec {
            modules: &[],
            ..spec
        };
        assert!(!grub_cfg(&bare, &[], "v1").contains("initrd"));
    }
}
