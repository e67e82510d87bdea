//! Running one scenario: boot, watch the serial log (and run the scenario's
//! console steps), stop, judge.

use crate::console::{self, ConnectError, Console, Pty};
use crate::devices::{self, NetListener};
use crate::emulator::{self, Devices, Emulator, Machine, Serial};
use crate::matcher;
use crate::scenario::{self, Scenario, Step};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Seconds the emulator gets to exit by itself after the verdict line.
const EXIT_GRACE: Duration = Duration::from_secs(3);

/// Basalt's banner, printed once per boot: the harness counts the boots of a
/// scenario with `reboots` by it.
const BANNER: &str = "INFO  Basalt hypervisor ";

/// Why a run that may boot `1 + reboots` times must stop, if `log` shows
/// more boots than that (a machine that keeps resetting).
pub fn too_many_boots(log: &str, reboots: u32) -> Option<String> {
    let boots = log.matches(BANNER).count();
    (boots > 1 + reboots as usize).then(|| {
        format!("the machine booted {boots} times; the scenario allows {reboots} reboot(s)")
    })
}

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// Whether the scenario passed.
    pub passed: bool,
    /// Summary (pass) or reason (fail).
    pub detail: String,
    /// The serial log.
    pub serial_log: PathBuf,
    /// The emulator's own output.
    pub emulator_log: PathBuf,
    /// Wall-clock seconds.
    pub seconds: f64,
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Boots `iso` as `scenario` says, writing logs into `log_dir`.
pub fn run(scenario: &Scenario, iso: &Path, log_dir: &Path) -> Outcome {
    let started = Instant::now();
    let serial_log = log_dir.join(format!("{}.serial.log", scenario.name));
    let emulator_log = log_dir.join(format!("{}.emulator.log", scenario.name));
    let mut outcome = Outcome {
        name: scenario.name.clone(),
        passed: false,
        detail: String::new(),
        serial_log: serial_log.clone(),
        emulator_log: emulator_log.clone(),
        seconds: 0.0,
    };
    let result = boot_and_watch(scenario, iso, log_dir, &serial_log, &emulator_log);
    outcome.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(detail) => {
            outcome.passed = true;
            outcome.detail = detail;
        }
        Err(reason) => outcome.detail = reason,
    }
    outcome
}

/// Starts with a fresh port when the emulator could not listen on the one
/// it was given (another program took it meanwhile).
const PORT_ATTEMPTS: usize = 3;

/// What starting the emulator needs.
struct Launch<'a> {
    scenario: &'a Scenario,
    machine: Machine,
    iso: &'a Path,
    emulator_log: &'a Path,
    bochs_cfg: PathBuf,
    bochs_rc: PathBuf,
    bochs_log: PathBuf,
    /// The scenario's steps, with the network port in place of
    /// [`scenario::NET_PORT`].
    steps: Vec<Step>,
    devices: Devices<'a>,
}

impl Launch<'_> {
    /// Starts the emulator with COM1 on `serial`.
    fn spawn(&self, serial: Serial<'_>) -> Result<Child, String> {
        let machine = &self.machine;
        let out = std::fs::File::create(self.emulator_log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        if machine.emulator == Emulator::Bochs {
            let mut cfg = emulator::bochs_config_serial(machine, self.iso, serial, &self.bochs_log);
            cfg.push_str(&emulator::bochs_device_config(&self.devices));
            std::fs::write(&self.bochs_cfg, cfg).map_err(|e| e.to_string())?;
            std::fs::write(&self.bochs_rc, emulator::BOCHS_RC).map_err(|e| e.to_string())?;
        }
        let mut cmd = emulator::command(
            machine,
            self.iso,
            serial,
            Some((&self.bochs_cfg, &self.bochs_rc)),
        );
        if machine.emulator != Emulator::Bochs {
            cmd.args(emulator::qemu_device_args(&self.devices));
            cmd.args(&self.scenario.qemu_args);
        }
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.spawn()
            .map_err(|e| format!("cannot start {}: {e}", machine.emulator.name()))
    }

    /// Starts the emulator with COM1 carried by the harness and starts the
    /// scenario's steps on it: a pseudo-terminal under Bochs, a loopback TCP
    /// port under QEMU (see [`console`]).
    fn spawn_interactive(
        &self,
        serial_log: &Path,
        deadline: Instant,
    ) -> Result<(Child, Console), String> {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(serial_log)
            .map_err(|e| format!("{}: {e}", serial_log.display()))?;
        let steps = self.steps.clone();
        let pace = Duration::from_millis(self.scenario.send_pace_ms);
        if self.machine.emulator == Emulator::Bochs {
            let pty = Pty::open().map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
            let mut child = self.spawn(Serial::Tty(pty.path()))?;
            return match Console::start_pty(pty, log, steps, pace, deadline) {
                Ok(console) => Ok((child, console)),
                Err(e) => {
                    kill(&mut child);
                    Err(format!("cannot start the serial console: {e}"))
                }
            };
        }
        let (mut child, stream) = self.spawn_tcp(deadline)?;
        match Console::start_tcp(stream, log, steps, pace, deadline) {
            Ok(console) => Ok((child, console)),
            Err(e) => {
                kill(&mut child);
                Err(format!("cannot start the serial console: {e}"))
            }
        }
    }

    /// Starts the emulator with COM1 on a free loopback TCP port and
    /// connects to it.
    fn spawn_tcp(&self, deadline: Instant) -> Result<(Child, TcpStream), String> {
        let name = self.machine.emulator.name();
        for attempt in 1..=PORT_ATTEMPTS {
            let port =
                console::free_port().map_err(|e| format!("no free loopback port for COM1: {e}"))?;
            let mut child = self.spawn(Serial::Tcp(port))?;
            let connected =
                console::connect(port, deadline, || matches!(child.try_wait(), Ok(Some(_))));
            match connected {
                Ok(stream) => return Ok((child, stream)),
                Err(ConnectError::TimedOut) => {
                    kill(&mut child);
                    return Err(format!(
                        "timed out after {} s waiting for {name} to accept the COM1 connection \
                         on 127.0.0.1:{port} (emulator log {})",
                        self.scenario.timeout,
                        self.emulator_log.display()
                    ));
                }
                Err(ConnectError::Ended) => {
                    let _ = child.wait();
                    let log = std::fs::read_to_string(self.emulator_log).unwrap_or_default();
                    if log.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                        continue;
                    }
                    return Err(format!(
                        "{name} ended before the harness could connect to COM1 on \
                         127.0.0.1:{port} (emulator log {})",
                        self.emulator_log.display()
                    ));
                }
            }
        }
        Err(format!(
            "{name} could not listen for COM1 on a loopback port"
        ))
    }
}

fn boot_and_watch(
    scenario: &Scenario,
    iso: &Path,
    log_dir: &Path,
    serial_log: &Path,
    emulator_log: &Path,
) -> Result<String, String> {
    let mut machine = scenario.machine()?;
    if machine.emulator == Emulator::Kvm {
        let cpu = emulator::kvm_cpu().map_err(|reason| format!("kvm: {reason}"))?;
        machine.cpu = machine.cpu.or(Some(cpu));
    }
    std::fs::create_dir_all(log_dir).map_err(|e| e.to_string())?;
    std::fs::write(serial_log, b"").map_err(|e| format!("{}: {e}", serial_log.display()))?;
    let disk = log_dir.join(format!("{}.disk.img", scenario.name));
    if let Some(spec) = &scenario.disk {
        devices::make_disk(spec, &disk)?;
    }
    // The listener writes what clients send into the serial log, where
    // `expect` finds it.
    let net = if scenario.network {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(serial_log)
            .map_err(|e| format!("{}: {e}", serial_log.display()))?;
        let listener = NetListener::start(log)
            .map_err(|e| format!("cannot listen on a loopback TCP port: {e}"))?;
        Some(listener)
    } else {
        None
    };
    let port = net.as_ref().map_or(0, NetListener::port).to_string();
    let steps = scenario
        .steps
        .iter()
        .map(|s| Step {
            wait: s.wait.clone(),
            send: s
                .send
                .as_ref()
                .map(|t| t.replace(scenario::NET_PORT, &port)),
        })
        .collect();
    let launch = Launch {
        scenario,
        machine,
        iso,
        emulator_log,
        bochs_cfg: log_dir.join(format!("{}.bochsrc", scenario.name)),
        bochs_rc: log_dir.join(format!("{}.bochs-rc", scenario.name)),
        bochs_log: log_dir.join(format!("{}.bochs.log", scenario.name)),
        steps,
        devices: Devices {
            disk: scenario.disk.as_ref().map(|_| disk.as_path()),
            network: scenario.network,
        },
    };
    let deadline = Instant::now() + Duration::from_secs(scenario.timeout);
    // Only scenarios with steps type into COM1; the others keep the file
    // (but a network's listener writes into the log too: the harness
    // carries COM1 then, as the emulator would overwrite those lines).
    let (mut child, console) = if scenario.steps.is_empty() && net.is_none() {
        (launch.spawn(Serial::File(serial_log))?, None)
    } else {
        let (child, console) = launch.spawn_interactive(serial_log, deadline)?;
        (child, Some(console))
    };

    let mut verdict_seen: Option<Instant> = None;
    let mut timed_out = false;
    let mut rebooted_too_often = None;
    let exit = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        let now = Instant::now();
        if verdict_seen.is_none() {
            let log = matcher::normalise(&std::fs::read(serial_log).unwrap_or_default());
            if matcher::verdict(&log, true).is_some() {
                verdict_seen = Some(now);
            }
            rebooted_too_often =
                too_many_boots(&log, scenario.reboots).filter(|_| scenario.reboots > 0);
            if rebooted_too_often.is_some() {
                kill(&mut child);
                break None;
            }
        }
        if verdict_seen.is_some_and(|t| now >= t + EXIT_GRACE) {
            kill(&mut child);
            break None;
        }
        if now >= deadline {
            kill(&mut child);
            timed_out = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The emulator has ended: the console's output is complete in the log.
    let net_note = net.map(|listener| {
        let port = listener.port();
        let clients = listener.finish();
        format!(
            " (the harness's TCP listener on 127.0.0.1:{port}, reached from the guest at \
             10.0.2.2:{port}, had {clients} client(s); each one's line is logged as `{}\"...\"`)",
            devices::RECEIVED
        )
    });
    let net_note = net_note.unwrap_or_default();
    if let Some(console) = console
        && let Err(reason) = console.finish(serial_log)
    {
        let log = matcher::normalise(&std::fs::read(serial_log).unwrap_or_default());
        return Err(match matcher::verdict(&log, false) {
            Some(matcher::Verdict::Fail(why)) => {
                format!("{reason}; Basalt's verdict: FAIL ({why})")
            }
            _ => format!("{reason}{net_note}"),
        });
    }
    if let Some(reason) = rebooted_too_often {
        return Err(reason);
    }
    let log = matcher::normalise(&std::fs::read(serial_log).unwrap_or_default());
    if timed_out && matcher::verdict(&log, false).is_none() {
        return Err(format!(
            "timed out after {} s without a verdict{net_note}",
            scenario.timeout
        ));
    }
    let mut summary =
        matcher::judge(scenario, machine.memory_mib, &log).map_err(|e| format!("{e}{net_note}"))?;
    // QEMU's isa-debug-exit status must agree with the printed verdict.
    if let Some(code) = exit.and_then(|s| s.code())
        && matches!(machine.emulator, Emulator::Qemu | Emulator::Kvm)
    {
        let expected = match matcher::verdict(&log, false) {
            Some(matcher::Verdict::Pass) => 33,
            _ => 35,
        };
        if code != expected && scenario.cmdline.contains("test-exit") {
            return Err(format!(
                "QEMU exited with status {code}, expected {expected} for the verdict"
            ));
        }
    }
    if exit.is_none() {
        summary.push_str(" (emulator stopped by the harness)");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_boots_of_a_rebooting_machine() {
        let boot = "[    0.01] cpu0 INFO  Basalt hypervisor 0.1.0 (x) for x86_64\n";
        let two = format!("{boot}dom0: reboot\n{boot}");
        assert_eq!(too_many_boots(boot, 0), None);
        assert_eq!(too_many_boots(&two, 1), None);
        assert_eq!(
            too_many_boots(&two, 0).as_deref(),
            Some("the machine booted 2 times; the scenario allows 0 reboot(s)")
        );
        assert!(too_many_boots(&format!("{two}{boot}"), 1).is_some());
        assert_eq!(too_many_boots("Basalt hypervisor named in a line", 0), None);
    }
}
