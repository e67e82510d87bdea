//! Xen's Test Framework (XTF) as Basalt's control domain: the result table
//! `tests/xtf.toml` and the boot runs made from it (docs/testing.md, "XTF
//! as the control domain").
//!
//! Each `[[test]]` of the table names one XTF `hvm64` test with what Xen
//! 4.17 reports for it as its PVH dom0 (`xen`) and what Basalt reports: on
//! Bochs' VT-x CPU (`vmx`), on QEMU's SVM CPU (`svm`, default `vmx`), and
//! on Bochs with the test-only forced-emulation prefix on (`fep`, optional).
//! Every result that differs from Xen's needs its reason (`why`). `ci` lists
//! the runs `cargo xtask test` makes of the test: backend names, `+fep` for
//! the run with `hvm_fep`. Each run boots the test's kernel as the control
//! domain and expects its verdict line exactly (`Test result: SUCCESS`
//! followed by the end of the line: `SUCCESS with warnings` is another
//! result). A test that reports FAILURE still powers off cleanly, so
//! Basalt's own verdict is PASS whatever XTF says: only the XTF line tells.

use crate::scenario::{Backend, ExpectedVerdict, ModuleSpec, Scenario};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// An XTF verdict, as its `Test result:` line prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Result {
    /// `Test result: SUCCESS`
    #[serde(rename = "SUCCESS")]
    Success,
    /// `Test result: SUCCESS with warnings`
    #[serde(rename = "SUCCESS with warnings")]
    SuccessWarnings,
    /// `Test result: SKIP`
    #[serde(rename = "SKIP")]
    Skip,
    /// `Test result: ERROR`
    #[serde(rename = "ERROR")]
    Error,
    /// `Test result: FAILURE`
    #[serde(rename = "FAILURE")]
    Failure,
    /// No verdict: XTF panicked (`PANIC: ...`, an exception it did not
    /// expect) and ended its domain with `SHUTDOWN_crash`.
    #[serde(rename = "PANIC")]
    Panic,
}

impl Result {
    /// Every verdict.
    pub const ALL: [Self; 6] = [
        Self::Success,
        Self::SuccessWarnings,
        Self::Skip,
        Self::Error,
        Self::Failure,
        Self::Panic,
    ];

    /// The text after `Test result: ` (`PANIC` for a panic).
    pub fn text(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::SuccessWarnings => "SUCCESS with warnings",
            Self::Skip => "SKIP",
            Self::Error => "ERROR",
            Self::Failure => "FAILURE",
            Self::Panic => "PANIC",
        }
    }

    /// Parses the text after `Test result: ` (a whole line).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| *r != Self::Panic && r.text() == text)
    }
}

/// The prefix of XTF's verdict line.
pub const RESULT_PREFIX: &str = "Test result: ";
/// What XTF's `panic()` prints first on its line.
pub const XTF_PANIC: &str = "PANIC: ";

/// One test of the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Test {
    /// The test's name (its directory in XTF's `tests/`).
    pub name: String,
    /// Xen 4.17's result as PVH dom0 under Bochs (`xtf-on-xen.md`).
    pub xen: Result,
    /// Basalt's on `bochs-vmx`, FEP off.
    pub vmx: Result,
    /// Basalt's on `qemu-svm`, FEP off (default: as `vmx`).
    #[serde(default)]
    pub svm: Option<Result>,
    /// Basalt's on `bochs-vmx` with `hvm_fep` (not measured: absent).
    #[serde(default)]
    pub fep: Option<Result>,
    /// Why Basalt's result differs from Xen's (needed when one does).
    #[serde(default)]
    pub why: String,
    /// The runs `cargo xtask test` makes: `bochs-vmx`, `qemu-svm`,
    /// `bochs-svm`, each optionally with `+fep`.
    #[serde(default)]
    pub ci: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    test: Vec<Test>,
}

/// One way to run a test: a backend, FEP on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunKind {
    /// The backend.
    pub backend: Backend,
    /// Whether Basalt runs with `hvm_fep`.
    pub fep: bool,
}

impl RunKind {
    /// Parses `BACKEND` or `BACKEND+fep`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let (backend, fep) = match text.strip_suffix("+fep") {
            Some(b) => (b, true),
            None => (text, false),
        };
        Ok(Self {
            backend: Backend::parse(backend)?,
            fep,
        })
    }
}

impl Test {
    /// What Basalt reports on `kind` (`None`: no result recorded).
    pub fn expected(&self, kind: RunKind) -> Option<Result> {
        if kind.fep {
            return self.fep;
        }
        match kind.backend {
            Backend::BochsVmx => Some(self.vmx),
            Backend::QemuSvm | Backend::BochsSvm => Some(self.svm.unwrap_or(self.vmx)),
        }
    }
}

/// The table: every test, checked.
#[derive(Debug, Clone)]
pub struct Table {
    /// The tests, in the file's order.
    pub tests: Vec<Test>,
}

impl Table {
    /// Parses and checks the table's text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let file: TableFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, t) in file.test.iter().enumerate() {
            let name = &t.name;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "test name {name:?} must be letters, digits, '-', '_'"
                ));
            }
            if file.test[..i].iter().any(|o| &o.name == name) {
                return Err(format!("test {name:?} is listed twice"));
            }
            let differs = t.vmx != t.xen
                || t.svm.is_some_and(|s| s != t.xen)
                || t.fep.is_some_and(|f| f != t.xen);
            if differs && t.why.trim().is_empty() {
                return Err(format!(
                    "test {name:?}: Basalt's result differs from Xen's ({}), so `why` must say why",
                    t.xen.text()
                ));
            }
            for (j, c) in t.ci.iter().enumerate() {
                let kind = RunKind::parse(c).map_err(|e| format!("test {name:?}: ci: {e}"))?;
                if t.ci[..j].contains(c) {
                    return Err(format!("test {name:?}: ci run {c:?} is listed twice"));
                }
                if t.expected(kind).is_none() {
                    return Err(format!(
                        "test {name:?}: ci run {c:?} has no recorded result (`fep`)"
                    ));
                }
            }
        }
        Ok(Self { tests: file.test })
    }

    /// Reads and checks the table at `path`.
    pub fn load(path: &Path) -> std::result::Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The test named `name`.
    pub fn get(&self, name: &str) -> Option<&Test> {
        self.tests.iter().find(|t| t.name == name)
    }

    /// The runs of every test's `ci` list, sorted by name.
    pub fn ci_runs(&self) -> Vec<Scenario> {
        let mut runs: Vec<Scenario> = self
            .tests
            .iter()
            .flat_map(|t| {
                t.ci.iter().filter_map(move |c| {
                    let kind = RunKind::parse(c).ok()?;
                    Some(run(&t.name, kind, t.expected(kind)))
                })
            })
            .collect();
        runs.sort_by(|a, b| a.name.cmp(&b.name));
        runs
    }
}

/// The table's path in the repository.
pub fn table_path(root: &Path) -> PathBuf {
    root.join("tests").join("xtf.toml")
}

/// The boot run of test `name` as the control domain on `kind`, named
/// `xtf-NAME@BACKEND` (`xtf-fep-NAME@BACKEND` with FEP). With `expect`,
/// the run passes only if XTF's verdict line is exactly that result; it
/// then needs Basalt's PASS (XTF ends with `SCHEDOP_shutdown(poweroff)`
/// whatever it found) and no panic of either. A recorded [`Result::Panic`]
/// expects XTF's `PANIC: ` line, no verdict line and Basalt's FAIL (the
/// domain crashed), still without a panic of Basalt's.
pub fn run(name: &str, kind: RunKind, expect: Option<Result>) -> Scenario {
    let fep = if kind.fep { "fep-" } else { "" };
    let cmdline = if kind.fep {
        "test-exit hvm_fep"
    } else {
        "test-exit"
    };
    let bochs = kind.backend.emulator() == crate::Emulator::Bochs;
    Scenario {
        name: format!("xtf-{fep}{name}@{}", kind.backend.name()),
        scenario: format!("xtf-{fep}{name}"),
        description: format!("XTF test {name} as the control domain"),
        emulator: kind.backend.emulator(),
        backend: Some(kind.backend),
        cpus: 1,
        memory: "256M".into(),
        cmdline: cmdline.into(),
        modules: vec![ModuleSpec {
            path: PathBuf::from(format!("xtf:{name}")),
            args: "role=control memory=64M".into(),
        }],
        qemu_args: Vec::new(),
        firmware: Default::default(),
        reboots: 0,
        loader: Default::default(),
        expect: match expect {
            Some(Result::Panic) => vec![XTF_PANIC.into()],
            Some(r) => vec![format!("{RESULT_PREFIX}{}\n", r.text())],
            None => Vec::new(),
        },
        expect_vendor: Vec::new(),
        forbid: if expect == Some(Result::Panic) {
            vec!["PANIC on cpu".into(), RESULT_PREFIX.into()]
        } else {
            vec!["PANIC".into()]
        },
        verdict: if expect == Some(Result::Panic) {
            ExpectedVerdict::Fail
        } else {
            ExpectedVerdict::Pass
        },
        checks: Default::default(),
        figures: Vec::new(),
        steps: Vec::new(),
        send_pace_ms: 15,
        timeout: if bochs { 90 } else { 30 },
        bochs_ips: None,
        disk: None,
        network: false,
    }
}

/// The table as Markdown, as docs/testing.md shows it ("XTF as the control
/// domain"): one row per test, Basalt's results beside Xen's, the CI runs
/// and the reason for every difference.
pub fn markdown(table: &Table) -> String {
    let mut out = String::from(
        "| test | Xen 4.17 | Basalt, bochs-vmx | Basalt, qemu-svm | Basalt, bochs-vmx + `hvm_fep` | CI runs | why Basalt differs |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for t in &table.tests {
        let svm = t.svm.unwrap_or(t.vmx);
        let ci = if t.ci.is_empty() {
            "–".to_string()
        } else {
            t.ci.join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            t.name,
            t.xen.text(),
            t.vmx.text(),
            svm.text(),
            t.fep.map_or("not measured", Result::text),
            ci,
            if t.why.is_empty() {
                "–"
            } else {
                t.why.trim()
            }
        ));
    }
    out
}

/// What a run's serial log says about the test: its verdict, or why there
/// is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measured {
    /// XTF printed this verdict.
    Result(Result),
    /// XTF printed a verdict line this table does not know.
    Other(String),
    /// XTF panicked (`PANIC:`) before its verdict; the text follows it.
    XtfPanic(String),
    /// No verdict line, no panic of XTF's.
    Nothing,
}

impl Measured {
    /// As a table result (`None`: not one the table can record).
    pub fn result(&self) -> Option<Result> {
        match self {
            Self::Result(r) => Some(*r),
            Self::XtfPanic(_) => Some(Result::Panic),
            Self::Other(_) | Self::Nothing => None,
        }
    }

    /// For the table: the verdict, or what happened instead.
    pub fn text(&self) -> String {
        match self {
            Self::Result(r) => r.text().into(),
            Self::Other(t) => format!("{t:?}"),
            Self::XtfPanic(why) => format!("XTF panic: {why}"),
            Self::Nothing => "no result".into(),
        }
    }
}

/// XTF's verdict in `log` (carriage returns removed).
pub fn measured(log: &str) -> Measured {
    for line in log.lines() {
        if let Some(at) = line.find(RESULT_PREFIX) {
            let rest = line[at + RESULT_PREFIX.len()..].trim_end();
            return match Result::parse(rest) {
                Some(r) => Measured::Result(r),
                None => Measured::Other(rest.to_string()),
            };
        }
    }
    // XTF's panic prints `PANIC: ` and its reason on the same line.
    for line in log.lines() {
        if let Some(at) = line.find(XTF_PANIC) {
            return Measured::XtfPanic(line[at + XTF_PANIC.len()..].trim().to_string());
        }
    }
    Measured::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
[[test]]
name = "example"
xen = "SUCCESS"
vmx = "SUCCESS"
ci = ["qemu-svm", "bochs-vmx"]

[[test]]
name = "xsa-170"
xen = "SKIP"
vmx = "SKIP"
fep = "SUCCESS"
why = "needs FEP"
ci = ["bochs-vmx+fep"]
"#;

    #[test]
    fn parses_and_makes_runs() {
        let table = Table::parse(TABLE).expect("table");
        let runs = table.ci_runs();
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "xtf-example@bochs-vmx",
                "xtf-example@qemu-svm",
                "xtf-fep-xsa-170@bochs-vmx"
            ]
        );
        assert_eq!(runs[0].expect, ["Test result: SUCCESS\n"]);
        assert_eq!(runs[0].cmdline, "test-exit");
        assert_eq!(runs[2].cmdline, "test-exit hvm_fep");
        assert_eq!(runs[2].modules[0].path, PathBuf::from("xtf:xsa-170"));
        assert_eq!(runs[2].modules[0].args, "role=control memory=64M");
    }

    #[test]
    fn differences_need_a_reason() {
        let text = "[[test]]\nname = \"msr\"\nxen = \"SUCCESS\"\nvmx = \"FAILURE\"\n";
        let err = Table::parse(text).expect_err("no why");
        assert!(err.contains("why"), "{err}");
        let text =
            "[[test]]\nname = \"msr\"\nxen = \"SUCCESS\"\nvmx = \"SUCCESS\"\nsvm = \"SKIP\"\n";
        assert!(Table::parse(text).is_err());
    }

    #[test]
    fn refuses_bad_ci_runs_and_duplicates() {
        let base = "[[test]]\nname = \"a\"\nxen = \"SKIP\"\nvmx = \"SKIP\"\n";
        assert!(Table::parse(&format!("{base}ci = [\"qemu\"]\n")).is_err());
        // A FEP run needs a recorded FEP result.
        assert!(Table::parse(&format!("{base}ci = [\"qemu-svm+fep\"]\n")).is_err());
        assert!(Table::parse(&format!("{base}ci = [\"qemu-svm\", \"qemu-svm\"]\n")).is_err());
        assert!(Table::parse(&format!("{base}{base}")).is_err());
        assert!(Table::parse("[[test]]\nname = \"a\"\nxen = \"PASS\"\nvmx = \"SKIP\"\n").is_err());
    }

    /// docs/testing.md shows tests/xtf.toml as it is.
    #[test]
    fn the_docs_show_the_table() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let table = Table::load(&table_path(&root)).expect("tests/xtf.toml");
        let docs = std::fs::read_to_string(root.join("docs/testing.md")).expect("docs");
        assert!(
            docs.contains(&markdown(&table)),
            "docs/testing.md does not show tests/xtf.toml: paste the output of \
             `cargo xtask xtf --table` into its section \"XTF as the control domain\""
        );
    }

    #[test]
    fn reads_the_verdict_exactly() {
        let log =
            "(d0) --- Xen Test Framework ---\n(d0) Test result: SUCCESS\nBASALT-VERDICT: PASS\n";
        assert_eq!(measured(log), Measured::Result(Result::Success));
        let log = "(d0) Test result: SUCCESS with warnings\n";
        assert_eq!(measured(log), Measured::Result(Result::SuccessWarnings));
        let log = "(d0) Test result: SUCCESSFUL\n";
        assert_eq!(measured(log), Measured::Other("SUCCESSFUL".into()));
        let log = "(d0) PANIC: Unable to locate Xen CPUID leaves\n";
        assert_eq!(
            measured(log),
            Measured::XtfPanic("Unable to locate Xen CPUID leaves".into())
        );
        assert_eq!(measured("nothing\n"), Measured::Nothing);
        assert_eq!(Result::parse("PANIC"), None);
        // A recorded panic expects XTF's panic line and Basalt's FAIL.
        let r = run(
            "xsa-308",
            RunKind::parse("qemu-svm").unwrap(),
            Some(Result::Panic),
        );
        assert_eq!(r.expect, ["PANIC: "]);
        assert_eq!(r.verdict, ExpectedVerdict::Fail);
        assert!(r.forbid.iter().any(|f| f == RESULT_PREFIX));
        // The expected line of a run does not match a longer verdict.
        let table = Table::parse(TABLE).expect("table");
        let want = &table.ci_runs()[0].expect[0];
        assert!(!"(d0) Test result: SUCCESS with warnings\n".contains(want.as_str()));
    }
}
