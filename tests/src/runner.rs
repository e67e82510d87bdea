//! Running one scenario: boot, watch the serial log, stop, judge.

use crate::emulator::{self, Emulator, Serial};
use crate::matcher;
use crate::scenario::Scenario;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Seconds the emulator gets to exit by itself after the verdict line.
const EXIT_GRACE: Duration = Duration::from_secs(3);

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

fn boot_and_watch(
    scenario: &Scenario,
    iso: &Path,
    log_dir: &Path,
    serial_log: &Path,
    emulator_log: &Path,
) -> Result<String, String> {
    let machine = scenario.machine()?;
    if machine.emulator == Emulator::Kvm
        && let Some(reason) = emulator::kvm_unusable_reason()
    {
        return Err(format!("kvm: {reason}"));
    }
    std::fs::create_dir_all(log_dir).map_err(|e| e.to_string())?;
    std::fs::write(serial_log, b"").map_err(|e| format!("{}: {e}", serial_log.display()))?;
    let out = std::fs::File::create(emulator_log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;

    let bochs_cfg = log_dir.join(format!("{}.bochsrc", scenario.name));
    let bochs_rc = log_dir.join(format!("{}.bochs-rc", scenario.name));
    let bochs_log = log_dir.join(format!("{}.bochs.log", scenario.name));
    if machine.emulator == Emulator::Bochs {
        std::fs::write(
            &bochs_cfg,
            emulator::bochs_config(&machine, iso, serial_log, &bochs_log),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(&bochs_rc, emulator::BOCHS_RC).map_err(|e| e.to_string())?;
    }
    let mut cmd = emulator::command(
        &machine,
        iso,
        Serial::File(serial_log),
        Some((&bochs_cfg, &bochs_rc)),
    );
    if machine.emulator != Emulator::Bochs {
        cmd.args(&scenario.qemu_args);
    }
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", machine.emulator.name()))?;

    let deadline = Instant::now() + Duration::from_secs(scenario.timeout);
    let mut verdict_seen: Option<Instant> = None;
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
        }
        if verdict_seen.is_some_and(|t| now >= t + EXIT_GRACE) {
            kill(&mut child);
            break None;
        }
        if now >= deadline {
            kill(&mut child);
            let log = matcher::normalise(&std::fs::read(serial_log).unwrap_or_default());
            if matcher::verdict(&log, false).is_none() {
                return Err(format!(
                    "timed out after {} s without a verdict",
                    scenario.timeout
                ));
            }
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = matcher::normalise(&std::fs::read(serial_log).unwrap_or_default());
    let mut summary = matcher::judge(scenario, machine.memory_mib, &log)?;
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
