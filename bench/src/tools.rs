//! Finding the programs lockbench runs (locktrace, lockload, bpftrace): next to lockbench's own
//! executable first, as one `cargo build` leaves them, else on PATH.

use std::path::PathBuf;

/// `name` next to this executable, else on PATH.
pub fn find(name: &str) -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .or_else(|| which::which(name).ok())
}
