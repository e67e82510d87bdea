//! Boot-module paths: `guest:NAME` names a test guest from tests/guests.

use crate::guests::Guests;
use std::path::{Path, PathBuf};

/// Whether `path` is a `guest:NAME` reference.
pub fn is_guest(path: &Path) -> bool {
    path.to_string_lossy().starts_with("guest:")
}

/// The file a module path names: a built test guest for `guest:NAME`, the
/// path itself otherwise.
pub fn resolve(path: &Path, guests: Option<&Guests>) -> PathBuf {
    let text = path.to_string_lossy();
    match (text.strip_prefix("guest:"), guests) {
        (Some(name), Some(g)) => g.path(name),
        _ => path.to_path_buf(),
    }
}

/// Builds the test guests when any of `paths` is a `guest:NAME` reference.
pub fn guests_for<'a>(
    mut paths: impl Iterator<Item = &'a Path>,
) -> crate::util::Result<Option<Guests>> {
    if paths.any(is_guest) {
        crate::guests::build().map(Some)
    } else {
        Ok(None)
    }
}

/// `(path, args)` pairs as ISO modules, `guest:NAME` resolved.
pub fn module_args<'a>(
    modules: impl Iterator<Item = (&'a Path, &'a str)>,
    guests: Option<&Guests>,
) -> Vec<crate::iso::ModuleArg> {
    modules
        .map(|(path, args)| crate::iso::ModuleArg {
            path: resolve(path, guests),
            args: args.into(),
        })
        .collect()
}
