//! What the commands do, on top of everything else: generate images, pull one, run the demo,
//! compare with podman, measure tracer overhead, and the hidden worker process the demo starts.

pub mod compare_podman;
pub mod container;
pub mod demo;
pub mod generate;
pub mod images;
pub mod overhead;
pub mod pull;
pub mod worker;
