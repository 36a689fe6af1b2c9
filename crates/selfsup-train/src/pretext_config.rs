//! Settings of the image pretext tasks, the `[pretext]` table of `config.toml`.
//!
//! Geometry is given as fractions of the image or cell side, so the same settings
//! work on 28x28 Fashion-MNIST, 32x32 CIFAR and larger images.
use crate::{Result, TrainError};

/// How inpainting hides part of the image (Pathak et al. 2016, section 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    /// One square in the middle of the image.
    Center,
    /// Several random squares.
    Blocks,
}

impl std::str::FromStr for MaskKind {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "center" => Ok(Self::Center),
            "blocks" => Ok(Self::Blocks),
            _ => Err(TrainError::config(
                "mask",
                format!("unknown mask {s:?}; expected center or blocks"),
            )),
        }
    }
}

/// Settings of relative patch location, jigsaw and inpainting.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretextConfig {
    /// Cells per side of the patch-location and jigsaw grid (3 in both papers).
    pub grid: usize,
    /// Gap left between neighbouring patches or tiles, as a fraction of the cell side
    /// (Doersch et al.: against boundary continuity).
    pub gap: f64,
    /// Largest random shift of a patch or tile, as a fraction of the cell side.
    pub jitter: f64,
    /// Side the encoder sees patches and tiles at, in pixels; 0 gives twice their natural
    /// side (`selfsup_data::pretext::DEFAULT_UPSCALE`; 14 on 28x28 images).
    pub patch_size: usize,
    /// Size of the jigsaw permutation set (100 in Noroozi & Favaro).
    pub permutations: usize,
    /// Inpainting mask shape.
    pub mask: MaskKind,
    /// Side of the center mask as a fraction of the image side; the random blocks
    /// hide the same total area (`mask_size²`).
    pub mask_size: f64,
    /// Width of the mask's overlap border, as a fraction of the image side.
    pub overlap: f64,
    /// Loss weight of the overlap border relative to the interior (10 in the paper).
    pub overlap_weight: f64,
    /// Weight of the adversarial loss; 0 turns it off (0.001 in the paper).
    pub adversarial_weight: f64,
    /// Sub-clips per odd-one-out question, N (6 in Fernando et al.).
    pub questions: usize,
    /// Frames per odd-one-out sub-clip.
    pub question_frames: usize,
    /// Smallest area of the crop that the frame-order tasks share across a sample's
    /// frames (1 keeps whole frames; they are flipped alike either way). Without it,
    /// Shuffle & Learn memorises a short video: 67% held-out on vtest.avi, 95% with 0.6.
    pub frame_crop: f64,
    /// Each frame of a frame-order sample draws its own crop instead of sharing one
    /// (still flipped alike), so that where an item sits no longer tells the order. On
    /// spinning moving-fmnist items this makes the learned features more useful to the
    /// class probe (docs/methods.md).
    pub frame_crop_per_frame: bool,
}

impl Default for PretextConfig {
    fn default() -> Self {
        Self {
            grid: 3,
            gap: 0.25,
            jitter: 0.1,
            patch_size: 0,
            permutations: 100,
            mask: MaskKind::Center,
            mask_size: 0.5,
            overlap: 1.0 / 16.0,
            overlap_weight: 10.0,
            adversarial_weight: 0.0,
            questions: 4,
            question_frames: 3,
            frame_crop: 0.6,
            frame_crop_per_frame: false,
        }
    }
}

fn fraction(setting: &str, v: f64, lo_inclusive: bool) -> Result<()> {
    let ok = v.is_finite() && v < 1.0 && (v > 0.0 || (lo_inclusive && v == 0.0));
    if ok {
        Ok(())
    } else {
        let lo = if lo_inclusive { "[0" } else { "(0" };
        Err(TrainError::config(
            setting,
            format!("must lie in {lo}, 1), got {v}"),
        ))
    }
}

impl PretextConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// A [`TrainError::Config`] naming the first bad setting.
    pub fn validate(&self) -> Result<()> {
        if self.grid < 2 {
            return Err(TrainError::config(
                "pretext.grid",
                format!("must be at least 2, got {}", self.grid),
            ));
        }
        fraction("pretext.gap", self.gap, true)?;
        fraction("pretext.jitter", self.jitter, true)?;
        fraction("pretext.mask-size", self.mask_size, false)?;
        fraction("pretext.overlap", self.overlap, true)?;
        if !(self.frame_crop > 0.0 && self.frame_crop <= 1.0) {
            return Err(TrainError::config(
                "pretext.frame-crop",
                format!("must lie in (0, 1], got {}", self.frame_crop),
            ));
        }
        if self.permutations < 2 {
            return Err(TrainError::config(
                "pretext.permutations",
                format!("must be at least 2, got {}", self.permutations),
            ));
        }
        for (setting, v) in [
            ("pretext.overlap-weight", self.overlap_weight),
            ("pretext.adversarial-weight", self.adversarial_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TrainError::config(setting, format!("must be ≥ 0, got {v}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_setting() {
        PretextConfig::default().validate().unwrap();
        let cases = [
            PretextConfig {
                grid: 1,
                ..Default::default()
            },
            PretextConfig {
                gap: 1.0,
                ..Default::default()
            },
            PretextConfig {
                jitter: -0.1,
                ..Default::default()
            },
            PretextConfig {
                mask_size: 0.0,
                ..Default::default()
            },
            PretextConfig {
                permutations: 1,
                ..Default::default()
            },
            PretextConfig {
                overlap_weight: f64::NAN,
                ..Default::default()
            },
        ];
        for bad in cases {
            let msg = bad.validate().unwrap_err().to_string();
            assert!(msg.contains("pretext."), "{msg}");
        }
        assert_eq!("blocks".parse::<MaskKind>().unwrap(), MaskKind::Blocks);
        assert!("ring".parse::<MaskKind>().is_err());
    }
}
