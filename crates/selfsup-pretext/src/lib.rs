//! Heads and losses of the pretext tasks: the free labels come from
//! `selfsup-data`'s view recipes, the methods that train them live in
//! `selfsup-train`.
//!
//! - [`MlpHead`] and [`classify`]: the classifier that rotation, relative patch
//!   location and jigsaw put on top of the encoder, with its cross-entropy and
//!   top-1 count.

mod classifier;

pub use classifier::{classify, Classified, MlpHead};
