//! The views of relative patch location (Doersch, Gupta, Efros 2015, "Unsupervised
//! Visual Representation Learning by Context Prediction"): a patch, one of its eight
//! neighbours, and which neighbour it is.

use super::grid::PatchGrid;
use super::jigsaw::normalize_in_place;
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::views::{Sample, ViewRecipe};

/// The eight neighbours as `(row, col)` offsets from the anchor cell, in label order:
/// row-major over the 3x3 block, skipping the centre.
///
/// ```text
/// 0 1 2
/// 3 . 4
/// 5 6 7
/// ```
pub const NEIGHBOURS: [(isize, isize); 8] = [
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
];

/// Doersch et al.'s colour dropping: the dropped channels become Gaussian noise with this
/// fraction of the kept channel's standard deviation.
pub const DROPPED_NOISE: f32 = 0.01;

/// One training pair and where it was cut.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchPair {
    /// The patch of the anchor cell (view 0).
    pub anchor: Image,
    /// The patch of the neighbouring cell (view 1).
    pub neighbour: Image,
    /// Index of the neighbour in [`NEIGHBOURS`].
    pub label: u32,
    /// Grid cell `(row, col)` of the anchor.
    pub anchor_cell: (usize, usize),
    /// Top-left pixel `(y, x)` of the anchor patch in the image.
    pub anchor_origin: (usize, usize),
    /// Top-left pixel `(y, x)` of the neighbour patch in the image.
    pub neighbour_origin: (usize, usize),
}

/// Relative patch location's views: view 0 is the patch of the anchor cell, view 1 the
/// patch of one of its eight neighbours chosen uniformly, and the one target is that
/// neighbour's index in [`NEIGHBOURS`]. The anchor is the centre cell of the default 3x3
/// grid; a larger grid picks it uniformly among the cells that have eight neighbours.
///
/// Guards against the shortcuts of section 3 of the paper:
/// - **boundary continuity**: the gap and jitter of [`PatchGrid`];
/// - **low-level statistics** (`normalize`): every channel of each patch gets the same
///   mean and standard deviation ([`normalize_in_place`], shared with jigsaw). The
///   loader then applies the dataset's per-channel mean/std, an affine map that is the
///   same for every patch, so patches stay normalised up to it;
/// - **chromatic aberration** (`color_drop`, RGB only, after normalising): each patch
///   keeps one channel drawn uniformly and replaces the other two with its mean plus
///   Gaussian noise of [`DROPPED_NOISE`] times its standard deviation.
///
/// Patches are cut at their natural size and resized bilinearly to `patch_size`
/// (0 keeps the natural size).
#[derive(Clone, Debug, PartialEq)]
pub struct RelativePatchViews {
    grid: PatchGrid,
    /// Side of the square views, in pixels; 0 keeps the natural patch size.
    pub patch_size: usize,
    /// Normalise each patch on its own statistics.
    pub normalize: bool,
    /// Drop colour on RGB patches.
    pub color_drop: bool,
}

impl RelativePatchViews {
    /// The recipe for `height x width` images on a `grid x grid` grid with `gap` and
    /// `jitter` as fractions of the cell side (see [`PatchGrid`]), with both guards on.
    ///
    /// # Errors
    /// [`DataError::Config`] when `grid` is below 3 (the anchor needs eight
    /// neighbours), the image is too small for the grid, or `gap` / `jitter` are out of
    /// range.
    pub fn new(
        height: usize,
        width: usize,
        grid: usize,
        gap: f64,
        jitter: f64,
        patch_size: usize,
    ) -> Result<Self> {
        if grid < 3 {
            return Err(DataError::config(
                "grid",
                format!("relative patch location needs a grid of at least 3x3, got {grid}x{grid}"),
            ));
        }
        Ok(Self {
            grid: PatchGrid::new(height, width, grid, gap, jitter)?,
            patch_size,
            normalize: true,
            color_drop: true,
        })
    }

    /// The geometry patches are cut with.
    pub fn grid(&self) -> &PatchGrid {
        &self.grid
    }

    /// Side of the views: `patch_size`, or the natural patch side when it is 0.
    pub fn view_size(&self) -> usize {
        if self.patch_size == 0 {
            self.grid.patch
        } else {
            self.patch_size
        }
    }

    /// Draws the anchor cell, the neighbour, both patches, and applies the guards.
    ///
    /// # Shapes
    /// `(C, H, W)` in; each patch `(C, s, s)` with `s` = [`Self::view_size`].
    ///
    /// # Panics
    /// If `img` is smaller than the size the recipe was built for.
    pub fn cut_pair(&self, img: &Image, rng: &mut Rng) -> PatchPair {
        let inner = self.grid.grid as u64 - 2;
        let row = 1 + rng.below(inner) as usize;
        let col = 1 + rng.below(inner) as usize;
        let label = rng.below(NEIGHBOURS.len() as u64) as usize;
        let (dr, dc) = NEIGHBOURS[label];
        let (nrow, ncol) = (row.wrapping_add_signed(dr), col.wrapping_add_signed(dc));
        let out = self.view_size();
        let (mut anchor, anchor_origin) = self.grid.cut(img, row, col, out, rng);
        let (mut neighbour, neighbour_origin) = self.grid.cut(img, nrow, ncol, out, rng);
        for patch in [&mut anchor, &mut neighbour] {
            if self.normalize {
                normalize_in_place(patch);
            }
            if self.color_drop && patch.channels == 3 {
                drop_color(patch, rng);
            }
        }
        PatchPair {
            anchor,
            neighbour,
            label: label as u32,
            anchor_cell: (row, col),
            anchor_origin,
            neighbour_origin,
        }
    }
}

/// Mean and standard deviation of `values`.
fn mean_std(values: &[f32]) -> (f32, f32) {
    let n = values.len().max(1) as f32;
    let mean = values.iter().sum::<f32>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, var.sqrt())
}

/// Keeps one channel drawn uniformly; the others become its mean plus faint Gaussian
/// noise (Doersch et al. 2015, section 3: "randomly drop 2 of the 3 color channels from
/// each patch", replaced by noise of about 1/100 the remaining channel's deviation).
fn drop_color(patch: &mut Image, rng: &mut Rng) {
    let keep = rng.below(patch.channels as u64) as usize;
    let (mean, std) = mean_std(patch.plane(keep));
    let sigma = f64::from(DROPPED_NOISE * std);
    let plane = patch.plane_len().max(1);
    for (c, values) in patch.data.chunks_exact_mut(plane).enumerate() {
        if c != keep {
            for v in values {
                *v = mean + (sigma * rng.normal()) as f32;
            }
        }
    }
}

impl ViewRecipe for RelativePatchViews {
    fn num_views(&self) -> usize {
        2
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        self.sample(img, rng).views
    }

    fn num_targets(&self) -> usize {
        1
    }

    fn sample(&self, img: &Image, rng: &mut Rng) -> Sample {
        let pair = self.cut_pair(img, rng);
        Sample {
            views: vec![pair.anchor, pair.neighbour],
            targets: vec![pair.label],
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::pretext::{TILE_MEAN, TILE_STD};

    /// A `channels x side x side` image whose pixel `(c, y, x)` holds `(c * side + y) * side + x`.
    fn coordinates(channels: usize, side: usize) -> Image {
        Image {
            channels,
            height: side,
            width: side,
            data: (0..channels * side * side).map(|i| i as f32).collect(),
        }
    }

    fn raw(side: usize, grid: usize) -> RelativePatchViews {
        let mut r = RelativePatchViews::new(side, side, grid, 0.25, 0.1, 0).unwrap();
        r.normalize = false;
        r.color_drop = false;
        r
    }

    #[test]
    fn labels_match_where_the_patches_were_cut() {
        for (side, grid) in [(28, 3), (64, 5)] {
            let recipe = raw(side, grid);
            let g = *recipe.grid();
            let img = coordinates(1, side);
            let mut rng = Rng::new(4);
            let mut seen = [0usize; 8];
            for _ in 0..400 {
                let pair = recipe.cut_pair(&img, &mut rng);
                // Each view holds exactly the pixels below its reported origin.
                for (patch, (y, x)) in [
                    (&pair.anchor, pair.anchor_origin),
                    (&pair.neighbour, pair.neighbour_origin),
                ] {
                    assert_eq!((patch.height, patch.width), (g.patch, g.patch));
                    for py in 0..g.patch {
                        for px in 0..g.patch {
                            let want = ((y + py) * side + x + px) as f32;
                            assert_eq!(patch.get(0, py, px), want);
                        }
                    }
                }
                // The cells the pixels came from differ by the labelled offset.
                let cell_of = |v: f32| {
                    let (y, x) = (v as usize / side, v as usize % side);
                    (
                        ((y - g.origin.0) / g.cell) as isize,
                        ((x - g.origin.1) / g.cell) as isize,
                    )
                };
                let a = cell_of(pair.anchor.data[0]);
                let n = cell_of(pair.neighbour.data[0]);
                assert_eq!((n.0 - a.0, n.1 - a.1), NEIGHBOURS[pair.label as usize]);
                assert_eq!(
                    a,
                    (pair.anchor_cell.0 as isize, pair.anchor_cell.1 as isize)
                );
                if grid == 3 {
                    assert_eq!(pair.anchor_cell, (1, 1));
                }
                seen[pair.label as usize] += 1;
            }
            assert!(seen.iter().all(|&s| s > 25), "labels not uniform: {seen:?}");
        }
    }

    #[test]
    fn sample_returns_the_pair_and_its_label() {
        let mut recipe = RelativePatchViews::new(28, 28, 3, 0.25, 0.1, 14).unwrap();
        assert_eq!((recipe.num_views(), recipe.num_targets()), (2, 1));
        let img = coordinates(1, 28);
        let s = recipe.sample(&img, &mut Rng::new(1));
        let pair = recipe.cut_pair(&img, &mut Rng::new(1));
        assert_eq!(s.views, vec![pair.anchor, pair.neighbour]);
        assert_eq!(s.targets, vec![pair.label]);
        assert_eq!((s.views[0].height, s.views[1].width), (14, 14));
        recipe.patch_size = 0;
        assert_eq!(recipe.view_size(), 7);
    }

    #[test]
    fn patches_are_normalised_and_rgb_keeps_one_channel() {
        let recipe = RelativePatchViews::new(32, 32, 3, 0.25, 0.1, 0).unwrap();
        let mut r = Rng::new(8);
        let img = Image {
            channels: 3,
            height: 32,
            width: 32,
            data: (0..3 * 32 * 32).map(|_| r.f32()).collect(),
        };
        let mut rng = Rng::new(2);
        for _ in 0..20 {
            let pair = recipe.cut_pair(&img, &mut rng);
            for patch in [&pair.anchor, &pair.neighbour] {
                let stats: Vec<(f32, f32)> = (0..3).map(|c| mean_std(patch.plane(c))).collect();
                let close = |a: f32, b: f32, tol: f32| (a - b).abs() < tol;
                assert!(
                    stats.iter().all(|&(m, _)| close(m, TILE_MEAN, 0.01)),
                    "{stats:?}"
                );
                let kept = stats
                    .iter()
                    .filter(|&&(_, s)| close(s, TILE_STD, 1e-4))
                    .count();
                let faint = stats
                    .iter()
                    .filter(|&&(_, s)| s < 2.0 * DROPPED_NOISE * TILE_STD);
                assert_eq!((kept, faint.count()), (1, 2), "{stats:?}");
            }
        }
        // Grayscale patches are only normalised.
        let gray = RelativePatchViews::new(28, 28, 3, 0.25, 0.1, 0).unwrap();
        let pair = gray.cut_pair(&coordinates(1, 28), &mut Rng::new(0));
        let (m, s) = mean_std(&pair.anchor.data);
        assert!((m - TILE_MEAN).abs() < 1e-4 && (s - TILE_STD).abs() < 1e-4);
    }

    #[test]
    fn too_small_images_and_grids_are_refused() {
        let e = RelativePatchViews::new(10, 10, 3, 0.25, 0.1, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3x3 grid") && e.contains("10x10"), "{e}");
        let e = RelativePatchViews::new(28, 28, 2, 0.25, 0.1, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid setting `grid`") && e.contains("3x3"),
            "{e}"
        );
    }
}
