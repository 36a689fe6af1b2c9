//! View recipes: how one image becomes the views a method trains on.

use crate::augment::{crop_and_flip, grayscale_in_place, solarize_in_place, ColorJitter};
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;

/// Turns one image into a fixed number of views.
///
/// Implementations must be deterministic given `rng`: the [`Loader`](crate::Loader)
/// derives it per sample from (seed, epoch, global position), so batches do
/// not depend on thread scheduling. All views with the same index must have
/// the same shape for every image, so they can be stacked into a batch.
pub trait ViewRecipe: Send + Sync {
    /// Views per image.
    fn num_views(&self) -> usize;

    /// Views of one image; `rng` is derived per sample from (seed, epoch,
    /// global position).
    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image>;

    /// Free labels per image that [`ViewRecipe::sample`] returns (a pretext
    /// task's rotation, patch position, permutation or mask box); 0 for
    /// recipes without labels.
    fn num_targets(&self) -> usize {
        0
    }

    /// The views of one image and their free labels, from one pass over `rng`.
    /// The loader calls this; recipes with targets override it (and implement
    /// [`ViewRecipe::views`] as `self.sample(img, rng).views`).
    fn sample(&self, img: &Image, rng: &mut Rng) -> Sample {
        Sample {
            views: self.views(img, rng),
            targets: Vec::new(),
        }
    }

    /// Checks the recipe's settings; the loader calls it once at construction.
    ///
    /// # Errors
    /// [`DataError::Config`] naming the bad setting.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// The views of one image and the free labels a pretext task derives with them.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The views, in the recipe's order.
    pub views: Vec<Image>,
    /// [`ViewRecipe::num_targets`] labels.
    pub targets: Vec<u32>,
}

/// Blur sigma range of SimCLR (Chen et al. 2020, appendix A): uniform in `[0.1, 2.0]`.
pub const BLUR_SIGMA: (f32, f32) = (0.1, 2.0);
/// Solarisation threshold (BYOL, Grill et al. 2020).
pub const SOLARIZE_THRESHOLD: f32 = 0.5;

/// The SimCLR augmentation recipe (Chen et al. 2020, "A Simple Framework for
/// Contrastive Learning of Visual Representations", appendix A): `count` views
/// per image (two for SimCLR and MoCo, one for NPID), each built independently as
/// torchvision composes it:
///
/// 1. `RandomResizedCrop(size, scale=crop_scale, ratio=(3/4, 4/3))`;
/// 2. `RandomHorizontalFlip(hflip_p)`;
/// 3. `RandomApply([ColorJitter(jitter)], p=jitter_p)`;
/// 4. `RandomGrayscale(grayscale_p)`;
/// 5. `RandomApply([GaussianBlur(sigma ~ U(0.1, 2.0))], p=blur_p)`;
/// 6. `RandomSolarize(threshold=0.5, p=solarize_p)` (from BYOL).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SimclrViews {
    /// Views per image.
    pub count: usize,
    /// Output side length (square views).
    pub size: usize,
    /// Area fraction range of the random crop.
    pub crop_scale: (f64, f64),
    /// Probability of a horizontal flip.
    pub hflip_p: f64,
    /// Colour-jitter strengths.
    pub jitter: ColorJitter,
    /// Probability of applying the colour jitter.
    pub jitter_p: f64,
    /// Probability of converting to grayscale.
    pub grayscale_p: f64,
    /// Probability of a Gaussian blur.
    pub blur_p: f64,
    /// Probability of solarisation.
    pub solarize_p: f64,
}

impl SimclrViews {
    /// Defaults for two `size x size` views: crop scale (0.2, 1), flip 0.5,
    /// jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale 0.2, no blur, no
    /// solarisation (SimCLR's CIFAR-10 settings; the paper's crop scale lower
    /// bound is 0.08, 0.2 is the common small-image choice).
    pub fn for_size(size: usize) -> Self {
        Self {
            count: 2,
            size,
            crop_scale: (0.2, 1.0),
            hflip_p: 0.5,
            jitter: ColorJitter::new(0.4, 0.4, 0.4, 0.1),
            jitter_p: 0.8,
            grayscale_p: 0.2,
            blur_p: 0.0,
            solarize_p: 0.0,
        }
    }

    /// One view, consuming `rng`.
    ///
    /// # Shapes
    /// `(C, H, W)` in, `(C, size, size)` out.
    pub fn view(&self, img: &Image, rng: &mut Rng, scratch: &mut Vec<f32>) -> Image {
        let mut v = crop_and_flip(img, self.size, self.crop_scale, self.hflip_p, rng);
        if rng.bernoulli(self.jitter_p) {
            self.jitter.apply_in_place(&mut v, rng);
        }
        if rng.bernoulli(self.grayscale_p) {
            grayscale_in_place(&mut v);
        }
        if rng.bernoulli(self.blur_p) {
            let sigma = rng.uniform(f64::from(BLUR_SIGMA.0), f64::from(BLUR_SIGMA.1)) as f32;
            crate::augment::gaussian_blur_in_place(&mut v, sigma, scratch);
        }
        if rng.bernoulli(self.solarize_p) {
            solarize_in_place(&mut v, SOLARIZE_THRESHOLD);
        }
        v
    }
}

/// Checks that `p` is a probability.
pub(crate) fn check_p(name: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(DataError::config(
            name,
            format!("probability {p} is not in [0, 1]"),
        ))
    }
}

/// Checks a random-resized-crop area range: `0 < lo <= hi <= 1`.
pub(crate) fn check_crop_scale(name: &str, (lo, hi): (f64, f64)) -> Result<()> {
    if lo > 0.0 && lo <= hi && hi <= 1.0 {
        Ok(())
    } else {
        Err(DataError::config(
            name,
            format!("({lo}, {hi}) must satisfy 0 < lo <= hi <= 1"),
        ))
    }
}

impl ViewRecipe for SimclrViews {
    fn num_views(&self) -> usize {
        self.count
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        let mut scratch = Vec::new();
        (0..self.count)
            .map(|_| self.view(img, rng, &mut scratch))
            .collect()
    }

    fn validate(&self) -> Result<()> {
        if self.count == 0 {
            return Err(DataError::config("count", "must be at least 1 view"));
        }
        if self.size == 0 {
            return Err(DataError::config("size", "must be positive"));
        }
        check_crop_scale("crop_scale", self.crop_scale)?;
        check_p("hflip_p", self.hflip_p)?;
        check_p("jitter_p", self.jitter_p)?;
        check_p("grayscale_p", self.grayscale_p)?;
        check_p("blur_p", self.blur_p)?;
        check_p("solarize_p", self.solarize_p)?;
        self.jitter.validate()
    }
}

/// One view: the image unchanged (for evaluation or supervised baselines).
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl ViewRecipe for Identity {
    fn num_views(&self) -> usize {
        1
    }

    fn views(&self, img: &Image, _rng: &mut Rng) -> Vec<Image> {
        vec![img.clone()]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn noise(c: usize, h: usize, w: usize) -> Image {
        let mut r = Rng::new(42);
        Image {
            channels: c,
            height: h,
            width: w,
            data: (0..c * h * w).map(|_| r.f32()).collect(),
        }
    }

    #[test]
    fn simclr_views_shapes_ranges_determinism() {
        let mut recipe = SimclrViews::for_size(24);
        recipe.blur_p = 0.5;
        recipe.solarize_p = 0.2;
        recipe.validate().unwrap();
        for c in [1, 3] {
            let img = noise(c, 28, 28);
            let a = recipe.views(&img, &mut Rng::derive(5, &[0, 3, 1]));
            let b = recipe.views(&img, &mut Rng::derive(5, &[0, 3, 1]));
            assert_eq!(a.len(), 2);
            assert_eq!(a, b);
            assert_ne!(a[0], a[1], "the two views should differ");
            for v in &a {
                assert_eq!((v.channels, v.height, v.width), (c, 24, 24));
                assert!(v.data.iter().all(|p| (0.0..=1.0).contains(p)));
            }
        }
        assert_eq!(
            Identity.views(&noise(3, 4, 4), &mut Rng::new(0)),
            vec![noise(3, 4, 4)]
        );
    }

    #[test]
    fn simclr_validate_names_bad_setting() {
        let mut r = SimclrViews::for_size(32);
        r.grayscale_p = 1.5;
        let e = r.validate().unwrap_err().to_string();
        assert!(e.starts_with("invalid setting `grayscale_p`"), "{e}");
        let mut r = SimclrViews::for_size(32);
        r.crop_scale = (0.5, 0.2);
        assert!(r.validate().unwrap_err().to_string().contains("crop_scale"));
        assert!(SimclrViews::for_size(0).validate().is_err());
    }
}
