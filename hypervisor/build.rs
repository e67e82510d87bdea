//! Links the hypervisor with its linker script and stamps the version and
//! the build's description (`XENVER_compile_info`: compiler, user, host,
//! date).

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

    stamp_build_description();
}

/// The standard output of a command, if it succeeds and prints something.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `XENVER_compile_info` (hypervisor/lib/guest/src/xenver.rs): the compiler
/// cargo runs (`$RUSTC --version`), the user and host that built Basalt
/// and when (UTC; this script runs again when the checkout changes).
fn stamp_build_description() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let compiler = output(&rustc, &["--version"]).unwrap_or_else(|| "rustc".into());
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| output("id", &["-un"]))
        .unwrap_or_else(|| "unknown".into());
    let host = output("hostname", &[])
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let date =
        output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BASALT_BUILD_COMPILER={compiler}");
    println!("cargo:rustc-env=BASALT_BUILD_USER={user}");
    println!("cargo:rustc-env=BASALT_BUILD_HOST={host}");
    println!("cargo:rustc-env=BASALT_BUILD_DATE={date}");
}
