//! Judging a run from its serial log (pure; unit-tested).
//!
//! The convention (docs/testing.md): Basalt ends every run it can with one
//! line `BASALT-VERDICT: PASS` or `BASALT-VERDICT: FAIL: <reason>`.

use crate::scenario::{ExpectedVerdict, Scenario};

/// The verdict line prefix.
pub const VERDICT_PREFIX: &str = "BASALT-VERDICT: ";

/// A verdict Basalt printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `BASALT-VERDICT: PASS`
    Pass,
    /// `BASALT-VERDICT: FAIL: <reason>`
    Fail(String),
}

/// The log with carriage returns removed.
pub fn normalise(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).replace('\r', "")
}

/// The first complete verdict line in `log` (one followed by a newline, or
/// any when `complete_only` is false).
pub fn verdict(log: &str, complete_only: bool) -> Option<Verdict> {
    let at = log.find(VERDICT_PREFIX)?;
    let rest = &log[at + VERDICT_PREFIX.len()..];
    let line = match rest.find('\n') {
        Some(end) => &rest[..end],
        None if complete_only => return None,
        None => rest,
    };
    let line = line.trim();
    if line == "PASS" {
        Some(Verdict::Pass)
    } else {
        Some(Verdict::Fail(
            line.strip_prefix("FAIL:")
                .unwrap_or(line)
                .trim()
                .to_string(),
        ))
    }
}

/// The usable RAM in bytes from Basalt's `usable RAM: ... (N bytes)` line.
pub fn usable_ram_bytes(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("usable RAM:"))?;
    let open = line.find('(')?;
    let close = line[open..].find(" bytes)")? + open;
    line[open + 1..close].parse().ok()
}

/// Judges a finished run. `Ok` carries a one-line summary, `Err` the reason
/// the scenario failed.
pub fn judge(scenario: &Scenario, memory_mib: u64, log: &str) -> Result<String, String> {
    let verdict = verdict(log, false).ok_or_else(|| {
        "no BASALT-VERDICT line: Basalt hung, faulted silently or the run timed out".to_string()
    })?;
    match (&verdict, scenario.verdict) {
        (Verdict::Pass, ExpectedVerdict::Pass) | (Verdict::Fail(_), ExpectedVerdict::Fail) => {}
        (Verdict::Fail(reason), ExpectedVerdict::Pass) => {
            return Err(format!("Basalt reported FAIL ({reason}), expected PASS"));
        }
        (Verdict::Pass, ExpectedVerdict::Fail) => {
            return Err("Basalt reported PASS, expected FAIL".into());
        }
    }
    let mut from = 0;
    for wanted in &scenario.expect {
        match log[from..].find(wanted.as_str()) {
            Some(at) => from += at + wanted.len(),
            None if log.contains(wanted.as_str()) => {
                return Err(format!(
                    "expected line {wanted:?} appears, but out of order"
                ));
            }
            None => return Err(format!("expected line {wanted:?} is missing")),
        }
    }
    for forbidden in &scenario.forbid {
        if let Some(line) = log.lines().find(|l| l.contains(forbidden.as_str())) {
            return Err(format!(
                "forbidden {forbidden:?} appears: {:?}",
                line.trim()
            ));
        }
    }
    let mut summary = match verdict {
        Verdict::Pass => "PASS".to_string(),
        Verdict::Fail(reason) => format!("FAIL ({reason}) as expected"),
    };
    if let Some(percent) = scenario.checks.usable_ram_within_percent {
        let total = memory_mib << 20;
        let usable = usable_ram_bytes(log)
            .ok_or("no `usable RAM: ... (N bytes)` line to check the memory total")?;
        let shortfall = (total as f64 - usable as f64) / total as f64 * 100.0;
        if usable > total || shortfall > percent {
            return Err(format!(
                "usable RAM {usable} bytes is {shortfall:.2}% below the machine's {total} bytes \
                 (allowed: 0 to {percent}%)"
            ));
        }
        summary.push_str(&format!(
            ", usable RAM {shortfall:.2}% below {memory_mib} MiB"
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Scenario {
        Scenario::parse(&format!(
            "name = 't'\ndescription = 'd'\nemulator = 'qemu'\n{extra}"
        ))
        .expect("valid")
    }

    const LOG: &str = "\x1b[H junk\n[ 0.1] cpu0 INFO  Basalt hypervisor 0.1.0\n\
                       [ 0.2] cpu0 WARN  unknown command-line options ignored: bogus=1\n\
                       [ 0.3] cpu0 INFO  usable RAM: 511.4 MiB (536342528 bytes) in 2 ranges\n\
                       BASALT-VERDICT: PASS\n";

    #[test]
    fn finds_verdicts() {
        assert_eq!(verdict(LOG, true), Some(Verdict::Pass));
        assert_eq!(verdict("BASALT-VERDICT: PASS", true), None);
        assert_eq!(verdict("BASALT-VERDICT: PASS", false), Some(Verdict::Pass));
        assert_eq!(
            verdict("x\nBASALT-VERDICT: FAIL: panic\n", true),
            Some(Verdict::Fail("panic".into()))
        );
        assert_eq!(verdict("nothing here\n", false), None);
    }

    #[test]
    fn ordered_expectations() {
        let s = scenario("expect = ['Basalt hypervisor', 'bogus=1']");
        assert!(judge(&s, 512, LOG).is_ok());
        let s = scenario("expect = ['bogus=1', 'Basalt hypervisor']");
        assert!(judge(&s, 512, LOG).unwrap_err().contains("out of order"));
        let s = scenario("expect = ['missing line']");
        assert!(judge(&s, 512, LOG).unwrap_err().contains("missing"));
    }

    #[test]
    fn forbidden_lines_and_verdicts() {
        let s = scenario("forbid = ['WARN']");
        assert!(judge(&s, 512, LOG).unwrap_err().contains("forbidden"));
        let s = scenario("verdict = 'fail'");
        assert!(judge(&s, 512, LOG).unwrap_err().contains("expected FAIL"));
        assert!(
            judge(&scenario(""), 512, "no verdict\n")
                .unwrap_err()
                .contains("no BASALT-VERDICT")
        );
        let failing = "BASALT-VERDICT: FAIL: panic\n";
        assert!(
            judge(&scenario(""), 512, failing)
                .unwrap_err()
                .contains("expected PASS")
        );
        assert!(judge(&scenario("verdict = 'fail'"), 512, failing).is_ok());
    }

    #[test]
    fn usable_ram_check() {
        assert_eq!(usable_ram_bytes(LOG), Some(536_342_528));
        let s = scenario("checks = { usable_ram_within_percent = 2.0 }");
        assert!(judge(&s, 512, LOG).is_ok());
        // 511.4 MiB of 1 GiB is far off.
        assert!(judge(&s, 1024, LOG).unwrap_err().contains("below"));
        // More than the machine has is wrong too.
        assert!(judge(&s, 256, LOG).is_err());
        assert!(judge(&s, 512, "BASALT-VERDICT: PASS\n").is_err());
    }

    #[test]
    fn carriage_returns_are_dropped() {
        assert_eq!(normalise(b"a\r\nb\r\n"), "a\nb\n");
    }
}
