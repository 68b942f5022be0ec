//! Progress bars on stderr, hidden with `--quiet` (indicatif also hides them off a terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte progress bar.
pub fn byte_bar(total: u64, msg: &'static str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(msg);
    bar
}

/// A bar counting finished pulls, ticking so the elapsed time moves while none finishes.
pub fn pull_bar(pulls: usize, msg: String, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(pulls as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:30}] {pos}/{len} pulls {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(msg);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
