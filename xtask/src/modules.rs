//! Boot-module paths: `guest:NAME` names a test guest from tests/guests,
//! `linux:NAME` a Linux test asset (xtask/src/linux.rs: `vmlinux`,
//! `bzImage`, `initrd`, `installer-linux`, `installer-initrd`,
//! `installer-vmlinux`), `xtf:NAME` the `hvm64` kernel of XTF test NAME
//! (xtask/src/xtf.rs), `dom0:NAME` one of dom0's files (xtask/src/dom0.rs:
//! `initrd`, `basalt`). Any other path is a file (relative paths from the
//! repository root).

use crate::guests::Guests;
use std::path::{Path, PathBuf};

/// What the module paths of a run refer to, built.
#[derive(Debug, Clone, Default)]
pub struct Built {
    /// The test guests, when a path is a `guest:NAME` reference.
    pub guests: Option<Guests>,
}

/// Whether `path` is a `guest:NAME` reference.
pub fn is_guest(path: &Path) -> bool {
    path.to_string_lossy().starts_with("guest:")
}

/// The asset name of a `linux:NAME` reference.
fn linux_name(path: &Path) -> Option<String> {
    path.to_string_lossy()
        .strip_prefix("linux:")
        .map(str::to_string)
}

/// The test name of an `xtf:NAME` reference.
fn xtf_name(path: &Path) -> Option<String> {
    path.to_string_lossy()
        .strip_prefix("xtf:")
        .map(str::to_string)
}

/// The name of a `dom0:NAME` reference.
fn dom0_name(path: &Path) -> Option<String> {
    path.to_string_lossy()
        .strip_prefix("dom0:")
        .map(str::to_string)
}

/// The file a module path names: a built test guest for `guest:NAME`, a
/// Linux test asset for `linux:NAME`, an XTF kernel for `xtf:NAME`, one of
/// dom0's files for `dom0:NAME`, the path itself otherwise.
pub fn resolve(path: &Path, built: &Built) -> PathBuf {
    let text = path.to_string_lossy();
    if let (Some(name), Some(g)) = (text.strip_prefix("guest:"), &built.guests) {
        return g.path(name);
    }
    if let Some(name) = xtf_name(path) {
        return crate::xtf::path(&name);
    }
    if let Some(file) = dom0_name(path).and_then(|name| crate::dom0::path(&name)) {
        return file;
    }
    if let Some(asset) = linux_name(path).and_then(|name| crate::linux::path(&name)) {
        return asset;
    }
    path.to_path_buf()
}

/// Builds what `paths` refer to: the test guests when one is a
/// `guest:NAME` reference, each Linux test asset named by `linux:NAME`
/// (made only when its file is missing; an unknown NAME is an error), and
/// XTF when an `xtf:NAME` kernel is missing, and each of dom0's files
/// named by `dom0:NAME` (made when stale).
pub fn build_for<'a>(paths: impl Iterator<Item = &'a Path>) -> crate::util::Result<Built> {
    let mut guests = false;
    let mut linux: Vec<String> = Vec::new();
    let mut dom0: Vec<String> = Vec::new();
    for path in paths {
        guests |= is_guest(path);
        if let Some(name) = xtf_name(path) {
            crate::xtf::ensure(&name)?;
        }
        if let Some(name) = linux_name(path)
            && !linux.contains(&name)
        {
            linux.push(name);
        }
        if let Some(name) = dom0_name(path)
            && !dom0.contains(&name)
        {
            dom0.push(name);
        }
    }
    for name in &linux {
        crate::linux::ensure(name)?;
    }
    for name in &dom0 {
        crate::dom0::ensure(name)?;
    }
    Ok(Built {
        guests: if guests {
            Some(crate::guests::build()?)
        } else {
            None
        },
    })
}

/// `(path, args)` pairs as ISO modules, `guest:NAME` and `linux:NAME`
/// resolved.
pub fn module_args<'a>(
    modules: impl Iterator<Item = (&'a Path, &'a str)>,
    built: &Built,
) -> Vec<crate::iso::ModuleArg> {
    modules
        .map(|(path, args)| crate::iso::ModuleArg {
            path: resolve(path, built),
            args: args.into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_linux_assets_and_plain_paths() {
        let built = Built::default();
        assert_eq!(
            resolve(Path::new("linux:vmlinux"), &built),
            crate::linux::dir().join("vmlinux")
        );
        assert_eq!(
            resolve(Path::new("linux:installer-initrd"), &built),
            crate::linux::dir().join("installer-initrd.gz")
        );
        assert_eq!(
            resolve(Path::new("xtf:lm-ts"), &built),
            crate::xtf::path("lm-ts")
        );
        assert_eq!(
            resolve(Path::new("dom0:initrd"), &built),
            crate::dom0::dir().join("initrd")
        );
        assert_eq!(
            resolve(Path::new("a/b.elf"), &built),
            PathBuf::from("a/b.elf")
        );
        // Without built guests a guest: path stays as it is.
        assert_eq!(
            resolve(Path::new("guest:hello"), &built),
            PathBuf::from("guest:hello")
        );
        let guests = Built {
            guests: Some(Guests {
                dir: PathBuf::from("/g"),
            }),
        };
        assert_eq!(
            resolve(Path::new("guest:hello"), &guests),
            PathBuf::from("/g/hello")
        );
    }

    #[test]
    fn unknown_linux_asset_is_refused_before_building() {
        let err = build_for([Path::new("linux:vmlinuz")].into_iter()).expect_err("unknown");
        assert!(
            err.contains("linux:vmlinuz") && err.contains("bzImage"),
            "{err}"
        );
    }
}
