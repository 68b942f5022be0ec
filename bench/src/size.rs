//! Human byte sizes: `512K`, `64M`, `1G`, `1.5GiB` (binary units, as `dd` and `podman` use them).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A byte count that parses and prints with binary unit suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size {input:?}: {reason} (expected e.g. 512K, 64M, 1G)")]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

const UNITS: [(&str, u32); 5] = [("", 0), ("K", 10), ("M", 20), ("G", 30), ("T", 40)];

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| SizeError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(err("missing number"));
        }
        let unit = unit.trim().to_ascii_uppercase();
        let unit = unit
            .strip_suffix("IB")
            .or_else(|| unit.strip_suffix('B'))
            .unwrap_or(&unit);
        let shift = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, shift)| *shift)
            .ok_or_else(|| err("unknown unit"))?;
        let value: f64 = num.parse().map_err(|_| err("not a number"))?;
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(err("too large"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, shift) = UNITS
            .iter()
            .rev()
            .find(|(_, shift)| self.0 >= 1u64 << shift)
            .copied()
            .unwrap_or(("", 0));
        if shift == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{:.1} {unit}iB", self.0 as f64 / (1u64 << shift) as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("512K".parse::<ByteSize>().unwrap().0, 512 * 1024);
        assert_eq!("64M".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert_eq!("1G".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!("1.5GiB".parse::<ByteSize>().unwrap().0, 3 << 29);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("2mb".parse::<ByteSize>().unwrap().0, 2 << 20);
    }

    #[test]
    fn rejects_garbage() {
        assert!("".parse::<ByteSize>().is_err());
        assert!("M".parse::<ByteSize>().is_err());
        assert!("12Q".parse::<ByteSize>().is_err());
        assert!("1.2.3M".parse::<ByteSize>().is_err());
    }

    #[test]
    fn displays_binary_units() {
        assert_eq!(ByteSize(64 << 20).to_string(), "64.0 MiB");
        assert_eq!(ByteSize(1536).to_string(), "1.5 KiB");
        assert_eq!(ByteSize(12).to_string(), "12 B");
    }
}
