//! Scenarios as data.

use crate::emulator::{Emulator, Machine};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// How the boot loader starts Basalt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loader {
    /// GRUB's `multiboot2` (the supported way).
    #[default]
    Multiboot2,
    /// GRUB's `multiboot`: tests that Basalt refuses it clearly.
    Multiboot1,
}

/// The verdict line Basalt must print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedVerdict {
    /// `BASALT-VERDICT: PASS`
    #[default]
    Pass,
    /// `BASALT-VERDICT: FAIL: ...`
    Fail,
}

/// A boot module for the scenario: a file (relative to the repository root)
/// and its command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// Path of the file, relative to the repository root.
    pub path: PathBuf,
    /// The module's command line.
    #[serde(default)]
    pub args: String,
}

/// Figures Basalt prints that the harness checks.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// The usable RAM Basalt reports must be within this many percent below
    /// the machine's memory size (and never above it).
    pub usable_ram_within_percent: Option<f64>,
}

/// One interactive step: wait for text on COM1, then type into it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Text to wait for, searched after the end of the previous step's match
    /// (carriage returns ignored, as everywhere in the log).
    pub wait: Option<String>,
    /// Bytes to type once `wait` has appeared (or at once without `wait`).
    pub send: Option<String>,
}

/// A `BASALT-FIGURE: name=value` figure that must be printed within bounds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// The figure's name.
    pub name: String,
    /// Smallest allowed value (inclusive).
    pub min: Option<f64>,
    /// Largest allowed value (inclusive).
    pub max: Option<f64>,
}

/// One boot scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique name; also names the log files.
    pub name: String,
    /// What the scenario shows, for people.
    pub description: String,
    /// The emulator.
    pub emulator: Emulator,
    /// Number of CPUs.
    #[serde(default = "one")]
    pub cpus: u32,
    /// Memory size, e.g. `512M`, `4G`.
    #[serde(default = "default_memory")]
    pub memory: String,
    /// The hypervisor command line.
    #[serde(default)]
    pub cmdline: String,
    /// Boot modules.
    #[serde(default)]
    pub modules: Vec<ModuleSpec>,
    /// Extra QEMU arguments (e.g. `-no-acpi`); QEMU and KVM only.
    #[serde(default)]
    pub qemu_args: Vec<String>,
    /// The loader protocol.
    #[serde(default)]
    pub loader: Loader,
    /// Lines (substrings) that must appear in the serial log, in this order.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Substrings that must appear nowhere in the serial log.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// The verdict Basalt must print.
    #[serde(default)]
    pub verdict: ExpectedVerdict,
    /// Figures to check.
    #[serde(default)]
    pub checks: Checks,
    /// `BASALT-FIGURE:` figures that must be printed, within bounds.
    #[serde(default)]
    pub figures: Vec<Figure>,
    /// Interactive steps on COM1 (which then goes through a TCP socket).
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Milliseconds between two bytes a step sends.
    #[serde(default = "default_send_pace_ms")]
    pub send_pace_ms: u64,
    /// Seconds before the run is stopped and failed.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Bochs' instructions per emulated second (default
    /// [`crate::emulator::BOCHS_IPS`]): the CPU speed the guests see. Real
    /// operating systems need tens of millions, or their timers leave them
    /// no time to work.
    #[serde(default)]
    pub bochs_ips: Option<u64>,
}

fn one() -> u32 {
    1
}

fn default_memory() -> String {
    "512M".into()
}

fn default_timeout() -> u64 {
    60
}

fn default_send_pace_ms() -> u64 {
    15
}

impl Scenario {
    /// Parses one scenario file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let scenario: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        scenario.machine()?;
        if !scenario.qemu_args.is_empty() && scenario.emulator == Emulator::Bochs {
            return Err("qemu_args is for QEMU scenarios only".into());
        }
        if scenario.name.is_empty()
            || !scenario
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "scenario name {:?} must be non-empty letters, digits, '-' or '_'",
                scenario.name
            ));
        }
        scenario.check_steps()?;
        scenario.check_figures()?;
        Ok(scenario)
    }

    fn check_steps(&self) -> Result<(), String> {
        for (i, step) in self.steps.iter().enumerate() {
            let n = i + 1;
            match (&step.wait, &step.send) {
                (None, None) => return Err(format!("step {n} needs `wait`, `send` or both")),
                (Some(w), _) if w.replace('\r', "").is_empty() => {
                    return Err(format!("step {n}: `wait` is empty"));
                }
                (_, Some(s)) if s.is_empty() => return Err(format!("step {n}: `send` is empty")),
                _ => {}
            }
        }
        if self.send_pace_ms > 1000 {
            return Err(format!(
                "send_pace_ms = {} is more than 1000 ms between bytes",
                self.send_pace_ms
            ));
        }
        Ok(())
    }

    fn check_figures(&self) -> Result<(), String> {
        for (i, figure) in self.figures.iter().enumerate() {
            let name = &figure.name;
            if name.is_empty() || name.contains(|c: char| c == '=' || c.is_whitespace()) {
                return Err(format!(
                    "figure name {name:?} must be non-empty, without '=' or spaces"
                ));
            }
            if self.figures[..i].iter().any(|f| &f.name == name) {
                return Err(format!("figure {name:?} is listed twice"));
            }
            for bound in [figure.min, figure.max].into_iter().flatten() {
                if !bound.is_finite() {
                    return Err(format!("figure {name:?}: bound {bound} is not a number"));
                }
            }
            if let (Some(min), Some(max)) = (figure.min, figure.max)
                && min > max
            {
                return Err(format!("figure {name:?}: min {min} is above max {max}"));
            }
        }
        Ok(())
    }

    /// The machine to boot.
    pub fn machine(&self) -> Result<Machine, String> {
        Ok(Machine {
            emulator: self.emulator,
            cpus: self.cpus,
            memory_mib: parse_memory(&self.memory)?,
            ips: self.bochs_ips.unwrap_or(crate::emulator::BOCHS_IPS),
        })
    }

    /// Loads every `*.toml` scenario in `dir`, sorted by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, String> {
        let mut scenarios = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                scenarios.push(Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?);
            }
        }
        scenarios.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in scenarios.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(format!("two scenarios are named {:?}", pair[0].name));
            }
        }
        Ok(scenarios)
    }
}

/// Parses a memory size: a number of MiB, or with a `M`/`G` suffix.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let err = || format!("memory size {text:?}: expected e.g. 64M, 512M or 4G");
    let (digits, factor) = match text.trim().to_ascii_uppercase() {
        t if t.ends_with('G') => (t.trim_end_matches('G').to_string(), 1024),
        t if t.ends_with('M') => (t.trim_end_matches('M').to_string(), 1),
        t => (t, 1),
    };
    let value: u64 = digits.parse().map_err(|_| err())?;
    let mib = value.checked_mul(factor).ok_or_else(err)?;
    if !(16..=1 << 20).contains(&mib) {
        return Err(err());
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_scenario() {
        let s = Scenario::parse(
            r#"
            name = "qemu-boot"
            description = "boots"
            emulator = "qemu"
            cpus = 2
            memory = "4G"
            cmdline = "loglvl=debug"
            modules = [{ path = "x.elf", args = "name=t1" }]
            expect = ["Basalt hypervisor"]
            forbid = ["PANIC"]
            verdict = "fail"
            checks = { usable_ram_within_percent = 2.0 }
            timeout = 10
            "#,
        )
        .expect("valid");
        assert_eq!(s.machine().map(|m| m.memory_mib), Ok(4096));
        assert_eq!(s.verdict, ExpectedVerdict::Fail);
        assert_eq!(s.modules[0].args, "name=t1");
    }

    #[test]
    fn rejects_bad_scenarios() {
        assert!(Scenario::parse("name = 'x'").is_err());
        let base = "description = 'd'\nemulator = 'qemu'\n";
        assert!(Scenario::parse(&format!("{base}name = 'a b'")).is_err());
        assert!(Scenario::parse(&format!("{base}name = 'a'\nmemory = 'lots'")).is_err());
        assert!(Scenario::parse(&format!("{base}name = 'a'\nemulator2 = 'x'")).is_err());
        assert!(Scenario::parse(&format!("{base}name = 'a'")).is_ok());
    }

    const BASE: &str = "name = 'a'\ndescription = 'd'\nemulator = 'bochs'\n";

    #[test]
    fn parses_steps_and_their_escapes() {
        let s = Scenario::parse(&format!(
            r#"{BASE}
            send_pace_ms = 5
            steps = [
              {{ wait = "basalt> ", send = "list\r" }},
              {{ wait = "d1", send = "\u0001\u0001\u0001" }},
              {{ send = "\u001b[A\t\n" }},
              {{ wait = 'literal\r' }},
            ]
            "#
        ))
        .expect("valid");
        assert_eq!(s.send_pace_ms, 5);
        let bytes = |i: usize| s.steps[i].send.as_deref().map(str::as_bytes);
        assert_eq!(s.steps[0].wait.as_deref(), Some("basalt> "));
        assert_eq!(bytes(0), Some(&b"list\r"[..]));
        assert_eq!(bytes(1), Some(&b"\x01\x01\x01"[..]));
        assert_eq!(
            (s.steps[2].wait.as_deref(), bytes(2)),
            (None, Some(&b"\x1b[A\t\n"[..]))
        );
        // Literal strings keep the backslash.
        assert_eq!(s.steps[3].wait.as_deref(), Some("literal\\r"));
        assert_eq!(s.steps[3].send, None);
        // Without steps: no steps, the default pace.
        let plain = Scenario::parse(BASE).expect("valid");
        assert!(plain.steps.is_empty() && plain.figures.is_empty());
        assert_eq!(plain.send_pace_ms, 15);
    }

    #[test]
    fn rejects_bad_steps() {
        for bad in [
            "steps = [{}]",
            "steps = [{ wait = '' }]",
            "steps = [{ wait = \"\\r\" }]",
            "steps = [{ send = '' }]",
            "steps = [{ wait = 'x', sned = 'y' }]",
            "steps = [{ wait = 3 }]",
            "steps = ['x']",
            "send_pace_ms = 5000",
            "send_pace_ms = -1",
        ] {
            let err = Scenario::parse(&format!("{BASE}{bad}"));
            assert!(err.is_err(), "{bad}");
        }
        let err = Scenario::parse(&format!("{BASE}steps = [{{ send = 'a' }}, {{}}]"));
        assert_eq!(err.unwrap_err(), "step 2 needs `wait`, `send` or both");
    }

    #[test]
    fn parses_figures() {
        let s = Scenario::parse(&format!(
            "{BASE}figures = [{{ name = 'share_d1', min = 20.0, max = 30 }}, \
             {{ name = 'exits', max = 1e6 }}, {{ name = 'any' }}]"
        ))
        .expect("valid");
        assert_eq!(
            s.figures,
            vec![
                Figure {
                    name: "share_d1".into(),
                    min: Some(20.0),
                    max: Some(30.0)
                },
                Figure {
                    name: "exits".into(),
                    min: None,
                    max: Some(1e6)
                },
                Figure {
                    name: "any".into(),
                    min: None,
                    max: None
                },
            ]
        );
        for bad in [
            "figures = [{ name = '' }]",
            "figures = [{ name = 'a b' }]",
            "figures = [{ name = 'a=b' }]",
            "figures = [{ name = 'a', min = 2, max = 1 }]",
            "figures = [{ name = 'a', min = nan }]",
            "figures = [{ name = 'a', max = inf }]",
            "figures = [{ name = 'a' }, { name = 'a' }]",
            "figures = [{ name = 'a', mni = 1 }]",
            "figures = [{ name = 'a', min = '1' }]",
        ] {
            assert!(Scenario::parse(&format!("{BASE}{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64M"), Ok(64));
        assert_eq!(parse_memory("6g"), Ok(6144));
        assert_eq!(parse_memory("512"), Ok(512));
        assert!(parse_memory("1M").is_err());
        assert!(parse_memory("-3G").is_err());
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let scenarios = Scenario::load_dir(&dir).expect("scenarios parse");
        assert!(scenarios.len() >= 6, "{}", scenarios.len());
    }
}
