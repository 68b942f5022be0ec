//! `lockbench overhead`: what a tracer adds to each lock call. The same uncontended loop
//! (`lockload cycles`: open, F_SETLKW write lock, close, on a file named layers.lock) runs untraced
//! and under each tracer, in rounds that interleave the variants (each round in a rotated order,
//! so machine-load drift does not favour one); the table gives ns per cycle, the cost added to the
//! untraced loop, and that cost as a multiple of the minimal bpftrace script's.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Context, Error, Result};
use crate::model::kernel_release;
use crate::output;
use crate::prepare;
use crate::supervise::overhead::{self as tracers, LOCK_FILE, LoopRun, Tools, Variant};
use crate::text::one_line;

/// Version of overhead.json's layout.
pub const OVERHEAD_SCHEMA: u32 = 1;

pub struct OverheadConfig {
    pub cycles: u64,
    pub rounds: usize,
    pub variants: Vec<Variant>,
    /// The variants were named on the command line: one that cannot run here is an error, not a
    /// row saying why.
    pub explicit: bool,
    pub contrib: Option<PathBuf>,
    pub out: PathBuf,
    pub command: Vec<String>,
}

/// overhead.json.
#[derive(Debug, Serialize)]
pub struct OverheadReport {
    pub schema: u32,
    pub command: Vec<String>,
    pub kernel: Option<String>,
    pub cycles: u64,
    /// Untimed cycles before the timed ones, in every loop.
    pub warmup: Option<u64>,
    pub rounds: usize,
    pub lock_file: PathBuf,
    pub failed: bool,
    pub variants: Vec<VariantResult>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Its tool is missing or it needs root: not run.
    Unavailable,
    /// It ran and failed (tracer did not attach, or did not count the loop).
    Failed,
}

#[derive(Debug, Serialize)]
pub struct VariantResult {
    pub variant: Variant,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each round's loop, in round order.
    pub rounds_ns_per_cycle: Vec<f64>,
    /// Lock calls the tracer counted, per round.
    pub events: Vec<u64>,
    /// What a tracer that traced the loop counts: cycles + warm-up (at least that for the
    /// system-wide bpftrace scripts, which also see other processes' locks).
    pub expected_events: Option<u64>,
    pub ns_per_cycle: Option<Spread>,
    /// Over the untraced loop of the same round.
    pub added_ns: Option<Spread>,
    /// Median added cost / bpftrace-min's.
    pub ratio_to_bpftrace: Option<f64>,
    /// How locktrace attached (`fentry`, `tracepoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
}

/// Median and range over rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Spread> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// What one variant did over the rounds.
struct Runs {
    loops: Vec<LoopRun>,
    unavailable: Option<String>,
    error: Option<String>,
}

/// Runs the rounds, prints the table, writes overhead.json into the output directory; false when
/// a variant failed. A variant named on the command line that cannot run here is an error before
/// anything runs.
pub fn run(cfg: &OverheadConfig) -> Result<bool> {
    if cfg.cycles == 0 || cfg.rounds == 0 {
        return Err(Error::Invalid(
            "--cycles and --rounds must be at least 1".into(),
        ));
    }
    if let Some(v) = cfg
        .variants
        .iter()
        .enumerate()
        .find_map(|(i, v)| cfg.variants[..i].contains(v).then_some(v))
    {
        return Err(Error::Invalid(format!(
            "--variants names {} twice",
            v.name()
        )));
    }
    let tools = Tools::detect(cfg.contrib.as_deref())?;
    let mut runs: HashMap<Variant, Runs> = HashMap::new();
    for &v in &cfg.variants {
        let unavailable = tools.unavailable(v);
        if let (true, Some(why)) = (cfg.explicit, &unavailable) {
            return Err(Error::Invalid(format!(
                "variant {} cannot run: {why}",
                v.name()
            )));
        }
        runs.insert(
            v,
            Runs {
                loops: Vec::new(),
                unavailable,
                error: None,
            },
        );
    }
    let out = prepare::out_dir(&cfg.out)?;
    let work = out.join("overhead");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // locktrace --path wants the file to exist before it starts.
    let lock = work.join(LOCK_FILE);
    fs::write(&lock, b"").with_context(|| format!("creating {}", lock.display()))?;

    let runnable: Vec<Variant> = cfg
        .variants
        .iter()
        .copied()
        .filter(|v| runs[v].unavailable.is_none())
        .collect();
    for round in 0..cfg.rounds {
        for i in 0..runnable.len() {
            let v = runnable[(i + round) % runnable.len()];
            let r = runs.get_mut(&v).expect("every variant has an entry");
            if r.error.is_some() {
                continue;
            }
            eprintln!(
                "round {}/{}: {} ({} cycles)",
                round + 1,
                cfg.rounds,
                v.name(),
                cfg.cycles
            );
            match tracers::run(v, &tools, &work, cfg.cycles) {
                Ok(lp) => r.loops.push(lp),
                Err(e) => r.error = Some(one_line(&e)),
            }
        }
    }

    let report = summarize(cfg, &lock, &runs);
    let path = out.join("overhead.json");
    output::write_json(&report, &path, "overhead.json")?;
    println!("{}", table(&report));
    for v in &report.variants {
        if let (Status::Failed, Some(why)) = (&v.status, &v.reason) {
            eprintln!("lockbench: failed: {}: {why}", v.variant.name());
        }
    }
    println!("report: {}", path.display());
    Ok(!report.failed)
}

fn summarize(cfg: &OverheadConfig, lock: &Path, runs: &HashMap<Variant, Runs>) -> OverheadReport {
    let ns = |v: Variant| -> Vec<f64> {
        runs.get(&v)
            .filter(|r| r.error.is_none())
            .map(|r| r.loops.iter().map(|l| l.ns_per_cycle).collect())
            .unwrap_or_default()
    };
    let untraced = ns(Variant::Untraced);
    // Paired by round: the untraced loop of the same round is the baseline.
    let added = |v: Variant| -> Option<Spread> {
        let own = ns(v);
        let diffs: Vec<f64> = own.iter().zip(&untraced).map(|(t, u)| t - u).collect();
        (v != Variant::Untraced)
            .then(|| Spread::of(&diffs))
            .flatten()
    };
    let bpftrace = added(Variant::BpftraceMin).filter(|s| s.median > 0.0);
    let variants = cfg
        .variants
        .iter()
        .map(|&v| {
            let r = &runs[&v];
            let (status, reason) = match (&r.unavailable, &r.error) {
                (Some(why), _) => (Status::Unavailable, Some(why.clone())),
                (None, Some(why)) => (Status::Failed, Some(why.clone())),
                (None, None) => (Status::Ok, None),
            };
            let added = added(v);
            VariantResult {
                variant: v,
                status,
                reason,
                rounds_ns_per_cycle: r.loops.iter().map(|l| l.ns_per_cycle).collect(),
                events: r.loops.iter().filter_map(|l| l.events).collect(),
                expected_events: (v != Variant::Untraced)
                    .then(|| r.loops.first().map(LoopRun::lock_calls))
                    .flatten(),
                ns_per_cycle: Spread::of(&ns(v)),
                added_ns: added,
                ratio_to_bpftrace: added.zip(bpftrace).map(|(a, b)| a.median / b.median),
                attach: r.loops.iter().find_map(|l| l.attach.clone()),
            }
        })
        .collect::<Vec<_>>();
    OverheadReport {
        schema: OVERHEAD_SCHEMA,
        command: cfg.command.clone(),
        kernel: kernel_release(),
        cycles: cfg.cycles,
        warmup: runs
            .values()
            .find_map(|r| r.loops.first())
            .map(|l| l.warmup),
        rounds: cfg.rounds,
        lock_file: lock.to_path_buf(),
        failed: variants.iter().any(|v| matches!(v.status, Status::Failed)),
        variants,
    }
}

/// The terminal table: one row per variant.
pub fn table(report: &OverheadReport) -> String {
    let mut text = format!(
        "tracer overhead: {} × (open + F_SETLKW + close) on {LOCK_FILE}, {} round(s); \
         median (min–max) over rounds\n",
        report.cycles, report.rounds
    );
    text.push_str(&format!(
        "{:<20} {:>22} {:>22} {:>15} {:>18}\n",
        "variant", "ns/cycle", "added ns", "× bpftrace-min", "lock calls seen"
    ));
    for v in &report.variants {
        let name = v.variant.name();
        let (Status::Ok, Some(ns)) = (&v.status, v.ns_per_cycle) else {
            let status = match v.status {
                Status::Unavailable => "unavailable",
                _ => "FAILED",
            };
            let why = v.reason.as_deref().unwrap_or("no figures");
            text.push_str(&format!("{name:<20} {status}: {why}\n"));
            continue;
        };
        let spread =
            |s: Spread, sign: &str| format!("{sign}{:.0} ({:.0}–{:.0})", s.median, s.min, s.max);
        let added = v.added_ns.map_or("–".into(), |s| spread(s, "+"));
        let ratio = v
            .ratio_to_bpftrace
            .map_or("–".into(), |r| format!("{r:.2}"));
        let seen = match (v.events.iter().min(), v.expected_events) {
            (Some(min), Some(want)) if v.variant.counts_only_the_loop() => {
                format!("{min} (= {want})")
            }
            (Some(min), Some(want)) => format!("{min} (≥ {want})"),
            _ => "–".into(),
        };
        text.push_str(&format!(
            "{name:<20} {:>22} {added:>22} {ratio:>15} {seen:>18}\n",
            spread(ns, "")
        ));
    }
    for v in report.variants.iter().filter(|v| v.attach.is_some()) {
        let attach = v.attach.as_deref().unwrap_or_default();
        text.push_str(&format!("{} attached with {attach}\n", v.variant.name()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(ns: f64, events: Option<u64>) -> LoopRun {
        LoopRun {
            cycles: 1000,
            warmup: 10,
            ns_per_cycle: ns,
            events,
            attach: None,
        }
    }

    fn runs(loops: Vec<LoopRun>) -> Runs {
        Runs {
            loops,
            unavailable: None,
            error: None,
        }
    }

    #[test]
    fn added_cost_is_per_round_over_untraced_and_ratios_are_to_bpftrace() {
        let cfg = OverheadConfig {
            cycles: 1000,
            rounds: 3,
            variants: vec![
                Variant::Untraced,
                Variant::BpftraceMin,
                Variant::Locktrace,
                Variant::Lockstats,
            ],
            explicit: false,
            contrib: None,
            out: PathBuf::from("out"),
            command: vec!["lockbench".into(), "overhead".into()],
        };
        let mut all = HashMap::new();
        all.insert(
            Variant::Untraced,
            runs(vec![lp(1000.0, None), lp(1100.0, None), lp(900.0, None)]),
        );
        let seen = Some(1010);
        all.insert(
            Variant::BpftraceMin,
            runs(vec![lp(1600.0, seen), lp(1800.0, seen), lp(1600.0, seen)]),
        );
        all.insert(
            Variant::Locktrace,
            runs(vec![lp(2200.0, seen), lp(2300.0, seen), lp(2000.0, seen)]),
        );
        all.insert(
            Variant::Lockstats,
            Runs {
                loops: Vec::new(),
                unavailable: Some("bpftrace is not on PATH".into()),
                error: None,
            },
        );
        let report = summarize(&cfg, Path::new("out/overhead/layers.lock"), &all);
        let get = |v: Variant| report.variants.iter().find(|r| r.variant == v).unwrap();

        let untraced = get(Variant::Untraced);
        let ns = untraced.ns_per_cycle.unwrap();
        assert_eq!((ns.median, ns.min, ns.max), (1000.0, 900.0, 1100.0));
        assert!(untraced.added_ns.is_none() && untraced.expected_events.is_none());

        // Per round: bpftrace +600, +700, +700; locktrace +1200, +1200, +1100.
        let bpf = get(Variant::BpftraceMin).added_ns.unwrap();
        assert_eq!((bpf.median, bpf.min, bpf.max), (700.0, 600.0, 700.0));
        let lt = get(Variant::Locktrace);
        assert_eq!(lt.added_ns.unwrap().median, 1200.0);
        assert_eq!(lt.ratio_to_bpftrace, Some(1200.0 / 700.0));
        assert_eq!(lt.expected_events, Some(1010));
        assert_eq!(lt.events, vec![1010; 3]);
        assert!(matches!(
            get(Variant::Lockstats).status,
            Status::Unavailable
        ));
        // Unavailable (not requested by name) is not a failure.
        assert!(!report.failed);

        let text = table(&report);
        assert!(text.contains("+1200 (1100–1200)"), "{text}");
        assert!(text.contains("1.71"), "{text}");
        assert!(
            text.contains("lockstats            unavailable: bpftrace is not on PATH"),
            "{text}"
        );
    }

    #[test]
    fn a_failed_variant_fails_the_run_and_keeps_its_reason() {
        let cfg = OverheadConfig {
            cycles: 1000,
            rounds: 1,
            variants: vec![Variant::Untraced, Variant::Locktrace],
            explicit: true,
            contrib: None,
            out: PathBuf::from("out"),
            command: Vec::new(),
        };
        let mut all = HashMap::new();
        all.insert(Variant::Untraced, runs(vec![lp(1000.0, None)]));
        all.insert(
            Variant::Locktrace,
            Runs {
                loops: Vec::new(),
                unavailable: None,
                error: Some("locktrace counted 0 lock calls".into()),
            },
        );
        let report = summarize(&cfg, Path::new("l"), &all);
        assert!(report.failed);
        let text = table(&report);
        assert!(
            text.contains("locktrace            FAILED: locktrace counted 0 lock calls"),
            "{text}"
        );
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(Spread::of(&[]).is_none());
    }
}
