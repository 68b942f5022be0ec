//! compare-podman's reader loops: while the pulls run, what a user runs against the store (list
//! images; create a container and remove it again), one process per command, each timed by the
//! parent from start to exit.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Context, Result};
use crate::process;
use crate::supervise::podman::{Client, ReadOp};
use crate::text::one_line;

/// Pause between a reader's rounds, as a user or a monitoring job would leave.
const PAUSE: Duration = Duration::from_millis(10);
/// How often a running reader command is checked: its time is measured to within this.
const POLL: Duration = Duration::from_micros(250);
/// Longest one reader command may take before it is killed (a pull of the locked variants can
/// hold the store for many seconds; a minute is hung).
const TIMEOUT: Duration = Duration::from_secs(120);

/// What reader loops measured: per command (`images`, `create`, `rm`), the durations of its
/// successful runs; failed runs counted, the first one's error kept.
#[derive(Default)]
pub struct ReaderSamples {
    pub ops: BTreeMap<&'static str, Vec<u64>>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl ReaderSamples {
    pub fn add(&mut self, other: ReaderSamples) {
        for (op, durations) in other.ops {
            self.ops.entry(op).or_default().extend(durations);
        }
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// All runs, failed ones included.
    pub fn runs(&self) -> u64 {
        self.errors + self.ops.values().map(|d| d.len() as u64).sum::<u64>()
    }

    /// Runs `op` once, timed; false when it failed. One that runs longer than [`TIMEOUT`] is
    /// killed and counted as failed, so a hung command cannot hang the run.
    fn run(
        &mut self,
        client: &Client,
        shared: &Path,
        base: &Path,
        store: &str,
        op: &ReadOp,
    ) -> bool {
        let started = Instant::now();
        let outcome = client
            .reader(shared, base, store, op)
            .and_then(|mut c| c.spawn().with_context(|| format!("starting {}", op.name())))
            .and_then(|child| finish(child, started, op));
        let took = started.elapsed().as_nanos() as u64;
        let why = match outcome {
            Ok(None) => {
                self.ops.entry(op.name()).or_default().push(took);
                return true;
            }
            Ok(Some(why)) => why,
            Err(e) => one_line(&e),
        };
        self.errors += 1;
        self.first_error.get_or_insert(why);
        false
    }
}

/// Waits for a reader command (killing it at [`TIMEOUT`]); `Some(why)` when it failed.
fn finish(mut child: Child, started: Instant, op: &ReadOp) -> Result<Option<String>> {
    let waited =
        process::wait_until(&mut child, started + TIMEOUT, POLL).context("waiting for a reader")?;
    let Some(status) = waited else {
        return Ok(Some(format!(
            "{} did not finish within {}s and was killed",
            op.name(),
            TIMEOUT.as_secs()
        )));
    };
    if status.success() {
        return Ok(None);
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    Ok(Some(format!(
        "{} exited with {status}: {}",
        op.name(),
        stderr.trim()
    )))
}

/// One reader: rounds of images, create (container `<label>-<round>` from `image`, see
/// [`Client::image_to_create_from`]), rm, until `done` (at least one round), against `base/<store>`.
pub fn read_until(
    done: &AtomicBool,
    client: &Client,
    shared: &Path,
    base: &Path,
    store: &str,
    label: &str,
    image: &str,
) -> ReaderSamples {
    let mut samples = ReaderSamples::default();
    for round in 0.. {
        let name = format!("{label}-{round}");
        samples.run(client, shared, base, store, &ReadOp::Images);
        if samples.run(
            client,
            shared,
            base,
            store,
            &ReadOp::Create { name: &name, image },
        ) {
            samples.run(client, shared, base, store, &ReadOp::Remove { name: &name });
        }
        if done.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(PAUSE);
    }
    samples
}
