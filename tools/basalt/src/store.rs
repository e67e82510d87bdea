//! basaltd's store (docs/toolstack.md, "State"): per VM, `NAME.toml` (the
//! definition as given) and `NAME.state` (`stopped`, or `running ID`) in
//! one directory. Every write goes to `FILE.tmp`, is `fsync`ed, renamed
//! over the old file, and the directory is `fsync`ed: a crash at any point
//! leaves the old file or the new one, whole.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Where the daemon keeps its VMs.
pub const DIR: &str = "/var/lib/basalt/vms";

/// The directory of VM files.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir`, made (mode 0700) if missing.
    pub fn open(dir: &Path) -> Result<Store, String> {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}: cannot make the store", dir.display()))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// Where VM `name`'s definition is.
    pub fn definition_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.state"))
    }

    /// Every stored VM's name, sorted (`NAME.toml`; leftover `.tmp` files of
    /// an interrupted write are not VMs).
    pub fn names(&self) -> Result<Vec<String>, String> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".toml")
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// VM `name`'s definition, if it is stored.
    pub fn definition(&self, name: &str) -> Result<Option<String>, String> {
        let path = self.definition_path(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Stores a new VM's definition; its state starts as stopped.
    pub fn define(&self, name: &str, text: &str) -> Result<(), String> {
        self.set_state(name, None)?;
        write_atomic(&self.definition_path(name), text.as_bytes())
    }

    /// The domain VM `name` runs as, as last written (`None`: stopped).
    pub fn state(&self, name: &str) -> Option<u32> {
        let text = fs::read_to_string(self.state_path(name)).ok()?;
        text.trim().strip_prefix("running ")?.parse().ok()
    }

    /// Records VM `name` as running as `domain`, or stopped.
    pub fn set_state(&self, name: &str, domain: Option<u32>) -> Result<(), String> {
        let text = match domain {
            Some(id) => format!("running {id}\n"),
            None => "stopped\n".to_string(),
        };
        write_atomic(&self.state_path(name), text.as_bytes())
    }

    /// Forgets VM `name`: the definition first (so a crash in between
    /// leaves no VM, only a state file the next `define` overwrites).
    pub fn remove(&self, name: &str) -> Result<(), String> {
        for path in [self.definition_path(name), self.state_path(name)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        sync_dir(&self.dir)
    }
}

/// Writes `data` to `path` so that a crash leaves the old file or the new
/// one: `path.tmp`, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = write_temp(path, data)?;
    fs::rename(&tmp, path).map_err(|e| failed(path, &e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The first half of [`write_atomic`]: the data, durable, beside `path`.
fn write_temp(path: &Path, data: &[u8]) -> Result<PathBuf, String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    };
    write().map_err(|e| failed(&tmp, &e))?;
    Ok(tmp)
}

/// A failed write of the store, with the fix where the cause has a known
/// one (a full or read-only file system under `/var/lib/basalt`).
fn failed(path: &Path, e: &io::Error) -> String {
    let fix = match e.kind() {
        io::ErrorKind::StorageFull => {
            " (the store's file system is full: free space on the disk labelled basalt-state, \
             or `df /var/lib/basalt`; nothing was changed)"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            " (the store's file system is read-only, as ext4 makes itself after an error: \
             see dmesg, fsck the disk labelled basalt-state and reboot; nothing was changed)"
        }
        _ => "",
    };
    format!("{}: {e}{fix}", path.display())
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}: cannot make the store durable", dir.display()))
}

#[cfg(test)]
mod tests;
