//! SVG plots: per-lock hold/wait CDFs per mode, reader latency over time, layers.lock timelines.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use locktrace_report::{Metric, Mode, human_duration};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::scenario::{BenchMode, ModeSamples};

/// One rendered plot; `svg` is inlined into report.html and also written to `plots/<file>`.
pub struct Plot {
    pub title: String,
    pub file: String,
    pub svg: String,
}

const SIZE: (u32, u32) = (860, 420);
/// Enough points for a smooth CDF without megabyte SVGs.
const MAX_POINTS: usize = 600;

fn mode_color(mode: BenchMode) -> RGBColor {
    match mode {
        BenchMode::Locked => RGBColor(214, 39, 40),
        BenchMode::Staged => RGBColor(31, 119, 180),
        BenchMode::Isolated => RGBColor(90, 90, 90),
    }
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// Renders every plot and writes them to `out/plots/`. A plot that fails to render is reported
/// on stderr and left out; the numbers in report.json do not depend on it.
pub fn render_all(samples: &[ModeSamples], out: &Path) -> Result<Vec<Plot>> {
    let dir = out.join("plots");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut plots = Vec::new();
    let mut keep = |r: Result<Option<Plot>>| match r {
        Ok(Some(p)) => plots.push(p),
        Ok(None) => {}
        Err(e) => eprintln!("lockbench: note: {}", crate::one_line(&e)),
    };
    let locks: BTreeSet<String> = samples
        .iter()
        .flat_map(|s| s.lock_samples.keys().map(|(lock, _, _)| lock.clone()))
        .collect();
    // The lock the demo is about first, then what readers feel, then the rest.
    let (layers, others): (Vec<&String>, Vec<&String>) =
        locks.iter().partition(|l| l.ends_with("layers.lock"));
    for lock in &layers {
        for metric in [Metric::Hold, Metric::Wait] {
            keep(cdf(lock, metric, samples));
        }
    }
    for s in samples {
        keep(timeline(s));
    }
    keep(reader_latency(samples));
    for lock in &others {
        for metric in [Metric::Hold, Metric::Wait] {
            keep(cdf(lock, metric, samples));
        }
    }
    for p in &plots {
        let path = dir.join(&p.file);
        fs::write(&path, &p.svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(plots)
}

fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(out)
}

fn file_stem(lock: &str) -> String {
    lock.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// CDF of one lock's hold or wait times, one line per bench mode and lock mode (R/W).
fn cdf(lock: &str, metric: Metric, samples: &[ModeSamples]) -> Result<Option<Plot>> {
    let mut series = Vec::new();
    for s in samples {
        for lmode in [Mode::Write, Mode::Read] {
            if let Some(v) = s.lock_samples.get(&(lock.to_string(), lmode, metric)) {
                let mut v: Vec<f64> = v.iter().map(|&ns| (ns.max(100)) as f64 / 1e3).collect();
                v.sort_by(f64::total_cmp);
                series.push((s.mode, lmode, v));
            }
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    let lo = series.iter().map(|(_, _, v)| v[0]).fold(f64::MAX, f64::min) / 1.5;
    let hi = series
        .iter()
        .map(|(_, _, v)| v[v.len() - 1])
        .fold(0.0, f64::max)
        * 1.5;
    let title = format!("{lock} {metric} time CDF (store clock)");
    let svg = svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(format!("{metric} time (log)"))
            .x_label_formatter(&|us| human_duration((*us * 1e3) as u64))
            .light_line_style(TRANSPARENT)
            .y_desc("fraction ≤ x")
            .draw()
            .map_err(plot_err)?;
        for (mode, lmode, v) in &series {
            let color = mode_color(*mode);
            let style = if *lmode == Mode::Write {
                color.stroke_width(2)
            } else {
                color.mix(0.5).stroke_width(1)
            };
            let n = v.len();
            let step = n.div_ceil(MAX_POINTS).max(1);
            let points: Vec<(f64, f64)> = (0..n)
                .step_by(step)
                .chain(std::iter::once(n - 1))
                .map(|i| (v[i], (i + 1) as f64 / n as f64))
                .collect();
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(plot_err)?
                .label(format!("{mode} {lmode} (n={n})"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })?;
    Ok(Some(Plot {
        file: format!("cdf-{}-{metric}.svg", file_stem(lock)),
        title,
        svg,
    }))
}

/// Every reader operation's latency against when it started, per bench mode.
fn reader_latency(samples: &[ModeSamples]) -> Result<Option<Plot>> {
    let points: Vec<(BenchMode, f64, f64)> = samples
        .iter()
        .flat_map(|s| {
            s.ops.iter().map(move |o| {
                (
                    s.mode,
                    o.start_ns.max(0) as f64 / 1e9,
                    o.duration_ns.max(1000) as f64 / 1e6,
                )
            })
        })
        .collect();
    if points.is_empty() {
        return Ok(None);
    }
    let t_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.1) * 1.02;
    let lo = points.iter().map(|p| p.2).fold(f64::MAX, f64::min) / 1.5;
    let hi = points.iter().map(|p| p.2).fold(0.0, f64::max) * 1.5;
    let title = "reader operation latency over time (reader clock)".to_string();
    let modes: BTreeSet<BenchMode> = points.iter().map(|p| p.0).collect();
    let svg = svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..t_max, (lo..hi).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("latency (log)")
            .y_label_formatter(&|ms| human_duration((*ms * 1e6) as u64))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(plot_err)?;
        for mode in modes {
            let color = mode_color(mode);
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.0 == mode)
                        .map(|p| Circle::new((p.1, p.2), 2, color.filled())),
                )
                .map_err(plot_err)?
                .label(mode.to_string())
                .legend(move |(x, y)| Circle::new((x + 8, y), 3, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })?;
    Ok(Some(Plot {
        title,
        file: "reader-latency.svg".to_string(),
        svg,
    }))
}

/// Who held (dark) or waited for (light) layers.lock when, one lane per worker process.
fn timeline(s: &ModeSamples) -> Result<Option<Plot>> {
    let spans: Vec<_> = s
        .spans
        .iter()
        .filter(|sp| sp.lock.ends_with("layers.lock"))
        .collect();
    if spans.is_empty() {
        return Ok(None);
    }
    let mut lanes: Vec<String> = spans.iter().map(|sp| sp.worker.clone()).collect();
    lanes.sort();
    lanes.dedup();
    let t_min = spans.iter().map(|sp| sp.start_ns).min().unwrap_or(0).min(0) as f64 / 1e9;
    let t_max = spans
        .iter()
        .map(|sp| sp.start_ns as f64 + sp.duration_ns as f64)
        .fold(0.0, f64::max)
        / 1e9
        * 1.02;
    let title = format!("{} — layers.lock by worker (store clock)", s.mode);
    let lane_names = lanes.clone();
    let svg = svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            // One spare lane on top keeps the legend off the bars.
            .build_cartesian_2d(
                t_min..t_max.max(t_min + 0.01),
                0f64..lanes.len() as f64 + 1.0,
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .light_line_style(TRANSPARENT)
            .y_labels(lanes.len() * 2 + 3)
            .y_label_formatter(&|y| {
                let lane = *y - 0.5;
                if lane >= 0.0 && lane.fract().abs() < 1e-6 {
                    lane_names.get(lane as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .disable_y_mesh()
            .draw()
            .map_err(plot_err)?;
        let color = mode_color(s.mode);
        for (metric, label) in [(Metric::Wait, "wait"), (Metric::Hold, "hold")] {
            let style = match metric {
                Metric::Wait => color.mix(0.25).filled(),
                Metric::Hold => color.filled(),
            };
            let (pad_lo, pad_hi) = match metric {
                Metric::Wait => (0.35, 0.65),
                Metric::Hold => (0.15, 0.85),
            };
            chart
                .draw_series(spans.iter().filter(|sp| sp.metric == metric).map(|sp| {
                    let lane = lanes.iter().position(|l| *l == sp.worker).unwrap_or(0) as f64;
                    let x0 = sp.start_ns as f64 / 1e9;
                    let x1 = x0 + sp.duration_ns as f64 / 1e9;
                    let y = if sp.write {
                        pad_lo
                    } else {
                        (pad_lo + pad_hi) / 2.0
                    };
                    Rectangle::new([(x0, lane + y), (x1, lane + pad_hi)], style)
                }))
                .map_err(plot_err)?
                .label(format!(
                    "layers.lock {label} (full bar = write, half = read)"
                ))
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 14, y + 4)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })?;
    Ok(Some(Plot {
        title,
        file: format!("timeline-{}.svg", s.mode),
        svg,
    }))
}
