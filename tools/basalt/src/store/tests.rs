use super::*;

/// A fresh directory under the system's temp directory.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("basalt-store-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn definitions_and_states_survive_a_reopen() {
    let dir = scratch("reopen");
    let store = Store::open(&dir).expect("opens");
    assert_eq!(store.names(), Ok(vec![]));
    store.define("web1", "name = \"web1\"\n").expect("defines");
    store.define("a", "name = \"a\"\n").expect("defines");
    assert_eq!(store.state("web1"), None);
    store.set_state("web1", Some(7)).expect("writes");
    drop(store);
    let store = Store::open(&dir).expect("reopens");
    assert_eq!(store.names(), Ok(vec!["a".to_string(), "web1".to_string()]));
    assert_eq!(
        store.definition("web1"),
        Ok(Some("name = \"web1\"\n".to_string()))
    );
    assert_eq!(store.state("web1"), Some(7));
    assert_eq!(store.state("a"), None);
    assert_eq!(store.definition("nosuch"), Ok(None));
    store.set_state("web1", None).expect("writes");
    assert_eq!(store.state("web1"), None);
    store.remove("web1").expect("removes");
    assert_eq!(store.names(), Ok(vec!["a".to_string()]));
    assert_eq!(store.definition("web1"), Ok(None));
    assert!(!dir.join("web1.state").exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_crash_between_the_temp_file_and_the_rename_leaves_the_old_file() {
    let dir = scratch("crash");
    let store = Store::open(&dir).expect("opens");
    store.define("vm", "old\n").expect("defines");
    store.set_state("vm", Some(3)).expect("writes");
    // The daemon dies after writing and syncing the temp files, before the
    // renames.
    write_temp(&store.definition_path("vm"), b"new\n").expect("temp");
    write_temp(&dir.join("vm.state"), b"stopped\n").expect("temp");
    drop(store);
    let store = Store::open(&dir).expect("reopens");
    assert_eq!(store.names(), Ok(vec!["vm".to_string()]), "no .tmp VM");
    assert_eq!(store.definition("vm"), Ok(Some("old\n".to_string())));
    assert_eq!(store.state("vm"), Some(3));
    // The next write replaces the leftover temp file and then the old one.
    write_atomic(&store.definition_path("vm"), b"newer\n").expect("writes");
    assert_eq!(store.definition("vm"), Ok(Some("newer\n".to_string())));
    assert!(!dir.join("vm.toml.tmp").exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_garbled_state_file_reads_as_stopped() {
    let dir = scratch("garbled");
    let store = Store::open(&dir).expect("opens");
    fs::write(dir.join("x.state"), "running many\n").expect("writes");
    assert_eq!(store.state("x"), None);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_is_named_with_the_fix_and_keeps_the_old_file() {
    let dir = scratch("full");
    let store = Store::open(&dir).expect("opens");
    store.define("a", "name = \"a\"\n").expect("defines");
    // The temp file is /dev/full: every write fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", dir.join("a.toml.tmp")).expect("symlink");
    let err = store.define("a", "name = \"a\"\nmemory = 8\n").unwrap_err();
    assert!(err.contains("a.toml.tmp: No space left on device"), "{err}");
    assert!(err.contains("the store's file system is full"), "{err}");
    assert_eq!(
        store.definition("a"),
        Ok(Some("name = \"a\"\n".to_string()))
    );
    let _ = fs::remove_dir_all(&dir);
}
