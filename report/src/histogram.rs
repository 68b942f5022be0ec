//! The stored histogram format: HdrHistogram, nanoseconds, 3 significant digits, auto-resizing,
//! serialized as V2 + deflate and base64 so it embeds in JSON and other HdrHistogram tools can read it.
//!
//! Decoding is bounded: the header of a stored histogram states payload sizes and a value range
//! that the hdrhistogram crate would allocate for as claimed, so they are checked here first.

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::read::ZlibDecoder;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use crate::error::ReportError;

pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Cookies of HdrHistogram's V2 encoding, plain and deflated.
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;
/// Cookie, payload length, normalizing offset, digits, lowest, highest, integer-to-double ratio.
const V2_HEADER_BYTES: usize = 40;
/// The most a V2 histogram of 3 significant digits can need: its counts array covers all of u64 in
/// about 56,000 counters, each at most a 9-byte varint.
pub const MAX_ENCODED_BYTES: usize = 1 << 20;

/// The most samples one histogram may hold: V2 encodes each counter as an i64, and a total that
/// fits keeps every counter, and every merge of it, encodable.
pub const MAX_SAMPLES: u64 = i64::MAX as u64;

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
/// Refuses encodings that are not ours (other precision), claim more than they hold or more than
/// the format can need, and counts that add up past `u64`.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("bad base64: {e}"))?;
    let inner = inflate(&bytes)?;
    check_header(&inner)?;
    let mut hist: Histogram<u64> = Deserializer::new()
        .deserialize(&mut inner.as_slice())
        .map_err(|e| format!("bad HdrHistogram encoding: {e:?}"))?;
    // The crate saturates the total count; the true sum must fit.
    hist.iter_recorded()
        .try_fold(0u64, |sum, v| sum.checked_add(v.count_at_value()))
        .filter(|&n| n <= MAX_SAMPLES)
        .ok_or("bad HdrHistogram encoding: its counts add up to more than 2^63-1")?;
    hist.auto(true);
    Ok(hist)
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The plain V2 encoding inside the deflate wrapper, read no further than a V2 histogram can need.
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let truncated = || "bad HdrHistogram encoding: truncated header".to_string();
    let cookie = be_u32(bytes, 0).ok_or_else(truncated)?;
    if cookie != V2_DEFLATE_COOKIE {
        return Err(format!(
            "bad HdrHistogram encoding: cookie {cookie:#010x} is not V2 + deflate"
        ));
    }
    let claimed = be_u32(bytes, 4).ok_or_else(truncated)? as usize;
    let stream = &bytes[8..];
    if claimed > stream.len() {
        return Err(format!(
            "bad HdrHistogram encoding: claims {claimed} compressed bytes but holds {}",
            stream.len()
        ));
    }
    let mut inner = Vec::new();
    ZlibDecoder::new(&stream[..claimed])
        .take(MAX_ENCODED_BYTES as u64 + 1)
        .read_to_end(&mut inner)
        .map_err(|e| format!("bad HdrHistogram encoding: {e}"))?;
    if inner.len() > MAX_ENCODED_BYTES {
        return Err(format!(
            "bad HdrHistogram encoding: inflates to more than {MAX_ENCODED_BYTES} bytes"
        ));
    }
    Ok(inner)
}

/// What the V2 header claims, checked before the crate allocates for it.
fn check_header(inner: &[u8]) -> Result<(), String> {
    if inner.len() < V2_HEADER_BYTES || be_u32(inner, 0) != Some(V2_COOKIE) {
        return Err("bad HdrHistogram encoding: no V2 header inside the deflate stream".into());
    }
    let payload = be_u32(inner, 4).unwrap_or(0) as usize;
    let held = inner.len() - V2_HEADER_BYTES;
    if payload > held {
        return Err(format!(
            "bad HdrHistogram encoding: claims {payload} payload bytes but holds {held}"
        ));
    }
    // The precision decides how many counters the value range needs; ours is fixed.
    let digits = be_u32(inner, 12).unwrap_or(0);
    if digits != u32::from(SIGNIFICANT_DIGITS) {
        return Err(format!(
            "bad HdrHistogram encoding: {digits} significant digits, reports use {SIGNIFICANT_DIGITS}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored histogram rewritten by `edit` on its plain V2 bytes, deflated and encoded again.
    fn reencoded(edit: impl FnOnce(&mut Vec<u8>)) -> String {
        use flate2::{Compression, write::ZlibEncoder};
        use std::io::Write;
        let mut hist = new_histogram();
        hist.record(1_000).unwrap();
        let bytes = STANDARD.decode(encode(&hist).unwrap()).unwrap();
        let mut inner = inflate(&bytes).unwrap();
        edit(&mut inner);
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&inner).unwrap();
        let deflated = z.finish().unwrap();
        let mut out = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        out.extend((deflated.len() as u32).to_be_bytes());
        out.extend(deflated);
        STANDARD.encode(out)
    }

    #[test]
    fn round_trips_and_the_rewrite_helper_is_faithful() {
        let mut hist = new_histogram();
        for v in [1, 1_000, 1_000_000, u64::MAX / 4] {
            hist.record(v).unwrap();
        }
        assert_eq!(decode(&encode(&hist).unwrap()).unwrap(), hist);
        assert_eq!(decode(&reencoded(|_| {})).unwrap().len(), 1);
    }

    #[test]
    fn the_bound_covers_the_largest_histogram_of_our_precision() {
        // Every counter of a histogram over the whole recordable range, each a 9-byte varint.
        let widest =
            Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, SIGNIFICANT_DIGITS).unwrap();
        assert!(V2_HEADER_BYTES + widest.distinct_values() * 9 <= MAX_ENCODED_BYTES);
    }

    #[test]
    fn a_header_claiming_a_huge_payload_is_refused_without_allocating_it() {
        // ~100 bytes whose V2 header claims 2 GiB of counts.
        let text = reencoded(|inner| inner[4..8].copy_from_slice(&(2u32 << 30).to_be_bytes()));
        assert!(text.len() < 200);
        let err = decode(&text).unwrap_err();
        assert!(err.contains("claims 2147483648 payload bytes"), "{err}");
    }

    #[test]
    fn a_compressed_length_beyond_the_data_is_refused() {
        let mut bytes = STANDARD.decode(encode(&new_histogram()).unwrap()).unwrap();
        bytes[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = decode(&STANDARD.encode(&bytes)).unwrap_err();
        assert!(err.contains("compressed bytes"), "{err}");
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_bound() {
        let text = reencoded(|inner| inner.resize(MAX_ENCODED_BYTES * 4, 0));
        let err = decode(&text).unwrap_err();
        assert!(err.contains("inflates to more than"), "{err}");
    }

    #[test]
    fn another_precision_is_refused() {
        // 5 digits over all of u64 would need millions of counters.
        let text = reencoded(|inner| inner[12..16].copy_from_slice(&5u32.to_be_bytes()));
        let err = decode(&text).unwrap_err();
        assert!(err.contains("5 significant digits"), "{err}");
    }

    #[test]
    fn counts_that_overflow_u64_are_refused() {
        // Two counters near the most the encoding carries (i64::MAX) add up past u64.
        let mut hist = new_histogram();
        hist.record_n(1_000, i64::MAX as u64).unwrap();
        hist.record_n(2_000, i64::MAX as u64).unwrap();
        hist.record_n(3_000, 2).unwrap();
        let err = decode(&encode(&hist).unwrap()).unwrap_err();
        assert!(err.contains("more than 2^63-1"), "{err}");
    }
}
