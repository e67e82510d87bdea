//! `cargo xtask test`: host unit tests, then the boot scenarios in
//! `tests/scenarios/` under QEMU and Bochs, two at a time.

use crate::iso::{self, IsoSpec, Loader, ModuleArg};
use crate::packages;
use crate::util::{self, Result};
use basalt_tests::emulator::{Emulator, Firmware};
use basalt_tests::runner::{self, Outcome};
use basalt_tests::scenario::{self, Backend, Scenario};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Options of `cargo xtask test`.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Only scenarios whose name contains this.
    pub filter: Option<String>,
    /// Skip the host unit tests.
    pub no_unit: bool,
    /// Skip the boot scenarios.
    pub no_boot: bool,
    /// Scenarios run at once.
    pub jobs: usize,
}

/// Counts of passed and failed tests.
#[derive(Debug, Default, Clone)]
struct Tally {
    passed: usize,
    failed: usize,
    /// Boot-scenario runs per backend (`bochs-vmx 38, qemu 24, ...`).
    per_backend: String,
}

/// Runs everything; prints `N passed, N failed` last.
pub fn test(options: &TestOptions) -> Result {
    let mut total = Tally::default();
    let mut problems = Vec::new();
    if !options.no_unit {
        match util::step("host unit tests (cargo test)", unit_tests) {
            Ok(t) => {
                eprintln!(
                    "    host unit tests: {} passed, {} failed",
                    t.passed, t.failed
                );
                total.passed += t.passed;
                total.failed += t.failed;
                if t.failed > 0 {
                    problems.push("host unit tests failed".to_string());
                }
            }
            Err(e) => {
                total.failed += 1;
                problems.push(e);
            }
        }
    }
    if !options.no_boot {
        match scenarios(options) {
            Ok(t) => {
                total.passed += t.passed;
                total.failed += t.failed;
                total.per_backend = t.per_backend;
            }
            Err(e) => {
                total.failed += 1;
                problems.push(e);
            }
        }
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    if total.per_backend.is_empty() {
        println!("{} passed, {} failed", total.passed, total.failed);
    } else {
        println!(
            "{} passed, {} failed; boot runs per backend: {}",
            total.passed, total.failed, total.per_backend
        );
    }
    if total.failed > 0 {
        Err(format!("{} failed", total.failed))
    } else {
        Ok(())
    }
}

/// `cargo test` on the host crates, counting what its summaries report.
fn unit_tests() -> Result<Tally> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(util::root())
        .args(["test", "--workspace", "--color", "never"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let mut tally = Tally::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out)
            .lines()
            .map_while(std::result::Result::ok)
        {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .strip_suffix(word)?
                                .trim()
                                .rsplit(' ')
                                .next()?
                                .parse::<usize>()
                                .ok()
                        })
                        .unwrap_or(0)
                };
                tally.passed += count(" passed");
                tally.failed += count(" failed");
            }
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() && tally.failed == 0 {
        return Err(format!(
            "cargo test failed ({status}) before running its tests"
        ));
    }
    Ok(tally)
}

fn scenarios(options: &TestOptions) -> Result<Tally> {
    let dir = util::root().join("tests/scenarios");
    // One run per scenario and backend, named `NAME` or `NAME@BACKEND`:
    // `--filter @qemu-svm` takes every QEMU/SVM run. The XTF runs come from
    // their result table (`xtf-NAME@BACKEND`, tests/src/xtf.rs).
    let mut all = Scenario::load_dir(&dir)?;
    let xtf = basalt_tests::xtf::Table::load(&basalt_tests::xtf::table_path(&util::root()))?;
    let files: std::collections::BTreeSet<String> =
        all.iter().map(|s| s.scenario.clone()).collect();
    for run in xtf.ci_runs() {
        if files.contains(&run.scenario) {
            return Err(format!(
                "a scenario file is named {:?} like an XTF run of tests/xtf.toml",
                run.scenario
            ));
        }
        all.push(run);
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(filter) = &options.filter {
        all.retain(|s| s.name.contains(filter.as_str()));
    }
    if all.is_empty() {
        return Err("no boot scenario run matches the filter".into());
    }
    let results = run_all(&all, options.jobs)?;
    let passed = results.iter().filter(|(_, o)| o.passed).count();
    let failed = results.len() - passed;
    let per_backend = per_backend(&all);
    eprintln!(
        "    boot scenarios: {passed} passed, {failed} failed; runs per backend: {per_backend}"
    );
    for (_, o) in results.iter().filter(|(_, o)| !o.passed) {
        eprintln!(
            "    FAILED {}: {} (serial log {})",
            o.name,
            o.detail,
            o.serial_log.display()
        );
    }
    Ok(Tally {
        passed,
        failed,
        per_backend,
    })
}

/// Builds what `all` boots, then runs them, `jobs` at a time (longest
/// timeout first), printing each outcome; returns them in the order they
/// ended.
pub fn run_all(all: &[Scenario], jobs: usize) -> Result<Vec<(Scenario, Outcome)>> {
    if all.iter().any(|s| s.emulator != Emulator::Bochs) {
        packages::ensure(packages::QEMU, "the QEMU boot scenarios")?;
    }
    if all.iter().any(|s| s.firmware == Firmware::Ovmf) {
        packages::ensure(packages::OVMF, "the scenarios booting through UEFI (OVMF)")?;
    }
    if all.iter().any(|s| s.emulator == Emulator::Bochs) {
        packages::ensure(packages::BOCHS, "the Bochs boot scenarios")?;
    }
    if all.iter().any(|s| s.disk.is_some()) {
        packages::ensure(packages::DISK_TOOLS, "the scenarios with a disk")?;
    }
    // The modules, and the files a disk copies from the same kind of path.
    let built = crate::modules::build_for(all.iter().flat_map(|s| {
        let assets = s.disk.iter().flat_map(|d| d.assets.values());
        s.modules
            .iter()
            .map(|m| m.path.as_path())
            .chain(assets.map(|p| p.as_path()))
    }))?;
    let kernel = crate::kernel::build()?;
    let out_dir = util::target_dir().join("test-logs");
    let iso_dir = util::target_dir().join("test-iso");

    // One ISO per distinct (command line, modules, loader), shared by the
    // scenarios that boot the same thing.
    let mut isos: HashMap<(String, Vec<ModuleArg>, Loader), PathBuf> = HashMap::new();
    let mut plan = Vec::new();
    util::step(
        &format!("making boot ISOs for {} scenarios", all.len()),
        || {
            for s in all {
                let modules = crate::modules::module_args(
                    s.modules
                        .iter()
                        .map(|m| (m.path.as_path(), m.args.as_str())),
                    &built,
                );
                let loader = match s.loader {
                    scenario::Loader::Multiboot2 => Loader::Multiboot2,
                    scenario::Loader::Multiboot1 => Loader::Multiboot1,
                };
                let key = (s.cmdline.clone(), modules.clone(), loader);
                // Named after the first scenario that boots it, so that
                // runs with different filters never share a work folder.
                let next = &s.name;
                let path = match isos.get(&key) {
                    Some(p) => p.clone(),
                    None => {
                        let path = iso_dir.join(format!("image-{next}.iso"));
                        iso::build(
                            &IsoSpec {
                                kernel: &kernel.stripped,
                                cmdline: &s.cmdline,
                                modules: &modules,
                                loader,
                                timeout: 0,
                            },
                            &iso_dir.join(format!("image-{next}")),
                            &path,
                        )?;
                        isos.insert(key, path.clone());
                        path
                    }
                };
                let mut s = s.clone();
                for asset in s.disk.iter_mut().flat_map(|d| d.assets.values_mut()) {
                    *asset = crate::modules::resolve(asset, &built);
                }
                plan.push((s, path));
            }
            Ok(())
        },
    )?;

    // Longest first (by declared timeout; ties stay by name), so that the
    // long Linux scenarios overlap the many short ones instead of trailing.
    plan.sort_by_key(|(s, _)| std::cmp::Reverse(s.timeout));
    let jobs = jobs.max(1);
    eprintln!(
        "==> running {} boot scenarios, {jobs} at a time; logs in {}",
        plan.len(),
        out_dir.display()
    );
    let queue = Mutex::new(plan.into_iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).ok().flatten();
                    let Some((scenario, image)) = next else { break };
                    let outcome = runner::run(&scenario, &image, &out_dir);
                    print_outcome(&scenario, &outcome);
                    if let Ok(mut r) = results.lock() {
                        r.push((scenario, outcome));
                    }
                }
            });
        }
    });
    Ok(results.into_inner().unwrap_or_default())
}

/// How many runs each backend has, e.g. `bochs-vmx 38, qemu 24, qemu-svm 1`
/// (backends in [`Backend::ALL`] order, then the emulators of scenarios
/// without `backends`).
fn per_backend(runs: &[Scenario]) -> String {
    let order: Vec<&str> = Backend::ALL
        .iter()
        .map(|b| b.name())
        .chain(["qemu", "kvm"])
        .collect();
    let mut counts: Vec<(&str, usize)> = order.iter().map(|&name| (name, 0)).collect();
    for run in runs {
        let label = run.backend_label();
        match counts.iter_mut().find(|(name, _)| *name == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    let shown: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    shown.join(", ")
}

fn print_outcome(scenario: &Scenario, o: &Outcome) {
    if o.passed {
        println!(
            "PASS {} [{}] ({:.1} s): {}",
            o.name,
            scenario.backend_label(),
            o.seconds,
            o.detail
        );
        return;
    }
    let log = std::fs::read(&o.serial_log).unwrap_or_default();
    let text = basalt_tests::matcher::normalise(&log);
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let mut report = format!(
        "FAIL {} [{}] ({:.1} s): {}\n     serial log: {}\n     emulator log: {}\n     last serial lines:\n",
        o.name,
        scenario.backend_label(),
        o.seconds,
        o.detail,
        o.serial_log.display(),
        o.emulator_log.display()
    );
    for line in tail.iter().rev() {
        report.push_str("       | ");
        report.push_str(line);
        report.push('\n');
    }
    print!("{report}");
}
