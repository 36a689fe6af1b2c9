//! The denoising autoencoder (Vincent et al. 2008): the autoencoder reconstructs the
//! clean image from a corrupted copy, with masking noise (a fraction of the pixels
//! blanked) and additive Gaussian noise on the rest (`[generative]` settings).
use super::{Autoencoder, DataShape};
use crate::config::TrainConfig;
use crate::Result;
use candle_nn::VarBuilder;
use selfsup_data::pretext::DenoisingViews;
use std::sync::Arc;

impl Autoencoder {
    /// The denoising autoencoder, corrupting with `cfg.generative.noise_std` and
    /// `cfg.generative.mask_fraction`.
    ///
    /// # Errors
    /// For an unknown encoder, or images too small for it.
    pub fn denoising(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let g = &cfg.generative;
        let views = DenoisingViews {
            size: data.size,
            noise_std: g.noise_std as f32,
            mask_fraction: g.mask_fraction,
        };
        Self::with_views("denoising-autoencoder", Arc::new(views), cfg, data, vb)
    }
}
