//! `cargo xtask bench`: VM-exit costs measured under Bochs, where the TSC
//! counts one tick per executed instruction, so the figures are exact
//! instruction counts per round trip, free of timing noise (platform facts
//! §3). The bench guest (tests/guests/src/bin/bench.rs) runs 100,000 CPUID
//! instructions, 100,000 null hypercalls and 100,000 reads of an ignored
//! port, and prints the ticks per iteration. Two more runs measure the
//! scheduler: two bench guests pinned to one CPU yielding to each other
//! (the context switch between vCPUs of different domains), and a sleeper
//! on its single-shot timer sharing a CPU with a CPU-bound guest (the
//! wake-up latency, in TSC ticks = instructions).

use crate::iso::{self, IsoSpec, Loader, ModuleArg};
use crate::packages;
use crate::util::{self, Result};
use basalt_tests::runner;
use basalt_tests::scenario::Scenario;
use std::path::Path;

struct Run {
    name: &'static str,
    cpus: u32,
    cmdline: &'static str,
    /// `(module path, args)`: `guest:NAME`, `linux:NAME` or a file.
    modules: &'static [(&'static str, &'static str)],
    expect: &'static str,
}

const RUNS: [Run; 3] = [
    Run {
        name: "bench-exits",
        cpus: 1,
        cmdline: "test-exit loglvl=warning",
        modules: &[("guest:bench", "name=bench memory=16M")],
        expect: r#"["cpuid_loop_ticks=", "vmcall_loop_ticks=", "io_loop_ticks="]"#,
    },
    Run {
        name: "bench-switch",
        cpus: 1,
        cmdline: "test-exit loglvl=warning",
        modules: &[
            (
                "guest:bench",
                "name=ya memory=8M cpus=0 -- mode=yield count=20000",
            ),
            (
                "guest:bench",
                "name=yb memory=8M cpus=0 -- mode=yield count=20000",
            ),
        ],
        expect: r#"["yield_loop_ticks="]"#,
    },
    Run {
        name: "bench-wakeup",
        cpus: 1,
        cmdline: "test-exit loglvl=warning test-measure=0,400",
        modules: &[
            (
                "guest:sleeper",
                "name=sleeper memory=8M -- count=40 delay_us=5000 warmup=5 forever=1",
            ),
            ("guest:spin", "name=hog memory=8M -- iterations=0"),
        ],
        expect: r#"["wake_latency_avg_us="]"#,
    },
];

/// Runs one benchmark scenario; returns its serial log.
fn run(r: &Run, kernel: &Path, built: &crate::modules::Built) -> Result<String> {
    let text = format!(
        "name = \"{}\"\ndescription = \"benchmark\"\nemulator = \"bochs\"\ncpus = {}\nmemory = \"256M\"\ncmdline = \"{}\"\nexpect = {}\ntimeout = 300\n",
        r.name, r.cpus, r.cmdline, r.expect
    );
    let scenario = Scenario::parse(&text)?;
    let dir = util::target_dir().join("bench").join(r.name);
    let image = dir.join("bench.iso");
    let modules: Vec<ModuleArg> = crate::modules::module_args(
        r.modules
            .iter()
            .map(|(path, args)| (Path::new(path), *args)),
        built,
    );
    util::step(&format!("making the {} ISO", r.name), || {
        iso::build(
            &IsoSpec {
                kernel,
                cmdline: &scenario.cmdline,
                modules: &modules,
                loader: Loader::Multiboot2,
                timeout: 0,
            },
            &dir.join("iso"),
            &image,
        )
    })?;
    let outcome = util::step(&format!("running {} under Bochs", r.name), || {
        Ok(runner::run(&scenario, &image, &dir))
    })?;
    let log =
        basalt_tests::matcher::normalise(&std::fs::read(&outcome.serial_log).unwrap_or_default());
    if !outcome.passed {
        return Err(format!(
            "{}: {} (serial log {})",
            r.name,
            outcome.detail,
            outcome.serial_log.display()
        ));
    }
    Ok(log)
}

/// The number after `key` on the first line holding `marker`.
fn figure(log: &str, marker: &str, key: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let rest = line.split(key).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Runs the benchmarks and prints `name=value` lines.
pub fn bench() -> Result {
    packages::ensure(packages::BOCHS, "the benchmarks (Bochs)")?;
    let built = crate::modules::build_for(
        RUNS.iter()
            .flat_map(|r| r.modules.iter().map(|(path, _)| Path::new(*path))),
    )?;
    let kernel = crate::kernel::build()?;
    let exits = run(&RUNS[0], &kernel.stripped, &built)?;
    let switch = run(&RUNS[1], &kernel.stripped, &built)?;
    let wakeup = run(&RUNS[2], &kernel.stripped, &built)?;
    let mut missing = Vec::new();
    let mut report = |name: &str, value: Option<u64>| match value {
        Some(v) => println!("{name}={v}"),
        None => missing.push(name.to_string()),
    };
    report(
        "cpuid_exit_ticks",
        figure(&exits, "cpuid_loop_ticks=", "per="),
    );
    report(
        "vmcall_exit_ticks",
        figure(&exits, "vmcall_loop_ticks=", "per="),
    );
    report("io_exit_ticks", figure(&exits, "io_loop_ticks=", "per="));
    // One yield iteration of a domain holds two switches (to the other
    // domain and back).
    report(
        "context_switch_ticks",
        figure(&switch, "yield_loop_ticks=", "per=").map(|p| p / 2),
    );
    // Bochs' TSC runs at 4 MHz: 1 µs = 4 ticks = 4 instructions.
    let tsc_mhz = 4;
    report(
        "wakeup_latency_ticks",
        figure(&wakeup, "BASALT-FIGURE: wake_latency_avg_us=", "=").map(|us| us * tsc_mhz),
    );
    report(
        "wakeup_latency_us",
        figure(&wakeup, "BASALT-FIGURE: wake_latency_avg_us=", "="),
    );
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the benchmarks did not report {}",
            missing.join(", ")
        ))
    }
}
