//! Reading a guest's results: did every step run and pass, in both attach modes?

use anyhow::{Result, bail};

use super::GUEST_TIMEOUT;
use super::guest::GuestOutput;

/// One `@@@ begin NAME` … `@@@ end NAME STATUS` section of the guest's results.
struct Step<'a> {
    name: &'a str,
    status: Option<i32>,
    output: String,
}

fn steps(results: &str) -> Vec<Step<'_>> {
    let mut steps: Vec<Step> = Vec::new();
    for line in results.lines() {
        if let Some(name) = line.strip_prefix("@@@ begin ") {
            steps.push(Step {
                name,
                status: None,
                output: String::new(),
            });
        } else if let Some(end) = line.strip_prefix("@@@ end ") {
            if let Some(step) = steps.last_mut() {
                step.status = end.rsplit(' ').next().and_then(|s| s.parse().ok());
            }
        } else if let Some(step) = steps.last_mut().filter(|s| s.status.is_none()) {
            step.output.push_str(line);
            step.output.push('\n');
        }
    }
    steps
}

/// Pass with a one-line summary, or an error that carries the guest's output.
pub(super) fn verdict(out: &GuestOutput) -> Result<String> {
    let problem = check(out);
    match problem {
        Ok(summary) => Ok(summary),
        Err(why) => {
            let mut msg = format!("{why}\n--- guest results ({}):\n", out.dir.display());
            msg.push_str(if out.results.is_empty() {
                "(nothing)\n"
            } else {
                &out.results
            });
            let tail: Vec<&str> = out.console.lines().rev().take(40).collect();
            msg.push_str("--- console (last 40 lines):\n");
            for line in tail.iter().rev() {
                msg.push_str(line);
                msg.push('\n');
            }
            bail!(msg)
        }
    }
}

fn check(out: &GuestOutput) -> Result<String, String> {
    if out.timed_out {
        return Err(format!(
            "guest hung: no power-off within {}s",
            GUEST_TIMEOUT.as_secs()
        ));
    }
    if out.console.contains("Kernel panic") {
        return Err("guest kernel panicked".into());
    }
    let Some(release) = out
        .results
        .lines()
        .find_map(|l| l.strip_prefix("@@@ booted "))
    else {
        return Err("the guest never reported (boot failure?)".into());
    };
    if !out.results.lines().any(|l| l == "@@@ done") {
        return Err("the guest stopped before finishing its steps".into());
    }
    let steps = steps(&out.results);
    let step = |name: &str| {
        let step = steps
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("step {name} missing from the guest's results"))?;
        match step.status {
            Some(0) => Ok(step),
            status => Err(format!("step {name} failed (exit {status:?})")),
        }
    };
    let doctor = step("doctor")?;
    let fentry_ok = doctor.output.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some("ok") && words.next() == Some("fentry")
    });
    if !fentry_ok || !doctor.output.contains("record would attach with: fentry") {
        return Err("doctor did not find fentry usable".into());
    }
    let mut summary = vec![format!("kernel {release}"), "doctor: fentry".into()];
    for mode in ["fentry", "tracepoint"] {
        let passed = test_counts(&step(&format!("tests-{mode}"))?.output)?;
        // The wrapper counts the record runs it forced into this mode; none means the tests ran
        // some other locktrace and this mode went untested.
        let forced = out
            .results
            .lines()
            .find_map(|l| l.strip_prefix(&format!("@@@ forced {mode} ")))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if forced == 0 {
            return Err(format!(
                "the tests never ran record through the wrapper forcing --attach {mode}"
            ));
        }
        summary.push(format!("{mode}: {passed} ({forced} records)"));
    }
    Ok(summary.join(", "))
}

/// "N passed" from libtest's summary; zero passed tests would prove nothing.
fn test_counts(output: &str) -> Result<String, String> {
    let line = output
        .lines()
        .find(|l| l.starts_with("test result: "))
        .ok_or("no libtest summary")?;
    let passed: u32 = line
        .split(';')
        .next()
        .and_then(|s| s.split_whitespace().rev().nth(1))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unreadable libtest summary: {line}"))?;
    if passed == 0 {
        return Err(format!("no test ran: {line}"));
    }
    Ok(format!("{passed} passed"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn output(results: &str) -> GuestOutput {
        GuestOutput {
            results: results.into(),
            console: String::new(),
            timed_out: false,
            dir: PathBuf::from("/nowhere"),
        }
    }

    const DOCTOR: &str = "@@@ begin doctor\nok   fentry       loaded and attached (trial)\n\
                          record would attach with: fentry\n@@@ end doctor 0\n";

    const OK: &str = "test result: ok. 6 passed; 0 failed; 0 ignored";

    /// One tests step as /init writes it, with how many record runs the wrapper forced.
    fn tests(mode: &str, summary: &str, status: i32, forced: u32) -> String {
        format!(
            "@@@ begin tests-{mode}\n{summary}\n@@@ end tests-{mode} {status}\n\
             @@@ forced {mode} {forced}\n"
        )
    }

    fn guest(fentry: &str, tracepoint: &str) -> String {
        format!("@@@ booted 6.12.0\n{DOCTOR}{fentry}{tracepoint}@@@ done\n")
    }

    #[test]
    fn a_complete_passing_guest_passes() {
        let r = guest(&tests("fentry", OK, 0, 14), &tests("tracepoint", OK, 0, 14));
        let summary = check(&output(&r)).unwrap();
        assert!(
            summary.contains("fentry: 6 passed (14 records)"),
            "{summary}"
        );
    }

    #[test]
    fn failures_hangs_and_missing_results_fail() {
        let bad = "test result: FAILED. 5 passed; 1 failed; 0 ignored";
        let failing = guest(
            &tests("fentry", bad, 101, 14),
            &tests("tracepoint", OK, 0, 14),
        );
        let err = check(&output(&failing)).unwrap_err();
        assert!(err.contains("tests-fentry"), "{err}");
        let none_ran = guest(
            &tests("fentry", "test result: ok. 0 passed; 0 failed", 0, 0),
            &tests("tracepoint", OK, 0, 14),
        );
        let err = check(&output(&none_ran)).unwrap_err();
        assert!(err.contains("no test ran"), "{err}");
        // Passing tests that bypassed the wrapper tested auto mode, not tracepoints.
        let unforced = guest(&tests("fentry", OK, 0, 14), &tests("tracepoint", OK, 0, 0));
        let err = check(&output(&unforced)).unwrap_err();
        assert!(err.contains("--attach tracepoint"), "{err}");
        let unfinished = format!("@@@ booted 6.1.0\n{DOCTOR}");
        assert!(check(&output(&unfinished)).is_err());
        assert!(check(&output("")).is_err());
        let mut hung = output(&failing);
        hung.timed_out = true;
        assert!(check(&hung).unwrap_err().contains("hung"));
        let no_fentry = "@@@ booted 6.1.0\n@@@ begin doctor\nno   fentry       refused\n\
                         record would attach with: tracepoint\n@@@ end doctor 0\n@@@ done\n";
        assert!(check(&output(no_fentry)).unwrap_err().contains("fentry"));
    }
}
