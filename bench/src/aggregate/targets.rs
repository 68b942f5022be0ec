//! The targets, checked against a run's per-mode figures (printed, not enforced).

use locktrace_report::{Metric, Mode, human_duration};

use crate::model::{BenchMode, ModeResult, Source, Target};

pub fn targets(modes: &[ModeResult]) -> Vec<Target> {
    let get = |m: BenchMode| modes.iter().find(|r| r.mode == m);
    let mut out = Vec::new();
    let ratio = |a: u64, b: u64| a as f64 / (b as f64).max(1.0);
    if let (Some(locked), Some(staged)) = (get(BenchMode::Locked), get(BenchMode::Staged)) {
        if let (Some(l), Some(s)) = (
            locked.layers_lock(Source::Store, Mode::Write, Metric::Hold),
            staged.layers_lock(Source::Store, Mode::Write, Metric::Hold),
        ) {
            let (l, s) = (l.p99, s.p99);
            let r = ratio(s, l);
            out.push(Target {
                name: "layers.lock hold".into(),
                goal: "staged p99 write hold <= 1% of locked".into(),
                measured: format!(
                    "{:.3}% ({} vs {})",
                    r * 100.0,
                    human_duration(s),
                    human_duration(l)
                ),
                met: r <= 0.01,
            });
        }
        let (l, s) = (locked.reader.all.p99_ns, staged.reader.all.p99_ns);
        if l > 0 && s > 0 {
            let r = ratio(s, l);
            out.push(Target {
                name: "reader latency".into(),
                goal: "staged reader p99 <= 5% of locked".into(),
                measured: format!(
                    "{:.2}% ({} vs {})",
                    r * 100.0,
                    human_duration(s),
                    human_duration(l)
                ),
                met: r <= 0.05,
            });
        }
        let (l, s) = (locked.makespan_median_ns, staged.makespan_median_ns);
        if l > 0 && s > 0 {
            out.push(Target {
                name: "locked visibly worse".into(),
                goal: "locked makespan >= 1.2x staged, or locked reader p99 >= 10x staged".into(),
                measured: format!(
                    "makespan {:.2}x, reader p99 {:.1}x",
                    ratio(l, s),
                    ratio(locked.reader.all.p99_ns, staged.reader.all.p99_ns)
                ),
                met: ratio(l, s) >= 1.2
                    || ratio(locked.reader.all.p99_ns, staged.reader.all.p99_ns) >= 10.0,
            });
        }
    }
    if let (Some(staged), Some(iso)) = (get(BenchMode::Staged), get(BenchMode::Isolated)) {
        let (s, i) = (staged.makespan_median_ns, iso.makespan_median_ns);
        if s > 0 && i > 0 {
            let r = ratio(s, i);
            out.push(Target {
                name: "staged vs isolated".into(),
                goal: "staged makespan within 15% of isolated".into(),
                measured: format!(
                    "{:+.1}% ({} vs {})",
                    (r - 1.0) * 100.0,
                    human_duration(s),
                    human_duration(i)
                ),
                met: r <= 1.15,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use locktrace_report::{Actor, LockKey, Recorder, ReportMeta};

    use super::*;
    use crate::model::{Latency, ReaderFigures};

    fn mode(mode: BenchMode, hold_ns: u64, reader_p99_ns: u64, makespan_ns: u64) -> ModeResult {
        let mut rec = Recorder::new();
        let actor = Actor {
            pid: 1,
            comm: "pull-0".into(),
        };
        let key = LockKey::named("overlay-layers/layers.lock");
        for _ in 0..10 {
            rec.record(&key, Mode::Write, Metric::Hold, hold_ns, &actor);
        }
        ModeResult {
            mode,
            extract_mode: mode.extract_mode(),
            makespan_ns: vec![makespan_ns],
            makespan_median_ns: makespan_ns,
            pulls: Vec::new(),
            pull_time: Latency::default(),
            throughput_mb_s: 0.0,
            reader: ReaderFigures {
                all: Latency {
                    count: 100,
                    p50_ns: reader_p99_ns / 2,
                    p99_ns: reader_p99_ns,
                    max_ns: reader_p99_ns,
                },
                errors: 0,
                per_op: BTreeMap::new(),
            },
            phases: BTreeMap::new(),
            store_report: rec.finish(ReportMeta::new(
                "lockbench",
                locktrace_report::Source::Store,
            )),
            kernel_report: None,
            kernel_note: None,
            failures: Vec::new(),
        }
    }

    fn met(targets: &[Target], name: &str) -> bool {
        targets.iter().find(|t| t.name == name).unwrap().met
    }

    #[test]
    fn targets_are_met_and_missed_by_the_numbers() {
        let good = targets(&[
            mode(BenchMode::Locked, 500_000_000, 1_000_000_000, 4_000_000_000),
            mode(BenchMode::Staged, 1_000_000, 10_000_000, 2_000_000_000),
            mode(BenchMode::Isolated, 400_000_000, 5_000_000, 1_900_000_000),
        ]);
        assert_eq!(good.len(), 4);
        assert!(good.iter().all(|t| t.met), "{good:?}");

        let bad = targets(&[
            mode(BenchMode::Locked, 500_000_000, 20_000_000, 2_000_000_000),
            mode(BenchMode::Staged, 10_000_000, 10_000_000, 2_000_000_000),
            mode(BenchMode::Isolated, 400_000_000, 5_000_000, 1_500_000_000),
        ]);
        for name in [
            "layers.lock hold",
            "reader latency",
            "locked visibly worse",
            "staged vs isolated",
        ] {
            assert!(!met(&bad, name), "{name} should be missed: {bad:?}");
        }
    }
}
