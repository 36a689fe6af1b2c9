//! Jigsaw tiles and views (Noroozi & Favaro 2016, "Unsupervised Learning of Visual
//! Representations by Solving Jigsaw Puzzles", section 3).

use std::sync::Arc;

use super::grid::PatchGrid;
use super::permutations::PermutationSet;
use crate::augment::{grayscale_in_place, ColorJitter};
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::views::{Sample, ViewRecipe};

/// Per-channel mean every tile is given by [`normalize_in_place`], in image units.
pub const TILE_MEAN: f32 = 0.5;
/// Per-channel standard deviation every tile is given by [`normalize_in_place`].
pub const TILE_STD: f32 = 0.25;
/// Smallest standard deviation [`normalize_in_place`] divides by: one 8-bit grey
/// level, so flat tiles stay flat instead of amplifying rounding noise.
pub const STD_FLOOR: f32 = 1.0 / 255.0;
/// Default tile side as a multiple of the natural tile side (see
/// [`JigsawTiles::default_tile_size`]).
pub const DEFAULT_UPSCALE: usize = 2;

/// Gives every channel of `img` the same mean [`TILE_MEAN`] and standard
/// deviation [`TILE_STD`] (with the deviation floored at [`STD_FLOOR`]).
///
/// This is the per-tile normalisation of Noroozi & Favaro (and Doersch et al.
/// 2015's per-patch one): it hides each tile's brightness and contrast, a
/// low-level cue that would give away neighbours. The target moments are those of
/// a typical `[0, 1]` image rather than 0 and 1 because the
/// [`Loader`](crate::Loader) still applies the dataset's mean/std afterwards, an
/// affine map that is the same for every tile. Values may leave `[0, 1]`.
pub fn normalize_in_place(img: &mut Image) {
    let n = img.plane_len();
    if n == 0 {
        return;
    }
    for plane in img.data.chunks_exact_mut(n) {
        let mean = plane.iter().map(|&p| f64::from(p)).sum::<f64>() / n as f64;
        let var = plane
            .iter()
            .map(|&p| (f64::from(p) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        let scale = f64::from(TILE_STD) / var.sqrt().max(f64::from(STD_FLOOR));
        for p in plane {
            *p = (f64::from(TILE_MEAN) + (f64::from(*p) - mean) * scale) as f32;
        }
    }
}

/// Cuts an image into `grid x grid` tiles: each from its cell of a [`PatchGrid`]
/// with random jitter (and the grid's gap between tiles), optionally resized,
/// colour-jittered and converted to grayscale (RGB only), and normalised on its own.
///
/// Noroozi & Favaro's guards against shortcuts: the gap and jitter hide edge
/// continuity, the per-tile normalisation hides brightness and contrast, and colour
/// jitter or grayscale hide chromatic aberration. This is the building block of the
/// jigsaw views and of PIRL's transformed view.
#[derive(Clone, Debug, PartialEq)]
pub struct JigsawTiles {
    /// Geometry of the cells and tiles for the images this transform cuts.
    pub grid: PatchGrid,
    /// Output tile side in pixels; 0 keeps the natural side `grid.patch`.
    pub tile_size: usize,
    /// Apply [`normalize_in_place`] to every tile.
    pub normalize: bool,
    /// Colour jitter of RGB tiles, drawn independently per tile.
    pub color_jitter: ColorJitter,
    /// Probability of colour-jittering an RGB tile.
    pub color_jitter_p: f64,
    /// Probability of turning an RGB tile into grayscale.
    pub grayscale_p: f64,
}

impl JigsawTiles {
    /// Tiles of `grid` at `tile_size` (0: natural side), normalised, without colour
    /// augmentation.
    pub fn new(grid: PatchGrid, tile_size: usize) -> Self {
        Self {
            grid,
            tile_size,
            normalize: true,
            color_jitter: ColorJitter::new(0.0, 0.0, 0.0, 0.0),
            color_jitter_p: 0.0,
            grayscale_p: 0.0,
        }
    }

    /// Default output side: [`DEFAULT_UPSCALE`] times the natural tile side. With
    /// the default gap of a quarter cell the natural side is about `S/4` on
    /// `S x S` images (7 on 28x28), so `grid²` = 9 tiles of `S/2` hold about
    /// `2.25 S²` pixels, close to SimCLR's two `S x S` views, and a stride-8
    /// encoder still ends on a 2x2 map rather than 1x1.
    pub fn default_tile_size(grid: &PatchGrid) -> usize {
        DEFAULT_UPSCALE * grid.patch
    }

    /// Side of the tiles this transform returns.
    pub fn out_size(&self) -> usize {
        if self.tile_size == 0 {
            self.grid.patch
        } else {
            self.tile_size
        }
    }

    /// Number of tiles per image, `grid²`.
    pub fn count(&self) -> usize {
        self.grid.grid * self.grid.grid
    }

    /// The tiles of `img` in row-major cell order: tile `t` comes from cell
    /// `(t / grid, t % grid)`.
    ///
    /// # Shapes
    /// `(C, H, W)` in, `grid²` times `(C, out_size, out_size)` out.
    ///
    /// # Panics
    /// If `img` is smaller than the images the grid was made for.
    pub fn tiles(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        (0..self.count())
            .map(|cell| self.tile(img, cell, rng))
            .collect()
    }

    /// The tile of cell `cell = row * grid + col`, with its own random jitter, colour
    /// augmentation and normalisation.
    ///
    /// # Shapes
    /// `(C, H, W)` in, `(C, out_size, out_size)` out.
    ///
    /// # Panics
    /// If `cell >= grid²` or `img` is smaller than the images the grid was made for.
    pub fn tile(&self, img: &Image, cell: usize, rng: &mut Rng) -> Image {
        let g = self.grid.grid;
        let (mut tile, _) = self.grid.cut(img, cell / g, cell % g, self.tile_size, rng);
        if tile.channels == 3 {
            if rng.bernoulli(self.color_jitter_p) {
                self.color_jitter.apply_in_place(&mut tile, rng);
            }
            if rng.bernoulli(self.grayscale_p) {
                grayscale_in_place(&mut tile);
            }
        }
        if self.normalize {
            normalize_in_place(&mut tile);
        }
        tile
    }

    /// Checks the probabilities and the colour jitter.
    ///
    /// # Errors
    /// [`DataError::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("color_jitter_p", self.color_jitter_p),
            ("grayscale_p", self.grayscale_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(DataError::config(
                    name,
                    format!("probability {p} is not in [0, 1]"),
                ));
            }
        }
        self.color_jitter.validate()
    }
}

/// The jigsaw puzzle of one image: its tiles shuffled by a permutation drawn
/// uniformly from a [`PermutationSet`], with the permutation's index as the label.
///
/// Convention: with `perm = set.get(target)`, view `k` is the tile cut from cell
/// `perm[k]` (cells numbered row-major, `cell = row * grid + col`). So the views
/// list the tiles in the order the permutation names them, and the classifier has
/// to recognise which cell each position came from.
#[derive(Clone, Debug)]
pub struct JigsawViews {
    /// How tiles are cut.
    pub tiles: JigsawTiles,
    /// The permutations the puzzle draws from; the label is an index into it.
    pub permutations: Arc<PermutationSet>,
}

impl ViewRecipe for JigsawViews {
    fn num_views(&self) -> usize {
        self.tiles.count()
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        self.sample(img, rng).views
    }

    fn num_targets(&self) -> usize {
        1
    }

    fn sample(&self, img: &Image, rng: &mut Rng) -> Sample {
        let target = rng.below(self.permutations.len() as u64) as usize;
        let views = self
            .permutations
            .get(target)
            .iter()
            .map(|&cell| self.tiles.tile(img, usize::from(cell), rng))
            .collect();
        Sample {
            views,
            targets: vec![target as u32],
        }
    }

    fn validate(&self) -> Result<()> {
        if self.permutations.tiles() != self.tiles.count() {
            return Err(DataError::config(
                "permutations",
                format!(
                    "the set orders {} tiles but a {g}x{g} grid has {}",
                    self.permutations.tiles(),
                    self.tiles.count(),
                    g = self.tiles.grid.grid
                ),
            ));
        }
        self.tiles.validate()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// An image whose pixel `(y, x)` holds `y * 1000 + x`, so every tile says where it came from.
    fn coordinates(size: usize) -> Image {
        Image {
            channels: 1,
            height: size,
            width: size,
            data: (0..size * size)
                .map(|i| ((i / size) * 1000 + i % size) as f32)
                .collect(),
        }
    }

    fn noise(c: usize, size: usize) -> Image {
        let mut r = Rng::new(5);
        Image {
            channels: c,
            height: size,
            width: size,
            data: (0..c * size * size).map(|_| r.f32()).collect(),
        }
    }

    fn recipe(size: usize, tile_size: usize, normalize: bool) -> JigsawViews {
        let grid = PatchGrid::new(size, size, 3, 0.25, 0.1).unwrap();
        let mut tiles = JigsawTiles::new(grid, tile_size);
        tiles.normalize = normalize;
        JigsawViews {
            tiles,
            permutations: Arc::new(PermutationSet::new(9, 30, 3).unwrap()),
        }
    }

    #[test]
    fn view_k_is_the_tile_of_cell_perm_k() {
        let views = recipe(28, 0, false);
        views.validate().unwrap();
        let img = coordinates(28);
        let cell = views.tiles.grid.cell;
        let mut seen = std::collections::HashSet::new();
        for i in 0..40 {
            let s = views.sample(&img, &mut Rng::derive(1, &[i]));
            assert_eq!((s.views.len(), s.targets.len()), (9, 1));
            seen.insert(s.targets[0]);
            let perm = views.permutations.get(s.targets[0] as usize);
            for (k, tile) in s.views.iter().enumerate() {
                assert_eq!((tile.height, tile.width), (7, 7));
                let (y, x) = (
                    (tile.data[0] / 1000.0) as usize,
                    tile.data[0] as usize % 1000,
                );
                assert_eq!((y / cell) * 3 + x / cell, usize::from(perm[k]), "view {k}");
            }
        }
        assert!(seen.len() > 10, "targets should vary: {seen:?}");
    }

    #[test]
    fn tiles_are_normalised_resized_and_deterministic() {
        for c in [1, 3] {
            let mut views = recipe(32, 14, true);
            views.tiles.color_jitter = ColorJitter::new(0.4, 0.4, 0.4, 0.1);
            views.tiles.color_jitter_p = 0.8;
            views.tiles.grayscale_p = 0.3;
            views.validate().unwrap();
            let img = noise(c, 32);
            let a = views.sample(&img, &mut Rng::new(9));
            assert_eq!(a, views.sample(&img, &mut Rng::new(9)));
            for tile in &a.views {
                assert_eq!((tile.channels, tile.height, tile.width), (c, 14, 14));
                for ch in 0..c {
                    let p = tile.plane(ch);
                    let mean = p.iter().sum::<f32>() / p.len() as f32;
                    let var = p.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / p.len() as f32;
                    assert!((mean - TILE_MEAN).abs() < 1e-4, "mean {mean}");
                    assert!((var.sqrt() - TILE_STD).abs() < 1e-3, "std {}", var.sqrt());
                }
            }
        }
        let mut flat = Image::zeros(1, 4, 4);
        normalize_in_place(&mut flat);
        assert!(flat.data.iter().all(|&v| v == TILE_MEAN));
    }

    #[test]
    fn mismatched_set_and_bad_settings_are_named() {
        let mut views = recipe(28, 0, true);
        views.permutations = Arc::new(PermutationSet::new(4, 5, 0).unwrap());
        let e = views.validate().unwrap_err().to_string();
        assert!(e.contains("permutations") && e.contains("3x3"), "{e}");
        let mut views = recipe(28, 0, true);
        views.tiles.grayscale_p = 2.0;
        assert!(views
            .validate()
            .unwrap_err()
            .to_string()
            .contains("grayscale_p"));
    }

    #[test]
    fn too_small_image_is_a_clear_error() {
        let e = PatchGrid::new(9, 9, 3, 0.25, 0.1).unwrap_err().to_string();
        assert!(e.contains("3x3 grid") && e.contains("9x9"), "{e}");
    }
}
