//! Integration tests of selfsup-train (one binary, one module per topic).
mod gradients;
mod runs;
