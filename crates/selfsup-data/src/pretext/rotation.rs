//! The views of rotation prediction (Gidaris, Singh, Komodakis 2018, "Unsupervised
//! Representation Learning by Predicting Image Rotations"): every image at 0, 90, 180
//! and 270 degrees.

use crate::augment::{crop_and_flip, resized_crop};
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::views::{check_crop_scale, check_p, ViewRecipe};

/// Number of rotations, and of views per image.
pub const ROTATIONS: usize = 4;

/// `img` turned by `k` quarter turns counter-clockwise (`numpy.rot90(img, k)` on each
/// channel); `k` is taken modulo 4.
///
/// # Shapes
/// `(C, H, W)` in; `(C, H, W)` out for even `k`, `(C, W, H)` for odd `k`.
pub fn rotate90(img: &Image, k: usize) -> Image {
    let (h, w) = (img.height, img.width);
    let k = k % ROTATIONS;
    let (oh, ow) = if k % 2 == 0 { (h, w) } else { (w, h) };
    let mut out = Image::zeros(img.channels, oh, ow);
    for c in 0..img.channels {
        let src = img.plane(c);
        let dst = &mut out.data[c * oh * ow..(c + 1) * oh * ow];
        for y in 0..oh {
            for x in 0..ow {
                // The source pixel that lands on (y, x).
                let (sy, sx) = match k {
                    0 => (y, x),
                    1 => (x, w - 1 - y),
                    2 => (h - 1 - y, w - 1 - x),
                    _ => (h - 1 - x, y),
                };
                dst[y * ow + x] = src[sy * w + sx];
            }
        }
    }
    out
}

/// Rotation prediction's views: [`ROTATIONS`] views per image, view `k` being the image
/// turned by `k` quarter turns counter-clockwise ([`rotate90`]), so the view index is the
/// label and no targets are returned.
///
/// Before rotating, one light augmentation is drawn and shared by the four views (Gidaris
/// et al. train on randomly cropped and flipped images): the centred square of side
/// `min(H, W)` (so that every rotation has the same shape; non-square images lose their
/// margins), then a random resized crop of area fraction `crop_scale` and aspect ratio in
/// (3/4, 4/3) resized to `size x size`, then a horizontal flip with probability `hflip_p`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RotationViews {
    /// Output side length.
    pub size: usize,
    /// Area fraction range of the shared random crop; `(1, 1)` keeps the whole square.
    pub crop_scale: (f64, f64),
    /// Probability of the shared horizontal flip.
    pub hflip_p: f64,
}

impl RotationViews {
    /// Defaults for `size x size` views: crop scale (0.5, 1), flip 0.5. The crop is milder
    /// than SimCLR's (0.2, 1): the task needs to see enough of the object to tell which
    /// way is up.
    pub fn for_size(size: usize) -> Self {
        Self {
            size,
            crop_scale: (0.5, 1.0),
            hflip_p: 0.5,
        }
    }

    /// The unrotated view: centred square, shared crop and flip, consuming `rng`.
    ///
    /// # Shapes
    /// `(C, H, W)` in, `(C, size, size)` out.
    pub fn base_view(&self, img: &Image, rng: &mut Rng) -> Image {
        let side = img.height.min(img.width);
        if side == 0 {
            return Image::zeros(img.channels, self.size, self.size);
        }
        let cropped;
        let square = if img.height == img.width {
            img
        } else {
            let (top, left) = ((img.height - side) / 2, (img.width - side) / 2);
            cropped = resized_crop(img, top, left, side, side, side, side);
            &cropped
        };
        crop_and_flip(square, self.size, self.crop_scale, self.hflip_p, rng)
    }
}

impl ViewRecipe for RotationViews {
    fn num_views(&self) -> usize {
        ROTATIONS
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        let base = self.base_view(img, rng);
        (0..ROTATIONS).map(|k| rotate90(&base, k)).collect()
    }

    fn validate(&self) -> Result<()> {
        if self.size == 0 {
            return Err(DataError::config("size", "must be positive"));
        }
        check_crop_scale("crop_scale", self.crop_scale)?;
        check_p("hflip_p", self.hflip_p)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn image(c: usize, h: usize, w: usize, data: Vec<f32>) -> Image {
        Image {
            channels: c,
            height: h,
            width: w,
            data,
        }
    }

    #[test]
    fn rotate90_turns_counter_clockwise() {
        // 1 2 3
        // 4 5 6
        let img = image(1, 2, 3, vec![1., 2., 3., 4., 5., 6.]);
        // numpy.rot90(a, k) for k = 1, 2, 3.
        assert_eq!(
            rotate90(&img, 1),
            image(1, 3, 2, vec![3., 6., 2., 5., 1., 4.])
        );
        assert_eq!(
            rotate90(&img, 2),
            image(1, 2, 3, vec![6., 5., 4., 3., 2., 1.])
        );
        assert_eq!(
            rotate90(&img, 3),
            image(1, 3, 2, vec![4., 1., 5., 2., 6., 3.])
        );
        assert_eq!(rotate90(&img, 0), img);
        assert_eq!(rotate90(&img, 4), img);
        // Channels turn independently.
        let rgb = image(2, 1, 2, vec![1., 2., 3., 4.]);
        assert_eq!(rotate90(&rgb, 1), image(2, 2, 1, vec![2., 1., 4., 3.]));
        // Four quarter turns, or one turn and its inverse, give the image back.
        let noise = image(3, 5, 7, (0..105).map(|i| (i * 37 % 101) as f32).collect());
        assert_eq!(rotate90(&rotate90(&noise, 1), 3), noise);
        assert_eq!(rotate90(&rotate90(&noise, 2), 2), noise);
    }

    #[test]
    fn view_k_is_view_0_turned_k_times() {
        let recipe = RotationViews::for_size(16);
        recipe.validate().unwrap();
        for (c, h, w) in [(1, 28, 28), (3, 24, 40)] {
            let img = image(
                c,
                h,
                w,
                (0..c * h * w).map(|i| (i % 251) as f32 / 250.0).collect(),
            );
            let views = recipe.views(&img, &mut Rng::new(9));
            assert_eq!(views.len(), ROTATIONS);
            assert_eq!(
                (views[0].channels, views[0].height, views[0].width),
                (c, 16, 16)
            );
            for (k, v) in views.iter().enumerate() {
                assert_eq!(*v, rotate90(&views[0], k), "view {k}");
            }
            assert_ne!(views[0], views[1]);
            assert_eq!(views, recipe.views(&img, &mut Rng::new(9)));
        }
    }

    #[test]
    fn whole_square_without_augmentation_is_the_centre_crop() {
        let recipe = RotationViews {
            size: 2,
            crop_scale: (1.0, 1.0),
            hflip_p: 0.0,
        };
        // A 2x4 image: its centred 2x2 square is columns 1 and 2.
        let img = image(1, 2, 4, vec![0., 1., 2., 3., 4., 5., 6., 7.]);
        let views = recipe.views(&img, &mut Rng::new(0));
        assert_eq!(views[0].data, vec![1., 2., 5., 6.]);
        assert_eq!(views[1].data, vec![2., 6., 1., 5.]);
    }

    #[test]
    fn bad_settings_are_named() {
        let mut r = RotationViews::for_size(8);
        r.hflip_p = 2.0;
        assert!(r.validate().unwrap_err().to_string().contains("hflip_p"));
        let mut r = RotationViews::for_size(8);
        r.crop_scale = (0.0, 1.0);
        assert!(r.validate().unwrap_err().to_string().contains("crop_scale"));
        assert!(RotationViews::for_size(0).validate().is_err());
    }
}
