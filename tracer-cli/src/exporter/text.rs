//! The Prometheus text exposition format (version 0.0.4): classic histograms.

use std::fmt::Write;

use super::{
    BUCKETS_NS,
    metrics::{Family, Kind, Value},
    seconds,
};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for s in &f.samples {
            let labels = |extra: Option<(&str, &str)>| label_set(&s.labels, extra);
            match &s.value {
                Value::Counter(n) => {
                    let _ = writeln!(out, "{}{} {n}", f.name, labels(None));
                }
                Value::Gauge(v) => {
                    let _ = writeln!(out, "{}{} {}", f.name, labels(None), float(*v));
                }
                Value::Seconds(ns) => {
                    let _ = writeln!(out, "{}{} {}", f.name, labels(None), seconds(*ns));
                }
                Value::Histogram(h) => {
                    for le in BUCKETS_NS {
                        let le_label = seconds(le);
                        let _ = writeln!(
                            out,
                            "{}_bucket{} {}",
                            f.name,
                            labels(Some(("le", &le_label))),
                            h.count_le(le)
                        );
                    }
                    let inf = labels(Some(("le", "+Inf")));
                    let _ = writeln!(out, "{}_bucket{inf} {}", f.name, h.count);
                    let _ = writeln!(out, "{}_sum{} {}", f.name, labels(None), seconds(h.sum_ns));
                    let _ = writeln!(out, "{}_count{} {}", f.name, labels(None), h.count);
                }
            }
        }
    }
    out
}

fn label_set(labels: &[(&'static str, String)], extra: Option<(&str, &str)>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra)
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    match pairs.is_empty() {
        true => String::new(),
        false => format!("{{{}}}", pairs.join(",")),
    }
}

/// Label values escape backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::exporter::{Series, Snapshot, TracerStats, families};
    use locktrace_report::{Actor, LockKey, Metric, Mode, Recorder, Report, ReportMeta, Source};
    use std::time::{Duration, Instant};

    pub(crate) fn report(path: &str, holds: &[u64]) -> Report {
        let key = LockKey {
            name: path.rsplit('/').next().unwrap().to_string(),
            path: Some(path.to_string()),
            dev: Some(1),
            ino: Some(2),
        };
        let actor = Actor {
            pid: 1,
            comm: "t".into(),
        };
        let mut rec = Recorder::new();
        for &ns in holds {
            rec.record(&key, Mode::Write, Metric::Hold, ns, &actor);
            rec.record(&key, Mode::Write, Metric::Wait, ns / 10, &actor);
        }
        let mut meta = ReportMeta::new("test", Source::Kernel);
        meta.attach = Some("fentry".into());
        rec.snapshot(meta)
    }

    /// The metric families of `report` as one fresh scrape sees them.
    pub(crate) fn families_of(report: Report) -> Vec<crate::exporter::Family> {
        let now = Instant::now();
        let mut series = Series::new(Duration::from_secs(60), 10);
        series.update(&report, now);
        let snap = Snapshot {
            report,
            tracer: TracerStats::default(),
            at: now,
        };
        families(&snap, &series, &mut 0)
    }

    pub(crate) fn exposition(report: Report) -> String {
        render(&families_of(report))
    }

    fn value(text: &str, series: &str) -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"));
        line[series.len() + 1..].to_string()
    }

    #[test]
    fn buckets_are_cumulative_and_end_at_the_exact_count_and_sum() {
        let holds = [
            500,
            1_000,
            1_001,
            3_000,
            7_000_000,
            7_000_000,
            59_000_000_000,
        ];
        let text = exposition(report("/s/layers.lock", &holds));
        let l = r#"lock="/s/layers.lock",name="layers.lock",mode="write""#;
        let bucket = |le: &str| -> u64 {
            value(
                &text,
                &format!("locktrace_lock_hold_seconds_bucket{{{l},le=\"{le}\"}}"),
            )
            .parse()
            .unwrap()
        };
        assert_eq!(bucket("0.000001"), 2, "500 ns and 1 µs are ≤ 1 µs");
        assert_eq!(bucket("0.000002"), 3);
        assert_eq!(bucket("0.000005"), 4);
        assert_eq!(bucket("0.005"), 4);
        assert_eq!(bucket("0.01"), 6);
        assert_eq!(bucket("50"), 6);
        assert_eq!(bucket("60"), 7);
        assert_eq!(bucket("+Inf"), 7);
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("locktrace_lock_hold_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), BUCKETS_NS.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        let sum: u64 = holds.iter().sum();
        assert_eq!(
            value(&text, &format!("locktrace_lock_hold_seconds_sum{{{l}}}")),
            seconds(sum)
        );
        assert_eq!(
            value(&text, &format!("locktrace_lock_hold_seconds_sum{{{l}}}")),
            "59.014005501"
        );
        assert_eq!(
            value(&text, &format!("locktrace_lock_hold_seconds_count{{{l}}}")),
            "7"
        );
        assert_eq!(
            value(&text, &format!("locktrace_lock_hold_seconds_max{{{l}}}")),
            "59"
        );
        assert_eq!(
            value(&text, &format!("locktrace_lock_wait_seconds_max{{{l}}}")),
            "5.9"
        );
        assert!(text.contains("# TYPE locktrace_lock_hold_seconds histogram\n"));
        assert!(text.contains("locktrace_build_info{version=\""));
        assert!(text.contains("attach=\"fentry\""));
        assert_eq!(
            value(&text, "locktrace_drops_total{kind=\"map_full\"}"),
            "0"
        );
    }

    #[test]
    fn paths_with_quotes_backslashes_and_newlines_are_escaped() {
        let text = exposition(report("/s/we\"ird\\dir\nx/layers.lock", &[1_000]));
        assert!(
            text.contains(r#"lock="/s/we\"ird\\dir\nx/layers.lock",name="layers.lock""#),
            "{text}"
        );
        // Every sample stays on its own line.
        assert!(
            text.lines()
                .all(|l| l.starts_with('#') || l.starts_with("locktrace_"))
        );
    }

    #[test]
    fn an_empty_report_still_exposes_the_tracers_own_families() {
        let text = exposition(report("/x.lock", &[]));
        assert!(text.contains("locktrace_events_total 0\n"), "{text}");
        assert!(text.contains("locktrace_series_overflow_total 0\n"));
        assert!(!text.contains("locktrace_lock_hold_seconds_bucket"));
    }
}
