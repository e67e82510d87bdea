//! Links the hypervisor with its linker script and stamps the version.

use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=0x1000");
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=-static");
    }
    println!("cargo:rerun-if-changed=linker.ld");

    // `git describe` when building from a checkout; the crate version otherwise.
    let version = std::env::var("BASALT_VERSION").ok().or_else(|| {
        let out = Command::new("git")
            .args(["describe", "--always", "--dirty", "--tags"])
            .current_dir(&dir)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    let version = version.unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BASALT_GIT_VERSION={version}");
    println!("cargo:rerun-if-env-changed=BASALT_VERSION");
    for path in ["../.git/HEAD", "../.git/index", "../.git/refs/tags"] {
        if std::path::Path::new(&dir).join(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
