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
