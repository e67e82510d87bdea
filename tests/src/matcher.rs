//! Judging a run from its serial log (pure; unit-tested).
//!
//! The convention (docs/testing.md): Basalt ends every run it can with one
//! line `BASALT-VERDICT: PASS` or `BASALT-VERDICT: FAIL: <reason>`.

use crate::scenario::{ExpectedVerdict, Figure, Scenario, Vendor};
use std::collections::BTreeMap;

/// The verdict line prefix.
pub const VERDICT_PREFIX: &str = "BASALT-VERDICT: ";

/// The prefix of a figure line, `BASALT-FIGURE: name=value`, found anywhere
/// in a line (after Basalt's log prefix or a guest's `(dN) `).
pub const FIGURE_PREFIX: &str = "BASALT-FIGURE: ";

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

/// Every figure printed in `log`: name to the text of its value, the last
/// printing of each name winning.
pub fn figures(log: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for line in log.lines() {
        let Some(at) = line.find(FIGURE_PREFIX) else {
            continue;
        };
        let Some((name, value)) = line[at + FIGURE_PREFIX.len()..].split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        let value = value.split_whitespace().next().unwrap_or("");
        found.insert(name.to_string(), value.to_string());
    }
    found
}

/// A decimal number: optional sign, digits, optional fraction (no exponent,
/// no `inf` or `NaN`).
pub fn parse_decimal(text: &str) -> Option<f64> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    text.parse().ok()
}

/// A figure's bounds for people: `20..30`, `>= 20`, `<= 30` or `any`.
pub fn bounds(figure: &Figure) -> String {
    match (figure.min, figure.max) {
        (Some(min), Some(max)) => format!("{min}..{max}"),
        (Some(min), None) => format!(">= {min}"),
        (None, Some(max)) => format!("<= {max}"),
        (None, None) => "any".into(),
    }
}

/// Checks the scenario's figures against `log`. `Ok` lists them for the
/// summary (`share_d1=24.9 (20..30)`); `Err` names each figure that is
/// missing, not a number or out of bounds, then lists them all.
pub fn check_figures(wanted: &[Figure], log: &str) -> Result<String, String> {
    let printed = figures(log);
    let mut shown = Vec::new();
    let mut problems = Vec::new();
    for figure in wanted {
        let name = &figure.name;
        let bounds = bounds(figure);
        let Some(text) = printed.get(name) else {
            shown.push(format!("{name}=missing ({bounds})"));
            problems.push(format!(
                "figure {name} was never printed (no `{FIGURE_PREFIX}{name}=<number>` line; \
                 wanted {bounds})"
            ));
            continue;
        };
        shown.push(format!("{name}={text} ({bounds})"));
        match parse_decimal(text) {
            None => problems.push(format!(
                "figure {name} was printed as {text:?}, not a decimal number (wanted {bounds})"
            )),
            Some(value)
                if figure.min.is_some_and(|min| value < min)
                    || figure.max.is_some_and(|max| value > max) =>
            {
                problems.push(format!(
                    "figure {name}={text} is out of its bounds {bounds}"
                ));
            }
            Some(_) => {}
        }
    }
    let shown = shown.join(", ");
    if problems.is_empty() {
        Ok(shown)
    } else {
        Err(format!("{} (figures: {shown})", problems.join("; ")))
    }
}

/// Checks that every line of `expect` appears in `log`, in this order;
/// `which` is added to the reason of a failure.
fn in_order(expect: &[String], log: &str, which: &str) -> Result<(), String> {
    let mut from = 0;
    for wanted in expect {
        match log[from..].find(wanted.as_str()) {
            Some(at) => from += at + wanted.len(),
            None if log.contains(wanted.as_str()) => {
                return Err(format!(
                    "expected line {wanted:?}{which} appears, but out of order"
                ));
            }
            None => return Err(format!("expected line {wanted:?}{which} is missing")),
        }
    }
    Ok(())
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
    in_order(&scenario.expect, log, "")?;
    if let Some(backend) = scenario.backend {
        let list = match backend.vendor() {
            Vendor::Vmx => "expect_vmx",
            Vendor::Svm => "expect_svm",
        };
        in_order(
            &scenario.expect_vendor,
            log,
            &format!(" (`{list}`, on {})", backend.name()),
        )?;
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
    if !scenario.figures.is_empty() {
        let shown = check_figures(&scenario.figures, log)?;
        summary.push_str(&format!(", figures {shown}"));
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

    const FIGURES: &str = "[ 1.0] cpu0 INFO  BASALT-FIGURE: share_d1=31.5\n\
                           (d1) BASALT-FIGURE: share_d1=24.93\n\
                           (d2) BASALT-FIGURE: exits=1200 \n\
                           BASALT-FIGURE: neg=-2.5 ticks\n\
                           BASALT-FIGURE: bad=12abc\n\
                           BASALT-FIGURE: =3\n\
                           BASALT-FIGURE: novalue\n\
                           BASALT-VERDICT: PASS\n";

    #[test]
    fn figures_are_found_anywhere_in_a_line_and_the_last_counts() {
        let found = figures(FIGURES);
        assert_eq!(found.get("share_d1").map(String::as_str), Some("24.93"));
        assert_eq!(found.get("exits").map(String::as_str), Some("1200"));
        assert_eq!(found.get("neg").map(String::as_str), Some("-2.5"));
        assert_eq!(found.get("bad").map(String::as_str), Some("12abc"));
        assert_eq!(found.len(), 4, "{found:?}");
    }

    #[test]
    fn decimal_numbers() {
        assert_eq!(parse_decimal("24.93"), Some(24.93));
        assert_eq!(parse_decimal("1200"), Some(1200.0));
        assert_eq!(parse_decimal("-2.5"), Some(-2.5));
        assert_eq!(parse_decimal("+.5"), Some(0.5));
        assert_eq!(parse_decimal("7."), Some(7.0));
        for bad in [
            "", ".", "-", "1e5", "inf", "NaN", "1.2.3", "12abc", "0x10", " 1",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn figure_checks() {
        let figure = |name: &str, min: Option<f64>, max: Option<f64>| Figure {
            name: name.into(),
            min,
            max,
        };
        assert_eq!(
            check_figures(
                &[
                    figure("share_d1", Some(20.0), Some(30.0)),
                    figure("exits", None, Some(1200.0)),
                    figure("neg", Some(-3.0), None),
                    figure("share_d1", None, None),
                ],
                FIGURES
            ),
            Ok(
                "share_d1=24.93 (20..30), exits=1200 (<= 1200), neg=-2.5 (>= -3), \
                share_d1=24.93 (any)"
                    .into()
            )
        );
        let low = check_figures(&[figure("share_d1", Some(25.0), Some(30.0))], FIGURES);
        assert_eq!(
            low,
            Err("figure share_d1=24.93 is out of its bounds 25..30 \
                 (figures: share_d1=24.93 (25..30))"
                .into())
        );
        let high = check_figures(&[figure("exits", Some(1.0), Some(1199.5))], FIGURES);
        assert!(
            high.unwrap_err()
                .contains("exits=1200 is out of its bounds 1..1199.5")
        );
        let missing = check_figures(
            &[
                figure("share_d9", Some(1.0), None),
                figure("exits", None, None),
            ],
            FIGURES,
        )
        .unwrap_err();
        assert!(
            missing.contains("figure share_d9 was never printed"),
            "{missing}"
        );
        assert!(missing.contains("wanted >= 1"), "{missing}");
        assert!(missing.ends_with("(figures: share_d9=missing (>= 1), exits=1200 (any))"));
        let bad = check_figures(&[figure("bad", None, None)], FIGURES).unwrap_err();
        assert!(bad.contains("\"12abc\", not a decimal number"), "{bad}");
    }

    #[test]
    fn judge_reports_figures() {
        let s = scenario("figures = [{ name = 'share_d1', min = 20.0, max = 30 }]");
        assert_eq!(
            judge(&s, 512, FIGURES),
            Ok("PASS, figures share_d1=24.93 (20..30)".into())
        );
        let s = scenario("figures = [{ name = 'share_d1', max = 20.0 }]");
        assert!(
            judge(&s, 512, FIGURES)
                .unwrap_err()
                .contains("share_d1=24.93")
        );
        // Without figures the summary is as before.
        assert_eq!(judge(&scenario(""), 512, FIGURES), Ok("PASS".into()));
    }

    #[test]
    fn vendor_expectations_are_their_own_sequence() {
        let runs = Scenario::runs(
            "name = 't'\ndescription = 'd'\nbackends = ['bochs-vmx', 'qemu-svm']\n\
             expect = ['usable RAM']\nexpect_vmx = ['Basalt hypervisor']\n\
             expect_svm = ['VT-x unavailable']\nforbid_svm = ['bogus=1']",
        )
        .expect("valid");
        // VT-x: its line comes before `expect`'s, which is fine.
        assert!(judge(&runs[0], 512, LOG).is_ok());
        let svm = judge(&runs[1], 512, LOG).unwrap_err();
        assert!(
            svm.contains("\"VT-x unavailable\" (`expect_svm`, on qemu-svm) is missing"),
            "{svm}"
        );
        let log = LOG.replace("bogus=1", "x");
        let mut svm_run = runs[1].clone();
        svm_run.expect_vendor = vec!["usable RAM".into(), "Basalt hypervisor".into()];
        assert!(
            judge(&svm_run, 512, &log)
                .unwrap_err()
                .contains("out of order")
        );
        assert!(judge(&runs[1], 512, LOG).is_err(), "forbid_svm applies");
    }

    #[test]
    fn carriage_returns_are_dropped() {
        assert_eq!(normalise(b"a\r\nb\r\n"), "a\nb\n");
    }
}
