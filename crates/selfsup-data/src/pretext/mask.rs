//! The masks of inpainting (Pathak et al. 2016, "Context Encoders: Feature Learning
//! by Inpainting", section 3.3): which squares of an image are hidden, reported as
//! free labels, and their rasterisation with the overlap border.

use crate::augment::crop_and_flip;
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::views::{Sample, ViewRecipe};

/// Smallest side, in pixels, of a hidden square.
pub const MIN_MASK: usize = 2;

/// Squares of the [`MaskLayout::Blocks`] layout unless set otherwise.
pub const DEFAULT_BLOCKS: usize = 4;

/// Where the hidden squares go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskLayout {
    /// One square in the middle of the image (the paper's central region).
    Center,
    /// This many equal squares at random places (the paper's random blocks). Each
    /// lies in its own cell, drawn at random, of a `⌈√n⌉ x ⌈√n⌉` grid, so squares
    /// never overlap and always hide the same area.
    Blocks(usize),
}

/// One hidden square: its top-left pixel and its size, in pixels of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl MaskBox {
    /// Pixels covered.
    pub fn area(&self) -> usize {
        self.height * self.width
    }

    /// Whether pixel `(y, x)` lies inside.
    pub fn contains(&self, y: usize, x: usize) -> bool {
        (self.top..self.top + self.height).contains(&y)
            && (self.left..self.left + self.width).contains(&x)
    }

    /// The four targets `[top, left, height, width]` of this box.
    pub fn to_targets(&self) -> [u32; 4] {
        [self.top, self.left, self.height, self.width].map(|v| v as u32)
    }

    /// The boxes of one image's targets, four numbers per box as
    /// [`MaskBox::to_targets`] writes them (a trailing incomplete group is ignored).
    pub fn from_targets(targets: &[u32]) -> Vec<MaskBox> {
        targets
            .chunks_exact(4)
            .map(|t| MaskBox {
                top: t[0] as usize,
                left: t[1] as usize,
                height: t[2] as usize,
                width: t[3] as usize,
            })
            .collect()
    }
}

/// The view and the hidden squares of inpainting.
///
/// One view per image: `RandomResizedCrop(size, scale=crop_scale)` and a
/// horizontal flip with probability `hflip_p` (light, so that the context stays
/// natural). The targets are the hidden squares, four numbers each
/// (`top, left, height, width`, see [`MaskBox`]), a fixed count per image. The
/// view itself is not masked: the method hides the squares (and weighs the
/// overlap border, see [`rasterize_mask`]) after normalisation.
///
/// Square sides follow from the view side `size`:
/// - [`MaskLayout::Center`]: one square of side `round(mask_size * size)`, centred
///   (the top-left offset is `(size - side) / 2`, rounded down);
/// - [`MaskLayout::Blocks`]`(n)`: `n` squares of side
///   `round(size * mask_size / sqrt(n))` (at most the grid cell), together hiding
///   about the same area as the center square, `mask_size²` of the image (a
///   quarter with the default 0.5, Pathak et al.'s "up to 1/4").
#[derive(Clone, Debug, PartialEq)]
pub struct InpaintingViews {
    /// Side of the square view.
    pub size: usize,
    /// Area fraction range of the random crop.
    pub crop_scale: (f64, f64),
    /// Probability of a horizontal flip.
    pub hflip_p: f64,
    /// Where the hidden squares go.
    pub layout: MaskLayout,
    /// Side of the center square as a fraction of the view side; blocks hide the
    /// same total area.
    pub mask_size: f64,
}

impl InpaintingViews {
    /// `size x size` views with crop scale (0.5, 1) and flip probability 0.5.
    ///
    /// # Errors
    /// As [`ViewRecipe::validate`]: [`DataError::Config`] when the view is too
    /// small for squares of at least [`MIN_MASK`] pixels with context around them.
    pub fn new(size: usize, layout: MaskLayout, mask_size: f64) -> Result<Self> {
        let views = Self {
            size,
            crop_scale: (0.5, 1.0),
            hflip_p: 0.5,
            layout,
            mask_size,
        };
        views.validate()?;
        Ok(views)
    }

    /// Number of hidden squares per image.
    pub fn num_boxes(&self) -> usize {
        match self.layout {
            MaskLayout::Center => 1,
            MaskLayout::Blocks(n) => n,
        }
    }

    /// Cells per side of the block grid: `⌈√n⌉`.
    fn grid(n: usize) -> usize {
        (1..=n).find(|g| g * g >= n).unwrap_or(1)
    }

    /// Side of every hidden square, in pixels.
    pub fn square_side(&self) -> usize {
        let size = self.size as f64;
        match self.layout {
            MaskLayout::Center => (self.mask_size * size).round() as usize,
            MaskLayout::Blocks(n) => {
                let side = (size * self.mask_size / (n.max(1) as f64).sqrt()).round() as usize;
                side.min(self.size / Self::grid(n))
            }
        }
    }

    /// The hidden squares of one view (`Blocks` draws from `rng`).
    pub fn boxes(&self, rng: &mut Rng) -> Vec<MaskBox> {
        let side = self.square_side();
        let square = |top, left| MaskBox {
            top,
            left,
            height: side,
            width: side,
        };
        match self.layout {
            MaskLayout::Center => {
                let offset = self.size.saturating_sub(side) / 2;
                vec![square(offset, offset)]
            }
            MaskLayout::Blocks(n) => {
                let g = Self::grid(n);
                let cell = self.size / g;
                let origin = (self.size - g * cell) / 2;
                let slack = (cell - side) as u64 + 1;
                rng.permutation(g * g)[..n]
                    .iter()
                    .map(|&c| {
                        let dy = rng.below(slack) as usize;
                        let dx = rng.below(slack) as usize;
                        square(origin + (c / g) * cell + dy, origin + (c % g) * cell + dx)
                    })
                    .collect()
            }
        }
    }
}

impl ViewRecipe for InpaintingViews {
    fn num_views(&self) -> usize {
        1
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        self.sample(img, rng).views
    }

    fn num_targets(&self) -> usize {
        4 * self.num_boxes()
    }

    fn sample(&self, img: &Image, rng: &mut Rng) -> Sample {
        let view = crop_and_flip(img, self.size, self.crop_scale, self.hflip_p, rng);
        let targets = self
            .boxes(rng)
            .iter()
            .flat_map(MaskBox::to_targets)
            .collect();
        Sample {
            views: vec![view],
            targets,
        }
    }

    fn validate(&self) -> Result<()> {
        let (lo, hi) = self.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(DataError::config(
                "crop_scale",
                format!("({lo}, {hi}) must satisfy 0 < lo <= hi <= 1"),
            ));
        }
        if !(0.0..=1.0).contains(&self.hflip_p) {
            return Err(DataError::config(
                "hflip_p",
                format!("probability {} is not in [0, 1]", self.hflip_p),
            ));
        }
        if !(self.mask_size > 0.0 && self.mask_size < 1.0) {
            return Err(DataError::config(
                "mask-size",
                format!("must lie in (0, 1), got {}", self.mask_size),
            ));
        }
        if self.layout == MaskLayout::Blocks(0) {
            return Err(DataError::config("mask", "needs at least one block"));
        }
        let (side, n, size) = (self.square_side(), self.num_boxes(), self.size);
        if side < MIN_MASK {
            return Err(DataError::config(
                "mask-size",
                format!(
                    "{:?} masks of mask-size {} on {size}x{size} images give {side}-pixel \
                     squares; at least {MIN_MASK} are needed (use a larger image or mask-size)",
                    self.layout, self.mask_size
                ),
            ));
        }
        if side + 2 > size || n * side * side >= size * size {
            return Err(DataError::config(
                "mask-size",
                format!(
                    "{:?} masks of mask-size {} leave no context on {size}x{size} images \
                     (use a smaller mask-size)",
                    self.layout, self.mask_size
                ),
            ));
        }
        Ok(())
    }
}

/// Width in pixels of the overlap border for `overlap` (a fraction of the image
/// side): `round(overlap * side)`, at least 1.
pub fn border_width(overlap: f64, side: usize) -> usize {
    ((overlap * side as f64).round() as usize).max(1)
}

/// The hidden pixels and the overlap border of one image, as 0/1 planes.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskPlanes {
    /// 1 on pixels inside a box, else 0.
    pub mask: Vec<f32>,
    /// 1 on visible pixels within `border` pixels (horizontally, vertically or
    /// diagonally) of a hidden pixel, else 0. Context Encoders predicts this band
    /// too, with a higher loss weight, so that the fill blends with its context.
    pub border: Vec<f32>,
}

/// Rasterises `boxes` on a `height x width` plane (row-major, `y * width + x`),
/// with an overlap border `border` pixels wide around the hidden pixels; boxes and
/// border are clipped to the plane.
///
/// # Shapes
/// Both planes have `height * width` values.
pub fn rasterize_mask(boxes: &[MaskBox], height: usize, width: usize, border: usize) -> MaskPlanes {
    let mut mask = vec![0f32; height * width];
    let mut ring = vec![0f32; height * width];
    for b in boxes {
        for y in b.top.min(height)..(b.top + b.height).min(height) {
            mask[y * width + b.left.min(width)..y * width + (b.left + b.width).min(width)]
                .fill(1.0);
        }
    }
    for b in boxes {
        let (y0, x0) = (b.top.saturating_sub(border), b.left.saturating_sub(border));
        let y1 = (b.top + b.height + border).min(height);
        let x1 = (b.left + b.width + border).min(width);
        for y in y0..y1 {
            for x in x0..x1 {
                if mask[y * width + x] == 0.0 {
                    ring[y * width + x] = 1.0;
                }
            }
        }
    }
    MaskPlanes { mask, border: ring }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn noise(c: usize, side: usize) -> Image {
        let mut r = Rng::new(9);
        Image {
            channels: c,
            height: side,
            width: side,
            data: (0..c * side * side).map(|_| r.f32()).collect(),
        }
    }

    /// Pixel-by-pixel reference: a pixel is hidden iff some box contains it, and on
    /// the border iff it is visible and within `border` (Chebyshev) of a hidden pixel.
    fn check_planes(boxes: &[MaskBox], side: usize, border: usize) {
        let planes = rasterize_mask(boxes, side, side, border);
        let hidden = |y: usize, x: usize| boxes.iter().any(|b| b.contains(y, x));
        for y in 0..side {
            for x in 0..side {
                let near = (y.saturating_sub(border)..=(y + border).min(side - 1)).any(|v| {
                    (x.saturating_sub(border)..=(x + border).min(side - 1)).any(|u| hidden(v, u))
                });
                let i = y * side + x;
                assert_eq!(planes.mask[i] == 1.0, hidden(y, x), "mask at ({y}, {x})");
                assert_eq!(
                    planes.border[i] == 1.0,
                    !hidden(y, x) && near,
                    "border at ({y}, {x})"
                );
            }
        }
        let covered: f32 = planes.mask.iter().sum();
        let reported: usize = boxes.iter().map(MaskBox::area).sum();
        assert_eq!(covered as usize, reported);
    }

    #[test]
    fn center_square_is_centred_and_covers_exactly_its_box() {
        let recipe = InpaintingViews::new(28, MaskLayout::Center, 0.5).unwrap();
        let s = recipe.sample(&noise(1, 28), &mut Rng::new(1));
        assert_eq!(s.targets, vec![7, 7, 14, 14]);
        assert_eq!(recipe.num_targets(), 4);
        let odd = InpaintingViews::new(33, MaskLayout::Center, 0.4).unwrap();
        let b = odd.boxes(&mut Rng::new(0))[0];
        assert_eq!((b.top, b.left, b.height, b.width), (10, 10, 13, 13));
        assert!(33 - (b.top + b.height) - b.top <= 1);
        check_planes(&[b], 33, 2);
        let planes = rasterize_mask(&[b], 33, 33, 2);
        let ring: f32 = planes.border.iter().sum();
        assert_eq!(ring as usize, 17 * 17 - 13 * 13);
    }

    #[test]
    fn random_blocks_never_overlap_and_cover_exactly_their_boxes() {
        let recipe = InpaintingViews::new(28, MaskLayout::Blocks(4), 0.5).unwrap();
        assert_eq!((recipe.square_side(), recipe.num_targets()), (7, 16));
        let img = noise(3, 32);
        let mut seen = std::collections::HashSet::new();
        for seed in 0..40 {
            let s = recipe.sample(&img, &mut Rng::new(seed));
            assert_eq!(s.targets.len(), 16);
            let boxes = MaskBox::from_targets(&s.targets);
            for b in &boxes {
                assert!(b.top + b.height <= 28 && b.left + b.width <= 28);
            }
            check_planes(&boxes, 28, 1);
            seen.insert(s.targets);
        }
        assert!(seen.len() > 30, "block positions should vary");
        let three = InpaintingViews::new(40, MaskLayout::Blocks(3), 0.3).unwrap();
        for seed in 0..10 {
            check_planes(&three.boxes(&mut Rng::new(seed)), 40, 3);
        }
    }

    #[test]
    fn views_are_deterministic_and_keep_the_channels() {
        let recipe = InpaintingViews::new(24, MaskLayout::Blocks(2), 0.3).unwrap();
        for c in [1, 3] {
            let img = noise(c, 32);
            let a = recipe.sample(&img, &mut Rng::derive(4, &[0, 2, 1]));
            let b = recipe.sample(&img, &mut Rng::derive(4, &[0, 2, 1]));
            assert_eq!(a, b);
            let v = &a.views[0];
            assert_eq!((v.channels, v.height, v.width), (c, 24, 24));
        }
    }

    #[test]
    fn boxes_near_the_edge_clip_their_border() {
        let boxes = [MaskBox {
            top: 0,
            left: 5,
            height: 3,
            width: 3,
        }];
        check_planes(&boxes, 8, 2);
        assert_eq!(border_width(1.0 / 16.0, 28), 2);
        assert_eq!(border_width(0.0, 28), 1);
    }

    #[test]
    fn too_small_images_or_masks_give_a_clear_error() {
        let e = InpaintingViews::new(3, MaskLayout::Center, 0.3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mask-size") && e.contains("3x3"), "{e}");
        assert!(e.contains("1-pixel squares"), "{e}");
        let e = InpaintingViews::new(3, MaskLayout::Center, 0.5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no context") && e.contains("3x3"), "{e}");
        let e = InpaintingViews::new(28, MaskLayout::Blocks(16), 0.15)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1-pixel squares"), "{e}");
        let e = InpaintingViews::new(28, MaskLayout::Center, 0.95)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no context"), "{e}");
        assert!(InpaintingViews::new(28, MaskLayout::Blocks(0), 0.5).is_err());
        assert!(InpaintingViews::new(28, MaskLayout::Center, 1.0).is_err());
    }
}
