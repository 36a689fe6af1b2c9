//! View recipes of the image pretext tasks: each returns the views a task trains on
//! together with the free labels it derives ([`Sample::targets`](crate::Sample)).
//!
//! - [`PatchGrid`]: the gap-and-jitter grid of patches shared by relative patch
//!   location and jigsaw.

mod grid;

pub use grid::{PatchGrid, MIN_PATCH};
