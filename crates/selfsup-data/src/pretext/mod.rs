//! View recipes of the image pretext tasks: each returns the views a task trains on
//! together with the free labels it derives ([`Sample::targets`](crate::Sample)).
//!
//! - [`PatchGrid`]: the gap-and-jitter grid of patches shared by relative patch
//!   location and jigsaw.
//! - [`JigsawTiles`], [`JigsawViews`] and [`PermutationSet`]: the tiles of a jigsaw
//!   puzzle, the puzzle with its permutation label, and the permutation set.
//! - [`PirlViews`]: an augmented image and its shuffled jigsaw tiles (PIRL).
//! - [`RotationViews`] and [`rotate90`]: every image at 0, 90, 180 and 270 degrees
//!   (rotation prediction).
//! - [`RelativePatchViews`]: a patch and one of its eight neighbours, labelled by
//!   the neighbour's position in [`NEIGHBOURS`] (relative patch location).
//! - [`InpaintingViews`]: the view of inpainting and its hidden squares
//!   ([`MaskBox`]), with [`rasterize_mask`] for the mask and its overlap border.
//! - [`ShuffleLearnViews`] and [`OddOneOutViews`]: frame tuples and sub-clips of a
//!   video clip, labelled by whether (or which one) is out of temporal order.
//! - [`NextFrameViews`]: consecutive frames of a video clip, the last to be predicted
//!   from the others (next-frame prediction).
//! - [`DenoisingViews`]: a corrupted copy of the image and the image, with the
//!   blanked pixels as labels (denoising autoencoder).

mod denoise;
mod frame_order;
mod grid;
mod jigsaw;
mod mask;
mod next_frame;
mod patch;
mod permutations;
mod pirl;
mod rotation;

pub use denoise::DenoisingViews;
pub use frame_order::{
    clip_frame, frames_alike, is_monotone, min_gap, spaced_positions, OddOneOutViews,
    ShuffleLearnViews,
};
pub use grid::{PatchGrid, MIN_PATCH};
pub use jigsaw::{
    normalize_in_place, JigsawTiles, JigsawViews, DEFAULT_UPSCALE, STD_FLOOR, TILE_MEAN, TILE_STD,
};
pub use mask::{
    border_width, rasterize_mask, InpaintingViews, MaskBox, MaskLayout, MaskPlanes, DEFAULT_BLOCKS,
    MIN_MASK,
};
pub use next_frame::NextFrameViews;
pub use patch::{PatchPair, RelativePatchViews, DROPPED_NOISE, NEIGHBOURS};
pub use permutations::{PermutationSet, CANDIDATE_POOL, MAX_ENUMERATED_TILES};
pub use pirl::PirlViews;
pub use rotation::{rotate90, RotationViews, ROTATIONS};
