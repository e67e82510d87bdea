//! Scenarios as data.

use crate::emulator::{Emulator, Firmware, Machine};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The text in a step's `send` that the harness replaces with the port of
/// its TCP listener (scenarios with `network = true`).
pub const NET_PORT: &str = "{net_port}";

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

/// A disk the harness makes for the run: an ext4 image holding `files`,
/// attached as the machine's first IDE disk (docs/testing.md, "Disk and
/// network").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// The image's size, e.g. `16M` (16 MiB to 1 GiB).
    #[serde(default = "default_disk_size")]
    pub size: String,
    /// Path in the file system (relative, `/`-separated) to its text.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Path in the file system to the file to copy there: a module path
    /// (`linux:NAME`, `dom0:NAME`, `guest:NAME`, `xtf:NAME` or a file),
    /// which xtask resolves (and builds) before the run.
    #[serde(default)]
    pub assets: BTreeMap<String, PathBuf>,
    /// The file system's label (`basalt-state`: dom0 keeps its VM store
    /// there, docs/toolstack.md).
    #[serde(default = "default_disk_label")]
    pub label: String,
}

impl DiskSpec {
    /// The size in MiB.
    pub fn size_mib(&self) -> Result<u64, String> {
        let mib = parse_memory(&self.size).map_err(|e| format!("disk size: {e}"))?;
        if mib > 1024 {
            return Err(format!("disk size {:?} is over 1G", self.size));
        }
        Ok(mib)
    }

    fn check(&self) -> Result<(), String> {
        self.size_mib()?;
        let label_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.label.is_empty() || self.label.len() > 16 || !self.label.chars().all(label_ok) {
            return Err(format!(
                "disk label {:?}: 1 to 16 letters, digits, '-' or '_' (ext4's limit)",
                self.label
            ));
        }
        for path in self.files.keys().chain(self.assets.keys()) {
            let bad = path.is_empty()
                || path.starts_with('/')
                || path
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..");
            if bad {
                return Err(format!(
                    "disk file {path:?}: give a relative path of names, e.g. \"hello.txt\" or \"dir/a.txt\""
                ));
            }
        }
        Ok(())
    }
}

fn default_disk_size() -> String {
    "16M".into()
}

fn default_disk_label() -> String {
    "basalt-test".into()
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

/// A virtualization backend a scenario runs on: an emulator with a CPU
/// model that offers one vendor's extensions (docs/testing.md, "Backends").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
pub enum Backend {
    /// Bochs 2.7 with its VT-x CPU (`corei7_skylake_x`: EPT, VPID,
    /// unrestricted guest, preemption timer).
    #[serde(rename = "bochs-vmx")]
    BochsVmx,
    /// QEMU 7.2 TCG `-cpu EPYC`: SVM with NPT, 16 ASIDs, no NRIPS, no
    /// flush-by-ASID.
    #[serde(rename = "qemu-svm")]
    QemuSvm,
    /// Bochs 2.7 `cpu: model=ryzen`: SVM with NPT, NRIPS, flush-by-ASID and
    /// the pause filter, 32768 ASIDs.
    #[serde(rename = "bochs-svm")]
    BochsSvm,
}

/// The two vendors' virtualization extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Intel VT-x.
    Vmx,
    /// AMD-V (SVM).
    Svm,
}

impl Backend {
    /// Every backend, in the order the summary lists them.
    pub const ALL: [Self; 3] = [Self::BochsVmx, Self::QemuSvm, Self::BochsSvm];

    /// The name in scenario files, run names and the summary.
    pub fn name(self) -> &'static str {
        match self {
            Self::BochsVmx => "bochs-vmx",
            Self::QemuSvm => "qemu-svm",
            Self::BochsSvm => "bochs-svm",
        }
    }

    /// Parses a backend's name.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == text)
            .ok_or_else(|| {
                format!("unknown backend {text:?}: expected bochs-vmx, qemu-svm or bochs-svm")
            })
    }

    /// The emulator that runs it.
    pub fn emulator(self) -> Emulator {
        match self {
            Self::BochsVmx | Self::BochsSvm => Emulator::Bochs,
            Self::QemuSvm => Emulator::Qemu,
        }
    }

    /// The emulator's CPU model (`None`: the emulator's default, see
    /// [`crate::emulator::Machine::cpu`]).
    pub fn cpu(self) -> Option<&'static str> {
        match self {
            Self::BochsVmx => None,
            Self::QemuSvm => Some("EPYC"),
            Self::BochsSvm => Some("ryzen"),
        }
    }

    /// Whose virtualization extensions the CPU offers.
    pub fn vendor(self) -> Vendor {
        match self {
            Self::BochsVmx => Vendor::Vmx,
            Self::QemuSvm | Self::BochsSvm => Vendor::Svm,
        }
    }
}

/// A scenario file as written (docs/testing.md, "Scenario files"). It
/// names either one `emulator` or a list of `backends`; [`Scenario::runs`]
/// turns it into one run per backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    description: String,
    emulator: Option<Emulator>,
    #[serde(default)]
    backends: Vec<Backend>,
    #[serde(default = "one")]
    cpus: u32,
    #[serde(default = "default_memory")]
    memory: String,
    #[serde(default)]
    cmdline: String,
    #[serde(default)]
    modules: Vec<ModuleSpec>,
    #[serde(default)]
    qemu_args: Vec<String>,
    #[serde(default)]
    loader: Loader,
    #[serde(default)]
    expect: Vec<String>,
    #[serde(default)]
    expect_vmx: Vec<String>,
    #[serde(default)]
    expect_svm: Vec<String>,
    #[serde(default)]
    forbid: Vec<String>,
    #[serde(default)]
    forbid_vmx: Vec<String>,
    #[serde(default)]
    forbid_svm: Vec<String>,
    #[serde(default)]
    verdict: ExpectedVerdict,
    #[serde(default)]
    checks: Checks,
    #[serde(default)]
    figures: Vec<Figure>,
    #[serde(default)]
    steps: Vec<Step>,
    #[serde(default = "default_send_pace_ms")]
    send_pace_ms: u64,
    #[serde(default = "default_timeout")]
    timeout: u64,
    #[serde(default)]
    bochs_ips: Option<u64>,
    #[serde(default)]
    disk: Option<DiskSpec>,
    #[serde(default)]
    network: bool,
    #[serde(default)]
    firmware: Firmware,
    #[serde(default)]
    reboots: u32,
}

/// One run of a boot scenario: the scenario file's settings on one
/// emulator and CPU model.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The run's name; also names the log files. The scenario's own name,
    /// or `SCENARIO@BACKEND` for a scenario with `backends`.
    pub name: String,
    /// The scenario file's `name`.
    pub scenario: String,
    /// What the scenario shows, for people.
    pub description: String,
    /// The emulator.
    pub emulator: Emulator,
    /// The backend of a scenario with `backends`; `None` for one that names
    /// its `emulator`.
    pub backend: Option<Backend>,
    /// Number of CPUs.
    pub cpus: u32,
    /// Memory size, e.g. `512M`, `4G`.
    pub memory: String,
    /// The hypervisor command line.
    pub cmdline: String,
    /// Boot modules.
    pub modules: Vec<ModuleSpec>,
    /// Extra QEMU arguments (e.g. `-no-acpi`); QEMU and KVM runs only.
    pub qemu_args: Vec<String>,
    /// The loader protocol.
    pub loader: Loader,
    /// Lines (substrings) that must appear in the serial log, in this order.
    pub expect: Vec<String>,
    /// Lines that must appear in this order on this run's vendor
    /// (`expect_vmx` or `expect_svm`), checked apart from `expect`.
    pub expect_vendor: Vec<String>,
    /// Substrings that must appear nowhere in the serial log (the vendor's
    /// `forbid_vmx` or `forbid_svm` included).
    pub forbid: Vec<String>,
    /// The verdict Basalt must print.
    pub verdict: ExpectedVerdict,
    /// Figures to check.
    pub checks: Checks,
    /// `BASALT-FIGURE:` figures that must be printed, within bounds.
    pub figures: Vec<Figure>,
    /// Interactive steps on COM1 (which then goes through a TCP socket).
    pub steps: Vec<Step>,
    /// Milliseconds between two bytes a step sends.
    pub send_pace_ms: u64,
    /// Seconds before the run is stopped and failed.
    pub timeout: u64,
    /// Bochs' instructions per emulated second (default
    /// [`crate::emulator::BOCHS_IPS`]): the CPU speed the guests see. Real
    /// operating systems need tens of millions, or their timers leave them
    /// no time to work.
    pub bochs_ips: Option<u64>,
    /// The ext4 disk the harness makes and attaches as the first IDE disk.
    pub disk: Option<DiskSpec>,
    /// An e1000 network card on the emulator's user-mode network (DHCP;
    /// the host is 10.0.2.2), with a harness TCP listener whose port
    /// replaces [`NET_PORT`] in the steps.
    pub network: bool,
    /// The machine's firmware: `bios` (the default) or `ovmf` (UEFI; QEMU
    /// runs only).
    pub firmware: Firmware,
    /// How often the machine may reset and boot again (QEMU runs only;
    /// 0: QEMU's `-no-reboot` ends the run at a reset).
    pub reboots: u32,
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

impl ScenarioFile {
    /// Checks what does not depend on the backend.
    fn check(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "scenario name {:?} must be non-empty letters, digits, '-' or '_'",
                self.name
            ));
        }
        match (self.emulator, self.backends.is_empty()) {
            (Some(_), false) => {
                return Err(
                    "give either `emulator` or `backends`, not both (`backends` picks the \
                     emulator of each run)"
                        .into(),
                );
            }
            (None, true) => {
                return Err("missing `emulator` (qemu, bochs or kvm) or `backends` \
                            (bochs-vmx, qemu-svm, bochs-svm)"
                    .into());
            }
            _ => {}
        }
        for (i, b) in self.backends.iter().enumerate() {
            if self.backends[..i].contains(b) {
                return Err(format!("backend {:?} is listed twice", b.name()));
            }
        }
        let vendor_lists = [
            ("expect_vmx", &self.expect_vmx),
            ("expect_svm", &self.expect_svm),
            ("forbid_vmx", &self.forbid_vmx),
            ("forbid_svm", &self.forbid_svm),
        ];
        for (key, list) in vendor_lists {
            if !list.is_empty() && self.backends.is_empty() {
                return Err(format!(
                    "`{key}` needs `backends = [...]` (a scenario with one `emulator` puts \
                     everything in `expect` and `forbid`)"
                ));
            }
            if list.iter().any(String::is_empty) {
                return Err(format!("`{key}` holds an empty string"));
            }
        }
        let on_qemu = match self.emulator {
            Some(e) => e != Emulator::Bochs,
            None => self
                .backends
                .iter()
                .any(|b| b.emulator() != Emulator::Bochs),
        };
        if !self.qemu_args.is_empty() && !on_qemu {
            return Err("qemu_args is for QEMU scenarios only".into());
        }
        let on_bochs = self.emulator == Some(Emulator::Bochs)
            || self
                .backends
                .iter()
                .any(|b| b.emulator() == Emulator::Bochs);
        if self.reboots > 0 && (on_bochs || self.reboots > 8) {
            return Err(
                "reboots = N (at most 8) is for QEMU runs only: drop the Bochs backends".into(),
            );
        }
        if self.firmware == Firmware::Ovmf && on_bochs {
            return Err("firmware = \"ovmf\" runs under QEMU only: drop the Bochs backends".into());
        }
        if let Some(disk) = &self.disk {
            disk.check()?;
        }
        let uses_port = self
            .steps
            .iter()
            .any(|s| s.send.as_deref().is_some_and(|t| t.contains(NET_PORT)));
        if uses_port && !self.network {
            return Err(format!(
                "a step sends {NET_PORT} but the scenario has no `network = true`"
            ));
        }
        Ok(())
    }

    /// The run on `backend` (`None`: the file's `emulator`).
    fn run(&self, backend: Option<Backend>) -> Scenario {
        let (name, emulator, expect_vendor, forbid_vendor) = match backend {
            None => (
                self.name.clone(),
                self.emulator.unwrap_or(Emulator::Qemu),
                Vec::new(),
                Vec::new(),
            ),
            Some(b) => {
                let (expect, forbid) = match b.vendor() {
                    Vendor::Vmx => (&self.expect_vmx, &self.forbid_vmx),
                    Vendor::Svm => (&self.expect_svm, &self.forbid_svm),
                };
                (
                    format!("{}@{}", self.name, b.name()),
                    b.emulator(),
                    expect.clone(),
                    forbid.clone(),
                )
            }
        };
        let mut forbid = self.forbid.clone();
        forbid.extend(forbid_vendor);
        Scenario {
            name,
            scenario: self.name.clone(),
            description: self.description.clone(),
            emulator,
            backend,
            cpus: self.cpus,
            memory: self.memory.clone(),
            cmdline: self.cmdline.clone(),
            modules: self.modules.clone(),
            qemu_args: if emulator == Emulator::Bochs {
                Vec::new()
            } else {
                self.qemu_args.clone()
            },
            loader: self.loader,
            expect: self.expect.clone(),
            expect_vendor,
            forbid,
            verdict: self.verdict,
            checks: self.checks.clone(),
            figures: self.figures.clone(),
            steps: self.steps.clone(),
            send_pace_ms: self.send_pace_ms,
            timeout: self.timeout,
            bochs_ips: self.bochs_ips,
            disk: self.disk.clone(),
            network: self.network,
            firmware: self.firmware,
            reboots: self.reboots,
        }
    }
}

impl Scenario {
    /// Parses one scenario file's text into its runs: one per backend of
    /// `backends`, in that order, or the one run on its `emulator`.
    pub fn runs(text: &str) -> Result<Vec<Self>, String> {
        let file: ScenarioFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.check()?;
        let runs: Vec<Self> = if file.backends.is_empty() {
            vec![file.run(None)]
        } else {
            file.backends.iter().map(|&b| file.run(Some(b))).collect()
        };
        for run in &runs {
            run.machine()?;
            run.check_steps()?;
            run.check_figures()?;
        }
        Ok(runs)
    }

    /// Parses a scenario file that makes exactly one run (one `emulator`,
    /// or one backend).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut runs = Self::runs(text)?;
        if runs.len() != 1 {
            return Err(format!(
                "{} runs (one per backend) where one was wanted",
                runs.len()
            ));
        }
        Ok(runs.remove(0))
    }

    /// The backend's name for reports: the backend of a scenario with
    /// `backends`, else its emulator (`bochs` is the same machine as
    /// `bochs-vmx`, and counts as it).
    pub fn backend_label(&self) -> &'static str {
        match (self.backend, self.emulator) {
            (Some(b), _) => b.name(),
            (None, Emulator::Bochs) => Backend::BochsVmx.name(),
            (None, e) => e.name(),
        }
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
            cpu: self.backend.and_then(Backend::cpu),
            cpus: self.cpus,
            memory_mib: parse_memory(&self.memory)?,
            ips: self.bochs_ips.unwrap_or(crate::emulator::BOCHS_IPS),
            firmware: self.firmware,
            reboots: self.reboots,
        })
    }

    /// Loads every `*.toml` scenario in `dir` and returns their runs,
    /// sorted by run name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, String> {
        let mut runs = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let file_runs =
                    Self::runs(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                // Two files may not share a name (their logs and ISOs would mix).
                if let Some(first) = file_runs.first()
                    && !names.insert(first.scenario.clone())
                {
                    return Err(format!("two scenarios are named {:?}", first.scenario));
                }
                runs.extend(file_runs);
            }
        }
        runs.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in runs.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(format!("two scenario runs are named {:?}", pair[0].name));
            }
        }
        Ok(runs)
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

    #[test]
    fn ovmf_firmware_is_for_qemu_runs() {
        let uefi = "name = 'a'\ndescription = 'd'\nfirmware = 'ovmf'\n";
        let s = Scenario::parse(&format!("{uefi}backends = ['qemu-svm']")).expect("valid");
        assert_eq!(s.machine().map(|m| m.firmware), Ok(Firmware::Ovmf));
        let err = Scenario::runs(&format!("{uefi}backends = ['qemu-svm', 'bochs-vmx']"));
        assert!(err.unwrap_err().contains("QEMU only"));
        assert!(Scenario::parse(&format!("{uefi}emulator = 'bochs'")).is_err());
        assert!(Scenario::parse(&format!("{uefi}emulator = 'kvm'")).is_ok());
        let bios = Scenario::parse("name = 'a'\ndescription = 'd'\nemulator = 'qemu'");
        assert_eq!(bios.expect("valid").firmware, Firmware::Bios);
        assert!(
            Scenario::parse("name = 'a'\ndescription = 'd'\nemulator = 'qemu'\nfirmware = 'uboot'")
                .is_err()
        );
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
    fn backends_make_one_run_each() {
        let runs = Scenario::runs(
            r#"
            name = "guest"
            description = "d"
            backends = ["bochs-vmx", "qemu-svm", "bochs-svm"]
            cpus = 2
            qemu_args = ["-no-acpi"]
            expect = ["common"]
            expect_vmx = ["VT-x: VMCS rev", "cpu0: VMX operation on"]
            expect_svm = ["svm: enabled on cpu0"]
            forbid = ["PANIC"]
            forbid_svm = ["svm: unavailable"]
            "#,
        )
        .expect("valid");
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["guest@bochs-vmx", "guest@qemu-svm", "guest@bochs-svm"]
        );
        let machines: Vec<(Emulator, Option<&str>)> = runs
            .iter()
            .map(|r| r.machine().map(|m| (m.emulator, m.cpu)).expect("machine"))
            .collect();
        assert_eq!(
            machines,
            [
                (Emulator::Bochs, None),
                (Emulator::Qemu, Some("EPYC")),
                (Emulator::Bochs, Some("ryzen"))
            ]
        );
        let (vmx, qemu, ryzen) = (&runs[0], &runs[1], &runs[2]);
        assert_eq!(
            vmx.expect_vendor,
            ["VT-x: VMCS rev", "cpu0: VMX operation on"]
        );
        assert_eq!(vmx.forbid, ["PANIC"]);
        assert!(vmx.qemu_args.is_empty(), "QEMU arguments never reach Bochs");
        assert_eq!(qemu.expect_vendor, ["svm: enabled on cpu0"]);
        assert_eq!(qemu.forbid, ["PANIC", "svm: unavailable"]);
        assert_eq!(qemu.qemu_args, ["-no-acpi"]);
        assert_eq!(ryzen.expect_vendor, qemu.expect_vendor);
        assert!(
            runs.iter()
                .all(|r| r.scenario == "guest" && r.expect == ["common"])
        );
        let labels: Vec<&str> = runs.iter().map(Scenario::backend_label).collect();
        assert_eq!(labels, ["bochs-vmx", "qemu-svm", "bochs-svm"]);
        assert!(
            Scenario::parse("name='a'\ndescription='d'\nbackends=['qemu-svm','bochs-vmx']")
                .is_err()
        );
        let one = Scenario::parse("name='a'\ndescription='d'\nbackends=['qemu-svm']")
            .expect("one backend, one run");
        assert_eq!(one.name, "a@qemu-svm");
    }

    #[test]
    fn a_scenario_without_backends_is_as_before() {
        let s = Scenario::parse(BASE).expect("valid");
        assert_eq!((s.name.as_str(), s.backend), ("a", None));
        assert_eq!(s.backend_label(), "bochs-vmx");
        assert_eq!(s.machine().map(|m| m.cpu), Ok(None));
        let q = Scenario::parse("name='q'\ndescription='d'\nemulator='qemu'").expect("valid");
        assert_eq!(q.backend_label(), "qemu");
    }

    #[test]
    fn rejects_bad_backends() {
        let base = "name = 'a'\ndescription = 'd'\n";
        for bad in [
            "",
            "emulator = 'qemu'\nbackends = ['qemu-svm']",
            "backends = ['qemu-vmx']",
            "backends = ['qemu-svm', 'qemu-svm']",
            "emulator = 'qemu'\nexpect_svm = ['x']",
            "emulator = 'bochs'\nforbid_vmx = ['x']",
            "backends = ['bochs-vmx']\nexpect_vmx = ['']",
            "backends = ['bochs-vmx', 'bochs-svm']\nqemu_args = ['-no-acpi']",
            "backends = ['bochs-vmx']\nexpect_amd = ['x']",
        ] {
            assert!(Scenario::runs(&format!("{base}{bad}")).is_err(), "{bad}");
        }
        for b in Backend::ALL {
            assert_eq!(Backend::parse(b.name()), Ok(b));
        }
        assert!(Backend::parse("kvm-svm").is_err());
    }

    #[test]
    fn parses_a_disk_and_a_network() {
        let s = Scenario::parse(&format!(
            "{BASE}network = true\n\
             steps = [{{ wait = '# ', send = \"nc 10.0.2.2 {{net_port}}\\r\" }}]\n\
             [disk]\nsize = '32M'\nfiles = {{ 'hello.txt' = \"hi\\n\", 'd/e.txt' = '' }}\n"
        ))
        .expect("valid");
        assert!(s.network);
        let disk = s.disk.expect("a disk");
        assert_eq!(disk.size_mib(), Ok(32));
        assert_eq!(
            disk.files.get("hello.txt").map(String::as_str),
            Some("hi\n")
        );
        assert_eq!(disk.files.len(), 2);
        let plain = Scenario::parse(&format!("{BASE}disk = {{}}")).expect("valid");
        let disk = plain.disk.expect("a disk");
        assert_eq!((disk.size_mib(), disk.files.len()), (Ok(16), 0));
        assert!(!plain.network && Scenario::parse(BASE).expect("valid").disk.is_none());
    }

    #[test]
    fn rejects_bad_disks_and_a_port_without_a_network() {
        for bad in [
            "disk = { files = { '/etc/x' = 'a' } }",
            "disk = { files = { '../x' = 'a' } }",
            "disk = { files = { 'a//b' = 'a' } }",
            "disk = { files = { '' = 'a' } }",
            "disk = { size = '2G' }",
            "disk = { size = 'big' }",
            "disk = { sise = '16M' }",
            "network = 'user'",
            "steps = [{ send = 'nc 10.0.2.2 {net_port}' }]",
        ] {
            assert!(Scenario::parse(&format!("{BASE}{bad}")).is_err(), "{bad}");
        }
        let err = Scenario::parse(&format!("{BASE}steps = [{{ send = '{{net_port}}' }}]"));
        assert!(err.unwrap_err().contains("no `network = true`"));
    }

    #[test]
    fn reboots_and_disk_labels() {
        let q = "name = 'a'\ndescription = 'd'\nbackends = ['qemu-svm']\n";
        let s = Scenario::parse(&format!(
            "{q}reboots = 1\ndisk = {{ label = 'basalt-state' }}"
        ))
        .expect("valid");
        assert_eq!((s.reboots, s.machine().map(|m| m.reboots)), (1, Ok(1)));
        assert_eq!(s.disk.map(|d| d.label).as_deref(), Some("basalt-state"));
        let plain = Scenario::parse(&format!("{q}disk = {{}}")).expect("valid");
        assert_eq!(plain.reboots, 0);
        assert_eq!(plain.disk.map(|d| d.label).as_deref(), Some("basalt-test"));
        for bad in [
            format!("{BASE}reboots = 1"),
            format!("{q}reboots = 9"),
            format!("{q}reboots = -1"),
            format!("{q}disk = {{ label = '' }}"),
            format!("{q}disk = {{ label = 'a b' }}"),
            format!("{q}disk = {{ label = 'seventeen-chars-x' }}"),
        ] {
            assert!(Scenario::parse(&bad).is_err(), "{bad}");
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
        // Run names are unique and `--filter NAME@BACKEND` picks one run.
        for run in &scenarios {
            let matching = scenarios.iter().filter(|r| r.name.contains(&run.name));
            assert!(
                matching.count() == 1 || run.backend.is_none(),
                "{}",
                run.name
            );
        }
    }
}
