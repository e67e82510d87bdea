//! `cargo xtask`: build, image, run and test Basalt. See README.md.

mod bench;
mod dom0;
mod guests;
mod iso;
mod kernel;
mod layers;
mod linux;
mod modules;
mod packages;
mod run;
mod test;
mod toolchain;
mod util;
mod xtf;

use basalt_tests::emulator::{Emulator, Firmware, Machine};
use basalt_tests::scenario::parse_memory;
use std::path::PathBuf;
use util::Result;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build                     build the hypervisor ELF (target/x86_64-unknown-none/release/basalt)
  iso  [--out PATH] [--cmdline STR] [--module 'PATH ARGS']... [--timeout SECS]
                            make a bootable GRUB ISO (BIOS and UEFI; also boots from a USB stick)
  run  [--emulator qemu|bochs|kvm] [--cpu MODEL] [--smp N] [--mem SIZE] [--ips N] [--cmdline STR]
       [--module 'PATH ARGS']... [--no-guest] [--uefi]
                            boot Basalt with its serial console on this terminal (Ctrl-C ends it);
                            without --module, dom0 (Ctrl-A three times: its shell) and an example
                            VM it starts (tests/scenarios/qemu-run-example.toml; README.md), under
                            Bochs Debian's kernel and a busybox shell as domain 1 (--no-guest:
                            Basalt alone; --uefi: OVMF instead of SeaBIOS); CPU: QEMU EPYC (SVM), Bochs corei7_skylake_x
                            (VT-x; ryzen for SVM), KVM the host's (nested VT-x or SVM)
  test [--filter TEXT] [--jobs N] [--no-unit] [--no-boot]
                            host unit tests, then the boot scenarios in tests/scenarios/;
                            ends with 'N passed, N failed'
  bench [GROUP]...          VM-exit costs in instructions on VT-x (Bochs) and SVM (Bochs ryzen,
                            QEMU -icount shift=0) side by side, and Linux's boot as a guest
                            against bare (Bochs; QEMU/SVM), a guest's virtio disk and network
                            through dom0 (QEMU/SVM); groups: exits, switch, wakeup, console,
                            linux, linux-qemu, dom0, io (all by default)
  lint                      cargo fmt --check, the layer rule and cargo clippy -D warnings
  linux-assets              make the Linux guest test assets (target/linux/) and print their paths
  dom0                      make dom0's boot files (target/dom0/: initramfs with busybox, Xen,
                            disk and network modules, the static basalt command) and print them
  xtf-build                 build Xen's Test Framework's hvm64 tests (target/xtf/) and list them
  xtf  [--backend bochs-vmx|qemu-svm|bochs-svm] [--fep] [--filter TEXT] [--jobs N] [--table]
                            boot every XTF hvm64 test as the control domain (default bochs-vmx,
                            one at a time) and print XTF's verdicts beside Xen 4.17's and the
                            ones tests/xtf.toml records; fails on any difference (--table: print
                            tests/xtf.toml as docs/testing.md's Markdown table, boot nothing)

A module PATH of the form guest:NAME names a test guest from tests/guests (built on demand);
linux:NAME (vmlinux, bzImage, initrd, installer-linux, installer-initrd, installer-vmlinux)
names a Linux test asset made from Debian's packages into target/linux/ (on demand, kept);
xtf:NAME the hvm64 kernel of XTF test NAME, built into target/xtf/ (on demand).

Missing emulators and image tools are installed with apt-get when run as root on Debian;
otherwise the exact command to run is printed.";

struct Args {
    items: std::vec::IntoIter<String>,
}

impl Args {
    fn value(&mut self, flag: &str) -> Result<String> {
        self.items
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))
    }
}

fn main() {
    let mut items: Vec<String> = std::env::args().skip(1).collect();
    if items.is_empty() {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let command = items.remove(0);
    let mut args = Args {
        items: items.into_iter(),
    };
    let result = match command.as_str() {
        "build" => kernel::build().map(|k| println!("{}", k.elf.display())),
        "iso" => cmd_iso(&mut args),
        "run" => cmd_run(&mut args),
        "test" => cmd_test(&mut args),
        "lint" => cmd_lint(),
        "bench" => bench::bench(&args.items.by_ref().collect::<Vec<_>>()),
        "linux-assets" => linux::cmd_assets(),
        "dom0" => dom0::cmd_dom0(),
        "xtf" => cmd_xtf(&mut args),
        "xtf-build" => xtf::build().map(|names| {
            for name in names {
                println!("xtf:{name:<24} {}", xtf::path(&name).display());
            }
        }),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn cmd_iso(args: &mut Args) -> Result {
    let mut out = PathBuf::from("basalt.iso");
    let mut cmdline = String::new();
    let mut modules = Vec::new();
    let mut timeout = 3;
    while let Some(flag) = args.items.next() {
        match flag.as_str() {
            "--out" => out = args.value(&flag)?.into(),
            "--cmdline" => cmdline = args.value(&flag)?,
            "--module" => modules.push(iso::ModuleArg::parse(&args.value(&flag)?)?),
            "--timeout" => {
                timeout = args
                    .value(&flag)?
                    .parse()
                    .map_err(|_| "--timeout takes seconds")?
            }
            other => return Err(format!("unknown option {other:?} for iso\n\n{USAGE}")),
        }
    }
    let built = modules::build_for(modules.iter().map(|m| m.path.as_path()))?;
    let kernel = kernel::build()?;
    let modules = modules::module_args(
        modules.iter().map(|m| (m.path.as_path(), m.args.as_str())),
        &built,
    );
    let work = util::target_dir().join("iso-work");
    util::step(&format!("making {}", out.display()), || {
        iso::build(
            &iso::IsoSpec {
                kernel: &kernel.stripped,
                cmdline: &cmdline,
                modules: &modules,
                loader: iso::Loader::Multiboot2,
                timeout,
            },
            &work,
            &out,
        )
    })?;
    println!("{}", out.display());
    Ok(())
}

/// Bochs' instruction rate for runs with a Debian kernel (`linux:` modules).
const LINUX_IPS: u64 = 50_000_000;

/// The guest `cargo xtask run --emulator bochs` boots when no `--module` is
/// given (dom0 takes minutes under Bochs): Debian's kernel through its PVH
/// entry with the busybox initramfs, as in
/// `tests/scenarios/bochs-linux-shell.toml` (assets from xtask/src/linux.rs).
const DEFAULT_GUEST: [(&str, &str); 2] = [
    ("linux:vmlinux", "name=linux memory=256M -- console=ttyS0"),
    ("linux:initrd", "initrd-for=linux"),
];

/// QEMU's CPU for `cargo xtask run` unless `--cpu` names another: AMD SVM
/// with nested paging under TCG (QEMU's TCG has no VT-x).
const RUN_QEMU_CPU: &str = "EPYC";

fn cmd_run(args: &mut Args) -> Result {
    let mut machine = Machine {
        emulator: Emulator::Qemu,
        cpu: None,
        cpus: 0,
        memory_mib: 0,
        ips: basalt_tests::emulator::BOCHS_IPS,
        firmware: Firmware::Bios,
        reboots: 0,
    };
    let mut cmdline = String::new();
    let mut modules: Vec<iso::ModuleArg> = Vec::new();
    let mut ips = None;
    let mut cpu = None;
    let mut no_guest = false;
    let mut disk = None;
    while let Some(flag) = args.items.next() {
        match flag.as_str() {
            "--emulator" => machine.emulator = Emulator::parse(&args.value(&flag)?)?,
            "--cpu" => {
                let model = args.value(&flag)?;
                if model.is_empty() || model.contains(char::is_whitespace) {
                    return Err(format!(
                        "--cpu takes one CPU model, e.g. EPYC, qemu64,+svm,+npt or ryzen, not {model:?}"
                    ));
                }
                cpu = Some(model);
            }
            "--smp" => {
                machine.cpus = args
                    .value(&flag)?
                    .parse()
                    .map_err(|_| "--smp takes a number of CPUs")?;
                if !(1..=64).contains(&machine.cpus) {
                    return Err("--smp takes 1 to 64".into());
                }
            }
            "--mem" => machine.memory_mib = parse_memory(&args.value(&flag)?)?,
            "--ips" => {
                ips = Some(args.value(&flag)?.parse().map_err(|_| {
                    "--ips takes instructions per second, e.g. 50000000".to_string()
                })?)
            }
            "--cmdline" => cmdline = args.value(&flag)?,
            "--module" => modules.push(iso::ModuleArg::parse(&args.value(&flag)?)?),
            "--no-guest" => no_guest = true,
            "--uefi" => machine.firmware = Firmware::Ovmf,
            other => return Err(format!("unknown option {other:?} for run\n\n{USAGE}")),
        }
    }
    if machine.firmware == Firmware::Ovmf && machine.emulator == Emulator::Bochs {
        return Err("--uefi boots OVMF, which runs under QEMU or KVM, not Bochs".into());
    }
    if no_guest && !modules.is_empty() {
        return Err("--no-guest and --module contradict each other".into());
    }
    if modules.is_empty() && !no_guest && machine.emulator == Emulator::Bochs {
        for (path, args) in DEFAULT_GUEST {
            modules.push(iso::ModuleArg::parse(&format!("{path} {args}"))?);
        }
    } else if modules.is_empty() && !no_guest {
        let example = run::example()?;
        let example_machine = example.machine()?;
        if machine.cpus == 0 {
            machine.cpus = example_machine.cpus;
        }
        if machine.memory_mib == 0 {
            machine.memory_mib = example_machine.memory_mib;
        }
        if cmdline.is_empty() {
            cmdline = example.cmdline.clone();
        }
        for m in &example.modules {
            modules.push(iso::ModuleArg {
                path: m.path.clone(),
                args: m.args.clone(),
            });
        }
        disk = example.disk;
    }
    machine.cpus = machine.cpus.max(1);
    if machine.memory_mib == 0 {
        machine.memory_mib = 512;
    }
    // The CPU model: as asked, else the emulator's choice for guests
    // (a String leaked once: the machine description is `Copy`).
    machine.cpu = match (cpu, machine.emulator) {
        (Some(model), _) => Some(&*Box::leak(model.into_boxed_str())),
        (None, Emulator::Qemu) => Some(RUN_QEMU_CPU),
        (None, Emulator::Kvm) => Some(
            basalt_tests::emulator::kvm_cpu()
                .map_err(|r| format!("--emulator kvm cannot work here: {r}"))?,
        ),
        (None, Emulator::Bochs) => None,
    };
    // Under Bochs a real operating system needs a CPU of tens of MHz (its
    // timers run in emulated time); Basalt's test guests boot faster at the
    // default.
    machine.ips = ips.unwrap_or(
        if modules
            .iter()
            .any(|m| m.path.to_string_lossy().starts_with("linux:"))
        {
            LINUX_IPS
        } else {
            basalt_tests::emulator::BOCHS_IPS
        },
    );
    run::run(&run::RunOptions {
        machine,
        cmdline,
        modules,
        disk,
    })
}

fn cmd_test(args: &mut Args) -> Result {
    let mut options = test::TestOptions {
        filter: None,
        no_unit: false,
        no_boot: false,
        jobs: 2,
    };
    while let Some(flag) = args.items.next() {
        match flag.as_str() {
            "--filter" => options.filter = Some(args.value(&flag)?),
            "--jobs" => {
                options.jobs = args
                    .value(&flag)?
                    .parse()
                    .map_err(|_| "--jobs takes a number")?
            }
            "--no-unit" => options.no_unit = true,
            "--no-boot" => options.no_boot = true,
            other => return Err(format!("unknown option {other:?} for test\n\n{USAGE}")),
        }
    }
    test::test(&options)
}

fn cmd_xtf(args: &mut Args) -> Result {
    let mut options = xtf::XtfOptions {
        kind: basalt_tests::xtf::RunKind {
            backend: basalt_tests::scenario::Backend::BochsVmx,
            fep: false,
        },
        filter: None,
        jobs: 1,
    };
    while let Some(flag) = args.items.next() {
        match flag.as_str() {
            "--backend" => {
                options.kind.backend = basalt_tests::scenario::Backend::parse(&args.value(&flag)?)?
            }
            "--fep" => options.kind.fep = true,
            "--table" => {
                let table =
                    basalt_tests::xtf::Table::load(&basalt_tests::xtf::table_path(&util::root()))?;
                print!("{}", basalt_tests::xtf::markdown(&table));
                return Ok(());
            }
            "--filter" => options.filter = Some(args.value(&flag)?),
            "--jobs" => {
                options.jobs = args
                    .value(&flag)?
                    .parse()
                    .map_err(|_| "--jobs takes a number")?
            }
            other => return Err(format!("unknown option {other:?} for xtf\n\n{USAGE}")),
        }
    }
    xtf::cmd(&options)
}

fn cmd_lint() -> Result {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    util::step("cargo fmt --check", || {
        util::run(
            std::process::Command::new(&cargo)
                .current_dir(util::root())
                .args(["fmt", "--all", "--", "--check"]),
        )
    })?;
    util::step("layers (hypervisor/src, docs/architecture.md)", || {
        layers::check(&util::root().join("hypervisor").join("src")).map_err(|v| {
            let lines: Vec<String> = v.iter().map(ToString::to_string).collect();
            format!(
                "{} layer violation(s) in hypervisor/src:\n{}",
                v.len(),
                lines.join("\n")
            )
        })
    })?;
    util::step("cargo clippy (host crates)", || {
        util::run(
            std::process::Command::new(&cargo)
                .current_dir(util::root())
                .args(["clippy", "--all-targets", "--", "-D", "warnings"]),
        )
    })?;
    let toolchain = toolchain::find()?;
    if toolchain.rustc.starts_with("/usr/bin") {
        packages::ensure(packages::DEBIAN_CLIPPY, "linting the hypervisor")?;
    }
    util::step("clippy (hypervisor, x86_64-unknown-none)", || {
        let mut cmd = toolchain.clippy()?;
        util::run(cmd.current_dir(util::root()))
    })
}
