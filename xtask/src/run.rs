//! `cargo xtask run`: boot Basalt with its serial console on the terminal.

use crate::iso::{self, IsoSpec, Loader, ModuleArg};
use crate::packages;
use crate::util::{self, Result};
use basalt_tests::emulator::{self, Emulator, Machine, Serial};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What `run` boots.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The machine.
    pub machine: Machine,
    /// Hypervisor command line.
    pub cmdline: String,
    /// Boot modules.
    pub modules: Vec<ModuleArg>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches Ctrl-C in xtask so that it can stop the emulator and say so.
fn catch_ctrl_c() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; `signal` has no other preconditions.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

/// Boots Basalt; returns when the emulator ends or Ctrl-C is pressed.
pub fn run(options: &RunOptions) -> Result {
    let machine = options.machine;
    match machine.emulator {
        Emulator::Qemu => packages::ensure(packages::QEMU, "running under QEMU")?,
        Emulator::Bochs => packages::ensure(packages::BOCHS, "running under Bochs")?,
        Emulator::Kvm => {
            if let Some(reason) = emulator::kvm_unusable_reason() {
                return Err(format!("--emulator kvm cannot work here: {reason}"));
            }
            packages::ensure(packages::QEMU, "running under QEMU/KVM")?;
        }
    }
    let kernel = crate::kernel::build()?;
    let guests = crate::modules::guests_for(options.modules.iter().map(|m| m.path.as_path()))?;
    let modules = crate::modules::module_args(
        options
            .modules
            .iter()
            .map(|m| (m.path.as_path(), m.args.as_str())),
        guests.as_ref(),
    );
    let dir = util::target_dir().join("run");
    let image = dir.join("basalt-run.iso");
    util::step("making the boot ISO", || {
        iso::build(
            &IsoSpec {
                kernel: &kernel.stripped,
                cmdline: &options.cmdline,
                modules: &modules,
                loader: Loader::Multiboot2,
                timeout: 0,
            },
            &dir.join("iso"),
            &image,
        )
    })?;
    catch_ctrl_c();
    eprintln!(
        "==> booting under {} ({} CPUs, {} MiB); Ctrl-C ends the run",
        machine.emulator.name(),
        machine.cpus,
        machine.memory_mib
    );
    match machine.emulator {
        Emulator::Bochs => run_bochs(&machine, &image, &dir),
        _ => {
            let mut cmd = emulator::command(&machine, &image, Serial::Stdio, None);
            let mut child = cmd.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?;
            // QEMU shares the terminal and takes Ctrl-C itself; xtask waits.
            let status = child.wait().map_err(|e| e.to_string())?;
            report_end(status.code())
        }
    }
}

fn report_end(code: Option<i32>) -> Result {
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("\n==> stopped by Ctrl-C");
        return Ok(());
    }
    match code {
        Some(0 | 33) | None => Ok(()),
        Some(35) => Err("Basalt ended the run with a FAIL verdict".into()),
        Some(code) => Err(format!("the emulator exited with status {code}")),
    }
}

/// Bochs writes COM1 to a file that xtask copies to the terminal. Bochs runs
/// in its own process group so that Ctrl-C does not drop it into its
/// debugger prompt; xtask ends it instead.
fn run_bochs(machine: &Machine, image: &std::path::Path, dir: &std::path::Path) -> Result {
    let serial = dir.join("serial.log");
    let config = dir.join("bochsrc");
    let rc = dir.join("bochs-rc");
    let log = dir.join("bochs.log");
    std::fs::write(&serial, b"").map_err(|e| e.to_string())?;
    std::fs::write(
        &config,
        emulator::bochs_config(machine, image, &serial, &log),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(&rc, emulator::BOCHS_RC).map_err(|e| e.to_string())?;
    let mut cmd = emulator::command(machine, image, Serial::File(&serial), Some((&config, &rc)));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start Bochs: {e}"))?;
    let mut file = std::fs::File::open(&serial).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut out = std::io::stdout();
    let copy = |file: &mut std::fs::File, buf: &mut Vec<u8>, out: &mut std::io::Stdout| {
        buf.clear();
        let _ = file.read_to_end(buf);
        if !buf.is_empty() {
            let _ = out.write_all(buf);
            let _ = out.flush();
        }
    };
    let status = loop {
        copy(&mut file, &mut buf, &mut out);
        if INTERRUPTED.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if let Ok(Some(status)) = child.try_wait() {
            copy(&mut file, &mut buf, &mut out);
            break Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("\n==> Bochs log: {}", log.display());
    // Bochs' own exit status is always 1 (platform facts §3): judge nothing from it.
    let _ = status;
    report_end(None)
}
