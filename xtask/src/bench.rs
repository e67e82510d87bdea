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
//! These three groups (`exits`, `switch`, `wakeup`) run on each of
//! [`TARGETS`], side by side: `bochs-vmx` (VT-x), `bochs-svm` (Bochs'
//! `ryzen`) and `qemu-svm` (QEMU TCG `-cpu EPYC` with `-icount shift=0`,
//! where the TSC also counts one tick per instruction). Before an SVM
//! column, a probe boots a `hello` guest there: when Basalt's monitor says
//! that no guest can start, the column reads `unavailable: <reason>` and
//! the bench goes on. VT-x figures print as `name=value`, the others as
//! `name@BACKEND=value`; a table with one column per backend follows.
//!
//! `linux-qemu` boots Debian's kernel under QEMU/SVM (TCG, `-cpu EPYC`, no
//! `-icount`: this measures wall time, what a test run costs) bare, by
//! QEMU's `-kernel` of the same vmlinux (its PVH note) with the initrd,
//! 256 MiB, and as a Basalt guest (512 MiB machine, `memory=256M`), command
//! line [`QEMU_LINUX_CMDLINE`]. Figures: `linux_qemu_bare_init_s` and
//! `linux_qemu_guest_init_s` (wall seconds from QEMU's start to `/init`'s
//! `basalt-linux: init up`; the guest's includes the BIOS, GRUB loading the
//! 64 MB vmlinux and Basalt's boot), `linux_qemu_bare_uptime_s`,
//! `linux_qemu_guest_uptime_s` (the kernel's uptime at `/init`'s uptime
//! line) and `linux_qemu_ratio` (guest / bare uptime). Without a backend
//! the guest figures read `unavailable: <reason>`.
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
//! (the `linux_boot_*` figures), `linux-qemu` (the `linux_qemu_*`
//! figures), `dom0` (the control domain's figures), `io` (a guest's virtio
//! disk and network through dom0's device model); all by default.
//!
//! The `io` group (docs/toolstack.md, "Measured") runs `xtask/bench/io.toml`
//! under QEMU/SVM (`-icount shift=0,sleep=off`: KiB per second of virtual
//! time): dom0 reads a 32 MiB file (`io_blk_dom0_kib_s`), a VM made by
//! `basalt create` reads the same file as its read-only virtio disk
//! (`io_blk_guest_kib_s`; `io_blk_read_ratio`, goal at least 0.5) and sends
//! 16 MiB to dom0 over TCP through virtio-net (`io_net_guest_to_dom0_kib_s`).
//!
//! The `dom0` group (docs/control-domain.md, "Measured"), Bochs VT-x with
//! one CPU, where a TSC tick is an instruction: `dom0_boot_ticks` (Basalt's
//! entry to the TSC dom0's `/init` reads just before its shell prompt:
//! Basalt logs where dom0's TSC starts, `basalt tsc` prints dom0's),
//! `dom0_start_ticks` (Basalt's entry to dom0's TSC zero: when Basalt starts
//! building dom0),
//! `privcmd_list_ticks` (one `basalt list` hypercall through privcmd,
//! averaged over 100), `evtchn_round_trip_ticks` (the
//! control domain notifies a port bound in a guest and waits for the
//! guest's upcall handler to notify back; the `evtchn` test guest), and
//! the memory Basalt keeps for Xen's interface: `xen_iface_guest_bytes` (a
//! `xen=1` domain at creation), `xen_iface_dom0_created_bytes`, and
//! `xen_iface_dom0_bytes` with `xen_iface_dom0_grant_frames` at dom0's end
//! (the grant frames Linux mapped, 4 KiB each). The same runs on qemu-svm
//! (`-icount shift=0`) print as `name@qemu-svm=`: there a tick is a
//! nanosecond of virtual time, one instruction while the CPU runs, idle
//! time included.
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
use basalt_tests::scenario::{Backend, Scenario};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The groups of figures `cargo xtask bench [GROUP]...` can pick.
pub const GROUPS: [&str; 8] = [
    "exits",
    "switch",
    "wakeup",
    "console",
    "linux",
    "linux-qemu",
    "dom0",
    "io",
];

/// Where the exit round trips are measured, side by side: an emulator
/// whose TSC counts one tick per executed instruction, with each vendor's
/// extensions (docs/vmx.md, "Cost of an exit").
#[derive(Debug, Clone, Copy)]
struct Target {
    backend: Backend,
    /// Extra QEMU arguments.
    qemu_args: &'static [&'static str],
    /// The TSC's rate in MHz (instructions per microsecond): Bochs' `ips`
    /// (the harness default, 4 million), QEMU's `-icount shift=0` 1 ns per
    /// instruction.
    tsc_mhz: u64,
}

const TARGETS: [Target; 3] = [
    Target {
        backend: Backend::BochsVmx,
        qemu_args: &[],
        tsc_mhz: emulator::BOCHS_IPS / 1_000_000,
    },
    Target {
        backend: Backend::BochsSvm,
        qemu_args: &[],
        tsc_mhz: emulator::BOCHS_IPS / 1_000_000,
    },
    Target {
        backend: Backend::QemuSvm,
        qemu_args: &["-icount", "shift=0"],
        tsc_mhz: 1000,
    },
];

impl Target {
    /// `""` for VT-x (the figures' names as before the SVM columns),
    /// `@BACKEND` for the others.
    fn suffix(self) -> String {
        match self.backend {
            Backend::BochsVmx => String::new(),
            b => format!("@{}", b.name()),
        }
    }
}

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

/// The control domain (docs/control-domain.md, "Measured"): Debian's
/// kernel as dom0 with dom0's initramfs, one CPU, Bochs at [`LINUX_IPS`]
/// (its TSC counts instructions). `/init` prints the TSC dom0 reads just
/// before its shell prompt (`basalt tsc`), Basalt prints where dom0's TSC
/// starts (`domain d0: its TSC reads 0 at N ticks after Basalt's entry`):
/// their sum is dom0's boot from Basalt's entry, in instructions. Then
/// `basalt list --repeat 100` times the privcmd hypercall in TSC ticks.
/// A `xen=1` guest beside it (which powers off at once) gives the Xen
/// interface's memory for an ordinary domain.
const DOM0_LINUX: Run = Run {
    name: "bench-dom0-linux",
    group: "dom0",
    cpus: 1,
    memory: "1G",
    ips: Some(LINUX_IPS),
    timeout: 900,
    cmdline: "test-exit",
    modules: &[
        (
            "linux:vmlinux",
            "role=control memory=384M -- console=hvc0 loglevel=4",
        ),
        ("dom0:initrd", "initrd-for=Domain-0"),
        ("guest:hello", "name=xenguest memory=4M xen=1"),
    ],
    expect: r#"["dom0: root shell on ", "BASALT-FIGURE: privcmd_list_ticks=", "basalt-list-42", "domain d0 (Domain-0) ended", "BASALT-VERDICT: PASS"]"#,
    steps: Some(
        r#"[{ wait = "dom0: root shell", send = "\u0001\u0001\u0001" }, { wait = "[input: domain d0", send = "basalt list --repeat 100 && echo basalt-list-$((6*7))\r" }, { wait = "basalt-list-42", send = "poweroff -f\r" }]"#,
    ),
};

/// An event-channel round trip between the control domain and a guest,
/// one CPU: the `evtchn` test guest as `role=control` allocates an
/// unbound port for d1, the same image as a `xen=1` guest binds it and
/// answers each event from its upcall handler; the control domain sends,
/// polls for the answer and counts TSC ticks over `count=` round trips.
const DOM0_EVTCHN: Run = Run {
    name: "bench-dom0-evtchn",
    group: "dom0",
    cpus: 1,
    memory: "256M",
    ips: None,
    timeout: 300,
    cmdline: "test-exit loglvl=warning",
    modules: &[
        (
            "guest:evtchn",
            "role=control memory=16M -- peer=1 count=2000",
        ),
        ("guest:evtchn", "name=peer memory=4M xen=1 -- answer=1"),
    ],
    expect: r#"["evtchn_round_trip_ticks=", "BASALT-VERDICT: PASS"]"#,
    steps: None,
};

const RUNS: [&Run; 7] = [
    &EXITS,
    &SWITCH,
    &WAKEUP,
    &CONSOLE,
    &LINUX_GUEST,
    &DOM0_LINUX,
    &DOM0_EVTCHN,
];

/// The scenario file text of run `r` on `target`.
fn scenario_text(r: &Run, target: Target) -> String {
    let qemu_args: Vec<String> = target
        .qemu_args
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        "name = \"{}\"\ndescription = \"benchmark\"\nbackends = [\"{}\"]\ncpus = {}\nmemory = \"{}\"\ncmdline = \"{}\"\nexpect = {}\ntimeout = {}\n{}{}{}",
        r.name,
        target.backend.name(),
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
            .unwrap_or_default(),
        if qemu_args.is_empty() {
            String::new()
        } else {
            format!("qemu_args = [{}]\n", qemu_args.join(", "))
        }
    )
}

/// Makes the boot ISO of run `r` (Basalt, its command line and modules).
fn run_iso(r: &Run, kernel: &Path, built: &crate::modules::Built) -> Result<PathBuf> {
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
                cmdline: r.cmdline,
                modules: &modules,
                loader: Loader::Multiboot2,
                timeout: 0,
            },
            &dir.join("iso"),
            &image,
        )
    })?;
    Ok(image)
}

/// Runs one benchmark scenario on `target`; returns its serial log.
fn run(r: &Run, target: Target, kernel: &Path, built: &crate::modules::Built) -> Result<String> {
    let scenario = Scenario::parse(&scenario_text(r, target))?;
    let dir = util::target_dir().join("bench").join(r.name);
    let image = run_iso(r, kernel, built)?;
    let outcome = util::step(&format!("running {}", scenario.name), || {
        Ok(runner::run(&scenario, &image, &dir))
    })?;
    let log =
        basalt_tests::matcher::normalise(&std::fs::read(&outcome.serial_log).unwrap_or_default());
    if !outcome.passed {
        return Err(format!(
            "{}: {} (serial log {})",
            scenario.name,
            outcome.detail,
            outcome.serial_log.display()
        ));
    }
    Ok(log)
}

/// What Basalt's monitor says when no virtualization backend works.
const NO_GUEST_MARKER: &str = "monitor: no guest can start: ";

/// The reason after [`NO_GUEST_MARKER`], if Basalt printed it.
fn no_guest_reason(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(NO_GUEST_MARKER))?;
    Some(line.split(NO_GUEST_MARKER).nth(1)?.trim().to_string())
}

/// Whether guests can run on `target`: Basalt boots a `hello` guest there
/// (`test-exit`); without a backend its monitor says why no guest can
/// start and the probe stops at once. `Err` holds the reason.
fn probe(
    target: Target,
    kernel: &Path,
    built: &crate::modules::Built,
) -> std::result::Result<(), String> {
    const PROBE: Run = Run {
        name: "bench-probe",
        group: "exits",
        cpus: 1,
        memory: "256M",
        ips: None,
        timeout: 120,
        cmdline: "test-exit loglvl=warning",
        modules: &[("guest:hello", "name=probe memory=16M")],
        expect: "[]",
        steps: None,
    };
    let image = run_iso(&PROBE, kernel, built)?;
    let scenario = Scenario::parse(&scenario_text(&PROBE, target))?;
    let machine = scenario.machine()?;
    let dir = util::target_dir().join("bench").join(PROBE.name);
    let (mut child, serial) =
        spawn_basalt(&machine, &image, &dir, &scenario.name, target.qemu_args)?;
    let watched = watch(
        &mut child,
        &serial,
        &[NO_GUEST_MARKER, basalt_tests::matcher::VERDICT_PREFIX],
        Duration::from_secs(PROBE.timeout),
        |seen, _| seen.iter().any(Option::is_some),
    )
    .map_err(|e| format!("{}: {e}", scenario.name))?;
    match (
        no_guest_reason(&watched.log),
        basalt_tests::matcher::verdict(&watched.log, false),
    ) {
        (Some(reason), _) => Err(reason),
        (None, Some(basalt_tests::matcher::Verdict::Pass)) => Ok(()),
        (None, _) => Err(format!(
            "the probe guest did not pass (serial log {})",
            serial.display()
        )),
    }
}

/// Starts Basalt's `image` on `machine` with COM1 into
/// `DIR/NAME.serial.log` (emulator output beside it); returns the emulator
/// and the serial log's path.
fn spawn_basalt(
    machine: &Machine,
    image: &Path,
    dir: &Path,
    name: &str,
    qemu_args: &[&str],
) -> Result<(Child, PathBuf)> {
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
    if machine.emulator == Emulator::Bochs {
        std::fs::write(
            &cfg,
            emulator::bochs_config(machine, image, &serial, &bochs_log),
        )
        .map_err(|e| io(&cfg, e))?;
        std::fs::write(&rc, emulator::BOCHS_RC).map_err(|e| io(&rc, e))?;
    }
    let out = std::fs::File::create(&emulator_log).map_err(|e| io(&emulator_log, e))?;
    let err = out.try_clone().map_err(|e| io(&emulator_log, e))?;
    let mut cmd = emulator::command(machine, image, Serial::File(&serial), Some((&cfg, &rc)));
    if machine.emulator != Emulator::Bochs {
        cmd.args(qemu_args);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", machine.emulator.name()))?;
    Ok((child, serial))
}

/// What [`watch`] saw: the serial log, and for each marker the seconds
/// from the emulator's start to its first appearance.
struct Watched {
    log: String,
    seen: Vec<Option<f64>>,
    /// Whether `done` stopped the emulator (rather than its own end).
    stopped: bool,
}

/// Watches `child`'s serial log until the emulator ends, `done(seen,
/// elapsed)` says the run has shown enough (the emulator is then stopped)
/// or `timeout` (an error). Marker times are taken every 50 ms.
fn watch(
    child: &mut Child,
    serial: &Path,
    markers: &[&str],
    timeout: Duration,
    done: impl Fn(&[Option<f64>], f64) -> bool,
) -> Result<Watched> {
    let started = Instant::now();
    let read = || basalt_tests::matcher::normalise(&std::fs::read(serial).unwrap_or_default());
    let mut seen = vec![None; markers.len()];
    let stop = |child: &mut Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    loop {
        let ended = matches!(child.try_wait(), Ok(Some(_)));
        let log = read();
        let elapsed = started.elapsed().as_secs_f64();
        for (marker, time) in markers.iter().zip(seen.iter_mut()) {
            if time.is_none() && log.contains(marker) {
                *time = Some(elapsed);
            }
        }
        if ended {
            return Ok(Watched {
                log,
                seen,
                stopped: false,
            });
        }
        if done(&seen, elapsed) {
            stop(child);
            return Ok(Watched {
                log: read(),
                seen,
                stopped: true,
            });
        }
        if started.elapsed() >= timeout {
            stop(child);
            return Err(format!(
                "timed out after {} s (serial log {})",
                timeout.as_secs(),
                serial.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
        firmware: emulator::Firmware::Bios,
        reboots: 0,
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
    let (mut child, _) = spawn_basalt(machine, image, dir, name, &[])?;
    let watched = watch(
        &mut child,
        &dir.join(format!("{name}.serial.log")),
        &[UPTIME_MARKER],
        Duration::from_secs(LINUX_TIMEOUT),
        |seen, now| seen[0].is_some_and(|t| now >= t + 60.0),
    )
    .map_err(|e| format!("{name}: {e}"))?;
    if watched.stopped {
        eprintln!("    the bare Linux did not power off 60 s after its marker: stopped");
    }
    Ok(watched.log)
}

/// What `/init` prints first.
const INIT_MARKER: &str = "basalt-linux: init up";
/// The kernel command line of both QEMU Linux boots (QEMU's TSC runs at
/// the host's rate, and Basalt tells its guest the rate it measured: no
/// `tsc_early_khz`).
const QEMU_LINUX_CMDLINE: &str = "console=ttyS0 quiet basalt.bench";
/// Seconds a QEMU Linux boot may take.
const QEMU_LINUX_TIMEOUT: u64 = 600;

/// Linux under QEMU/SVM as a Basalt guest (`test-exit`, 512 MiB machine).
const QEMU_LINUX_GUEST: Run = Run {
    name: "linux-qemu-guest",
    group: "linux-qemu",
    cpus: 1,
    memory: "512M",
    ips: None,
    timeout: QEMU_LINUX_TIMEOUT,
    cmdline: "test-exit",
    modules: &[
        (
            "linux:vmlinux",
            "name=linux memory=256M -- console=ttyS0 quiet basalt.bench",
        ),
        ("linux:initrd", "initrd-for=linux"),
    ],
    expect: "[]",
    steps: None,
};

/// One Linux boot under QEMU: wall seconds from QEMU's start to `/init`'s
/// first line, and the kernel's uptime at its uptime line.
#[derive(Debug, Clone, Copy)]
struct QemuBoot {
    init_wall_s: f64,
    uptime_s: Option<f64>,
}

/// The QEMU machine of both Linux boots: TCG, `-cpu EPYC` (as the
/// `qemu-svm` backend), one CPU.
fn qemu_linux_machine(memory_mib: u64) -> Machine {
    Machine {
        emulator: Emulator::Qemu,
        cpu: Backend::QemuSvm.cpu(),
        cpus: 1,
        memory_mib,
        ips: emulator::BOCHS_IPS,
        firmware: emulator::Firmware::Bios,
        reboots: 0,
    }
}

/// Watches a QEMU Linux boot to `marker` (`/init`'s first line) and the
/// uptime line; the guest powers off a second later (QEMU ends), a Basalt
/// run ends after its verdict, and one where no guest can start is
/// stopped at once (`Ok(Err(reason))`).
fn watch_qemu_linux(
    child: &mut Child,
    serial: &Path,
    marker: &str,
) -> Result<std::result::Result<QemuBoot, String>> {
    let markers = [
        marker,
        UPTIME_MARKER,
        NO_GUEST_MARKER,
        basalt_tests::matcher::VERDICT_PREFIX,
    ];
    let watched = watch(
        child,
        serial,
        &markers,
        Duration::from_secs(QEMU_LINUX_TIMEOUT),
        |seen, now| {
            seen[2].is_some()
                || seen[3].is_some_and(|t| now >= t + 3.0)
                || seen[1].is_some_and(|t| now >= t + 30.0)
        },
    )?;
    if let Some(reason) = no_guest_reason(&watched.log) {
        return Ok(Err(reason));
    }
    let init_wall_s = watched.seen[0].ok_or_else(|| {
        format!(
            "`{marker}` never appeared (serial log {})",
            serial.display()
        )
    })?;
    Ok(Ok(QemuBoot {
        init_wall_s,
        uptime_s: uptime(&watched.log),
    }))
}

/// Debian's kernel booted bare by QEMU/SVM: `-kernel` of the same vmlinux
/// (QEMU enters it through its PVH note, as Basalt does) with the same
/// initrd and 256 MiB.
fn run_qemu_bare_linux(vmlinux: &Path, initrd: &Path) -> Result<QemuBoot> {
    let name = "linux-qemu-bare";
    let dir = util::target_dir().join("bench").join(name);
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let serial = dir.join(format!("{name}.serial.log"));
    let emulator_log = dir.join(format!("{name}.emulator.log"));
    std::fs::write(&serial, b"").map_err(|e| io(&serial, e))?;
    let machine = qemu_linux_machine(LINUX_MEMORY_MIB);
    let out = std::fs::File::create(&emulator_log).map_err(|e| io(&emulator_log, e))?;
    let err = out.try_clone().map_err(|e| io(&emulator_log, e))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        "pc",
        "-accel",
        "tcg",
        "-cpu",
        machine.cpu.unwrap_or("EPYC"),
        "-smp",
        "1",
        "-m",
        &format!("{}M", machine.memory_mib),
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
        &format!("file:{}", serial.display()),
        "-kernel",
        &vmlinux.display().to_string(),
        "-initrd",
        &initrd.display().to_string(),
        "-append",
        QEMU_LINUX_CMDLINE,
    ]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start QEMU: {e}"))?;
    util::step(&format!("running {name} under QEMU"), || {
        watch_qemu_linux(&mut child, &serial, INIT_MARKER)
    })?
    .map_err(|reason| format!("{name}: {reason}"))
}

/// The same kernel as a Basalt guest under QEMU/SVM; `Ok(Err(reason))`
/// when no guest can start there.
fn run_qemu_guest_linux(
    kernel: &Path,
    built: &crate::modules::Built,
) -> Result<std::result::Result<QemuBoot, String>> {
    let r = &QEMU_LINUX_GUEST;
    let image = run_iso(r, kernel, built)?;
    let dir = util::target_dir().join("bench").join(r.name);
    let machine = qemu_linux_machine(512);
    let (mut child, serial) = spawn_basalt(&machine, &image, &dir, r.name, &[])?;
    let marker = format!("(d1) {INIT_MARKER}");
    util::step(&format!("running {} under QEMU", r.name), || {
        watch_qemu_linux(&mut child, &serial, &marker)
    })
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
    let exit_groups: Vec<&str> = EXIT_GROUPS.into_iter().filter(|g| wanted(g)).collect();
    packages::ensure(packages::BOCHS, "the benchmarks (Bochs)")?;
    if !exit_groups.is_empty() || wanted("linux-qemu") || wanted("dom0") {
        packages::ensure(packages::QEMU, "the benchmarks under QEMU/SVM")?;
    }
    let runs: Vec<&Run> = RUNS
        .into_iter()
        .chain([&QEMU_LINUX_GUEST])
        .filter(|r| wanted(r.group))
        .collect();
    let bare_linux = ["linux:bzImage", "linux:initrd"];
    let built = crate::modules::build_for(
        runs.iter()
            .flat_map(|r| r.modules.iter().map(|(path, _)| *path))
            .chain(bare_linux.into_iter().filter(|_| wanted("linux")))
            .chain(
                ["guest:hello"]
                    .into_iter()
                    .filter(|_| !exit_groups.is_empty()),
            )
            .map(Path::new),
    )?;
    let kernel = crate::kernel::build()?;
    let mut missing = Vec::new();
    let mut failed = Vec::new();
    let mut report = |name: &str, value: Option<String>| match value {
        Some(v) => println!("{name}={v}"),
        None => missing.push(name.to_string()),
    };
    let ticks = |v: Option<u64>| v.map(|v| v.to_string());
    if !exit_groups.is_empty() {
        let mut table = Table::default();
        for target in TARGETS {
            let column = target.backend.name();
            let available = match target.backend {
                Backend::BochsVmx => Ok(()),
                _ => util::step(&format!("probing guests on {column}"), || {
                    Ok(probe(target, &kernel.stripped, &built))
                })?,
            };
            if let Err(reason) = available {
                eprintln!("    {column}: unavailable: {reason}");
                table.notes.push(format!("{column}: unavailable: {reason}"));
                continue;
            }
            for group in &exit_groups {
                let r = RUNS
                    .into_iter()
                    .find(|r| r.group == *group)
                    .ok_or("no run")?;
                match run(r, target, &kernel.stripped, &built) {
                    Ok(log) => {
                        for (name, value) in exit_figures(group, &log, target) {
                            let value = ticks(value);
                            match target.backend {
                                Backend::BochsVmx => report(name, value.clone()),
                                _ => match &value {
                                    Some(v) => println!("{name}{}={v}", target.suffix()),
                                    None => failed.push(format!("{name}{}", target.suffix())),
                                },
                            }
                            table.set(name, column, value.unwrap_or_else(|| "missing".into()));
                        }
                    }
                    Err(e) if target.backend == Backend::BochsVmx => return Err(e),
                    Err(e) => {
                        eprintln!("    {e}");
                        table.notes.push(format!("{column}: {group} failed: {e}"));
                        failed.push(format!("{group}{}", target.suffix()));
                    }
                }
            }
        }
        table.print();
    }
    if wanted("console") {
        let log = run(&CONSOLE, TARGETS[0], &kernel.stripped, &built)?;
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
        let guest = run(&LINUX_GUEST, TARGETS[0], &kernel.stripped, &built)?;
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
    if wanted("linux-qemu") {
        let resolve = |p: &str| crate::modules::resolve(Path::new(p), &built);
        let bare = run_qemu_bare_linux(&resolve("linux:vmlinux"), &resolve("linux:initrd"))?;
        report(
            "linux_qemu_bare_init_s",
            Some(format!("{:.2}", bare.init_wall_s)),
        );
        report(
            "linux_qemu_bare_uptime_s",
            bare.uptime_s.map(|s| format!("{s:.2}")),
        );
        match run_qemu_guest_linux(&kernel.stripped, &built)? {
            Ok(guest) => {
                println!("linux_qemu_guest_init_s={:.2}", guest.init_wall_s);
                let ratio = guest.uptime_s.zip(bare.uptime_s).map(|(g, b)| g / b);
                for (name, value) in [
                    ("linux_qemu_guest_uptime_s", guest.uptime_s),
                    ("linux_qemu_ratio", ratio),
                ] {
                    match value {
                        Some(v) => println!("{name}={v:.3}"),
                        None => failed.push(name.to_string()),
                    }
                }
            }
            Err(reason) => {
                println!("linux_qemu_guest_init_s=unavailable: {reason}");
            }
        }
    }
    if wanted("dom0") {
        let log = run(&DOM0_LINUX, TARGETS[0], &kernel.stripped, &built)?;
        for (name, value) in dom0_figures(&log) {
            report(name, ticks(value));
        }
        // QEMU/SVM with `-icount shift=0`: a tick is a nanosecond of
        // virtual time, one instruction while a CPU runs (idle time
        // included).
        let target = TARGETS[2];
        match run(&DOM0_LINUX, target, &kernel.stripped, &built) {
            Ok(log) => {
                for (name, value) in dom0_figures(&log) {
                    match value {
                        Some(v) => println!("{name}{}={v}", target.suffix()),
                        None => failed.push(format!("{name}{}", target.suffix())),
                    }
                }
            }
            Err(e) => {
                eprintln!("    {e}");
                failed.push(format!("dom0{}", target.suffix()));
            }
        }
        for target in [TARGETS[0], TARGETS[2]] {
            let name = format!("evtchn_round_trip_ticks{}", target.suffix());
            match run(&DOM0_EVTCHN, target, &kernel.stripped, &built) {
                Ok(log) => match figure(&log, "evtchn_round_trip_ticks=", "per=") {
                    Some(v) => println!("{name}={v}"),
                    None => failed.push(name),
                },
                Err(e) if target.backend == Backend::BochsVmx => return Err(e),
                Err(e) => {
                    eprintln!("    {e}");
                    failed.push(name);
                }
            }
        }
    }
    if wanted("io") {
        match io() {
            Ok(figures) => figures.iter().for_each(|f| println!("{f}")),
            Err(e) => {
                eprintln!("    {e}");
                failed.push("io@qemu-svm".into());
            }
        }
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "the benchmarks did not report {}",
            missing.join(", ")
        ));
    }
    if !failed.is_empty() {
        problems.push(format!(
            "failed on a backend that runs guests: {}",
            failed.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The `io` group's run (issue 15): a VM with a virtio disk and network
/// interface through dom0's toolstack and `basalt-dm`, under QEMU/SVM.
const IO_SCENARIO: &str = include_str!("../bench/io.toml");

/// Runs [`IO_SCENARIO`]; its figures as `name@qemu-svm=value` lines, with
/// the guest's disk throughput over dom0's own read of the same file.
fn io() -> Result<Vec<String>> {
    let scenario = Scenario::parse(IO_SCENARIO)?;
    let results = crate::test::run_all(&[scenario], 1)?;
    let Some((_, outcome)) = results.first() else {
        return Err("bench-io did not run".into());
    };
    if !outcome.passed {
        return Err(format!(
            "{}: {} (serial log {})",
            outcome.name,
            outcome.detail,
            outcome.serial_log.display()
        ));
    }
    let log =
        basalt_tests::matcher::normalise(&std::fs::read(&outcome.serial_log).unwrap_or_default());
    io_figures(&log)
}

/// The `io` figures from the run's `log` (KiB/s; the ratio to 3 places).
fn io_figures(log: &str) -> Result<Vec<String>> {
    let get = |name: &str| {
        figure(log, &format!("BASALT-FIGURE: {name}="), "=")
            .ok_or_else(|| format!("bench-io printed no {name}"))
    };
    let (guest, dom0) = (get("io_blk_guest_kib_s")?, get("io_blk_dom0_kib_s")?);
    let net = get("io_net_guest_to_dom0_kib_s")?;
    Ok(vec![
        format!("io_blk_guest_kib_s@qemu-svm={guest}"),
        format!("io_blk_dom0_kib_s@qemu-svm={dom0}"),
        format!(
            "io_blk_read_ratio@qemu-svm={:.3} (goal >= 0.5)",
            guest as f64 / dom0.max(1) as f64
        ),
        format!("io_net_guest_to_dom0_kib_s@qemu-svm={net}"),
    ])
}

/// The groups measured on every [`TARGETS`] entry.
const EXIT_GROUPS: [&str; 3] = ["exits", "switch", "wakeup"];

/// The figures of exit group `group` from its run's `log` on `target`.
fn exit_figures(group: &str, log: &str, target: Target) -> Vec<(&'static str, Option<u64>)> {
    match group {
        "exits" => vec![
            ("cpuid_exit_ticks", figure(log, "cpuid_loop_ticks=", "per=")),
            (
                "vmcall_exit_ticks",
                figure(log, "vmcall_loop_ticks=", "per="),
            ),
            ("io_exit_ticks", figure(log, "io_loop_ticks=", "per=")),
        ],
        // One yield iteration of a domain holds two switches (to the other
        // domain and back).
        "switch" => vec![(
            "context_switch_ticks",
            figure(log, "yield_loop_ticks=", "per=").map(|p| p / 2),
        )],
        "wakeup" => {
            let us = figure(log, "BASALT-FIGURE: wake_latency_avg_us=", "=");
            vec![
                ("wakeup_latency_ticks", us.map(|us| us * target.tsc_mhz)),
                ("wakeup_latency_us", us),
            ]
        }
        _ => Vec::new(),
    }
}

/// The figures of the `dom0` group's Linux run (instructions = TSC ticks
/// under Bochs with one CPU; bytes of Basalt's memory).
fn dom0_figures(log: &str) -> Vec<(&'static str, Option<u64>)> {
    let zero = figure(log, "domain d0: its TSC reads 0 at ", "reads 0 at ");
    let shell = figure(log, "dom0: root shell on ", "tsc=");
    let ended = "domain d0 (Domain-0) ended";
    vec![
        ("dom0_boot_ticks", zero.zip(shell).map(|(z, s)| z + s)),
        ("dom0_start_ticks", zero),
        (
            "privcmd_list_ticks",
            figure(log, "BASALT-FIGURE: privcmd_list_ticks=", "="),
        ),
        (
            "xen_iface_dom0_created_bytes",
            figure(log, "domain d0 (Domain-0) created", "Xen's interface ("),
        ),
        (
            "xen_iface_dom0_bytes",
            figure(log, ended, "Xen's interface held "),
        ),
        (
            "xen_iface_dom0_grant_frames",
            figure(log, ended, "Basalt's memory ("),
        ),
        (
            "xen_iface_guest_bytes",
            figure(log, "(xenguest) created", "Xen's interface ("),
        ),
    ]
}

/// The exit figures side by side, one column per backend.
#[derive(Debug, Default)]
struct Table {
    /// Figure name and its value per column name, in the order measured.
    rows: Vec<(&'static str, Vec<(&'static str, String)>)>,
    /// Lines under the table (backends that are unavailable, runs that failed).
    notes: Vec<String>,
}

impl Table {
    fn set(&mut self, figure: &'static str, column: &'static str, value: String) {
        match self.rows.iter_mut().find(|(name, _)| *name == figure) {
            Some((_, cells)) => cells.push((column, value)),
            None => self.rows.push((figure, vec![(column, value)])),
        }
    }

    fn render(&self) -> String {
        let columns: Vec<&str> = TARGETS.iter().map(|t| t.backend.name()).collect();
        let mut out = format!("{:<24}", "figure");
        for c in &columns {
            out.push_str(&format!("{c:>12}"));
        }
        out.push('\n');
        for (name, cells) in &self.rows {
            out.push_str(&format!("{name:<24}"));
            for c in &columns {
                let value = cells
                    .iter()
                    .find(|(column, _)| column == c)
                    .map_or("-", |(_, v)| v.as_str());
                out.push_str(&format!("{value:>12}"));
            }
            out.push('\n');
        }
        for note in &self.notes {
            out.push_str(note);
            out.push('\n');
        }
        out
    }

    fn print(&self) {
        println!(
            "==> exit round trips side by side (ticks = instructions: Bochs, and QEMU with \
             -icount shift=0)"
        );
        print!("{}", self.render());
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
            for target in TARGETS {
                let scenario = Scenario::parse(&scenario_text(r, target)).expect(r.name);
                assert_eq!(scenario.bochs_ips, r.ips);
                assert_eq!(scenario.backend, Some(target.backend));
                let machine = scenario.machine().expect(r.name);
                assert_eq!(machine.cpu, target.backend.cpu());
                assert_eq!(
                    scenario.qemu_args,
                    target
                        .qemu_args
                        .iter()
                        .filter(|_| machine.emulator != Emulator::Bochs)
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                );
            }
            let scenario = Scenario::parse(&scenario_text(r, TARGETS[0])).expect(r.name);
            assert_eq!(scenario.bochs_ips, r.ips);
        }
    }

    #[test]
    fn the_exit_table_puts_backends_side_by_side() {
        let mut table = Table::default();
        table.set("cpuid_exit_ticks", "bochs-vmx", "156".into());
        table.set("io_exit_ticks", "bochs-vmx", "395".into());
        table.set("cpuid_exit_ticks", "qemu-svm", "240".into());
        table
            .notes
            .push("bochs-svm: unavailable: no SVM backend".into());
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["figure", "bochs-vmx", "bochs-svm", "qemu-svm"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["cpuid_exit_ticks", "156", "-", "240"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["io_exit_ticks", "395", "-", "-"]
        );
        assert_eq!(lines[3], "bochs-svm: unavailable: no SVM backend");
        // Columns line up (fixed widths, values to the right).
        assert!(lines[..3].iter().all(|l| l.len() == 24 + 3 * 12), "{text}");
    }

    #[test]
    fn figures_per_exit_group_and_target() {
        let log = "(d1) cpuid_loop_ticks=15600000 per=156\n(d1) vmcall_loop_ticks=1 per=336\n\
                   (d1) io_loop_ticks=1 per=395\n(d1) yield_loop_ticks=9 per=4762\n\
                   [ 1.0] cpu0 INFO  BASALT-FIGURE: wake_latency_avg_us=983\n";
        assert_eq!(
            exit_figures("exits", log, TARGETS[0]),
            [
                ("cpuid_exit_ticks", Some(156)),
                ("vmcall_exit_ticks", Some(336)),
                ("io_exit_ticks", Some(395))
            ]
        );
        assert_eq!(
            exit_figures("switch", log, TARGETS[0]),
            [("context_switch_ticks", Some(2381))]
        );
        // Bochs' TSC at 4 MHz, QEMU's icount at 1 GHz.
        assert_eq!(
            exit_figures("wakeup", log, TARGETS[0])[0],
            ("wakeup_latency_ticks", Some(3932))
        );
        assert_eq!(
            exit_figures("wakeup", log, TARGETS[2])[0],
            ("wakeup_latency_ticks", Some(983_000))
        );
        assert_eq!(
            exit_figures("exits", "", TARGETS[1])[0],
            ("cpuid_exit_ticks", None)
        );
        assert_eq!(TARGETS[0].suffix(), "");
        assert_eq!(TARGETS[2].suffix(), "@qemu-svm");
    }

    #[test]
    fn io_figures_are_read_and_the_ratio_computed() {
        let log = "(d1) BASALT-FIGURE: io_blk_guest_kib_s=20000\nBASALT-FIGURE: io_blk_dom0_kib_s=80000\n(d1) BASALT-FIGURE: io_net_guest_to_dom0_kib_s=5000\n";
        let f = io_figures(log).expect("figures");
        assert_eq!(f[2], "io_blk_read_ratio@qemu-svm=0.250 (goal >= 0.5)");
        assert_eq!(f[3], "io_net_guest_to_dom0_kib_s@qemu-svm=5000");
        assert!(io_figures("BASALT-FIGURE: io_blk_dom0_kib_s=1\n").is_err());
    }

    #[test]
    fn the_io_run_parses() {
        let s = Scenario::parse(IO_SCENARIO).expect("bench/io.toml");
        assert_eq!(s.name, "bench-io@qemu-svm");
    }

    #[test]
    fn dom0_figures_are_read() {
        let log = "[ 1.6] cpu0 INFO  domain d0 (Domain-0) created: 384 MiB memory, 1 vCPU(s), \
                   entry 0x1000850; the control domain, Xen's interface (604 bytes of Basalt's memory)\n\
                   [ 1.6] cpu0 INFO  domain d0: its TSC reads 0 at 82000000 ticks after Basalt's entry\n\
                   [ 1.7] cpu0 INFO  domain d1 (xenguest) created: 4 MiB memory, 1 vCPU(s), \
                   entry 0x100000; Xen's interface (508 bytes of Basalt's memory)\n\
                   dom0: root shell on tty0 hvc0 at tsc=1000000000\n\
                   BASALT-FIGURE: privcmd_list_ticks=43000\n\
                   [ 9.0] cpu0 INFO  domain d0 (Domain-0) ended: poweroff, exit code 0; 384 MiB \
                   returned to the pool; Xen's interface held 17000 bytes of Basalt's memory (4 grant frames)\n";
        let figures = dom0_figures(log);
        let get = |n: &str| {
            figures
                .iter()
                .find(|(name, _)| *name == n)
                .and_then(|f| f.1)
        };
        assert_eq!(get("dom0_boot_ticks"), Some(1_082_000_000));
        assert_eq!(get("dom0_start_ticks"), Some(82_000_000));
        assert_eq!(get("privcmd_list_ticks"), Some(43000));
        assert_eq!(get("xen_iface_dom0_created_bytes"), Some(604));
        assert_eq!(get("xen_iface_dom0_bytes"), Some(17000));
        assert_eq!(get("xen_iface_dom0_grant_frames"), Some(4));
        assert_eq!(get("xen_iface_guest_bytes"), Some(508));
        assert_eq!(dom0_figures("")[0], ("dom0_boot_ticks", None));
    }

    #[test]
    fn the_reason_no_guest_can_start_is_read() {
        let log = "[ 0.1] cpu0 INFO  boot complete; no guest domain to run\n\
                   monitor: no guest can start: this CPU has no AMD-V (CPUID bit)\n";
        assert_eq!(
            no_guest_reason(log).as_deref(),
            Some("this CPU has no AMD-V (CPUID bit)")
        );
        assert_eq!(no_guest_reason("basalt> \n"), None);
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
