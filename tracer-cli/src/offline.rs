//! Subcommands that work on saved reports, no tracing involved: gate, compare, merge, export, plot
//! and report. Arguments only: each is a call into `locktrace::reports` and `locktrace_report`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Subcommand, ValueEnum};
use locktrace::reports::{self, ExportFormat, labels, read_all};
use locktrace_report::gate::{self, Baseline, GateConfig};
use locktrace_report::{Metric, Report, compare, merge, plot, render_text};

#[derive(Subcommand)]
pub enum OfflineCommand {
    /// Check a report against latency budgets, a baseline report and/or its lock order. Exit code
    /// 0: pass, 1: a budget, regression or lock-order check failed, 2: the gate could not be
    /// evaluated.
    Gate {
        /// The report to check.
        report: PathBuf,
        /// Budget LOCK[:MODE]:METRIC:STAT OP VALUE, e.g. `layers.lock:hold:p99<=50ms` (repeatable).
        #[arg(long = "budget", value_name = "EXPR")]
        budgets: Vec<String>,
        /// TOML file with `[[budget]]` entries.
        #[arg(long = "budgets", value_name = "FILE")]
        budgets_file: Option<PathBuf>,
        /// Fail when a p50 or p99 got worse than in this report by more than --tolerance.
        #[arg(long, value_name = "BASE_REPORT")]
        baseline: Option<PathBuf>,
        /// Allowed slowdown against the baseline, in percent.
        #[arg(long, value_name = "PCT", default_value = "10", value_parser = parse_percent, requires = "baseline")]
        tolerance: f64,
        /// The report that relative budgets (`layers.lock:write:hold:p99<=0.2x`) take their limits
        /// from: the same lock name, mode, metric and statistic there, times the factor.
        #[arg(long, value_name = "REPORT")]
        relative_to: Option<PathBuf>,
        /// Statistics over fewer samples than this are inconclusive instead of passing.
        #[arg(long, value_name = "N", default_value_t = 1)]
        min_samples: u64,
        /// Fail when the report's lock order has a cycle (a potential deadlock).
        #[arg(long)]
        fail_on_inversion: bool,
        #[arg(long, value_enum, default_value_t = GateFormat::Text)]
        format: GateFormat,
    },
    /// Show the same locks of several reports side by side, with ratios to the first.
    Compare {
        #[arg(required = true, num_args = 2.., value_name = "REPORT")]
        reports: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = DataFormat::Text)]
        format: DataFormat,
    },
    /// Merge reports losslessly (histograms, counts and drops add up).
    Merge {
        #[arg(required = true, num_args = 2.., value_name = "REPORT")]
        reports: Vec<PathBuf>,
        /// Where to write the merged report.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Export a report for other tools: Bencher Metric Format JSON, HdrHistogram percentile text,
    /// or its stacks (`record --stacks`) as folded flame-graph lines or a pprof profile; or an
    /// event stream (`record --format ndjson`) as a Perfetto timeline (`--format perfetto`).
    Export {
        /// The report (the event stream for --format perfetto).
        #[arg(value_name = "REPORT|EVENTS")]
        report: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The stacks to export (folded and pprof only): folded defaults to hold; pprof without it
        /// holds both, hold the default sample type (`go tool pprof -sample_index=wait` for waits).
        #[arg(long, value_name = "METRIC", value_parser = metric_parser())]
        metric: Option<Metric>,
        /// Only locks matching this glob.
        #[arg(long, value_name = "PATTERN")]
        lock: Option<String>,
        /// Write here instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Plot wait and hold CDFs of one or more reports (format from the extension: .svg or .png).
    Plot {
        #[arg(required = true, value_name = "REPORT")]
        reports: Vec<PathBuf>,
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Print a saved report.
    Report {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = DataFormat::Text)]
        format: DataFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GateFormat {
    Text,
    Json,
    Junit,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DataFormat {
    Text,
    Json,
}

impl OfflineCommand {
    /// Runs the command and returns the process exit code.
    pub fn run(self) -> Result<i32> {
        match self {
            OfflineCommand::Gate {
                report,
                budgets,
                budgets_file,
                baseline,
                tolerance,
                relative_to,
                min_samples,
                fail_on_inversion,
                format,
            } => {
                let current = Report::read(&report)?;
                let mut parsed = budgets
                    .iter()
                    .map(|e| e.parse())
                    .collect::<Result<Vec<gate::Budget>, _>>()?;
                if let Some(file) = &budgets_file {
                    parsed.extend(gate::load_budgets(file)?);
                }
                let base = baseline.as_deref().map(Report::read).transpose()?;
                let reference = relative_to.as_deref().map(Report::read).transpose()?;
                let config = GateConfig {
                    budgets: parsed,
                    baseline: base.as_ref().map(|report| Baseline {
                        report,
                        tolerance_pct: tolerance,
                    }),
                    min_samples,
                    fail_on_inversion,
                    reference: reference.as_ref(),
                    ..GateConfig::default()
                };
                let result = gate::evaluate(&current, &config);
                emit(&match format {
                    GateFormat::Text => result.render_text(),
                    GateFormat::Json => result.to_json() + "\n",
                    GateFormat::Junit => result.to_junit(),
                })?;
                Ok(result.exit_code)
            }
            OfflineCommand::Compare { reports, format } => {
                let loaded = read_all(&reports)?;
                let labels = labels(&reports);
                let pairs: Vec<(&str, &Report)> =
                    labels.iter().map(String::as_str).zip(&loaded).collect();
                let table = compare::compare(&pairs)?;
                emit(&match format {
                    DataFormat::Text => table.render_text(),
                    DataFormat::Json => table.to_json() + "\n",
                })?;
                Ok(0)
            }
            OfflineCommand::Merge { reports, output } => {
                let merged = merge::merge(&read_all(&reports)?)?;
                merged.write(&output)?;
                eprintln!("merged {} reports into {}", reports.len(), output.display());
                Ok(0)
            }
            OfflineCommand::Export {
                report,
                format,
                metric,
                lock,
                output,
            } => {
                // Checked first, so a mistake costs no report read.
                if output.is_none() && format.is_binary() && std::io::stdout().is_terminal() {
                    anyhow::bail!(
                        "{} is binary; use -o FILE",
                        format
                            .to_possible_value()
                            .map_or("this format".into(), |v| v.get_name().to_string())
                    );
                }
                let export = reports::export(&report, format, lock.as_deref(), metric)?;
                for note in &export.notes {
                    eprintln!("{note}");
                }
                match &output {
                    Some(path) => locktrace_report::write_atomic(path, &export.bytes)
                        .with_context(|| format!("cannot write {}", path.display()))?,
                    None => emit_bytes(&export.bytes)?,
                }
                Ok(0)
            }
            OfflineCommand::Plot { reports, output } => {
                let loaded = read_all(&reports)?;
                let labels = labels(&reports);
                let pairs: Vec<(&str, &Report)> =
                    labels.iter().map(String::as_str).zip(&loaded).collect();
                plot::plot_cdf(&pairs, &output)?;
                eprintln!("wrote {}", output.display());
                Ok(0)
            }
            OfflineCommand::Report { file, format } => {
                let loaded = Report::read(&file)?;
                emit(&match format {
                    DataFormat::Text => render_text(&loaded),
                    DataFormat::Json => loaded.to_json() + "\n",
                })?;
                Ok(0)
            }
        }
    }
}

fn emit(text: &str) -> Result<()> {
    emit_bytes(text.as_bytes())
}

/// Writes to standard output; a reader that went away (`| head`) is not an error.
fn emit_bytes(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// `wait` or `hold`, listed in `--help`.
fn metric_parser() -> impl TypedValueParser<Value = Metric> {
    PossibleValuesParser::new(["wait", "hold"]).try_map(|s| s.parse::<Metric>())
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let number = s.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(pct) if pct.is_finite() && pct >= 0.0 => Ok(pct),
        _ => Err(format!("{s:?} is not a percentage (e.g. 10 or 10%)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_accepts_optional_sign() {
        assert_eq!(parse_percent("10").unwrap(), 10.0);
        assert_eq!(parse_percent("2.5%").unwrap(), 2.5);
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("ten").is_err());
    }
}
