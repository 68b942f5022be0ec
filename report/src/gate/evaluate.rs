//! Evaluating budgets and the baseline comparison on a report.

use crate::lock_order::describe_cycle;
use crate::merge::{NamedLock, by_name};
use crate::model::{Metric, Mode, Report, Statistic, Summary};

use super::budget::{Budget, Limit};
use super::check::{Check, CheckKind, GateResult, LockMode, Subject, Verdict};

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
    /// Fail on any cycle in the report's lock order (a potential deadlock).
    pub fail_on_inversion: bool,
    /// The report relative budgets (`0.2x`) take their limits from.
    pub reference: Option<&'a Report>,
}

impl Default for GateConfig<'_> {
    fn default() -> Self {
        GateConfig {
            budgets: Vec::new(),
            baseline: None,
            min_samples: 1,
            regression_stats: vec![Statistic::P50, Statistic::P99],
            fail_on_inversion: false,
            reference: None,
        }
    }
}

/// Evaluates budgets and the baseline comparison on `report`.
pub fn evaluate(report: &Report, config: &GateConfig) -> GateResult {
    let mut checks = Vec::new();
    for budget in &config.budgets {
        check_budget(report, budget, config, &mut checks);
    }
    if let Some(baseline) = &config.baseline {
        check_regressions(report, baseline, config, &mut checks);
    }
    if config.fail_on_inversion {
        check_lock_order(report, &mut checks);
    }
    if checks.is_empty() {
        checks.push(setup_error(
            CheckKind::Budget,
            "gate",
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

fn setup_error(kind: CheckKind, name: &str, message: String) -> Check {
    Check {
        name: name.into(),
        verdict: Verdict::Error,
        message,
        subject: Subject::Setup(kind),
    }
}

/// The name of every lock-order check.
pub const LOCK_ORDER_CHECK: &str = "lock-order:inversions";

/// One failed check per lock-order cycle, or one passed check when there is none.
fn check_lock_order(report: &Report, out: &mut Vec<Check>) {
    let order = &report.lock_order;
    let edges = order.edges.len();
    if order.cycles.is_empty() {
        out.push(Check {
            name: LOCK_ORDER_CHECK.into(),
            verdict: Verdict::Pass,
            message: format!("{LOCK_ORDER_CHECK}: no lock-order inversion over {edges} edges"),
            subject: Subject::LockOrder { cycle: None, edges },
        });
    }
    for cycle in &order.cycles {
        out.push(Check {
            name: LOCK_ORDER_CHECK.into(),
            verdict: Verdict::Fail,
            message: format!(
                "{LOCK_ORDER_CHECK}: potential deadlock {}",
                describe_cycle(order, cycle)
            ),
            subject: Subject::LockOrder {
                cycle: Some(cycle.clone()),
                edges,
            },
        });
    }
}

fn check_budget(report: &Report, budget: &Budget, config: &GateConfig, out: &mut Vec<Check>) {
    let min_samples = config.min_samples;
    let unmeasured = |message: String| Check {
        name: budget.expr.clone(),
        verdict: Verdict::Error,
        message,
        subject: Subject::UnmeasuredBudget {
            mode: budget.mode,
            metric: budget.metric,
            statistic: budget.statistic,
            limit: match budget.limit {
                Limit::Fixed(n) => Some(n),
                Limit::Relative(_) => None,
            },
        },
    };
    let reference = match (budget.limit, config.reference) {
        (Limit::Fixed(_), _) => None,
        (Limit::Relative(_), None) => {
            out.push(unmeasured(format!(
                "budget {}: a relative limit needs a reference report (--relative-to)",
                budget.expr
            )));
            return;
        }
        (Limit::Relative(_), Some(r)) => match by_name(r.find(&budget.lock)) {
            Ok(locks) => Some(locks),
            Err(e) => {
                out.push(unmeasured(format!(
                    "budget {}: reference: {e}",
                    budget.expr
                )));
                return;
            }
        },
    };
    // Same-named lock files are one lock to a budget, as they are to the baseline comparison: the
    // budget then holds for the name across the run, however many stores it had.
    let locks = match by_name(report.find(&budget.lock)) {
        Ok(locks) => locks,
        Err(e) => {
            out.push(unmeasured(format!("budget {}: {e}", budget.expr)));
            return;
        }
    };
    if locks.is_empty() {
        out.push(unmeasured(format!(
            "budget {}: lock pattern {:?} matches no lock in the report",
            budget.expr, budget.lock
        )));
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
            let at = format!("{} {mode}", named.label());
            let (limit_value, limit) = match budget.limit {
                Limit::Fixed(n) => (n, format!("{} {}", budget.op.as_str(), stat.format(n))),
                Limit::Relative(factor) => {
                    let base = reference
                        .as_ref()
                        .and_then(|locks| locks.get(named.lock.key.name.as_str()))
                        .and_then(|l| l.lock.modes.get(mode))
                        .map(|m| &m.metric(budget.metric).summary);
                    let Some(base) = base else {
                        out.push(unmeasured(format!(
                            "budget {} on {at}: the reference report has no {at}",
                            budget.expr
                        )));
                        continue;
                    };
                    // A limit from too few reference samples decides nothing.
                    if stat.is_duration() && base.count < min_samples {
                        out.push(Check {
                            name: budget.expr.clone(),
                            verdict: Verdict::Inconclusive,
                            message: format!(
                                "budget {} on {at}: the reference has only {} samples (need \
                                 {min_samples})",
                                budget.expr, base.count
                            ),
                            subject: Subject::UnmeasuredBudget {
                                mode: Some(*mode),
                                metric: budget.metric,
                                statistic: stat,
                                limit: None,
                            },
                        });
                        continue;
                    }
                    let base = stat.of(base);
                    let n = (factor * base as f64).round() as u64;
                    let text = format!(
                        "{} {} ({factor} x the reference's {})",
                        budget.op.as_str(),
                        stat.format(n),
                        stat.format(base)
                    );
                    (n, text)
                }
            };
            let (verdict, message) = if stat.is_duration() && summary.count < min_samples {
                (
                    Verdict::Inconclusive,
                    format!(
                        "budget {} on {at}: only {} samples (need {min_samples}); limit {limit}",
                        budget.expr, summary.count
                    ),
                )
            } else {
                let verdict = if budget.op.holds(measured, limit_value) {
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
                name: budget.expr.clone(),
                verdict,
                message,
                subject: Subject::Budget {
                    at: LockMode {
                        lock: named.lock.key.name.clone(),
                        files: named.files,
                        mode: *mode,
                    },
                    metric: budget.metric,
                    statistic: stat,
                    samples: summary.count,
                    measured,
                    limit: limit_value,
                },
            });
        }
    }
    if out.len() == before {
        out.push(unmeasured(format!(
            "budget {}: locks matching {:?} have no {}activity",
            budget.expr,
            budget.lock,
            budget.mode.map(|m| format!("{m} ")).unwrap_or_default()
        )));
    }
}

fn check_regressions(
    report: &Report,
    baseline: &Baseline,
    config: &GateConfig,
    out: &mut Vec<Check>,
) {
    let unevaluable = |message| setup_error(CheckKind::Regression, "regression", message);
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
                name: format!("regression:{name}:{mode}"),
                verdict: Verdict::Inconclusive,
                message: format!(
                    "regression {name} {mode}: in the baseline but not in this report"
                ),
                subject: Subject::Vanished {
                    lock: name.to_string(),
                    mode: *mode,
                },
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
    let check = |verdict, message, limit| Check {
        name: format!("regression:{name}:{mode}:{metric}:{stat}"),
        verdict,
        message,
        subject: Subject::Regression {
            at: LockMode {
                lock: name.clone(),
                files: lock.files,
                mode,
            },
            metric,
            statistic: stat,
            samples: cur.count,
            measured,
            baseline: base.map(|(b, _)| stat.of(b)),
            limit,
        },
    };
    let what = format!("regression {} {mode} {metric} {stat}", lock.label());
    let Some((base, base_files)) = base else {
        let message = format!(
            "{what}: measured {}, no baseline for this lock mode",
            stat.format(measured)
        );
        return check(Verdict::Inconclusive, message, None);
    };
    let need = min_samples.max(1);
    if cur.count < need || base.count < need {
        let message = format!(
            "{what}: only {} samples here and {} in the baseline (need {need})",
            cur.count, base.count
        );
        return check(Verdict::Inconclusive, message, None);
    }
    let base_value = stat.of(base);
    let limit = base_value as f64 * (1.0 + tolerance_pct / 100.0);
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
    let verdict = if measured as f64 > limit {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    let message = format!(
        "{what}: measured {}{change}, baseline {}{base_files}, limit {} (+{tolerance_pct}%)",
        stat.format(measured),
        stat.format(base_value),
        stat.format(limit.floor() as u64)
    );
    check(verdict, message, Some(limit.floor() as u64))
}
