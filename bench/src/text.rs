//! Error and log text on one line: what every failure message and note is built from.

use std::error::Error;
use std::path::Path;

/// `": <last non-empty line>"` of a log file, or nothing: the most useful part of a child's stderr.
pub fn log_tail(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .map(|l| format!(": {l}"))
        .unwrap_or_default()
}

/// The error and its causes on one line, skipping a cause whose text the message before it already
/// ends with (errors that print their source themselves would otherwise repeat it).
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut out = String::new();
    for cause in std::iter::successors(Some(e), |&e| e.source()) {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug)]
    struct Repeats(std::io::Error);
    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "writing f.dat: {}", self.0)
        }
    }
    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// What was being done, above `Repeats`.
    #[derive(Debug)]
    struct Doing(Repeats);
    impl std::fmt::Display for Doing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("pulling img-00")
        }
    }
    impl std::error::Error for Doing {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn one_line_keeps_context_and_drops_repeated_causes() {
        let io = std::io::Error::other("disk full");
        let e = Doing(Repeats(io));
        assert_eq!(one_line(&e), "pulling img-00: writing f.dat: disk full");
    }
}
