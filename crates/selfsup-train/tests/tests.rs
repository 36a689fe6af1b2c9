//! Integration tests of selfsup-train (one binary, one module per topic).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod contrastive;
mod data_parallel;
mod generative;
mod gradients;
mod learning;
mod runs;
