//! lockbench: the parallel-pull lock contention demo for store-core.
//!
//! The library half holds what tests and criterion benches share with the binary: the synthetic
//! OCI image generator, byte-size parsing and the atomic file write both of them use.
//! Orchestration lives in the binary.

pub mod imagegen;
pub mod size;
