//! The grid of patches that relative patch location (Doersch et al. 2015) and
//! jigsaw (Noroozi & Favaro 2016) cut from an image.

use crate::augment::resized_crop;
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;

/// Smallest patch side, in pixels, that a grid may cut.
pub const MIN_PATCH: usize = 4;

/// A `grid x grid` layout of square cells centred on the image, each holding one
/// patch smaller than the cell (the gap) that is shifted at random (the jitter).
/// Shifts are capped so that neighbouring patches always stay at least half the
/// nominal gap apart: patches never overlap or touch, and the gap keeps blocking
/// boundary continuity (Doersch et al. 2015 use a 48-pixel gap and up to 7 pixels
/// of jitter for the same reason).
///
/// All sizes follow from the image size: `cell = min(H, W) / grid`,
/// `patch = cell - round(gap * cell)`, and the largest shift is
/// `min(round(jitter * cell), (cell - patch) / 4)`. On 28x28 images with the
/// defaults this gives 7-pixel patches 2 pixels apart and no jitter; jitter
/// appears from about 64-pixel images on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchGrid {
    /// Cells per side.
    pub grid: usize,
    /// Cell side in pixels.
    pub cell: usize,
    /// Patch side in pixels, before any resize.
    pub patch: usize,
    /// Largest shift of a patch from the centre of its cell, per axis.
    pub max_shift: usize,
    /// Top-left pixel `(y, x)` of cell `(0, 0)`.
    pub origin: (usize, usize),
}

impl PatchGrid {
    /// The grid for `height x width` images.
    ///
    /// # Errors
    /// [`DataError::Config`] when the image is too small for `grid` cells of at least
    /// [`MIN_PATCH`]-pixel patches, or `gap` / `jitter` are not in `[0, 1)`.
    pub fn new(height: usize, width: usize, grid: usize, gap: f64, jitter: f64) -> Result<Self> {
        for (name, v) in [("gap", gap), ("jitter", jitter)] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return Err(DataError::config(
                    name,
                    format!("must lie in [0, 1), got {v}"),
                ));
            }
        }
        if grid == 0 {
            return Err(DataError::config("grid", "must be at least 1"));
        }
        let cell = height.min(width) / grid;
        let patch = cell.saturating_sub((gap * cell as f64).round() as usize);
        if patch < MIN_PATCH {
            return Err(DataError::config(
                "grid",
                format!(
                    "a {grid}x{grid} grid with gap {gap} on {height}x{width} images gives \
                     {patch}-pixel patches; at least {MIN_PATCH} are needed (use a larger image, \
                     a smaller grid or a smaller gap)"
                ),
            ));
        }
        let max_shift = ((jitter * cell as f64).round() as usize).min((cell - patch) / 4);
        let origin = ((height - grid * cell) / 2, (width - grid * cell) / 2);
        Ok(Self {
            grid,
            cell,
            patch,
            max_shift,
            origin,
        })
    }

    /// Top-left pixel `(y, x)` of the patch of cell `(row, col)` after a random shift.
    ///
    /// # Panics
    /// If `row` or `col` is not below `grid`.
    pub fn patch_origin(&self, row: usize, col: usize, rng: &mut Rng) -> (usize, usize) {
        assert!(
            row < self.grid && col < self.grid,
            "cell ({row}, {col}) outside the grid"
        );
        let centred = (self.cell - self.patch) / 2;
        let mut shift = || {
            let span = 2 * self.max_shift + 1;
            centred + rng.below(span as u64) as usize - self.max_shift
        };
        let (dy, dx) = (shift(), shift());
        (
            self.origin.0 + row * self.cell + dy,
            self.origin.1 + col * self.cell + dx,
        )
    }

    /// Cuts the patch of cell `(row, col)` with a random shift, resized to
    /// `out x out` (`out = 0` keeps the patch size), and returns it with its
    /// top-left pixel in `img`.
    ///
    /// # Panics
    /// If `row` or `col` is not below `grid`, or `img` is smaller than the grid.
    pub fn cut(
        &self,
        img: &Image,
        row: usize,
        col: usize,
        out: usize,
        rng: &mut Rng,
    ) -> (Image, (usize, usize)) {
        let (y, x) = self.patch_origin(row, col, rng);
        let side = if out == 0 { self.patch } else { out };
        let patch = resized_crop(img, y, x, self.patch, self.patch, side, side);
        (patch, (y, x))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn geometry_follows_the_image_size() {
        let g = PatchGrid::new(28, 28, 3, 0.25, 0.1).unwrap();
        assert_eq!((g.cell, g.patch, g.max_shift, g.origin), (9, 7, 0, (0, 0)));
        let g = PatchGrid::new(96, 128, 3, 0.25, 0.1).unwrap();
        assert_eq!(
            (g.cell, g.patch, g.max_shift, g.origin),
            (32, 24, 2, (0, 16))
        );
        let e = PatchGrid::new(10, 10, 3, 0.25, 0.1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3x3 grid") && e.contains("10x10"), "{e}");
        assert!(PatchGrid::new(28, 28, 3, 1.5, 0.1).is_err());
    }

    #[test]
    fn patches_stay_inside_their_cells_keep_half_the_gap_and_cut_the_right_pixels() {
        let side = 120;
        let g = PatchGrid::new(side, side, 3, 0.25, 0.1).unwrap();
        assert_eq!((g.cell, g.patch, g.max_shift), (40, 30, 2));
        let img = Image {
            channels: 1,
            height: side,
            width: side,
            data: (0..side * side).map(|i| i as f32).collect(),
        };
        let mut rng = Rng::new(3);
        let mut shifts = std::collections::HashSet::new();
        for _ in 0..100 {
            let (_, (y0, x0)) = g.cut(&img, 1, 1, 0, &mut rng);
            for (row, col) in [(0, 0), (1, 2), (2, 1)] {
                let (p, (y, x)) = g.cut(&img, row, col, 0, &mut rng);
                assert!(y >= row * g.cell && y + g.patch <= (row + 1) * g.cell);
                assert!(x >= col * g.cell && x + g.patch <= (col + 1) * g.cell);
                assert_eq!(p.data[0], (y * side + x) as f32);
                assert_eq!(p.data.len(), g.patch * g.patch);
                // Distance to the centre patch along the axis where they are neighbours.
                let gap = if row == 1 {
                    x.abs_diff(x0)
                } else {
                    y.abs_diff(y0)
                } - g.patch;
                assert!(gap >= (g.cell - g.patch) / 2, "gap {gap}");
                shifts.insert(y - row * g.cell);
            }
        }
        assert_eq!(shifts.len(), 2 * g.max_shift + 1, "every shift occurs");
    }
}
