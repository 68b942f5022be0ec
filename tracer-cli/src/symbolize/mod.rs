//! Names for the user stacks that `locktrace record --stacks` captures.
//!
//! Stands alone; `session` uses it.

pub mod gopclntab;

#[cfg(test)]
mod testprog;
