//! lockbench: the parallel-pull lock contention demo for store-core.
//!
//! The library half holds what tests and criterion benches share with the binary: the synthetic
//! OCI image generator and byte-size parsing. Orchestration lives in the binary.

pub mod imagegen;
pub mod size;
