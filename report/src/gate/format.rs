//! The gate's output formats: text for people, JSON for machines, JUnit XML for CI dashboards.

use std::fmt::Write;

use crate::markup;

use super::check::{Check, CheckKind, GateResult, Verdict};

impl GateResult {
    /// Failures and errors first, then inconclusive, then passes; a summary line last.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let mut checks: Vec<&Check> = self.checks.iter().collect();
        checks.sort_by_key(|c| std::cmp::Reverse(c.verdict));
        for c in checks {
            let _ = writeln!(out, "{:<12} {}", c.verdict.as_str(), c.message);
        }
        let _ = writeln!(
            out,
            "gate {}: {} passed, {} failed, {} inconclusive, {} not evaluable",
            self.verdict.as_str(),
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::Inconclusive),
            self.count(Verdict::Error)
        );
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("gate result serializes to JSON")
    }

    /// JUnit XML: one testcase per check, named by its budget (class) and lock mode; failures as
    /// `<failure>`, unevaluable checks as `<error>`, inconclusive ones as `<skipped>`.
    pub fn to_junit(&self) -> String {
        let tests = self.checks.len();
        let (failures, errors, skipped) = (
            self.count(Verdict::Fail),
            self.count(Verdict::Error),
            self.count(Verdict::Inconclusive),
        );
        let counts = format!(
            r#"tests="{tests}" failures="{failures}" errors="{errors}" skipped="{skipped}""#
        );
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(out, r#"<testsuites name="locktrace gate" {counts}>"#);
        let _ = writeln!(out, r#"  <testsuite name="locktrace gate" {counts}>"#);
        for w in &self.warnings {
            let _ = writeln!(
                out,
                "    <!-- warning: {} -->",
                // "--" may not appear inside an XML comment.
                markup::escape(&w.replace('-', "\u{2011}"))
            );
        }
        for c in &self.checks {
            let case = match (c.lock(), c.mode()) {
                _ if c.cycle().is_some() => c.cycle().unwrap_or_default().join(" → "),
                (Some(lock), Some(mode)) => format!("{lock} {mode}"),
                (Some(lock), None) => lock.to_string(),
                _ => c.name.clone(),
            };
            let _ = write!(
                out,
                r#"    <testcase classname="{}" name="{}""#,
                markup::escape(&c.name),
                markup::escape(&case)
            );
            let msg = markup::escape(&c.message);
            match c.verdict {
                Verdict::Pass => {
                    let _ = writeln!(out, "/>");
                }
                Verdict::Fail => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{msg}\" type=\"{}\">{msg}</failure>\n    </testcase>",
                        match c.kind() {
                            CheckKind::Budget => "budget",
                            CheckKind::Regression => "regression",
                            CheckKind::LockOrder => "lock_order",
                        }
                    );
                }
                Verdict::Error => {
                    let _ = writeln!(
                        out,
                        ">\n      <error message=\"{msg}\" type=\"unevaluable\">{msg}</error>\n    </testcase>"
                    );
                }
                Verdict::Inconclusive => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{msg}\"/>\n    </testcase>"
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}
