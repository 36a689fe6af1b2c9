//! Settings of the predictive-coding, autoencoder and GAN methods: the
//! `[predictive]` and `[generative]` tables of `config.toml`.
use crate::{Result, TrainError};

/// Settings of CPC and next-frame prediction (`[predictive]`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictiveConfig {
    /// Patches per side of CPC's grid of overlapping patches (half-overlapping, as
    /// in Hénaff et al. 2020's 7x7 grid of 64-pixel patches).
    pub grid: usize,
    /// How many rows (or frames) ahead CPC predicts: k = 1..=steps.
    pub steps: usize,
    /// Frames next-frame prediction sees before the one it predicts.
    pub context_frames: usize,
}

impl Default for PredictiveConfig {
    fn default() -> Self {
        Self {
            grid: 6,
            steps: 2,
            context_frames: 3,
        }
    }
}

impl PredictiveConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// A [`TrainError::Config`] naming the first bad setting.
    pub fn validate(&self) -> Result<()> {
        at_least("predictive.grid", self.grid, 2)?;
        at_least("predictive.steps", self.steps, 1)?;
        at_least("predictive.context-frames", self.context_frames, 1)?;
        if self.steps >= self.grid {
            return Err(TrainError::config(
                "predictive.steps",
                format!(
                    "must be below predictive.grid ({}), got {}",
                    self.grid, self.steps
                ),
            ));
        }
        Ok(())
    }
}

/// Settings of the autoencoders and GANs (`[generative]`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerativeConfig {
    /// Length of the GANs' latent code z (DCGAN's 100).
    pub latent_dim: usize,
    /// Standard deviation of the denoising autoencoder's Gaussian noise, in pixel
    /// units (pixels run from 0 to 1).
    pub noise_std: f64,
    /// Fraction of pixels the denoising autoencoder blanks out (Vincent et al.
    /// 2008's masking noise).
    pub mask_fraction: f64,
    /// Weight of BiGAN's explicit cycle-consistency term, the mean squared error of
    /// `G(E(x))` against `x` (ALICE, Li et al. 2017); 0, the default, is plain BiGAN.
    pub cycle_weight: f64,
}

impl Default for GenerativeConfig {
    fn default() -> Self {
        Self {
            latent_dim: 100,
            noise_std: 0.2,
            mask_fraction: 0.25,
            cycle_weight: 0.0,
        }
    }
}

impl GenerativeConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// A [`TrainError::Config`] naming the first bad setting.
    pub fn validate(&self) -> Result<()> {
        at_least("generative.latent-dim", self.latent_dim, 1)?;
        if !(self.noise_std.is_finite() && self.noise_std >= 0.0) {
            return Err(TrainError::config(
                "generative.noise-std",
                format!("must be ≥ 0, got {}", self.noise_std),
            ));
        }
        if !(0.0..1.0).contains(&self.mask_fraction) {
            return Err(TrainError::config(
                "generative.mask-fraction",
                format!("must lie in [0, 1), got {}", self.mask_fraction),
            ));
        }
        if !(self.cycle_weight.is_finite() && self.cycle_weight >= 0.0) {
            return Err(TrainError::config(
                "generative.cycle-weight",
                format!("must be ≥ 0, got {}", self.cycle_weight),
            ));
        }
        Ok(())
    }
}

fn at_least(setting: &str, v: usize, min: usize) -> Result<()> {
    if v >= min {
        Ok(())
    } else {
        Err(TrainError::config(
            setting,
            format!("must be at least {min}, got {v}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_setting() {
        PredictiveConfig::default().validate().unwrap();
        GenerativeConfig::default().validate().unwrap();
        let predictive = [
            PredictiveConfig {
                grid: 1,
                ..Default::default()
            },
            PredictiveConfig {
                steps: 6,
                ..Default::default()
            },
            PredictiveConfig {
                context_frames: 0,
                ..Default::default()
            },
        ];
        for bad in predictive {
            let msg = bad.validate().unwrap_err().to_string();
            assert!(msg.contains("predictive."), "{msg}");
        }
        let generative = [
            GenerativeConfig {
                latent_dim: 0,
                ..Default::default()
            },
            GenerativeConfig {
                noise_std: f64::NAN,
                ..Default::default()
            },
            GenerativeConfig {
                mask_fraction: 1.0,
                ..Default::default()
            },
            GenerativeConfig {
                cycle_weight: -1.0,
                ..Default::default()
            },
        ];
        for bad in generative {
            let msg = bad.validate().unwrap_err().to_string();
            assert!(msg.contains("generative."), "{msg}");
        }
    }
}
