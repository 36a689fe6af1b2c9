//! The autoencoder (Hinton & Salakhutdinov 2006; convolutional as in Masci et al.
//! 2011): the shared encoder's pooled features are decoded back into the image by
//! up-convolutions, and the loss is the mean squared error of the reconstruction.
use super::samples::{keep, write_rows};
use super::{encoder_kind, DataShape, Normalization};
use crate::config::TrainConfig;
use crate::method::{Method, PretextMetric, PretextTally, ENCODER_PREFIX};
use crate::Result;
use candle_core::{Device, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use selfsup_data::views::Identity;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::Encoder;
use selfsup_generative::Decoder;
use std::path::Path;
use std::sync::Arc;

/// The artefact grid, overwritten at every checkpoint: input, reconstruction, target.
pub const RECONSTRUCTIONS_FILE: &str = "reconstructions.png";

/// An encoder and a [`Decoder`] from its pooled feature vector (the representation
/// that evaluation probes) to the image. The view recipe gives the input and, for
/// the denoising variant, the clean target as a second view.
pub struct Autoencoder {
    name: &'static str,
    encoder: Box<dyn Encoder>,
    decoder: Decoder,
    views: Arc<dyn ViewRecipe>,
    normalization: Normalization,
    device: Device,
    /// Host copies of the inputs and targets of the last training batch.
    shown: Option<(Tensor, Tensor)>,
}

impl Autoencoder {
    /// The plain autoencoder: the input is the image itself, unaugmented.
    ///
    /// # Errors
    /// For an unknown encoder, or images too small for it.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        Self::with_views("autoencoder", Arc::new(Identity), cfg, data, vb)
    }

    /// An autoencoder named `name` trained on `views` (one view: input and target;
    /// two: input, then target).
    pub(crate) fn with_views(
        name: &'static str,
        views: Arc<dyn ViewRecipe>,
        cfg: &TrainConfig,
        data: DataShape,
        vb: VarBuilder,
    ) -> Result<Self> {
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let decoder = Decoder::new(
            encoder.feature_dim(),
            data.channels,
            data.size,
            cfg.width,
            vb.pp("decoder"),
        )?;
        Ok(Self {
            name,
            encoder,
            decoder,
            views,
            normalization: data.normalization,
            device: vb.device().clone(),
            shown: None,
        })
    }

    /// The input and the target of a batch.
    fn pair(batch: &Batch) -> candle_core::Result<(&Tensor, &Tensor)> {
        match batch.views.as_slice() {
            [x] => Ok((x, x)),
            [x, target] => Ok((x, target)),
            other => candle_core::bail!("autoencoders expect 1 or 2 views, got {}", other.len()),
        }
    }

    /// The decoder's image of the encoder's features of `x`.
    fn reconstruct(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let features = self.encoder.forward_t(x, train)?;
        self.decoder.forward_t(&features, train)
    }
}

impl Method for Autoencoder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let (x, target) = Self::pair(batch)?;
        let loss = (self.reconstruct(x, true)? - target)?.sqr()?.mean_all()?;
        self.shown = Some((keep(x)?, keep(target)?));
        Ok(loss)
    }

    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    fn pretext_metric(&self) -> Option<PretextMetric> {
        Some(PretextMetric::Mse)
    }

    /// Squared error of the reconstruction over every element (normalised pixels).
    fn pretext_eval(&self, batch: &Batch) -> candle_core::Result<PretextTally> {
        let (x, target) = Self::pair(batch)?;
        PretextTally::squared_error(&self.reconstruct(x, false)?, target)
    }

    /// Overwrites [`RECONSTRUCTIONS_FILE`]: rows of inputs, their reconstructions by the
    /// current model in evaluation mode, and targets, for up to 8 images of the last
    /// training batch.
    fn write_artifacts(&self, run_dir: &Path, _step: usize) -> Result<()> {
        let Some((x, target)) = &self.shown else {
            return Ok(());
        };
        let pred = self.reconstruct(&x.to_device(&self.device)?, false)?;
        let rows = [x.clone(), pred, target.clone()];
        write_rows(
            &run_dir.join(RECONSTRUCTIONS_FILE),
            &rows,
            &self.normalization,
        )
    }
}
