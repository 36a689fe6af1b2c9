//! The corruption of the denoising autoencoder (Vincent et al. 2008, "Extracting
//! and Composing Robust Features with Denoising Autoencoders"): masking noise
//! blanks a random fraction of the pixels, additive Gaussian noise perturbs the rest.
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::views::{Sample, ViewRecipe};

/// Views `[corrupted, clean]` of a `size x size` image, and as free labels one value
/// per pixel (row-major): 1 where the pixel was blanked (all channels set to 0,
/// black), 0 where Gaussian noise of deviation `noise_std` (pixel units) was added
/// to every channel instead. Nothing else changes: the clean view is the image.
#[derive(Clone, Debug, PartialEq)]
pub struct DenoisingViews {
    /// Side of the images.
    pub size: usize,
    /// Deviation of the additive noise, in pixel units (pixels run from 0 to 1).
    pub noise_std: f32,
    /// Probability that a pixel is blanked.
    pub mask_fraction: f64,
}

impl DenoisingViews {
    /// The corrupted copy of `img` and its per-pixel mask (an image of another size
    /// than `size` gets a mask of its own pixel count, which the loader rejects).
    pub fn corrupt(&self, img: &Image, rng: &mut Rng) -> (Image, Vec<u32>) {
        let mut out = img.clone();
        let plane = img.plane_len();
        let mut mask = vec![0u32; plane];
        for (p, blanked) in mask.iter_mut().enumerate() {
            let hide = rng.bernoulli(self.mask_fraction);
            *blanked = u32::from(hide);
            for c in 0..img.channels {
                let v = &mut out.data[c * plane + p];
                *v = if hide {
                    0.0
                } else {
                    *v + self.noise_std * rng.normal() as f32
                };
            }
        }
        (out, mask)
    }
}

impl ViewRecipe for DenoisingViews {
    fn num_views(&self) -> usize {
        2
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        self.sample(img, rng).views
    }

    fn num_targets(&self) -> usize {
        self.size * self.size
    }

    fn sample(&self, img: &Image, rng: &mut Rng) -> Sample {
        let (corrupted, targets) = self.corrupt(img, rng);
        Sample {
            views: vec![corrupted, img.clone()],
            targets,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.noise_std.is_finite() && self.noise_std >= 0.0) {
            return Err(DataError::config(
                "noise_std",
                format!("must be ≥ 0, got {}", self.noise_std),
            ));
        }
        if !(0.0..1.0).contains(&self.mask_fraction) {
            return Err(DataError::config(
                "mask_fraction",
                format!("must lie in [0, 1), got {}", self.mask_fraction),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn image(channels: usize, size: usize) -> Image {
        let mut rng = Rng::new(5);
        let mut img = Image::zeros(channels, size, size);
        for v in &mut img.data {
            *v = 0.2 + 0.6 * rng.f32();
        }
        img
    }

    fn recipe(noise_std: f32, mask_fraction: f64) -> DenoisingViews {
        DenoisingViews {
            size: 16,
            noise_std,
            mask_fraction,
        }
    }

    #[test]
    fn blanks_exactly_the_reported_pixels_and_adds_noise_only_elsewhere() {
        let img = image(3, 16);
        let s = recipe(0.2, 0.3).sample(&img, &mut Rng::new(1));
        let [noisy, clean] = s.views.as_slice() else {
            panic!("two views")
        };
        assert_eq!(clean, &img);
        assert_eq!(s.targets.len(), 256);
        let hidden = s.targets.iter().filter(|&&m| m == 1).count();
        assert!((50..105).contains(&hidden), "{hidden} of 256 blanked");
        let mut noise = Vec::new();
        for (p, &m) in s.targets.iter().enumerate() {
            for c in 0..3 {
                let (a, b) = (noisy.data[c * 256 + p], clean.data[c * 256 + p]);
                if m == 1 {
                    assert_eq!(a, 0.0, "pixel {p} channel {c} reported blanked");
                } else {
                    assert_ne!(a, b, "pixel {p} channel {c} reported noisy");
                    noise.push(a - b);
                }
            }
        }
        let n = noise.len() as f32;
        let std = (noise.iter().map(|d| d * d).sum::<f32>() / n).sqrt();
        assert!((std - 0.2).abs() < 0.02, "noise deviation {std}");
    }

    #[test]
    fn each_corruption_alone_touches_nothing_else() {
        let img = image(1, 16);
        let only_mask = recipe(0.0, 0.5).sample(&img, &mut Rng::new(2));
        for (p, &m) in only_mask.targets.iter().enumerate() {
            let want = if m == 1 { 0.0 } else { img.data[p] };
            assert_eq!(only_mask.views[0].data[p], want);
        }
        let only_noise = recipe(0.1, 0.0).sample(&img, &mut Rng::new(2));
        assert!(only_noise.targets.iter().all(|&m| m == 0));
        assert!(only_noise.views[0]
            .data
            .iter()
            .zip(&img.data)
            .all(|(a, b)| a != b));
        let same = recipe(0.1, 0.2);
        let (a, b) = (
            same.sample(&img, &mut Rng::new(9)),
            same.sample(&img, &mut Rng::new(9)),
        );
        assert_eq!((a.views, a.targets), (b.views, b.targets));
    }

    #[test]
    fn bad_settings_are_named() {
        let e = recipe(-1.0, 0.1).validate().unwrap_err().to_string();
        assert!(e.contains("noise_std"), "{e}");
        let e = recipe(0.1, 1.0).validate().unwrap_err().to_string();
        assert!(e.contains("mask_fraction"), "{e}");
    }
}
