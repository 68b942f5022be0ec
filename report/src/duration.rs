//! Durations as people read and write them: `12.3µs` in output, `50ms` in budgets.

/// Three significant digits in the largest unit that keeps the number at least 1:
/// "850ns", "12.3µs", "4.56ms", "1.20s".
pub fn human_duration(nanos: u64) -> String {
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    const UNITS: [(f64, &str); 3] = [(1e3, "µs"), (1e6, "ms"), (1e9, "s")];
    let mut idx = if nanos < 1_000_000 {
        0
    } else if nanos < 1_000_000_000 {
        1
    } else {
        2
    };
    loop {
        let (scale, unit) = UNITS[idx];
        let value = nanos as f64 / scale;
        let decimals = if value < 9.995 {
            2
        } else if value < 99.95 {
            1
        } else {
            0
        };
        // 999.7µs must print as "1.00ms", not "1000µs".
        if value >= 999.5 && idx + 1 < UNITS.len() {
            idx += 1;
            continue;
        }
        return format!("{value:.decimals$}{unit}");
    }
}

/// Parses `50ms`, `1.5s`, `850ns`, `12us`/`12µs` into nanoseconds. A unit is required: a bare
/// number is ambiguous for a duration.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {text:?} needs a unit (ns, us, µs, ms or s)"))?;
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (expected ns, us, µs, ms or s)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad number {number:?} in duration {text:?}"))?;
    let nanos = (value * scale).round();
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(format!("duration {text:?} is out of range"));
    }
    Ok(nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn human_units() {
        assert_eq!(human_duration(0), "0ns");
        assert_eq!(human_duration(850), "850ns");
        assert_eq!(human_duration(12_345), "12.3µs");
        assert_eq!(human_duration(4_560_000), "4.56ms");
        assert_eq!(human_duration(1_200_000_000), "1.20s");
        assert_eq!(human_duration(999_700), "1.00ms");
        assert_eq!(human_duration(9_999), "10.0µs");
        assert_eq!(human_duration(3_600_000_000_000), "3600s");
    }
}
