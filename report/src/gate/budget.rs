//! Budgets: the `LOCK[:MODE]:METRIC:STAT OP VALUE` expression and the TOML budgets file.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;
use crate::error::ReportError;
use crate::model::{Metric, Mode, Statistic};

/// The largest budgets file read (1 MiB); real ones are a few lines.
pub const MAX_BUDGETS_FILE_BYTES: u64 = 1 << 20;

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

/// A budget's value: fixed, or a multiple of the same statistic in a reference report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Nanoseconds for durations, a plain number for `count`.
    Fixed(u64),
    /// `0.2x`: this times the reference report's value for the same lock name, mode, metric and
    /// statistic (e.g. "at most a fifth of podman 4.3's p99").
    Relative(f64),
}

/// One budget: `LOCK[:MODE]:METRIC:STAT OP VALUE`, e.g. `layers.lock:write:hold:p99<=50ms`, or
/// relative to a reference report, `layers.lock:write:hold:p99<=0.2x`. Without a mode it applies
/// to every mode of every matching lock.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// The expression as written, used to name the budget in every verdict.
    pub expr: String,
    pub lock: String,
    pub mode: Option<Mode>,
    pub metric: Metric,
    pub statistic: Statistic,
    pub op: CmpOp,
    pub limit: Limit,
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
        let limit = if let Some(factor) = right.strip_suffix('x') {
            match factor.trim().parse::<f64>() {
                Ok(f) if f.is_finite() && f > 0.0 => Limit::Relative(f),
                _ => {
                    return Err(err(format!(
                        "a relative limit is a positive factor and x, e.g. 0.2x; got {right:?}"
                    )));
                }
            }
        } else if statistic.is_duration() {
            Limit::Fixed(parse_duration(right).map_err(err)?)
        } else {
            Limit::Fixed(right.parse::<u64>().map_err(|_| {
                err(format!(
                    "count limit must be a whole number without unit, got {right:?}"
                ))
            })?)
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

/// Budgets file (TOML): `[[budget]]` tables, each either `expr = "layers.lock:hold:p99<=50ms"` or
/// the structured `lock`, optional `mode`, `metric`, `stat`, `op`, `limit` (string with unit, or a
/// number for count).
pub fn load_budgets(path: &Path) -> Result<Vec<Budget>, ReportError> {
    let io_err = |e| ReportError::io(path, e);
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io_err)?
        .take(MAX_BUDGETS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    let file_err = |reason: String| ReportError::BudgetsFile {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() as u64 > MAX_BUDGETS_FILE_BYTES {
        return Err(file_err(format!(
            "larger than {MAX_BUDGETS_FILE_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| file_err("not UTF-8 text".into()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_factor_with_x_is_a_limit_relative_to_the_reference() {
        let b: Budget = "layers.lock:write:hold:p99<=0.2x".parse().unwrap();
        assert_eq!(b.limit, Limit::Relative(0.2));
        let b: Budget = "layers.lock:hold:count >= 1x".parse().unwrap();
        assert_eq!(b.limit, Limit::Relative(1.0));
        for bad in [
            "layers.lock:hold:p99<=0x",
            "layers.lock:hold:p99<=-1x",
            "layers.lock:hold:p99<=x",
        ] {
            let err = bad.parse::<Budget>().unwrap_err().to_string();
            assert!(err.contains("positive factor"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_budgets_file_is_read_only_up_to_its_cap() {
        // A device that never ends: refused after the cap, not read until memory runs out.
        let err = load_budgets(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than 1048576 bytes"), "{err}");
        assert!(err.starts_with("/dev/zero: bad budgets file"), "{err}");
    }
}
