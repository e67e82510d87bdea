//! Xen's Test Framework (XTF) built for Basalt's control domain
//! (docs/testing.md, "XTF as the control domain").
//!
//! XTF is never part of this repository: its source is copied from
//! `BASALT_XTF_SRC`, else from `../shared/third-party/xtf` beside the
//! repository, else cloned from [`UPSTREAM`], into `target/xtf/src`, and
//! built there with XTF's own Makefile, for the `hvm64` environment only
//! (each test's `test-hvm64-NAME` target). The kernels are copied to
//! `target/xtf/bin/test-hvm64-NAME`; a boot module `xtf:NAME` names one
//! (xtask/src/modules.rs). The names of the tests that have an `hvm64`
//! build are asked of XTF's Makefiles (their `TEST-ENVS`), not listed here.
//!
//! An XTF `hvm64` kernel is an ELF32 file (machine x86-64) with a
//! `XEN_ELFNOTE_PHYS32_ENTRY` note: Basalt's PVH loader boots it.

use crate::packages;
use crate::util::{self, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// XTF's public repository, cloned when no local copy is found.
pub const UPSTREAM: &str = "https://xenbits.xen.org/git-http/xtf.git";

/// The file in `target/xtf/src` that records where the copy came from.
const ORIGIN_FILE: &str = ".basalt-origin";

/// `target/xtf`.
pub fn dir() -> PathBuf {
    util::target_dir().join("xtf")
}

/// The kernel of test `name` (built or not): `target/xtf/bin/test-hvm64-NAME`.
pub fn path(name: &str) -> PathBuf {
    dir().join("bin").join(format!("test-hvm64-{name}"))
}

/// Where XTF's source comes from: `BASALT_XTF_SRC`, the shared copy beside
/// the repository, or `None` (clone [`UPSTREAM`]).
fn local_source() -> Result<Option<PathBuf>> {
    if let Some(dir) = std::env::var_os("BASALT_XTF_SRC") {
        let dir = PathBuf::from(dir);
        if !dir.join("build/gen.mk").is_file() {
            return Err(format!(
                "BASALT_XTF_SRC={} is not an XTF source tree (no build/gen.mk)",
                dir.display()
            ));
        }
        return Ok(Some(dir));
    }
    let shared = util::root().join("../shared/third-party/xtf");
    Ok(shared.join("build/gen.mk").is_file().then_some(shared))
}

/// Copies (or clones) XTF's source into `target/xtf/src` unless the copy
/// there came from the same place.
fn prepare_source(src: &Path) -> Result {
    let origin = match local_source()? {
        Some(dir) => dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .display()
            .to_string(),
        None => UPSTREAM.to_string(),
    };
    let recorded = std::fs::read_to_string(src.join(ORIGIN_FILE)).unwrap_or_default();
    if recorded.trim() == origin && src.join("build/gen.mk").is_file() {
        return Ok(());
    }
    if src.exists() {
        std::fs::remove_dir_all(src)
            .map_err(|e| format!("cannot remove {}: {e}", src.display()))?;
    }
    if origin == UPSTREAM {
        util::step(&format!("cloning XTF from {UPSTREAM}"), || {
            util::run(
                Command::new("git")
                    .args(["clone", "--depth", "1", UPSTREAM])
                    .arg(src),
            )
            .map_err(|e| {
                format!(
                    "{e}: XTF's source is needed for the XTF scenarios; set BASALT_XTF_SRC to \
                     an XTF checkout, or allow the clone"
                )
            })
        })?;
    } else {
        util::step(&format!("copying XTF from {origin}"), || {
            // `cp -a` keeps the times (make then rebuilds nothing twice);
            // the shared copy is read-only, the build writes beside it.
            util::run(Command::new("cp").arg("-a").arg(&origin).arg(src))?;
            util::run(Command::new("chmod").args(["-R", "u+w"]).arg(src))
        })?;
    }
    std::fs::write(src.join(ORIGIN_FILE), format!("{origin}\n"))
        .map_err(|e| format!("cannot write {}: {e}", src.join(ORIGIN_FILE).display()))
}

/// The tests with an `hvm64` build, sorted: XTF's Makefiles asked for
/// their `NAME` and `TEST-ENVS` (through the top Makefile, which exports
/// the variables the test Makefiles need).
fn hvm64_tests(src: &Path) -> Result<Vec<String>> {
    let goal = "basalt-envs: ; @set -e; for D in $(TESTS); do [ -e $$D/Makefile ] || continue; \
                $(MAKE) -s -C $$D --no-print-directory \
                --eval='basalt-envs: ; @echo $$(NAME) $$(TEST-ENVS)' basalt-envs; done";
    let out = Command::new("make")
        .current_dir(src)
        .args(["-s", "--no-print-directory", "--eval", goal, "basalt-envs"])
        .output()
        .map_err(|e| format!("cannot run make in {}: {e}", src.display()))?;
    if !out.status.success() {
        return Err(format!(
            "asking XTF's Makefiles for their environments failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut names = parse_envs(&String::from_utf8_lossy(&out.stdout));
    names.sort();
    if names.is_empty() {
        return Err(format!("XTF in {} has no hvm64 test", src.display()));
    }
    Ok(names)
}

/// The names in `NAME ENV ENV...` lines whose environments hold `hvm64`.
fn parse_envs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            words.any(|w| w == "hvm64").then(|| name.to_string())
        })
        .collect()
}

/// Builds every `hvm64` test (make is incremental: a second run is quick)
/// and returns their names.
pub fn build() -> Result<Vec<String>> {
    packages::ensure(packages::XTF_TOOLS, "building XTF")?;
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let src = dir.join("src");
    prepare_source(&src)?;
    let names = hvm64_tests(&src)?;
    let targets: Vec<String> = names
        .iter()
        .map(|n| format!("tests/{n}/test-hvm64-{n}"))
        .collect();
    // One make that builds each test's hvm64 kernel in its directory.
    let goal = format!(
        "basalt-hvm64: ; @set -e; for N in {}; do $(MAKE) -s -C tests/$$N test-hvm64-$$N; done",
        names.join(" ")
    );
    util::step(
        &format!(
            "building {} XTF hvm64 tests in {}",
            names.len(),
            src.display()
        ),
        || {
            util::run(
                Command::new("make")
                    .current_dir(&src)
                    .args(["-s", "--no-print-directory", "-j2", "--eval"])
                    .arg(&goal)
                    .arg("basalt-hvm64"),
            )
        },
    )?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("cannot create {}: {e}", bin.display()))?;
    for (name, built) in names.iter().zip(&targets) {
        let from = src.join(built);
        let to = path(name);
        std::fs::copy(&from, &to)
            .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    Ok(names)
}

/// Makes sure XTF test `name` is built; returns its kernel.
pub fn ensure(name: &str) -> Result<PathBuf> {
    let kernel = path(name);
    if kernel.is_file() {
        return Ok(kernel);
    }
    let names = build()?;
    if !names.iter().any(|n| n == name) {
        return Err(format!(
            "xtf:{name} is not an XTF test with an hvm64 build (there are: {})",
            names.join(", ")
        ));
    }
    Ok(kernel)
}

/// Options of `cargo xtask xtf`.
#[derive(Debug, Clone)]
pub struct XtfOptions {
    /// The backend and FEP setting of every run.
    pub kind: basalt_tests::xtf::RunKind,
    /// Only tests whose name contains this.
    pub filter: Option<String>,
    /// Runs at once.
    pub jobs: usize,
}

/// `cargo xtask xtf`: boots every XTF `hvm64` test as the control domain
/// on one backend, prints a table of XTF's verdicts beside Xen's and the
/// ones `tests/xtf.toml` records, and fails if one differs from its record
/// (or a test has none).
pub fn cmd(options: &XtfOptions) -> Result {
    use basalt_tests::xtf;
    let table = xtf::Table::load(&xtf::table_path(&util::root()))?;
    let mut names = build()?;
    if let Some(filter) = &options.filter {
        names.retain(|n| n.contains(filter.as_str()));
    }
    if names.is_empty() {
        return Err("no XTF hvm64 test matches the filter".into());
    }
    let runs: Vec<_> = names
        .iter()
        .map(|n| {
            let expect = table.get(n).and_then(|t| t.expected(options.kind));
            xtf::run(n, options.kind, expect)
        })
        .collect();
    let results = crate::test::run_all(&runs, options.jobs)?;
    let backend = format!(
        "{}{}",
        options.kind.backend.name(),
        if options.kind.fep { " +fep" } else { "" }
    );
    println!();
    println!("XTF hvm64 tests as Basalt's control domain on {backend}");
    println!(
        "{:<24} {:<10} {:<10} {:<10} agrees",
        "test", "Xen 4.17", "recorded", "Basalt"
    );
    let mut differ = Vec::new();
    for (name, run) in names.iter().zip(&runs) {
        let Some((_, outcome)) = results.iter().find(|(s, _)| s.name == run.name) else {
            continue;
        };
        let log = basalt_tests::matcher::normalise(
            &std::fs::read(&outcome.serial_log).unwrap_or_default(),
        );
        let got = xtf::measured(&log);
        let entry = table.get(name);
        let recorded = entry.and_then(|t| t.expected(options.kind));
        let agrees = got.result().is_some() && got.result() == recorded && outcome.passed;
        if !agrees {
            differ.push(name.clone());
        }
        println!(
            "{:<24} {:<10} {:<10} {:<10} {}",
            name,
            entry.map_or("-", |t| t.xen.text()),
            recorded.map_or("-", |r| r.text()),
            got.text(),
            if agrees {
                "yes".to_string()
            } else {
                format!("NO ({})", outcome.detail)
            }
        );
    }
    println!(
        "{} tests, {} as recorded in tests/xtf.toml",
        names.len(),
        names.len() - differ.len()
    );
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} XTF test(s) differ from tests/xtf.toml on {backend}: {}",
            differ.len(),
            differ.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hvm64_names_from_make_output() {
        let text = "example pv64 pv32pae hvm64 hvm32pae hvm32pse hvm32\n\
                    fep hvm32\n\
                    xsa-170 hvm64\n\
                    \n\
                    pv-iopl pv64 pv32pae\n";
        assert_eq!(parse_envs(text), ["example", "xsa-170"]);
    }

    #[test]
    fn kernel_paths() {
        assert!(path("lm-ts").ends_with("xtf/bin/test-hvm64-lm-ts"));
    }
}
