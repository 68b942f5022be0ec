//! CI gate: latency budgets (`layers.lock:hold:p99<=50ms`) and regressions against a baseline report,
//! with per-check verdicts, text/JSON/JUnit output and a process exit code.

use std::fmt::{self, Write};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ReportError;
use crate::markup;
use crate::merge::{NamedLock, by_name};
use crate::model::{Metric, Mode, Report, Statistic, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CmpOp {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
        }
    }

    pub fn holds(self, measured: u64, limit: u64) -> bool {
        match self {
            CmpOp::Lt => measured < limit,
            CmpOp::Le => measured <= limit,
            CmpOp::Gt => measured > limit,
            CmpOp::Ge => measured >= limit,
            CmpOp::Eq => measured == limit,
        }
    }
}

/// One budget: `LOCK[:MODE]:METRIC:STAT OP VALUE`, e.g. `layers.lock:write:hold:p99<=50ms`.
/// Without a mode it applies to every mode of every matching lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// The expression as written, used to name the budget in every verdict.
    pub expr: String,
    pub lock: String,
    pub mode: Option<Mode>,
    pub metric: Metric,
    pub statistic: Statistic,
    pub op: CmpOp,
    /// Nanoseconds for durations, a plain number for `count`.
    pub limit: u64,
}

impl FromStr for Budget {
    type Err = ReportError;

    fn from_str(expr: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ReportError::Budget {
            expr: expr.to_string(),
            reason,
        };
        let text = expr.trim();
        let op_at = text
            .find(['<', '>', '='])
            .ok_or_else(|| err("no comparison (expected one of < <= > >= ==)".into()))?;
        let (left, rest) = text.split_at(op_at);
        let (op, right) = [
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("==", CmpOp::Eq),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ]
        .into_iter()
        .find_map(|(tok, op)| rest.strip_prefix(tok).map(|r| (op, r)))
        .ok_or_else(|| err("a single '=' is not a comparison; use ==".into()))?;
        let right = right.trim();
        if right.starts_with(['<', '>', '=']) {
            return Err(err(format!("unknown comparison near {rest:?}")));
        }

        let parts: Vec<&str> = left.trim().split(':').map(str::trim).collect();
        if parts.len() < 3 {
            return Err(err(
                "expected LOCK[:MODE]:METRIC:STAT, e.g. layers.lock:hold:p99".into(),
            ));
        }
        let n = parts.len();
        let statistic: Statistic = parts[n - 1].parse().map_err(err)?;
        let metric: Metric = parts[n - 2]
            .parse()
            .map_err(|e: ReportError| err(e.to_string()))?;
        // A fourth-from-last part that names a mode is the mode; otherwise the lock pattern itself
        // contains ':' and keeps it.
        let (lock_parts, mode) = match parts[n - 3].parse::<Mode>() {
            Ok(mode) if n >= 4 => (&parts[..n - 3], Some(mode)),
            _ => (&parts[..n - 2], None),
        };
        let lock = lock_parts.join(":");
        if lock.is_empty() {
            return Err(err("empty lock pattern".into()));
        }
        let limit = if statistic.is_duration() {
            parse_duration(right).map_err(err)?
        } else {
            right.parse::<u64>().map_err(|_| {
                err(format!(
                    "count limit must be a whole number without unit, got {right:?}"
                ))
            })?
        };
        Ok(Budget {
            expr: text.to_string(),
            lock,
            mode,
            metric,
            statistic,
            op,
            limit,
        })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

/// Parses `50ms`, `1.5s`, `850ns`, `12us`/`12µs` into nanoseconds. A unit is required: a bare
/// number is ambiguous for a duration.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {text:?} needs a unit (ns, us, µs, ms or s)"))?;
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (expected ns, us, µs, ms or s)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad number {number:?} in duration {text:?}"))?;
    let nanos = (value * scale).round();
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(nanos as u64)
}

/// Budgets file (TOML): `[[budget]]` tables, each either `expr = "layers.lock:hold:p99<=50ms"` or
/// the structured `lock`, optional `mode`, `metric`, `stat`, `op`, `limit` (string with unit, or a
/// number for count).
pub fn load_budgets(path: &Path) -> Result<Vec<Budget>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    parse_budgets(&text, path)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetsFile {
    #[serde(default)]
    budget: Vec<BudgetEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetEntry {
    expr: Option<String>,
    lock: Option<String>,
    mode: Option<String>,
    metric: Option<String>,
    stat: Option<String>,
    op: Option<String>,
    limit: Option<toml::Value>,
}

/// Parses budgets-file text; `origin` only names the file in errors.
pub fn parse_budgets(text: &str, origin: &Path) -> Result<Vec<Budget>, ReportError> {
    let file_err = |reason: String| ReportError::BudgetsFile {
        path: origin.to_path_buf(),
        reason,
    };
    let file: BudgetsFile = toml::from_str(text).map_err(|e| {
        // toml errors span several lines (source excerpt); keep the first one.
        file_err(
            e.message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_string(),
        )
    })?;
    if file.budget.is_empty() {
        return Err(file_err("no [[budget]] entries".into()));
    }
    file.budget
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let expr =
                entry_expr(entry).map_err(|r| file_err(format!("budget #{}: {r}", i + 1)))?;
            expr.parse::<Budget>()
                .map_err(|e| file_err(format!("budget #{}: {e}", i + 1)))
        })
        .collect()
}

fn entry_expr(entry: BudgetEntry) -> Result<String, String> {
    let BudgetEntry {
        expr,
        lock,
        mode,
        metric,
        stat,
        op,
        limit,
    } = entry;
    match (expr, lock, metric, stat, op, limit) {
        (Some(expr), None, None, None, None, None) if mode.is_none() => Ok(expr),
        (None, Some(lock), Some(metric), Some(stat), Some(op), Some(limit)) => {
            let limit = match limit {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                other => return Err(format!("limit must be a string or integer, got {other}")),
            };
            let mode = mode.map(|m| format!("{m}:")).unwrap_or_default();
            Ok(format!("{lock}:{mode}{metric}:{stat}{op}{limit}"))
        }
        _ => Err("give either `expr` alone, or `lock`, `metric`, `stat`, `op` and `limit` (optional `mode`)".into()),
    }
}

/// A baseline report and how much worse (percent) a statistic may get before it counts as a regression.
#[derive(Debug, Clone, Copy)]
pub struct Baseline<'a> {
    pub report: &'a Report,
    pub tolerance_pct: f64,
}

#[derive(Debug, Clone)]
pub struct GateConfig<'a> {
    pub budgets: Vec<Budget>,
    pub baseline: Option<Baseline<'a>>,
    /// Duration statistics over fewer samples than this are inconclusive, not passed.
    pub min_samples: u64,
    /// Statistics compared against the baseline, for wait and hold of every lock mode.
    pub regression_stats: Vec<Statistic>,
}

impl Default for GateConfig<'_> {
    fn default() -> Self {
        GateConfig {
            budgets: Vec::new(),
            baseline: None,
            min_samples: 1,
            regression_stats: vec![Statistic::P50, Statistic::P99],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Inconclusive,
    Fail,
    /// The check could not be evaluated (e.g. its lock pattern matched nothing).
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Budget,
    Regression,
}

/// The verdict on one budget for one lock mode, or one statistic against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub kind: CheckKind,
    /// The budget expression, or `regression:LOCK:MODE:METRIC:STAT`.
    pub name: String,
    pub lock: Option<String>,
    /// How many lock files with this name the report has; above one, the statistics are over all
    /// of them merged.
    pub files: Option<usize>,
    pub mode: Option<Mode>,
    pub metric: Option<Metric>,
    pub statistic: Option<Statistic>,
    pub samples: Option<u64>,
    pub measured: Option<u64>,
    pub limit: Option<u64>,
    pub baseline: Option<u64>,
    pub verdict: Verdict,
    /// One line that names the budget, the measured value and the limit.
    pub message: String,
}

impl Check {
    /// A check that is about no particular lock or statistic yet.
    fn bare(kind: CheckKind, name: String, verdict: Verdict, message: String) -> Self {
        Check {
            kind,
            name,
            lock: None,
            files: None,
            mode: None,
            metric: None,
            statistic: None,
            samples: None,
            measured: None,
            limit: None,
            baseline: None,
            verdict,
            message,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub verdict: Verdict,
    pub exit_code: i32,
    pub checks: Vec<Check>,
    /// Caveats about the inputs (dropped events, clock source mismatch).
    pub warnings: Vec<String>,
}

/// Evaluates budgets and the baseline comparison on `report`.
pub fn evaluate(report: &Report, config: &GateConfig) -> GateResult {
    let mut checks = Vec::new();
    for budget in &config.budgets {
        check_budget(report, budget, config.min_samples, &mut checks);
    }
    if let Some(baseline) = &config.baseline {
        check_regressions(report, baseline, config, &mut checks);
    }
    if checks.is_empty() {
        checks.push(Check::bare(
            CheckKind::Budget,
            "gate".into(),
            Verdict::Error,
            "nothing to check: give budgets or a baseline".into(),
        ));
    }
    let mut warnings = Vec::new();
    let drops = report.meta.drops.total();
    if drops > 0 {
        warnings.push(format!(
            "report lost {drops} events; its histograms are incomplete"
        ));
    }
    if let Some(b) = &config.baseline {
        if b.report.meta.source != report.meta.source {
            warnings.push(format!(
                "baseline timings come from the {} clock, this report from the {} clock",
                b.report.meta.source, report.meta.source
            ));
        }
        if b.report.meta.drops.total() > 0 {
            warnings.push(format!(
                "baseline lost {} events; its histograms are incomplete",
                b.report.meta.drops.total()
            ));
        }
    }
    let verdict = overall(&checks);
    GateResult {
        verdict,
        exit_code: match verdict {
            Verdict::Pass | Verdict::Inconclusive => 0,
            Verdict::Fail => 1,
            Verdict::Error => 2,
        },
        checks,
        warnings,
    }
}

/// An unevaluable check makes the whole gate unevaluable (exit 2) even if others failed: a broken
/// gate configuration must be fixed before its verdicts mean anything.
fn overall(checks: &[Check]) -> Verdict {
    checks
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Error)
}

fn check_budget(report: &Report, budget: &Budget, min_samples: u64, out: &mut Vec<Check>) {
    let base = Check {
        mode: budget.mode,
        metric: Some(budget.metric),
        statistic: Some(budget.statistic),
        limit: Some(budget.limit),
        ..Check::bare(
            CheckKind::Budget,
            budget.expr.clone(),
            Verdict::Error,
            String::new(),
        )
    };
    // Same-named lock files are one lock to a budget, as they are to the baseline comparison: the
    // budget then holds for the name across the run, however many stores it had.
    let locks = match by_name(report.find(&budget.lock)) {
        Ok(locks) => locks,
        Err(e) => {
            out.push(Check {
                message: format!("budget {}: {e}", budget.expr),
                ..base
            });
            return;
        }
    };
    if locks.is_empty() {
        out.push(Check {
            message: format!(
                "budget {}: lock pattern {:?} matches no lock in the report",
                budget.expr, budget.lock
            ),
            ..base
        });
        return;
    }
    let before = out.len();
    for named in locks.values() {
        for (mode, mode_report) in &named.lock.modes {
            if budget.mode.is_some_and(|m| m != *mode) {
                continue;
            }
            let summary = &mode_report.metric(budget.metric).summary;
            let measured = budget.statistic.of(summary);
            let stat = budget.statistic;
            let limit = format!("{} {}", budget.op.as_str(), stat.format(budget.limit));
            let at = format!("{} {mode}", named.label());
            let (verdict, message) = if stat.is_duration() && summary.count < min_samples {
                (
                    Verdict::Inconclusive,
                    format!(
                        "budget {} on {at}: only {} samples (need {min_samples}); limit {limit}",
                        budget.expr, summary.count
                    ),
                )
            } else {
                let verdict = if budget.op.holds(measured, budget.limit) {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                };
                let message = format!(
                    "budget {} on {at}: measured {}, limit {limit}",
                    budget.expr,
                    stat.format(measured)
                );
                (verdict, message)
            };
            out.push(Check {
                lock: Some(named.lock.key.name.clone()),
                files: Some(named.files),
                mode: Some(*mode),
                samples: Some(summary.count),
                measured: Some(measured),
                verdict,
                message,
                ..base.clone()
            });
        }
    }
    if out.len() == before {
        out.push(Check {
            message: format!(
                "budget {}: locks matching {:?} have no {}activity",
                budget.expr,
                budget.lock,
                budget.mode.map(|m| format!("{m} ")).unwrap_or_default()
            ),
            ..base
        });
    }
}

fn check_regressions(
    report: &Report,
    baseline: &Baseline,
    config: &GateConfig,
    out: &mut Vec<Check>,
) {
    let unevaluable = |message: String| {
        Check::bare(
            CheckKind::Regression,
            "regression".into(),
            Verdict::Error,
            message,
        )
    };
    // Locks line up by name; same-named lock files on either side are merged first.
    let (current, base) = match (by_name(&report.locks), by_name(&baseline.report.locks)) {
        (Ok(current), Ok(base)) => (current, base),
        (Err(e), _) => {
            out.push(unevaluable(format!("regression: {e}")));
            return;
        }
        (_, Err(e)) => {
            out.push(unevaluable(format!("regression: baseline: {e}")));
            return;
        }
    };
    let tol = baseline.tolerance_pct;
    for (name, named) in &current {
        for (mode, mode_report) in &named.lock.modes {
            for metric in Metric::ALL {
                let cur = &mode_report.metric(metric).summary;
                for stat in &config.regression_stats {
                    out.push(regression_check(
                        named,
                        base.get(name),
                        *mode,
                        metric,
                        *stat,
                        cur,
                        tol,
                        config.min_samples,
                    ));
                }
            }
        }
    }
    // A lock that vanished is not a pass either: say so.
    for (name, base_named) in &base {
        for mode in base_named.lock.modes.keys() {
            if current
                .get(name)
                .is_some_and(|l| l.lock.modes.contains_key(mode))
            {
                continue;
            }
            out.push(Check {
                lock: Some(name.to_string()),
                files: Some(0),
                mode: Some(*mode),
                samples: Some(0),
                ..Check::bare(
                    CheckKind::Regression,
                    format!("regression:{name}:{mode}"),
                    Verdict::Inconclusive,
                    format!("regression {name} {mode}: in the baseline but not in this report"),
                )
            });
        }
    }
}

#[allow(clippy::too_many_arguments)] // one flat call site; a struct would only rename the arguments
fn regression_check(
    lock: &NamedLock,
    base: Option<&NamedLock>,
    mode: Mode,
    metric: Metric,
    stat: Statistic,
    cur: &Summary,
    tolerance_pct: f64,
    min_samples: u64,
) -> Check {
    let name = &lock.lock.key.name;
    let base_mode = base.and_then(|b| Some((b.lock.modes.get(&mode)?, b.files)));
    let base = base_mode.map(|(m, files)| (&m.metric(metric).summary, files));
    let measured = stat.of(cur);
    let mut check = Check {
        kind: CheckKind::Regression,
        name: format!("regression:{name}:{mode}:{metric}:{stat}"),
        lock: Some(name.clone()),
        files: Some(lock.files),
        mode: Some(mode),
        metric: Some(metric),
        statistic: Some(stat),
        samples: Some(cur.count),
        measured: Some(measured),
        limit: None,
        baseline: base.map(|(b, _)| stat.of(b)),
        verdict: Verdict::Inconclusive,
        message: String::new(),
    };
    let what = format!("regression {} {mode} {metric} {stat}", lock.label());
    let Some((base, base_files)) = base else {
        check.message = format!(
            "{what}: measured {}, no baseline for this lock mode",
            stat.format(measured)
        );
        return check;
    };
    let need = min_samples.max(1);
    if cur.count < need || base.count < need {
        check.message = format!(
            "{what}: only {} samples here and {} in the baseline (need {need})",
            cur.count, base.count
        );
        return check;
    }
    let base_value = stat.of(base);
    let limit = base_value as f64 * (1.0 + tolerance_pct / 100.0);
    check.limit = Some(limit.floor() as u64);
    let change = if base_value == 0 {
        String::new()
    } else {
        format!(
            " ({:+.1}%)",
            (measured as f64 / base_value as f64 - 1.0) * 100.0
        )
    };
    let base_files = if base_files > 1 {
        format!(" ({base_files} files)")
    } else {
        String::new()
    };
    check.verdict = if measured as f64 > limit {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    check.message = format!(
        "{what}: measured {}{change}, baseline {}{base_files}, limit {} (+{tolerance_pct}%)",
        stat.format(measured),
        stat.format(base_value),
        stat.format(limit.floor() as u64)
    );
    check
}

impl GateResult {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }

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
            let case = match (&c.lock, c.mode) {
                (Some(lock), Some(mode)) => format!("{lock} {mode}"),
                (Some(lock), None) => lock.clone(),
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
                        match c.kind {
                            CheckKind::Budget => "budget",
                            CheckKind::Regression => "regression",
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
