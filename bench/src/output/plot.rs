//! SVG plots: per-lock hold/wait CDFs per mode, reader latency over time, layers.lock timelines.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use locktrace_report::write_atomic;
use locktrace_report::{Metric, Report, human_duration, plot_cdf};
use plotters::coord::Shift;
use plotters::prelude::*;
use store_core::layout::{CONTAINERS_LOCK, IMAGES_LOCK, LAYERS_LOCK, STORAGE_LOCK};

use crate::error::{Context, Error, Result};
use crate::model::{BenchMode, BenchReport, ModeSamples};
use crate::text::one_line;

/// One rendered plot, already written to `plots/<file>`; `svg` is inlined into report.html.
pub struct Plot {
    pub title: String,
    pub file: String,
    pub svg: String,
}

const SIZE: (u32, u32) = (860, 420);
/// The store's own lock files, by name.
const STORE_LOCKS: [&str; 4] = [STORAGE_LOCK, LAYERS_LOCK, IMAGES_LOCK, CONTAINERS_LOCK];

fn mode_color(mode: BenchMode) -> RGBColor {
    match mode {
        BenchMode::Locked => RGBColor(214, 39, 40),
        BenchMode::Staged => RGBColor(31, 119, 180),
        BenchMode::Isolated => RGBColor(90, 90, 90),
    }
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Plot(e.to_string())
}

/// Renders every plot and writes each once to `out/plots/`. A plot that fails to render or write
/// is reported on stderr and left out; the numbers in report.json do not depend on it.
pub fn render_all(report: &BenchReport, samples: &[ModeSamples], out: &Path) -> Result<Vec<Plot>> {
    let dir = out.join("plots");
    // Plots of an earlier run with other locks or modes would otherwise linger next to these.
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut plots = Vec::new();
    let mut keep = |r: Result<Option<Plot>>| match r {
        Ok(Some(p)) => plots.push(p),
        Ok(None) => {}
        Err(e) => eprintln!("lockbench: note: {}", one_line(&e)),
    };
    keep(cdfs(report, false, &dir));
    for s in samples {
        keep(timeline(s).and_then(|p| save(p, &dir)));
    }
    keep(reader_latency(samples).and_then(|p| save(p, &dir)));
    keep(cdfs(report, true, &dir));
    Ok(plots)
}

/// Writes a plot drawn in memory to `dir`. Not for the CDFs: `plot_cdf` has written those.
fn save(plot: Option<Plot>, dir: &Path) -> Result<Option<Plot>> {
    if let Some(p) = &plot {
        let path = dir.join(&p.file);
        write_atomic(&path, p.svg.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(plot)
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

/// Per-lock wait and hold CDFs, one line per bench mode, drawn from the modes' reports.
fn cdfs(report: &BenchReport, kernel: bool, dir: &Path) -> Result<Option<Plot>> {
    let reports: Vec<(String, Report)> = report
        .modes
        .iter()
        .filter_map(|m| {
            let r = if kernel {
                store_locks_only(m.kernel_report.clone()?)
            } else {
                m.store_report.clone()
            };
            Some((m.mode.to_string(), r))
        })
        .collect();
    let (file, title) = if kernel {
        (
            "cdf-kernel.svg",
            "lock wait and hold CDFs per mode (kernel, locktrace)",
        )
    } else {
        (
            "cdf-store.svg",
            "lock wait and hold CDFs per mode (store clock)",
        )
    };
    cdf_plot(reports, file, title, dir)
}

/// A kernel report without the locks only the tracer sees (every staging lock, other programs'):
/// only the store's four locks compare across stores and clients.
pub fn store_locks_only(mut report: Report) -> Report {
    report
        .locks
        .retain(|l| STORE_LOCKS.iter().any(|n| is_lock(&l.key.name, n)));
    report
}

/// Wait and hold CDFs per lock, one line per labelled report, drawn by locktrace-report's
/// `plot_cdf` from lossless histograms into `dir/file` (it only draws into a file, atomically),
/// and read back for the HTML page.
pub fn cdf_plot(
    reports: Vec<(String, Report)>,
    file: &str,
    title: &str,
    dir: &Path,
) -> Result<Option<Plot>> {
    let reports: Vec<(String, Report)> = reports
        .into_iter()
        .filter(|(_, r)| !r.locks.is_empty())
        .collect();
    if reports.is_empty() {
        return Ok(None);
    }
    let refs: Vec<(&str, &Report)> = reports.iter().map(|(l, r)| (l.as_str(), r)).collect();
    let path = dir.join(file);
    plot_cdf(&refs, &path).map_err(plot_err)?;
    let svg = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(Plot {
        title: title.to_string(),
        file: file.to_string(),
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
        legend(&mut chart)
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
        .filter(|sp| is_lock(&sp.lock, LAYERS_LOCK))
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
        legend(&mut chart)
    })?;
    Ok(Some(Plot {
        title,
        file: format!("timeline-{}.svg", s.mode),
        svg,
    }))
}

/// `name` is the lock file `file` (a basename, or a path ending in `/file`), not `xfile`.
/// The series labels, top right, over a translucent white box.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

fn is_lock(name: &str, file: &str) -> bool {
    name == file
        || name
            .strip_suffix(file)
            .is_some_and(|rest| rest.ends_with('/'))
}
