//! The eBPF programs are the binary target (built for bpfel-unknown-none by tracer-cli's build.rs).
//! This empty library exists so tracer-cli can name this crate as a build-dependency and be rebuilt
//! when it changes.
#![no_std]
