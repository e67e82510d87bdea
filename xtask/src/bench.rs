//! `cargo xtask bench`: VM-exit costs measured under Bochs, where the TSC
//! counts one tick per executed instruction, so the figures are exact
//! instruction counts per round trip, free of timing noise (platform facts
//! §3). The bench guest (tests/guests/src/bin/bench.rs) runs 100,000 CPUID
//! instructions, 100,000 null hypercalls and 100,000 reads of an ignored
//! port, and prints the ticks per iteration.

use crate::iso::{self, IsoSpec, Loader, ModuleArg};
use crate::packages;
use crate::util::{self, Result};
use basalt_tests::runner;
use basalt_tests::scenario::Scenario;

const SCENARIO: &str = r#"
name = "bench-exits"
description = "VM-exit round-trip costs under Bochs"
emulator = "bochs"
memory = "256M"
cmdline = "test-exit loglvl=warning"
expect = ["cpuid_loop_ticks=", "vmcall_loop_ticks=", "io_loop_ticks="]
timeout = 300
"#;

/// Runs the benchmarks and prints `name=value` lines.
pub fn bench() -> Result {
    packages::ensure(packages::BOCHS, "the benchmarks (Bochs)")?;
    let scenario = Scenario::parse(SCENARIO)?;
    let kernel = crate::kernel::build()?;
    let guests = crate::guests::build()?;
    let dir = util::target_dir().join("bench");
    let image = dir.join("bench.iso");
    let modules = [ModuleArg {
        path: guests.path("bench"),
        args: "name=bench memory=16M".into(),
    }];
    util::step("making the benchmark ISO", || {
        iso::build(
            &IsoSpec {
                kernel: &kernel.stripped,
                cmdline: &scenario.cmdline,
                modules: &modules,
                loader: Loader::Multiboot2,
                timeout: 0,
            },
            &dir.join("iso"),
            &image,
        )
    })?;
    let outcome = util::step("running the exit benchmarks under Bochs", || {
        Ok(runner::run(&scenario, &image, &dir))
    })?;
    let log =
        basalt_tests::matcher::normalise(&std::fs::read(&outcome.serial_log).unwrap_or_default());
    let figure = |key: &str| -> Option<u64> {
        let line = log.lines().find(|l| l.contains(key))?;
        let per = line.split("per=").nth(1)?;
        per.split_whitespace().next()?.parse().ok()
    };
    let mut missing = Vec::new();
    for (key, name) in [
        ("cpuid_loop_ticks=", "cpuid_exit_ticks"),
        ("vmcall_loop_ticks=", "vmcall_exit_ticks"),
        ("io_loop_ticks=", "io_exit_ticks"),
    ] {
        match figure(key) {
            Some(v) => println!("{name}={v}"),
            None => missing.push(name),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the benchmark did not report {}: {} (serial log {})",
            missing.join(", "),
            outcome.detail,
            outcome.serial_log.display()
        ))
    }
}
