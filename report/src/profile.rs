//! The stacks of a report as samples for profilers: the walk the stack exports share, and pprof's
//! gzipped `profile.proto` (github.com/google/pprof/proto/profile.proto), which `go tool pprof`,
//! speedscope, Pyroscope and others read.
//!
//! Every stack gets the lock name and mode as its two root-most frames, so one profile holds every
//! lock and a flame graph splits by lock first; the stacks past a report's top ones are one stack
//! [`OTHER_STACKS`], so the samples still add up to the metric.

use std::collections::HashMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::error::ReportError;
use crate::merge::by_name;
use crate::model::{Metric, Mode, Report};

/// The single frame standing for the stacks past a report's top ones, summed.
pub const OTHER_STACKS: &str = "[other stacks]";

/// One stack of one lock (by name, same-named lock files merged), mode and metric.
pub(crate) struct StackSample<'a> {
    pub lock: &'a str,
    pub mode: Mode,
    pub metric: Metric,
    /// Leaf first, without the lock and mode frames.
    pub frames: &'a [String],
    pub count: u64,
    pub total_ns: u64,
}

/// True when any lock of `report` has stacks of either metric (`record --stacks`).
pub fn has_stacks(report: &Report) -> bool {
    let mut modes = report.locks.iter().flat_map(|l| l.modes.values());
    modes.any(|m| !m.stacks.is_empty())
}

/// Calls `f` with every stack of `metrics` in a fixed order: locks by name, modes, metrics in the
/// given order, then the report's top stacks (largest total first) and their others last.
pub(crate) fn for_each_stack(
    report: &Report,
    metrics: &[Metric],
    mut f: impl FnMut(StackSample<'_>),
) -> Result<(), ReportError> {
    let others = [OTHER_STACKS.to_owned()];
    for (name, named) in by_name(&report.locks)? {
        for (mode, mode_report) in &named.lock.modes {
            for &metric in metrics {
                let stacks = mode_report.stacks(metric);
                let sample = |frames, count, total_ns| StackSample {
                    lock: name,
                    mode: *mode,
                    metric,
                    frames,
                    count,
                    total_ns,
                };
                for s in &stacks.top {
                    f(sample(&s.frames, s.count, s.total_ns));
                }
                if let Some(o) = &stacks.others {
                    f(sample(&others, o.count, o.total_ns));
                }
            }
        }
    }
    Ok(())
}

/// The subset of profile.proto this export writes; field numbers as in pprof's profile.proto.
pub(crate) mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
    }
}

use proto::{Function, Label, Line, Location, Profile, Sample, ValueType};

/// The sample types of a metric: how many, then how long.
fn sample_types(metric: Metric) -> [(&'static str, &'static str); 2] {
    match metric {
        Metric::Wait => [("waits", "count"), ("wait", "nanoseconds")],
        Metric::Hold => [("holds", "count"), ("hold", "nanoseconds")],
    }
}

/// Strings, locations and functions, each interned once.
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    frame_ids: HashMap<String, u64>,
    profile: Profile,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    /// One function and one location per distinct frame text, named by it.
    fn frame(&mut self, frame: &str) -> u64 {
        if let Some(&id) = self.frame_ids.get(frame) {
            return id;
        }
        let id = self.frame_ids.len() as u64 + 1;
        let name = self.string(frame);
        self.profile.function.push(Function {
            id,
            name,
            system_name: name,
        });
        self.profile.location.push(Location {
            id,
            line: vec![Line { function_id: id }],
        });
        self.frame_ids.insert(frame.to_owned(), id);
        id
    }
}

/// pprof's gzipped profile.proto of the stacks of `metric`, or of both metrics when `None`.
///
/// Sample types are `waits`/count and `wait`/nanoseconds, `holds`/count and `hold`/nanoseconds
/// (count first, as pprof's convention and Go's mutex profile have it); without a metric all four,
/// `hold` the default (`-sample_index=wait` picks the other), as a heap profile carries alloc and
/// inuse. Each stack is one sample, locations leaf first down to the mode and the lock name as the
/// two root-most frames, labelled `lock` and `mode`; a sample of one metric has zeros in the
/// other's values. Values past `i64::MAX` (292 years) are clamped.
pub fn pprof(report: &Report, metric: Option<Metric>) -> Result<Vec<u8>, ReportError> {
    let metrics: &[Metric] = match &metric {
        Some(m) => std::slice::from_ref(m),
        None => &Metric::ALL,
    };
    let mut b = Builder::default();
    b.string("");
    for &m in metrics {
        for (kind, unit) in sample_types(m) {
            let sample_type = ValueType {
                r#type: b.string(kind),
                unit: b.string(unit),
            };
            b.profile.sample_type.push(sample_type);
        }
    }
    let default = metric.unwrap_or(Metric::Hold);
    b.profile.default_sample_type = b.string(default.as_str());
    // Every lock call is in the report, none sampled away: one event per count.
    b.profile.period_type = Some(ValueType {
        r#type: b.string("events"),
        unit: b.string("count"),
    });
    b.profile.period = 1;
    b.profile.duration_nanos = clamp(report.meta.duration_ns);
    let comment = b.string("locktrace lock stacks: lock name and mode are the two root frames");
    b.profile.comment.push(comment);
    let (lock_key, mode_key) = (b.string("lock"), b.string("mode"));

    let mut samples = Vec::new();
    for_each_stack(report, metrics, |s| {
        let mut location_id: Vec<u64> = s.frames.iter().map(|f| b.frame(f)).collect();
        location_id.push(b.frame(s.mode.as_str()));
        location_id.push(b.frame(s.lock));
        let slot = metrics.iter().position(|&m| m == s.metric).unwrap_or(0);
        let mut value = vec![0; metrics.len() * 2];
        value[slot * 2] = clamp(s.count);
        value[slot * 2 + 1] = clamp(s.total_ns);
        let label = vec![
            Label {
                key: lock_key,
                str: b.string(s.lock),
            },
            Label {
                key: mode_key,
                str: b.string(s.mode.as_str()),
            },
        ];
        samples.push(Sample {
            location_id,
            value,
            label,
        });
    })?;
    b.profile.sample = samples;
    b.profile.string_table = b.strings;

    let bytes = prost::Message::encode_to_vec(&b.profile);
    let mut gz = GzEncoder::new(Vec::with_capacity(bytes.len() / 2), Compression::default());
    gz.write_all(&bytes)
        .and_then(|()| gz.finish())
        .map_err(|e| ReportError::Invalid(format!("cannot compress the profile: {e}")))
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;
    use prost::Message;

    use super::*;
    use crate::export::tests::stacked_report;

    fn decode(gz: &[u8]) -> Profile {
        let mut bytes = Vec::new();
        GzDecoder::new(gz).read_to_end(&mut bytes).unwrap();
        Profile::decode(bytes.as_slice()).unwrap()
    }

    /// Sample `i` as (frames leaf first, values, labels), all strings resolved.
    fn sample(p: &Profile, i: usize) -> (Vec<&str>, Vec<i64>, Vec<(&str, &str)>) {
        let s = &p.sample[i];
        let str_at = |i: i64| p.string_table[i as usize].as_str();
        let frames = s
            .location_id
            .iter()
            .map(|id| {
                let loc = p.location.iter().find(|l| l.id == *id).unwrap();
                assert_eq!(loc.line.len(), 1);
                let f = p.function.iter().find(|f| f.id == loc.line[0].function_id);
                str_at(f.unwrap().name)
            })
            .collect();
        let labels = s
            .label
            .iter()
            .map(|l| (str_at(l.key), str_at(l.str)))
            .collect();
        (frames, s.value.clone(), labels)
    }

    fn types(p: &Profile) -> Vec<(&str, &str)> {
        let s = |i: i64| p.string_table[i as usize].as_str();
        p.sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect()
    }

    #[test]
    fn one_metric_gives_count_and_nanoseconds_per_stack_leaf_first() {
        let p = decode(&pprof(&stacked_report(), Some(Metric::Hold)).unwrap());
        assert_eq!(p.string_table[0], "");
        assert_eq!(types(&p), [("holds", "count"), ("hold", "nanoseconds")]);
        assert_eq!(p.string_table[p.default_sample_type as usize], "hold");
        assert_eq!(p.duration_nanos, 5_000_000_000);
        // images.lock write hold, then layers.lock read hold (stacks and others) and write hold.
        assert_eq!(p.sample.len(), 4);
        let (frames, values, labels) = sample(&p, 0);
        assert_eq!(
            frames,
            ["fcntl", "lockImages", "main", "write", "images.lock"]
        );
        assert_eq!(values, [1, 2_000]);
        assert_eq!(labels, [("lock", "images.lock"), ("mode", "write")]);
        let (frames, values, labels) = sample(&p, 1);
        assert_eq!(frames, ["fcntl", "a;b\nc", "main", "read", "layers.lock"]);
        assert_eq!(values, [3, 4_500_000]);
        assert_eq!(labels, [("lock", "layers.lock"), ("mode", "read")]);
        let (frames, values, _) = sample(&p, 2);
        assert_eq!(frames, [OTHER_STACKS, "read", "layers.lock"]);
        assert_eq!(values, [2, 400]);
        // Each frame text is one function and location, shared by every stack it is in.
        let names: Vec<&str> = p
            .function
            .iter()
            .map(|f| &*p.string_table[f.name as usize])
            .collect();
        assert_eq!(names.iter().filter(|n| **n == "fcntl").count(), 1);
        assert_eq!(p.function.len(), p.location.len());
    }

    #[test]
    fn without_a_metric_both_are_in_and_hold_is_the_default() {
        let p = decode(&pprof(&stacked_report(), None).unwrap());
        assert_eq!(
            types(&p),
            [
                ("waits", "count"),
                ("wait", "nanoseconds"),
                ("holds", "count"),
                ("hold", "nanoseconds")
            ]
        );
        assert_eq!(p.string_table[p.default_sample_type as usize], "hold");
        let waits: Vec<_> = (0..p.sample.len())
            .map(|i| sample(&p, i))
            .filter(|(_, v, _)| v[0] > 0)
            .collect();
        assert_eq!(waits.len(), 1);
        assert_eq!(
            waits[0].0,
            ["flock", "waitHere", "main", "write", "layers.lock"]
        );
        assert_eq!(waits[0].1, [2, 7_000_000, 0, 0]);
        let hold_ns: i64 = p.sample.iter().map(|s| s.value[3]).sum();
        assert_eq!(hold_ns, 2_000 + 4_500_000 + 400 + 1_000_000);
    }

    #[test]
    fn a_report_without_stacks_has_none() {
        let mut r = stacked_report();
        assert!(has_stacks(&r));
        for lock in &mut r.locks {
            for m in lock.modes.values_mut() {
                m.stacks = Default::default();
            }
        }
        assert!(!has_stacks(&r));
        assert!(decode(&pprof(&r, None).unwrap()).sample.is_empty());
    }
}
