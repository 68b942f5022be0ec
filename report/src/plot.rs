//! CDF plots of wait and hold times, one panel per lock (by name, same-named lock files merged),
//! mode and metric, one line per report.
//! The x axis is logarithmic because lock times span nanoseconds to seconds.

use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ColorType, ImageEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::compare::Lineup;
use crate::duration::human_duration;
use crate::error::ReportError;
use crate::model::Report;
use crate::output::write_atomic;

const PANEL: (u32, u32) = (640, 360);
const COLUMNS: usize = 2;

struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: String,
    series: Vec<Series>,
}

/// Writes CDF plots of every lock mode and metric in `reports` (label, report) to `out`; the format
/// follows the extension: `.svg` or `.png`. Text is laid out with a system font in both cases.
pub fn plot_cdf(reports: &[(&str, &Report)], out: &Path) -> Result<(), ReportError> {
    let err = |reason: String| ReportError::Plot {
        path: out.to_path_buf(),
        reason,
    };
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let svg = match ext.as_deref() {
        Some("svg") => true,
        Some("png") => false,
        _ => {
            return Err(err(
                "unknown image format; use a .svg or .png file name".into()
            ));
        }
    };
    let panels = panels(reports)?;
    if panels.is_empty() {
        return Err(err("no lock activity to plot".into()));
    }
    let rows = panels.len().div_ceil(COLUMNS);
    let size = (
        PANEL.0 * COLUMNS.min(panels.len()) as u32,
        PANEL.1 * rows as u32,
    );
    // Draw in memory and write the image whole, like every other output: a failure never leaves
    // half an image, and `-o` may name a pipe or device.
    let image = if svg {
        render_svg(&panels, rows, size)
    } else {
        render_png(&panels, rows, size)
    }
    .map_err(|e| {
        // plotters lays text out with a system font for both formats (its `ttf` feature).
        let hint = if e.to_lowercase().contains("font") {
            " (plots need a sans-serif font that fontconfig finds, e.g. Debian's fonts-dejavu-core)"
        } else {
            ""
        };
        err(format!("{e}{hint}"))
    })?;
    write_atomic(out, &image).map_err(|e| err(e.to_string()))
}

fn render_svg(panels: &[Panel], rows: usize, size: (u32, u32)) -> Result<Vec<u8>, String> {
    let mut text = String::new();
    draw(
        SVGBackend::with_string(&mut text, size).into_drawing_area(),
        panels,
        rows,
    )?;
    Ok(text.into_bytes())
}

fn render_png(panels: &[Panel], rows: usize, size: (u32, u32)) -> Result<Vec<u8>, String> {
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    draw(
        BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area(),
        panels,
        rows,
    )?;
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&rgb, size.0, size.1, ColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(png)
}

fn panels(reports: &[(&str, &Report)]) -> Result<Vec<Panel>, ReportError> {
    let lineup = Lineup::new(reports)?;
    lineup
        .keys
        .iter()
        .map(|&(name, mode, metric)| {
            let mut series = Vec::new();
            for ((label, _), locks) in reports.iter().zip(&lineup.reports) {
                let Some(named) = locks.get(name) else {
                    continue;
                };
                let Some(m) = named.lock.modes.get(&mode) else {
                    continue;
                };
                let summary = &m.metric(metric).summary;
                if summary.count == 0 {
                    continue;
                }
                let hist = named.lock.histogram(mode, metric)?;
                // A step function: vertical at each recorded value, so even one sample shows.
                let mut cumulative = 0u64;
                let mut points = Vec::new();
                for v in hist.iter_recorded() {
                    // Bucket tops can exceed the exact max; log axes cannot show zero.
                    let x = v.value_iterated_to().min(summary.max).max(1) as f64;
                    points.push((x, cumulative as f64 / hist.len() as f64));
                    cumulative += v.count_since_last_iteration();
                    points.push((x, cumulative as f64 / hist.len() as f64));
                }
                // Say when a line is several same-named lock files merged.
                let files = if named.files > 1 {
                    format!(", {} files", named.files)
                } else {
                    String::new()
                };
                series.push(Series {
                    label: format!("{label} (n={}{files})", summary.count),
                    points,
                });
            }
            Ok(Panel {
                title: format!("{name} {mode} {metric}"),
                series,
            })
        })
        .collect()
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
    rows: usize,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((rows, COLUMNS.min(panels.len())));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let xs = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let lo = xs.clone().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = xs.fold(0.0, f64::max);
    // A single distinct value would make an empty range; widen it around the value.
    let (lo, hi) = if hi <= lo {
        (lo / 2.0, lo * 2.0)
    } else {
        (lo / 1.2, hi * 1.2)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("time (log scale)")
        .y_desc("fraction ≤ x")
        .x_label_formatter(&|v| human_duration(v.round() as u64))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
