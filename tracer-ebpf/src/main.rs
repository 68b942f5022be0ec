//! locktrace's kernel side. See `program/mod.rs` for what each hook does.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod program;

// The workspace builds every member for the host too (clippy, `cargo build --workspace`); there the
// programs are left out and this stub keeps the binary target valid.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
