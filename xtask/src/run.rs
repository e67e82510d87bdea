//! `cargo xtask run`: boot Basalt with its serial console on the terminal.

use crate::iso::{self, IsoSpec, Loader, ModuleArg};
use crate::packages;
use crate::util::{self, Result};
use basalt_tests::console::{self, Pty, SerialBuffer, Waited};
use basalt_tests::emulator::{self, Devices, Emulator, Machine, Serial};
use basalt_tests::scenario::DiskSpec;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

/// What `run` boots.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The machine.
    pub machine: Machine,
    /// Hypervisor command line.
    pub cmdline: String,
    /// Boot modules.
    pub modules: Vec<ModuleArg>,
    /// A disk made for the run (its assets are module paths), the first
    /// IDE disk: dom0's `/dev/sda` (QEMU and KVM only).
    pub disk: Option<DiskSpec>,
}

/// What `cargo xtask run` boots under QEMU or KVM when no `--module` is
/// given: this scenario's machine (dom0, its disk with the example VM; its
/// steps are README.md's walkthrough, so that CI runs what users meet).
const EXAMPLE: &str = "tests/scenarios/qemu-run-example.toml";

/// The scenario [`EXAMPLE`]: its modules, command line, CPUs, memory and
/// disk are `run`'s default machine.
pub fn example() -> Result<basalt_tests::Scenario> {
    let file = util::root().join(EXAMPLE);
    std::fs::read_to_string(&file)
        .map_err(|e| e.to_string())
        .and_then(|text| basalt_tests::Scenario::parse(&text))
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// The signal that ended the run, 0 while none has; `SIGINT` also for
/// Ctrl-C typed on a terminal in raw mode.
static STOPPED_BY: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    STOPPED_BY.store(signal, Ordering::SeqCst);
}

/// Catches `signals` in xtask so that it can stop the emulator, put the
/// terminal back and say so.
fn catch_signals(signals: &[libc::c_int]) {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for &signal in signals {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `signal` has no other preconditions.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
}

/// Boots Basalt; returns when the emulator ends or Ctrl-C is pressed.
pub fn run(options: &RunOptions) -> Result {
    let machine = options.machine;
    match machine.emulator {
        Emulator::Qemu => packages::ensure(packages::QEMU, "running under QEMU")?,
        Emulator::Bochs => packages::ensure(packages::BOCHS, "running under Bochs")?,
        Emulator::Kvm => {
            emulator::kvm_cpu().map_err(|r| format!("--emulator kvm cannot work here: {r}"))?;
            packages::ensure(packages::QEMU, "running under QEMU/KVM")?;
        }
    }
    if machine.firmware == emulator::Firmware::Ovmf {
        packages::ensure(packages::OVMF, "booting through UEFI (OVMF)")?;
    }
    if options.disk.is_some() {
        packages::ensure(packages::DISK_TOOLS, "making the run's disk")?;
    }
    let assets = options.disk.iter().flat_map(|d| d.assets.values());
    let built = crate::modules::build_for(
        options
            .modules
            .iter()
            .map(|m| m.path.as_path())
            .chain(assets.map(|p| p.as_path())),
    )?;
    let kernel = crate::kernel::build()?;
    let modules = crate::modules::module_args(
        options
            .modules
            .iter()
            .map(|m| (m.path.as_path(), m.args.as_str())),
        &built,
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
    let disk = dir.join("disk.img");
    if let Some(spec) = &options.disk {
        if machine.emulator == Emulator::Bochs {
            return Err("the run's disk is attached under QEMU or KVM only, not Bochs".into());
        }
        let mut spec = spec.clone();
        for asset in spec.assets.values_mut() {
            *asset = crate::modules::resolve(asset, &built);
        }
        util::step("making the run's disk (dom0's /dev/sda)", || {
            basalt_tests::devices::make_disk(&spec, &disk)
        })?;
    }
    eprintln!(
        "==> booting under {} (CPU {}, {} CPUs, {} MiB); Ctrl-C ends the run",
        machine.emulator.name(),
        machine.cpu.unwrap_or(match machine.emulator {
            Emulator::Bochs => emulator::BOCHS_CPU,
            _ => "max",
        }),
        machine.cpus,
        machine.memory_mib
    );
    if options.disk.is_some() {
        eprintln!(
            "==> at the monitor's `basalt> ` prompt, Ctrl-A three times gives the console to \
             dom0 (`dom0# `), whose last lines say how to start the example VM; three more \
             back to the monitor; `poweroff -f` in dom0 ends the run"
        );
    } else if !options.modules.is_empty() && machine.emulator != Emulator::Bochs {
        eprintln!(
            "==> at the monitor's `basalt> ` prompt, Ctrl-A three times gives the console to \
             domain 1 (a Linux guest's shell: `linux# `), three more back to the monitor"
        );
    }
    match machine.emulator {
        Emulator::Bochs => {
            // xtask owns Bochs (another process group) and the terminal's
            // mode: it ends Bochs and restores the terminal on any of these.
            catch_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
            run_bochs(&machine, &image, &dir)
        }
        _ => {
            catch_signals(&[libc::SIGINT]);
            let mut cmd = emulator::command(&machine, &image, Serial::Stdio, None);
            cmd.args(emulator::qemu_device_args(&Devices {
                disk: options.disk.as_ref().map(|_| disk.as_path()),
                network: false,
            }));
            cmd.stderr(Stdio::piped());
            let mut child = cmd.spawn().map_err(|e| format!("cannot start QEMU: {e}"))?;
            let filter = child
                .stderr
                .take()
                .map(|err| std::thread::spawn(move || filter_qemu_stderr(err)));
            // QEMU shares the terminal and takes Ctrl-C itself; xtask waits.
            let status = child.wait().map_err(|e| e.to_string())?;
            if let Some(filter) = filter {
                let _ = filter.join();
            }
            report_end(status.code())
        }
    }
}

/// What QEMU says for each feature of a named CPU model (`EPYC`) that TCG
/// does not emulate.
const TCG_FEATURE_WARNING: &str = "warning: TCG doesn't support requested feature: ";

/// Copies QEMU's standard error to ours, except its warnings about CPU
/// features TCG lacks (a dozen lines for `EPYC`, all at start-up), which
/// become one line naming them once QEMU has been quiet for a moment.
fn filter_qemu_stderr(err: std::process::ChildStderr) {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut missing: Vec<String> = Vec::new();
    let say = |missing: &mut Vec<String>| {
        if !missing.is_empty() {
            eprintln!(
                "==> QEMU's TCG leaves out {} feature(s) of this CPU model: {}",
                missing.len(),
                missing.join(", ")
            );
            missing.clear();
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(300)) {
            Ok(line) => match line.split_once(TCG_FEATURE_WARNING) {
                Some((_, feature)) => {
                    // `CPUID.8000000AH:EDX.nrip-save [bit 3]` -> `nrip-save`
                    let name = feature.split_whitespace().next().unwrap_or(feature);
                    missing.push(name.rsplit('.').next().unwrap_or(name).to_string());
                }
                None => {
                    say(&mut missing);
                    eprintln!("{line}");
                }
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => say(&mut missing),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    say(&mut missing);
}

fn report_end(code: Option<i32>) -> Result {
    match STOPPED_BY.load(Ordering::SeqCst) {
        0 => {}
        libc::SIGINT => {
            eprintln!("\n==> stopped by Ctrl-C");
            return Ok(());
        }
        signal => {
            let name = match signal {
                libc::SIGTERM => "SIGTERM".to_string(),
                libc::SIGHUP => "SIGHUP".to_string(),
                other => format!("signal {other}"),
            };
            eprintln!("\n==> stopped by {name}");
            return Ok(());
        }
    }
    match code {
        Some(0 | 33) | None => Ok(()),
        Some(35) => Err("Basalt ended the run with a FAIL verdict".into()),
        Some(code) => Err(format!("the emulator exited with status {code}")),
    }
}

/// Bochs' COM1 is a pseudo-terminal ([`Pty`], Bochs' `mode=term`, as in the
/// scenarios with steps): xtask copies its output to standard output and to
/// `serial.log`, and standard input to it. A terminal on standard input is
/// put in raw mode for the run, so every key, Ctrl-A included, goes to
/// Basalt, except Ctrl-C, which ends the run. Piped input waits for the
/// monitor's first prompt and goes one byte every [`SEND_PACE`]; after its
/// end the run goes on until Bochs ends or Ctrl-C. Bochs runs in its own
/// process group so that Ctrl-C does not drop it into its debugger prompt;
/// xtask ends it instead.
fn run_bochs(machine: &Machine, image: &Path, dir: &Path) -> Result {
    let serial = dir.join("serial.log");
    let config = dir.join("bochsrc");
    let rc = dir.join("bochs-rc");
    let log = dir.join("bochs.log");
    let serial_file = File::create(&serial).map_err(|e| format!("{}: {e}", serial.display()))?;
    let pty = Pty::open().map_err(|e| format!("cannot open a pseudo-terminal for COM1: {e}"))?;
    std::fs::write(
        &config,
        emulator::bochs_config_serial(machine, image, Serial::Tty(pty.path()), &log),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(&rc, emulator::BOCHS_RC).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let from_guest = pty.stream(Arc::clone(&stop)).map_err(|e| e.to_string())?;
    let to_guest = pty.stream(Arc::clone(&stop)).map_err(|e| e.to_string())?;
    let terminal = std::io::stdin().is_terminal();
    let raw = if terminal {
        Some(RawStdin::enter().map_err(|e| format!("cannot put the terminal in raw mode: {e}"))?)
    } else {
        None
    };
    let mut cmd = emulator::command(
        machine,
        image,
        Serial::Tty(pty.path()),
        Some((&config, &rc)),
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start Bochs: {e}"))?;
    if terminal {
        eprintln!(
            "==> COM1 is on this terminal (raw): Ctrl-A three times switches the input \
             between Basalt's monitor and each domain; Ctrl-C ends the run"
        );
    } else {
        eprintln!("==> standard input goes to COM1 once the monitor's first {PROMPT:?} appears");
    }
    let buffer = Arc::new(SerialBuffer::default());
    let reader = {
        let buffer = Arc::clone(&buffer);
        let out = Tee {
            log: serial_file,
            out: std::io::stdout(),
        };
        std::thread::spawn(move || console::pump(from_guest, out, &buffer))
    };
    let typist = {
        let buffer = Arc::clone(&buffer);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || forward_input(to_guest, terminal, &buffer, &stop))
    };
    loop {
        if STOPPED_BY.load(Ordering::SeqCst) != 0 {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        // Bochs' own exit status is always 1 (platform facts §3): judge nothing from it.
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both threads end within a poll interval: the reader once the pty is
    // drained, the typist at its next look.
    stop.store(true, Ordering::SeqCst);
    let logged = reader.join();
    let _ = typist.join();
    drop(raw);
    if let Ok(Err(e)) = logged {
        eprintln!("\n==> writing {} failed: {e}", serial.display());
    }
    eprintln!(
        "\n==> serial log: {}; Bochs log: {}",
        serial.display(),
        log.display()
    );
    report_end(None)
}

/// Time between two bytes sent to the emulated UART, so that pasted or piped
/// text does not overrun it.
const SEND_PACE: Duration = Duration::from_millis(10);

/// The monitor's prompt, which piped input waits for.
const PROMPT: &str = "basalt> ";

/// Ctrl-C from a terminal in raw mode: ends the run (Basalt's monitor does
/// not use it).
const CTRL_C: u8 = 0x03;

/// Piped input read ahead of what has been sent, at most.
const MAX_PENDING: usize = 64 * 1024;

/// Copies standard input to the guest machine's COM1 (`to_guest`), one byte
/// every [`SEND_PACE`], until `stop`. From a `terminal` (raw mode): at once,
/// Ctrl-C ends the run. Otherwise: from the monitor's first prompt on.
fn forward_input(
    mut to_guest: console::PtyStream,
    terminal: bool,
    buffer: &SerialBuffer,
    stop: &AtomicBool,
) {
    // The descriptor itself: `Stdin`'s buffer would hide bytes from `poll`.
    let Ok(stdin) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return;
    };
    let mut stdin = File::from(stdin);
    let mut pending = VecDeque::new();
    let mut open = true;
    let mut prompted = terminal;
    let mut next = Instant::now();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        if !prompted {
            prompted = matches!(buffer.wait_for(PROMPT, 0, Instant::now()), Waited::Found(_));
        }
        let now = Instant::now();
        if prompted
            && now >= next
            && let Some(byte) = pending.pop_front()
        {
            if to_guest.write_all(&[byte]).is_err() {
                return;
            }
            next = now + SEND_PACE;
            continue;
        }
        let wait = if prompted && !pending.is_empty() {
            next.saturating_duration_since(now)
        } else {
            Duration::from_millis(50)
        };
        if !open || pending.len() >= MAX_PENDING {
            std::thread::sleep(wait);
            continue;
        }
        match console::readable(&stdin, wait) {
            Ok(false) => {}
            Ok(true) => match stdin.read(&mut chunk) {
                Ok(0) => open = false,
                Ok(n) => {
                    for &byte in &chunk[..n] {
                        if terminal && byte == CTRL_C {
                            STOPPED_BY.store(libc::SIGINT, Ordering::SeqCst);
                        } else {
                            pending.push_back(byte);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => open = false,
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => open = false,
        }
    }
}

/// Writes to the serial log and, best effort, to standard output.
struct Tee {
    log: File,
    out: std::io::Stdout,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log.write_all(buf)?;
        let mut out = self.out.lock();
        let _ = out.write_all(buf).and_then(|()| out.flush());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.log.flush()
    }
}

/// The terminal mode standard input had before [`RawStdin::enter`].
static SAVED_MODE: Mutex<Option<libc::termios>> = Mutex::new(None);

/// Standard input, a terminal, in raw mode until dropped (or a panic).
/// Output processing stays on, so xtask's own lines still begin at the left.
struct RawStdin;

impl RawStdin {
    fn enter() -> std::io::Result<Self> {
        let saved = console::make_raw(std::io::stdin(), true)?;
        *SAVED_MODE.lock().unwrap_or_else(PoisonError::into_inner) = Some(saved);
        // Panics abort (no unwinding): the hook puts the terminal back.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_stdin();
            previous(info);
        }));
        Ok(Self)
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        restore_stdin();
    }
}

/// Puts standard input back in the mode it had, once.
fn restore_stdin() {
    let saved = match SAVED_MODE.try_lock() {
        Ok(mut saved) => saved.take(),
        Err(TryLockError::Poisoned(e)) => e.into_inner().take(),
        Err(TryLockError::WouldBlock) => None,
    };
    if let Some(mode) = saved {
        let _ = console::set_terminal_mode(std::io::stdin(), &mode);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_machine_is_dom0_with_the_example_on_its_disk() {
        let example = super::example().expect("the example scenario parses");
        let paths: Vec<String> = example
            .modules
            .iter()
            .map(|m| m.path.to_string_lossy().into_owned())
            .collect();
        assert_eq!(paths, ["linux:vmlinux", "dom0:initrd"]);
        assert!(example.modules[0].args.contains("role=control"));
        assert!(example.modules[0].args.contains(" dom0.disk"));
        let disk = example.disk.expect("a disk for dom0");
        for file in ["rc.sh", "example/example.toml", "example/init"] {
            assert!(disk.files.contains_key(file), "{file}");
        }
        assert!(disk.files["rc.sh"].contains("/etc/basalt/example.toml"));
        // README's walkthrough is what the scenario types.
        let sent: String = example
            .steps
            .iter()
            .filter_map(|s| s.send.clone())
            .collect();
        for command in [
            "basalt create /etc/basalt/example.toml\r",
            "basalt console example\r",
            "\u{1d}",
            "basalt destroy example",
        ] {
            assert!(sent.contains(command), "{command:?}");
        }
    }
}
