//! The stored histogram format: HdrHistogram, nanoseconds, 3 significant digits, auto-resizing,
//! serialized as V2 + deflate and base64 so it embeds in JSON and other HdrHistogram tools can read it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use crate::error::ReportError;
use crate::model::Summary;

pub const SIGNIFICANT_DIGITS: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    // 3 digits is always a valid precision for an auto-resizing histogram.
    Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is valid")
}

pub fn encode(hist: &Histogram<u64>) -> Result<String, ReportError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut bytes)
        .map_err(|e| ReportError::Encode(format!("{e:?}")))?;
    Ok(STANDARD.encode(bytes))
}

/// Decodes a stored histogram; the result auto-resizes so it can absorb others when merging.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("bad base64: {e}"))?;
    let mut hist: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("bad HdrHistogram encoding: {e:?}"))?;
    hist.auto(true);
    Ok(hist)
}

/// Summary of `hist`; `min`, `max` and `total` are the exact values tracked next to it.
pub fn summarize(hist: &Histogram<u64>, total: u64, min: u64, max: u64) -> Summary {
    let count = hist.len();
    if count == 0 {
        return Summary::default();
    }
    // Histogram percentiles report the top of a bucket; never claim more than the exact range.
    let q = |quantile: f64| hist.value_at_quantile(quantile).clamp(min, max);
    Summary {
        count,
        min,
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        p999: q(0.999),
        max,
        mean: total / count,
        total,
    }
}
