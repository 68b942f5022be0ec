//! The Prometheus protobuf exposition (`io.prometheus.client.MetricFamily`, length-delimited), with
//! native histograms next to the classic buckets. Prometheus asks for it when native histograms
//! are enabled. The messages are the subset of client_model's metrics.proto we send, with its field
//! numbers.

use std::collections::BTreeMap;

use prost::Message;

use super::{
    BUCKETS_NS,
    metrics::{Family, Hist, Kind, Value},
};

pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Bucket boundaries 2^(2^-5): each bucket is 2.2% wide, so a quantile is off by at most ~1.1%
/// (next to the HDR histogram's 0.1%).
pub const SCHEMA: i32 = 5;
/// Samples of at most 1 ns count in the zero bucket.
pub const ZERO_THRESHOLD: f64 = 1e-9;

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Counter {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BucketSpan {
    #[prost(sint32, optional, tag = "1")]
    pub offset: Option<i32>,
    #[prost(uint32, optional, tag = "2")]
    pub length: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(sint32, optional, tag = "5")]
    pub schema: Option<i32>,
    #[prost(double, optional, tag = "6")]
    pub zero_threshold: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    pub zero_count: Option<u64>,
    #[prost(message, repeated, tag = "12")]
    pub positive_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, packed = "true", tag = "13")]
    pub positive_delta: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

/// `MetricType` of metrics.proto.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    #[prost(enumeration = "MetricType", optional, tag = "3")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// Does an `Accept` header offer the delimited MetricFamily protobuf (with a non-zero weight)?
pub fn accepted(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(|p| p.trim().to_ascii_lowercase());
        if params.next().as_deref() != Some("application/vnd.google.protobuf") {
            return false;
        }
        let (mut proto, mut delimited, mut weighted) = (false, false, true);
        for p in params {
            match p.split_once('=') {
                Some(("proto", v)) => proto = v == "io.prometheus.client.metricfamily",
                Some(("encoding", v)) => delimited = v == "delimited",
                Some(("q", v)) => weighted = v.parse::<f64>().is_ok_and(|q| q > 0.0),
                _ => {}
            }
        }
        proto && delimited && weighted
    })
}

pub fn render(families: &[Family]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        let family = MetricFamily {
            name: Some(f.name.to_string()),
            help: Some(f.help.to_string()),
            r#type: Some(match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            } as i32),
            metric: f.samples.iter().map(metric).collect(),
        };
        // Encoding into a Vec cannot run out of space.
        let _ = family.encode_length_delimited(&mut out);
    }
    out
}

fn metric(s: &super::Sample) -> Metric {
    let label = s
        .labels
        .iter()
        .map(|(k, v)| LabelPair {
            name: Some(k.to_string()),
            value: Some(v.clone()),
        })
        .collect();
    let mut m = Metric {
        label,
        ..Default::default()
    };
    match &s.value {
        Value::Counter(n) => {
            m.counter = Some(Counter {
                value: Some(*n as f64),
            })
        }
        Value::Gauge(v) => m.gauge = Some(Gauge { value: Some(*v) }),
        Value::Seconds(ns) => {
            m.gauge = Some(Gauge {
                value: Some(*ns as f64 / 1e9),
            })
        }
        Value::Histogram(h) => m.histogram = Some(histogram(h)),
    }
    m
}

/// A histogram with both the classic buckets and the native ones.
pub fn histogram(h: &Hist) -> Histogram {
    let bucket = BUCKETS_NS
        .iter()
        .map(|&le| Bucket {
            cumulative_count: Some(h.count_le(le)),
            upper_bound: Some(le as f64 / 1e9),
        })
        .collect();
    let mut zero = 0u64;
    let mut native: BTreeMap<i32, u64> = BTreeMap::new();
    for &(ns, n) in &h.recorded {
        if ns as f64 / 1e9 <= ZERO_THRESHOLD {
            zero = zero.saturating_add(n);
        } else {
            let c = native.entry(index(ns as f64 / 1e9)).or_default();
            *c = c.saturating_add(n);
        }
    }
    let (positive_span, positive_delta) = spans(&native);
    Histogram {
        sample_count: Some(h.count),
        sample_sum: Some(h.sum_ns as f64 / 1e9),
        bucket,
        schema: Some(SCHEMA),
        zero_threshold: Some(ZERO_THRESHOLD),
        zero_count: Some(zero),
        positive_span,
        positive_delta,
    }
}

/// Upper bound of native bucket `i`: 2^(i / 2^SCHEMA).
pub fn upper_bound(i: i32) -> f64 {
    (f64::from(i) / f64::from(1 << SCHEMA)).exp2()
}

/// The native bucket holding `v` > 0: the `i` with upper_bound(i-1) < v <= upper_bound(i).
pub fn index(v: f64) -> i32 {
    let scaled = v.log2() * f64::from(1 << SCHEMA);
    // Values reach us from u64 nanoseconds: far inside i32 after the log.
    let mut i = scaled
        .ceil()
        .clamp(f64::from(i32::MIN + 1), f64::from(i32::MAX)) as i32;
    // log2 may round across a boundary; settle it against the bounds themselves.
    if upper_bound(i - 1) >= v {
        i -= 1;
    } else if upper_bound(i) < v {
        i += 1;
    }
    i
}

/// Runs of consecutive buckets and their delta-encoded counts. Gaps of one or two empty buckets
/// are cheaper as zeros than as a new span, as the Go client does it.
fn spans(buckets: &BTreeMap<i32, u64>) -> (Vec<BucketSpan>, Vec<i64>) {
    let (mut spans, mut deltas) = (Vec::<BucketSpan>::new(), Vec::new());
    let (mut prev_index, mut prev_count) = (None::<i32>, 0i64);
    for (&i, &n) in buckets {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        match prev_index {
            Some(p) if i - p <= 3 => {
                for _ in p + 1..i {
                    deltas.push(-prev_count);
                    prev_count = 0;
                }
                if let Some(last) = spans.last_mut() {
                    last.length = Some(last.length.unwrap_or(0) + (i - p) as u32);
                }
            }
            Some(p) => spans.push(BucketSpan {
                offset: Some(i - p - 1),
                length: Some(1),
            }),
            None => spans.push(BucketSpan {
                offset: Some(i),
                length: Some(1),
            }),
        }
        deltas.push(n - prev_count);
        prev_count = n;
        prev_index = Some(i);
    }
    if spans.is_empty() {
        // A no-op span marks a histogram without samples as native.
        spans.push(BucketSpan {
            offset: Some(0),
            length: Some(0),
        });
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::text::tests::{families_of, report};

    /// The native buckets of a decoded histogram as (index, count).
    fn expand(h: &Histogram) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let (mut i, mut count, mut deltas) = (0i32, 0i64, h.positive_delta.iter());
        for (k, span) in h.positive_span.iter().enumerate() {
            i += span.offset.unwrap() + if k == 0 { 0 } else { 1 };
            for j in 0..span.length.unwrap() {
                count += deltas.next().unwrap();
                if count > 0 {
                    out.push((i + j as i32, count as u64));
                }
            }
            i += span.length.unwrap() as i32 - 1;
        }
        assert!(deltas.next().is_none());
        out
    }

    fn decode(bytes: &[u8]) -> Vec<MetricFamily> {
        let mut buf = bytes;
        let mut out = Vec::new();
        while !buf.is_empty() {
            out.push(MetricFamily::decode_length_delimited(&mut buf).unwrap());
        }
        out
    }

    #[test]
    fn bucket_index_brackets_the_value() {
        for v in [1e-9, 1e-6, 0.00123, 0.5, 1.0, 2.0, 3.0, 59.0, 1e9] {
            let i = index(v);
            assert!(upper_bound(i - 1) < v && v <= upper_bound(i), "{v} → {i}");
        }
        assert_eq!(index(1.0), 0);
        assert_eq!(index(2.0), 32);
        assert_eq!(index(0.5), -32);
    }

    #[test]
    fn native_histograms_decode_back_to_the_report() {
        let holds = [
            1,
            1_000,
            1_001,
            3_000,
            7_000_000,
            7_000_000,
            7_100_000,
            59_000_000_000,
        ];
        let report = report("/s/layers.lock", &holds);
        let families = decode(&render(&families_of(report)));
        let hold = families
            .iter()
            .find(|f| f.name.as_deref() == Some("locktrace_lock_hold_seconds"))
            .unwrap();
        assert_eq!(hold.r#type, Some(MetricType::Histogram as i32));
        let m = &hold.metric[0];
        let labels: Vec<(&str, &str)> = m
            .label
            .iter()
            .map(|l| (l.name.as_deref().unwrap(), l.value.as_deref().unwrap()))
            .collect();
        assert_eq!(
            labels,
            [
                ("lock", "/s/layers.lock"),
                ("name", "layers.lock"),
                ("mode", "write")
            ]
        );
        let h = m.histogram.as_ref().unwrap();
        assert_eq!(h.sample_count, Some(8));
        assert_eq!(h.sample_sum, Some(holds.iter().sum::<u64>() as f64 / 1e9));
        assert_eq!(h.schema, Some(SCHEMA));
        assert_eq!(h.zero_count, Some(1), "1 ns is in the zero bucket");
        let native = expand(h);
        let total: u64 = native.iter().map(|(_, n)| n).sum::<u64>() + 1;
        assert_eq!(total, 8);
        // Each sample sits in the bucket of its own value.
        let want: Vec<(i32, u64)> = {
            let mut m = BTreeMap::new();
            for ns in &holds[1..] {
                *m.entry(index(*ns as f64 / 1e9)).or_default() += 1;
            }
            m.into_iter().collect()
        };
        assert_eq!(native, want);
        // The classic buckets ride along, cumulative.
        assert_eq!(h.bucket.len(), BUCKETS_NS.len());
        assert_eq!(h.bucket[0].cumulative_count, Some(2));
        assert_eq!(h.bucket.last().unwrap().cumulative_count, Some(8));
        let max = families
            .iter()
            .find(|f| f.name.as_deref() == Some("locktrace_lock_hold_seconds_max"))
            .unwrap();
        assert_eq!(max.metric[0].gauge.as_ref().unwrap().value, Some(59.0));
    }

    #[test]
    fn spans_merge_small_gaps_and_split_large_ones() {
        let b: BTreeMap<i32, u64> = [(-5, 2), (-3, 1), (10, 4)].into_iter().collect();
        let (spans, deltas) = spans(&b);
        let s: Vec<(i32, u32)> = spans
            .iter()
            .map(|s| (s.offset.unwrap(), s.length.unwrap()))
            .collect();
        assert_eq!(s, [(-5, 3), (12, 1)]);
        assert_eq!(deltas, [2, -2, 1, 3]);
        let (empty, none) = super::spans(&BTreeMap::new());
        assert_eq!((empty.len(), none.len()), (1, 0));
    }

    #[test]
    fn the_accept_header_prometheus_sends_selects_protobuf() {
        assert!(accepted(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
        ));
        assert!(accepted(CONTENT_TYPE));
        assert!(!accepted("text/plain;version=0.0.4;q=0.3,*/*;q=0.1"));
        assert!(!accepted(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0"
        ));
        assert!(!accepted(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
        ));
    }
}
