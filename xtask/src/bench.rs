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
//!
//! The Linux boot benchmark boots Debian's kernel with the busybox initramfs
//! (`linux:initrd`) twice at [`LINUX_IPS`] instructions per emulated second,
//! one CPU, [`LINUX_MEMORY_MIB`] of RAM for the kernel, command line
//! [`LINUX_CMDLINE`]: once bare (a GRUB ISO whose menu entry loads
//! `linux:bzImage` with `linux` and `initrd`) and once as a Basalt guest
//! (`linux:vmlinux` through its PVH entry). `/init` prints
//! `basalt-linux: uptime SECONDS` (`/proc/uptime`) and, seeing
//! `basalt.bench` on the command line, powers off: the bare machine's Bochs
//! ends on the ACPI soft-off, Basalt (`test-exit`) on the domain's end,
//! after its `VM exits: ...` line. Both uptimes are the kernel's own clock
//! (the TSC, which Bochs advances one tick per instruction, VM exits and
//! Basalt's work included) from the kernel's start to the marker, so their
//! ratio is the ratio of instructions executed. The bare bzImage first
//! decompresses its XZ payload inside the emulator (about 57 s wall), before
//! the kernel's clock starts: it is not in the uptime, and the guest's
//! vmlinux has no such step. Figures:
//!
//! | figure | what |
//! |---|---|
//! | `linux_boot_ratio` | guest uptime / bare uptime at the marker (goal: at most 1.15) |
//! | `linux_boot_guest_s` | the guest's uptime at the marker, seconds |
//! | `linux_boot_bare_s` | the bare kernel's uptime at the marker, seconds |
//! | `linux_boot_exits` | all VM exits of the guest run, with the three commonest reasons |
//!
//! `cargo xtask bench [GROUP]...` runs only the named groups ([`GROUPS`]):
//! `exits` (`cpuid_exit_ticks`, `vmcall_exit_ticks`, `io_exit_ticks`),
//! `switch` (`context_switch_ticks`), `wakeup` (`wakeup_latency_ticks`,
//! `wakeup_latency_us`), `console` (the `console_flood_*` figures), `linux`
//! (the `linux_boot_*` figures); all by default.
//!
//! The console run (one CPU) has a guest write 64 KiB to its console — 32
//! KiB with `console_io`, 32 KiB to port 0xE9 — while it has the console
//! (so every byte goes through the 115200-baud line and the writer is
//! slowed to it), beside a domain that measures how late its 5 ms periodic
//! timer fires, in its own TSC ticks. Figures:
//! `console_flood_timer_late_max_ticks` and `_avg_ticks` (the lateness),
//! `console_flood_timeslice_ticks` (the scheduler's time slice in the same
//! ticks: the goal is a lateness of at most one slice),
//! `console_flood_bytes_ticks` (how long the flood took).

use crate::iso::{self, IsoSpec, Loader, ModuleArg};
use crate::packages;
use crate::util::{self, Result};
use basalt_tests::emulator::{self, Emulator, Machine, Serial};
use basalt_tests::runner;
use basalt_tests::scenario::Scenario;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The groups of figures `cargo xtask bench [GROUP]...` can pick.
pub const GROUPS: [&str; 5] = ["exits", "switch", "wakeup", "console", "linux"];

struct Run {
    name: &'static str,
    /// The group of [`GROUPS`] the run belongs to.
    group: &'static str,
    cpus: u32,
    /// The machine's memory.
    memory: &'static str,
    /// Bochs' instructions per emulated second (the harness' default if
    /// `None`).
    ips: Option<u64>,
    /// Seconds before the run is stopped and failed.
    timeout: u64,
    cmdline: &'static str,
    /// `(module path, args)`: `guest:NAME`, `linux:NAME` or a file.
    modules: &'static [(&'static str, &'static str)],
    expect: &'static str,
    /// Interactive steps (a TOML array), if any.
    steps: Option<&'static str>,
}

const EXITS: Run = Run {
    name: "bench-exits",
    group: "exits",
    cpus: 1,
    memory: "256M",
    ips: None,
    timeout: 300,
    cmdline: "test-exit loglvl=warning",
    modules: &[("guest:bench", "name=bench memory=16M")],
    expect: r#"["cpuid_loop_ticks=", "vmcall_loop_ticks=", "io_loop_ticks="]"#,
    steps: None,
};

const SWITCH: Run = Run {
    name: "bench-switch",
    group: "switch",
    cpus: 1,
    memory: "256M",
    ips: None,
    timeout: 300,
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
    steps: None,
};

const WAKEUP: Run = Run {
    name: "bench-wakeup",
    group: "wakeup",
    cpus: 1,
    memory: "256M",
    ips: None,
    timeout: 300,
    cmdline: "test-exit loglvl=warning test-measure=0,400",
    modules: &[
        (
            "guest:sleeper",
            "name=sleeper memory=8M -- count=40 delay_us=5000 warmup=5 forever=1",
        ),
        ("guest:spin", "name=hog memory=8M -- iterations=0"),
    ],
    expect: r#"["wake_latency_avg_us="]"#,
    steps: None,
};

/// The console flood beside a periodic timer, one CPU: the flooder gets
/// the console (Ctrl-A three times, then a key that starts it), so all of
/// its 64 KiB go through the serial line and it is slowed to its speed;
/// the ticker measures how late its 5 ms timer fires, in its TSC ticks, for
/// 15 s (longer than the flood, about 11 s: the flooder's 32768 single-byte
/// port writes alone take about 8 s at Bochs' 4 M instructions per second).
/// A 2 ms period would measure the ticker's own overload instead: at that
/// speed each period's hypercalls, HLT and switch cost about 1 ms.
const CONSOLE: Run = Run {
    name: "bench-console",
    group: "console",
    cpus: 1,
    memory: "256M",
    ips: None,
    timeout: 900,
    cmdline: "test-exit",
    modules: &[
        ("guest:flood", "name=flood memory=8M -- bytes=65536 wait=1"),
        (
            "guest:bench",
            "name=ticker memory=8M -- mode=timer period_us=5000 count=3000",
        ),
    ],
    expect: r#"["flood: done, 65536 bytes", "timer_late_max_ticks="]"#,
    steps: Some(
        r#"[{ wait = "flood: waiting for input", send = "\u0001\u0001\u0001" }, { wait = "[input: domain d1", send = "g" }]"#,
    ),
};

/// Bochs' instructions per emulated second for both Linux boots (as in the
/// `bochs-linux-*` scenarios: Linux needs tens of millions).
const LINUX_IPS: u64 = 50_000_000;
/// The kernel command line of both Linux boots. `tsc_early_khz` is
/// [`LINUX_IPS`] / 1000: Bochs' CPUID leaves 0x15 and 0x16
/// (`corei7_skylake_x`) announce a 3.5 GHz TSC while its TSC counts
/// instructions, so without it the bare kernel's clock (and every `udelay`)
/// runs 70 times off; Basalt's CPUID policy already tells its guest the
/// frequency it measured (49.998 MHz), which the parameter only rounds.
const LINUX_CMDLINE: &str = "console=ttyS0 quiet basalt.bench tsc_early_khz=50000";
/// The RAM the kernel gets in both Linux boots: the guest domain's memory,
/// and the bare machine's (so that both kernels initialise as much memory).
const LINUX_MEMORY_MIB: u64 = 256;
/// What `/init` prints before the uptime.
const UPTIME_MARKER: &str = "basalt-linux: uptime ";
/// What Basalt prints before its VM-exit counts.
const EXITS_MARKER: &str = "VM exits: ";
/// Seconds each Linux boot may take (the bare one about 80 s wall).
const LINUX_TIMEOUT: u64 = 1500;
/// The most `linux_boot_ratio` should be.
const LINUX_RATIO_GOAL: f64 = 1.15;

/// The Linux boot as a Basalt guest. `test-exit` at the default log level
/// (info): `loglvl=warning` would hide the `VM exits:` line.
const LINUX_GUEST: Run = Run {
    name: "linux-boot-guest",
    group: "linux",
    cpus: 1,
    memory: "512M",
    ips: Some(LINUX_IPS),
    timeout: LINUX_TIMEOUT,
    cmdline: "test-exit",
    modules: &[
        (
            "linux:vmlinux",
            "name=linux memory=256M -- console=ttyS0 quiet basalt.bench tsc_early_khz=50000",
        ),
        ("linux:initrd", "initrd-for=linux"),
    ],
    expect: r#"["(d1) basalt-linux: uptime ", "all domains ended: d1 (linux) exit code 0", "VM exits: "]"#,
    steps: None,
};

const RUNS: [&Run; 5] = [&EXITS, &SWITCH, &WAKEUP, &CONSOLE, &LINUX_GUEST];

/// The scenario file text of run `r`.
fn scenario_text(r: &Run) -> String {
    format!(
        "name = \"{}\"\ndescription = \"benchmark\"\nemulator = \"bochs\"\ncpus = {}\nmemory = \"{}\"\ncmdline = \"{}\"\nexpect = {}\ntimeout = {}\n{}{}",
        r.name,
        r.cpus,
        r.memory,
        r.cmdline,
        r.expect,
        r.timeout,
        r.ips
            .map(|ips| format!("bochs_ips = {ips}\n"))
            .unwrap_or_default(),
        r.steps
            .map(|steps| format!("steps = {steps}\n"))
            .unwrap_or_default()
    )
}

/// Runs one benchmark scenario; returns its serial log.
fn run(r: &Run, kernel: &Path, built: &crate::modules::Built) -> Result<String> {
    let text = scenario_text(r);
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

/// Boots `bzimage` with `initrd` on a bare Bochs machine (no Basalt) from a
/// GRUB ISO until `/init` powers it off; returns the serial log.
fn run_bare_linux(bzimage: &Path, initrd: &Path) -> Result<String> {
    let name = "linux-boot-bare";
    let dir = util::target_dir().join("bench").join(name);
    let image = dir.join("bench.iso");
    let modules = [ModuleArg {
        path: initrd.to_path_buf(),
        args: String::new(),
    }];
    util::step(&format!("making the {name} ISO"), || {
        iso::build(
            &IsoSpec {
                kernel: bzimage,
                cmdline: LINUX_CMDLINE,
                modules: &modules,
                loader: Loader::Linux,
                timeout: 0,
            },
            &dir.join("iso"),
            &image,
        )
    })?;
    let machine = Machine {
        emulator: Emulator::Bochs,
        cpu: None,
        cpus: 1,
        memory_mib: LINUX_MEMORY_MIB,
        ips: LINUX_IPS,
    };
    util::step(&format!("running {name} under Bochs"), || {
        boot_bare(&machine, &image, &dir, name)
    })
}

/// Boots `image` on `machine` under Bochs with COM1 into a file, until
/// Bochs ends (the guest's ACPI soft-off ends it, status 1) or
/// [`LINUX_TIMEOUT`]; returns the serial log. A guest that printed the
/// uptime but does not power off is stopped after a grace period.
fn boot_bare(machine: &Machine, image: &Path, dir: &Path, name: &str) -> Result<String> {
    let file = |ext: &str| dir.join(format!("{name}.{ext}"));
    let (serial, bochs_log, cfg, rc) = (
        file("serial.log"),
        file("bochs.log"),
        file("bochsrc"),
        file("bochs-rc"),
    );
    let emulator_log = file("emulator.log");
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    std::fs::write(&serial, b"").map_err(|e| io(&serial, e))?;
    std::fs::write(
        &cfg,
        emulator::bochs_config(machine, image, &serial, &bochs_log),
    )
    .map_err(|e| io(&cfg, e))?;
    std::fs::write(&rc, emulator::BOCHS_RC).map_err(|e| io(&rc, e))?;
    let out = std::fs::File::create(&emulator_log).map_err(|e| io(&emulator_log, e))?;
    let err = out.try_clone().map_err(|e| io(&emulator_log, e))?;
    let mut child = emulator::command(machine, image, Serial::File(&serial), Some((&cfg, &rc)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start bochs-bin: {e}"))?;
    let read = || basalt_tests::matcher::normalise(&std::fs::read(&serial).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(LINUX_TIMEOUT);
    let mut marker_seen: Option<Instant> = None;
    let stop = |child: &mut Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        let now = Instant::now();
        if marker_seen.is_none() && uptime(&read()).is_some() {
            marker_seen = Some(now);
        }
        if marker_seen.is_some_and(|t| now >= t + Duration::from_secs(60)) {
            eprintln!("    the bare Linux did not power off 60 s after its marker: stopped");
            stop(&mut child);
            break;
        }
        if now >= deadline {
            stop(&mut child);
            return Err(format!(
                "{name}: timed out after {LINUX_TIMEOUT} s (serial log {}, Bochs log {})",
                serial.display(),
                bochs_log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(read())
}

/// The uptime `/init` printed (`basalt-linux: uptime SECONDS`), seconds.
fn uptime(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(UPTIME_MARKER))?;
    let text = line
        .split(UPTIME_MARKER)
        .nth(1)?
        .split_whitespace()
        .next()?;
    basalt_tests::matcher::parse_decimal(text)
}

/// Basalt's `VM exits: name count, name count` line as `(name, count)`
/// pairs, in its order; `None` if the line is missing or unreadable.
fn exit_counts(log: &str) -> Option<Vec<(String, u64)>> {
    let line = log.lines().find(|l| l.contains(EXITS_MARKER))?;
    let list = line.split(EXITS_MARKER).nth(1)?.trim();
    if list == "none" {
        return Some(Vec::new());
    }
    list.split(", ")
        .map(|item| {
            let (name, count) = item.trim().rsplit_once(' ')?;
            Some((name.to_string(), count.parse().ok()?))
        })
        .collect()
}

/// `N (top: reason count, reason count, reason count)`: the total and the
/// `top` commonest reasons, most first (ties in Basalt's order).
fn exits_summary(counts: &[(String, u64)], top: usize) -> String {
    let total: u64 = counts.iter().map(|(_, c)| c).sum();
    let mut sorted: Vec<&(String, u64)> = counts.iter().collect();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.1));
    let top: Vec<String> = sorted
        .iter()
        .take(top)
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    format!("{total} (top: {})", top.join(", "))
}

/// Runs the benchmarks of `groups` (all when empty) and prints
/// `name=value` lines.
pub fn bench(groups: &[String]) -> Result {
    if let Some(bad) = groups.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        return Err(format!(
            "unknown benchmark group {bad:?}: there are {}",
            GROUPS.join(", ")
        ));
    }
    let wanted = |group: &str| groups.is_empty() || groups.iter().any(|g| g == group);
    packages::ensure(packages::BOCHS, "the benchmarks (Bochs)")?;
    let runs: Vec<&Run> = RUNS.into_iter().filter(|r| wanted(r.group)).collect();
    let bare_linux = ["linux:bzImage", "linux:initrd"];
    let built = crate::modules::build_for(
        runs.iter()
            .flat_map(|r| r.modules.iter().map(|(path, _)| *path))
            .chain(bare_linux.into_iter().filter(|_| wanted("linux")))
            .map(Path::new),
    )?;
    let kernel = crate::kernel::build()?;
    let mut missing = Vec::new();
    let mut report = |name: &str, value: Option<String>| match value {
        Some(v) => println!("{name}={v}"),
        None => missing.push(name.to_string()),
    };
    let ticks = |v: Option<u64>| v.map(|v| v.to_string());
    if wanted("exits") {
        let exits = run(&EXITS, &kernel.stripped, &built)?;
        report(
            "cpuid_exit_ticks",
            ticks(figure(&exits, "cpuid_loop_ticks=", "per=")),
        );
        report(
            "vmcall_exit_ticks",
            ticks(figure(&exits, "vmcall_loop_ticks=", "per=")),
        );
        report(
            "io_exit_ticks",
            ticks(figure(&exits, "io_loop_ticks=", "per=")),
        );
    }
    if wanted("switch") {
        let switch = run(&SWITCH, &kernel.stripped, &built)?;
        // One yield iteration of a domain holds two switches (to the other
        // domain and back).
        report(
            "context_switch_ticks",
            ticks(figure(&switch, "yield_loop_ticks=", "per=").map(|p| p / 2)),
        );
    }
    if wanted("wakeup") {
        let wakeup = run(&WAKEUP, &kernel.stripped, &built)?;
        // Bochs' TSC runs at 4 MHz: 1 µs = 4 ticks = 4 instructions.
        let tsc_mhz = 4;
        let us = figure(&wakeup, "BASALT-FIGURE: wake_latency_avg_us=", "=");
        report("wakeup_latency_ticks", ticks(us.map(|us| us * tsc_mhz)));
        report("wakeup_latency_us", ticks(us));
    }
    if wanted("console") {
        let log = run(&CONSOLE, &kernel.stripped, &built)?;
        let marker = "timer_late_max_ticks=";
        let late = figure(&log, marker, marker);
        let avg = figure(&log, marker, "avg=");
        let per_ms = figure(&log, marker, "tsc_per_ms=");
        let slice_us = figure(&log, "scheduler: ", "time slice ");
        let slice = per_ms.zip(slice_us).map(|(t, us)| t * us / 1000);
        report("console_flood_timer_late_max_ticks", ticks(late));
        report("console_flood_timer_late_avg_ticks", ticks(avg));
        report("console_flood_timeslice_ticks", ticks(slice));
        report(
            "console_flood_bytes_ticks",
            ticks(figure(&log, "flood: done, ", "bytes in ")),
        );
        if let (Some(late), Some(slice)) = (late, slice)
            && late > slice
        {
            eprintln!(
                "    console_flood_timer_late_max_ticks is above one time slice ({slice} ticks)"
            );
        }
    }
    if wanted("linux") {
        let resolve = |p: &str| crate::modules::resolve(Path::new(p), &built);
        let bare = run_bare_linux(&resolve(bare_linux[0]), &resolve(bare_linux[1]))?;
        let guest = run(&LINUX_GUEST, &kernel.stripped, &built)?;
        let (bare_s, guest_s) = (uptime(&bare), uptime(&guest));
        let ratio = match (guest_s, bare_s) {
            (Some(g), Some(b)) if b > 0.0 => Some(g / b),
            _ => None,
        };
        report("linux_boot_ratio", ratio.map(|r| format!("{r:.3}")));
        report("linux_boot_guest_s", guest_s.map(|s| format!("{s:.2}")));
        report("linux_boot_bare_s", bare_s.map(|s| format!("{s:.2}")));
        report(
            "linux_boot_exits",
            exit_counts(&guest).map(|c| exits_summary(&c, 3)),
        );
        if ratio.is_some_and(|r| r > LINUX_RATIO_GOAL) {
            eprintln!("    linux_boot_ratio is above the goal of {LINUX_RATIO_GOAL}");
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the benchmarks did not report {}",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_linux_boots_share_the_command_line_and_memory() {
        let (path, args) = LINUX_GUEST.modules[0];
        assert_eq!(path, "linux:vmlinux");
        assert_eq!(
            args.split_once(" -- ").map(|(_, cmdline)| cmdline),
            Some(LINUX_CMDLINE)
        );
        assert!(args.contains(&format!("memory={LINUX_MEMORY_MIB}M ")));
        assert_eq!(LINUX_GUEST.ips, Some(LINUX_IPS));
        assert_eq!(LINUX_GUEST.cpus, 1);
        assert!(
            LINUX_CMDLINE
                .split_whitespace()
                .any(|w| w == "basalt.bench")
        );
        let khz = format!("tsc_early_khz={}", LINUX_IPS / 1000);
        assert!(LINUX_CMDLINE.split_whitespace().any(|w| w == khz));
        // The VM-exit counts are an info line.
        assert!(!LINUX_GUEST.cmdline.contains("loglvl="));
        for r in RUNS {
            assert!(GROUPS.contains(&r.group), "{}", r.name);
            let scenario = Scenario::parse(&scenario_text(r)).expect(r.name);
            assert_eq!(scenario.bochs_ips, r.ips);
        }
    }

    #[test]
    fn uptime_is_read_bare_and_behind_a_domain_prefix() {
        assert_eq!(uptime("x\nbasalt-linux: uptime 21.37\n"), Some(21.37));
        assert_eq!(
            uptime("[ 1.0] cpu0 INFO  hello\n(d1) basalt-linux: uptime 3.50 \n"),
            Some(3.5)
        );
        assert_eq!(uptime("basalt-linux: uptime \n"), None);
        assert_eq!(uptime("basalt-linux: uptime x1\n"), None);
        assert_eq!(uptime(""), None);
    }

    #[test]
    fn exit_counts_are_read_and_summarised() {
        let log = "[   45.683748] cpu0 INFO  VM exits: external interrupt 15839, \
                   interrupt window 410, CPUID 1798, HLT 106, I/O instruction 39999, \
                   EPT violation 16438, VMX-preemption timer expired 3241\n";
        let counts = exit_counts(log).expect("counts");
        assert_eq!(counts.len(), 7);
        assert_eq!(counts[0], ("external interrupt".to_string(), 15839));
        assert_eq!(
            counts[6],
            ("VMX-preemption timer expired".to_string(), 3241)
        );
        assert_eq!(
            exits_summary(&counts, 3),
            "77831 (top: I/O instruction 39999, EPT violation 16438, external interrupt 15839)"
        );
        assert_eq!(exit_counts("x VM exits: none\n"), Some(Vec::new()));
        assert_eq!(exits_summary(&[], 3), "0 (top: )");
        assert_eq!(exit_counts("no such line\n"), None);
        assert_eq!(exit_counts("VM exits: CPUID 1, HLT\n"), None);
    }
}
